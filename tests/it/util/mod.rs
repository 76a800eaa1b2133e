//! Shared helpers: every test starts real servers on 127.0.0.1:0 — the development issuer
//! (RSA, EC and Ed25519 keys, JWKS over HTTP), the echo upstream, and the gateway — and talks
//! to them over real HTTP.

#![allow(
    dead_code,
    reason = "each test module uses a different subset of the helpers"
)]

pub mod hostile;
pub mod ingress;
pub mod parsers;
pub mod perms;
pub mod pki;
pub mod postgres;
pub mod redis;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Algorithm;
use scopegate::config::{self, Source};
use scopegate::dev_issuer::DevIssuer;
use scopegate::serve::Running;
use serde_json::{Value, json};
use tokio::sync::watch;

pub const AUDIENCE: &str = "api";

/// The policy most tests run against.
pub const POLICY: &str = r#"
routes:
  - name: public
    match: { method: GET, path: /public }
    upstream: echo
    public: true
  - name: list-builds
    match: { method: GET, path: "/orgs/{org}/builds" }
    upstream: echo
    require: { scopes: [read:builds] }
  - name: create-build
    match: { method: POST, path: "/orgs/{org}/builds" }
    upstream: echo
    require: { scopes: [create:builds] }
  - name: either
    match: { method: GET, path: "/orgs/{org}/builds/{id}" }
    upstream: echo
    require: { any_scopes: [read:builds, admin:builds] }
  - name: upload
    match: { method: PUT, path: /upload }
    upstream: echo
    require: { scopes: [] }
  - name: files
    match: { method: GET, path: "/files/{*rest}" }
    upstream: echo
    require: {}
  - name: down
    match: { path: /down }
    upstream: closed
    require: {}
  - name: slow
    match: { path: /slow }
    upstream: slow
    require: {}
  - name: limited
    match: { method: PUT, path: /limited }
    upstream: echo
    require: {}
    max_body_bytes: 1024
  - name: single
    match: { path: /single }
    upstream: single
    require: {}
"#;

/// Knobs for one gateway.
#[derive(Debug, Clone)]
pub struct Options {
    pub policy: String,
    /// Extra YAML lines for the `test` issuer (indented 4 spaces).
    pub issuer_extra: String,
    /// `jwks_url` (default) or `discovery_url`.
    pub discovery: bool,
    pub limits: String,
    pub cooldown: &'static str,
    /// Extra top-level YAML for the server file (`permissions:`, more upstreams...).
    pub server_extra: String,
    /// Extra policy files: (name, text).
    pub more_policies: Vec<(String, String)>,
    /// Folder that relative paths in the server file (data files, key files) resolve from.
    pub base: PathBuf,
    /// The `signing:` block; default: one generated ES256 key.
    pub signing: Option<String>,
    /// Extra entries of `upstreams:` (indented 2 spaces).
    pub upstreams_extra: String,
    /// Extra entries of `issuers:` (indented 2 spaces).
    pub issuers_extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            policy: POLICY.to_string(),
            issuer_extra: String::new(),
            discovery: false,
            limits: String::new(),
            cooldown: "30s",
            server_extra: String::new(),
            more_policies: Vec::new(),
            base: repo(),
            signing: None,
            upstreams_extra: String::new(),
            issuers_extra: String::new(),
        }
    }
}

/// Issuer, echo upstream and gateway, started together.
pub struct Harness {
    pub issuer: DevIssuer,
    pub echo: SocketAddr,
    pub gateway: Running,
    pub client: TestClient,
    /// The gateway's clock: tests advance it instead of sleeping past a token's `exp`.
    pub clock: scopegate::token::Clock,
    _stop: watch::Sender<bool>,
}

impl Harness {
    pub async fn start() -> Self {
        Self::with(Options::default()).await
    }

