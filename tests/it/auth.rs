//! Authentication: every way a token can be wrong gets a precise 401, and the JWKS cache
//! behaves (unknown kid refresh, cool-down, endpoint down after start).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Method, StatusCode};
use serde_json::json;

use crate::util::{Harness, Options, now};

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Asserts a 401 with an `invalid_token` challenge whose description mentions `words`.
fn assert_invalid_token(a: &crate::util::Answer, words: &str) {
    a.expect_status(StatusCode::UNAUTHORIZED);
    let challenge = a.header("www-authenticate");
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert!(
        challenge.contains(words),
        "expected `{words}` in {challenge}"
    );
    assert_eq!(a.header("content-type"), "application/problem+json");
}

#[tokio::test]
async fn every_key_type_verifies_and_reaches_the_upstream() {
    let h = Harness::start().await;
    for kid in ["rsa", "ps", "ec", "ed"] {
        let token = h.sign(kid, &h.claims("read:builds"));
        let a = h.get("/orgs/acme/builds", &token).await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{kid}: {}",
            String::from_utf8_lossy(&a.body)
        );
        assert_eq!(a.json()["token_claims"]["sub"], "alice");
    }
}

#[tokio::test]
async fn no_token_and_non_bearer_get_a_bare_challenge() {
    let h = Harness::start().await;
    let a = h
        .client
        .send(
            Method::GET,
            &h.url("/orgs/acme/builds"),
            &[],
            Default::default(),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.header("www-authenticate"), r#"Bearer realm="scopegate""#);
    assert_eq!(a.code(), "missing_token");
    let a = h
        .client
        .send(
            Method::GET,
            &h.url("/orgs/acme/builds"),
            &[("authorization", "Basic YTpi")],
            Default::default(),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.code(), "not_bearer");
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let h = Harness::start().await;
    let mut c = h.claims("read:builds");
    c["exp"] = json!(now() - 60);
    assert_invalid_token(
        &h.get("/orgs/acme/builds", &h.sign("ec", &c)).await,
        "expired",
    );
    let mut c = h.claims("read:builds");
    c["nbf"] = json!(now() + 120);
    assert_invalid_token(
        &h.get("/orgs/acme/builds", &h.sign("ec", &c)).await,
        "not valid yet",
    );
    // Within the 5 s leeway a future `nbf` is fine.
    let mut c = h.claims("read:builds");
    c["nbf"] = json!(now() + 2);
    assert_eq!(
        h.get("/orgs/acme/builds", &h.sign("ec", &c)).await.status,
        StatusCode::OK
    );
    // An `exp` just past passes the leeway, but there is no lifetime left to give a minted
    // token (proxy mode never extends one), so it is refused as expired all the same.
    let mut c = h.claims("read:builds");
    c["exp"] = json!(now() - 1);
    let a = h.get("/orgs/acme/builds", &h.sign("ec", &c)).await;
    assert_invalid_token(&a, "no lifetime left");
    assert_eq!(a.code(), "token_expired");
}

#[tokio::test]
async fn wrong_issuer_and_wrong_audience_are_refused() {
    let h = Harness::start().await;
    let mut c = h.claims("read:builds");
    c["iss"] = json!("https://evil.example.com");
    assert_invalid_token(
        &h.get("/orgs/acme/builds", &h.sign("ec", &c)).await,
        "issuer is not trusted",
    );
    let mut c = h.claims("read:builds");
    c["aud"] = json!("another-api");
    assert_invalid_token(
        &h.get("/orgs/acme/builds", &h.sign("ec", &c)).await,
        "not for this audience",
    );
    // An array audience that contains ours passes.
    let mut c = h.claims("read:builds");
    c["aud"] = json!(["x", "api"]);
    assert_eq!(
        h.get("/orgs/acme/builds", &h.sign("ec", &c)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn claims_of_the_wrong_type_are_refused_not_ignored() {
    let h = Harness::start().await;
    for (claim, value) in [
        ("aud", json!(42)),
        ("iss", json!(7)),
        ("exp", json!("soon")),
        ("nbf", json!("later")),
        ("sub", json!(5)),
        ("scope", json!(["read:builds"])),
    ] {
        let mut c = h.claims("read:builds");
        c[claim] = value;
        let a = h.get("/orgs/acme/builds", &h.sign("ec", &c)).await;
        assert_invalid_token(&a, &format!("`{claim}`"));
    }
    let mut c = h.claims("read:builds");
    c.as_object_mut().unwrap().remove("aud");
    assert_invalid_token(
        &h.get("/orgs/acme/builds", &h.sign("ec", &c)).await,
        "`aud`",
    );
}

#[tokio::test]
async fn alg_none_and_hs256_with_the_public_key_are_refused() {
    let h = Harness::start().await;
    let claims = h.claims("read:builds");
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims)
    );
    assert_invalid_token(&h.get("/orgs/acme/builds", &none).await, "malformed");

    // The classic key-confusion attack: HMAC keyed with the issuer's public key.
    let jwk = h.issuer.public_jwk("rsa").unwrap();
    for secret in [jwk.to_string(), jwk["n"].as_str().unwrap().to_string()] {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("rsa".into());
        let forged = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        assert_invalid_token(
            &h.get("/orgs/acme/builds", &forged).await,
            "algorithm is not allowed",
        );
    }
}

#[tokio::test]
async fn a_signature_from_an_untrusted_key_is_refused() {
    let h = Harness::start().await;
    // Same kid as a trusted key, different private key: the signature cannot verify.
    let impostor =
        scopegate::keys::SigningKey::generate("ec", jsonwebtoken::Algorithm::ES256).unwrap();
    let forged = impostor.sign("JWT", &h.claims("read:builds")).unwrap();
    assert_invalid_token(
        &h.get("/orgs/acme/builds", &forged).await,
        "signature is invalid",
    );
    // An embedded `jwk` header is never used as the key.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("ec".into());
    header.jwk = Some(serde_json::from_value(impostor.public_jwk().clone()).unwrap());
    let signed = forged.split('.').skip(1).collect::<Vec<_>>();
    let with_jwk = format!(
        "{}.{}.{}",
        b64(&serde_json::to_value(&header).unwrap()),
        signed[0],
        signed[1]
    );
    assert_invalid_token(
        &h.get("/orgs/acme/builds", &with_jwk).await,
        "signature is invalid",
    );
}

#[tokio::test]
async fn crit_header_oversized_token_and_several_authorization_headers() {
    let h = Harness::start().await;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("ec".into());
    header.crit = Some(vec!["exp".into()]);
    let token = h.token("read:builds");
    let rest: Vec<&str> = token.split('.').skip(1).collect();
    let crit = format!(
        "{}.{}.{}",
        b64(&serde_json::to_value(&header).unwrap()),
        rest[0],
        rest[1]
    );
    assert_invalid_token(&h.get("/orgs/acme/builds", &crit).await, "crit");

    let mut c = h.claims("read:builds");
    c["padding"] = json!("x".repeat(9000));
    assert_invalid_token(
        &h.get("/orgs/acme/builds", &h.sign("ec", &c)).await,
        "larger than 8192 bytes",
    );

    let bearer = format!("Bearer {}", h.token("read:builds"));
    let a = h
        .client
        .send(
            Method::GET,
            &h.url("/orgs/acme/builds"),
            &[("authorization", &bearer), ("authorization", &bearer)],
            Default::default(),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.header("www-authenticate").contains("invalid_request"));
}

#[tokio::test]
async fn insufficient_scope_names_the_required_scopes() {
    let h = Harness::start().await;
    let token = h.token("read:builds");
    let a = h
        .client
        .send(
            Method::POST,
            &h.url("/orgs/acme/builds"),
            &[("authorization", &format!("Bearer {token}"))],
            "{}".into(),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let challenge = a.header("www-authenticate");
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    assert!(
        challenge.contains(r#"scope="create:builds""#),
        "{challenge}"
    );
    assert_eq!(a.json()["required_scope"], "create:builds");
    // The body never echoes the token.
    assert!(!String::from_utf8_lossy(&a.body).contains(&token));
    // any-of: either scope opens `either`; neither is 403.
    assert_eq!(
        h.get("/orgs/acme/builds/7", &h.token("admin:builds"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        h.get("/orgs/acme/builds/7", &h.token("read:builds"))
            .await
            .status,
        StatusCode::OK
    );
    let a = h
        .get("/orgs/acme/builds/7", &h.token("create:builds"))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(
        a.header("www-authenticate")
            .contains(r#"scope="read:builds admin:builds""#)
    );
}

#[tokio::test]
async fn unknown_kid_refreshes_once_then_the_new_key_works() {
    let h = Harness::start().await;
    let start_fetches = h.issuer.jwks_fetches();
    assert_eq!(start_fetches, 1, "keys are fetched at start");
    h.issuer
        .add_unpublished_key("new", jsonwebtoken::Algorithm::ES256)
        .unwrap();
    h.issuer.publish("new");
    let token = h.sign("new", &h.claims("read:builds"));
    assert_eq!(
        h.get("/orgs/acme/builds", &token).await.status,
        StatusCode::OK
    );
    assert_eq!(
        h.issuer.jwks_fetches(),
        2,
        "one refresh for the unknown kid"
    );
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_cooldown() {
    let h = Harness::with(Options {
        cooldown: "1s",
        ..Options::default()
    })
    .await;
    h.issuer
        .add_unpublished_key("ghost", jsonwebtoken::Algorithm::ES256)
        .unwrap();
    let before = h.issuer.jwks_fetches();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let mut c = h.claims("read:builds");
            c["jti"] = json!(format!("t{i}"));
            let token = h.sign("ghost", &c);
            let (client, url) = (h.client.clone(), h.url("/orgs/acme/builds"));
            tokio::spawn(async move {
                client
                    .send(
                        Method::GET,
                        &url,
                        &[("authorization", &format!("Bearer {token}"))],
                        Default::default(),
                    )
                    .await
                    .status
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        h.issuer.jwks_fetches() - before,
        1,
        "200 concurrent unknown kids share one fetch"
    );
    // Still within the cool-down: no fetch at all.
    assert_eq!(
        h.get(
            "/orgs/acme/builds",
            &h.sign("ghost", &h.claims("read:builds"))
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(h.issuer.jwks_fetches() - before, 1);
    // After the cool-down, one more fetch is allowed, and finds the key once published.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.issuer.publish("ghost");
    assert_eq!(
        h.get(
            "/orgs/acme/builds",
            &h.sign("ghost", &h.claims("read:builds"))
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(h.issuer.jwks_fetches() - before, 2);
}

#[tokio::test]
async fn jwks_down_after_start_keeps_serving_with_cached_keys() {
    let h = Harness::with(Options {
        cooldown: "100ms",
        ..Options::default()
    })
    .await;
    h.issuer.set_down(true);
    // Force refresh attempts with unknown kids; they fail, the last good keys stay.
    h.issuer
        .add_unpublished_key("x", jsonwebtoken::Algorithm::ES256)
        .unwrap();
    assert_eq!(
        h.get("/orgs/acme/builds", &h.sign("x", &h.claims("read:builds")))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    for kid in ["rsa", "ec", "ed"] {
        let mut c = h.claims("read:builds");
        c["jti"] = json!(kid);
        assert_eq!(
            h.get("/orgs/acme/builds", &h.sign(kid, &c)).await.status,
            StatusCode::OK,
            "{kid}"
        );
    }
    let metrics = h
        .client
        .send(
            Method::GET,
            &h.admin_url("/metrics"),
            &[],
            Default::default(),
        )
        .await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"scopegate_jwks_refreshes_total{issuer="test",result="error"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn discovery_url_finds_the_jwks() {
    let h = Harness::with(Options {
        discovery: true,
        ..Options::default()
    })
    .await;
    assert_eq!(
        h.get("/orgs/acme/builds", &h.token("read:builds"))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn scopes_from_an_array_claim_and_a_required_typ() {
    let extra = "    scopes: { claim: permissions }\n    typ: JWT".to_string();
    let h = Harness::with(Options {
        issuer_extra: extra,
        ..Options::default()
    })
    .await;
    let mut c = h.claims("");
    c.as_object_mut().unwrap().remove("scope");
    c["permissions"] = json!(["read:builds"]);
    assert_eq!(
        h.get("/orgs/acme/builds", &h.sign("ec", &c)).await.status,
        StatusCode::OK
    );
    c["permissions"] = json!("read:builds");
    assert_invalid_token(
        &h.get("/orgs/acme/builds", &h.sign("ec", &c)).await,
        "`scope`",
    );
}

#[tokio::test]
async fn the_verified_token_cache_is_bounded() {
    let h = Harness::with(Options {
        limits: "limits: { token_cache_entries: 5 }".into(),
        ..Options::default()
    })
    .await;
    for i in 0..40 {
        let mut c = h.claims("read:builds");
        c["jti"] = json!(format!("n{i}"));
        assert_eq!(
            h.get("/orgs/acme/builds", &h.sign("ec", &c)).await.status,
            StatusCode::OK
        );
    }
    let cached = h.gateway.cache_sizes().await.verified_tokens;
    assert!(cached <= 5, "cache holds {cached} entries, bound is 5");
    assert!(cached >= 1);
    // The gauge an operator sizes the pod by says the same.
    let metrics = crate::util::metrics(h.gateway.admin_addr).await;
    assert!(
        metrics.contains(&format!(
            r#"scopegate_cache_entries{{cache="verified_tokens"}} {cached}"#
        )),
        "{metrics}"
    );
}

/// Regression: the verified-token cache kept accepting a token whose key had left the issuer's
/// JWKS (a retired or compromised key) until the token expired.
#[tokio::test]
async fn a_token_whose_key_left_the_jwks_is_refused_at_the_next_refresh() {
    let h = crate::util::Harness::with(crate::util::Options {
        issuer_extra: "    refresh_interval: 1s".into(),
        ..Default::default()
    })
    .await;
    let token = h.token("read:builds");
    h.get("/orgs/acme/builds", &token)
        .await
        .expect_status(http::StatusCode::OK);
    h.issuer.unpublish("ec");
    let mut status = http::StatusCode::OK;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        status = h.get("/orgs/acme/builds", &token).await.status;
        if status != http::StatusCode::OK {
            break;
        }
    }
    assert_eq!(status, http::StatusCode::UNAUTHORIZED);
}
