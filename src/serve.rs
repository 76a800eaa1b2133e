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
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Limits};
use crate::gateway::Gateway;
use crate::metrics::Metrics;
pub use crate::state::Shared;

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
    let (stop_accepting, _) = watch::channel(false);
    let gateway = Arc::new(Gateway::new(config, metrics.clone()));
    futures_util::future::join_all(gateway.issuers.iter().map(|k| k.refresh())).await;
    metrics
        .config_last_reload
        .set(crate::token::unix_now() as i64);
    let shared = Arc::new(Shared::new(gateway, metrics.clone(), listen, tls.is_some()));
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
            async move { Ok::<_, Infallible>(crate::admin::handle(&s, &req)) }
        },
    );
    tracing::info!(proxy = %running.proxy_addr, admin = %running.admin_addr, auth = ?running.auth_addr, tls = scheme == "https", "scopegate listening");
    Ok(running)
}

/// Connections the admin listener holds at most, whatever `limits.max_connections` says: probes
/// and scrapes need a handful, and a bound of its own keeps a flood of the proxy port's size from
/// fitting on the admin port.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// How long a connection told to go (HTTP/2 GOAWAY on idle or drain) may take with nothing in
/// flight before it is dropped: one round trip for a request already on the wire, and for the
/// last response to be flushed. h2 waits for the peer to acknowledge the GOAWAY's ping before it
/// closes, which a silent peer never does.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The TLS handshake bound of a listener without limits (the listeners of tests and `dev`).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: 1\r\nconnection: close\r\n\r\n";

/// Accepts connections on `listener` until `stop`, serving each with `handler`; the returned
/// task ends once every accepted connection has finished (graceful drain). With `limits`, the
/// connection count (per listener and per client IP), header size, time to the first request
/// head and idle time are bounded.
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
    tokio::spawn(async move {
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
            let service = {
                let (handler, activity) = (handler.clone(), activity.clone());
                service_fn(move |req| {
                    let in_flight = InFlight::start(activity.clone());
                    let answer = handler(req, peer);
                    async move {
                        answer
                            .await
                            .map(|res| res.map(|body| Counted { body, in_flight }))
                    }
                })
            };
            let builder = builder.clone();
            let mut drain = drain.subscribe();
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
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
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
                        let conn = builder.serve_connection(TokioIo::new(tls_stream), service);
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
    })
}

/// A listener's connection caps; each admitted connection holds its share until it ends.
struct Bounds {
    /// One permit per open connection.
    slots: Arc<Semaphore>,
    /// Open connections per client IP, when bounded.
    per_peer: Option<usize>,
    peers: Arc<DashMap<IpAddr, usize>>,
}

impl Bounds {
    /// Takes a slot of the listener and one of `ip`'s, or names the limit (the
    /// `limit_rejections` label) that refuses the connection.
    fn admit(&self, ip: IpAddr) -> Result<Admission, &'static str> {
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| "connections")?;
        let peer = match self.per_peer {
            None => None,
            Some(max) => Some(PeerSlot::take(&self.peers, ip, max).ok_or("peer_connections")?),
        };
        Ok(Admission {
            _slot: slot,
            _peer: peer,
        })
    }
}

/// A connection's claim on its listener's bounds, given back when the connection task ends.
struct Admission {
    _slot: OwnedSemaphorePermit,
    _peer: Option<PeerSlot>,
}

/// One connection counted against its client's IP address. The count lives in a `DashMap` so
/// that accepts on many cores do not queue behind one lock, and its entry is removed when the
/// count drops to zero, so the map holds only the addresses with connections open.
struct PeerSlot {
    peers: Arc<DashMap<IpAddr, usize>>,
    ip: IpAddr,
}

