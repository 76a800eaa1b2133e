use serde_json::{Map, Value, json};

use super::KeptClaims;

fn claims() -> Map<String, Value> {
    json!({
        "iss": "https://idp", "sub": "alice", "scope": "read", "exp": 1, "jti": "j",
        "azp": "web", "act": {"sub": "svc"}, "tenant": "acme", "department": "sales",
        "bound_path": "/b/1", "org_id": "acme"
    })
    .as_object()
    .cloned()
    .unwrap()
}

#[test]
fn named_keeps_what_stages_read_and_the_organization_claims_only() {
    let mut c = claims();
    KeptClaims::Named(["tenant".to_string()].into()).keep(&mut c);
    let mut kept: Vec<&str> = c.keys().map(String::as_str).collect();
    kept.sort_unstable();
    assert_eq!(kept, ["act", "azp", "bound_path", "org_id", "tenant"]);
}

#[test]
fn all_keeps_every_claim() {
    let mut c = claims();
    KeptClaims::All.keep(&mut c);
    assert_eq!(c, claims());
}
