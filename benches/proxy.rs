//! Throughput of scopegate against a plain baseline, measured in the same run.
//!
//! Starts the development issuer, the echo upstream and the gateway in-process (the same way
//! `scopegate dev` does), checks once that the gateway answers 200 for the benchmark token, then
//! drives `wrk` at the echo upstream directly and at the gateway, and prints requests/sec, p50,
//! p99 and the ratio gateway/direct. Run with `cargo bench --bench proxy`; `BENCH_SECONDS`
//! sets the measured duration per target (default 10). Two rows need no wrk: WebSocket echo
//! round trips, and gRPC unary calls (tonic, h2c both ways) through scopegate and direct.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::{Load, Server, format_latency};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Algorithm;
use scopegate::config::{self, Source};
use scopegate::dev_issuer::DevIssuer;
use scopegate::serve::Running;
use serde_json::json;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tonic_prost::ProstCodec;

const AUDIENCE: &str = "scopegate-bench";
const KID: &str = "bench";
const PATH: &str = "/orgs/acme/builds";
const THREADS: u32 = 1;
const CONNECTIONS: u32 = 32;
const WARMUP_SECONDS: u64 = 2;

const POLICY: &str = r#"
routes:
  - name: list-builds
    match: { method: GET, path: "/orgs/{org}/builds" }
    upstream: echo
    require: { scopes: [read:builds] }
  - name: ws
    match: { method: GET, path: /ws }
    upstream: wsecho
    require: { scopes: [read:builds] }
    websocket: true
  - name: grpc
    match: { method: POST, path: "/bench.Echo/{method}" }
    upstream: grpcecho
    require: { scopes: [read:builds] }
"#;

/// Everything the load runs need; dropping it stops the servers.
struct Servers {
    echo: SocketAddr,
    ws_echo: SocketAddr,
    grpc_echo: SocketAddr,
    gateway: Running,
    token: String,
    _issuer: DevIssuer,
    _stop: watch::Sender<bool>,
}

