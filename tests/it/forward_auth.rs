//! Forward-auth mode: real nginx (`auth_request`) and Caddy (`forward_auth`, Traefik's header
//! convention) in front of the echo upstream with scopegate as the auth service, and the Envoy
//! `ext_authz` convention over plain HTTP.

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::util::ingress::{caddy, nginx};
use crate::util::{Harness, Options, TestClient};

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
    let h = Harness::start().await;
    let proxy = caddy(h.gateway.auth_addr.unwrap(), h.echo).await;
    drive(&h, proxy.addr).await;
}

#[tokio::test]
async fn envoy_ext_authz_convention_over_http() {
    let h = Harness::start().await;
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
async fn nginx_and_traefik_headers_are_read_directly() {
    let h = Harness::start().await;
    let bearer = format!("Bearer {}", h.token("read:builds"));
    let a = h
        .ask(&[
            ("authorization", &bearer),
            ("x-original-method", "GET"),
            ("x-original-uri", "/orgs/acme/builds"),
        ])
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = h
        .ask(&[
            ("authorization", &bearer),
            ("x-forwarded-method", "DELETE"),
            ("x-forwarded-uri", "/orgs/acme/builds"),
        ])
        .await;
    assert_eq!(
        a.status,
        StatusCode::NOT_FOUND,
        "the reported method counts, not the check request's"
    );
    // The same header twice is ambiguous: never a 200.
    let a = h
        .ask(&[
            ("authorization", &bearer),
            ("x-original-uri", "/orgs/acme/builds"),
            ("x-original-uri", "/public"),
        ])
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

/// Regression: Traefik and Caddy copy client headers into the check request, so a client could
/// add `X-Original-URI: /public` to a request for a protected path and be judged on `/public`.
#[tokio::test]
async fn a_client_cannot_describe_another_request_through_the_other_convention() {
    let h = Harness::start().await;
    let a = h
        .ask(&[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/orgs/acme/builds"),
            ("x-original-uri", "/public"),
        ])
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    // And end to end through Caddy: the injected header gets no 200.
    let proxy = caddy(h.gateway.auth_addr.unwrap(), h.echo).await;
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
            ("x-original-uri", "/orgs/acme/builds"),
        ])
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.code(), "untrusted_peer");
}
