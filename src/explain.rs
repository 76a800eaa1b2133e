//! `scopegate explain` and policy tests: run one described request through the same
//! [`Gateway::authorize_with`] the proxy uses, with the caller's claims and the backend's answer
//! given or looked up, and report every step — the answer to "why 403".

use std::sync::Arc;

use base64::Engine;
use http::Uri;
use serde::Serialize;
use serde_json::Value;

use crate::audit::Audit;
use crate::described::{Described, PolicyTest, with_default_claims};
use crate::gateway::{Gateway, Overrides, Target};
use crate::host::Host;
use crate::policy::Membership;

/// Every step of one decision.
#[derive(Debug, Serialize)]
pub(crate) struct Trace {
    pub method: String,
    pub url: String,
    pub normalized_path: Option<String>,
    pub route: Option<String>,
    pub params: Vec<(String, String)>,
    /// When no route matched: routes whose path matched, and why they did not take it.
    pub near_misses: Vec<(String, String)>,
    /// `claims` (given), `token` (verified from the Authorization header) or `none`.
    pub caller: &'static str,
    pub subject: Option<String>,
    pub token_scopes: Vec<String>,
    pub organization: Option<String>,
    /// `given` or `looked up`, and what it said when given.
    pub membership: Option<Value>,
    pub effective_scopes: Option<Vec<String>>,
    pub condition: Option<String>,
    pub decision: &'static str,
    pub status: u16,
    pub code: String,
    pub detail: String,
    /// The claims of the token that would be minted (signature not shown).
    pub minted_claims: Option<Value>,
}

