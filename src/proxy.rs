//! Forwarding: pooled keep-alive clients per upstream (HTTP/1.1, HTTP/2 or both, by its
//! `protocol`), request header rewriting as an ordered list of steps, and upstream failures
//! mapped to 502/504. Bodies and trailers stream through; request trailers lose what headers of
//! the same names would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::body::{Frame, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::fetch::Alpn;
use crate::inbound::RequestRules;
use crate::metrics::Metrics;
use crate::policy::{UpstreamConfig, UpstreamProtocol};

/// Why an upstream did not answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connection refused, reset, TLS failure or a broken response (502).
    #[error("the upstream is unavailable")]
    Unavailable,
    /// No connection or no response headers within the configured time (504).
    #[error("the upstream did not answer in time")]
    Timeout,
    /// The upstream already has `max_concurrency` requests in flight (503).
    #[error("the upstream is at its concurrency limit")]
    Busy,
    /// The client stopped sending its request body for longer than `body_read_timeout` (408).
    #[error("the request body stalled")]
    BodyStalled,
}

/// The error a stalled request body ends with, found again in the upstream client's error.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled for longer than the body read timeout")]
pub(crate) struct BodyStalled;

pin_project_lite::pin_project! {
    /// A request body that fails with [`BodyStalled`] when no piece of it arrives for
    /// `timeout`: a client that trickles or stops its body cannot hold an upstream slot.
    pub struct Stalling<B> {
        #[pin]
        body: B,
        #[pin]
        deadline: tokio::time::Sleep,
        timeout: Duration,
    }
}

impl<B> Stalling<B> {
    pub(crate) fn new(body: B, timeout: Duration) -> Self {
        Self {
            body,
            deadline: tokio::time::sleep(timeout),
            timeout,
        }
    }
}

impl<B> hyper::body::Body for Stalling<B>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::future::Future;
        use std::task::Poll;
        let mut this = self.project();
        match this.body.poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + *this.timeout;
                this.deadline.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.deadline.poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Headers defined as hop-by-hop (RFC 9110 section 7.6.1), plus the legacy ones proxies drop.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

static XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
static XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
static XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// What the pipeline knows about the inbound request that forwarding needs.
#[derive(Debug)]
pub(crate) struct Inbound<'a> {
    pub peer: SocketAddr,
    /// `http` or `https`: the scheme of the listener the request came in on.
    pub scheme: &'static str,
    /// The validated host the client asked for (forwarded as `X-Forwarded-Host`).
    pub host: Option<&'a crate::host::Host>,
    /// What replaces the client's `Authorization` (the minted token), or `None` to send none.
    pub authorization: Option<HeaderValue>,
    /// Override headers to strip and the other header steps.
    pub rules: &'a Arc<RequestRules>,
    /// The request header the decision read the organization from, if any.
    pub decision_header: Option<&'a HeaderName>,
    /// An allowed WebSocket upgrade: its `Upgrade` and `Connection` are forwarded, not stripped.
    pub websocket: bool,
}

/// What goes upstream: the client's body, streamed, with the route's size bound when it has one.
pub(crate) type UpstreamBody = http_body_util::combinators::UnsyncBoxBody<
    bytes::Bytes,
    Box<dyn std::error::Error + Send + Sync>,
>;

type UpstreamClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// The clients for every upstream.
#[derive(Debug)]
pub(crate) struct Upstreams {
    clients: HashMap<String, Pooled>,
    body_read_timeout: Duration,
    metrics: Metrics,
}

/// One upstream's pooled clients (one set per serving thread, see [`crate::cores`]), the slots
/// bounding its requests in flight, and its `Host`.
#[derive(Debug)]
struct Pooled {
    per_core: Box<[Clients]>,
    slots: tokio::sync::Semaphore,
    host: HeaderValue,
}

/// The clients of one upstream on one serving thread.
#[derive(Debug)]
struct Clients {
    /// HTTP/1.1 (`http1`; `auto` for HTTP/1 clients and WebSocket upgrades).
    http1: Option<UpstreamClient>,
    /// HTTP/2 (`h2c`, `h2`; `auto` for HTTP/2 clients), and the version its requests carry.
    http2: Option<(UpstreamClient, Version)>,
}