fn main() -> ExitCode {
    let seconds = match common::bench_seconds() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let servers = runtime.block_on(start_servers());

    // One real request first: a benchmark of 401s (or 404s, or 502s) must be impossible.
    let direct_url = format!("http://{}{PATH}", servers.echo);
    let gateway_url = format!("http://{}{PATH}", servers.gateway.proxy_addr);
    if let Err(e) = runtime.block_on(preflight(&servers, &gateway_url)) {
        eprintln!("proxy bench aborted: {e}");
        return ExitCode::FAILURE;
    }
    // WebSocket: one connection, one message echoed at a time (needs no wrk).
    let ws = [servers.ws_echo, servers.gateway.proxy_addr].map(|a| format!("ws://{a}/ws"));
    match runtime.block_on(async {
        Ok::<_, String>((
            ws_rate(&ws[0], &servers.token).await?,
            ws_rate(&ws[1], &servers.token).await?,
        ))
    }) {
        Ok((direct, gateway)) => println!(
            "websocket echo, {WS_MESSAGES} round trips: direct {direct:.0} msg/s, gateway {gateway:.0} msg/s, ratio {:.2}",
            gateway / direct
        ),
        Err(e) => {
            eprintln!("proxy bench aborted in the WebSocket row: {e}");
            return ExitCode::FAILURE;
        }
    }
    // gRPC: unary calls from concurrent tasks over one h2c connection (needs no wrk).
    let grpc = [servers.grpc_echo, servers.gateway.proxy_addr];
    match runtime.block_on(async {
        Ok::<_, String>((
            grpc_rate(grpc[0], &servers.token, seconds).await?,
            grpc_rate(grpc[1], &servers.token, seconds).await?,
        ))
    }) {
        Ok((direct, gateway)) => println!(
            "grpc unary, {GRPC_CONCURRENCY} calls in flight on one h2c connection, {seconds}s: \
             direct {direct:.0} calls/s, gateway {gateway:.0} calls/s, ratio {:.2}",
            gateway / direct
        ),
        Err(e) => {
            eprintln!("proxy bench aborted in the gRPC row: {e}");
            return ExitCode::FAILURE;
        }
    }
    if !common::on_path("wrk") {
        println!(
            "proxy bench skipped: `wrk` is not on PATH.\n\
             Install it (Debian/Ubuntu: `apt-get install -y wrk`) and run `cargo bench --bench proxy` again."
        );
        drop(servers);
        return ExitCode::SUCCESS;
    }

    let auth = format!("Authorization: Bearer {}", servers.token);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "scopegate proxy bench: wrk -t{THREADS} -c{CONNECTIONS} -d{seconds}s --latency, GET {PATH}, \
         {WARMUP_SECONDS}s warm-up per target"
    );
    println!(
        "machine: {cores} cores, shared by wrk, the echo upstream and the gateway \
         (all on this machine; the servers share one tokio runtime with {cores} workers)"
    );

    // A plain reverse proxy as the baseline scopegate should match: nginx with keep-alive
    // upstream connections, 2 workers, on the same machine (when nginx is installed).
    let nginx = start_nginx(servers.echo);
    let nginx_url = nginx.as_ref().map(|n| format!("http://{}{PATH}", n.addr));
    let mut targets = vec![("direct", direct_url.clone())];
    if let Some(u) = &nginx_url {
        targets.push(("nginx", u.clone()));
    } else {
        println!(
            "(nginx not installed: no plain-reverse-proxy baseline; `apt-get install -y nginx`)"
        );
    }
    targets.push(("gateway", gateway_url.clone()));

    // wrk runs from this thread while the servers run on the runtime's worker threads.
    let mut results = Vec::new();
    for (name, url) in targets.iter().map(|(n, u)| (*n, u)) {
        let run = || -> Result<Load, String> {
            wrk(url, &auth, WARMUP_SECONDS)?;
            wrk(url, &auth, seconds)
        };
        match run() {
            Ok(load) => results.push((name, load)),
            Err(e) => {
                eprintln!("proxy bench aborted while loading {name} ({url}): {e}");
                return ExitCode::FAILURE;
            }
        }
    }

    println!();
    println!(
        "{:<10} {:>14} {:>10} {:>10} {:>12}",
        "target", "requests/sec", "p50", "p99", "requests"
    );
    for (name, load) in &results {
        println!(
            "{:<10} {:>14.0} {:>10} {:>10} {:>12}",
            name,
            load.requests_per_sec,
            format_latency(load.p50),
            format_latency(load.p99),
            load.requests
        );
    }
    let direct = &results[0].1;
    let gateway = &results[results.len() - 1].1;
    println!(
        "ratio gateway/direct: {:.2}",
        gateway.requests_per_sec / direct.requests_per_sec
    );
    if nginx.is_some() {
        let baseline = &results[1].1;
        println!(
            "ratio gateway/nginx (plain reverse proxy): {:.2}",
            gateway.requests_per_sec / baseline.requests_per_sec
        );
    }
    drop(nginx);
    println!(
        "added p50 latency: {}",
        format_latency(gateway.p50.saturating_sub(direct.p50))
    );

    drop(servers);
    runtime.shutdown_timeout(Duration::from_secs(2));
    ExitCode::SUCCESS
}

