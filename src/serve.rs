//! Listeners and the running gateway: accepts TCP (optionally TLS) connections, serves HTTP/1.1
//! and HTTP/2 with hyper-util's auto builder, and hands each request to the *current* gateway.
//!
//! The gateway is swapped atomically on reload (`ArcSwap`): each request takes a snapshot when
//! it starts and finishes on it. Shutdown is graceful: readiness turns false, the proxy and auth
//! listeners stop accepting, open connections finish their requests up to the grace period,
//! and only then do the admin listener and background tasks stop.
//!
//! Every connection of a listener with limits is bounded, so that none can hold a slot without
//! sending requests: a slot of the listener and one of its client IP, a deadline from accept to
//! its first request head, and an idle timeout between requests.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Limits};
use crate::gateway::Gateway;
use crate::metrics::Metrics;

pub use crate::state::Shared;
use crate::websocket::Hold;

mod conn;
use conn::{Activity, Bounds, Counted, FirstByte, InFlight, Timeouts, drive, first_byte};

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

/// Entries in the gateway's caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSizes {
    pub verified_tokens: u64,
    pub minted_tokens: u64,
    pub permissions: u64,
}

/// A running gateway: its bound addresses and the switches that reload and stop it.
#[derive(Debug)]
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The forward-auth listener, when configured.
    pub auth_addr: Option<SocketAddr>,
    pub(crate) shared: Arc<Shared>,
    stop_accepting: watch::Sender<bool>,
    /// The proxy and auth listeners; each ends once its connections have drained.
    draining: std::sync::Mutex<Vec<JoinHandle<()>>>,
    grace: Duration,
}

impl Running {
    /// The gateway now in force.
    pub(crate) fn gateway(&self) -> Arc<Gateway> {
        self.shared.gateway()
    }

    /// Whether the gateway is ready to serve (every issuer's keys loaded), as `/readyz` says.
    pub fn ready(&self) -> bool {
        self.gateway().ready()
    }

    /// The metrics in Prometheus text form, as `/metrics` serves them (readable after a
    /// shutdown has closed the admin listener).
    pub fn metrics(&self) -> String {
        self.gateway().metrics.render()
    }

    /// How many entries the gateway's caches hold now (verified tokens, minted tokens,
    /// permissions answers), for sizing and for tests of the bounds.
    pub async fn cache_sizes(&self) -> CacheSizes {
        let gateway = self.gateway();
        let permissions = match gateway.permissions() {
            Some(p) => p.cached_entries().await,
            None => 0,
        };
        CacheSizes {
            verified_tokens: gateway.cached_tokens(),
            minted_tokens: gateway.cached_minted_tokens(),
            permissions,
        }
    }

    /// Reloads the configuration from `path` on SIGHUP or when a `watched` file changes
    /// (polled `every`); see [`crate::reload::spawn`].
    pub fn reload_on_change(
        &self,
        path: std::path::PathBuf,
        watched: Vec<std::path::PathBuf>,
        every: Duration,
    ) -> JoinHandle<()> {
        crate::reload::spawn(self.shared.clone(), path, watched, every)
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
    let cores = crate::cores::count(listen.workers);
    let (proxy_addr, proxy) = bind_per_core(listen.proxy, cores)?;
    let admin = bind(listen.admin).await?;
    let auth = match listen.auth {
        Some(addr) => Some(bind_per_core(addr, cores)?),
        None => None,
    };
    let (stop_accepting, _) = watch::channel(false);
    let gateway = Arc::new(Gateway::new(config, metrics.clone()));
    futures_util::future::join_all(gateway.issuers.iter().map(|k| k.refresh())).await;
    metrics
        .config_last_reload
        .set(crate::token::unix_now() as i64);
    let shared = Arc::new(Shared::new(gateway, metrics.clone(), listen, tls.is_some()));
    let scheme = if tls.is_some() { "https" } else { "http" };
    let running = Running {
        proxy_addr,
        admin_addr: local(&admin, listen.admin)?,
        auth_addr: auth.as_ref().map(|(addr, _)| *addr),
        shared: shared.clone(),
        stop_accepting,
        draining: std::sync::Mutex::new(Vec::new()),
        grace: limits.shutdown_grace,
    };
    let s = shared.clone();
    let mut draining = spawn_per_core(
        (proxy_addr, proxy),
        tls,
        &running.stop_accepting.subscribe(),
        Some((limits, metrics.clone())),
        move |req, peer| {
            let gateway = s.gateway();
            async move { Ok::<_, Infallible>(gateway.handle(req, peer, scheme).await) }
        },
    )?;
    if let Some(auth) = auth {
        let s = shared.clone();
        draining.extend(spawn_per_core(
            auth,
            None,
            &running.stop_accepting.subscribe(),
            Some((limits, metrics.clone())),
            move |req, peer| {
                let gateway = s.gateway();
                async move { Ok::<_, Infallible>(gateway.handle_auth_listener(req, peer).await) }
            },
        )?);
    }
    if let Ok(mut d) = running.draining.lock() {
        *d = draining;
    }
    let s = shared.clone();
    let admin_limits = Limits {
        max_connections: limits.max_connections.min(ADMIN_MAX_CONNECTIONS),
        max_connections_per_peer: limits.max_connections_per_peer.min(ADMIN_MAX_CONNECTIONS),
        ..limits
    };
    spawn_listener(
        admin,
        None,
        shared.stop_all.subscribe(),
        Some((admin_limits, metrics)),
        move |req, _| {
            let s = s.clone();
            async move { Ok::<_, Infallible>(crate::admin::handle(&s, &req).await) }
        },
    );
    tracing::info!(proxy = %running.proxy_addr, admin = %running.admin_addr, auth = ?running.auth_addr, tls = scheme == "https", "scopegate listening");
    Ok(running)
}

/// Connections the admin listener holds at most, whatever `limits.max_connections` says: probes
/// and scrapes need a handful, and a bound of its own keeps a flood of the proxy port's size from
/// fitting on the admin port.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// The TLS handshake bound of a listener without limits (the listeners of tests and `dev`).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: 1\r\nconnection: close\r\n\r\n";

/// Accepts connections on `listener` until `stop`, serving each with `handler`; the returned
/// task ends once every accepted connection has finished (graceful drain). With `limits`, the
/// connection count (per listener and per client IP), header size, time to the first request
/// head and idle time are bounded.
pub fn spawn_listener<H, F, B>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
    limits: Option<(Limits, Metrics)>,
    handler: H,
) -> JoinHandle<()>
where
    H: Fn(hyper::Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(Serving::new(tls, limits, handler).accept(listener, stop))
}

