//! Day two: hot reload under load, graceful shutdown of the real binary, and the limits.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::StatusCode;
use jsonwebtoken::Algorithm;
use scopegate::dev_issuer::DevIssuer;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::util::{TestClient, closed_port, now};

/// A configuration on disk: issuer, echo upstream, and a server file in a fresh folder.
struct OnDisk {
    dir: std::path::PathBuf,
    issuer: DevIssuer,
    echo: SocketAddr,
    proxy: SocketAddr,
    admin: SocketAddr,
    _stop: watch::Sender<bool>,
}

impl OnDisk {
    async fn new(name: &str, limits: &str) -> Self {
        let (stop, stopped) = watch::channel(false);
        let issuer = DevIssuer::start(stopped.clone()).await.unwrap();
        issuer.add_key("ec", Algorithm::ES256).unwrap();
        let echo = scopegate::echo::start(SocketAddr::from(([127, 0, 0, 1], 0)), stopped)
            .await
            .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "scopegate-{name}-{}-{}",
            std::process::id(),
            closed_port().port()
        ));
        std::fs::create_dir_all(dir.join("policies")).unwrap();
        let (proxy, admin) = (closed_port(), closed_port());
        let server = format!(
            "listen: {{ proxy: \"{proxy}\", admin: \"{admin}\" }}\npolicies: [policies]\n\
             signing: {{ issuer: \"http://{proxy}\", keys: [{{ kid: k, generate: true }}] }}\n\
             issuers:\n  t: {{ issuer: \"{}\", jwks_url: \"{}\", audiences: [api], algorithms: [ES256] }}\n\
             upstreams:\n  echo: {{ url: \"http://{echo}\" }}\n{limits}\n",
            issuer.url,
            issuer.jwks_url()
        );
        std::fs::write(dir.join("scopegate.yaml"), server).unwrap();
        Self {
            dir,
            issuer,
            echo,
            proxy,
            admin,
            _stop: stop,
        }
    }

    fn token(&self, scope: &str) -> String {
        let n = now();
        self.issuer.sign("ec", &json!({"iss": self.issuer.url, "sub": "alice", "aud": "api", "scope": scope, "iat": n, "exp": n + 600})).unwrap()
    }

    /// Replaces the policy file atomically (write, then rename), as a ConfigMap update does.
    fn write_policy(&self, text: &str) {
        let tmp = self.dir.join("policy.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.dir.join("policies/p.yaml")).unwrap();
    }

    fn server_file(&self) -> std::path::PathBuf {
        self.dir.join("scopegate.yaml")
    }
}

/// A valid policy whose minted `scope` tells which version decided; or an invalid one.
fn policy(version: usize) -> String {
    if !version.is_multiple_of(2) {
        return "routes:\n  - name: r\n    match: { path: /r }\n    upstream: nowhere\n    require: { scopes: [read:builds] }\n".into();
    }
    let forwarded = if version.is_multiple_of(4) {
        "[read:builds]"
    } else {
        "[read:builds, extra:x]"
    };
    format!(
        "routes:\n  - name: r\n    match: {{ path: /r }}\n    upstream: echo\n    require: {{ scopes: [read:builds] }}\n    forward: {{ scopes: {forwarded} }}\n"
    )
}

