//! A validated route: what it matches, who may use it, where its organization comes from, and
//! what it forwards. Configuration builds it; the route table, the decision and minting read it.

use std::sync::Arc;
use std::time::Duration;

use http::Method;

use crate::condition::Condition;
use crate::policy::{Cors, UpstreamConfig};

/// One validated route.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    /// `None` matches any method.
    pub methods: Option<Vec<Method>>,
    /// Lower-case host without port; `None` matches any host.
    pub host: Option<String>,
    /// The path template, in matchit syntax (`/orgs/{org}/builds/{*rest}`).
    pub path: String,
    pub upstream: Arc<UpstreamConfig>,
    pub access: Access,
    /// Where the organization comes from; `None` for routes that are not per-organization.
    pub organization: Option<OrgSource>,
    pub condition: Option<Condition>,
    pub forward: Forward,
    /// The largest request body forwarded, when bounded.
    pub max_body_bytes: Option<u64>,
    /// Whether `;` path parameters are accepted (refused by default).
    pub matrix_params: bool,
    /// The bounds of its WebSocket connections; `None`: upgrades are refused.
    pub websocket: Option<WebSocketBounds>,
    /// Its CORS policy (its own, else the server file's); `None`: scopegate does no CORS here.
    pub cors: Option<Arc<Cors>>,
}

#[cfg(test)]
impl Route {
    /// A route to a placeholder upstream (audience `u`), for unit tests to adjust.
    pub(crate) fn for_tests(name: &str, path: &str, access: Access) -> Self {
        Route {
            name: name.into(),
            methods: None,
            host: None,
            path: path.into(),
            upstream: Arc::new(UpstreamConfig {
                name: "u".into(),
                scheme: http::uri::Scheme::HTTP,
                authority: http::uri::Authority::from_static("127.0.0.1:1"),
                prefix: String::new(),
                connect_timeout: std::time::Duration::from_secs(1),
                timeout: std::time::Duration::from_secs(1),
                audience: "u".into(),
                max_concurrency: 8,
                folds_case: false,
                folds_trailing_slash: false,
                protocol: Default::default(),
                tls: None,
            }),
            access,
            organization: None,
            condition: None,
            forward: Default::default(),
            max_body_bytes: None,
            matrix_params: false,
            websocket: None,
            cors: None,
        }
    }
}

/// Who may use a route.
#[derive(Debug)]
pub enum Access {
    /// No authentication at all.
    Public,
    /// A verified token whose scopes satisfy the rule.
    Scopes(ScopeRule),
}

/// Scopes a token must hold: every one of `all`, and at least one of `any` when it is non-empty.
#[derive(Debug, Clone, Default)]
pub struct ScopeRule {
    pub all: Vec<String>,
    pub any: Vec<String>,
}

/// Where a route's organization comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgSource {
    /// A path parameter of the route's template.
    Path(String),
    /// A request header.
    Header(http::HeaderName),
    /// A query parameter.
    Query(String),
    /// The first label of the request's host (`acme.api.example.com` is `acme`).
    Host,
    /// A string claim of the verified token.
    Claim(String),
}

/// Which scopes a route forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardScopes {
    /// The route's required scopes (for an any-of rule, those the caller has).
    Required,
    /// Every effective scope in the organization.
    Effective,
    /// This list, intersected with the effective scopes.
    List(Vec<String>),
}

/// What a route forwards upstream.
#[derive(Debug, Clone)]
pub struct Forward {
    pub scopes: ForwardScopes,
    pub ttl: Duration,
    /// Backend claims to copy: (backend name, minted name).
    pub claims: Vec<(String, String)>,
}

impl Default for Forward {
    fn default() -> Self {
        Self {
            scopes: ForwardScopes::Required,
            ttl: Duration::from_secs(300),
            claims: Vec::new(),
        }
    }
}

/// A route's bounds on its WebSocket connections, validated at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocketBounds {
    /// No byte either way for this long closes the connection.
    pub idle_timeout: Duration,
    /// The longest a connection stays open; `None`: until the minted token expires.
    pub max_lifetime: Option<Duration>,
}