/// A listener served thread per core: each of `listeners` (handles of one socket) is accepted
/// on a thread of its own running a single-threaded runtime, marked as that serving thread for
/// [`crate::cores`]. Connection bounds are shared by all of them. Each returned task ends when
/// its thread's listener has drained; a thread that cannot start fails the listener (`addr`).
fn spawn_per_core<H, F, B>(
    (addr, listeners): (SocketAddr, Vec<std::net::TcpListener>),
    tls: Option<TlsAcceptor>,
    stop: &watch::Receiver<bool>,
    limits: Option<(Limits, Metrics)>,
    handler: H,
) -> Result<Vec<JoinHandle<()>>, ServeError>
where
    H: Fn(hyper::Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let err = |source| ServeError::Bind { addr, source };
    let serving = Serving::new(tls, limits, handler);
    let mut drained = Vec::new();
    for (core, listener) in listeners.into_iter().enumerate() {
        let (serving, stop) = (serving.clone(), stop.clone());
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(err)?;
        std::thread::Builder::new()
            .name(format!("scopegate-core-{core}"))
            .spawn(move || {
                crate::cores::enter(core);
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(l) => serving.accept(l, stop).await,
                        Err(e) => tracing::error!(error = %e, core, "cannot serve a listener"),
                    }
                });
                let _ = done.send(());
            })
            .map_err(err)?;
        drained.push(tokio::spawn(async move {
            let _ = finished.await;
        }));
    }
    Ok(drained)
}

/// One socket listening on `addr`, as `cores` handles ready to move to their serving threads:
/// every thread accepts from the same queue (whichever is free takes the next connection, in
/// arrival order). Not `SO_REUSEPORT`: a socket per thread would let another process of the same
/// user bind the same port and take a share of the connections, and would let a connection
/// wait in the queue of a busy thread while another is idle.
fn bind_per_core(
    addr: SocketAddr,
    cores: usize,
) -> Result<(SocketAddr, Vec<std::net::TcpListener>), ServeError> {
    let err = |source| ServeError::Bind { addr, source };
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    let listener = socket.listen(LISTEN_BACKLOG).map_err(err)?;
    let bound = listener.local_addr().map_err(err)?;
    let first = listener.into_std().map_err(err)?;
    let mut listeners = Vec::with_capacity(cores.max(1));
    for _ in 1..cores.max(1) {
        listeners.push(first.try_clone().map_err(err)?);
    }
    listeners.push(first);
    Ok((bound, listeners))
}

/// Pending connections a listening socket queues (tokio's own default).
const LISTEN_BACKLOG: u32 = 1024;

/// How a listener serves its connections: the HTTP builder, TLS, bounds and the handler. Clones
/// share the bounds (a listener's serving threads count together).
#[derive(Clone)]
struct Serving<H> {
    builder: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    timeouts: Option<Timeouts>,
    bounds: Bounds,
    metrics: Option<Metrics>,
    handler: H,
}

