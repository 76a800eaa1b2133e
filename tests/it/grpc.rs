//! gRPC through scopegate with a real client and server (tonic over hyper): unary and
//! bidirectional streaming calls over h2c both ways, trailers intact, the minted token as the
//! upstream's `authorization` metadata, every refusal as the status the client library reports,
//! request trailers cleaned like headers, each upstream `protocol` choosing the HTTP version
//! (over TLS: the ALPN offer), and `h2` end to end to a server behind a private CA.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http::uri::PathAndQuery;
use http::{Method, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status, Streaming};
use tonic_prost::ProstCodec;

use crate::util::{Harness, Options, closed_port, jwt_claims, metrics};

/// The one message type of the test service.
#[derive(Clone, PartialEq, prost::Message)]
struct Text {
    #[prost(string, tag = "1")]
    text: String,
}

const POLICY: &str = r#"
routes:
  - name: echo
    match: { method: POST, path: "/echo.Echo/{method}" }
    upstream: grpc
    require: { scopes: [echo] }
  - name: down
    match: { method: POST, path: "/down.Down/{method}" }
    upstream: grpc-down
    require: {}
  - name: plain
    match: { path: /plain }
    upstream: grpc-auto
    public: true
  - name: auto
    match: { method: POST, path: "/auto.Echo/{method}" }
    upstream: grpc-auto
    public: true
  - name: tls
    match: { path: "/tls/{protocol}" }
    upstream: tls-h2
    public: true
  - name: tls-http1
    match: { path: /tls-http1 }
    upstream: tls-http1
    public: true
  - name: tls-auto
    match: { path: /tls-auto }
    upstream: tls-auto
    public: true
"#;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    version: Version,
    authorization: Option<String>,
    te: Option<String>,
    /// The request's trailers (read by `/plain`, the one path that reads its body itself).
    trailers: Option<http::HeaderMap>,
}

/// A gRPC echo server on hyper with tonic's codec-level server: `Unary` answers one message and
/// sends custom trailing metadata; `Chat` echoes each message of a bidirectional stream as it
/// comes and ends with the count in its trailers; `/plain` is a plain HTTP endpoint.
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                let service = hyper::service::service_fn(move |r| serve(r, log.clone()));
                tokio::spawn(async move {
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(
    request: http::Request<Incoming>,
    log: Arc<Mutex<Vec<Seen>>>,
) -> Result<http::Response<tonic::body::Body>, Infallible> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let mut seen = Seen {
        path: request.uri().path().to_string(),
        version: request.version(),
        authorization: header("authorization"),
        te: header("te"),
        trailers: None,
    };
    let codec = ProstCodec::<Text, Text>::default();
    let mut grpc = tonic::server::Grpc::new(codec);
    let response = match seen.path.rsplit('/').next().unwrap() {
        "Unary" => {
            log.lock().unwrap().push(seen);
            grpc.server_streaming(Unary, request).await
        }
        "Chat" => {
            log.lock().unwrap().push(seen);
            grpc.streaming(Chat, request).await
        }
        _ => {
            let collected = request.into_body().collect().await.unwrap();
            seen.trailers = collected.trailers().cloned();
            log.lock().unwrap().push(seen);
            http::Response::new(tonic::body::Body::new(http_body_util::Full::new(
                Bytes::from_static(b"plain"),
            )))
        }
    };
    Ok(response)
}

/// Custom trailing metadata: the end of a stream whose status is OK.
fn ending(key: &'static str, value: String) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(key, value.parse().unwrap());
    Status::with_metadata(Code::Ok, "", metadata)
}

/// A unary method (one message each way) whose answer ends with trailing metadata, which tonic's
/// unary API cannot send: written as a one-message response stream.
struct Unary;

impl tonic::server::ServerStreamingService<Text> for Unary {
    type Response = Text;
    type ResponseStream = BoxStream<'static, Result<Text, Status>>;
    type Future = std::future::Ready<Result<tonic::Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: tonic::Request<Text>) -> Self::Future {
        let text = request.into_inner().text;
        let reply = Text {
            text: format!("echo: {text}"),
        };
        let stream = futures_util::stream::iter([Ok(reply), Err(ending("x-echoed", text))]);
        std::future::ready(Ok(tonic::Response::new(stream.boxed())))
    }
}

