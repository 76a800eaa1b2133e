//! Envoy's `ext_authz` over gRPC on the forward-auth listener, driven by the gRPC client
//! generated from Envoy's own protos (envoy-types, tonic) with the `CheckRequest`s Envoy sends:
//! the same pipeline, normalization and trust rules as the HTTP conventions.

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::{
    CheckRequest, CheckResponse, HeaderValueOption, HttpResponse,
};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::Value;

use crate::util::{Harness, Options, jwt_claims};

/// The check Envoy sends for `method target` with the client's `headers` (Envoy includes the
/// pseudo-headers in the map).
fn check(method: &str, target: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let mut map: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    map.insert(":method".into(), method.into());
    map.insert(":path".into(), target.into());
    map.insert(":authority".into(), "api.example.com".into());
    let http = HttpRequest {
        method: method.into(),
        path: target.into(),
        host: "api.example.com".into(),
        scheme: "https".into(),
        protocol: "HTTP/2".into(),
        headers: map,
        ..Default::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Sends `request` to the gateway's forward-auth listener over h2c, as Envoy's gRPC client does.
async fn send(h: &Harness, request: CheckRequest) -> CheckResponse {
    let url = format!("http://{}", h.gateway.auth_addr.unwrap());
    let mut client = AuthorizationClient::connect(url).await.unwrap();
    client.check(request).await.unwrap().into_inner()
}

/// The gRPC status code of the decision (0 is OK).
fn code(r: &CheckResponse) -> i32 {
    r.status.as_ref().unwrap().code
}

/// The headers an OK answer sets upstream, and the ones it removes.
fn upstream(r: &CheckResponse) -> (HashMap<String, String>, Vec<String>) {
    let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
        panic!("not an OK answer: {r:?}");
    };
    (pairs(&ok.headers), ok.headers_to_remove.clone())
}

fn pairs(headers: &[HeaderValueOption]) -> HashMap<String, String> {
    headers
        .iter()
        .map(|h| h.header.as_ref().unwrap())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect()
}

/// A denied answer's HTTP status, headers and problem body.
fn refused(r: &CheckResponse) -> (i32, HashMap<String, String>, Value) {
    let Some(HttpResponse::DeniedResponse(d)) = &r.http_response else {
        panic!("not a denied answer: {r:?}");
    };
    let body = serde_json::from_str(&d.body).unwrap();
    (d.status.as_ref().unwrap().code, pairs(&d.headers), body)
}

#[tokio::test]
async fn an_allowed_check_sets_the_minted_token_and_removes_what_the_client_must_not_set() {
    let h = Harness::start().await;
    let token = h.token("read:builds");
    let bearer = format!("Bearer {token}");
    let r = send(
        &h,
        check(
            "GET",
            "/orgs/acme/builds?page=2",
            &[
                ("authorization", &bearer),
                ("x-scopegate-organization", "forged"),
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
            ],
        ),
    )
    .await;
    assert_eq!(code(&r), 0, "{r:?}");
    let (set, removed) = upstream(&r);
    let minted = set["authorization"].strip_prefix("Bearer ").unwrap();
    assert_ne!(minted, token);
    let claims = jwt_claims(minted);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["scope"], "read:builds");
    assert_eq!(set["x-scopegate-subject"], "alice");
    assert_eq!(set["x-scopegate-route"], "list-builds");
    assert!(!set.contains_key("cache-control"));
    assert!(
        removed.contains(&"x-scopegate-organization".to_string()),
        "the client's own value never reaches the API: {removed:?}"
    );
    assert!(!removed.contains(&"authorization".to_string()));

    // A public route mints nothing, and the client's token does not pass through either.
    let r = send(&h, check("GET", "/public", &[("authorization", &bearer)])).await;
    assert_eq!(code(&r), 0);
    let (set, removed) = upstream(&r);
    assert!(!set.contains_key("authorization"));
    assert!(removed.contains(&"authorization".to_string()));
}