impl<H, F, B> Serving<H>
where
    H: Fn(hyper::Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn new(tls: Option<TlsAcceptor>, limits: Option<(Limits, Metrics)>, handler: H) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        if let Some((l, _)) = &limits {
            // hyper starts this timer whenever it waits for a request head: after the first bytes
            // (the auto builder's protocol detection comes first, and has no timer) and again after
            // each response on a kept-alive connection, which it closes, without an answer, when the
            // next head is late.
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(l.header_read_timeout)
                .max_buf_size(l.max_header_bytes);
            // Pings find a vanished peer under a long request; an idle live one answers them, which
            // is why the idle timer below exists.
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(l.idle_timeout)
                .keep_alive_timeout(l.header_read_timeout)
                .max_header_list_size(u32::try_from(l.max_header_bytes).unwrap_or(u32::MAX));
        }
        let timeouts = limits.as_ref().map(|(l, _)| Timeouts {
            head: l.header_read_timeout,
            idle: l.idle_timeout,
        });
        let bounds = Bounds {
            slots: Arc::new(Semaphore::new(
                limits
                    .as_ref()
                    .map_or(Semaphore::MAX_PERMITS, |(l, _)| l.max_connections),
            )),
            per_peer: limits.as_ref().map(|(l, _)| l.max_connections_per_peer),
            peers: Arc::default(),
        };
        let metrics = limits.map(|(_, m)| m);
        Self {
            builder,
            tls,
            timeouts,
            bounds,
            metrics,
            handler,
        }
    }

    /// Accepts on `listener` until `stop`, then waits for its connections to finish.
    async fn accept(self, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        let Self {
            builder,
            tls,
            timeouts,
            bounds,
            metrics,
            handler,
        } = self;
        // Every connection task holds a receiver until it ends: a change asks them to shut down
        // gracefully, and `closed()` is the end of the drain.
        let (drain, _) = watch::channel(());
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
            let opened = Instant::now();
            let admission = match bounds.admit(peer.ip()) {
                Ok(a) => a,
                Err(limit) => {
                    if let Some(metrics) = &metrics {
                        metrics.limit_rejections.with_label_values(&[limit]).inc();
                    }
                    tokio::spawn(async move {
                        let _ = stream.write_all(BUSY).await;
                    });
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let activity = Arc::new(Activity::new(opened));
            let admission = Arc::new(admission);
            let mut drain = drain.subscribe();
            let service = {
                let (handler, activity) = (handler.clone(), activity.clone());
                let hold = Hold::new(admission.clone(), drain.clone());
                service_fn(move |mut req: hyper::Request<Incoming>| {
                    // Only a request that may become a tunnel carries the connection's share.
                    if req.headers().contains_key(hyper::header::UPGRADE) {
                        req.extensions_mut().insert(hold.clone());
                    }
                    let in_flight = InFlight::start(activity.clone());
                    // Boxed: the gateway's future is several kilobytes, and hyper moves the
                    // service future as it places it; a pointer moves for free.
                    let answer = Box::pin(handler(req, peer));
                    async move {
                        answer
                            .await
                            .map(|res| res.map(|body| Counted { body, in_flight }))
                    }
                })
            };
            let builder = builder.clone();
            let tls = tls.clone();
            let metrics = metrics.clone();
            let count = move |limit: &str| {
                if let Some(m) = &metrics {
                    m.limit_rejections.with_label_values(&[limit]).inc();
                }
            };
            tokio::spawn(async move {
                let _admission = admission;
                let head_by = timeouts.map(|t| opened + t.head);
                let ended = match tls {
                    None => {
                        if let Some(by) = head_by {
                            match first_byte(&mut stream, by, &mut drain).await {
                                FirstByte::Arrived => {}
                                FirstByte::Gone => return,
                                FirstByte::TimedOut => return count("header_timeout"),
                            }
                        }
                        let conn =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        drive(conn, &activity, timeouts, &mut drain).await
                    }
                    Some(acceptor) => {
                        let by = head_by.unwrap_or(opened + TLS_HANDSHAKE_TIMEOUT);
                        let handshake = tokio::select! {
                            done = tokio::time::timeout_at(by, acceptor.accept(stream)) => done,
                            _ = drain.changed() => return,
                        };
                        let tls_stream = match handshake {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return count("header_timeout");
                            }
                        };
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
                        drive(conn, &activity, timeouts, &mut drain).await
                    }
                };
                match ended {
                    Some(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    Some(Ok(())) => {}
                    None => {
                        count("connection_deadline");
                        tracing::debug!(%peer, "connection dropped at its deadline");
                    }
                }
            });
        }
        drop(listener);
        let _ = drain.send(());
        drain.closed().await;
    }
}
