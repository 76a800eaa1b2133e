//! Forward-auth mode: real nginx (`auth_request`) and Caddy (`forward_auth`, Traefik's header
//! convention) in front of the echo upstream with scopegate as the auth service, and the Envoy
//! `ext_authz` convention over plain HTTP.

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::util::ingress::{caddy, nginx, nginx_with};
use crate::util::{Harness, Options, TestClient};

/// A gateway whose auth listener speaks `convention`.
async fn pinned(convention: &str) -> Harness {
    Harness::with(Options {
        server_extra: format!("forward_auth: {{ convention: {convention} }}"),
        ..Options::default()
    })
    .await
}

/// Through a real ingress at `addr`: allowed (the upstream gets a minted, verifiable token),
/// no token (401), insufficient scope (403).
async fn drive(h: &Harness, addr: std::net::SocketAddr) {
    let client = TestClient::new();
    let url = |p: &str| format!("http://{addr}{p}");
    let token = h.token("read:builds");
    let a = client
        .get(
            &url("/orgs/acme/builds?page=2"),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
    a.expect_status(StatusCode::OK);
    let echo = a.json();
    assert_eq!(echo["path"], "/orgs/acme/builds");
    assert_eq!(echo["token_verified"], true, "{}", echo["token_error"]);
    assert_eq!(echo["token_claims"]["scope"], "read:builds");
    assert_eq!(echo["token_claims"]["sub"], "alice");
    assert_eq!(echo["headers"]["x-scopegate-subject"], "alice");
    assert_ne!(
        echo["headers"]["authorization"],
        format!("Bearer {token}").as_str(),
        "the ingress forwarded the minted token"
    );

    let a = client.get(&url("/orgs/acme/builds"), &[]).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = client
        .send(
            Method::POST,
            &url("/orgs/acme/builds"),
            &[("authorization", &format!("Bearer {token}"))],
            Bytes::new(),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // Path safety applies to the URI the ingress reports.
    let a = client
        .get(
            &url("/orgs/acme%2Fx/builds"),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
    assert!(
        a.status == StatusCode::BAD_REQUEST || a.status == StatusCode::INTERNAL_SERVER_ERROR,
        "never 200: {}",
        a.status
    );
    assert_ne!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn nginx_auth_request() {
    let h = Harness::start().await;
    let proxy = nginx(h.gateway.auth_addr.unwrap(), h.echo).await;
    drive(&h, proxy.addr).await;
}

#[tokio::test]
async fn caddy_forward_auth_with_the_traefik_convention() {
    let h = pinned("caddy").await;
    let proxy = caddy(h.gateway.auth_addr.unwrap(), h.echo).await;
    drive(&h, proxy.addr).await;
}

#[tokio::test]
async fn envoy_ext_authz_convention_over_http() {
    let h = pinned("envoy").await;
    let token = h.token("read:builds");
    let bearer = format!("Bearer {token}");
    let a = h
        .client
        .get(
            &h.auth_url("/envoy/orgs/acme/builds"),
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let minted = a
        .header("authorization")
        .trim_start_matches("Bearer ")
        .to_string();
    assert_eq!(
        jsonwebtoken::decode_header(&minted).unwrap().typ.as_deref(),
        Some("at+jwt")
    );
    assert_eq!(a.header("x-scopegate-subject"), "alice");
    assert_eq!(a.header("x-scopegate-scope"), "read:builds");
    assert_eq!(a.header("x-scopegate-route"), "list-builds");

    let a = h
        .client
        .send(
            Method::POST,
            &h.auth_url("/envoy/orgs/acme/builds"),
            &[("authorization", &bearer)],
            Bytes::new(),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.header("www-authenticate").contains("insufficient_scope"));
    assert_eq!(a.header("authorization"), "", "no token on a denial");
    let a = h
        .client
        .get(&h.auth_url("/envoy/orgs/acme/builds"), &[])
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // Outside the prefix there is nothing to decide.
    let a = h
        .client
        .get(
            &h.auth_url("/orgs/acme/builds"),
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    // Dot segments hidden in the original path are refused as in proxy mode.
    let a = h
        .client
        .get(
            &h.auth_url("/envoy/public/%2e%2e/orgs/acme/builds"),
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_pinned_convention_reads_only_its_own_headers() {
    let h = Harness::start().await;
    let bearer = format!("Bearer {}", h.token("read:builds"));
    let nginx = [
        ("authorization", bearer.as_str()),
        ("x-original-method", "GET"),
        ("x-original-uri", "/orgs/acme/builds"),
        ("x-original-host", "api.example.com"),
    ];
    h.ask(&nginx).await.expect_status(StatusCode::OK);
    let a = h
        .ask(&[
            ("authorization", &bearer),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/orgs/acme/builds"),
            ("x-forwarded-host", "api.example.com"),
        ])
        .await;
    assert_eq!(
        a.status,
        StatusCode::BAD_REQUEST,
        "nginx is the default pin"
    );
    assert_eq!(a.code(), "forged_original_request");
    // The same header twice is ambiguous: never a 200.
    let mut twice = nginx.to_vec();
    twice.push(("x-original-uri", "/public"));
    assert_eq!(h.ask(&twice).await.status, StatusCode::BAD_REQUEST);
    // Regression: a missing method was read as GET.
    assert_eq!(
        h.ask(&[nginx[0], nginx[2], nginx[3]]).await.status,
        StatusCode::BAD_REQUEST
    );

    let h = pinned("traefik").await;
    let a = h
        .ask(&[
            ("authorization", &bearer),
            ("x-forwarded-method", "DELETE"),
            ("x-forwarded-uri", "/orgs/acme/builds"),
            ("x-forwarded-host", "api.example.com"),
        ])
        .await;
    assert_eq!(
        a.status,
        StatusCode::NOT_FOUND,
        "the reported method counts, not the check request's"
    );
}

/// What a client adds to its own request, of every header family an ingress could read, to be
/// judged as `GET /orgs/acme/builds` (allowed for its token) while it really sends
/// `POST /orgs/acme/builds` (which needs `create:builds`).
const FORGED: [(&str, &str); 7] = [
    ("x-original-url", "http://api.example.com/orgs/acme/builds"),
    ("x-original-uri", "/orgs/acme/builds"),
    ("x-original-method", "GET"),
    ("x-original-host", "other.example.com"),
    ("x-forwarded-uri", "/orgs/acme/builds"),
    ("x-forwarded-method", "GET"),
    ("x-forwarded-host", "other.example.com"),
];

/// Sends `POST /orgs/acme/builds` through the ingress at `addr` with each forged header alone
/// and all of them at once: never allowed, and never judged as the GET. (nginx answers its
/// `auth_request` with 500 for any auth status other than 2xx, 401 and 403, so scopegate's 400
/// arrives as 500 there.)
async fn forged_headers_get_no_200(h: &Harness, addr: std::net::SocketAddr) {
    let client = TestClient::new();
    let bearer = format!("Bearer {}", h.token("read:builds"));
    let mut attempts: Vec<Vec<(&str, &str)>> = FORGED.iter().map(|f| vec![*f]).collect();
    attempts.push(FORGED.to_vec());
    for forged in attempts {
        let mut headers = vec![("authorization", bearer.as_str())];
        headers.extend(forged.iter().copied());
        let a = client
            .send(
                Method::POST,
                &format!("http://{addr}/orgs/acme/builds"),
                &headers,
                Bytes::new(),
            )
            .await;
        assert!(
            [
                StatusCode::FORBIDDEN,
                StatusCode::BAD_REQUEST,
                StatusCode::INTERNAL_SERVER_ERROR
            ]
            .contains(&a.status),
            "{forged:?}: {} {}",
            a.status,
            a.text()
        );
    }
}

/// Regression (critical): nginx `auth_request` passes every client header to the subrequest,
/// and `X-Original-URL` was read before `X-Original-URI`, so a client's `X-Original-URL:
/// /public` made scopegate judge `/public` while nginx forwarded `DELETE /orgs/acme/builds`.
#[tokio::test]
async fn through_nginx_a_client_cannot_pick_the_judged_request() {
    let h = Harness::start().await;
    let proxy = nginx(h.gateway.auth_addr.unwrap(), h.echo).await;
    forged_headers_get_no_200(&h, proxy.addr).await;
    // Judged as the POST it is (403: the token lacks create:builds), not as the forged GET.
    let bearer = format!("Bearer {}", h.token("read:builds"));
    let a = TestClient::new()
        .send(
            Method::POST,
            &format!("http://{}/orgs/acme/builds", proxy.addr),
            &[
                ("authorization", &bearer),
                ("x-original-url", "http://api.example.com/orgs/acme/builds"),
                ("x-original-method", "GET"),
            ],
            Bytes::new(),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text());
    // An older snippet that neither clears X-Original-URL nor sets X-Original-Host: the forged
    // header is refused instead of believed.
    let legacy = nginx_with(
        h.gateway.auth_addr.unwrap(),
        h.echo,
        "proxy_set_header X-Original-URI $request_uri;\n      proxy_set_header X-Original-Method $request_method;",
    )
    .await;
    let a = TestClient::new()
        .send(
            Method::DELETE,
            &format!("http://{}/orgs/acme/builds", legacy.addr),
            &[("x-original-url", "http://api.example.com/public")],
            Bytes::new(),
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "scopegate's 400, as nginx renders it"
    );
    forged_headers_get_no_200(&h, legacy.addr).await;
}

/// Regression: Traefik and Caddy copy client headers into the check request, so a client could
/// add `X-Original-URI: /public` to a request for a protected path and be judged on `/public`.
#[tokio::test]
async fn through_caddy_a_client_cannot_pick_the_judged_request() {
    let h = pinned("caddy").await;
    let a = h
        .ask(&[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/orgs/acme/builds"),
            ("x-forwarded-host", "api.example.com"),
            ("x-original-uri", "/public"),
        ])
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let proxy = caddy(h.gateway.auth_addr.unwrap(), h.echo).await;
    forged_headers_get_no_200(&h, proxy.addr).await;
    let a = TestClient::new()
        .get(
            &format!("http://{}/orgs/acme/builds", proxy.addr),
            &[("x-original-uri", "/public")],
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn original_request_headers_count_only_from_trusted_peers() {
    let h = Harness::with(Options {
        server_extra: "forward_auth: { trusted_peers: [10.0.0.0/8] }".into(),
        ..Options::default()
    })
    .await;
    let bearer = format!("Bearer {}", h.token("read:builds"));
    let a = h
        .ask(&[
            ("authorization", &bearer),
            ("x-original-method", "GET"),
            ("x-original-uri", "/orgs/acme/builds"),
            ("x-original-host", "api.example.com"),
        ])
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.code(), "untrusted_peer");
}