/// Bidirectional: each message is answered as it arrives.
struct Chat;

impl tonic::server::StreamingService<Text> for Chat {
    type Response = Text;
    type ResponseStream = BoxStream<'static, Result<Text, Status>>;
    type Future = std::future::Ready<Result<tonic::Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: tonic::Request<Streaming<Text>>) -> Self::Future {
        let inbound = request.into_inner();
        let stream = futures_util::stream::unfold(Some((inbound, 0)), |state| async move {
            let (mut inbound, count) = state?;
            match inbound.message().await {
                Ok(Some(m)) => {
                    let reply = Text {
                        text: format!("echo: {}", m.text),
                    };
                    Some((Ok(reply), Some((inbound, count + 1))))
                }
                Ok(None) => Some((Err(ending("x-count", count.to_string())), None)),
                Err(e) => Some((Err(e), None)),
            }
        });
        std::future::ready(Ok(tonic::Response::new(stream.boxed())))
    }
}

/// A TLS listener that records the ALPN protocols each client offers, then hangs up.
async fn alpn_recorder() -> (SocketAddr, Arc<Mutex<Vec<Vec<String>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let offers = Arc::new(Mutex::new(Vec::new()));
    let log = offers.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor =
                tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
            if let Ok(start) = acceptor.await {
                let offered = start
                    .client_hello()
                    .alpn()
                    .map(|p| p.map(|p| String::from_utf8_lossy(p).into_owned()).collect())
                    .unwrap_or_default();
                log.lock().unwrap().push(offered);
            }
        }
    });
    (addr, offers)
}

/// The gateway in front of the echo server (`h2c`), a closed port, the same server as an `auto`
/// upstream, and the ALPN recorder as an `h2`, `http1` and `auto` TLS upstream.
async fn start() -> (Harness, Upstream, Arc<Mutex<Vec<Vec<String>>>>) {
    start_with(String::new()).await
}

/// [`start`] with `limits` (a `limits:` block of the server file).
async fn start_with(limits: String) -> (Harness, Upstream, Arc<Mutex<Vec<Vec<String>>>>) {
    let upstream = Upstream::start().await;
    let (tls, offers) = alpn_recorder().await;
    let u = upstream.addr;
    let h = Harness::with(Options {
        policy: POLICY.into(),
        upstreams_extra: format!(
            "  grpc: {{ url: \"http://{u}\", protocol: h2c }}\n\
             \x20 grpc-down: {{ url: \"http://{}\", protocol: h2c }}\n\
             \x20 grpc-auto: {{ url: \"http://{u}\", protocol: auto }}\n\
             \x20 tls-h2: {{ url: \"https://localhost:{p}\", protocol: h2 }}\n\
             \x20 tls-http1: {{ url: \"https://localhost:{p}\" }}\n\
             \x20 tls-auto: {{ url: \"https://localhost:{p}\", protocol: auto }}\n",
            closed_port(),
            p = tls.port(),
        ),
        limits,
        ..Options::default()
    })
    .await;
    (h, upstream, offers)
}

type Client = tonic::client::Grpc<tonic::transport::Channel>;

/// A tonic client speaking h2c (prior knowledge) to the gateway's plain-text listener.
async fn client(h: &Harness) -> Client {
    let channel = tonic::transport::Channel::from_shared(h.url(""))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

/// A bare hyper HTTP/2 connection to the gateway (h2c, prior knowledge).
async fn h2c<B>(h: &Harness) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(h.gateway.proxy_addr)
        .await
        .unwrap();
    let io = TokioIo::new(stream);
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

fn request<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(t) = token {
        let bearer = format!("Bearer {t}").parse().unwrap();
        request.metadata_mut().insert("authorization", bearer);
    }
    request
}