#[tokio::test]
async fn reloads_under_load_never_fail_a_request_nor_decide_on_a_half_loaded_config() {
    let disk = OnDisk::new("reload", "").await;
    disk.write_policy(&policy(0));
    let config = scopegate::config::load(&disk.server_file()).unwrap();
    let watched = config.watched.clone();
    let running = scopegate::serve::start(config).await.unwrap();
    running.reload_on_change(disk.server_file(), watched, Duration::from_millis(40));

    let stop = Arc::new(AtomicBool::new(false));
    let token = disk.token("read:builds extra:x");
    let url = format!("http://{}/r", running.proxy_addr);
    let load: Vec<_> = (0..6)
        .map(|_| {
            let (stop, token, url) = (stop.clone(), token.clone(), url.clone());
            tokio::spawn(async move {
                let client = TestClient::new();
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let a = client
                        .get(&url, &[("authorization", &format!("Bearer {token}"))])
                        .await;
                    let scope = if a.status == StatusCode::OK {
                        a.json()["token_claims"]["scope"]
                            .as_str()
                            .unwrap_or("")
                            .to_string()
                    } else {
                        String::new()
                    };
                    seen.push((a.status, scope));
                }
                seen
            })
        })
        .collect();
    for version in 1..=20 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        disk.write_policy(&policy(version));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut scopes = BTreeSet::new();
    let mut total = 0;
    for task in load {
        for (status, scope) in task.await.unwrap() {
            assert_eq!(status, StatusCode::OK, "a request failed during reloads");
            scopes.insert(scope);
            total += 1;
        }
    }
    assert!(total > 100, "only {total} requests ran");
    let expected: BTreeSet<String> = ["read:builds", "extra:x read:builds"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        scopes, expected,
        "every decision came from one whole valid version, and both versions served"
    );
    let metrics = crate::util::metrics(running.admin_addr).await;
    assert!(
        metrics.contains(r#"scopegate_config_reloads_total{result="ok"} 10"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"scopegate_config_reloads_total{result="error"} 10"#),
        "{metrics}"
    );
    assert!(metrics.contains("scopegate_config_last_reload_success_timestamp_seconds"));
}

#[tokio::test]
async fn new_routes_issuers_and_signing_keys_take_effect_without_a_restart() {
    let disk = OnDisk::new("reload-keys", "").await;
    disk.write_policy(&policy(0));
    let config = scopegate::config::load(&disk.server_file()).unwrap();
    let watched = config.watched.clone();
    let running = scopegate::serve::start(config).await.unwrap();
    running.reload_on_change(disk.server_file(), watched, Duration::from_millis(40));
    let client = TestClient::new();
    let get = |path: &str, token: &str| {
        let (client, url, bearer) = (
            client.clone(),
            format!("http://{}{path}", running.proxy_addr),
            format!("Bearer {token}"),
        );
        async move { client.get(&url, &[("authorization", &bearer)]).await }
    };
    assert_eq!(
        get("/new", &disk.token("read:builds")).await.status,
        StatusCode::NOT_FOUND
    );
    // A new route, and a new signing key listed first.
    let server = std::fs::read_to_string(disk.server_file())
        .unwrap()
        .replace(
            "keys: [{ kid: k, generate: true }]",
            "keys: [{ kid: k2, generate: true }]",
        );
    std::fs::write(disk.server_file(), server).unwrap();
    disk.write_policy(&format!(
        "{}  - name: new\n    match: {{ path: /new }}\n    upstream: echo\n    require: {{}}\n",
        policy(0)
    ));
    let mut status = StatusCode::NOT_FOUND;
    for _ in 0..50 {
        status = get("/new", &disk.token("read:builds")).await.status;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, StatusCode::OK);
    let minted = get("/new", &disk.token("read:builds")).await.json()["headers"]["authorization"]
        .as_str()
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string();
    assert_eq!(
        jsonwebtoken::decode_header(&minted).unwrap().kid.as_deref(),
        Some("k2")
    );
    let jwks = client
        .get(
            &format!("http://{}/.well-known/jwks.json", running.proxy_addr),
            &[],
        )
        .await
        .json();
    assert_eq!(jwks["keys"][0]["kid"], "k2");
}