impl Pooled {
    fn new(u: &UpstreamConfig, cores: usize) -> Self {
        Self {
            per_core: (0..cores.max(1)).map(|_| Clients::new(u)).collect(),
            slots: tokio::sync::Semaphore::new(u.max_concurrency),
            // An `Authority` is always a valid header value.
            host: HeaderValue::from_str(u.authority.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
        }
    }

    /// The clients of the serving thread this runs on.
    fn here(&self) -> &Clients {
        &self.per_core[crate::cores::current() % self.per_core.len()]
    }
}

impl Clients {
    fn new(u: &UpstreamConfig) -> Self {
        let client = |alpn: Alpn| {
            let mut builder = Client::builder(TokioExecutor::new());
            builder
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(256)
                // HTTP/2 only when nothing else is offered: with prior knowledge on `http://`.
                .http2_only(alpn == Alpn::H2);
            builder.build(crate::fetch::https_connector(
                u.connect_timeout,
                u.tls.as_ref(),
                alpn,
            ))
        };
        let tls = u.scheme == http::uri::Scheme::HTTPS;
        let (http1, http2) = match u.protocol {
            UpstreamProtocol::Http1 => (Some(client(Alpn::Http1)), None),
            UpstreamProtocol::H2c | UpstreamProtocol::H2 => {
                (None, Some((client(Alpn::H2), Version::HTTP_2)))
            }
            // The server picks by ALPN; hyper speaks HTTP/2 on an `h2` connection whatever
            // version the request names, and HTTP/1.1 is the one that fits both.
            UpstreamProtocol::Auto if tls => (
                Some(client(Alpn::Http1)),
                Some((client(Alpn::Both), Version::HTTP_11)),
            ),
            UpstreamProtocol::Auto => (
                Some(client(Alpn::Http1)),
                Some((client(Alpn::H2), Version::HTTP_2)),
            ),
        };
        Self { http1, http2 }
    }

    /// The client for a request the client sent as `version`, and the version to send.
    fn client(&self, version: Version, websocket: bool) -> Option<(&UpstreamClient, Version)> {
        let http1 = self.http1.as_ref().map(|c| (c, Version::HTTP_11));
        let http2 = self.http2.as_ref().map(|(c, v)| (c, *v));
        match (http1, http2) {
            (Some(_), Some(h2)) if version == Version::HTTP_2 && !websocket => Some(h2),
            (Some(h1), _) => Some(h1),
            (None, h2) => h2,
        }
    }
}

impl Upstreams {
    /// Clients for `upstreams`, one pool set per serving thread (`cores`).
    pub(crate) fn new<'a>(
        upstreams: impl IntoIterator<Item = &'a Arc<UpstreamConfig>>,
        cores: usize,
        body_read_timeout: Duration,
        metrics: Metrics,
    ) -> Self {
        let clients = upstreams
            .into_iter()
            .map(|u| (u.name.clone(), Pooled::new(u, cores)))
            .collect();
        Self {
            clients,
            body_read_timeout,
            metrics,
        }
    }