async fn unary(
    client: &mut Client,
    path: &'static str,
    token: Option<&str>,
) -> Result<tonic::Response<Text>, Status> {
    client.ready().await.unwrap();
    let message = Text { text: "hi".into() };
    client
        .unary(
            request(message, token),
            PathAndQuery::from_static(path),
            ProstCodec::default(),
        )
        .await
}

/// `/echo.Echo/Unary` through the gateway with `token`: the answer, and the server's trailing
/// metadata (merged into the response's by tonic's unary call).
async fn echo_unary(h: &Harness, token: &str) {
    let mut client = client(h).await;
    let response = unary(&mut client, "/echo.Echo/Unary", Some(token))
        .await
        .unwrap();
    assert_eq!(response.get_ref().text, "echo: hi");
    assert_eq!(response.metadata().get("x-echoed").unwrap(), "hi");
}

#[tokio::test]
async fn a_unary_call_passes_with_the_minted_token_and_its_trailers() {
    let (h, upstream, _) = start().await;
    let token = h.token("echo other");
    echo_unary(&h, &token).await;

    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/echo.Echo/Unary");
    assert_eq!(seen[0].version, Version::HTTP_2, "h2c to the upstream");
    assert_eq!(seen[0].te.as_deref(), Some("trailers"));
    let minted = seen[0].authorization.as_deref().unwrap();
    let minted = minted.strip_prefix("Bearer ").unwrap();
    assert_ne!(
        minted, token,
        "the caller's token never reaches the upstream"
    );
    let claims = jwt_claims(minted);
    assert_eq!(claims["aud"], "grpc");
    assert_eq!(claims["scope"], "echo");

    let text = metrics(h.gateway.admin_addr).await;
    assert!(
        text.contains(r#"scopegate_requests_total{decision="allow",route="echo",status="200"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_bidirectional_stream_is_answered_message_by_message_and_ends_with_trailers() {
    let (h, upstream, _) = start().await;
    let token = h.token("echo");
    let mut client = client(&h).await;
    client.ready().await.unwrap();
    let (send, outbound) = tokio::sync::mpsc::channel::<Text>(1);
    let outbound = tokio_stream::wrappers::ReceiverStream::new(outbound);
    let response = {
        send.send(Text { text: "one".into() }).await.unwrap();
        client.streaming(
            request(outbound, Some(&token)),
            PathAndQuery::from_static("/echo.Echo/Chat"),
            ProstCodec::<Text, Text>::default(),
        )
    };
    let mut inbound = response.await.unwrap().into_inner();
    // Each answer arrives while the client's stream is still open: nothing waits for the end.
    for word in ["one", "two", "three"] {
        if word != "one" {
            send.send(Text { text: word.into() }).await.unwrap();
        }
        let reply = inbound.message().await.unwrap().unwrap();
        assert_eq!(reply.text, format!("echo: {word}"));
    }
    drop(send);
    assert!(inbound.message().await.unwrap().is_none());
    let trailers = inbound.trailers().await.unwrap().unwrap();
    assert_eq!(trailers.get("x-count").unwrap(), "3");
    let seen = upstream.seen();
    assert_eq!(seen[0].path, "/echo.Echo/Chat");
    assert_eq!(seen[0].version, Version::HTTP_2);
}

/// A client stream that goes quiet for longer than `limits.body_read_timeout` is cut, on HTTP/2
/// upstreams too: the client's call ends with an error instead of hanging.
#[tokio::test]
async fn a_stream_whose_client_goes_quiet_is_cut_after_the_body_read_timeout() {
    let (h, upstream, _) = start_with("limits: { body_read_timeout: 1s }".into()).await;
    let token = h.token("echo");
    let mut client = client(&h).await;
    client.ready().await.unwrap();
    let (send, outbound) = tokio::sync::mpsc::channel::<Text>(1);
    send.send(Text { text: "one".into() }).await.unwrap();
    let outbound = tokio_stream::wrappers::ReceiverStream::new(outbound);
    let path = PathAndQuery::from_static("/echo.Echo/Chat");
    let call = client.streaming(request(outbound, Some(&token)), path, ProstCodec::default());
    let mut inbound: Streaming<Text> = call.await.unwrap().into_inner();
    assert_eq!(inbound.message().await.unwrap().unwrap().text, "echo: one");
    let started = std::time::Instant::now();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), inbound.message()).await;
    let status = ended.expect("the quiet stream was cut").unwrap_err();
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "{status:?}"
    );
    assert_eq!(upstream.seen().len(), 1);
    drop(send);
}

