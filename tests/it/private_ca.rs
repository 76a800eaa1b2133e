//! TLS towards what scopegate calls, on a private CA made in the test: an https upstream
//! (refused until its CA is trusted), mutual TLS and a server name, an https JWKS and
//! permissions API, and a rotated CA file picked up without a restart.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;
use jsonwebtoken::Algorithm;
use scopegate::dev_issuer::DevIssuer;
use serde_json::json;
use tokio::sync::watch;

use crate::util::perms::PermsApi;
use crate::util::pki::{Ca, TlsFront, folder, replace, server_config};
use crate::util::{Harness, Options, TestClient, now, scenario};

/// A plain echo upstream (it does not verify the minted token).
async fn echo(stopped: watch::Receiver<bool>) -> SocketAddr {
    scopegate::echo::start(SocketAddr::from(([127, 0, 0, 1], 0)), stopped)
        .await
        .unwrap()
}

/// Routes `/<name>` to upstream `<name>`, for a valid token with no scope.
fn routes(names: &[&str]) -> String {
    let mut policy = String::from("routes:\n");
    for n in names {
        policy.push_str(&format!(
            "  - {{ name: {n}, match: {{ path: /{n} }}, upstream: {n}, require: {{}} }}\n"
        ));
    }
    policy
}

#[tokio::test]
async fn an_https_upstream_on_a_private_ca_is_refused_until_its_ca_is_trusted() {
    let (_stop, stopped) = watch::channel(false);
    let (ca, stranger) = (Ca::new(), Ca::new());
    let dir = folder("upstream");
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("stranger.pem"), stranger.pem()).unwrap();
    let front = TlsFront::start(
        echo(stopped).await,
        server_config(&ca.issue(&["127.0.0.1"]), None),
    )
    .await;
    let url = format!("https://{}", front.addr);
    let h = Harness::with(Options {
        policy: routes(&["public-roots", "trusted", "other-ca"]),
        base: dir.clone(),
        upstreams_extra: format!(
            "  public-roots: {{ url: \"{url}\" }}\n\
             \x20 trusted: {{ url: \"{url}\", tls: {{ ca_file: ca.pem }} }}\n\
             \x20 other-ca: {{ url: \"{url}\", tls: {{ ca_file: stranger.pem, ca_only: true }} }}\n"
        ),
        ..Options::default()
    })
    .await;
    let token = h.token("");

    let refused = h.get("/public-roots", &token).await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_GATEWAY,
        "the public roots do not know this CA"
    );
    assert_eq!(refused.code(), "upstream_unavailable");
    assert_eq!(
        h.get("/other-ca", &token).await.status,
        StatusCode::BAD_GATEWAY
    );

    let through = h.get("/trusted", &token).await;
    through.expect_status(StatusCode::OK);
    let echoed = through.json();
    assert_eq!(echoed["path"], "/trusted");
    assert!(
        echoed["headers"]["authorization"]
            .as_str()
            .is_some_and(|a| a.starts_with("Bearer ") && !a.contains(&token)),
        "the minted token went over TLS"
    );
}

#[tokio::test]
async fn mutual_tls_and_a_server_name_other_than_the_urls_host() {
    let (_stop, stopped) = watch::channel(false);
    let ca = Ca::new();
    let dir = folder("mtls");
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    ca.issue(&["scopegate"]).write(&dir, "client");
    // The upstream's certificate names `api.internal`, not the address scopegate dials, and it
    // requires a client certificate from the same CA.
    let front = TlsFront::start(
        echo(stopped).await,
        server_config(&ca.issue(&["api.internal"]), Some(&ca)),
    )
    .await;
    let url = format!("https://{}", front.addr);
    let client = "client_cert: client.pem, client_key: client-key.pem";
    let h = Harness::with(Options {
        policy: routes(&["no-client-cert", "wrong-name", "mtls"]),
        base: dir.clone(),
        upstreams_extra: format!(
            "  no-client-cert: {{ url: \"{url}\", tls: {{ ca_file: ca.pem, server_name: api.internal }} }}\n\
             \x20 wrong-name: {{ url: \"{url}\", tls: {{ ca_file: ca.pem, {client} }} }}\n\
             \x20 mtls: {{ url: \"{url}\", tls: {{ ca_file: ca.pem, {client}, server_name: api.internal, min_version: \"1.3\" }} }}\n"
        ),
        ..Options::default()
    })
    .await;
    let token = h.token("");
    assert_eq!(
        h.get("/no-client-cert", &token).await.status,
        StatusCode::BAD_GATEWAY,
        "the upstream requires a client certificate"
    );
    assert_eq!(
        h.get("/wrong-name", &token).await.status,
        StatusCode::BAD_GATEWAY,
        "the certificate does not name 127.0.0.1"
    );
    h.get("/mtls", &token).await.expect_status(StatusCode::OK);
}

/// An issuer (its own ES256 key) and the permissions API, both behind TLS on `ca`.
struct PrivateServices {
    idp: DevIssuer,
    idp_front: TlsFront,
    api: PermsApi,
    api_front: TlsFront,
    _stop: watch::Sender<bool>,
}

