//! Token exchange (RFC 8693) at `POST /oauth2/token`: a configured client trades a token
//! scopegate accepts (from a trusted issuer, or one scopegate minted) for a narrower one — fewer
//! scopes, one audience, optionally bound to one resource path, and with a lifetime set by the
//! exchange rule, which may exceed the subject token's (user story 01: a build job calls back
//! hours later). `act` names the exchanging client, nested when the subject token had one.
//! Issued tokens are never cached or logged.

mod error;
#[cfg(test)]
mod tests;

pub(crate) use error::{ErrorCode, ExchangeError, err};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::principal::Principal;
use crate::signing::Signing;
use crate::token::{EXCHANGE_TOKEN_USE, GRANT_TYPE, act_depth};

/// The token type scopegate issues.
pub(crate) const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// The largest form body accepted.
pub(crate) const MAX_FORM_BYTES: usize = 16 * 1024;

/// Exchange settings: clients and rules.
#[derive(Debug)]
pub(crate) struct ExchangeConfig {
    /// `client_id` to the SHA-256 of its secret.
    pub clients: HashMap<String, [u8; 32]>,
    pub rules: Vec<Rule>,
    pub max_act_depth: usize,
    /// Failed client authentications per address per minute before it is refused.
    pub max_auth_failures_per_minute: u32,
}

/// Failed client authentications per peer address in a fixed one-minute window, to slow down
/// secret guessing. Counted per address, not per client id: a count per client id would let
/// anyone lock a real client out.
#[derive(Debug)]
pub(crate) struct AuthFailures {
    limit: u32,
    seen: moka::sync::Cache<std::net::IpAddr, Arc<AtomicU32>>,
}

impl AuthFailures {
    pub(crate) fn new(limit: u32) -> Self {
        Self {
            limit,
            seen: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }

    /// Failures per address per minute.
    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }

    /// Whether `peer` has used up its failures for this minute.
    pub(crate) fn blocked(&self, peer: std::net::IpAddr) -> bool {
        self.seen
            .get(&peer)
            .is_some_and(|n| n.load(Ordering::Relaxed) >= self.limit)
    }

    /// Counts a failure of `peer`; true when this one reached the limit (log it once).
    pub(crate) fn record(&self, peer: std::net::IpAddr) -> bool {
        let count = self
            .seen
            .get_with(peer, || Arc::new(AtomicU32::new(0)))
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        count == self.limit
    }
}

/// The answer to an address over its failure budget (429; RFC 6749 has no code for it).
pub(crate) fn too_many_failures() -> Response<Bytes> {
    let body = json!({
        "error": ErrorCode::InvalidClient.as_str(),
        "error_description": "too many failed client authentications from this address; retry later",
    });
    Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::RETRY_AFTER, "60")
        .body(Bytes::from(body.to_string()))
        .unwrap_or_else(|_| Response::new(Bytes::new()))
}

/// Which client may exchange which scopes for which audience, for how long.
#[derive(Debug)]
pub(crate) struct Rule {
    pub name: String,
    pub client: String,
    pub audience: String,
    pub scopes: Vec<String>,
    pub max_ttl: Duration,
    /// When set, a `resource` is required and its path must match this template.
    pub bind: Option<Bind>,
    /// With `bind`: the methods the issued token may be used with.
    pub bind_methods: Option<Vec<String>>,
    /// How many times the issued token may be presented at the gateway (counted in Redis).
    pub uses: Option<u32>,
}

/// A compiled binding template.
pub(crate) struct Bind {
    pub template: String,
    router: matchit::Router<()>,
}

impl std::fmt::Debug for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Bind").field(&self.template).finish()
    }
}

impl Bind {
    pub(crate) fn new(template: &str) -> Result<Self, String> {
        let mut router = matchit::Router::new();
        router.insert(template, ()).map_err(|e| e.to_string())?;
        Ok(Self {
            template: template.to_string(),
            router,
        })
    }

    fn matches(&self, path: &str) -> bool {
        self.router.at(path).is_ok()
    }
}