    pub async fn with(options: Options) -> Self {
        let (stop, stopped) = watch::channel(false);
        let issuer = DevIssuer::start(stopped.clone()).await.unwrap();
        for (kid, alg) in [
            ("rsa", Algorithm::RS256),
            ("ps", Algorithm::PS256),
            ("ec", Algorithm::ES256),
            ("ed", Algorithm::EdDSA),
        ] {
            issuer.add_key(kid, alg).unwrap();
        }
        // The gateway's port is picked first, so the upstream can verify every token it gets
        // through the gateway's discovery document.
        let proxy = closed_port();
        let discovery = format!("http://{proxy}/.well-known/openid-configuration")
            .parse()
            .ok();
        let echo = scopegate::echo::start_verifying(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            stopped,
            discovery,
        )
        .await
        .unwrap();
        let config = config::from_sources(
            &server_source(&issuer, echo, proxy, &options),
            &options.base,
            &policy_sources(&options),
        )
        .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
        let clock = config.clock.clone();
        let gateway = scopegate::serve::start(config).await.unwrap();
        Self {
            issuer,
            echo,
            gateway,
            client: TestClient::new(),
            clock,
            _stop: stop,
        }
    }

    /// Another replica beside this gateway: the same issuer and upstream, started from
    /// `options` (give them a `signing` key file, so replicas accept each other's tokens).
    pub async fn replica(&self, options: &Options) -> Running {
        let config = config::from_sources(
            &server_source(&self.issuer, self.echo, closed_port(), options),
            &options.base,
            &policy_sources(options),
        )
        .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
        scopegate::serve::start(config).await.unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.gateway.proxy_addr, path)
    }

    pub fn auth_url(&self, path: &str) -> String {
        format!("http://{}{}", self.gateway.auth_addr.unwrap(), path)
    }

    /// A forward-auth decision request (`GET /` on the auth listener) with `headers`.
    pub async fn ask(&self, headers: &[(&str, &str)]) -> Answer {
        self.client.get(&self.auth_url("/"), headers).await
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.gateway.admin_addr, path)
    }

    /// GET an admin path.
    pub async fn admin_get(&self, path: &str) -> Answer {
        self.client
            .send(Method::GET, &self.admin_url(path), &[], Bytes::new())
            .await
    }

    /// Claims of a valid token for `scope`, to adjust before signing.
    pub fn claims(&self, scope: &str) -> Value {
        let now = now();
        json!({"iss": self.issuer.url, "sub": "alice", "aud": AUDIENCE, "scope": scope, "iat": now, "exp": now + 300, "azp": "cli"})
    }

    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        self.issuer.sign(kid, claims).unwrap()
    }

    /// A valid ES256 token with `scope`.
    pub fn token(&self, scope: &str) -> String {
        self.sign("ec", &self.claims(scope))
    }

    /// Sends `method path` with `token` and extra headers.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let bearer = format!("Bearer {token}");
        let mut all = vec![("authorization", bearer.as_str())];
        all.extend_from_slice(headers);
        self.client
            .send(method, &self.url(path), &all, Bytes::new())
            .await
    }

    /// GET `path` with `token` as bearer.
    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.client
            .send(
                Method::GET,
                &self.url(path),
                &[("authorization", &format!("Bearer {token}"))],
                Bytes::new(),
            )
            .await
    }
}

fn policy_sources(options: &Options) -> Vec<Source> {
    let mut policies = vec![Source {
        path: PathBuf::from("policy.yaml"),
        text: options.policy.clone(),
    }];
    for (name, text) in &options.more_policies {
        policies.push(Source {
            path: PathBuf::from(name),
            text: text.clone(),
        });
    }
    policies
}