impl PrivateServices {
    async fn start(ca: &Ca) -> Self {
        let (stop, stopped) = watch::channel(false);
        let idp = DevIssuer::start(stopped).await.unwrap();
        idp.add_key("private", Algorithm::ES256).unwrap();
        let api = PermsApi::start().await;
        let config = server_config(&ca.issue(&["127.0.0.1"]), None);
        let behind = |url: &str| {
            url.trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let idp_front = TlsFront::start(behind(&idp.url), config.clone()).await;
        let api_front = TlsFront::start(behind(&api.url), config).await;
        Self {
            idp,
            idp_front,
            api,
            api_front,
            _stop: stop,
        }
    }

    /// The server file's permissions block and the private issuer's entry; with `trusted`,
    /// both trust the CA in `dir`.
    fn options(&self, trusted: Option<&std::path::Path>) -> Options {
        let tls = if trusted.is_some() {
            "tls: { ca_file: ca.pem }"
        } else {
            ""
        };
        let https = |url: &str, front: &TlsFront| {
            let path = url.trim_start_matches("http://").split_once('/').unwrap().1;
            format!("https://{}/{path}", front.addr)
        };
        let mut o = scenario(&["organizations.yaml"]);
        o.server_extra = format!(
            "permissions: {{ url: \"{}\", timeout: 2s, {tls} }}",
            https(&self.api.url, &self.api_front)
        );
        o.issuers_extra = format!(
            "  private:\n    issuer: {}\n    jwks_url: {}\n    audiences: [api]\n    algorithms: [ES256]\n    fetch_timeout: 2s\n    {tls}\n",
            self.idp.url,
            https(&self.idp.jwks_url(), &self.idp_front),
        );
        if let Some(dir) = trusted {
            o.base = dir.to_path_buf();
        }
        o
    }

    fn token(&self) -> String {
        let n = now();
        let claims = json!({"iss": self.idp.url, "sub": "alice", "aud": "api", "scope": "read:projects", "azp": "cli", "iat": n, "exp": n + 300});
        self.idp.sign("private", &claims).unwrap()
    }
}

#[tokio::test]
async fn an_https_jwks_and_permissions_api_on_a_private_ca() {
    let ca = Ca::new();
    let dir = folder("services");
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let services = PrivateServices::start(&ca).await;

    // Without the CA: the issuer's keys cannot be fetched, the permissions API cannot be asked.
    let untrusting = Harness::with(services.options(None)).await;
    let a = untrusting
        .get("/orgs/acme/projects", &services.token())
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text());
    assert_eq!(a.code(), "keys_unavailable");
    let a = untrusting
        .get("/orgs/acme/projects", &untrusting.token("read:projects"))
        .await;
    assert_eq!(a.code(), "permissions_unavailable");
    assert_eq!(services.api.calls(), 0);

    let h = Harness::with(services.options(Some(&dir))).await;
    let a = h.get("/orgs/acme/projects", &services.token()).await;
    a.expect_status(StatusCode::OK);
    assert_eq!(a.json()["token_claims"]["scope"], "read:projects");
    assert_eq!(services.api.calls(), 1, "asked over TLS");
}

#[tokio::test]
async fn a_rotated_ca_file_is_picked_up_without_a_restart() {
    let (_stop, stopped) = watch::channel(false);
    let issuer = DevIssuer::start(stopped.clone()).await.unwrap();
    issuer.add_key("ec", Algorithm::ES256).unwrap();
    let (old, new) = (Ca::new(), Ca::new());
    let front = TlsFront::start(
        echo(stopped).await,
        server_config(&old.issue(&["127.0.0.1"]), None),
    )
    .await;
    let dir = folder("rotation");
    std::fs::write(dir.join("ca.pem"), old.pem()).unwrap();
    std::fs::write(
        dir.join("policy.yaml"),
        "routes:\n  - { name: r, match: { path: /r }, upstream: private, public: true }\n",
    )
    .unwrap();
    let server = format!(
        "listen: {{ proxy: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\npolicies: [policy.yaml]\n\
         signing: {{ issuer: \"http://127.0.0.1:1\", keys: [{{ kid: k, generate: true }}] }}\n\
         issuers:\n  t: {{ issuer: \"{}\", jwks_url: \"{}\", audiences: [api], algorithms: [ES256] }}\n\
         upstreams:\n  private: {{ url: \"https://{}\", tls: {{ ca_file: ca.pem, ca_only: true }} }}\n",
        issuer.url,
        issuer.jwks_url(),
        front.addr
    );
    std::fs::write(dir.join("scopegate.yaml"), server).unwrap();
    let config = scopegate::config::load(&dir.join("scopegate.yaml")).unwrap();
    let watched = config.watched.clone();
    assert!(watched.contains(&dir.join("ca.pem")), "{watched:?}");
    let running = scopegate::serve::start(config).await.unwrap();
    running.reload_on_change(
        dir.join("scopegate.yaml"),
        watched,
        Duration::from_millis(40),
    );
    let client = TestClient::new();
    let url = format!("http://{}/r", running.proxy_addr);
    client.get(&url, &[]).await.expect_status(StatusCode::OK);

    // cert-manager renews the upstream's certificate under a new CA: until the mounted CA file
    // follows, scopegate refuses the upstream.
    front.rotate(server_config(&new.issue(&["127.0.0.1"]), None));
    assert_eq!(client.get(&url, &[]).await.status, StatusCode::BAD_GATEWAY);
    replace(&dir.join("ca.pem"), &new.pem());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = client.get(&url, &[]).await.status;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} after the CA file changed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.shutdown().await;
}

#[tokio::test]
async fn an_insecure_http_target_shows_in_the_metrics() {
    let h = Harness::with(Options {
        issuers_extra: "  in-cluster:\n    issuer: https://keycloak.example/\n    jwks_url: http://keycloak.auth.svc:8080/certs\n    audiences: [api]\n    fetch_timeout: 200ms\n    insecure_http: true\n".into(),
        ..Options::default()
    })
    .await;
    let metrics = h.admin_get("/metrics").await.text();
    assert!(
        metrics.contains(r#"scopegate_insecure_http_targets{target="issuer/in-cluster"} 1"#),
        "{metrics}"
    );
    // The other issuer's tokens still pass.
    h.get("/files/a", &h.token(""))
        .await
        .expect_status(StatusCode::OK);
}