async fn start_servers() -> Servers {
    let (stop, stopped) = watch::channel(false);
    let issuer = DevIssuer::start(stopped.clone())
        .await
        .expect("start the development issuer");
    issuer
        .add_key(KID, Algorithm::ES256)
        .expect("generate the ES256 key");
    let echo = scopegate::echo::start(SocketAddr::from(([127, 0, 0, 1], 0)), stopped)
        .await
        .expect("start the echo upstream");
    let ws_echo = start_ws_echo().await;
    let grpc_echo = start_grpc_echo().await;
    let server = Source {
        path: PathBuf::from("<bench>/scopegate.yaml"),
        text: format!(
            "listen: {{ proxy: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\n\
             policies: [policy.yaml]\n\
             signing: {{ issuer: \"http://127.0.0.1\", keys: [{{ kid: bench, generate: true }}] }}\n\
             issuers:\n  bench:\n    issuer: {url}\n    jwks_url: {jwks}\n    algorithms: [ES256]\n    audiences: [{AUDIENCE}]\n\
             upstreams:\n  echo:\n    url: http://{echo}\n  wsecho:\n    url: http://{ws_echo}\n\
             \x20 grpcecho:\n    url: http://{grpc_echo}\n    protocol: h2c\n",
            url = issuer.url,
            jwks = issuer.jwks_url(),
        ),
    };
    let policy = Source {
        path: PathBuf::from("policy.yaml"),
        text: POLICY.to_string(),
    };
    let config = config::from_sources(&server, Path::new("."), &[policy])
        .unwrap_or_else(|e| panic!("the bench configuration is invalid:\n{e}"));
    let gateway = scopegate::serve::start(config)
        .await
        .expect("start the gateway");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let claims = json!({
        "iss": issuer.url, "sub": "bench", "aud": AUDIENCE, "scope": "read:builds",
        "iat": now, "exp": now + 3600,
    });
    let token = issuer.sign(KID, &claims).expect("sign the bench token");
    Servers {
        echo,
        ws_echo,
        grpc_echo,
        gateway,
        token,
        _issuer: issuer,
        _stop: stop,
    }
}

const WS_MESSAGES: u32 = 5_000;

/// A listener on a free loopback port, and its address.
async fn bind_loopback() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local address");
    (listener, addr)
}

/// A tokio-tungstenite echo server: the WebSocket upstream, and its direct baseline.
async fn start_ws_echo() -> SocketAddr {
    let (listener, addr) = bind_loopback().await;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let (sink, stream) = ws.split();
                let data = |m: &Message| std::future::ready(m.is_text() || m.is_binary());
                let _ = stream.try_filter(data).forward(sink).await;
            });
        }
    });
    addr
}

/// Round trips per second of `WS_MESSAGES` messages echoed one at a time over one connection.
async fn ws_rate(url: &str, token: &str) -> Result<f64, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    let bearer = format!("Bearer {token}").parse().map_err(|_| "bad token")?;
    request.headers_mut().insert(header::AUTHORIZATION, bearer);
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let started = std::time::Instant::now();
    for i in 0..WS_MESSAGES {
        ws.send(Message::text(format!("message {i}")))
            .await
            .map_err(|e| e.to_string())?;
        ws.next()
            .await
            .ok_or("closed early")?
            .map_err(|e| e.to_string())?;
    }
    Ok(f64::from(WS_MESSAGES) / started.elapsed().as_secs_f64())
}

const GRPC_CONCURRENCY: usize = 32;
const GRPC_PATH: &str = "/bench.Echo/Unary";

/// The message of the bench's gRPC echo.
#[derive(Clone, PartialEq, prost::Message)]
struct Payload {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
}

/// Answers each call with its own message.
struct EchoUnary;

impl tonic::server::UnaryService<Payload> for EchoUnary {
    type Response = Payload;
    type Future = std::future::Ready<Result<tonic::Response<Payload>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Payload>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(request.into_inner())))
    }
}

