//! The decision over hand-built routes, principals and membership answers.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Allowed, Decision, Denial, Input, decide, effective_scopes};
use crate::condition::{Condition, Facts};
use crate::policy::{Access, ForwardScopes, Grants, Membership, OrgSource, Route, ScopeRule};
use crate::policy::{Combine, IssuerConfig, Roles};
use crate::principal::Principal;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn issuer(combine: Combine) -> Arc<IssuerConfig> {
    Arc::new(IssuerConfig {
        combine,
        ..IssuerConfig::for_tests()
    })
}

/// A caller whose token has `scopes` (sorted here, as `verify` does).
fn principal(combine: Combine, scopes: &[&str]) -> Principal {
    let mut scopes = strings(scopes);
    scopes.sort_unstable();
    scopes.dedup();
    let issuer = issuer(combine);
    Principal {
        kind: crate::principal::TokenKind::Idp,
        origin: None,
        issuer,
        subject: "alice".into(),
        scopes: scopes.into(),
        claims: object(json!({"sub": "alice", "azp": "cli"})),
        expires_at: 2_000_000_000,
        issued_at: 1_900_000_000,
        token_id: "t".into(),
    }
}

fn rule(all: &[&str], any: &[&str]) -> Access {
    Access::Scopes(ScopeRule {
        all: strings(all),
        any: strings(any),
    })
}

fn route(access: Access) -> Route {
    Route::for_tests("r", "/orgs/{org}/x", access)
}

fn org_route(access: Access) -> Route {
    Route {
        organization: Some(OrgSource::Path("org".into())),
        ..route(access)
    }
}

fn input<'a>(
    route: &'a Route,
    roles: &'a Roles,
    principal: Option<&'a Principal>,
    membership: Option<&'a Membership>,
    params: &'a [(&'a str, &'a str)],
) -> Input<'a> {
    Input {
        route,
        roles,
        principal,
        organization: route.organization.as_ref().map(|_| "acme"),
        membership,
        params,
        method: "GET",
        path: "/orgs/acme/x",
    }
}

fn allowed(decision: Decision) -> Allowed {
    match decision {
        Decision::Allow(a) => a,
        Decision::Deny { denial, .. } => panic!("expected allow, got deny: {denial:?}"),
    }
}

fn denied(decision: Decision) -> Denial {
    match decision {
        Decision::Deny { denial, .. } => denial,
        Decision::Allow(a) => panic!("expected deny, got allow: {a:?}"),
    }
}

fn member(roles: &[&str], scopes: &[&str], claims: Value) -> Membership {
    Membership::Member(Grants {
        roles: strings(roles),
        scopes: strings(scopes),
        claims: object(claims),
    })
}

fn roles() -> Roles {
    Roles::from([
        (
            "developer".to_string(),
            strings(&["read:builds", "create:builds"]),
        ),
        ("viewer".to_string(), strings(&["read:builds"])),
    ])
}

#[test]
fn public_route_allows_without_a_caller() {
    let r = route(Access::Public);
    let roles = Roles::new();
    let a = allowed(decide(&input(&r, &roles, None, None, &[])));
    assert_eq!(a, Allowed::default());
}

#[test]
fn scoped_route_without_a_caller_denies() {
    let r = route(rule(&[], &[]));
    let roles = Roles::new();
    let rejection = denied(decide(&input(&r, &roles, None, None, &[])));
    assert!(matches!(rejection, Denial::NoCaller), "{rejection:?}");
}

#[test]
fn org_route_denies_non_members_and_missing_answers() {
    let r = org_route(rule(&[], &[]));
    let roles = roles();
    let p = principal(Combine::Intersect, &["read:builds"]);
    let rejection = denied(decide(&input(
        &r,
        &roles,
        Some(&p),
        Some(&Membership::NotMember),
        &[],
    )));
    assert!(matches!(rejection, Denial::NotMember), "{rejection:?}");
    let rejection = denied(decide(&input(&r, &roles, Some(&p), None, &[])));
    assert!(matches!(rejection, Denial::NotMember), "{rejection:?}");
}

