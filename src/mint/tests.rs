use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value, json};

use super::*;
use crate::keys::SigningKey;
use crate::principal::Principal;

/// A minter of 100 cached tokens on the system clock.
fn minter(signing: Arc<Signing>) -> Minter {
    Minter::new(
        signing,
        100,
        crate::metrics::Metrics::new(),
        Default::default(),
    )
}

fn signing() -> Arc<Signing> {
    Arc::new(Signing {
        issuer: "https://gw.example".into(),
        keys: vec![SigningKey::generate("k1", Algorithm::ES256).unwrap()],
    })
}

fn caller(claims: Value, expires_in: u64) -> Principal {
    Principal::for_tests(claims, expires_in)
}

fn request<'a>(p: &'a Principal, org: Option<&'a str>, scopes: &'a [String]) -> MintRequest<'a> {
    MintRequest {
        principal: p,
        organization: org,
        audience: "api",
        scopes,
        claims: Map::new(),
        ttl: Duration::from_secs(300),
    }
}

/// The minted token's claims, verified with the signing key's public JWK.
fn verified(signing: &Signing, minted: &Minted) -> Map<String, Value> {
    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(signing.keys[0].public_jwk().clone()).unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&["api"]);
    v.set_issuer(&["https://gw.example"]);
    let header = jsonwebtoken::decode_header(minted.token()).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.kid.as_deref(), Some("k1"));
    jsonwebtoken::decode::<Map<String, Value>>(
        minted.token(),
        &DecodingKey::from_jwk(&jwk).unwrap(),
        &v,
    )
    .unwrap()
    .claims
}

#[test]
fn a_minted_token_is_the_rfc_9068_profile_and_never_outlives_the_caller() {
    let signing = signing();
    let minter = minter(signing.clone());
    let p = caller(json!({"azp": "cli"}), 60);
    let scopes = vec!["read".to_string()];
    let minted = minter.mint(&request(&p, Some("acme"), &scopes)).unwrap();
    let c = verified(&signing, &minted);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["scope"], "read");
    assert_eq!(c["client_id"], "cli");
    assert_eq!(c["org_id"], "acme");
    assert_eq!(c["token_use"], UPSTREAM_TOKEN_USE);
    assert_eq!(c["jti"], minted.jti.as_str());
    assert_eq!(
        c["sub_id"],
        json!({"format": "iss_sub", "iss": "https://idp.example", "sub": "alice"})
    );
    assert_eq!(
        c["exp"].as_u64().unwrap(),
        p.expires_at,
        "capped by the caller's exp, not the 300 s ttl"
    );
    let expired = caller(json!({}), 0);
    assert!(matches!(
        minter.mint(&request(&expired, None, &scopes)),
        Err(MintError::Expired)
    ));
}

#[test]
fn the_cache_reuses_a_token_only_for_the_same_request() {
    let minter = minter(signing());
    let p = caller(json!({}), 600);
    let scopes = vec!["read".to_string()];
    let a = minter.mint(&request(&p, Some("acme"), &scopes)).unwrap();
    let again = minter.mint(&request(&p, Some("acme"), &scopes)).unwrap();
    assert!(Arc::ptr_eq(&a, &again));
    let other_org = minter.mint(&request(&p, Some("globex"), &scopes)).unwrap();
    assert!(!Arc::ptr_eq(&a, &other_org));
    let fewer: Vec<String> = Vec::new();
    let other_scopes = minter.mint(&request(&p, Some("acme"), &fewer)).unwrap();
    assert!(!Arc::ptr_eq(&a, &other_scopes));
    // Delegation is part of the key: an exchanged caller's token is not an IdP caller's.
    let delegated = caller(json!({"act": {"sub": "job"}, "bound_path": "/b/1"}), 600);
    let d = minter
        .mint(&request(&delegated, Some("acme"), &scopes))
        .unwrap();
    assert!(!Arc::ptr_eq(&a, &d));
}

#[test]
fn delegation_claims_are_carried_into_the_minted_token() {
    let signing = signing();
    let minter = minter(signing.clone());
    let p = caller(
        json!({"act": {"sub": "job"}, "resource": "https://api/b/1", "bound_path": "/b/1", "bound_methods": ["PUT"]}),
        600,
    );
    let scopes = vec!["read".to_string()];
    let c = verified(&signing, &minter.mint(&request(&p, None, &scopes)).unwrap());
    assert_eq!(c["act"], json!({"sub": "job"}));
    assert_eq!(c["bound_path"], "/b/1");
    assert_eq!(c["resource"], "https://api/b/1");
    assert_eq!(c["bound_methods"], json!(["PUT"]));
}

#[test]
fn issuer_documents_live_under_the_issuer_path() {
    let s = Signing {
        issuer: "https://gw.example/sg".into(),
        keys: vec![SigningKey::generate("k1", Algorithm::ES256).unwrap()],
    };
    assert_eq!(s.jwks_path(), "/sg/.well-known/jwks.json");
    assert_eq!(s.token_path(), "/sg/oauth2/token");
    let doc = s.discovery(true, false);
    assert_eq!(
        doc["jwks_uri"],
        "https://gw.example/sg/.well-known/jwks.json"
    );
    assert_eq!(doc["token_endpoint"], "https://gw.example/sg/oauth2/token");
    assert!(s.discovery(false, false).get("token_endpoint").is_none());
}

#[test]
fn a_cached_token_is_reused_only_while_half_its_lifetime_is_left() {
    let clock = crate::token::Clock::default();
    let minter = Minter::new(
        signing(),
        100,
        crate::metrics::Metrics::new(),
        clock.clone(),
    );
    let p = caller(json!({}), 3600);
    let scopes = vec!["read".to_string()];
    // 300 s lifetime (the ttl): reused for the first 150 s, then minted anew.
    let first = minter.mint(&request(&p, Some("acme"), &scopes)).unwrap();
    clock.advance(Duration::from_secs(149));
    let reused = minter.mint(&request(&p, Some("acme"), &scopes)).unwrap();
    assert!(Arc::ptr_eq(&first, &reused));
    clock.advance(Duration::from_secs(2));
    let fresh = minter.mint(&request(&p, Some("acme"), &scopes)).unwrap();
    assert!(!Arc::ptr_eq(&first, &fresh));
    assert!(fresh.expires_at > first.expires_at);
    assert_eq!(
        minter.cached_tokens(),
        1,
        "the new token replaced the old entry"
    );
}
