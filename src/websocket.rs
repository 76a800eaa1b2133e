//! WebSocket tunnels (RFC 6455 over HTTP/1.1): which requests ask for one, and the splice that
//! carries bytes both ways between the client's and the upstream's upgraded connections until
//! either side closes or one of the route's bounds (idle time, lifetime) is hit.
//!
//! Deciding and forwarding the upgrade request itself is the ordinary pipeline's job: this
//! module starts only once the upstream has answered `101`.

#[cfg(test)]
mod tests;

use std::any::Any;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap};
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use prometheus::{IntCounter, IntCounterVec, IntGauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::policy::WebSocketBounds;

/// Why an upgrade request is refused (400) before anything is forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// `Upgrade` names another protocol than `websocket` (`h2c`, `TLS/1.0`, ...): scopegate
    /// forwards no other protocol switch.
    #[error("only the `websocket` upgrade is accepted")]
    Unsupported,
    /// Not one HTTP/1.1 `GET` with one `Upgrade: websocket` and `Connection: upgrade`: an
    /// upstream could read such a request either as an upgrade or as a plain request.
    #[error(
        "a WebSocket upgrade is one HTTP/1.1 GET with `Upgrade: websocket` and `Connection: upgrade`"
    )]
    Malformed,
    /// The route has no `websocket:` key: an ordinary route never becomes a long-lived tunnel.
    #[error("this route does not accept WebSocket upgrades")]
    NotAllowed,
}

/// Whether a request asks to become a WebSocket (`Ok(false)`: an ordinary request, with no
/// `Upgrade` header).
pub fn requested(
    version: Version,
    method: &Method,
    headers: &HeaderMap,
) -> Result<bool, UpgradeError> {
    let mut upgrades = headers.get_all(header::UPGRADE).iter();
    let Some(first) = upgrades.next() else {
        return Ok(false);
    };
    let websocket = |v: &http::HeaderValue| v.as_bytes().eq_ignore_ascii_case(b"websocket");
    if !websocket(first) {
        return Err(UpgradeError::Unsupported);
    }
    let single = upgrades.next().is_none();
    let named = crate::inbound::connection_names(headers, &header::UPGRADE);
    if !single || !named || version != Version::HTTP_11 || method != Method::GET {
        return Err(UpgradeError::Malformed);
    }
    Ok(true)
}

/// Whether a request that does (`upgrade`) or does not ask for an upgrade may go on, on a route
/// with `bounds` (`None`: upgrades refused), and the bounds of its tunnel if it opens one.
pub fn admit(
    upgrade: bool,
    bounds: Option<&WebSocketBounds>,
    token_exp: Option<u64>,
    now: u64,
) -> Result<Option<Tunnel>, UpgradeError> {
    match (bounds, upgrade) {
        (_, false) => Ok(None),
        (None, true) => Err(UpgradeError::NotAllowed),
        (Some(b), true) => Ok(Some(tunnel(b, token_exp, now))),
    }
}

/// The bounds of one connection on a route with `bounds` whose minted token expires at
/// `token_exp` (unix seconds; `None` on a public route), at `now`: it never outlives the
/// authorization it was opened with.
fn tunnel(bounds: &WebSocketBounds, token_exp: Option<u64>, now: u64) -> Tunnel {
    let left = token_exp.map(|exp| Duration::from_secs(exp.saturating_sub(now)));
    let lifetime = match (left, bounds.max_lifetime) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        // No token and no bound (the configuration gives public routes one): fail closed.
        (None, None) => Duration::ZERO,
    };
    Tunnel {
        idle: bounds.idle_timeout,
        lifetime,
    }
}

/// The bounds of one open tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    pub idle: Duration,
    /// From the moment the upstream said `101`.
    pub lifetime: Duration,
}

/// What a serving connection lends to the tunnel its upgrade becomes: its listener slot, kept
/// taken while the tunnel is open (so `max_connections` bounds tunnels too), and the listener's
/// drain signal (a shutdown closes tunnels instead of waiting out the grace period for them).
#[derive(Clone)]
pub struct Hold {
    slot: Arc<dyn Any + Send + Sync>,
    drain: watch::Receiver<()>,
}

impl Hold {
    pub fn new(slot: Arc<dyn Any + Send + Sync>, drain: watch::Receiver<()>) -> Self {
        Self { slot, drain }
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold").finish_non_exhaustive()
    }
}

/// The client's half of an upgrade, taken from its request before the request is forwarded.
#[derive(Debug)]
pub struct Upgrading {
    client: OnUpgrade,
    hold: Option<Hold>,
}

impl Upgrading {
    pub fn take<B>(request: &mut Request<B>) -> Self {
        Self {
            hold: request.extensions_mut().remove::<Hold>(),
            client: hyper::upgrade::on(request),
        }
    }
}

