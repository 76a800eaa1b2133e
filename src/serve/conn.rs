//! One connection's bounds: its slot of the listener and of its client IP, the deadline to its
//! first byte (408 when it sends nothing), and the drive loop that closes it when idle or told
//! to go. `spawn_listener` in the parent accepts; this module keeps each connection honest.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

/// How long a connection told to go (HTTP/2 GOAWAY on idle or drain) may take with nothing in
/// flight before it is dropped: one round trip for a request already on the wire, and for the
/// last response to be flushed. h2 waits for the peer to acknowledge the GOAWAY's ping before it
/// closes, which a silent peer never does.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// A listener's connection caps; each admitted connection holds its share until it ends. Clones
/// share the caps (a listener's serving threads count together).
#[derive(Clone)]
pub(super) struct Bounds {
    /// One permit per open connection.
    pub(super) slots: Arc<Semaphore>,
    /// Open connections per client IP, when bounded.
    pub(super) per_peer: Option<usize>,
    pub(super) peers: Arc<DashMap<IpAddr, usize>>,
}

impl Bounds {
    /// Takes a slot of the listener and one of `ip`'s, or names the limit (the
    /// `limit_rejections` label) that refuses the connection.
    pub(super) fn admit(&self, ip: IpAddr) -> Result<Admission, &'static str> {
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
pub(super) struct Admission {
    pub(super) _slot: OwnedSemaphorePermit,
    pub(super) _peer: Option<PeerSlot>,
}

/// One connection counted against its client's IP address. The count lives in a `DashMap` so
/// that accepts on many cores do not queue behind one lock, and its entry is removed when the
/// count drops to zero, so the map holds only the addresses with connections open.
pub(super) struct PeerSlot {
    pub(super) peers: Arc<DashMap<IpAddr, usize>>,
    pub(super) ip: IpAddr,
}

impl PeerSlot {
    pub(super) fn take(
        peers: &Arc<DashMap<IpAddr, usize>>,
        ip: IpAddr,
        max: usize,
    ) -> Option<Self> {
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
pub(super) async fn first_byte(
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
pub(super) enum FirstByte {
    /// Serve it.
    Arrived,
    /// Closed by the client, or the listener is draining.
    Gone,
    /// Nothing came in time: answered 408 and closed (counted as `header_timeout`).
    TimedOut,
}

/// The per-connection time bounds of a listener with limits.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    /// From accept to the first request head.
    pub(super) head: Duration,
    /// With no request in flight.
    pub(super) idle: Duration,
}

/// Drives one connection to its end. A drain of the listener and the idle timer shut it down
/// gracefully (HTTP/1 closes after the response in flight, HTTP/2 sends GOAWAY and finishes its
/// streams); one whose first request head is late, or that still has nothing in flight
/// [`CLOSE_GRACE`] after being told to go, is dropped, which returns `None`. hyper-util's
/// `GracefulShutdown` cannot be used here: its watcher takes the connection by value, so nothing
/// else could shut that connection down, and the trait it needs is sealed.
pub(super) async fn drive<I, S, B>(
    conn: auto::UpgradeableConnection<'_, I, S, TokioExecutor>,
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
pub(super) enum Step {
    /// A request is in flight: look again later.
    Wait,
    /// Idle for `idle_timeout`: shut down gracefully.
    GoAway,
    /// No request head in time, or told to go and still there: close.
    Drop,
}

/// Requests in flight on one connection and when the last one ended, which the idle timer reads.
#[derive(Debug)]
pub(super) struct Activity {
    pub(super) opened: Instant,
    pub(super) in_flight: AtomicUsize,
    /// Whether any request has started (its head arrived).
    pub(super) started: AtomicBool,
    /// Nanoseconds from `opened` to the end of the last request.
    pub(super) last_done: AtomicU64,
}

impl Activity {
    pub(super) fn new(opened: Instant) -> Self {
        Self {
            opened,
            in_flight: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            last_done: AtomicU64::new(0),
        }
    }

    /// When the timer should fire next, and what it does then.
    pub(super) fn next(&self, t: Timeouts, going_away: Option<Instant>) -> (Instant, Step) {
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
pub(super) struct InFlight(Arc<Activity>);

impl InFlight {
    pub(super) fn start(activity: Arc<Activity>) -> Self {
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
    pub(super) struct Counted<B> {
        #[pin]
        pub(super) body: B,
        pub(super) in_flight: InFlight,
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
