//! WebSocket through scopegate, with a real client and a real server (tokio-tungstenite): the
//! upgrade is decided like any request and carries the minted token, refusals happen before any
//! upstream connection, frames and closes pass both ways, and the route's bounds (lifetime,
//! idle time) and the listener's (connection slots, shutdown) end tunnels.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::util::{Harness, Options, jwt_claims, metrics, now, raw_status};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

const POLICY: &str = r#"
routes:
  - name: chat
    match: { method: GET, path: /chat }
    upstream: ws
    require: { scopes: [chat] }
    websocket: true
  - name: rest
    match: { method: GET, path: /rest }
    upstream: ws
    require: { scopes: [chat] }
  - name: short
    match: { method: GET, path: /short }
    upstream: ws
    require: {}
    websocket: { max_lifetime: 1s }
  - name: quiet
    match: { method: GET, path: /quiet }
    upstream: ws
    require: {}
    websocket: { idle_timeout: 1s }
"#;

/// A tokio-tungstenite echo server: it records the `Authorization` of every handshake and what
/// happened to each connection, and closes a connection itself when told `close-me`.
struct Upstream {
    addr: SocketAddr,
    authorizations: Arc<Mutex<Vec<String>>>,
    /// Every TCP connection accepted, handshake or not.
    accepted: Arc<Mutex<usize>>,
    events: mpsc::UnboundedReceiver<String>,
}

impl Upstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(Mutex::new(0));
        let (tx, events) = mpsc::unbounded_channel();
        let (auths, count) = (authorizations.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                *count.lock().unwrap() += 1;
                let (auths, tx) = (auths.clone(), tx.clone());
                tokio::spawn(async move {
                    #[allow(
                        clippy::result_large_err,
                        reason = "tungstenite's callback type, whose error is an HTTP response"
                    )]
                    let record = |request: &Request, response: Response| {
                        let auth = request.headers().get("authorization");
                        let auth = auth.map(|v| v.to_str().unwrap().to_string());
                        auths.lock().unwrap().push(auth.unwrap_or_default());
                        Ok(response)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await
                    else {
                        return;
                    };
                    while let Some(message) = ws.next().await {
                        match message {
                            Ok(Message::Text(t)) if t.as_str() == "close-me" => {
                                let frame = CloseFrame {
                                    code: CloseCode::Normal,
                                    reason: "bye".into(),
                                };
                                ws.close(Some(frame)).await.unwrap();
                            }
                            Ok(Message::Close(_)) => {
                                let _ = tx.send("client closed".to_string());
                            }
                            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                                ws.send(m).await.unwrap();
                            }
                            Ok(_) => {}
                            Err(e) => {
                                let _ = tx.send(format!("error: {e}"));
                                break;
                            }
                        }
                    }
                    let _ = tx.send("ended".to_string());
                });
            }
        });
        Self {
            addr,
            authorizations,
            accepted,
            events,
        }
    }

    fn accepted(&self) -> usize {
        *self.accepted.lock().unwrap()
    }

    async fn next_event(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(5), self.events.recv())
            .await
            .expect("an upstream event in time")
            .unwrap()
    }
}

async fn start_with(limits: &str) -> (Harness, Upstream) {
    let upstream = Upstream::start().await;
    let h = Harness::with(Options {
        policy: POLICY.into(),
        upstreams_extra: format!("  ws: {{ url: \"http://{}\" }}", upstream.addr),
        limits: limits.into(),
        ..Options::default()
    })
    .await;
    (h, upstream)
}

async fn start() -> (Harness, Upstream) {
    start_with("").await
}

