//! Authentication: takes the bearer token from the request, verifies it against the issuer it
//! claims (if trusted), and yields the verified [`Principal`]. Verified tokens are cached by
//! the SHA-256 of the whole token, bounded in entries and never past their `exp`, so a repeated
//! token costs a hash and a lookup instead of a signature check.

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use crate::jwks::IssuerKeys;
use crate::policy::{IssuerConfig, Limits, ScopesFormat};
use crate::principal::{KeptClaims, Principal, TokenKind};
use crate::token::{Clock, SUBJECT_ID_CLAIM};

/// Why a request is not authenticated. All are 401 except where noted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("the request has no bearer token")]
    Missing,
    /// More than one `Authorization` header (400).
    #[error("the request has more than one Authorization header")]
    MultipleHeaders,
    /// `Authorization` is not `Bearer <token>`.
    #[error("the Authorization header is not of the form `Bearer <token>`")]
    NotBearer,
    /// The token is longer than `limits.max_token_bytes`.
    #[error("the token is larger than {0} bytes")]
    TooLarge(usize),
    /// Not a JWS compact serialization with a JSON header and payload.
    #[error("the token is malformed")]
    Malformed,
    /// The header has `crit`, which scopegate does not process.
    #[error("the token header has a `crit` parameter")]
    CriticalHeader,
    /// `iss` names no configured issuer.
    #[error("the token's issuer is not trusted")]
    UntrustedIssuer,
    /// `alg` is not in the issuer's list (includes `none` and HS*).
    #[error("the token's algorithm is not allowed for its issuer")]
    AlgorithmNotAllowed,
    /// The issuer requires a header `typ` the token does not have.
    #[error("the token's `typ` header is not the one its issuer requires")]
    WrongType,
    /// No key with the token's `kid` (after a refresh) fits its algorithm.
    #[error("no key of the issuer matches the token's key id")]
    UnknownKey,
    /// The issuer's keys have never been loaded (503).
    #[error("the issuer's keys are not available")]
    KeysUnavailable,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `aud` names none of the issuer's audiences.
    #[error("the token is not for this audience")]
    WrongAudience,
    /// A token scopegate minted for an upstream: never accepted back at the front door.
    #[error("the token was issued for an upstream, not for this gateway")]
    UpstreamToken,
    /// `exp` is further in the future than the issuer's `max_token_age`.
    #[error("the token's lifetime is longer than its issuer's tokens may have")]
    LifetimeTooLong,
    /// An exchanged token whose `act` chain is deeper than allowed.
    #[error("the token's delegation chain is too deep")]
    DelegationTooDeep,
    /// A claim scopegate needs is absent, or of the wrong JSON type.
    #[error("the token's `{0}` claim is missing or of the wrong type")]
    BadClaim(&'static str),
}

type TokenHash = [u8; 32];

/// Verifies bearer tokens against the trusted issuers.
#[derive(Debug)]
pub struct Verifier {
    issuers: HashMap<String, Arc<IssuerKeys>>,
    cache: quick_cache::sync::Cache<TokenHash, Verified>,
    /// What a principal keeps of its token's claims.
    kept: KeptClaims,
    scope_sets: ScopeSets,
    max_token_bytes: usize,
    /// scopegate's own issuer (`iss` of minted and exchanged tokens).
    own_issuer: String,
    max_act_depth: usize,
    clock: Clock,
}

/// A verified token: its principal, and the key set its signature was checked against. A hit
/// counts only while that same set is the issuer's current one: after a JWKS refresh the token
/// is verified again, so a key that left the issuer's JWKS stops its tokens at once.
#[derive(Debug, Clone)]
struct Verified {
    principal: Arc<Principal>,
    /// The issuer whose keys checked it, and the set they were then.
    issuer: Arc<IssuerKeys>,
    keys: Arc<crate::jwks::KeySet>,
}

/// The scope sets of verified tokens, each kept once: most tokens of a deployment carry one of a
/// few sets, and a cached principal then points at the shared one instead of holding its own
/// strings. Bounded: past [`MAX_SCOPE_SETS`] sets, new ones are not interned (but still used).
#[derive(Debug, Default)]
struct ScopeSets(dashmap::DashMap<Arc<[String]>, ()>);

/// Distinct scope sets kept at most.
const MAX_SCOPE_SETS: usize = 4096;

impl ScopeSets {
    fn intern(&self, scopes: Arc<[String]>) -> Arc<[String]> {
        if let Some(shared) = self.0.get(&*scopes) {
            return shared.key().clone();
        }
        if self.0.len() < MAX_SCOPE_SETS {
            self.0.insert(scopes.clone(), ());
        }
        scopes
    }
}

#[derive(serde::Deserialize)]
struct Unverified {
    iss: Option<Value>,
}

