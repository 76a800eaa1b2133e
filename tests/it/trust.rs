//! The trust boundary in proxy mode, as an attacker sees it: each test sends an attack through
//! the gateway to a hostile upstream that records the exact bytes it received, and asserts both
//! the answer and the forwarded request. Allowed requests are replayed to real framework parsers
//! (Flask/Werkzeug, Express) to check that they see the method, path and organization scopegate
//! decided on, read first-wins and last-wins alike.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::hostile::{Forwarded, Hostile};
use crate::util::parsers::{Framework, express, flask};
use crate::util::{Harness, Options};

const POLICY: &str = r#"
routes:
  - name: admin-users
    match: { method: [GET, DELETE], path: /admin/users }
    upstream: hostile
    require: { scopes: [admin] }
  - name: items-by-path
    match: { method: GET, path: "/orgs/{org}/items" }
    upstream: hostile
    organization: { from: path, param: org }
    require: { scopes: [read:items] }
  - name: items-by-query
    match: { method: GET, path: /items }
    upstream: hostile
    organization: { from: query, param: org }
    require: { scopes: [read:items] }
  - name: reports-by-header
    match: { method: [GET, POST], path: /reports }
    upstream: hostile
    organization: { from: header, name: x-org }
    require: { scopes: [read:items] }
  - name: cars
    match: { method: GET, path: "/cars/{id}" }
    upstream: hostile
    public: true
    matrix_params: true
  - name: weaker-catch-all
    match: { path: "/{*rest}" }
    upstream: hostile
    public: true
"#;

/// alice may read items in acme, not in globex.
const DATA: &str = r#"
organizations:
  acme:
    members:
      alice: { scopes: [read:items] }
"#;

struct Attack {
    h: Harness,
    upstream: Hostile,
    token: String,
    _data: PathBuf,
}

impl Attack {
    async fn start() -> Self {
        Self::with(POLICY, "").await
    }

    /// The attack gateway with `policy`, and `upstream` settings for the hostile upstream.
    async fn with(policy: &str, settings: &str) -> Self {
        let upstream = Hostile::start().await;
        let data = std::env::temp_dir().join(format!(
            "scopegate-trust-{}-{}.yaml",
            std::process::id(),
            crate::util::closed_port().port()
        ));
        std::fs::write(&data, DATA).unwrap();
        let h = Harness::with(Options {
            policy: policy.into(),
            upstreams_extra: format!(
                "  hostile: {{ url: \"http://{}\"{settings} }}",
                upstream.addr
            ),
            server_extra: format!("permissions: {{ files: [\"{}\"] }}", data.display()),
            ..Options::default()
        })
        .await;
        let token = h.token("read:items");
        Self {
            h,
            upstream,
            token,
            _data: data,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.h.gateway.proxy_addr
    }

    /// Sends `head` (without the final blank line) with the token and `Connection: close`.
    async fn send(&self, head: &str) -> (u16, String) {
        let request = format!(
            "{head}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            self.token
        );
        raw(self.addr(), request.as_bytes()).await
    }

    /// Asserts the answer is `status` and nothing reached the upstream.
    #[track_caller]
    fn refused(&self, (status, text): (u16, String), expected: u16) {
        assert_eq!(status, expected, "{text}");
        assert!(
            self.upstream.take().is_empty(),
            "a refused request reached the upstream"
        );
    }
}

async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

/// The claims of the minted token the upstream received (its signature is checked by the echo
/// upstream elsewhere; here only what it says matters).
fn minted_claims(f: &Forwarded) -> Value {
    let auth = f.headers("authorization");
    assert_eq!(auth.len(), 1, "{auth:?}");
    crate::util::jwt_claims(auth[0].strip_prefix("Bearer ").unwrap())
}

/// What both frameworks make of `f`: (framework, parsed).
async fn parsed_by_frameworks(
    frameworks: &[Framework],
    f: &Forwarded,
) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    for fw in frameworks {
        let parsed = fw.parse(&f.raw).await.unwrap_or_else(|| {
            panic!(
                "{} refused what scopegate forwarded:\n{}",
                fw.name,
                f.head()
            )
        });
        out.push((fw.name, parsed));
    }
    out
}