/// Opens a WebSocket to `path` through the gateway, with `token` as bearer when given.
async fn connect(h: &Harness, path: &str, token: Option<&str>) -> Result<Client, Error> {
    let url = format!("ws://{}{path}", h.gateway.proxy_addr);
    let mut request = url.into_client_request().unwrap();
    if let Some(t) = token {
        let bearer = format!("Bearer {t}").parse().unwrap();
        request.headers_mut().insert("authorization", bearer);
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

/// The status and problem code of a refused handshake.
fn refusal(result: Result<Client, Error>) -> (StatusCode, String) {
    match result {
        Err(Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
            (response.status(), problem["code"].as_str().unwrap().into())
        }
        Err(e) => panic!("not an HTTP refusal: {e}"),
        Ok(_) => panic!("the upgrade succeeded"),
    }
}

/// Waits for the connection to end (any way), returning how long that took.
async fn until_closed(ws: &mut Client) -> Duration {
    let started = Instant::now();
    let ended = async {
        while let Some(message) = ws.next().await {
            if message.is_err() {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("the connection ended in time");
    started.elapsed()
}

/// The value of the first sample line of `/metrics` that starts with `series`.
async fn sample(h: &Harness, series: &str) -> f64 {
    let text = metrics(h.gateway.admin_addr).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn echo(ws: &mut Client, message: Message) {
    ws.send(message.clone()).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the echo in time")
        .unwrap()
        .unwrap();
    assert_eq!(back, message);
}

#[tokio::test]
async fn text_and_binary_messages_echo_and_the_upgrade_carries_the_minted_token() {
    let (h, upstream) = start().await;
    let token = h.token("chat other");
    let mut ws = connect(&h, "/chat", Some(&token)).await.unwrap();
    echo(&mut ws, Message::text("hello through scopegate")).await;
    echo(&mut ws, Message::binary(vec![0u8, 1, 2, 255, 254])).await;
    echo(&mut ws, Message::binary(vec![7u8; 200_000])).await;
    ws.close(None).await.unwrap();

    let seen = upstream.authorizations.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let minted = seen[0].strip_prefix("Bearer ").unwrap();
    assert_ne!(
        minted, token,
        "the caller's token never reaches the upstream"
    );
    let claims = jwt_claims(minted);
    assert_eq!(claims["iss"], format!("http://{}", h.gateway.proxy_addr));
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], "ws");
    assert_eq!(claims["scope"], "chat", "down-scoped to the route's scopes");
    assert_eq!(claims["token_use"], "upstream");
    let header = jwt_claims(&format!("x.{}", minted.split('.').next().unwrap()));
    assert_eq!(header["typ"], "at+jwt");
}

#[tokio::test]
async fn a_missing_token_is_401_and_a_missing_scope_403_before_any_upstream_connection() {
    let (h, upstream) = start().await;
    let (status, code) = refusal(connect(&h, "/chat", None).await);
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "missing_token")
    );
    let (status, code) = refusal(connect(&h, "/chat", Some(&h.token("read:builds"))).await);
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "insufficient_scope")
    );
    assert_eq!(upstream.accepted(), 0, "the upstream saw no connection");
}

#[tokio::test]
async fn an_upgrade_to_a_route_without_websocket_or_to_another_protocol_is_400() {
    let (h, upstream) = start().await;
    let token = h.token("chat");
    let (status, code) = refusal(connect(&h, "/rest", Some(&token)).await);
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "upgrade_not_allowed")
    );
    // An h2c upgrade, even on a WebSocket route, is never forwarded.
    let h2c = format!(
        "GET /chat HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nUpgrade: h2c\r\n\
         Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        h.gateway.proxy_addr
    );
    assert_eq!(raw_status(h.gateway.proxy_addr, &h2c).await, 400);
    assert_eq!(upstream.accepted(), 0, "the upstream saw nothing");
    // An ordinary request to the same route is still forwarded (and refused by the
    // WebSocket-only upstream, whatever it answers).
    h.get("/rest", &token).await;
    assert_eq!(upstream.accepted(), 1);
}

#[tokio::test]
async fn closes_propagate_both_ways() {
    let (h, mut upstream) = start().await;
    let token = h.token("chat");
    // The client closes: the upstream sees the close frame, and the client the echoed close.
    let mut ws = connect(&h, "/chat", Some(&token)).await.unwrap();
    echo(&mut ws, Message::text("hi")).await;
    ws.close(None).await.unwrap();
    assert_eq!(upstream.next_event().await, "client closed");
    until_closed(&mut ws).await;
    assert_eq!(upstream.next_event().await, "ended");

    // The upstream closes: the client gets its close frame, code and reason intact.
    let mut ws = connect(&h, "/chat", Some(&token)).await.unwrap();
    ws.send(Message::text("close-me")).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match message {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Normal);
            assert_eq!(frame.reason.as_str(), "bye");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    until_closed(&mut ws).await;
}