/// A gRPC unary echo over h2c (hyper's HTTP/2 server with tonic's codec-level server): the gRPC
/// upstream, and its direct baseline.
async fn start_grpc_echo() -> SocketAddr {
    let (listener, addr) = bind_loopback().await;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // As tonic's own server does: small HTTP/2 frames must not wait for Nagle.
            let _ = stream.set_nodelay(true);
            let service = hyper::service::service_fn(|request| async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::<Payload, Payload>::default());
                Ok::<_, std::convert::Infallible>(grpc.unary(EchoUnary, request).await)
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Unary calls per second to `addr` for `seconds` (after a one-second warm-up), from
/// `GRPC_CONCURRENCY` tasks sharing one tonic channel; any failed call fails the run.
async fn grpc_rate(addr: SocketAddr, token: &str, seconds: u64) -> Result<f64, String> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let bearer: tonic::metadata::MetadataValue<_> =
        format!("Bearer {token}").parse().map_err(|_| "bad token")?;
    let run = |length: Duration| {
        let deadline = tokio::time::Instant::now() + length;
        let tasks: Vec<_> = (0..GRPC_CONCURRENCY)
            .map(|_| {
                let mut client = tonic::client::Grpc::new(channel.clone());
                let bearer = bearer.clone();
                tokio::spawn(async move {
                    let mut calls = 0u64;
                    while tokio::time::Instant::now() < deadline {
                        client.ready().await.map_err(|e| e.to_string())?;
                        let mut request = tonic::Request::new(Payload { data: vec![7; 64] });
                        request
                            .metadata_mut()
                            .insert("authorization", bearer.clone());
                        let path = http::uri::PathAndQuery::from_static(GRPC_PATH);
                        let codec = ProstCodec::<Payload, Payload>::default();
                        let answer = client.unary(request, path, codec).await;
                        answer.map_err(|s| format!("{addr}{GRPC_PATH}: {s:?}"))?;
                        calls += 1;
                    }
                    Ok::<_, String>(calls)
                })
            })
            .collect();
        async move {
            let started = std::time::Instant::now();
            let mut calls = 0;
            for task in tasks {
                calls += task.await.map_err(|e| e.to_string())??;
            }
            Ok::<_, String>(calls as f64 / started.elapsed().as_secs_f64())
        }
    };
    run(Duration::from_secs(1)).await?;
    run(Duration::from_secs(seconds)).await
}

/// The gateway must be ready, answer 200 for the token (with the echo's body), and 401 without.
async fn preflight(servers: &Servers, gateway_url: &str) -> Result<(), String> {
    if !servers.gateway.ready() {
        return Err("the gateway has not loaded the issuer's keys".into());
    }
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let get = |token: Option<&str>| {
        let mut request = Request::get(gateway_url);
        if let Some(t) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let request = request.body(Empty::new()).expect("request");
        let client = client.clone();
        async move {
            let response = client
                .request(request)
                .await
                .map_err(|e| format!("GET {gateway_url} failed: {e}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the answer of GET {gateway_url}: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        }
    };
    let (status, body) = get(Some(&servers.token)).await?;
    if status != StatusCode::OK {
        return Err(format!(
            "GET {gateway_url} with the bench token answered {status}, not 200: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let echoed: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("the 200 answer is not the echo upstream's JSON: {e}"))?;
    if echoed["path"] != PATH {
        return Err(format!("the upstream saw an unexpected request: {echoed}"));
    }
    let (status, _) = get(None).await?;
    if status != StatusCode::UNAUTHORIZED {
        return Err(format!(
            "GET {gateway_url} without a token answered {status}, not 401: the route is not protected"
        ));
    }
    Ok(())
}

/// Runs wrk once with the bench's thread and connection counts and the `Authorization` header.
fn wrk(url: &str, auth_header: &str, seconds: u64) -> Result<Load, String> {
    let args = [
        format!("-t{THREADS}"),
        format!("-c{CONNECTIONS}"),
        format!("-d{seconds}s"),
        "--latency".to_string(),
        "-H".to_string(),
        auth_header.to_string(),
        url.to_string(),
    ];
    common::wrk(&args).map(|(load, _)| load)
}

/// An nginx reverse proxy in front of `upstream`, stopped on drop.
struct Nginx {
    addr: std::net::SocketAddr,
    _server: Server,
}

fn start_nginx(upstream: std::net::SocketAddr) -> Option<Nginx> {
    if !common::on_path("nginx") {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("scopegate-bench-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?;
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes 2;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
           upstream echo {{ server {upstream}; keepalive 64; }}\n\
           server {{ listen {addr}; location / {{ proxy_pass http://echo; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).ok()?;
    let child = std::process::Command::new("nginx")
        .args([
            "-p",
            &d.to_string(),
            "-c",
            &format!("{d}/nginx.conf"),
            "-e",
            &format!("{d}/error.log"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let server = Server(child);
    common::wait_for_listener(addr).then_some(Nginx {
        addr,
        _server: server,
    })
}