/// Every reading of query parameter `name` a framework offers: Werkzeug's list, Express's
/// default parser, `qs` (extended) and URLSearchParams, first and last.
fn readings(framework: &str, parsed: &Value, name: &str) -> Vec<Value> {
    match framework {
        "flask" => vec![
            parsed["args_first"][name].clone(),
            parsed["args_last"][name].clone(),
            Value::Array(parsed["args"][name].as_array().cloned().unwrap_or_default()),
        ],
        _ => vec![
            parsed["query"][name].clone(),
            parsed["query_qs"][name].clone(),
            parsed["query_first"][name].clone(),
            parsed["query_last"][name].clone(),
        ],
    }
}

/// Regression: a lowercase method (`delete`) missed the method's routes, fell through to an
/// any-method route and was forwarded lowercase; HEAD fell through to a catch-all.
#[tokio::test]
async fn methods_are_judged_as_the_upstream_will_read_them() {
    let a = Attack::start().await;
    for method in ["delete", "get", "Delete", "PURGE", "CONNECT"] {
        let (status, text) = a
            .send(&format!(
                "{method} /admin/users HTTP/1.1\r\nHost: api.example.com"
            ))
            .await;
        assert!(status == 400 || status == 405, "{method}: {text}");
        assert!(
            a.upstream.take().is_empty(),
            "{method} reached the upstream"
        );
    }
    // HEAD is judged as GET: the token lacks `admin`, so not the public catch-all's 200.
    a.refused(
        a.send("HEAD /admin/users HTTP/1.1\r\nHost: api.example.com")
            .await,
        403,
    );
    a.refused(
        a.send("HEAD /admin/users HTTP/1.1\r\nHost: api.example.com")
            .await,
        403,
    );
    // An allowed HEAD reaches the upstream as HEAD.
    let (status, _) = a
        .send("HEAD /orgs/acme/items HTTP/1.1\r\nHost: api.example.com")
        .await;
    assert_eq!(status, 200);
    assert_eq!(a.upstream.only().request_line().0, "HEAD");
}

/// Regression: the host was taken as sent: two Host headers, an `:authority` or absolute-form
/// target disagreeing with Host, and malformed hosts were accepted and forwarded raw.
#[tokio::test]
async fn the_host_is_one_valid_host_and_forwarded_canonical() {
    let a = Attack::start().await;
    for head in [
        "GET /orgs/acme/items HTTP/1.1\r\nHost: api.example.com\r\nHost: admin.example.com",
        "GET http://admin.example.com/orgs/acme/items HTTP/1.1\r\nHost: api.example.com",
        "GET /orgs/acme/items HTTP/1.1\r\nHost: api.example.com:99999",
        "GET /orgs/acme/items HTTP/1.1\r\nHost: user@api.example.com",
        "GET /orgs/acme/items HTTP/1.1\r\nHost: api..example.com",
        "GET /orgs/acme/items HTTP/1.1",
    ] {
        let (status, text) = a.send(head).await;
        assert_eq!(status, 400, "{head:?}: {text}");
        assert!(a.upstream.take().is_empty(), "{head:?}");
    }
    let (status, _) = a
        .send("GET /orgs/acme/items HTTP/1.1\r\nHost: API.Example.COM.")
        .await;
    assert_eq!(status, 200);
    let f = a.upstream.only();
    assert_eq!(f.headers("x-forwarded-host"), ["api.example.com"]);
    assert_eq!(f.headers("host").len(), 1);
}

