use serde_json::json;

use super::revocations::{Local, key_of};
use super::*;

fn alice(issued_at: u64) -> Principal {
    Principal {
        issued_at,
        token_id: "jti-1".into(),
        ..Principal::for_tests(json!({}), 300)
    }
}

#[test]
fn a_revoked_token_is_refused_until_its_revocation_expires() {
    let local = Local::default();
    let now = crate::token::unix_now();
    assert!(!local.revoked(&alice(now), None, now));
    local.learn(Revocation::Token {
        id: "jti-1".into(),
        expires: now + 10,
    });
    assert!(local.revoked(&alice(now), None, now));
    assert!(
        !local.revoked(
            &Principal {
                token_id: "jti-2".into(),
                ..alice(now)
            },
            None,
            now
        ),
        "another token of the same subject is not revoked"
    );
    assert!(!local.revoked(&alice(now), None, now + 11), "expired");
}

#[test]
fn a_subject_revocation_covers_tokens_issued_until_then_and_only_that_issuers_subject() {
    let local = Local::default();
    let now = crate::token::unix_now();
    local.learn(Revocation::Subject {
        key: key_of("https://idp.example", "alice", None),
        before: now,
        expires: now + 600,
    });
    assert!(local.revoked(&alice(now - 5), None, now));
    assert!(local.revoked(&alice(now), None, now), "the same second");
    assert!(local.revoked(&alice(0), None, now), "a token without iat");
    assert!(!local.revoked(&alice(now + 1), None, now), "issued after");
    let other_issuer = Principal {
        issuer: std::sync::Arc::new(crate::policy::IssuerConfig {
            issuer: "https://other.example".into(),
            ..crate::policy::IssuerConfig::for_tests()
        }),
        ..alice(now - 5)
    };
    assert!(
        !local.revoked(&other_issuer, None, now),
        "another issuer's alice is someone else"
    );
}

#[test]
fn a_revocation_within_an_organization_covers_only_requests_in_it() {
    let local = Local::default();
    let now = crate::token::unix_now();
    local.learn(Revocation::Subject {
        key: key_of("https://idp.example", "alice", Some("acme")),
        before: now,
        expires: now + 600,
    });
    assert!(local.revoked(&alice(now - 5), Some("acme"), now));
    assert!(!local.revoked(&alice(now - 5), Some("globex"), now));
    assert!(!local.revoked(&alice(now - 5), None, now));
}

#[test]
fn a_later_subject_revocation_extends_an_earlier_one() {
    let local = Local::default();
    let key = key_of("https://idp.example", "alice", None);
    for before in [200, 100] {
        local.learn(Revocation::Subject {
            key: key.clone(),
            before,
            expires: before + 1000,
        });
    }
    assert!(local.revoked(&alice(150), None, 500), "the later one holds");
}

#[test]
fn subject_keys_cannot_collide_across_spellings() {
    assert_ne!(key_of("a:b", "c", None), key_of("a", "b:c", None));
    assert_ne!(key_of("a", "b", Some("c")), key_of("a", "b\",\"c", None));
}

#[test]
fn a_revocation_survives_its_trip_through_the_channel() {
    for r in [
        Revocation::Token {
            id: "j".into(),
            expires: 7,
        },
        Revocation::Subject {
            key: key_of("i", "s", Some("o")),
            before: 1,
            expires: 2,
        },
    ] {
        let back: Revocation = serde_json::from_str(&r.to_message()).unwrap();
        assert_eq!(back, r);
    }
}