#[tokio::test]
async fn refusals_are_grpc_statuses_the_client_library_reports() {
    let (h, upstream, _) = start().await;
    let mut client = client(&h).await;

    let status = unary(&mut client, "/echo.Echo/Unary", None)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("missing_token"), "{status:?}");
    let challenge = status.metadata().get("www-authenticate").unwrap();
    assert_eq!(challenge, r#"Bearer realm="scopegate""#);

    let status = unary(&mut client, "/echo.Echo/Unary", Some("not.a.jwt"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    let other = h.token("other");
    let status = unary(&mut client, "/echo.Echo/Unary", Some(&other))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("insufficient_scope"),
        "{status:?}"
    );

    let status = unary(&mut client, "/down.Down/Unary", Some(&other))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    let status = unary(&mut client, "/nothing.Here/Unary", Some(&other))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(upstream.seen().is_empty(), "no refused call reached it");

    // Counted under the HTTP status each stands for.
    let text = metrics(h.gateway.admin_addr).await;
    for (route, status) in [("echo", "401"), ("echo", "403"), ("down", "502")] {
        assert!(
            text.contains(&format!("route=\"{route}\",status=\"{status}\"")),
            "{route} {status}: {text}"
        );
    }

    // An HTTP client gets the ordinary HTTP answer; the same request typed as gRPC, a gRPC one.
    let answer = h.call(Method::POST, "/echo.Echo/Unary", &other, &[]).await;
    answer.expect_status(StatusCode::FORBIDDEN);
    assert_eq!(answer.code(), "insufficient_scope");
    let typed = [("content-type", "application/grpc+proto")];
    let answer = h
        .call(Method::POST, "/echo.Echo/Unary", &other, &typed)
        .await;
    answer.expect_status(StatusCode::OK);
    assert_eq!(answer.header("grpc-status"), "7");
    assert_eq!(answer.header("content-type"), "application/grpc+proto");
    assert!(answer.body.is_empty());
}

/// `auto` speaks what the client spoke: h2c for a gRPC client, HTTP/1.1 for an HTTP/1.1 one.
#[tokio::test]
async fn auto_follows_the_clients_http_version() {
    let (h, upstream, _) = start().await;
    let mut client = client(&h).await;
    let response = unary(&mut client, "/auto.Echo/Unary", None).await.unwrap();
    assert_eq!(response.get_ref().text, "echo: hi");
    h.client
        .get(&h.url("/plain"), &[])
        .await
        .expect_status(StatusCode::OK);
    let versions: Vec<(String, Version)> = upstream
        .seen()
        .into_iter()
        .map(|s| (s.path, s.version))
        .collect();
    assert_eq!(
        versions,
        [
            ("/auto.Echo/Unary".to_string(), Version::HTTP_2),
            ("/plain".to_string(), Version::HTTP_11),
        ]
    );
}

/// Request trailers pass, less every field a header of that name would lose: the upstream
/// cannot read a second `authorization` or a scopegate header from them.
#[tokio::test]
async fn request_trailers_pass_without_the_fields_headers_would_lose() {
    let (h, upstream, _) = start().await;
    let token = h.token("echo");
    let mut send = h2c(&h).await;
    let mut trailers = http::HeaderMap::new();
    for (k, v) in [
        ("x-checksum", "abc"),
        ("authorization", "Bearer forged"),
        ("x-scopegate-org", "forged"),
        ("x-forwarded-for", "10.9.9.9"),
        ("x-http-method-override", "DELETE"),
        ("x_checksum", "alias"),
    ] {
        trailers.insert(k, v.parse().unwrap());
    }
    let frames = futures_util::stream::iter([
        Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from_static(b"body"))),
        Ok(hyper::body::Frame::trailers(trailers)),
    ]);
    let request = http::Request::post(h.url("/plain"))
        .header("authorization", format!("Bearer {token}"))
        .header("te", "trailers")
        .body(http_body_util::StreamBody::new(frames))
        .unwrap();
    let response = send.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"plain");
    let seen = upstream.seen();
    assert_eq!(
        seen[0].version,
        Version::HTTP_2,
        "auto: h2c for an h2c client"
    );
    let got = seen[0].trailers.clone().unwrap();
    let names: Vec<&str> = got.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["x-checksum"], "{got:?}");
}