fn server_source(issuer: &DevIssuer, echo: SocketAddr, proxy: SocketAddr, o: &Options) -> Source {
    let keys = if o.discovery {
        format!("discovery_url: {}", issuer.discovery_url())
    } else {
        format!("jwks_url: {}", issuer.jwks_url())
    };
    let text = format!(
        r#"
listen: {{ proxy: "{proxy}", admin: "127.0.0.1:0", auth: "127.0.0.1:0" }}
policies: [policy.yaml]
{signing}
{server_extra}
issuers:
  test:
    issuer: {iss}
    {keys}
    algorithms: [RS256, PS256, ES256, EdDSA]
    audiences: [{AUDIENCE}, other-api]
    leeway: 5s
    unknown_kid_cooldown: {cooldown}
{extra}
{issuers_extra}
upstreams:
  echo: {{ url: "http://{echo}", timeout: 5s }}
  closed: {{ url: "http://{closed}" }}
  slow: {{ url: "http://{echo}", timeout: 300ms }}
  single: {{ url: "http://{echo}", max_concurrency: 1 }}
  builds-api: {{ url: "http://{echo}", audience: "https://builds.example.com" }}
  projects-api: {{ url: "http://{echo}", audience: "https://projects.example.com" }}
  shipments-api: {{ url: "http://{echo}", audience: "https://shipments.example.com" }}
{upstreams_extra}
{limits}
"#,
        signing = o.signing.clone().unwrap_or_else(|| format!(
            "signing: {{ issuer: \"http://{proxy}\", keys: [{{ kid: sg-1, generate: true }}] }}"
        )),
        server_extra = o.server_extra,
        iss = issuer.url,
        cooldown = o.cooldown,
        extra = o.issuer_extra,
        closed = closed_port(),
        limits = o.limits,
        upstreams_extra = o.upstreams_extra,
        issuers_extra = o.issuers_extra,
    );
    Source {
        path: PathBuf::from("scopegate.yaml"),
        text,
    }
}

/// Options for a gateway running the repository's scenario policies with the file backend.
pub fn scenario(policies: &[&str]) -> Options {
    let more = policies
        .iter()
        .map(|p| {
            (
                format!("policies/{p}"),
                std::fs::read_to_string(repo().join("policies").join(p)).unwrap(),
            )
        })
        .collect();
    Options {
        more_policies: more,
        server_extra: format!(
            "permissions: {{ files: [policies/data/builds.yaml, policies/data/organizations.yaml, policies/data/countries.yaml] }}\n\
             exchange: {{ clients: {{ builds-api: {{ secret_file: \"{}\" }} }}, max_act_depth: 1 }}",
            client_secret_file().display()
        ),
        ..Options::default()
    }
}

/// The secret of the `builds-api` exchange client in scenario gateways.
pub const CLIENT_SECRET: &str = "builds-api-secret-for-tests";

/// A file holding [`CLIENT_SECRET`].
pub fn client_secret_file() -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "scopegate-test-client-secret-{}",
        std::process::id()
    ));
    if !path.exists() {
        std::fs::write(&path, CLIENT_SECRET).unwrap();
    }
    path
}

/// An address nothing listens on.
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The claims of a compact JWS, unverified (tests read what a token says; its signature is
/// checked elsewhere).
pub fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// What came back.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The claims of the token the echo upstream received in `Authorization` (the minted one).
    pub fn minted_claims(&self) -> Value {
        let authorization = self.json()["headers"]["authorization"].clone();
        let token = authorization
            .as_str()
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or_else(|| panic!("no bearer token reached the upstream: {authorization}"));
        jwt_claims(token)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect_status(&self, status: StatusCode) -> &Self {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }

    /// The problem body's `code`.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }
}

pub type TestBody = BoxBody<Bytes, Infallible>;

/// A plain HTTP/1.1 client.
#[derive(Clone)]
pub struct TestClient {
    client: Client<HttpConnector, TestBody>,
}

impl TestClient {
    pub fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Answer {
        self.send_body(method, url, headers, Full::new(body).boxed())
            .await
    }

    /// GET `url` with `headers`.
    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(Method::GET, url, headers, Bytes::new()).await
    }

    pub async fn send_body(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: TestBody,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = self
            .client
            .request(request.body(body).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

/// The Prometheus text of the admin listener at `admin`.
pub async fn metrics(admin: SocketAddr) -> String {
    String::from_utf8_lossy(
        &TestClient::new()
            .get(&format!("http://{admin}/metrics"), &[])
            .await
            .body,
    )
    .into_owned()
}

/// Sends `request` as raw bytes (for targets an HTTP library would refuse to build) and returns
/// the status code of the answer.
pub async fn raw_status(addr: SocketAddr, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// Runs the built `scopegate` binary with `args`; returns (success, stdout, stderr).
pub fn scopegate(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
