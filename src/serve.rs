//! Listeners and the running gateway: accepts TCP (optionally TLS) connections, serves HTTP/1.1
//! and HTTP/2 with hyper-util's auto builder, and hands each request to the *current* gateway.
//!
//! The gateway is swapped atomically on reload (`ArcSwap`): each request takes a snapshot when
//! it starts and finishes on it. Shutdown is graceful: readiness turns false, the proxy and auth
//! listeners stop accepting, open connections finish their requests up to the grace period,
//! and only then do the admin listener and background tasks stop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Limits, Listen};
use crate::gateway::Gateway;
use crate::metrics::Metrics;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listen address could not be bound.
    #[error("cannot listen on `{addr}`: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the listeners and the reloader share.
#[derive(Debug)]
pub struct Shared {
    current: ArcSwap<Gateway>,
    metrics: Metrics,
    listen: Listen,
    tls: bool,
    shutting_down: AtomicBool,
    /// Stops background work (JWKS refreshers, data reloaders, the admin listener).
    stop_all: watch::Sender<bool>,
}

impl Shared {
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
                "listener addresses or TLS settings changed: they take effect only after a restart"
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
            .set(crate::verify::unix_now() as i64);
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

fn start_background(gateway: &Arc<Gateway>, stop: &watch::Sender<bool>) {
    for keys in &gateway.issuers {
        keys.spawn_refresher(stop.subscribe());
    }
    if let Some(p) = gateway.permissions() {
        p.spawn_reloader(Duration::from_secs(2), stop.subscribe());
    }
}

/// A running gateway: its bound addresses and the switches that reload and stop it.
#[derive(Debug)]
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The forward-auth listener, when configured.
    pub auth_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    stop_accepting: watch::Sender<bool>,
    /// The proxy and auth listeners; each ends once its connections have drained.
    draining: std::sync::Mutex<Vec<JoinHandle<()>>>,
    grace: Duration,
}

impl Running {
    /// The gateway now in force.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.shared.gateway()
    }

    /// Graceful shutdown: not ready, stop accepting, let open requests finish (up to the
    /// configured grace period), then stop everything.
    pub async fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::Release);
        let _ = self.stop_accepting.send(true);
        let handles: Vec<JoinHandle<()>> = self
            .draining
            .lock()
            .map(|mut h| h.drain(..).collect())
            .unwrap_or_default();
        if tokio::time::timeout(self.grace, futures_util::future::join_all(handles))
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.grace, "shutdown grace period over; dropping the remaining connections");
        }
        let _ = self.shared.stop_all.send(true);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop_accepting.send(true);
        let _ = self.shared.stop_all.send(true);
    }
}

/// Binds the listeners, loads every issuer's keys (a failure is logged and retried in the
/// background; readiness stays false meanwhile), and starts serving.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    let metrics = Metrics::new();
    let listen = config.listen;
    let limits = config.limits;
    let tls = config.tls.clone().map(TlsAcceptor::from);
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })
    };
    let local = |l: &TcpListener, addr: SocketAddr| {
        l.local_addr()
            .map_err(|source| ServeError::Bind { addr, source })
    };
    let proxy = bind(listen.proxy).await?;
    let admin = bind(listen.admin).await?;
    let auth = match listen.auth {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let (stop_all, _) = watch::channel(false);
    let (stop_accepting, _) = watch::channel(false);
    let gateway = Arc::new(Gateway::new(config, metrics.clone()));
    futures_util::future::join_all(gateway.issuers.iter().map(|k| k.refresh())).await;
    start_background(&gateway, &stop_all);
    metrics
        .config_last_reload
        .set(crate::verify::unix_now() as i64);
    let shared = Arc::new(Shared {
        current: ArcSwap::new(gateway),
        metrics: metrics.clone(),
        listen,
        tls: tls.is_some(),
        shutting_down: AtomicBool::new(false),
        stop_all,
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    let running = Running {
        proxy_addr: local(&proxy, listen.proxy)?,
        admin_addr: local(&admin, listen.admin)?,
        auth_addr: match &auth {
            Some(l) => Some(local(l, listen.auth.unwrap_or(listen.proxy))?),
            None => None,
        },
        shared: shared.clone(),
        stop_accepting,
        draining: std::sync::Mutex::new(Vec::new()),
        grace: limits.shutdown_grace,
    };
    let s = shared.clone();
    let proxy_task = spawn_listener(
        proxy,
        tls,
        running.stop_accepting.subscribe(),
        Some((limits, metrics.clone())),
        move |req, peer| {
            let gateway = s.gateway();
            async move { Ok::<_, Infallible>(gateway.handle(req, peer, scheme).await) }
        },
    );
    let mut draining = vec![proxy_task];
    if let Some(auth) = auth {
        let s = shared.clone();
        draining.push(spawn_listener(
            auth,
            None,
            running.stop_accepting.subscribe(),
            Some((limits, metrics.clone())),
            move |req, peer| {
                let gateway = s.gateway();
                async move { Ok::<_, Infallible>(gateway.handle_auth(req, peer).await) }
            },
        ));
    }
    if let Ok(mut d) = running.draining.lock() {
        *d = draining;
    }
    let s = shared.clone();
    spawn_listener(
        admin,
        None,
        shared.stop_all.subscribe(),
        None,
        move |req, _| {
            let s = s.clone();
            async move { Ok::<_, Infallible>(crate::admin::handle(&s, &req)) }
        },
    );
    tracing::info!(proxy = %running.proxy_addr, admin = %running.admin_addr, auth = ?running.auth_addr, tls = scheme == "https", "scopegate listening");
    Ok(running)
}

/// Accepts connections on `listener` until `stop`, serving each with `handler`; the returned
/// task ends once every accepted connection has finished (graceful drain). With `limits`, the
/// connection count, header size and header read time are bounded.
pub fn spawn_listener<H, F, B>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
    limits: Option<(Limits, Metrics)>,
    handler: H,
) -> JoinHandle<()>
where
    H: Fn(hyper::Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if let Some((l, _)) = &limits {
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(l.header_read_timeout)
            .max_buf_size(l.max_header_bytes);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(l.max_header_bytes).unwrap_or(u32::MAX));
    }
    let slots = Arc::new(Semaphore::new(
        limits
            .as_ref()
            .map_or(Semaphore::MAX_PERMITS, |(l, _)| l.max_connections),
    ));
    tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        loop {
            let (mut stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop.changed() => break,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                if let Some((_, metrics)) = &limits {
                    metrics
                        .limit_rejections
                        .with_label_values(&["connections"])
                        .inc();
                }
                tokio::spawn(async move {
                    let _ = stream.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: 1\r\nconnection: close\r\n\r\n").await;
                });
                continue;
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            let service = service_fn(move |req| handler(req, peer));
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let tls = tls.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let result = match tls {
                    None => {
                        watcher
                            .watch(
                                builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .into_owned(),
                            )
                            .await
                    }
                    Some(acceptor) => {
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(tls_stream)) => {
                                watcher
                                    .watch(
                                        builder
                                            .serve_connection(TokioIo::new(tls_stream), service)
                                            .into_owned(),
                                    )
                                    .await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        }
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        drop(listener);
        graceful.shutdown().await;
    })
}