    /// Sends `request` (whose path is already normalized and authorized) to `upstream`.
    pub(crate) async fn forward(
        &self,
        upstream: &UpstreamConfig,
        request: Request<Incoming>,
        path: &str,
        inbound: &Inbound<'_>,
        max_body: Option<u64>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        use http_body_util::BodyExt;
        let timeout = self.body_read_timeout;
        let pooled = self
            .clients
            .get(&upstream.name)
            .ok_or(UpstreamError::Unavailable)?;
        let (client, version) = pooled
            .here()
            .client(request.version(), inbound.websocket)
            .ok_or(UpstreamError::Unavailable)?;
        let mut request = request.map(|body| {
            // A request without a body (most GETs) has nothing to stall, and no trailers to
            // clean: no timer for it.
            if hyper::body::Body::is_end_stream(&body) {
                return body.map_err(Into::into).boxed_unsync();
            }
            let trailers = TrailerRules {
                rules: inbound.rules.clone(),
                decision: inbound.decision_header.cloned(),
            };
            let body = body.map_frame(move |f| trailers.clean(f));
            match max_body {
                // A stream that outgrows the bound is cut off (the upstream sees an aborted body).
                Some(n) => Stalling::new(
                    http_body_util::Limited::new(body, usize::try_from(n).unwrap_or(usize::MAX)),
                    timeout,
                )
                .boxed_unsync(),
                None => Stalling::new(body, timeout).boxed_unsync(),
            }
        });
        let Pooled {
            slots,
            host: upstream_host,
            ..
        } = pooled;
        // Held until the response headers arrive; the body then streams outside the bound.
        let _slot = slots.try_acquire().map_err(|_| {
            self.metrics
                .limit_rejections
                .with_label_values(&["upstream"])
                .inc();
            UpstreamError::Busy
        })?;
        *request.uri_mut() = upstream_uri(upstream, path, request.uri().query())?;
        let host = inbound
            .host
            .and_then(|h| HeaderValue::from_str(h.authority()).ok());
        let headers = request.headers_mut();
        let te_trailers = asks_for_trailers(headers);
        strip_hop_by_hop(headers);
        // The one `TE` that passes: gRPC servers read it as "this client takes trailers".
        if te_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if inbound.websocket {
            set_websocket_upgrade(headers);
        }
        strip_owned(headers);
        inbound
            .rules
            .rewrite_headers(headers, inbound.decision_header);
        set_authorization(headers, inbound.authorization.clone());
        set_forwarded(headers, inbound, host);
        // The upstream's own authority (`:authority` on HTTP/2, from the URI); the client's is in
        // X-Forwarded-Host.
        *request.version_mut() = version;
        if version == Version::HTTP_2 {
            request.headers_mut().remove(header::HOST);
        } else {
            request
                .headers_mut()
                .insert(header::HOST, upstream_host.clone());
        }
        let started = Instant::now();
        let result = tokio::time::timeout(upstream.timeout, client.request(request)).await;
        self.metrics
            .upstream_duration
            .with_label_values(&[upstream.name.as_str()])
            .observe(started.elapsed().as_secs_f64());
        let mut response = match result {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Err(e)) if caused_by::<BodyStalled>(&e) => return Err(UpstreamError::BodyStalled),
            Ok(Err(e)) if is_timeout(&e) => return Err(UpstreamError::Timeout),
            Ok(Err(e)) => {
                tracing::warn!(upstream = %upstream.name, error = %e, "upstream request failed");
                return Err(UpstreamError::Unavailable);
            }
            Ok(Ok(r)) => r,
        };
        let switched = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
        if switched && !(inbound.websocket && upgrades_to_websocket(response.headers())) {
            tracing::warn!(upstream = %upstream.name, "upstream switched protocols unasked");
            return Err(UpstreamError::Unavailable);
        }
        strip_hop_by_hop(response.headers_mut());
        if switched {
            set_websocket_upgrade(response.headers_mut());
        }
        Ok(response)
    }
}

/// Whether the request's `TE` is exactly `trailers`.
fn asks_for_trailers(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::TE).iter();
    values
        .next()
        .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"trailers"))
        && values.next().is_none()
}

/// What request trailers lose before they go upstream: every field a header of that name would
/// lose or have replaced, the decision's own header, and any `_` name. An upstream that merges
/// trailers into headers then reads only what was judged.
#[derive(Debug)]
struct TrailerRules {
    rules: Arc<RequestRules>,
    decision: Option<HeaderName>,
}

impl TrailerRules {
    fn clean(&self, frame: Frame<bytes::Bytes>) -> Frame<bytes::Bytes> {
        let mut trailers = match frame.into_trailers() {
            Ok(t) => t,
            Err(data) => return data,
        };
        strip_hop_by_hop(&mut trailers);
        strip_owned(&mut trailers);
        self.rules
            .rewrite_headers(&mut trailers, self.decision.as_ref());
        for name in [&header::AUTHORIZATION, &header::HOST, &header::FORWARDED]
            .into_iter()
            .chain([&XFF, &XFP, &XFH, &X_REAL_IP])
            .chain(self.decision.as_ref())
        {
            trailers.remove(name);
        }
        let aliases: Vec<HeaderName> = trailers
            .keys()
            .filter(|k| k.as_str().contains('_'))
            .cloned()
            .collect();
        for name in aliases {
            trailers.remove(name);
        }
        Frame::trailers(trailers)
    }
}