/// The SHA-256 of a client secret, as stored.
pub(crate) fn secret_hash(secret: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret).as_ref());
    out
}

/// The parsed form of a token request.
#[derive(Debug, Default)]
pub(crate) struct Form {
    fields: Vec<(String, String)>,
}

impl Form {
    pub(crate) fn parse(body: &[u8]) -> Self {
        Self {
            fields: form_urlencoded::parse(body).into_owned().collect(),
        }
    }

    /// The one value of `name`; a parameter given twice is an error (RFC 6749 section 3.2).
    pub(crate) fn one(&self, name: &str) -> Result<Option<&str>, ExchangeError> {
        let mut values = self
            .fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(err(
                ErrorCode::InvalidRequest,
                format!("`{name}` is given more than once"),
            ));
        }
        Ok(first.filter(|v| !v.is_empty()))
    }
}

impl ExchangeConfig {
    /// Authenticates the client by `client_secret_basic` or `client_secret_post` (one of them).
    pub(crate) fn authenticate(
        &self,
        headers: &HeaderMap,
        form: &Form,
    ) -> Result<String, ExchangeError> {
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
            });
        let (id, secret) = match (basic, form.one("client_secret")?) {
            (Some(_), Some(_)) => {
                return Err(err(
                    ErrorCode::InvalidRequest,
                    "use one client authentication method, not two",
                ));
            }
            (Some(b), None) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|_| invalid_client())?;
                let text = String::from_utf8(decoded).map_err(|_| invalid_client())?;
                let (id, secret) = text.split_once(':').ok_or_else(invalid_client)?;
                (form_decode(id), form_decode(secret))
            }
            (None, Some(secret)) => (
                form.one("client_id")?
                    .ok_or_else(invalid_client)?
                    .to_string(),
                secret.to_string(),
            ),
            (None, None) => return Err(invalid_client()),
        };
        let expected = self.clients.get(&id).ok_or_else(invalid_client)?;
        // Comparing fixed-size digests in constant time: neither length nor content leaks.
        aws_lc_rs::constant_time::verify_slices_are_equal(
            &secret_hash(secret.as_bytes()),
            expected,
        )
        .map_err(|_| invalid_client())?;
        Ok(id)
    }

    /// Checks a request from `client` for `subject` and returns the claims of the token to issue
    /// (without `iss`, `iat`, `jti`, which the signer adds) and its lifetime.
    pub(crate) fn grant(
        &self,
        client: &str,
        subject: &Principal,
        form: &Form,
    ) -> Result<Granted<'_>, ExchangeError> {
        match form.one("requested_token_type")? {
            None | Some(ACCESS_TOKEN_TYPE) => {}
            Some(_) => {
                return Err(err(
                    ErrorCode::InvalidRequest,
                    "only access tokens can be issued",
                ));
            }
        }
        let candidates: Vec<&Rule> = self.rules.iter().filter(|r| r.client == client).collect();
        if candidates.is_empty() {
            return Err(err(
                ErrorCode::UnauthorizedClient,
                "this client may not exchange tokens",
            ));
        }
        let rule = match form.one("audience")? {
            Some(aud) => candidates
                .iter()
                .find(|r| r.audience == aud)
                .ok_or_else(|| {
                    err(
                        ErrorCode::InvalidTarget,
                        "this client may not obtain tokens for the requested audience",
                    )
                })?,
            None if candidates.len() == 1 => &candidates[0],
            None => {
                return Err(err(
                    ErrorCode::InvalidTarget,
                    "name the `audience` of the token",
                ));
            }
        };
        let requested_binding = match (form.one("resource")?, &rule.bind) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(err(
                    ErrorCode::InvalidTarget,
                    "this exchange does not bind tokens to a resource",
                ));
            }
            (None, Some(bind)) => {
                return Err(err(
                    ErrorCode::InvalidTarget,
                    format!("a `resource` matching `{}` is required", bind.template),
                ));
            }
            (Some(resource), Some(bind)) => {
                let uri: http::Uri = resource
                    .parse()
                    .map_err(|_| err(ErrorCode::InvalidTarget, "`resource` is not a URL"))?;
                if uri.scheme().is_none() || uri.query().is_some() {
                    return Err(err(
                        ErrorCode::InvalidTarget,
                        "`resource` must be an absolute URL without a query",
                    ));
                }
                let path = crate::normalize::normalize(uri.path()).map_err(|e| {
                    err(ErrorCode::InvalidTarget, format!("`resource`: {e}")).caused_by(e)
                })?;
                if !bind.matches(&path) {
                    return Err(err(
                        ErrorCode::InvalidTarget,
                        format!("`resource` does not match `{}`", bind.template),
                    ));
                }
                Some((resource.to_string(), path))
            }
        };
        let bound_path = inherit_binding(subject, requested_binding)?;
        let requested: Vec<String> = match form.one("scope")? {
            Some(s) => s
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            None => rule
                .scopes
                .iter()
                .filter(|s| subject.has_scope(s))
                .cloned()
                .collect(),
        };
        if requested.is_empty() {
            return Err(err(ErrorCode::InvalidScope, "no scope to grant"));
        }
        if requested.iter().any(|s| !rule.scopes.contains(s)) {
            return Err(err(
                ErrorCode::InvalidScope,
                "a requested scope may not be exchanged for this audience",
            ));
        }
        if requested.iter().any(|s| !subject.has_scope(s)) {
            return Err(err(
                ErrorCode::InvalidScope,
                "the subject token does not hold a requested scope",
            ));
        }
        let depth = act_depth(&subject.claims) + 1;
        if depth > self.max_act_depth {
            return Err(err(
                ErrorCode::InvalidGrant,
                format!(
                    "the delegation chain would be {depth} deep; at most {} is allowed",
                    self.max_act_depth
                ),
            ));
        }
        let lifetime = match form.one("expires_in")? {
            None => rule.max_ttl,
            Some(s) => Duration::from_secs(s.parse::<u64>().map_err(|_| {
                err(
                    ErrorCode::InvalidRequest,
                    "`expires_in` is not a number of seconds",
                )
            })?)
            .min(rule.max_ttl),
        };
        if lifetime.is_zero() {
            return Err(err(
                ErrorCode::InvalidRequest,
                "`expires_in` must be positive",
            ));
        }
        let mut scopes = requested;
        scopes.sort_unstable();
        scopes.dedup();
        let mut act = json!({"sub": client});
        if let Some(previous) = subject.claims.get("act") {
            act["act"] = previous.clone();
        }
        let mut claims = Map::new();
        claims.insert("sub".into(), Value::String(subject.subject.to_string()));
        claims.insert(
            crate::token::SUBJECT_ID_CLAIM.into(),
            crate::principal::subject_id(subject),
        );
        claims.insert("aud".into(), Value::String(rule.audience.clone()));
        claims.insert("scope".into(), Value::String(scopes.join(" ")));
        claims.insert("act".into(), act);
        claims.insert("token_use".into(), Value::String(EXCHANGE_TOKEN_USE.into()));
        if let Some(c) = subject.client_id() {
            claims.insert("client_id".into(), Value::String(c.to_string()));
        }
        if let Some(org) = subject.claims.get("org_id").filter(|v| v.is_string()) {
            claims.insert("org_id".into(), org.clone());
        }
        if let Some((resource, path)) = bound_path {
            claims.insert("resource".into(), Value::String(resource));
            claims.insert("bound_path".into(), Value::String(path));
        }
        // Methods bound by this rule, else those the subject token was bound to.
        let methods = match (&rule.bind_methods, subject.claims.get("bound_methods")) {
            (Some(ms), _) => Some(Value::from(ms.clone())),
            (None, inherited) => inherited.cloned(),
        };
        if let Some(ms) = methods {
            claims.insert("bound_methods".into(), ms);
        }
        if let Some(n) = rule.uses {
            claims.insert(crate::token::USES_CLAIM.into(), Value::from(n));
        }
        Ok(Granted {
            rule: &rule.name,
            claims,
            lifetime,
        })
    }
}

