//! The validated policy types the stages share: an issuer, an upstream, the size and time
//! bounds, the role table, a route (with its CORS policy) and what a backend grants.
//! Configuration builds them; request-time stages read them. Below every stage (it imports only the `condition` leaf), so
//! every stage can depend on it and none on `config` or on another stage for its types.

mod cors;
mod grants;
mod route;

pub use crate::fetch::ClientTls;
pub use cors::{Cors, HeaderList, OriginPattern, OriginPatternError, Origins, joined};
pub use grants::{Grants, Membership};
pub use route::{Access, Forward, ForwardScopes, OrgSource, Route, ScopeRule, WebSocketBounds};

use std::collections::HashMap;
use std::time::Duration;

use http::Uri;
use jsonwebtoken::Algorithm;

/// Role name to scopes.
pub type Roles = HashMap<String, Vec<String>>;

/// How effective scopes are computed from backend grants and the token's scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// Grants ∩ token scopes: a token never gains a scope its holder did not consent to.
    Intersect,
    /// Grants alone, for IdPs that issue no API scopes.
    Replace,
}

/// One trusted token issuer.
#[derive(Debug)]
pub struct IssuerConfig {
    /// The name it has in `issuers:` (used in metrics and logs).
    pub name: String,
    /// The exact `iss` claim value.
    pub issuer: String,
    pub keys: KeysSource,
    pub algorithms: Vec<Algorithm>,
    pub audiences: Vec<String>,
    pub leeway: Duration,
    pub scopes_claim: String,
    pub scopes_format: ScopesFormat,
    /// When set, the token header's `typ` must equal this (case-insensitively).
    pub typ: Option<String>,
    pub refresh_interval: Duration,
    pub unknown_kid_cooldown: Duration,
    pub fetch_timeout: Duration,
    pub combine: Combine,
    /// The longest remaining lifetime (`exp` - now) a token may have: an `exp` absurdly far in
    /// the future is a forged or misissued token, and would pin the verified-token cache.
    pub max_token_age: Duration,
    /// TLS towards its discovery and JWKS URLs; `None`: the public roots.
    pub tls: Option<ClientTls>,
    /// Plain `http://` is allowed to a non-loopback host (`insecure_http: true`).
    pub insecure_http: bool,
}

#[cfg(test)]
impl IssuerConfig {
    /// An issuer `https://idp.example.com/` (ES256, audience `api`, space-delimited `scope`,
    /// `combine: intersect`) for unit tests to adjust with struct update syntax.
    pub(crate) fn for_tests() -> Self {
        Self {
            name: "corp".into(),
            issuer: "https://idp.example.com/".into(),
            keys: KeysSource::Local,
            algorithms: vec![Algorithm::ES256],
            audiences: vec!["api".into()],
            leeway: Duration::from_secs(30),
            scopes_claim: "scope".into(),
            scopes_format: ScopesFormat::Space,
            typ: None,
            refresh_interval: Duration::from_secs(300),
            unknown_kid_cooldown: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
            combine: Combine::Intersect,
            max_token_age: Duration::from_secs(24 * 3600),
            tls: None,
            insecure_http: false,
        }
    }
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub enum KeysSource {
    /// scopegate's own signing keys, known in-process and never fetched.
    Local,
    Jwks(Uri),
    /// An OIDC discovery document whose `jwks_uri` names the JWKS.
    Discovery(Uri),
}

/// How the scopes claim is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopesFormat {
    /// One space-delimited string (`scope`, RFC 8693 / RFC 9068).
    Space,
    /// An array of strings (`scp`, Auth0 `permissions`).
    Array,
}

/// One upstream API.
#[derive(Debug)]
pub struct UpstreamConfig {
    pub name: String,
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// Path prefix from the URL, without a trailing `/` (empty for none).
    pub prefix: String,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// `aud` of tokens minted for this upstream.
    pub audience: String,
    /// Requests in flight to it at most.
    pub max_concurrency: usize,
    /// Its router ignores case: a path whose lower-case form is another route's is refused.
    pub folds_case: bool,
    /// Its router ignores a trailing `/`: a path that is another route's with or without it is
    /// refused.
    pub folds_trailing_slash: bool,
    /// The HTTP version spoken to it.
    pub protocol: UpstreamProtocol,
    /// TLS towards an `https://` upstream; `None`: the public roots.
    pub tls: Option<ClientTls>,
}

/// The HTTP version scopegate speaks to an upstream, validated against its URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (over TLS, no ALPN offer: the server speaks HTTP/1.1).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over plain TCP (`http://` only): plain-text gRPC servers.
    H2c,
    /// HTTP/2 over TLS, chosen by ALPN (`https://` only).
    H2,
    /// What the client spoke: HTTP/2 clients get HTTP/2 (h2c on `http://`; on `https://` ALPN
    /// offers `h2` and `http/1.1`), HTTP/1 clients and WebSocket upgrades HTTP/1.1.
    Auto,
}

impl UpstreamProtocol {
    /// Whether a WebSocket upgrade (an HTTP/1.1 mechanism) can reach the upstream.
    pub fn carries_http1(self) -> bool {
        matches!(self, Self::Http1 | Self::Auto)
    }
}

/// Size, cache and connection bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_token_bytes: usize,
    pub token_cache_entries: u64,
    pub mint_cache_entries: u64,
    pub max_header_bytes: usize,
    /// Open connections per listener; at least 1 and at most `Semaphore::MAX_PERMITS`, so the
    /// listener's semaphore can be built from it.
    pub max_connections: usize,
    /// Open connections per listener from one client IP; at least 1, at most `max_connections`.
    pub max_connections_per_peer: usize,
    /// From accept (TLS handshake included) to a complete request head, and between requests on
    /// a kept-alive HTTP/1 connection. Longer than zero and at most [`Limits::MAX_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight. Longer than zero and at
    /// most [`Limits::MAX_TIMEOUT`].
    pub idle_timeout: Duration,
    /// The longest pause between two pieces of a request body being forwarded: a client that
    /// stalls its body cannot hold an upstream slot past it (408).
    pub body_read_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl Limits {
    /// The longest connection timeout accepted: timers add it to `Instant::now()` (in hyper,
    /// too), which panics on overflow, and nothing sensible waits a day for a request head.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
}

/// Whether `uri` names a loopback host, the only place plain-HTTP key fetches may go.
pub fn is_loopback(uri: &Uri) -> bool {
    uri.host().is_some_and(|h| {
        h == "localhost"
            || h.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// The asymmetric JWS algorithms scopegate verifies; anything else is refused at load.
pub fn asymmetric_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}