impl Verifier {
    /// `issuers` includes scopegate's own (named by `own_issuer`), whose tokens are told apart
    /// by `token_use`; exchanged tokens may carry at most `max_act_depth` `act` levels.
    pub fn new(
        issuers: impl IntoIterator<Item = Arc<IssuerKeys>>,
        limits: &Limits,
        own_issuer: &str,
        max_act_depth: usize,
        kept: KeptClaims,
        clock: Clock,
    ) -> Self {
        // Bounded by entries. An entry past its token's `exp` is never served (checked on every
        // hit); it is never hit again either, so eviction, which keeps entries that are hit,
        // drops it before live ones.
        let entries = usize::try_from(limits.token_cache_entries).unwrap_or(usize::MAX);
        let cache = quick_cache::sync::Cache::new(entries);
        Self {
            kept,
            scope_sets: ScopeSets::default(),
            issuers: issuers
                .into_iter()
                .map(|k| (k.config.issuer.clone(), k))
                .collect(),
            cache,
            max_token_bytes: limits.max_token_bytes,
            own_issuer: own_issuer.to_string(),
            max_act_depth,
            clock,
        }
    }

    /// The request's principal, from its single `Authorization: Bearer` header.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Principal>, AuthError> {
        let principal = self.verify(bearer(headers)?).await?;
        // A token minted for an upstream must not open the front door if it leaks.
        if principal.kind == TokenKind::Upstream {
            return Err(AuthError::UpstreamToken);
        }
        Ok(principal)
    }

    /// Verifies one compact JWS, of any kind scopegate accepts (the front door further refuses
    /// upstream tokens). The size bound applies to every caller, the token endpoint included.
    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthError::TooLarge(self.max_token_bytes));
        }
        let hash = token_hash(token);
        let now = self.clock.now();
        if let Some(hit) = self.cache.get(&hash)
            && hit.principal.expires_at > now
            && hit.issuer.is_current(&hit.keys)
        {
            return Ok(hit.principal);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.crit.is_some() {
            return Err(AuthError::CriticalHeader);
        }
        // Only to pick the issuer: nothing from this read is trusted before the signature checks.
        let unverified: Unverified = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| AuthError::Malformed)?;
        let iss = match unverified.iss {
            Some(Value::String(s)) => s,
            _ => return Err(AuthError::BadClaim("iss")),
        };
        let keys = self.issuers.get(&iss).ok_or(AuthError::UntrustedIssuer)?;
        let issuer = &keys.config;
        if !issuer.algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        if let Some(expected) = &issuer.typ
            && !header
                .typ
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case(expected))
        {
            return Err(AuthError::WrongType);
        }
        let kid = header.kid.as_deref();
        let mut set = keys.snapshot();
        if set
            .as_ref()
            .is_none_or(|s| s.find(kid, header.alg).is_none())
        {
            keys.refresh_for_unknown_kid().await;
            set = keys.snapshot();
        }
        let set = set.ok_or(AuthError::KeysUnavailable)?;
        let key = set.find(kid, header.alg).ok_or(AuthError::UnknownKey)?;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(
            token,
            &key.key,
            &validation(issuer, header.alg),
        )
        .map_err(map_jwt_error)?
        .claims;
        check_times(&claims, now, issuer.leeway.as_secs())?;
        let own = (issuer.issuer == self.own_issuer).then_some(self.max_act_depth);
        let mut principal = principal(issuer, claims, &hash, own, now)?;
        self.kept.keep(&mut principal.claims);
        principal.scopes = self.scope_sets.intern(principal.scopes);
        let principal = Arc::new(principal);
        self.cache.insert(
            hash,
            Verified {
                principal: principal.clone(),
                issuer: keys.clone(),
                keys: set.clone(),
            },
        );
        Ok(principal)
    }

    /// Whether every issuer has keys loaded (readiness).
    pub fn ready(&self) -> bool {
        self.issuers.values().all(|k| k.is_loaded())
    }

    /// Entries in the verified-token cache.
    pub fn cached_tokens(&self) -> u64 {
        self.cache.len() as u64
    }
}

/// The one bearer token of the request.
fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::Missing)?;
    if values.next().is_some() {
        return Err(AuthError::MultipleHeaders);
    }
    let value = value.to_str().map_err(|_| AuthError::NotBearer)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(AuthError::NotBearer);
    }
    Ok(token)
}

fn token_hash(token: &str) -> TokenHash {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn validation(issuer: &IssuerConfig, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    // `exp` and `nbf` are checked by `check_times` against scopegate's clock; the claims stay
    // required here, so a token without `exp` is still refused by the library.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = true;
    v.set_issuer(&[&issuer.issuer]);
    v.set_audience(&issuer.audiences);
    // Required as *parsed*: a claim of the wrong JSON type counts as missing, never as absent-and-fine.
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v
}

/// `exp` (required, an integer) must not be more than `leeway` seconds past; `nbf`, when
/// present, must be an integer no more than `leeway` seconds ahead (RFC 7519 sections 4.1.4-5).
fn check_times(claims: &Map<String, Value>, now: u64, leeway: u64) -> Result<(), AuthError> {
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(AuthError::BadClaim("exp"))?;
    if exp.saturating_add(leeway) < now {
        return Err(AuthError::Expired);
    }
    match claims.get("nbf") {
        None => Ok(()),
        Some(nbf) => match nbf.as_u64() {
            Some(nbf) if nbf > now.saturating_add(leeway) => Err(AuthError::NotYetValid),
            Some(_) => Ok(()),
            None => Err(AuthError::BadClaim("nbf")),
        },
    }
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::UntrustedIssuer,
        ErrorKind::InvalidAlgorithm => AuthError::AlgorithmNotAllowed,
        ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) => {
            AuthError::BadClaim(claim_name(c))
        }
        ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidToken => AuthError::Malformed,
        _ => AuthError::BadSignature,
    }
}