/// An exchange that a rule allows: the claims to sign and for how long.
#[derive(Debug)]
pub(crate) struct Granted<'a> {
    /// The rule's name, for the log.
    pub(crate) rule: &'a str,
    pub(crate) claims: Map<String, Value>,
    pub(crate) lifetime: Duration,
}

/// The binding of the token to issue. A subject token that is bound (an exchanged token, or an
/// upstream token minted from one) passes its binding on: it may be named again, never changed
/// to another resource, and never dropped.
fn inherit_binding(
    subject: &Principal,
    requested: Option<(String, String)>,
) -> Result<Option<(String, String)>, ExchangeError> {
    let bound = subject.claims.get("bound_path").and_then(Value::as_str);
    match (bound, requested) {
        (None, requested) => Ok(requested),
        (Some(b), Some((_, path))) if path != b => Err(err(
            ErrorCode::InvalidTarget,
            "the subject token is bound to another resource",
        )),
        (Some(b), requested) => {
            let resource = subject
                .claims
                .get("resource")
                .and_then(Value::as_str)
                .map(str::to_string);
            Ok(Some(requested.unwrap_or((
                resource.unwrap_or_else(|| b.to_string()),
                b.to_string(),
            ))))
        }
    }
}

fn invalid_client() -> ExchangeError {
    err(ErrorCode::InvalidClient, "client authentication failed")
}