/// Regression: `;` path parameters were forwarded verbatim, so `/admin;/users` and
/// `/static/..;/admin/users` reached the weaker catch-all while Java servers route them to
/// `/admin/users`; bytes >= 0x80 were mangled into Latin-1.
#[tokio::test]
async fn path_forms_that_frameworks_read_as_another_path_are_refused() {
    let a = Attack::start().await;
    for target in [
        "/admin;/users",
        "/admin;x=1/users",
        "/static/..;/admin/users",
        "/admin/users;",
        "/x/%2e%2e;/admin/users",
    ] {
        a.refused(
            a.send(&format!("GET {target} HTTP/1.1\r\nHost: a.example"))
                .await,
            400,
        );
    }
    a.refused(
        raw(
            a.addr(),
            b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        )
        .await,
        400,
    );
    a.refused(
        raw(
            a.addr(),
            b"GET /x?q=caf\xc3\xa9 HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        )
        .await,
        400,
    );
    // A route that accepts matrix parameters gets them verbatim.
    let (status, _) = a
        .send("GET /cars/1;color=red HTTP/1.1\r\nHost: a.example")
        .await;
    assert_eq!(status, 200);
    assert_eq!(a.upstream.only().request_line().1, "/cars/1;color=red");
}

/// Regression: query parameter names were compared raw, so `?org=acme&%6Frg=globex` was
/// authorized for acme while the upstream's parser saw two `org` values.
#[tokio::test]
async fn the_query_organization_cannot_be_smuggled() {
    let a = Attack::start().await;
    for query in [
        "org=acme&%6Frg=globex",
        "org=acme&org=globex",
        "org=acme&ORG=globex",
        "org=acme&org[]=globex",
        "org[]=acme",
        "org[0]=acme&org=acme",
        "org=acme;org=globex",
        "org=acme&_method=DELETE",
    ] {
        a.refused(
            a.send(&format!("GET /items?{query} HTTP/1.1\r\nHost: a.example"))
                .await,
            400,
        );
    }
    let frameworks = [flask(), express()];
    for query in [
        "org=acme",
        "page=2&org=ac%6De&organization=globex",
        "org=acme&orgs=globex",
    ] {
        let (status, text) = a
            .send(&format!("GET /items?{query} HTTP/1.1\r\nHost: a.example"))
            .await;
        assert_eq!(status, 200, "{query}: {text}");
        let f = a.upstream.only();
        assert_eq!(minted_claims(&f)["org_id"], "acme");
        for (name, parsed) in parsed_by_frameworks(&frameworks, &f).await {
            for reading in readings(name, &parsed, "org") {
                assert!(
                    reading == "acme" || reading == serde_json::json!(["acme"]),
                    "{name} reads org as {reading} from {query}"
                );
            }
            assert_eq!(parsed["method"], "GET", "{name}");
            assert_eq!(parsed["path"], "/items", "{name}");
        }
    }
}

/// Regression: method and URL override headers were forwarded, so a POST that scopegate
/// authorized could be acted on as a DELETE or on another URL.
#[tokio::test]
async fn override_headers_never_reach_the_upstream() {
    let a = Attack::start().await;
    let overrides = "X-HTTP-Method-Override: DELETE\r\nX-HTTP-Method: DELETE\r\nX-Method-Override: DELETE\r\nX-Original-URL: /admin/users\r\nX-Rewrite-URL: /admin/users\r\nX-Forwarded-Prefix: /admin\r\nX-Forwarded-Port: 8443\r\nX_HTTP_Method_Override: DELETE";
    let (status, text) = a
        .send(&format!(
            "POST /reports HTTP/1.1\r\nHost: a.example\r\nX-Org: acme\r\nContent-Length: 0\r\n{overrides}"
        ))
        .await;
    assert_eq!(status, 200, "{text}");
    let f = a.upstream.only();
    let names = f.header_names();
    for stripped in scopegate::inbound::DEFAULT_STRIPPED
        .iter()
        .chain(&["x_http_method_override"])
    {
        assert!(
            !names.contains(&stripped.to_string()),
            "{stripped} was forwarded: {names:?}"
        );
    }
    for (name, parsed) in parsed_by_frameworks(&[flask(), express()], &f).await {
        assert_eq!(parsed["method"], "POST", "{name}");
        assert_eq!(parsed["path"], "/reports", "{name}");
        for key in [
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "_method",
        ] {
            assert!(parsed["override"][key].is_null(), "{name} sees {key}");
        }
    }
    // `_method` in the query is refused (Rails, Laravel, Symfony would honour it).
    a.refused(
        a.send("POST /reports?_method=DELETE HTTP/1.1\r\nHost: a.example\r\nX-Org: acme\r\nContent-Length: 0")
            .await,
        400,
    );
}

/// Regression: a header spelled with `_` folds to the same CGI name as the organization header
/// (`X_Org` and `X-Org` are both `HTTP_X_ORG`), and `Connection: x-org` removed the header the
/// decision used before it reached the upstream.
#[tokio::test]
async fn the_organization_header_reaches_the_upstream_as_decided() {
    let a = Attack::start().await;
    let (status, text) = a
        .send("GET /reports HTTP/1.1\r\nHost: a.example\r\nX_Org: globex\r\nX-Org: acme")
        .await;
    assert_eq!(status, 200, "{text}");
    let f = a.upstream.only();
    assert_eq!(f.headers("x-org"), ["acme"]);
    assert!(f.headers("x_org").is_empty());
    assert_eq!(minted_claims(&f)["org_id"], "acme");
    for (name, parsed) in parsed_by_frameworks(&[flask(), express()], &f).await {
        let seen = if name == "flask" {
            parsed["environ_http"]["HTTP_X_ORG"].clone()
        } else {
            parsed["headers"]["x-org"].clone()
        };
        assert_eq!(seen, "acme", "{name}");
    }
    a.refused(
        a.send(
            "GET /reports HTTP/1.1\r\nHost: a.example\r\nX-Org: acme\r\nConnection: close, x-org",
        )
        .await,
        400,
    );
    // Not a member of globex: the decision's organization is the one that counts.
    a.refused(
        a.send("GET /reports HTTP/1.1\r\nHost: a.example\r\nX-Org: globex")
            .await,
        403,
    );
}

/// What scopegate decided (method, path, organization) is what both frameworks read from the
/// forwarded bytes, for the allowed requests of the attack suite.
#[tokio::test]
async fn frameworks_read_the_decided_request() {
    let a = Attack::start().await;
    let frameworks = [flask(), express()];
    for (head, method, path) in [
        ("GET //orgs/acme//items HTTP/1.1", "GET", "/orgs/acme/items"),
        ("GET /orgs/%61cme/items HTTP/1.1", "GET", "/orgs/acme/items"),
        (
            "GET /orgs/acme/items?org=globex HTTP/1.1",
            "GET",
            "/orgs/acme/items",
        ),
    ] {
        let (status, text) = a
            .send(&format!("{head}\r\nHost: a.example\r\nCookie: a=1"))
            .await;
        assert_eq!(status, 200, "{head}: {text}");
        let f = a.upstream.only();
        assert_eq!(f.request_line().1.split('?').next().unwrap(), path);
        assert_eq!(minted_claims(&f)["org_id"], "acme");
        for (name, parsed) in parsed_by_frameworks(&frameworks, &f).await {
            assert_eq!(parsed["method"], method, "{name}");
            assert_eq!(parsed["path"], path, "{name}");
        }
    }
}

/// Regression: paths that differ from a protected route only by case or a trailing `/` reached
/// a weaker route, while upstreams whose routers fold them (Express by default) act on the
/// protected one. With `folds_case` / `folds_trailing_slash` on the upstream they are refused.
#[tokio::test]
async fn paths_an_upstream_folds_onto_another_route_are_refused() {
    for (folds, expected) in [
        (", folds_case: true, folds_trailing_slash: true", 400),
        ("", 200),
    ] {
        let a = Attack::with(POLICY, folds).await;
        for target in [
            "/Admin/users",
            "/admin/USERS",
            "/admin/users/",
            "/ADMIN/users/",
        ] {
            let (status, text) = a
                .send(&format!("DELETE {target} HTTP/1.1\r\nHost: a.example"))
                .await;
            assert_eq!(status, expected, "{folds:?} {target}: {text}");
            let forwarded = a.upstream.take();
            assert_eq!(forwarded.is_empty(), expected != 200, "{folds:?} {target}");
        }
        // The route itself, and paths that fold onto the same route, are still served.
        let (status, _) = a
            .send("GET /orgs/acme/items HTTP/1.1\r\nHost: a.example")
            .await;
        assert_eq!(status, 200, "{folds:?}");
        let (status, _) = a.send("GET /Cars/7 HTTP/1.1\r\nHost: a.example").await;
        assert_eq!(
            status, expected,
            "{folds:?}: /Cars/7 folds onto the cars route, not the catch-all"
        );
        a.upstream.take();
    }
}