#[tokio::test]
async fn a_tunnel_ends_at_its_max_lifetime_its_tokens_expiry_and_its_idle_timeout() {
    let (h, _upstream) = start().await;
    let token = h.token("");
    // `max_lifetime: 1s`, kept busy: cut off after about a second.
    let mut ws = connect(&h, "/short", Some(&token)).await.unwrap();
    let started = Instant::now();
    let busy = async {
        loop {
            if ws.send(Message::text("tick")).await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
                Ok(Some(Ok(_))) => {}
                Ok(_) => break,
                Err(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), busy)
        .await
        .unwrap();
    let lived = started.elapsed();
    assert!(
        lived >= Duration::from_millis(800) && lived < Duration::from_secs(4),
        "{lived:?}"
    );

    // A caller token that expires in 2 s on a route without `max_lifetime`: the minted token
    // expires with it, and so does the tunnel.
    let mut claims = h.claims("chat");
    claims["exp"] = (now() + 2).into();
    let mut ws = connect(&h, "/chat", Some(&h.sign("ec", &claims)))
        .await
        .unwrap();
    echo(&mut ws, Message::text("still here")).await;
    let lived = until_closed(&mut ws).await;
    assert!(lived < Duration::from_secs(4), "{lived:?}");

    // `idle_timeout: 1s`: closed a second after the last message.
    let mut ws = connect(&h, "/quiet", Some(&token)).await.unwrap();
    echo(&mut ws, Message::text("one")).await;
    let quiet = until_closed(&mut ws).await;
    assert!(
        quiet >= Duration::from_millis(800) && quiet < Duration::from_secs(4),
        "{quiet:?}"
    );
    for reason in ["lifetime", "idle"] {
        let series = format!("scopegate_websocket_closures_total{{reason=\"{reason}\"}}");
        assert!(sample(&h, &series).await >= 1.0, "{series}");
    }
}

#[tokio::test]
async fn fifty_concurrent_tunnels_echo_and_the_metrics_add_up() {
    let (h, _upstream) = start().await;
    let h = Arc::new(h);
    let token = h.token("chat");
    let tunnels = (0..50).map(|i| {
        let (h, token) = (h.clone(), token.clone());
        tokio::spawn(async move {
            let mut ws = connect(&h, "/chat", Some(&token)).await.unwrap();
            for n in 0..20 {
                echo(&mut ws, Message::text(format!("tunnel {i} message {n}"))).await;
            }
            ws
        })
    });
    let mut open = Vec::new();
    for t in tunnels {
        open.push(t.await.unwrap());
    }
    assert_eq!(sample(&h, "scopegate_websocket_connections").await, 50.0);
    for mut ws in open {
        ws.close(None).await.unwrap();
        until_closed(&mut ws).await;
    }
    // The gauge falls back to 0 once the gateway has seen every tunnel end.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sample(&h, "scopegate_websocket_connections").await != 0.0 {
        assert!(Instant::now() < deadline, "the gauge stayed above 0");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for direction in ["upstream", "downstream"] {
        let series = format!("scopegate_websocket_bytes_total{{direction=\"{direction}\"}}");
        assert!(sample(&h, &series).await > 50.0 * 20.0 * 18.0, "{series}");
    }
    let closed = sample(&h, "scopegate_websocket_closures_total{reason=\"closed\"}").await;
    assert_eq!(closed, 50.0);
    let metrics = metrics(h.gateway.admin_addr).await;
    assert!(
        metrics
            .contains(r#"scopegate_requests_total{decision="allow",route="chat",status="101"} 50"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_open_tunnel_keeps_its_connection_slot_and_shutdown_closes_it() {
    let (h, _upstream) = start_with("limits: { max_connections_per_peer: 2 }").await;
    let token = h.token("chat");
    let mut first = connect(&h, "/chat", Some(&token)).await.unwrap();
    let mut second = connect(&h, "/chat", Some(&token)).await.unwrap();
    let plain = format!(
        "GET /rest HTTP/1.1\r\nHost: {}\r\n\r\n",
        h.gateway.proxy_addr
    );
    let busy = raw_status(h.gateway.proxy_addr, &plain).await;
    assert_eq!(busy, 503, "both slots are tunnels");
    second.close(None).await.unwrap();
    until_closed(&mut second).await;
    // The tunnel (and its slot) ends when both sides have closed their connections.
    drop(second);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = connect(&h, "/chat", Some(&token)).await.unwrap();
    echo(&mut third, Message::text("a slot came free")).await;

    // Shutdown does not wait out the grace period for tunnels: it closes them.
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), h.gateway.shutdown())
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    until_closed(&mut first).await;
    until_closed(&mut third).await;
    // The admin listener is gone with the shutdown: read the registry itself.
    let line = "scopegate_websocket_closures_total{reason=\"shutdown\"} 2";
    let deadline = Instant::now() + Duration::from_secs(5);
    while !h.gateway.metrics().lines().any(|l| l == line) {
        assert!(
            Instant::now() < deadline,
            "not 2 closed by the shutdown:\n{}",
            h.gateway.metrics()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
