//! The audit log: one structured event per decision (target `scopegate::audit`), with what was
//! decided for whom and why. It names tokens only by their `jti` or hash, never by value.

use std::sync::Arc;
use std::time::Duration;

use crate::mint::Minted;
use crate::policy::Route;
use crate::principal::Principal;

/// What the pipeline learned about one request, filled in stage by stage.
#[derive(Debug, Default)]
pub struct Audit<'a> {
    /// The matched route, once matched (its name labels metrics and logs; proxy mode reads its
    /// CORS policy).
    pub matched: Option<&'a Arc<Route>>,
    /// The normalized path, once normalization passed.
    pub path: Option<String>,
    /// The verified caller (subject, and its token's `jti` or hash prefix).
    pub principal: Option<Arc<Principal>>,
    pub organization: Option<String>,
    /// Whether to keep what only `explain` shows (the params): off on the request path.
    pub detailed: bool,
    /// The matched route's path parameters (name, raw value), when `detailed`.
    pub params: Vec<(String, String)>,
    /// The matched route's condition, as written.
    pub condition: Option<&'a str>,
    /// Where the membership answer came from: `given`, `cache`, `backend` or `stale`.
    pub grants: Option<&'static str>,
    /// The effective scopes in the organization (or the token's), once the decision computed
    /// them (an allow, or a scope or condition denial).
    pub effective: Option<Vec<String>>,
    /// The token minted for the upstream (named by its `jti`).
    pub minted: Option<Arc<Minted>>,
}

impl Audit<'_> {
    /// The matched route's name, `none` before or without a match.
    pub fn route_name(&self) -> &str {
        self.matched.map_or("none", |r| r.name.as_str())
    }
}

/// How a request ended, for the audit event.
#[derive(Debug)]
pub struct Outcome<'a> {
    /// `proxy` or `forward_auth`.
    pub mode: &'static str,
    pub method: &'a str,
    pub status: u16,
    /// `allow` or `deny`.
    pub decision: &'static str,
    /// The rejection code, or `allowed`.
    pub reason: &'static str,
    pub latency: Duration,
    /// The W3C `traceparent` of the request, when well-formed.
    pub traceparent: Option<&'a str>,
}

impl Audit<'_> {
    /// Emits the audit event.
    pub fn emit(&self, o: &Outcome<'_>) {
        tracing::info!(
            target: "scopegate::audit",
            mode = o.mode,
            route = self.route_name(),
            method = o.method,
            path = self.path.as_deref().unwrap_or(""),
            subject = self.principal.as_deref().map_or("", |p| p.subject.as_str()),
            organization = self.organization.as_deref().unwrap_or(""),
            grants = self.grants.unwrap_or(""),
            decision = o.decision,
            reason = o.reason,
            status = o.status,
            token = self.principal.as_deref().map_or("", |p| p.token_id.as_str()),
            minted_jti = self.minted.as_deref().map_or("", |m| m.jti.as_str()),
            latency_us = o.latency.as_micros() as u64,
            traceparent = o.traceparent.unwrap_or(""),
            "decision"
        );
    }
}

/// A `traceparent` header value, if it has the W3C shape (`00-<32 hex>-<16 hex>-<2 hex>`).
pub(crate) fn traceparent(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get("traceparent")?.to_str().ok()?;
    let parts: Vec<&str> = v.split('-').collect();
    let shape = parts.len() == 4
        && [2, 32, 16, 2]
            .iter()
            .zip(&parts)
            .all(|(len, p)| p.len() == *len && p.bytes().all(|b| b.is_ascii_hexdigit()));
    shape.then_some(v)
}
