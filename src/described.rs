//! A request described by hand (`scopegate explain`, policy tests in policy files) and the
//! decision a policy test expects for it: plain data that configuration builds and `explain`
//! runs through the pipeline.

use http::{HeaderMap, Method, Uri};
use serde_json::{Map, Value};

use crate::policy::Grants;

/// A request to explain.
#[derive(Debug, Clone)]
pub(crate) struct Described {
    pub method: Method,
    /// A path with optional query, or an absolute URL (its host is the request's host).
    pub uri: Uri,
    pub headers: HeaderMap,
    /// The caller's claims, taken as verified; `None` uses the `Authorization` header.
    pub claims: Option<Map<String, Value>>,
    /// The backend's answer: `Some(None)` is "not a member"; `None` asks the backend.
    pub grants: Option<Option<Grants>>,
}

/// Fills what a hand-written set of claims leaves out: `iss` and `aud` of `issuer`,
/// `sub: test-user`, and an `exp` an hour away.
pub(crate) fn with_default_claims(
    mut claims: Map<String, Value>,
    issuer: Option<&crate::policy::IssuerConfig>,
) -> Map<String, Value> {
    if let Some(i) = issuer {
        claims
            .entry("iss")
            .or_insert_with(|| Value::String(i.issuer.clone()));
        if let Some(a) = i.audiences.first() {
            claims
                .entry("aud")
                .or_insert_with(|| Value::String(a.clone()));
        }
    }
    claims
        .entry("sub")
        .or_insert_with(|| Value::String("test-user".into()));
    claims
        .entry("exp")
        .or_insert_with(|| serde_json::json!(crate::token::unix_now() + 3600));
    claims
}

/// A policy test: a described request and the decision it must get.
#[derive(Debug, Clone)]
pub(crate) struct PolicyTest {
    pub name: String,
    /// Where it is written, for failure messages (`file:line`).
    pub location: String,
    pub request: Described,
    pub allow: bool,
    pub code: Option<String>,
    pub scope: Option<String>,
}
