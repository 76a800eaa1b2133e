//! The floor of scopegate's stack: a reverse proxy made of the same parts (hyper-util's auto
//! server, its pooled legacy client, one current-thread tokio runtime per worker on one shared
//! listener, mimalloc) doing nothing else: no token, no route, no log, no header rewriting. A
//! scopegate row can be no faster than this; the gap between it and nginx is the stack's, the
//! gap between it and scopegate is scopegate's own work. The bench runs it as a child process of
//! its own binary (`__floor_proxy LISTEN UPSTREAM WORKERS`), so its CPU is measured like the
//! other servers'.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// The argument that makes the bench binary this proxy instead.
pub(crate) const ARG: &str = "__floor_proxy";

type Body = BoxBody<Bytes, hyper::Error>;

/// Serves until killed; `args` are LISTEN UPSTREAM WORKERS.
pub(crate) fn serve(args: &[String]) -> Result<(), String> {
    let [listen, upstream, workers] = args else {
        return Err(format!("usage: {ARG} LISTEN UPSTREAM WORKERS"));
    };
    let listen: SocketAddr = listen.parse().map_err(|e| format!("{listen}: {e}"))?;
    let workers: usize = workers.parse().map_err(|e| format!("{workers}: {e}"))?;
    let first = std::net::TcpListener::bind(listen).map_err(|e| format!("{listen}: {e}"))?;
    first.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut threads = Vec::new();
    for _ in 0..workers.max(1) {
        let listener = first.try_clone().map_err(|e| e.to_string())?;
        let upstream = upstream.clone();
        threads.push(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(accept(listener, upstream));
        }));
    }
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

async fn accept(listener: std::net::TcpListener, upstream: String) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector);
    let builder = auto::Builder::new(TokioExecutor::new());
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let (client, upstream, builder) = (client.clone(), upstream.clone(), builder.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| forward(client.clone(), &upstream, request));
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: &str,
    request: Request<Incoming>,
) -> impl Future<Output = Result<Response<Body>, Infallible>> + use<> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = format!("http://{upstream}{path}").parse();
    async move {
        let Ok(uri) = uri else {
            return Ok(status(StatusCode::BAD_REQUEST));
        };
        parts.uri = uri;
        match client.request(Request::from_parts(parts, body)).await {
            Ok(response) => Ok(response.map(|b| b.boxed())),
            Err(_) => Ok(status(StatusCode::BAD_GATEWAY)),
        }
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = code;
    response
}
