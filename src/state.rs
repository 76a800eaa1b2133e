//! The running server's shared state: the gateway now in force (swapped atomically on reload),
//! readiness, and the switch that stops background work. The listeners, the reloader and the
//! admin endpoints read it; none of them owns it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::{Config, Listen};
use crate::gateway::Gateway;
use crate::metrics::Metrics;

/// What the listeners and the reloader share.
#[derive(Debug)]
pub struct Shared {
    current: ArcSwap<Gateway>,
    metrics: Metrics,
    listen: Listen,
    tls: bool,
    pub(crate) shutting_down: AtomicBool,
    /// Stops background work (JWKS refreshers, data reloaders, the admin listener).
    pub(crate) stop_all: watch::Sender<bool>,
}

impl Shared {
    /// The state of a server starting on `gateway` (whose background work is started here).
    pub(crate) fn new(gateway: Arc<Gateway>, metrics: Metrics, listen: Listen, tls: bool) -> Self {
        let (stop_all, _) = watch::channel(false);
        start_background(&gateway, &stop_all);
        Self {
            current: ArcSwap::new(gateway),
            metrics,
            listen,
            tls,
            shutting_down: AtomicBool::new(false),
            stop_all,
        }
    }

    /// The gateway now in force.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    /// Whether the process should get traffic.
    pub fn ready(&self) -> bool {
        !self.shutting_down.load(Ordering::Acquire) && self.current.load().ready()
    }

    /// Replaces the gateway with one built from `config` (already validated). Requests in
    /// flight finish on the gateway they started with.
    pub async fn swap(&self, config: Config) {
        if config.listen != self.listen || config.tls.is_some() != self.tls {
            tracing::warn!(
                "listener addresses, `workers` or TLS settings changed: they take effect only after a restart"
            );
        }
        let old = self.current.load_full();
        let gateway = Arc::new(Gateway::new(config, self.metrics.clone()));
        // Issuers the old gateway knew start with its keys; new ones are fetched before the swap.
        let mut fetch = Vec::new();
        for keys in &gateway.issuers {
            match old
                .issuers
                .iter()
                .find(|o| o.config.issuer == keys.config.issuer)
                .and_then(|o| o.snapshot())
            {
                Some(set) => keys.seed(set),
                None => fetch.push(keys.clone()),
            }
        }
        futures_util::future::join_all(fetch.iter().map(|k| k.refresh())).await;
        start_background(&gateway, &self.stop_all);
        self.current.store(gateway);
        self.metrics.config_reloads.with_label_values(&["ok"]).inc();
        self.metrics
            .config_last_reload
            .set(crate::token::unix_now() as i64);
        tracing::info!("configuration reloaded");
    }

    /// Reads, validates and swaps in the configuration at `path`; an invalid one is logged with
    /// its file:line errors and changes nothing. Returns the files to watch on success.
    pub async fn reload_from(&self, path: &std::path::Path) -> Option<Vec<std::path::PathBuf>> {
        match crate::config::load(path) {
            Ok(config) => {
                let watched = config.watched.clone();
                self.swap(config).await;
                Some(watched)
            }
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!(error = %e, "configuration reload refused; keeping the running configuration");
                }
                self.metrics
                    .config_reloads
                    .with_label_values(&["error"])
                    .inc();
                None
            }
        }
    }
}

/// Starts the gateway's background work (key refreshers, data reloaders), stopped by `stop`.
fn start_background(gateway: &Arc<Gateway>, stop: &watch::Sender<bool>) {
    for keys in &gateway.issuers {
        keys.spawn_refresher(stop.subscribe());
    }
    if let Some(p) = gateway.permissions() {
        p.spawn_reloader(Duration::from_secs(2), stop.subscribe());
    }
    if let Some(store) = gateway.store() {
        store.spawn_listener(stop.subscribe());
    }
}