/// `Upgrade: websocket` and `Connection: upgrade`, the two hop-by-hop headers a WebSocket
/// handshake carries on each hop, set again after stripping.
fn set_websocket_upgrade(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// Whether a `101` switches to exactly what was asked for.
fn upgrades_to_websocket(headers: &HeaderMap) -> bool {
    let mut upgrades = headers.get_all(header::UPGRADE).iter();
    upgrades
        .next()
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && upgrades.next().is_none()
}

fn upstream_uri(
    upstream: &UpstreamConfig,
    path: &str,
    query: Option<&str>,
) -> Result<Uri, UpstreamError> {
    let mut pq = String::with_capacity(
        upstream.prefix.len() + path.len() + query.map_or(0, |q| q.len() + 1),
    );
    pq.push_str(&upstream.prefix);
    pq.push_str(path);
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(pq)
        .build()
        .map_err(|_| UpstreamError::Unavailable)
}

/// Removes hop-by-hop headers and every header the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the message's few names finds what to remove; removing each of the nine
    // names blindly hashed every one of them, on every request and response.
    let listed: Vec<&str> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            HOP_BY_HOP.contains(k) || listed.iter().any(|n| n.eq_ignore_ascii_case(k.as_str()))
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// The client's `Authorization` never reaches the upstream: it is replaced by the minted token,
/// or removed (public routes).
fn set_authorization(headers: &mut HeaderMap, minted: Option<HeaderValue>) {
    headers.remove(header::AUTHORIZATION);
    if let Some(v) = minted {
        headers.insert(header::AUTHORIZATION, v);
    }
}

/// Removes every `X-Scopegate-*` header a client sent.
pub(crate) fn strip_owned(headers: &mut HeaderMap) {
    let owned: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(crate::inbound::OWNED_PREFIX))
        .cloned()
        .collect();
    for name in owned {
        headers.remove(name);
    }
}

/// `X-Forwarded-For` gets the peer appended (earlier values are the client's claims, kept for
/// the upstream to judge); `X-Forwarded-Proto` and `X-Forwarded-Host` are replaced with what
/// scopegate itself saw. The other spellings of the same claims (`Forwarded`, `X-Real-IP`)
/// are removed: scopegate does not set them, so a client's copy would stand unchallenged.
fn set_forwarded(headers: &mut HeaderMap, inbound: &Inbound<'_>, host: Option<HeaderValue>) {
    if headers
        .keys()
        .any(|k| k == header::FORWARDED || k == X_REAL_IP)
    {
        headers.remove(header::FORWARDED);
        headers.remove(&X_REAL_IP);
    }
    let mut value = String::new();
    for previous in headers.get_all(&XFF).iter().filter_map(|v| v.to_str().ok()) {
        value.push_str(previous);
        value.push_str(", ");
    }
    match inbound.peer.ip() {
        // Written by hand: `Display` for an address goes through the formatting machinery.
        std::net::IpAddr::V4(ip) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in ip.octets().into_iter().enumerate() {
                if i > 0 {
                    value.push('.');
                }
                value.push_str(digits.format(octet));
            }
        }
        ip @ std::net::IpAddr::V6(_) => value.push_str(&ip.to_string()),
    }
    if let Ok(v) = HeaderValue::try_from(value) {
        headers.insert(&XFF, v);
    }
    headers.insert(&XFP, HeaderValue::from_static(inbound.scheme));
    match host {
        Some(h) => {
            headers.insert(&XFH, h);
        }
        None => {
            headers.remove(&XFH);
        }
    }
}

/// `e` and every error below it.
fn sources(
    e: &hyper_util::client::legacy::Error,
) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    let top: &(dyn std::error::Error + 'static) = e;
    std::iter::successors(Some(top), |s| s.source())
}

/// Whether `E` is somewhere in `e`'s chain of sources.
fn caused_by<E: std::error::Error + 'static>(e: &hyper_util::client::legacy::Error) -> bool {
    sources(e).any(|s| s.is::<E>())
}

fn is_timeout(e: &hyper_util::client::legacy::Error) -> bool {
    sources(e).any(|s| {
        s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}