/// Over TLS the protocol is the ALPN offer: `h2` offers only `h2`; `http1` offers nothing (a
/// server then speaks HTTP/1.1), nor does `auto` to an HTTP/1.1 client; `auto` offers `h2` and
/// `http/1.1` to an HTTP/2 client. (The recorder hangs up after the offer: each call ends 502.)
#[tokio::test]
async fn over_tls_the_protocol_is_the_alpn_offer() {
    let (h, _, offers) = start().await;
    let get = |path: &'static str| {
        let url = h.url(path);
        let client = h.client.clone();
        async move { client.get(&url, &[]).await.status }
    };
    assert_eq!(get("/tls/h2").await, StatusCode::BAD_GATEWAY);
    assert_eq!(get("/tls-http1").await, StatusCode::BAD_GATEWAY);
    assert_eq!(get("/tls-auto").await, StatusCode::BAD_GATEWAY);
    let mut send = h2c(&h).await;
    let request = http::Request::get(h.url("/tls-auto"))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = send.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        *offers.lock().unwrap(),
        [vec!["h2"], vec![], vec![], vec!["h2", "http/1.1"]]
    );
}

/// `h2` end to end: a gRPC server behind TLS with a private CA (the upstream's `tls:`), HTTP/2
/// chosen by ALPN; the unary call and its trailers pass as over h2c.
#[tokio::test]
async fn h2_over_tls_reaches_a_grpc_server_behind_a_private_ca() {
    use crate::util::pki::{Ca, TlsFront, folder, server_config};
    let upstream = Upstream::start().await;
    let ca = Ca::new();
    let dir = folder("grpc-h2");
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let mut tls = (*server_config(&ca.issue(&["127.0.0.1"]), None)).clone();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let front = TlsFront::start(upstream.addr, Arc::new(tls)).await;
    let h = Harness::with(Options {
        policy: "routes:\n  - name: tls\n    match: { method: POST, path: \"/echo.Echo/{method}\" }\n    \
                 upstream: grpc-tls\n    require: { scopes: [echo] }\n"
            .into(),
        base: dir,
        upstreams_extra: format!(
            "  grpc-tls: {{ url: \"https://{}\", protocol: h2, tls: {{ ca_file: ca.pem }} }}\n",
            front.addr
        ),
        ..Options::default()
    })
    .await;
    echo_unary(&h, &h.token("echo")).await;
    let seen = upstream.seen();
    assert_eq!(
        seen[0].version,
        Version::HTTP_2,
        "h2 by ALPN, through the TLS front"
    );
    assert!(
        seen[0]
            .authorization
            .as_deref()
            .unwrap()
            .starts_with("Bearer ")
    );
}