impl PeerSlot {
    fn take(peers: &Arc<DashMap<IpAddr, usize>>, ip: IpAddr, max: usize) -> Option<Self> {
        // An IPv4 client of a dual-stack listener shows up as `::ffff:a.b.c.d`; one address,
        // one count.
        let ip = ip.to_canonical();
        let mut open = peers.entry(ip).or_insert(0);
        if *open >= max {
            return None;
        }
        *open += 1;
        drop(open);
        Some(Self {
            peers: peers.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Entry::Occupied(mut open) = self.peers.entry(self.ip) {
            *open.get_mut() = open.get().saturating_sub(1);
            if *open.get() == 0 {
                open.remove();
            }
        }
    }
}

/// Waits until the client has sent its first byte, until `by` at most. hyper-util's auto
/// builder reads the first bytes to tell HTTP/1 from HTTP/2 and has no timeout there, so a
/// silent socket would otherwise hold its slot forever. A silent client gets a 408. Returns
/// what happened.
async fn first_byte(
    stream: &mut TcpStream,
    by: Instant,
    drain: &mut watch::Receiver<()>,
) -> FirstByte {
    let mut byte = [0u8; 1];
    tokio::select! {
        peeked = tokio::time::timeout_at(by, stream.peek(&mut byte)) => match peeked {
            Ok(Ok(n)) if n > 0 => FirstByte::Arrived,
            Ok(_) => FirstByte::Gone,
            Err(_) => {
                let _ = stream.write_all(REQUEST_TIMEOUT).await;
                let _ = stream.shutdown().await;
                FirstByte::TimedOut
            }
        },
        _ = drain.changed() => FirstByte::Gone,
    }
}

/// How the wait for a connection's first byte ended.
enum FirstByte {
    /// Serve it.
    Arrived,
    /// Closed by the client, or the listener is draining.
    Gone,
    /// Nothing came in time: answered 408 and closed (counted as `header_timeout`).
    TimedOut,
}

/// The per-connection time bounds of a listener with limits.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    /// From accept to the first request head.
    head: Duration,
    /// With no request in flight.
    idle: Duration,
}

/// Drives one connection to its end. A drain of the listener and the idle timer shut it down
/// gracefully (HTTP/1 closes after the response in flight, HTTP/2 sends GOAWAY and finishes its
/// streams); one whose first request head is late, or that still has nothing in flight
/// [`CLOSE_GRACE`] after being told to go, is dropped, which returns `None`. hyper-util's
/// `GracefulShutdown` cannot be used here: its watcher takes the connection by value, so nothing
/// else could shut that connection down, and the trait it needs is sealed.
async fn drive<I, S, B>(
    conn: auto::Connection<'_, I, S, TokioExecutor>,
    activity: &Activity,
    timeouts: Option<Timeouts>,
    drain: &mut watch::Receiver<()>,
) -> Option<Result<(), Box<dyn std::error::Error + Send + Sync>>>
where
    S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut conn = std::pin::pin!(conn);
    let mut going_away = None;
    let mut draining = false;
    loop {
        let wake = timeouts.map(|t| activity.next(t, going_away).0);
        tokio::select! {
            ended = conn.as_mut() => return Some(ended),
            _ = drain.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
                going_away.get_or_insert_with(Instant::now);
            }
            () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                let Some(t) = timeouts else { continue };
                // Re-read: a request may have started since the timer was set.
                let (at, step) = activity.next(t, going_away);
                if at > Instant::now() {
                    continue;
                }
                match step {
                    Step::Wait => {}
                    Step::GoAway => {
                        conn.as_mut().graceful_shutdown();
                        going_away = Some(Instant::now());
                    }
                    Step::Drop => return None,
                }
            }
        }
    }
}

/// What the idle timer does to a connection when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// A request is in flight: look again later.
    Wait,
    /// Idle for `idle_timeout`: shut down gracefully.
    GoAway,
    /// No request head in time, or told to go and still there: close.
    Drop,
}

/// Requests in flight on one connection and when the last one ended, which the idle timer reads.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Whether any request has started (its head arrived).
    started: AtomicBool,
    /// Nanoseconds from `opened` to the end of the last request.
    last_done: AtomicU64,
}

impl Activity {
    fn new(opened: Instant) -> Self {
        Self {
            opened,
            in_flight: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            last_done: AtomicU64::new(0),
        }
    }

    /// When the timer should fire next, and what it does then.
    fn next(&self, t: Timeouts, going_away: Option<Instant>) -> (Instant, Step) {
        let now = Instant::now();
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return (now + t.idle, Step::Wait);
        }
        let last = self.opened + Duration::from_nanos(self.last_done.load(Ordering::Acquire));
        if let Some(told) = going_away {
            return (told.max(last) + CLOSE_GRACE, Step::Drop);
        }
        let idle_at = last + t.idle;
        let head_at = self.opened + t.head;
        if !self.started.load(Ordering::Acquire) && head_at <= idle_at {
            return (head_at, Step::Drop);
        }
        (idle_at, Step::GoAway)
    }
}

/// One request in flight on its connection, counted from the moment hyper calls the service
/// (its head has arrived) until hyper drops the response body, which it does after the body's
/// last frame or when the connection ends. Until the body, not the head: a long download is
/// not idle.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.started.store(true, Ordering::Release);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let since = u64::try_from(a.opened.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // The time first, so that whoever sees the count at zero also sees when it got there.
        a.last_done.fetch_max(since, Ordering::AcqRel);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request [`InFlight`] for as long as hyper holds it.
    struct Counted<B> {
        #[pin]
        body: B,
        in_flight: InFlight,
    }
}

impl<B: Body> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