fn binary_serve(config: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_ready(admin: SocketAddr) {
    let client = TestClient::new();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(admin).await.is_ok()
            && client
                .get(&format!("http://{admin}/readyz"), &[])
                .await
                .status
                == StatusCode::OK
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("scopegate did not become ready");
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_and_refuses_new_connections() {
    let disk = OnDisk::new("shutdown", "limits: { shutdown_grace: 10s }").await;
    disk.write_policy(&policy(0));
    let mut child = binary_serve(&disk.server_file());
    wait_ready(disk.admin).await;
    let token = disk.token("read:builds");
    let url = format!("http://{}/r", disk.proxy);
    let slow = tokio::spawn(async move {
        TestClient::new()
            .get(
                &url,
                &[
                    ("authorization", &format!("Bearer {token}")),
                    ("x-echo-delay-ms", "1500"),
                ],
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(disk.proxy).await.is_err(),
        "a new connection after SIGTERM is refused"
    );
    let readyz = TestClient::new()
        .get(&format!("http://{}/readyz", disk.admin), &[])
        .await;
    assert_eq!(
        readyz.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "readiness turns false while draining"
    );
    let answer = slow.await.unwrap();
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "the request in flight completed"
    );
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "exit status {exit}");
    let _ = disk.echo;
}

/// Sends raw bytes and returns the status of the answer, or `None` when the connection closed.
async fn raw(addr: SocketAddr, request: &[u8]) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    String::from_utf8_lossy(&buf[..n])
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
}

#[tokio::test]
async fn oversized_headers_slow_headers_and_too_many_connections_are_bounded() {
    let disk = OnDisk::new(
        "limits",
        "limits: { max_header_bytes: 16384, header_read_timeout: 300ms, max_connections: 3 }",
    )
    .await;
    disk.write_policy(&policy(0));
    let running = scopegate::serve::start(scopegate::config::load(&disk.server_file()).unwrap())
        .await
        .unwrap();
    let addr = running.proxy_addr;
    let big = format!(
        "GET /r HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(raw(addr, big.as_bytes()).await, Some(431));
    // Slow-loris: headers that never finish. The connection is answered 408 or closed, never held.
    let started = std::time::Instant::now();
    let slow = raw(addr, b"GET /r HTTP/1.1\r\nhost: x\r\n").await;
    assert!(slow.is_none() || slow == Some(408), "{slow:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the header read timeout ended it"
    );
    // Three idle connections fill the bound; a fourth is refused with 503.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        raw(addr, b"GET /r HTTP/1.1\r\nhost: x\r\n\r\n").await,
        Some(503)
    );
    drop(held);
    let metrics = crate::util::metrics(running.admin_addr).await;
    assert!(
        metrics.contains(r#"scopegate_limit_rejections_total{limit="connections"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn every_decision_is_one_json_audit_line_that_never_holds_a_token() {
    let disk = OnDisk::new("audit", "log: { format: json, level: info }").await;
    disk.write_policy(&policy(0));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .args(["serve", "--config", disk.server_file().to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(disk.admin).await;
    let client = TestClient::new();
    let url = format!("http://{}/r", disk.proxy);
    let allowed = disk.token("read:builds");
    let denied = disk.token("other");
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let a = client
        .get(
            &url,
            &[
                ("authorization", &format!("Bearer {allowed}")),
                ("traceparent", trace),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.json()["headers"]["traceparent"],
        trace,
        "traceparent reaches the upstream"
    );
    assert_eq!(
        client
            .get(&url, &[("authorization", &format!("Bearer {denied}"))])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        client
            .get(&url, &[("authorization", "Bearer not.a.token")])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    for secret in [&allowed, &denied] {
        assert!(!log.contains(secret.as_str()), "a token was logged");
        assert!(
            !log.contains(secret.split('.').nth(2).unwrap()),
            "a token signature was logged"
        );
    }
    let audit: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "scopegate::audit")
        .collect();
    assert_eq!(audit.len(), 3, "{log}");
    let ok = &audit[0];
    for (field, value) in [
        ("decision", "allow"),
        ("reason", "allowed"),
        ("route", "r"),
        ("method", "GET"),
        ("path", "/r"),
        ("subject", "alice"),
        ("traceparent", trace),
    ] {
        assert_eq!(ok[field], value, "{field} in {ok}");
    }
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["minted_jti"].as_str().unwrap().len(), 32);
    assert_eq!(
        ok["token"].as_str().unwrap().len(),
        16,
        "the caller's token is named by a hash prefix"
    );
    assert!(ok["timestamp"].is_string() && ok["latency_us"].is_u64());
    assert_eq!(
        (
            audit[1]["decision"].as_str(),
            audit[1]["reason"].as_str(),
            audit[1]["status"].as_u64()
        ),
        (Some("deny"), Some("insufficient_scope"), Some(403))
    );
    assert_eq!(
        (audit[2]["reason"].as_str(), audit[2]["subject"].as_str()),
        (Some("invalid_token"), Some(""))
    );
}

/// Starts a gateway on `disk` (with the valid policy) and returns it.
async fn serve(disk: &OnDisk) -> scopegate::serve::Running {
    disk.write_policy(&policy(0));
    scopegate::serve::start(scopegate::config::load(&disk.server_file()).unwrap())
        .await
        .unwrap()
}

/// A request `raw` sends that the gateway answers 200 (through the echo upstream).
fn allowed_request(disk: &OnDisk) -> String {
    format!(
        "GET /r HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\r\n",
        disk.token("read:builds")
    )
}

/// Sends `request` until it is answered `status`, every 50 ms for at most `within`.
async fn until_answered(addr: SocketAddr, request: &[u8], status: u16, within: Duration) {
    let started = std::time::Instant::now();
    loop {
        let got = raw(addr, request).await;
        if got == Some(status) {
            return;
        }
        assert!(
            started.elapsed() < within,
            "still {got:?} after {:?}, not {status}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads what the server sends on `stream` until it closes the connection (at most 5 s).
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut seen)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    seen
}

/// Regression: "idle connections hold connection slots forever" (security finding, DoS). 30
/// silent TCP sockets kept a gateway with `max_connections: 30` answering 503 for over a minute:
/// hyper-util's HTTP/1-or-HTTP/2 detection, which comes before hyper's header timer, waited for
/// the first bytes without a timeout.
#[tokio::test]
async fn silent_sockets_are_answered_408_and_give_their_slots_back_after_the_header_read_timeout() {
    let disk = OnDisk::new(
        "silent",
        "limits: { max_connections: 30, header_read_timeout: 1s }",
    )
    .await;
    let running = serve(&disk).await;
    let addr = running.proxy_addr;
    let mut silent = Vec::new();
    for _ in 0..30 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let opened = std::time::Instant::now();
    let request = allowed_request(&disk);
    // Full once every held connection is accepted: each serving thread accepts from its own
    // socket, so one connected later may be admitted before one connected earlier.
    until_answered(addr, request.as_bytes(), 503, Duration::from_millis(500)).await;
    until_answered(addr, request.as_bytes(), 200, Duration::from_secs(3)).await;
    assert!(
        opened.elapsed() < Duration::from_millis(2_500),
        "slots came back after {:?}",
        opened.elapsed()
    );
    let answer = read_to_close(&mut silent[0]).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 408 Request Timeout\r\n"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    let metrics = crate::util::metrics(running.admin_addr).await;
    let timeouts: u64 = metrics
        .lines()
        .find(|l| l.starts_with("scopegate_limit_rejections_total{limit=\"header_timeout\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(timeouts >= 30, "408s counted: {timeouts}\n{metrics}");
}

/// An empty HTTP/2 SETTINGS frame: length 0, type 4, no flags, stream 0.
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The types of the HTTP/2 frames in `bytes`, a server's side of a connection.
fn h2_frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

/// Same finding, HTTP/2: a connection past the preface has no header timer in hyper, and answers
/// keep-alive pings if it answers anything, so only an idle timer frees its slot.
#[tokio::test]
async fn idle_http2_connections_are_told_to_go_away_and_give_their_slots_back() {
    let disk = OnDisk::new(
        "idle-h2",
        "limits: { max_connections: 30, header_read_timeout: 5s, idle_timeout: 1s }",
    )
    .await;
    let running = serve(&disk).await;
    let addr = running.proxy_addr;
    let mut idle = Vec::new();
    for _ in 0..30 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&[H2_PREFACE, H2_SETTINGS].concat())
            .await
            .unwrap();
        idle.push(s);
    }
    let opened = std::time::Instant::now();
    let request = allowed_request(&disk);
    // Full once every held connection is accepted: each serving thread accepts from its own
    // socket, so one connected later may be admitted before one connected earlier.
    until_answered(addr, request.as_bytes(), 503, Duration::from_millis(500)).await;
    until_answered(addr, request.as_bytes(), 200, Duration::from_secs(4)).await;
    assert!(
        opened.elapsed() < Duration::from_millis(3_000),
        "slots came back after {:?}",
        opened.elapsed()
    );
    let frames = h2_frame_types(&read_to_close(&mut idle[0]).await);
    assert!(frames.contains(&7), "a GOAWAY frame among {frames:?}");

    // A live HTTP/2 client, idle after its request, is closed too.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{addr}/r"))
        .header(
            "authorization",
            format!("Bearer {}", disk.token("read:builds")),
        )
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let answer = send.send_request(req).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    drop(answer);
    let answered = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(3), conn)
        .await
        .expect("the idle HTTP/2 connection was closed")
        .unwrap()
        .unwrap();
    assert!(
        answered.elapsed() >= Duration::from_millis(900),
        "closed after {:?}, before idle_timeout",
        answered.elapsed()
    );
}

#[tokio::test]
async fn one_client_address_cannot_take_every_connection() {
    let disk = OnDisk::new("per-peer", "limits: { max_connections_per_peer: 5 }").await;
    let running = serve(&disk).await;
    let addr = running.proxy_addr;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let request = allowed_request(&disk);
    // A sixth from 127.0.0.1, once the five are accepted (each serving thread accepts from its
    // own socket, so they may be admitted in any order).
    until_answered(addr, request.as_bytes(), 503, Duration::from_secs(2)).await;
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind(SocketAddr::from(([127, 0, 0, 2], 0))).unwrap();
    let mut other = other.connect(addr).await.unwrap();
    other.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = other.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200 OK\r\n"),
        "127.0.0.2 is served: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    drop(held);
    until_answered(addr, request.as_bytes(), 200, Duration::from_secs(2)).await;
    // The sixth, and any attempt made before the five closed connections were noticed.
    let metrics = crate::util::metrics(running.admin_addr).await;
    let refused: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"scopegate_limit_rejections_total{limit="peer_connections"} "#)
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(refused >= 1, "{metrics}");
}

#[tokio::test]
async fn silent_sockets_cannot_hold_the_admin_listener() {
    let disk = OnDisk::new("admin-silent", "limits: { header_read_timeout: 1s }").await;
    let running = serve(&disk).await;
    let admin = running.admin_addr;
    let mut silent = Vec::new();
    for _ in 0..scopegate::serve::ADMIN_MAX_CONNECTIONS {
        silent.push(tokio::net::TcpStream::connect(admin).await.unwrap());
    }
    let opened = std::time::Instant::now();
    let healthz = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    assert_eq!(
        raw(admin, healthz).await,
        Some(503),
        "the admin cap is full"
    );
    until_answered(admin, healthz, 200, Duration::from_secs(3)).await;
    assert!(
        opened.elapsed() < Duration::from_millis(2_500),
        "slots came back after {:?}",
        opened.elapsed()
    );
    let answer = read_to_close(&mut silent[0]).await;
    assert!(answer.starts_with(b"HTTP/1.1 408 "), "{answer:?}");
}
