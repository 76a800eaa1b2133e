//! Minting: the down-scoped JWT scopegate forwards in place of the caller's token (RFC 9068
//! profile, `typ: at+jwt`), and scopegate's own issuer documents (JWKS, OIDC discovery).
//!
//! `exp` is the earlier of the caller's `exp` and now + the route's ttl: proxy mode never extends
//! a lifetime. Identity and delegation survive minting: `sub_id` names (original issuer, `sub`),
//! and a token derived from an exchanged one keeps its `act` chain and its binding (`resource`,
//! `bound_path`, `bound_methods`), so exchanging the upstream token again cannot launder them. Minted tokens are cached per (signing kid, issuer, subject, client, organization,
//! audience, scopes, claims, parent `exp`) and reused until half their lifetime is gone; a new
//! signing key changes the key, so rotation retires the old key's cached tokens.

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::metrics::Metrics;
use crate::principal::Principal;
use crate::signing::{SignError, Signing};
use crate::token::{Clock, UPSTREAM_TOKEN_USE};

/// One token to mint.
#[derive(Debug)]
pub(crate) struct MintRequest<'a> {
    pub principal: &'a Principal,
    pub organization: Option<&'a str>,
    pub audience: &'a str,
    /// Sorted, deduplicated.
    pub scopes: &'a [String],
    pub claims: Map<String, Value>,
    pub ttl: Duration,
}

/// A minted token.
#[derive(Debug)]
pub struct Minted {
    /// `Bearer <token>`, built once: what every forwarded request carries.
    pub authorization: http::HeaderValue,
    pub jti: String,
    pub expires_at: u64,
    /// How long it was minted for (the cache keeps it for half of that).
    pub lifetime: Duration,
}

impl Minted {
    /// The compact JWS itself.
    pub fn token(&self) -> &str {
        // Built from `format!("Bearer {token}")` of ASCII base64url, so both steps hold.
        self.authorization
            .to_str()
            .unwrap_or_default()
            .trim_start_matches("Bearer ")
    }
}

/// Why a token could not be minted (500: a server-side fault, never an open door).
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The caller's token has no lifetime left to give.
    #[error("the caller's token has no lifetime left")]
    Expired,
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The token does not fit in a header value (it always should: base64url).
    #[error("the minted token is not a valid header value")]
    Header(#[from] http::header::InvalidHeaderValue),
    /// The claims to forward or the delegation could not be serialized for the cache key.
    #[error("the claims could not be serialized")]
    Claims(#[source] serde_json::Error),
}

type Key = [u8; 32];

/// Signs and caches down-scoped tokens.
pub(crate) struct Minter {
    signing: Arc<Signing>,
    /// Bounded by entries (quick_cache: entries in place, no per-entry timer). A token is
    /// reused while it has half its lifetime left, checked on every hit; an entry past that is
    /// never hit again, so eviction drops it before live ones.
    cache: quick_cache::sync::Cache<Key, Arc<Minted>>,
    metrics: Metrics,
    clock: Clock,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("issuer", &self.signing.issuer)
            .finish_non_exhaustive()
    }
}

impl Minter {
    pub(crate) fn new(
        signing: Arc<Signing>,
        cache_entries: u64,
        metrics: Metrics,
        clock: Clock,
    ) -> Self {
        let cache =
            quick_cache::sync::Cache::new(usize::try_from(cache_entries).unwrap_or(usize::MAX));
        Self {
            signing,
            cache,
            metrics,
            clock,
        }
    }

    pub(crate) fn signing(&self) -> &Arc<Signing> {
        &self.signing
    }

    /// A token for `request`, from the cache while it has half its lifetime left.
    pub(crate) fn mint(&self, request: &MintRequest<'_>) -> Result<Arc<Minted>, MintError> {
        let key_in_use = self.signing.keys.first().ok_or(SignError::NoKey)?;
        let now = self.clock.now();
        let exp = request
            .principal
            .expires_at
            .min(now + request.ttl.as_secs());
        if exp <= now {
            return Err(MintError::Expired);
        }
        let client_id = request.principal.client_id();
        let cache_key = cache_key(&key_in_use.kid, request, client_id)?;
        if let Some(hit) = self.cache.get(&cache_key)
            && now < hit.expires_at.saturating_sub(hit.lifetime.as_secs() / 2)
        {
            self.metrics.mint_cache_hits.inc();
            return Ok(hit);
        }
        let mut claims = request.claims.clone();
        claims.insert(
            "sub".into(),
            Value::String(request.principal.subject.to_string()),
        );
        claims.insert("aud".into(), Value::String(request.audience.to_string()));
        claims.insert("scope".into(), Value::String(request.scopes.join(" ")));
        if let Some(c) = client_id {
            claims.insert("client_id".into(), Value::String(c.to_string()));
        }
        if let Some(org) = request.organization {
            claims.insert("org_id".into(), Value::String(org.to_string()));
        }
        claims.insert("token_use".into(), Value::String(UPSTREAM_TOKEN_USE.into()));
        claims.insert(
            crate::token::SUBJECT_ID_CLAIM.into(),
            crate::principal::subject_id(request.principal),
        );
        for (name, value) in request.principal.delegation() {
            claims.insert(name.into(), value.clone());
        }
        let (token, jti) = self
            .signing
            .sign(claims, now, Duration::from_secs(exp - now))?;
        let authorization = http::HeaderValue::try_from(format!("Bearer {token}"))?;
        self.metrics.tokens_minted.inc();
        let minted = Arc::new(Minted {
            authorization,
            jti,
            expires_at: exp,
            lifetime: Duration::from_secs(exp - now),
        });
        self.cache.insert(cache_key, minted.clone());
        Ok(minted)
    }

    /// Entries in the mint cache (after pending maintenance).
    pub(crate) fn cached_tokens(&self) -> u64 {
        self.cache.len() as u64
    }
}

fn cache_key(kid: &str, r: &MintRequest<'_>, client_id: Option<&str>) -> Result<Key, MintError> {
    // Serialized straight from the map (no clone); most routes copy no claims at all. A failure
    // must not collapse into "no claims" (another request's token): it fails the mint.
    let claims = if r.claims.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(&r.claims).map_err(MintError::Claims)?
    };
    let delegation = serde_json::to_vec(&r.principal.delegation().collect::<Vec<_>>())
        .map_err(MintError::Claims)?;
    let strings = [
        kid,
        &r.principal.issuer.issuer,
        r.principal.origin(),
        &r.principal.subject,
        client_id.unwrap_or(""),
        r.organization.unwrap_or(""),
        r.audience,
    ];
    let mut input = Vec::with_capacity(
        strings.iter().map(|s| s.len() + 8).sum::<usize>()
            + r.scopes.iter().map(|s| s.len() + 8).sum::<usize>()
            + claims.len()
            + 32,
    );
    // Each field is length-prefixed (and the scopes counted) so no two different requests hash
    // the same input.
    let mut field = |bytes: &[u8]| {
        input.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        input.extend_from_slice(bytes);
    };
    for s in strings {
        field(s.as_bytes());
    }
    field(&(r.scopes.len() as u64).to_be_bytes());
    for scope in r.scopes {
        field(scope.as_bytes());
    }
    field(&claims);
    field(&delegation);
    // The caller's `exp`, not the minted one: a reused token was capped by this same value.
    field(&r.principal.expires_at.to_be_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input).as_ref());
    Ok(out)
}
