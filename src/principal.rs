//! The verified caller every stage after authentication reads: who (issuer, subject), with which
//! scopes and claims, from which kind of token. Its own module so that reading the caller does
//! not mean importing the verifier.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::policy::IssuerConfig;

#[cfg(test)]
mod tests;

/// What kind of token a principal came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// From a trusted identity provider.
    Idp,
    /// Minted by scopegate for an upstream: accepted as a token-exchange subject, never at the
    /// front door.
    Upstream,
    /// Issued by scopegate's token exchange: good only on routes of its audience and binding
    /// (boxed: rare, and every cached principal would otherwise carry its size).
    Exchanged(Box<Binding>),
}

/// What an exchanged token is good for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub audience: String,
    /// The one normalized path the token is bound to, if any.
    pub bound_path: Option<String>,
    /// The methods the token is bound to, if the exchange rule bound them.
    pub bound_methods: Option<Vec<String>>,
    /// How many times the token may be presented across all replicas (`uses:` of its rule).
    pub uses: Option<u32>,
}

/// A verified caller.
#[derive(Debug)]
pub struct Principal {
    pub kind: TokenKind,
    pub issuer: Arc<IssuerConfig>,
    /// For tokens scopegate issued, the identity provider the subject belongs to (the original
    /// issuer carried in `sub_id`); `None` when it is the token's issuer, the usual case, which
    /// then costs a cached principal no copy. Read it with [`Principal::origin`].
    pub origin: Option<Box<str>>,
    pub subject: Box<str>,
    /// Sorted, without duplicates; principals with the same set share one (the verifier interns
    /// them).
    pub scopes: Arc<[String]>,
    /// Every claim of the verified token.
    pub claims: Map<String, Value>,
    /// Seconds since the epoch.
    pub expires_at: u64,
    /// `iat`, seconds since the epoch (0 without one: a revocation by subject then covers it).
    pub issued_at: u64,
    /// Safe to log: the token's `jti` if it has one, else a prefix of its SHA-256.
    pub token_id: Box<str>,
}

impl Principal {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes
            .binary_search_by(|s| s.as_str().cmp(scope))
            .is_ok()
    }
}

#[cfg(test)]
impl Principal {
    /// alice of `https://idp.example`, from an IdP token with `claims` and scope `read`, valid
    /// for `expires_in` seconds: for unit tests to adjust with struct update syntax.
    pub(crate) fn for_tests(claims: Value, expires_in: u64) -> Self {
        let issuer = Arc::new(IssuerConfig {
            issuer: "https://idp.example".into(),
            ..IssuerConfig::for_tests()
        });
        Principal {
            kind: TokenKind::Idp,
            origin: None,
            issuer,
            subject: "alice".into(),
            scopes: vec!["read".into()].into(),
            claims: claims.as_object().cloned().unwrap_or_default(),
            expires_at: crate::token::unix_now() + expires_in,
            issued_at: crate::token::unix_now(),
            token_id: "t".into(),
        }
    }
}

impl Principal {
    /// The identity provider the subject belongs to: identity is (origin, subject).
    pub fn origin(&self) -> &str {
        self.origin.as_deref().unwrap_or(&self.issuer.issuer)
    }

    /// The caller's client: `azp`, else `client_id`.
    pub fn client_id(&self) -> Option<&str> {
        self.claims
            .get("azp")
            .or_else(|| self.claims.get("client_id"))
            .and_then(Value::as_str)
    }

    /// The caller's delegation claims, to copy into a derived token.
    pub fn delegation(&self) -> impl Iterator<Item = (&'static str, &Value)> {
        crate::token::DELEGATION_CLAIMS
            .into_iter()
            .filter_map(|name| self.claims.get(name).map(|v| (name, v)))
    }
}

/// Which claims a verified token keeps in its [`Principal`] (and so in the verified-token
/// cache): what the pipeline reads, decided once per configuration. A typical token's claims
/// map is most of a cached entry's memory, and most of it is never read again.
#[derive(Debug, Clone)]
pub enum KeptClaims {
    /// Every claim: some route's condition reads `token`.
    All,
    /// [`READ_CLAIMS`], the delegation claims, and these (the claims routes take their
    /// organization from).
    Named(std::collections::BTreeSet<String>),
}

/// The claims stages read by name from a principal besides the delegation claims
/// ([`crate::token::DELEGATION_CLAIMS`], copied into derived tokens and checked by exchange): the
/// client (`azp`, `client_id`) and a scopegate token's organization. A stage that reads another
/// claim by name must add it here.
pub(crate) const READ_CLAIMS: [&str; 3] = ["azp", "client_id", "org_id"];

impl KeptClaims {
    /// The claims a verified token must keep for these routes: all when a condition reads
    /// `token`, else the ones stages read by name and those organizations are taken from.
    pub(crate) fn for_routes(routes: &[Arc<crate::policy::Route>]) -> Self {
        if routes
            .iter()
            .any(|r| r.condition.as_ref().is_some_and(|c| c.reads_token()))
        {
            return KeptClaims::All;
        }
        KeptClaims::Named(
            routes
                .iter()
                .filter_map(|r| match &r.organization {
                    Some(crate::policy::OrgSource::Claim(name)) => Some(name.clone()),
                    _ => None,
                })
                .collect(),
        )
    }

    /// Drops from `claims` what the pipeline will not read.
    pub(crate) fn keep(&self, claims: &mut Map<String, Value>) {
        if let Self::Named(names) = self {
            // Moved into a new map: one emptied by `retain` still holds its node (over 600
            // bytes), and most tokens keep nothing.
            *claims = std::mem::take(claims)
                .into_iter()
                .filter(|(name, _)| {
                    let name = name.as_str();
                    READ_CLAIMS.contains(&name)
                        || crate::token::DELEGATION_CLAIMS.contains(&name)
                        || names.contains(name)
                })
                .collect();
        }
    }
}

/// The `sub_id` claim for `principal`: its original issuer and subject.
pub(crate) fn subject_id(principal: &Principal) -> Value {
    serde_json::json!({"format": "iss_sub", "iss": principal.origin(), "sub": principal.subject})
}