/// Explains `request` on `gateway`.
pub(crate) async fn explain(gateway: &Gateway, request: &Described) -> Trace {
    let host = request
        .uri
        .host()
        .map(str::to_string)
        .or_else(|| {
            request
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .and_then(|h| Host::parse(h.as_bytes()).ok());
    let host_name = host.as_ref().map(Host::name);
    let path_only: Uri = request
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"));
    let mut trace = Trace {
        method: request.method.to_string(),
        url: request.uri.to_string(),
        normalized_path: crate::normalize::normalize(path_only.path()).ok(),
        route: None,
        params: Vec::new(),
        near_misses: Vec::new(),
        caller: if request.claims.is_some() { "claims" } else if request.headers.contains_key(http::header::AUTHORIZATION) { "token" } else { "none" },
        subject: None,
        token_scopes: Vec::new(),
        organization: None,
        membership: request.grants.as_ref().map(|g| match g {
            None => serde_json::json!({"given": "not a member"}),
            Some(g) => serde_json::json!({"given": {"roles": g.roles, "scopes": g.scopes, "claims": g.claims}}),
        }),
        effective_scopes: None,
        condition: None,
        decision: "deny",
        status: 0,
        code: String::new(),
        detail: String::new(),
        minted_claims: None,
    };
    if let Some(path) = &trace.normalized_path {
        // The method routes see (HEAD as GET); an unaccepted one finds no route here and is
        // refused by the pipeline below.
        let method = gateway
            .requests()
            .routing_method(&request.method)
            .unwrap_or_else(|_| request.method.clone());
        // Only the "why 404" needs the route table itself; a match is read from the record.
        if gateway.routes().find(&method, host_name, path).is_none() {
            trace.near_misses = gateway.routes().near_misses(&method, host_name, path);
        }
    }
    let mut overrides = Overrides {
        principal: None,
        membership: request
            .grants
            .clone()
            .map(|g| g.map_or(Membership::NotMember, Membership::Member)),
    };
    if let Some(claims) = &request.claims {
        let issuers = gateway.issuer_configs();
        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .and_then(|iss| issuers.iter().find(|i| i.issuer == iss))
            .or(issuers.first())
            .cloned();
        match issuer.map(|i| {
            crate::verify::principal_from_claims(&i, with_default_claims(claims.clone(), Some(&i)))
        }) {
            Some(Ok(p)) => overrides.principal = Some(Arc::new(p)),
            Some(Err(e)) => return finish(trace, Err(crate::reject::Rejection::Auth(e))),
            None => {
                return finish(
                    trace,
                    Err(crate::reject::Rejection::Auth(
                        crate::verify::AuthError::UntrustedIssuer,
                    )),
                );
            }
        }
    }
    let target = Target {
        method: &request.method,
        uri: &path_only,
        host: host.as_ref(),
        headers: &request.headers,
    };
    let mut audit = Audit {
        detailed: true,
        ..Audit::default()
    };
    let result = gateway
        .authorize_with(&target, &mut audit, &overrides)
        .await;
    trace.route = audit.matched.map(|r| r.name.clone());
    trace.params = std::mem::take(&mut audit.params);
    trace.condition = audit.condition.map(str::to_string);
    trace.organization.clone_from(&audit.organization);
    trace.subject = audit.principal.as_ref().map(|p| p.subject.to_string());
    if let Some(p) = &overrides.principal {
        trace.token_scopes = p.scopes.to_vec();
    }
    trace.effective_scopes = audit
        .effective
        .take()
        .filter(|_| trace.organization.is_some());
    if trace.membership.is_none() && trace.organization.is_some() {
        trace.membership = Some(Value::String(format!(
            "looked up from the permissions backend ({})",
            audit.grants.unwrap_or("not reached")
        )));
    }
    match result {
        Ok(allowed) => {
            trace.minted_claims = allowed.minted.as_ref().and_then(|m| payload(m.token()));
            finish(trace, Ok(()))
        }
        Err(rejection) => finish(trace, Err(rejection)),
    }
}

fn finish(mut trace: Trace, result: Result<(), crate::reject::Rejection>) -> Trace {
    match result {
        Ok(()) => {
            trace.decision = "allow";
            trace.status = 200;
            trace.code = "allowed".into();
        }
        Err(r) => {
            trace.status = r.status().as_u16();
            trace.code = r.code().into();
            trace.detail = r.to_string();
        }
    }
    trace
}

fn payload(token: &str) -> Option<Value> {
    let part = token.split('.').nth(1)?;
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .ok()?,
    )
    .ok()
}

impl Trace {
    /// The trace as readable text.
    pub(crate) fn render(&self) -> String {
        let mut out = format!("request        {} {}\n", self.method, self.url);
        out += &format!(
            "path           {}\n",
            self.normalized_path
                .as_deref()
                .unwrap_or("(refused by normalization)")
        );
        match &self.route {
            Some(r) => {
                out += &format!("route          {r}\n");
                if !self.params.is_empty() {
                    let p: Vec<String> = self
                        .params
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    out += &format!("params         {}\n", p.join(" "));
                }
            }
            None => {
                out += "route          (none)\n";
                for (name, why) in &self.near_misses {
                    out += &format!("  near miss    {name}: {why}\n");
                }
            }
        }
        out += &format!(
            "caller         {} {}\n",
            self.caller,
            self.subject
                .as_deref()
                .map(|s| format!("sub={s}"))
                .unwrap_or_default()
        );
        if !self.token_scopes.is_empty() {
            out += &format!("token scopes   {}\n", self.token_scopes.join(" "));
        }
        if let Some(org) = &self.organization {
            out += &format!("organization   {org}\n");
        }
        if let Some(m) = &self.membership {
            out += &format!("membership     {m}\n");
        }
        if let Some(e) = &self.effective_scopes {
            out += &format!("effective      {}\n", e.join(" "));
        }
        if let Some(c) = &self.condition {
            out += &format!("condition      {c}\n");
        }
        out += &format!(
            "decision       {} ({} {}){}\n",
            self.decision,
            self.status,
            self.code,
            if self.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", self.detail)
            }
        );
        if let Some(c) = &self.minted_claims {
            out += &format!("minted claims  {c}\n");
        }
        out
    }
}

impl PolicyTest {
    /// `None` when the trace meets the expectation, else what differs.
    pub(crate) fn failure(&self, trace: &Trace) -> Option<String> {
        let got_allow = trace.decision == "allow";
        if got_allow != self.allow {
            return Some(format!(
                "expected {}, got {} ({} {})",
                if self.allow { "allow" } else { "deny" },
                trace.decision,
                trace.status,
                trace.code
            ));
        }
        if let Some(code) = &self.code
            && *code != trace.code
        {
            return Some(format!("expected code `{code}`, got `{}`", trace.code));
        }
        if let Some(scope) = &self.scope {
            let minted = trace
                .minted_claims
                .as_ref()
                .and_then(|c| c["scope"].as_str())
                .unwrap_or("");
            if minted != scope {
                return Some(format!("expected minted scope `{scope}`, got `{minted}`"));
            }
        }
        None
    }
}

/// Runs `tests`; returns one message per failure.
pub(crate) async fn run_tests(gateway: &Gateway, tests: &[PolicyTest]) -> Vec<String> {
    let mut failures = Vec::new();
    for t in tests {
        let trace = explain(gateway, &t.request).await;
        if let Some(why) = t.failure(&trace) {
            failures.push(format!("{}: test `{}` failed: {why}", t.location, t.name));
        }
    }
    failures
}