#[tokio::test]
async fn denials_carry_scopegates_status_headers_and_problem_body() {
    let h = Harness::start().await;
    // No token: UNAUTHENTICATED, 401 with the challenge.
    let r = send(&h, check("GET", "/orgs/acme/builds", &[])).await;
    assert_eq!(code(&r), tonic::Code::Unauthenticated as i32);
    let (status, headers, body) = refused(&r);
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"].starts_with("Bearer"));
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(body["code"], "missing_token");

    // Not enough scope: PERMISSION_DENIED, 403.
    let bearer = format!("Bearer {}", h.token("read:builds"));
    let r = send(
        &h,
        check("POST", "/orgs/acme/builds", &[("authorization", &bearer)]),
    )
    .await;
    assert_eq!(code(&r), tonic::Code::PermissionDenied as i32);
    let (status, headers, body) = refused(&r);
    assert_eq!(status, 403);
    assert!(headers["www-authenticate"].contains("insufficient_scope"));
    assert_eq!(body["code"], "insufficient_scope");

    // No route: 404.
    let r = send(&h, check("GET", "/nowhere", &[("authorization", &bearer)])).await;
    assert_eq!(refused(&r).0, 404);

    // The upstream of the route being down does not matter: ext_authz never forwards.
    let r = send(&h, check("GET", "/down", &[("authorization", &bearer)])).await;
    assert_eq!(code(&r), 0);
}

#[tokio::test]
async fn the_described_request_is_normalized_and_cannot_be_smuggled() {
    let h = Harness::start().await;
    let bearer = format!("Bearer {}", h.token("read:builds"));
    let auth = [("authorization", bearer.as_str())];
    for target in [
        "/orgs/acme/../globex/builds",
        "/orgs/acme%2Fx/builds",
        "/orgs/acme/builds#/../../admin",
        "orgs/acme/builds",
        "https://evil.example/orgs/acme/builds",
    ] {
        let r = send(&h, check("GET", target, &auth)).await;
        let (status, _, body) = refused(&r);
        assert_eq!(status, 400, "{target}: {body}");
        assert_eq!(code(&r), tonic::Code::InvalidArgument as i32);
    }
    // Headers another convention reads are the client's, here: refused.
    let forged = [
        ("authorization", bearer.as_str()),
        ("x-original-uri", "/orgs/acme/builds"),
    ];
    let r = send(&h, check("GET", "/public", &forged)).await;
    let (status, _, body) = refused(&r);
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("forged_original_request"))
    );
    // Two Authorization headers, merged by Envoy into one value, are not a token.
    let twice = format!("{bearer},{bearer}");
    let r = send(
        &h,
        check("GET", "/orgs/acme/builds", &[("authorization", &twice)]),
    )
    .await;
    assert_eq!(refused(&r).0, 401);
}

#[tokio::test]
async fn a_check_from_an_untrusted_peer_is_refused() {
    let h = Harness::with(Options {
        server_extra: "forward_auth: { trusted_peers: [10.0.0.0/8] }".into(),
        ..Options::default()
    })
    .await;
    let bearer = format!("Bearer {}", h.token("read:builds"));
    let r = send(
        &h,
        check("GET", "/orgs/acme/builds", &[("authorization", &bearer)]),
    )
    .await;
    assert_eq!(code(&r), tonic::Code::PermissionDenied as i32);
    let (status, _, body) = refused(&r);
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("untrusted_peer"))
    );
}

#[tokio::test]
async fn an_oversized_check_is_refused_by_the_grpc_layer() {
    let h = Harness::start().await;
    let big = "x".repeat(300 * 1024);
    let url = format!("http://{}", h.gateway.auth_addr.unwrap());
    let mut client = AuthorizationClient::connect(url).await.unwrap();
    let status = client
        .check(check("GET", "/public", &[("x-big", &big)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
}