fn claim_name(c: &str) -> &'static str {
    match c {
        "exp" => "exp",
        "nbf" => "nbf",
        "iss" => "iss",
        "aud" => "aud",
        "sub" => "sub",
        _ => "unknown",
    }
}

/// A principal from claims given by hand (`explain`, policy tests): the same type checks as a
/// verified token's claims, without a signature.
pub fn principal_from_claims(
    issuer: &Arc<IssuerConfig>,
    claims: Map<String, Value>,
) -> Result<Principal, AuthError> {
    let hash = token_hash(&Value::Object(claims.clone()).to_string());
    principal(issuer, claims, &hash, None, crate::token::unix_now())
}

/// Builds the principal from verified claims. `own` is `Some(max act depth)` when the issuer is
/// scopegate itself: then `token_use` says which kind of scopegate token it is.
fn principal(
    issuer: &Arc<IssuerConfig>,
    claims: Map<String, Value>,
    hash: &TokenHash,
    own: Option<usize>,
    now: u64,
) -> Result<Principal, AuthError> {
    let kind = match own {
        None => TokenKind::Idp,
        Some(max_depth) => match claims.get("token_use").and_then(Value::as_str) {
            Some(crate::token::UPSTREAM_TOKEN_USE) => TokenKind::Upstream,
            Some(crate::token::EXCHANGE_TOKEN_USE) => {
                if crate::token::act_depth(&claims) > max_depth {
                    return Err(AuthError::DelegationTooDeep);
                }
                TokenKind::Exchanged(Box::new(crate::principal::Binding {
                    audience: claims
                        .get("aud")
                        .and_then(Value::as_str)
                        .ok_or(AuthError::BadClaim("aud"))?
                        .to_string(),
                    bound_path: match claims.get("bound_path") {
                        None => None,
                        Some(Value::String(p)) => Some(p.clone()),
                        Some(_) => return Err(AuthError::BadClaim("unknown")),
                    },
                    bound_methods: match claims.get("bound_methods") {
                        None => None,
                        Some(Value::Array(ms)) => Some(
                            ms.iter()
                                .map(|m| m.as_str().map(str::to_string))
                                .collect::<Option<_>>()
                                .ok_or(AuthError::BadClaim("unknown"))?,
                        ),
                        Some(_) => return Err(AuthError::BadClaim("unknown")),
                    },
                    uses: match claims.get(crate::token::USES_CLAIM) {
                        None => None,
                        Some(v) => Some(
                            v.as_u64()
                                .and_then(|n| u32::try_from(n).ok())
                                .ok_or(AuthError::BadClaim("unknown"))?,
                        ),
                    },
                }))
            }
            _ => return Err(AuthError::UntrustedIssuer),
        },
    };
    let subject = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(AuthError::BadClaim("sub")),
    };
    let origin = match own {
        None => None,
        Some(_) => Some(origin_issuer(&claims, &subject).ok_or(AuthError::BadClaim("sub_id"))?),
    };
    let expires_at = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(AuthError::BadClaim("exp"))?;
    if expires_at.saturating_sub(now) > issuer.max_token_age.as_secs() {
        return Err(AuthError::LifetimeTooLong);
    }
    let mut scopes: Vec<String> = match (claims.get(&issuer.scopes_claim), issuer.scopes_format) {
        (None, _) => Vec::new(),
        (Some(Value::String(s)), ScopesFormat::Space) => s
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        (Some(Value::Array(items)), ScopesFormat::Array) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or(AuthError::BadClaim("scope"))?,
        _ => return Err(AuthError::BadClaim("scope")),
    };
    scopes.sort_unstable();
    scopes.dedup();
    let token_id = match claims.get("jti") {
        Some(Value::String(j)) if j.len() <= 128 => j.clone(),
        _ => hash[..8].iter().map(|b| format!("{b:02x}")).collect(),
    };
    let issued_at = claims.get("iat").and_then(Value::as_u64).unwrap_or(0);
    Ok(Principal {
        kind,
        issuer: issuer.clone(),
        origin: origin.map(String::into_boxed_str),
        subject: subject.into_boxed_str(),
        scopes: scopes.into(),
        claims,
        expires_at,
        issued_at,
        token_id: token_id.into_boxed_str(),
    })
}

/// The original issuer of a scopegate token's subject, from its `sub_id` (which must name the
/// same `sub`).
fn origin_issuer(claims: &Map<String, Value>, subject: &str) -> Option<String> {
    let id = claims.get(SUBJECT_ID_CLAIM)?.as_object()?;
    (id.get("format")?.as_str()? == "iss_sub" && id.get("sub")?.as_str()? == subject)
        .then(|| id.get("iss")?.as_str().map(str::to_string))
        .flatten()
}
