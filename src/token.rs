//! The vocabulary of the tokens scopegate issues, shared by the stages that verify, mint and
//! exchange them: claim names and values, the `act` chain, the clock and token ids.

use serde_json::{Map, Value};

/// The `token_use` claim of tokens minted for upstreams. scopegate never accepts such a token
/// back at its front door: a leaked upstream token must not open it.
pub const UPSTREAM_TOKEN_USE: &str = "upstream";

/// `grant_type` of a token exchange.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `token_use` of exchanged tokens.
pub const EXCHANGE_TOKEN_USE: &str = "exchange";
/// The claim of an exchanged token that limits how many times it may be presented.
pub const USES_CLAIM: &str = "max_uses";
/// The claim that names the caller's identity as (issuer, subject) in every token scopegate
/// issues (RFC 9493 `iss_sub` subject identifier): `sub` alone is ambiguous across issuers.
pub const SUBJECT_ID_CLAIM: &str = "sub_id";

/// The claims that carry delegation from the caller's token into every token derived from it.
pub const DELEGATION_CLAIMS: [&str; 4] = ["act", "resource", "bound_path", "bound_methods"];

/// The time every token decision reads, in whole seconds since the epoch: the system clock,
/// moved forward by a skew only a test sets. One clock for verifying (`exp`, `nbf`, the verified
/// cache), minting and exchanging, so a test can let a token expire without sleeping.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    skew: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Clock {
    /// Seconds since the epoch, skew included.
    pub fn now(&self) -> u64 {
        unix_now().saturating_add(self.skew.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Moves this clock (and every copy of it) forward.
    pub fn advance(&self, by: std::time::Duration) {
        self.skew
            .fetch_add(by.as_secs(), std::sync::atomic::Ordering::Relaxed);
    }
}

/// Seconds since the epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How many `act` levels a token's claims carry.
pub fn act_depth(claims: &Map<String, Value>) -> usize {
    let mut depth = 0;
    let mut act = claims.get("act");
    while let Some(Value::Object(a)) = act {
        depth += 1;
        act = a.get("act");
    }
    depth
}

/// 128 random bits, hex; `None` if the system RNG fails.
pub fn random_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
