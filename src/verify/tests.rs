//! The bearer header parser and the claims-to-principal step, without signatures or network.

use std::sync::Arc;
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use serde_json::{Map, Value, json};

use super::{AuthError, Principal, TokenKind, bearer, check_times, principal, token_hash};
use crate::policy::{IssuerConfig, KeysSource, ScopesFormat};
use crate::token::unix_now;

fn headers(values: &[&[u8]]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for v in values {
        map.append(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
    }
    map
}

#[test]
fn missing_authorization_header() {
    assert_eq!(bearer(&HeaderMap::new()), Err(AuthError::Missing));
    let mut other = HeaderMap::new();
    other.insert("x-authorization", HeaderValue::from_static("Bearer tok"));
    assert_eq!(bearer(&other), Err(AuthError::Missing));
}

#[test]
fn two_authorization_headers_are_refused() {
    assert_eq!(
        bearer(&headers(&[b"Bearer a", b"Bearer b"])),
        Err(AuthError::MultipleHeaders)
    );
    // Even when they are equal.
    assert_eq!(
        bearer(&headers(&[b"Bearer a", b"Bearer a"])),
        Err(AuthError::MultipleHeaders)
    );
}

#[test]
fn other_schemes_and_malformed_bearer_values_are_not_bearer() {
    for value in [
        &b"Basic xyz"[..],
        b"Bearer",
        b"Bearer ",
        b"Bearer a b",
        b"Bearer  tok",
        b"Bearer tok ",
        b"Bearertok",
        b"Bearer\ttok",
        b"",
        b"Bearer t\xffk",
    ] {
        assert_eq!(
            bearer(&headers(&[value])),
            Err(AuthError::NotBearer),
            "{:?}",
            String::from_utf8_lossy(value)
        );
    }
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    assert_eq!(bearer(&headers(&[b"Bearer tok"])), Ok("tok"));
    assert_eq!(bearer(&headers(&[b"bearer tok"])), Ok("tok"));
    assert_eq!(bearer(&headers(&[b"BEARER a.b.c"])), Ok("a.b.c"));
}

fn issuer(claim: &str, format: ScopesFormat) -> Arc<IssuerConfig> {
    Arc::new(IssuerConfig {
        keys: KeysSource::Jwks("https://idp.example.com/jwks.json".parse().unwrap()),
        scopes_claim: claim.into(),
        scopes_format: format,
        // The fixtures expire in 2033.
        max_token_age: Duration::from_secs(100 * 365 * 24 * 3600),
        ..IssuerConfig::for_tests()
    })
}

fn space() -> Arc<IssuerConfig> {
    issuer("scope", ScopesFormat::Space)
}

fn claims(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// Claims with a subject and an `exp`, plus `extra`.
fn base(extra: Value) -> Map<String, Value> {
    let mut map = claims(json!({"sub": "alice", "exp": 2_000_000_000u64}));
    map.extend(claims(extra));
    map
}

fn run(issuer: &Arc<IssuerConfig>, claims: Map<String, Value>) -> Result<Principal, AuthError> {
    principal(issuer, claims, &token_hash("abc"), None, unix_now())
}

#[test]
fn scopegate_tokens_are_told_apart_by_token_use() {
    let own = |mut claims: Map<String, Value>| {
        claims.insert(
            "sub_id".into(),
            json!({"format": "iss_sub", "iss": "https://idp.example", "sub": "alice"}),
        );
        principal(&space(), claims, &token_hash("abc"), Some(1), unix_now())
    };
    assert_eq!(
        own(base(json!({"token_use": "upstream"}))).unwrap().kind,
        TokenKind::Upstream
    );
    let exchanged = own(base(json!({"token_use": "exchange", "aud": "api", "bound_path": "/builds/42", "act": {"sub": "job"}}))).unwrap();
    assert_eq!(
        exchanged.kind,
        TokenKind::Exchanged(Box::new(crate::principal::Binding {
            audience: "api".into(),
            bound_path: Some("/builds/42".into()),
            bound_methods: None,
            uses: None,
        }))
    );
    let limited = own(base(
        json!({"token_use": "exchange", "aud": "api", "max_uses": 1, "act": {"sub": "job"}}),
    ))
    .unwrap();
    assert!(
        matches!(&limited.kind, TokenKind::Exchanged(b) if b.uses == Some(1)),
        "max_uses is read"
    );
    assert!(
        own(base(
            json!({"token_use": "exchange", "aud": "api", "max_uses": "1", "act": {"sub": "job"}})
        ))
        .is_err(),
        "a malformed max_uses is refused, never ignored"
    );
    assert_eq!(exchanged.origin(), "https://idp.example");
    // Deeper than allowed.
    let deep = base(
        json!({"token_use": "exchange", "aud": "api", "act": {"sub": "a", "act": {"sub": "b"}}}),
    );
    assert_eq!(own(deep).err(), Some(AuthError::DelegationTooDeep));
    // Neither kind: not a token scopegate issued.
    assert_eq!(
        own(base(json!({"token_use": "access"}))).err(),
        Some(AuthError::UntrustedIssuer)
    );
    // From an identity provider, `token_use` means nothing to scopegate.
    assert_eq!(
        run(&space(), base(json!({"token_use": "upstream"})))
            .unwrap()
            .kind,
        TokenKind::Idp
    );
}

#[test]
fn subject_must_be_a_non_empty_string() {
    let no_sub = claims(json!({"exp": 2_000_000_000u64}));
    assert_eq!(
        run(&space(), no_sub).err(),
        Some(AuthError::BadClaim("sub"))
    );
    for bad in [json!(42), json!(""), json!(null), json!(["alice"])] {
        let c = claims(json!({"sub": bad, "exp": 2_000_000_000u64}));
        assert_eq!(
            run(&space(), c).err(),
            Some(AuthError::BadClaim("sub")),
            "{bad}"
        );
    }
}

#[test]
fn exp_must_be_a_number() {
    let c = claims(json!({"sub": "alice"}));
    assert_eq!(run(&space(), c).err(), Some(AuthError::BadClaim("exp")));
    let c = claims(json!({"sub": "alice", "exp": "soon"}));
    assert_eq!(run(&space(), c).err(), Some(AuthError::BadClaim("exp")));
    let p = run(&space(), base(json!({}))).unwrap();
    assert_eq!(p.expires_at, 2_000_000_000);
}

#[test]
fn space_delimited_scopes_are_sorted_and_deduplicated() {
    let p = run(&space(), base(json!({"scope": "b a a"}))).unwrap();
    assert_eq!(p.scopes.to_vec(), vec!["a".to_string(), "b".to_string()]);
    assert!(p.has_scope("a") && p.has_scope("b") && !p.has_scope("c"));

    let p = run(&space(), base(json!({"scope": "  write:x  read:x "}))).unwrap();
    assert_eq!(
        p.scopes.to_vec(),
        vec!["read:x".to_string(), "write:x".to_string()]
    );

    // No scope claim: no scopes.
    let p = run(&space(), base(json!({}))).unwrap();
    assert!(p.scopes.is_empty());

    // An array where a string is expected.
    let result = run(&space(), base(json!({"scope": ["a"]})));
    assert_eq!(result.err(), Some(AuthError::BadClaim("scope")));
}

#[test]
fn array_scopes_are_read_from_the_configured_claim() {
    let auth0 = issuer("permissions", ScopesFormat::Array);
    let p = run(
        &auth0,
        base(json!({"permissions": ["write:x", "read:x", "read:x"], "scope": "ignored"})),
    )
    .unwrap();
    assert_eq!(
        p.scopes.to_vec(),
        vec!["read:x".to_string(), "write:x".to_string()]
    );

    let result = run(&auth0, base(json!({"permissions": "read:x write:x"})));
    assert_eq!(result.err(), Some(AuthError::BadClaim("scope")));
    let result = run(&auth0, base(json!({"permissions": ["read:x", 7]})));
    assert_eq!(result.err(), Some(AuthError::BadClaim("scope")));
}

#[test]
fn token_id_is_the_jti_or_a_hash_prefix() {
    let p = run(&space(), base(json!({"jti": "token-1"}))).unwrap();
    assert_eq!(&*p.token_id, "token-1");

    // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
    let p = run(&space(), base(json!({}))).unwrap();
    assert_eq!(&*p.token_id, "ba7816bf8f01cfea");
    assert_eq!(p.token_id.len(), 16);

    // A `jti` that is not a string, or too long to log, falls back to the hash too.
    let p = run(&space(), base(json!({"jti": 12}))).unwrap();
    assert_eq!(&*p.token_id, "ba7816bf8f01cfea");
    let long = "j".repeat(129);
    let p = run(&space(), base(json!({"jti": long}))).unwrap();
    assert_eq!(&*p.token_id, "ba7816bf8f01cfea");
}

#[test]
fn principal_keeps_every_claim_and_its_issuer() {
    let corp = space();
    let p = run(&corp, base(json!({"azp": "cli", "scope": "a"}))).unwrap();
    assert_eq!(&*p.subject, "alice");
    assert_eq!(p.claims.get("azp"), Some(&json!("cli")));
    assert_eq!(p.claims.len(), 4);
    assert!(Arc::ptr_eq(&p.issuer, &corp));
}

/// Regression: the same `sub` from two issuers was one person. A token scopegate issued names
/// its subject's original issuer in `sub_id`, which must be there and name the same `sub`.
#[test]
fn scopegate_tokens_carry_the_original_issuer_of_their_subject() {
    let own = |extra: Value| {
        principal(
            &space(),
            base(extra),
            &token_hash("abc"),
            Some(1),
            unix_now(),
        )
    };
    let ok = own(json!({"token_use": "upstream", "sub_id": {"format": "iss_sub", "iss": "https://partner.example", "sub": "alice"}})).unwrap();
    assert_eq!(ok.origin(), "https://partner.example");
    for bad in [
        json!({"token_use": "upstream"}),
        json!({"token_use": "upstream", "sub_id": {"format": "iss_sub", "iss": "https://idp.example", "sub": "mallory"}}),
        json!({"token_use": "upstream", "sub_id": {"format": "email", "iss": "https://idp.example", "sub": "alice"}}),
        json!({"token_use": "upstream", "sub_id": "https://idp.example"}),
    ] {
        assert_eq!(
            own(bad.clone()).err(),
            Some(AuthError::BadClaim("sub_id")),
            "{bad}"
        );
    }
    // An IdP token's subject belongs to that IdP, whatever it claims.
    let idp = run(&space(), base(json!({"sub_id": {"format": "iss_sub", "iss": "https://other.example", "sub": "alice"}}))).unwrap();
    assert_eq!(idp.origin(), space().issuer);
}

/// Regression: an `exp` absurdly far in the future was accepted (and cached until then).
#[test]
fn a_lifetime_longer_than_the_issuers_maximum_is_refused() {
    let issuer = Arc::new(IssuerConfig {
        max_token_age: Duration::from_secs(3600),
        ..Arc::into_inner(space()).unwrap()
    });
    let now = crate::token::unix_now();
    let far = claims(json!({"sub": "alice", "exp": now + 7200}));
    assert_eq!(run(&issuer, far).err(), Some(AuthError::LifetimeTooLong));
    let near = claims(json!({"sub": "alice", "exp": now + 3000}));
    assert!(run(&issuer, near).is_ok());
}

/// `exp` and `nbf` are checked against scopegate's clock, with the issuer's leeway, and must be
/// integers (a string `exp` is a bad claim, never "no expiry").
#[test]
fn token_times_are_checked_against_the_clock_with_leeway() {
    let at = |v: Value| v.as_object().unwrap().clone();
    let now = 1_000_000;
    assert_eq!(check_times(&at(json!({"exp": now + 1})), now, 0), Ok(()));
    assert_eq!(check_times(&at(json!({"exp": now - 30})), now, 30), Ok(()));
    assert_eq!(
        check_times(&at(json!({"exp": now - 31})), now, 30),
        Err(AuthError::Expired)
    );
    assert_eq!(
        check_times(&at(json!({"exp": now + 60, "nbf": now + 31})), now, 30),
        Err(AuthError::NotYetValid)
    );
    assert_eq!(
        check_times(&at(json!({"exp": now + 60, "nbf": now + 30})), now, 30),
        Ok(())
    );
    for bad in [json!({}), json!({"exp": "2000000000"}), json!({"exp": -1})] {
        assert_eq!(
            check_times(&at(bad), now, 30),
            Err(AuthError::BadClaim("exp"))
        );
    }
    assert_eq!(
        check_times(&at(json!({"exp": now + 60, "nbf": "0"})), now, 30),
        Err(AuthError::BadClaim("nbf"))
    );
    // The clock a test moves: every copy sees the skew.
    let clock = crate::token::Clock::default();
    let copy = clock.clone();
    let before = copy.now();
    clock.advance(Duration::from_secs(3600));
    assert!(copy.now() >= before + 3600);
}

#[test]
fn equal_scope_sets_are_shared_and_the_set_of_sets_is_bounded() {
    let sets = super::ScopeSets::default();
    let set = |s: &[&str]| -> Arc<[String]> { s.iter().map(|x| x.to_string()).collect() };
    let a = sets.intern(set(&["read", "write"]));
    let b = sets.intern(set(&["read", "write"]));
    assert!(Arc::ptr_eq(&a, &b), "one allocation for one set");
    for i in 0..super::MAX_SCOPE_SETS + 10 {
        sets.intern(set(&[&format!("s{i}")]));
    }
    assert_eq!(sets.0.len(), super::MAX_SCOPE_SETS);
    let past = set(&["never-seen"]);
    assert_eq!(
        *sets.intern(past.clone()),
        *past,
        "a set past the bound is still used"
    );
}
