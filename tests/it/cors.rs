//! CORS through scopegate, over real connections with a plain HTTP client: preflights are
//! answered by scopegate on the route the real request would be decided on, without a token and
//! without reaching the upstream; every answer to an allowed origin (the upstream's 200,
//! scopegate's own 401, 403, 404 and 502) carries the CORS headers and `Vary: Origin`; a
//! disallowed origin never gets `Access-Control-Allow-Origin`; the upstream's own
//! `Access-Control-*` headers never reach the browser on a CORS route. `browser` checks the same
//! with headless Chromium.

mod browser;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::util::{Answer, Harness, Options, metrics};

/// Scopegate's global policy: one exact origin and one pattern.
const APP: &str = "http://app.test:8000";

const POLICY: &str = r#"
routes:
  - name: items
    match: { path: /items }
    upstream: rec
    require: { scopes: [read:items] }
  - name: item-write
    match: { method: [PUT, DELETE], path: "/items/{id}" }
    upstream: rec
    require: { scopes: [write:items] }
  - name: reports
    match: { path: /reports }
    upstream: rec
    require: {}
    cors:
      allow_origins: ["https://reports.example.net"]
      allow_methods: [GET]
      allow_headers: [Authorization, X-Request-Id]
      expose_headers: [X-Upstream]
      allow_credentials: true
      max_age: 1h
  - name: plain
    match: { path: /plain }
    upstream: rec
    public: true
    cors: false
  - name: down
    match: { path: /down }
    upstream: closed
    require: {}
"#;

/// An upstream that records every request it gets and answers 200 with CORS headers of its own,
/// which scopegate must drop on a CORS route.
pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<(Method, String)>>>,
    _stop: watch::Sender<bool>,
}

impl Recorder {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        scopegate::serve::spawn_listener(listener, None, stopped, None, move |req, _| {
            log.lock()
                .unwrap()
                .push((req.method().clone(), req.uri().path().to_string()));
            let body = format!(r#"{{"from":"upstream","path":"{}"}}"#, req.uri().path());
            async move {
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("content-type", "application/json")
                        .header("access-control-allow-origin", "*")
                        .header("access-control-allow-credentials", "true")
                        .header("access-control-expose-headers", "x-secret")
                        .header("x-upstream", "yes")
                        .body(Full::new(Bytes::from(body)))
                        .unwrap(),
                )
            }
        });
        Self {
            addr,
            seen,
            _stop: stop,
        }
    }

    /// Every (method, path) the upstream received.
    pub fn seen(&self) -> Vec<(Method, String)> {
        self.seen.lock().unwrap().clone()
    }
}

/// The gateway on [`POLICY`] with a global `cors:` for [`APP`] and `https://*.example.com`,
/// and the recording upstream.
async fn start() -> (Harness, Recorder) {
    start_with(&format!(
        "cors:\n  allow_origins: [\"{APP}\", \"https://*.example.com\"]\n"
    ))
    .await
}

pub async fn start_with(global: &str) -> (Harness, Recorder) {
    let rec = Recorder::start().await;
    let h = Harness::with(Options {
        policy: POLICY.into(),
        server_extra: global.to_string(),
        upstreams_extra: format!("  rec: {{ url: \"http://{}\" }}", rec.addr),
        ..Options::default()
    })
    .await;
    (h, rec)
}

async fn preflight(h: &Harness, path: &str, origin: &str, method: &str, headers: &str) -> Answer {
    let mut asked = vec![
        ("origin", origin),
        ("access-control-request-method", method),
    ];
    if !headers.is_empty() {
        asked.push(("access-control-request-headers", headers));
    }
    h.client
        .send(Method::OPTIONS, &h.url(path), &asked, Bytes::new())
        .await
}