#[test]
fn missing_scopes_deny_with_the_whole_rule() {
    let r = route(rule(&["read:builds", "write:builds"], &["admin", "owner"]));
    let roles = Roles::new();
    let p = principal(Combine::Intersect, &["read:builds", "admin"]);
    let rejection = denied(decide(&input(&r, &roles, Some(&p), None, &[])));
    match rejection {
        Denial::InsufficientScope { required } => {
            assert_eq!(required, "read:builds write:builds admin owner");
        }
        other => panic!("{other:?}"),
    }
    // With every `all` scope but none of the `any` ones.
    let p = principal(Combine::Intersect, &["read:builds", "write:builds"]);
    let rejection = denied(decide(&input(&r, &roles, Some(&p), None, &[])));
    assert!(
        matches!(rejection, Denial::InsufficientScope { .. }),
        "{rejection:?}"
    );
}

#[test]
fn intersect_keeps_only_granted_scopes_the_token_has() {
    let roles = roles();
    let p = principal(
        Combine::Intersect,
        &["read:builds", "admin:builds", "unrelated"],
    );
    let Membership::Member(grants) = member(
        &["developer", "no-such-role"],
        &["admin:builds", "delete:builds"],
        json!({}),
    ) else {
        unreachable!()
    };
    assert_eq!(
        effective_scopes(&grants, &roles, &p),
        strings(&["admin:builds", "read:builds"])
    );
}

#[test]
fn replace_takes_role_scopes_and_direct_scopes() {
    let roles = roles();
    let p = principal(Combine::Replace, &["read:builds", "unrelated"]);
    let Membership::Member(grants) = member(
        &["developer", "viewer", "no-such-role"],
        &["admin:builds"],
        json!({}),
    ) else {
        unreachable!()
    };
    assert_eq!(
        effective_scopes(&grants, &roles, &p),
        strings(&["admin:builds", "create:builds", "read:builds"])
    );
}

#[test]
fn org_route_decides_on_effective_scopes() {
    let roles = roles();
    // The token has `create:builds`, but the organization grants only `read:builds`.
    let p = principal(Combine::Intersect, &["read:builds", "create:builds"]);
    let viewer = member(&["viewer"], &[], json!({}));
    let create = org_route(rule(&["create:builds"], &[]));
    let rejection = denied(decide(&input(
        &create,
        &roles,
        Some(&p),
        Some(&viewer),
        &[],
    )));
    assert!(
        matches!(rejection, Denial::InsufficientScope { .. }),
        "{rejection:?}"
    );
    let read = org_route(rule(&["read:builds"], &[]));
    let a = allowed(decide(&input(&read, &roles, Some(&p), Some(&viewer), &[])));
    assert_eq!(a.effective, strings(&["read:builds"]));
    assert_eq!(a.scopes, strings(&["read:builds"]));
}

#[test]
fn required_forwards_all_scopes_and_only_the_any_scopes_the_caller_has() {
    let r = route(rule(&["read"], &["x", "y", "z"]));
    assert_eq!(r.forward.scopes, ForwardScopes::Required);
    let roles = Roles::new();
    let p = principal(Combine::Intersect, &["read", "y", "z", "extra"]);
    let a = allowed(decide(&input(&r, &roles, Some(&p), None, &[])));
    assert_eq!(a.scopes, strings(&["read", "y", "z"]));
    assert_eq!(a.effective, strings(&["extra", "read", "y", "z"]));
    assert!(a.claims.is_empty());
}