/// Why a tunnel ended (the `reason` label of `scopegate_websocket_closures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Either side closed, and the other followed.
    Closed,
    /// Nothing went either way for the idle timeout.
    Idle,
    /// The lifetime (the minted token's `exp`, or `max_lifetime`) ran out.
    Lifetime,
    /// The listener is shutting down.
    Shutdown,
    /// An upgrade failed or a side broke off.
    Error,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Closed => "closed",
            Reason::Idle => "idle",
            Reason::Lifetime => "lifetime",
            Reason::Shutdown => "shutdown",
            Reason::Error => "error",
        }
    }
}

/// The metrics one tunnel updates, looked up once.
#[derive(Debug, Clone)]
struct Meters {
    open: IntGauge,
    /// Client to upstream.
    upstream: IntCounter,
    /// Upstream to client.
    downstream: IntCounter,
    closures: IntCounterVec,
}

impl Meters {
    fn of(metrics: &Metrics) -> Self {
        let bytes = |d: &str| metrics.websocket_bytes.with_label_values(&[d]);
        Self {
            open: metrics.websocket_connections.clone(),
            upstream: bytes("upstream"),
            downstream: bytes("downstream"),
            closures: metrics.websocket_closures.clone(),
        }
    }
}

/// Splices the client's connection with the upstream's once both upgrades complete, in a task
/// of its own; `upstream` is the upstream's `101`, about to be relayed to the client. When a
/// bound is hit both connections are dropped: the client sees its TCP connection close without
/// a WebSocket close frame (a browser reports code 1006).
pub fn splice(
    upgrading: Upgrading,
    upstream: &mut Response<Incoming>,
    bounds: Tunnel,
    metrics: &Metrics,
) {
    let upstream = hyper::upgrade::on(upstream);
    let meters = Meters::of(metrics);
    let deadline = Instant::now() + bounds.lifetime;
    tokio::spawn(async move {
        let Upgrading { client, hold } = upgrading;
        let (slot, drain) = hold.map(|h| (h.slot, h.drain)).unzip();
        let reason = match tokio::try_join!(client, upstream) {
            Ok((client, upstream)) => {
                let _open = Open::new(&meters.open);
                let (client, upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                run(client, upstream, bounds.idle, deadline, drain, &meters).await
            }
            Err(e) => {
                tracing::debug!(error = %e, "a WebSocket upgrade did not complete");
                Reason::Error
            }
        };
        meters.closures.with_label_values(&[reason.as_str()]).inc();
        // The listener slot is given back only now.
        drop(slot);
    });
}

/// One open tunnel, counted in the gauge while it lives.
struct Open<'a>(&'a IntGauge);

impl<'a> Open<'a> {
    fn new(gauge: &'a IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Copies both ways until both sides have closed (`Closed`), one breaks off (`Error`), or a
/// bound is hit; returning drops both connections.
async fn run<C, U>(
    mut client: C,
    mut upstream: U,
    idle: Duration,
    deadline: Instant,
    drain: Option<watch::Receiver<()>>,
    meters: &Meters,
) -> Reason
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let last = AtomicU64::new(0);
    let mut client = Metered::new(&mut client, &meters.upstream, &last, started);
    let mut upstream = Metered::new(&mut upstream, &meters.downstream, &last, started);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    let drained = async move {
        match drain {
            // A closed channel (the listener is gone) means the same.
            Some(mut d) => {
                let _ = d.changed().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(copy, drained);
    loop {
        let idle_at = started + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
        tokio::select! {
            done = &mut copy => return if done.is_ok() { Reason::Closed } else { Reason::Error },
            () = &mut drained => return Reason::Shutdown,
            () = tokio::time::sleep_until(deadline.min(idle_at)) => {
                let now = Instant::now();
                if now >= deadline {
                    return Reason::Lifetime;
                }
                // Re-read: bytes may have moved since the timer was set.
                let last = Duration::from_millis(last.load(Ordering::Relaxed));
                if now >= started + last + idle {
                    return Reason::Idle;
                }
            }
        }
    }
}

/// One side of a tunnel: counts the bytes read from it and notes when the last ones came.
struct Metered<'a, T> {
    io: &'a mut T,
    bytes: &'a IntCounter,
    /// Milliseconds from `started` to the last byte read on either side.
    last: &'a AtomicU64,
    started: Instant,
}

impl<'a, T> Metered<'a, T> {
    fn new(io: &'a mut T, bytes: &'a IntCounter, last: &'a AtomicU64, started: Instant) -> Self {
        Self {
            io,
            bytes,
            last,
            started,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut *this.io).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if read > 0 {
            this.bytes.inc_by(read as u64);
            let since = u64::try_from(this.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            this.last.fetch_max(since, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }
}
