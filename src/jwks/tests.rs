use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use super::*;
use crate::keys::SigningKey;

fn jwk(kid: &str, alg: Algorithm) -> Value {
    SigningKey::generate(kid, alg).unwrap().public_jwk().clone()
}

#[test]
fn only_signature_keys_are_kept() {
    let mut enc = jwk("enc", Algorithm::ES256);
    enc["use"] = json!("enc");
    let doc = json!({"keys": [
        jwk("ec", Algorithm::ES256),
        jwk("rsa", Algorithm::RS256),
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        enc,
        {"kty": "EC", "kid": "broken"},
        "not an object",
    ]});
    let set = KeySet::from_jwks(&doc);
    assert_eq!(
        set.len(),
        2,
        "EC and RSA kept; oct, enc and broken entries skipped"
    );
    assert!(set.find(Some("hmac"), Algorithm::HS256).is_none());
    assert!(set.find(Some("enc"), Algorithm::ES256).is_none());
    assert!(KeySet::from_jwks(&json!({"no": "keys"})).is_empty());
}

#[test]
fn a_key_is_found_by_kid_and_a_fitting_algorithm() {
    let doc = json!({"keys": [jwk("ec", Algorithm::ES256), jwk("rsa", Algorithm::RS256)]});
    let set = KeySet::from_jwks(&doc);
    assert!(set.find(Some("ec"), Algorithm::ES256).is_some());
    assert!(
        set.find(Some("ec"), Algorithm::RS256).is_none(),
        "an EC key never checks an RSA signature"
    );
    assert!(set.find(Some("missing"), Algorithm::ES256).is_none());
    // Without a kid, only an unambiguous key is used.
    assert!(set.find(None, Algorithm::ES256).is_some());
    let two = KeySet::from_jwks(
        &json!({"keys": [jwk("a", Algorithm::ES256), jwk("b", Algorithm::ES256)]}),
    );
    assert!(
        two.find(None, Algorithm::ES256).is_none(),
        "two candidates are refused, not tried in turn"
    );
}

#[test]
fn a_discovered_jwks_uri_is_plain_http_only_where_the_issuer_already_is() {
    let (http, https) = (
        "http://idp.internal/.well-known/openid-configuration"
            .parse()
            .unwrap(),
        "https://idp.example/.well-known/openid-configuration"
            .parse()
            .unwrap(),
    );
    let ok = |d: &http::Uri, j: &str, insecure| discovered_jwks_uri(d, j, insecure).is_ok();
    assert!(ok(&https, "https://idp.example/jwks", false));
    assert!(ok(&http, "http://127.0.0.1:8080/jwks", false));
    assert!(!ok(&http, "http://idp.internal/jwks", false));
    assert!(
        ok(&http, "http://idp.internal/jwks", true),
        "an in-cluster IdP"
    );
    // An https discovery document cannot take its keys to plain http, whatever the setting.
    assert!(!ok(&https, "http://idp.example/jwks", true));
    assert!(!ok(&https, "http://127.0.0.1/jwks", false));
}