/// `application/x-www-form-urlencoded` decoding of one Basic credential part (RFC 6749 2.3.1).
fn form_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Validates the request's framing: `grant_type` and `subject_token_type`; returns the subject token.
pub(crate) fn subject_token(form: &Form) -> Result<&str, ExchangeError> {
    match form.one("grant_type")? {
        Some(GRANT_TYPE) => {}
        Some(_) => {
            return Err(err(
                ErrorCode::UnsupportedGrantType,
                "this grant type is not supported; use token exchange",
            ));
        }
        None => return Err(err(ErrorCode::InvalidRequest, "`grant_type` is missing")),
    }
    match form.one("subject_token_type")? {
        Some(ACCESS_TOKEN_TYPE | JWT_TOKEN_TYPE) => {}
        Some(_) => {
            return Err(err(
                ErrorCode::InvalidRequest,
                "this subject token type is not supported",
            ));
        }
        None => {
            return Err(err(
                ErrorCode::InvalidRequest,
                "`subject_token_type` is missing",
            ));
        }
    }
    if form.one("actor_token")?.is_some() {
        return Err(err(
            ErrorCode::InvalidRequest,
            "actor tokens are not supported; the authenticated client is the actor",
        ));
    }
    form.one("subject_token")?
        .ok_or_else(|| err(ErrorCode::InvalidRequest, "`subject_token` is missing"))
}

/// Signs the granted claims.
pub(crate) fn issue(
    signing: &Signing,
    claims: Map<String, Value>,
    lifetime: Duration,
    now: u64,
) -> Result<Value, ExchangeError> {
    let scope = claims.get("scope").cloned().unwrap_or(Value::Null);
    let (token, _jti) = signing
        .sign(claims, now, lifetime)
        .map_err(|e| err(ErrorCode::ServerError, "signing failed").caused_by(e))?;
    Ok(json!({
        "access_token": token,
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
        "scope": scope,
    }))
}

/// The JSON answer for a success or an error, never cached.
pub(crate) fn response(result: Result<Value, ExchangeError>) -> Response<Bytes> {
    let (status, body, basic) = match result {
        Ok(v) => (StatusCode::OK, v, false),
        Err(e) => (
            e.code.status(),
            json!({"error": e.code.as_str(), "error_description": e.description}),
            e.code == ErrorCode::InvalidClient,
        ),
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::PRAGMA, "no-cache");
    if basic {
        builder = builder.header(header::WWW_AUTHENTICATE, r#"Basic realm="scopegate""#);
    }
    builder
        .body(Bytes::from(body.to_string()))
        .unwrap_or_else(|_| Response::new(Bytes::new()))
}