#[test]
fn effective_forwards_every_effective_scope() {
    let mut r = route(rule(&["read"], &[]));
    r.forward.scopes = ForwardScopes::Effective;
    let roles = Roles::new();
    let p = principal(Combine::Intersect, &["read", "b", "a"]);
    let a = allowed(decide(&input(&r, &roles, Some(&p), None, &[])));
    assert_eq!(a.scopes, strings(&["a", "b", "read"]));
}

#[test]
fn forward_list_is_intersected_with_effective_scopes() {
    let mut r = route(rule(&[], &[]));
    r.forward.scopes = ForwardScopes::List(strings(&["b", "zzz", "a", "b"]));
    let roles = Roles::new();
    let p = principal(Combine::Intersect, &["a", "b", "c"]);
    let a = allowed(decide(&input(&r, &roles, Some(&p), None, &[])));
    assert_eq!(a.scopes, strings(&["a", "b"]));
    assert_eq!(a.effective, strings(&["a", "b", "c"]));
}

#[test]
fn forwarded_claims_are_renamed_and_missing_ones_omitted() {
    let mut r = org_route(rule(&[], &[]));
    r.forward.claims = vec![
        ("plan".to_string(), "tier".to_string()),
        ("region".to_string(), "region".to_string()),
        ("missing".to_string(), "gone".to_string()),
    ];
    let roles = Roles::new();
    let p = principal(Combine::Intersect, &[]);
    let grants = member(
        &[],
        &[],
        json!({"plan": "pro", "region": "eu", "unlisted": true}),
    );
    let a = allowed(decide(&input(&r, &roles, Some(&p), Some(&grants), &[])));
    assert_eq!(a.claims, object(json!({"tier": "pro", "region": "eu"})));

    // Claims come from the backend, never from the token: an org-less route has none.
    let mut plain = route(rule(&[], &[]));
    plain.forward.claims = vec![("azp".to_string(), "client".to_string())];
    let a = allowed(decide(&input(&plain, &roles, Some(&p), None, &[])));
    assert!(a.claims.is_empty(), "{:?}", a.claims);
}

#[test]
fn condition_allows_and_denies_on_the_facts() {
    let mut r = org_route(rule(&[], &[]));
    r.condition = Some(Condition::compile("params.country in claims.allowed_countries").unwrap());
    let roles = Roles::new();
    let p = principal(Combine::Intersect, &[]);
    let grants = member(&[], &[], json!({"allowed_countries": ["nl", "de"]}));

    let a = allowed(decide(&input(
        &r,
        &roles,
        Some(&p),
        Some(&grants),
        &[("org", "acme"), ("country", "nl")],
    )));
    assert!(a.effective.is_empty());

    let rejection = denied(decide(&input(
        &r,
        &roles,
        Some(&p),
        Some(&grants),
        &[("org", "acme"), ("country", "fr")],
    )));
    assert!(
        matches!(rejection, Denial::ConditionFailed),
        "{rejection:?}"
    );
}

#[test]
fn condition_that_fails_to_evaluate_denies() {
    let condition = Condition::compile("claims.missing == 1").unwrap();
    let empty = Map::new();
    // The expression really errors (rather than being false) on empty claims.
    let facts = Facts {
        params: &[],
        org: None,
        token: &empty,
        claims: &empty,
        scopes: &[],
        method: "GET",
        path: "/x",
    };
    assert!(condition.evaluate(&facts).is_err());

    let mut r = route(rule(&[], &[]));
    r.condition = Some(condition);
    let roles = Roles::new();
    let p = principal(Combine::Intersect, &["a"]);
    let rejection = denied(decide(&input(&r, &roles, Some(&p), None, &[])));
    assert!(
        matches!(rejection, Denial::ConditionFailed),
        "{rejection:?}"
    );

    // A condition that returns a non-boolean denies too.
    r.condition = Some(Condition::compile("method").unwrap());
    let rejection = denied(decide(&input(&r, &roles, Some(&p), None, &[])));
    assert!(
        matches!(rejection, Denial::ConditionFailed),
        "{rejection:?}"
    );
}