/// Every value of header `name`.
fn all(a: &Answer, name: &str) -> Vec<String> {
    a.headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// The answer lets `origin` read it, names `Origin` in `Vary`, and carries none of the
/// upstream's own CORS headers.
#[track_caller]
fn readable_by(a: &Answer, origin: &str) {
    assert_eq!(
        all(a, "access-control-allow-origin"),
        [origin],
        "{:?}",
        a.headers
    );
    varies_by_origin(a);
    assert_eq!(
        a.header("access-control-expose-headers"),
        "www-authenticate, retry-after"
    );
    assert!(!a.headers.contains_key("access-control-allow-credentials"));
}

#[track_caller]
fn varies_by_origin(a: &Answer) {
    assert!(
        all(a, "vary").contains(&"Origin".to_string()),
        "{:?}",
        a.headers
    );
}

/// The answer grants nothing, but still varies by `Origin`.
#[track_caller]
fn not_readable(a: &Answer) {
    assert!(
        a.headers
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")),
        "{:?}",
        a.headers
    );
    varies_by_origin(a);
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_without_a_token_or_the_upstream() {
    let (h, rec) = start().await;
    let a = preflight(&h, "/items", APP, "GET", "authorization").await;
    a.expect_status(StatusCode::NO_CONTENT);
    assert_eq!(a.header("access-control-allow-origin"), APP);
    assert_eq!(a.header("access-control-allow-methods"), "GET");
    assert_eq!(a.header("access-control-allow-headers"), "authorization");
    assert_eq!(a.header("access-control-max-age"), "600");
    assert_eq!(a.header("vary"), "Origin");
    assert!(a.body.is_empty());
    // The pattern's one label, and a route that matches the method asked for (not OPTIONS).
    let a = preflight(
        &h,
        "/items/42",
        "https://pr-7.example.com",
        "PUT",
        "authorization, content-type",
    )
    .await;
    a.expect_status(StatusCode::NO_CONTENT);
    assert_eq!(
        a.header("access-control-allow-origin"),
        "https://pr-7.example.com"
    );
    assert_eq!(a.header("access-control-allow-methods"), "PUT");
    assert_eq!(
        a.header("access-control-allow-headers"),
        "authorization, content-type"
    );
    assert!(rec.seen().is_empty(), "the upstream saw {:?}", rec.seen());
    let m = metrics(h.gateway.admin_addr).await;
    assert!(
        m.contains(r#"scopegate_cors_preflights_total{outcome="granted"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"scopegate_requests_total{decision="allow",route="items",status="204"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn a_route_policy_replaces_the_global_one() {
    let (h, rec) = start().await;
    let own = "https://reports.example.net";
    let a = preflight(&h, "/reports", own, "GET", "x-request-id,authorization").await;
    a.expect_status(StatusCode::NO_CONTENT);
    assert_eq!(a.header("access-control-allow-origin"), own);
    assert_eq!(a.header("access-control-allow-credentials"), "true");
    assert_eq!(a.header("access-control-max-age"), "3600");
    // The global origin is not the route's.
    let a = preflight(&h, "/reports", APP, "GET", "authorization").await;
    a.expect_status(StatusCode::FORBIDDEN);
    assert_eq!(a.code(), "cors_origin_not_allowed");
    let token = h.token("read:items");
    let a = h
        .call(Method::GET, "/reports", &token, &[("origin", own)])
        .await;
    a.expect_status(StatusCode::OK);
    assert_eq!(a.header("access-control-allow-origin"), own);
    assert_eq!(a.header("access-control-allow-credentials"), "true");
    assert_eq!(
        a.header("access-control-expose-headers"),
        "www-authenticate, retry-after, x-upstream"
    );
    assert_eq!(rec.seen(), [(Method::GET, "/reports".to_string())]);
}

#[tokio::test]
async fn refused_preflights_grant_nothing_and_never_reach_the_upstream() {
    let (h, rec) = start().await;
    let cases = [
        (
            "/items",
            "http://evil.test:8000",
            "GET",
            "authorization",
            "cors_origin_not_allowed",
        ),
        (
            "/items",
            "http://app.test:8001",
            "GET",
            "",
            "cors_origin_not_allowed",
        ),
        (
            "/items",
            "https://a.b.example.com",
            "GET",
            "",
            "cors_origin_not_allowed",
        ),
        ("/items", "null", "GET", "", "cors_origin_not_allowed"),
        (
            "/items",
            APP,
            "GET",
            "authorization, x-admin",
            "cors_headers_not_allowed",
        ),
        (
            "/reports",
            "https://reports.example.net",
            "DELETE",
            "",
            "cors_method_not_allowed",
        ),
        (
            "/reports",
            "https://reports.example.net",
            "get",
            "",
            "cors_method_not_allowed",
        ),
    ];
    for (path, origin, method, headers, code) in cases {
        let a = preflight(&h, path, origin, method, headers).await;
        a.expect_status(StatusCode::FORBIDDEN);
        assert_eq!(a.code(), code, "{origin} {method} {headers}");
        not_readable(&a);
    }
    assert!(rec.seen().is_empty(), "the upstream saw {:?}", rec.seen());
    let m = metrics(h.gateway.admin_addr).await;
    assert!(
        m.contains(r#"scopegate_cors_preflights_total{outcome="origin_not_allowed"} 4"#),
        "{m}"
    );
    assert!(m.contains(r#"scopegate_cors_preflights_total{outcome="method_not_allowed"} 2"#));
    assert!(m.contains(r#"scopegate_cors_preflights_total{outcome="headers_not_allowed"} 1"#));
}

#[tokio::test]
async fn a_preflight_is_matched_like_the_request_it_announces() {
    let (h, rec) = start().await;
    // No route for GET /items/42 nor OPTIONS /items/42: a normal request, a 404.
    let a = preflight(&h, "/items/42", APP, "GET", "").await;
    a.expect_status(StatusCode::NOT_FOUND);
    assert_eq!(a.code(), "no_route");
    // A path the pipeline refuses is refused for its preflight too, for the same reason.
    for path in ["/items%2F..", "/x/../items", "/items;a=b", "/items/"] {
        let a = preflight(&h, path, APP, "GET", "").await;
        let request = h.call(Method::GET, path, "x", &[("origin", APP)]).await;
        assert!(a.status.is_client_error(), "{path}: {}", a.status);
        assert_eq!(
            (a.status, a.code()),
            (request.status, request.code()),
            "{path}"
        );
    }
    // A method no route takes, asked of a route that would take the OPTIONS: refused there.
    let a = preflight(&h, "/items", APP, "BREW", "").await;
    assert_eq!(a.code(), "cors_method_not_allowed");
    assert!(rec.seen().is_empty(), "the upstream saw {:?}", rec.seen());
    // A route with `cors: false` leaves CORS to its upstream: the OPTIONS is forwarded and the
    // upstream's headers pass unchanged.
    let a = preflight(&h, "/plain", APP, "GET", "").await;
    a.expect_status(StatusCode::OK);
    assert_eq!(a.header("access-control-allow-origin"), "*");
    assert_eq!(a.header("access-control-expose-headers"), "x-secret");
    assert!(a.headers.get("vary").is_none());
    assert_eq!(rec.seen(), [(Method::OPTIONS, "/plain".to_string())]);
}

#[tokio::test]
async fn every_answer_to_an_allowed_origin_is_readable() {
    let (h, rec) = start().await;
    let origin = [("origin", APP)];
    let ok = h
        .call(Method::GET, "/items", &h.token("read:items"), &origin)
        .await;
    ok.expect_status(StatusCode::OK);
    readable_by(&ok, APP);
    assert_eq!(ok.json()["from"], "upstream");
    assert_eq!(ok.header("x-upstream"), "yes");

    let forbidden = h
        .call(Method::GET, "/items", &h.token("other"), &origin)
        .await;
    forbidden.expect_status(StatusCode::FORBIDDEN);
    readable_by(&forbidden, APP);
    assert_eq!(forbidden.code(), "insufficient_scope");
    assert!(
        forbidden
            .header("www-authenticate")
            .contains("insufficient_scope")
    );

    let unauthorized = h.call(Method::GET, "/items", "not-a-jwt", &origin).await;
    unauthorized.expect_status(StatusCode::UNAUTHORIZED);
    readable_by(&unauthorized, APP);

    let down = h.call(Method::GET, "/down", &h.token(""), &origin).await;
    down.expect_status(StatusCode::BAD_GATEWAY);
    readable_by(&down, APP);

    // No route matched: the server file's policy.
    let missing = h.call(Method::GET, "/nowhere", "x", &origin).await;
    missing.expect_status(StatusCode::NOT_FOUND);
    readable_by(&missing, APP);
    assert_eq!(rec.seen(), [(Method::GET, "/items".to_string())]);
}

#[tokio::test]
async fn a_disallowed_origin_never_gets_allow_origin() {
    let (h, _rec) = start().await;
    let token = h.token("read:items");
    for origin in [Some("http://evil.test:8000"), None] {
        let headers: Vec<(&str, &str)> = origin.iter().map(|o| ("origin", *o)).collect();
        let ok = h.call(Method::GET, "/items", &token, &headers).await;
        ok.expect_status(StatusCode::OK);
        not_readable(&ok);
        let denied = h.call(Method::GET, "/items", "not-a-jwt", &headers).await;
        denied.expect_status(StatusCode::UNAUTHORIZED);
        not_readable(&denied);
    }
    // Two `Origin` headers are no origin at all.
    let two = [("origin", APP), ("origin", APP)];
    let a = h.call(Method::GET, "/items", &token, &two).await;
    not_readable(&a);
}

#[tokio::test]
async fn any_origin_is_a_star_and_routes_without_a_policy_are_left_alone() {
    let (h, rec) =
        start_with("cors: { allow_origins: [\"*\"], allow_methods: [GET, PUT] }\n").await;
    let a = preflight(
        &h,
        "/items",
        "https://anywhere.test",
        "GET",
        "authorization",
    )
    .await;
    a.expect_status(StatusCode::NO_CONTENT);
    assert_eq!(a.header("access-control-allow-origin"), "*");
    let a = h
        .call(
            Method::GET,
            "/items",
            &h.token("read:items"),
            &[("origin", "https://anywhere.test")],
        )
        .await;
    assert_eq!(all(&a, "access-control-allow-origin"), ["*"]);
    // The server file's methods bound every route's preflights.
    let a = preflight(&h, "/items/1", "https://anywhere.test", "DELETE", "").await;
    assert_eq!(a.code(), "cors_method_not_allowed");
    assert_eq!(rec.seen().len(), 1);

    // Without any `cors:`, scopegate does no CORS: the upstream's headers pass, and a preflight
    // is an ordinary OPTIONS request (here refused for want of a token).
    let (h, _rec) = start_with("").await;
    let a = h
        .call(
            Method::GET,
            "/items",
            &h.token("read:items"),
            &[("origin", APP)],
        )
        .await;
    assert_eq!(a.header("access-control-allow-origin"), "*");
    assert!(a.headers.get("vary").is_none());
    let a = preflight(&h, "/items", APP, "GET", "authorization").await;
    a.expect_status(StatusCode::UNAUTHORIZED);
}
