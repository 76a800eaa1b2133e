//! Hot reload: on SIGHUP, or when a watched file changes (server file, policy files and
//! folders, key and TLS files; polled, so ConfigMap symlink swaps are seen too), the whole
//! configuration is loaded and validated, then swapped in atomically. An invalid change keeps the
//! running configuration. Permissions data files reload on their own (see `permissions`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;

use crate::state::Shared;

/// What a file looked like: modification time and size (`None` when unreadable).
type Stamp = Option<(SystemTime, u64)>;

/// The state of every watched path; a folder counts with each of its entries.
fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Stamp)> {
    let stamp = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    let mut out = Vec::new();
    for path in paths {
        out.push((path.clone(), stamp(path)));
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            entries.sort();
            out.extend(entries.into_iter().map(|e| {
                let s = stamp(&e);
                (e, s)
            }));
        }
    }
    out
}

/// Watches `path`'s configuration (`watched`, from its last load) every `every`, and listens
/// for SIGHUP; reloads on either. Runs until the process ends.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    path: PathBuf,
    watched: Vec<PathBuf>,
    every: Duration,
) -> JoinHandle<()> {
    crate::supervise::spawn("configuration reloader", move || {
        let (shared, path, watched) = (shared.clone(), path.clone(), watched.clone());
        async move {
            #[cfg(unix)]
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut watched = watched;
            let mut seen = fingerprint(&watched);
            loop {
                #[cfg(unix)]
                let signal = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let signal = std::future::pending::<Option<()>>();
                let forced = tokio::select! {
                    _ = tokio::time::sleep(every) => false,
                    _ = signal => true,
                };
                let now = fingerprint(&watched);
                if !forced && now == seen {
                    continue;
                }
                if forced {
                    tracing::info!("SIGHUP: reloading the configuration");
                }
                seen = now;
                if let Some(new) = shared.reload_from(&path).await {
                    watched = new;
                    seen = fingerprint(&watched);
                }
            }
        }
    })
}
