//! Every default of the configuration, named once: the sections read them, the README documents
//! them, and scopegate's own issuer (built by the gateway) uses the issuer ones.

use std::time::Duration;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// Issuers.
/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY: Duration = secs(30);
/// The most leeway accepted.
pub const MAX_LEEWAY: Duration = secs(300);
/// How often an issuer's keys are fetched in the background.
pub const REFRESH_INTERVAL: Duration = secs(300);
/// At most one on-demand JWKS fetch per issuer per this long.
pub const UNKNOWN_KID_COOLDOWN: Duration = secs(30);
/// The longest remaining lifetime a token may have.
pub const MAX_TOKEN_AGE: Duration = secs(24 * 3600);
/// A JWKS or discovery fetch.
pub const FETCH_TIMEOUT: Duration = secs(5);

// Upstreams.
pub const CONNECT_TIMEOUT: Duration = secs(5);
/// Until the upstream's response headers.
pub const UPSTREAM_TIMEOUT: Duration = secs(30);
pub const UPSTREAM_MAX_CONCURRENCY: usize = 1024;

// Limits.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
pub const TOKEN_CACHE_ENTRIES: u64 = 10_000;
pub const MINT_CACHE_ENTRIES: u64 = 10_000;
pub const HEADER_READ_TIMEOUT: Duration = secs(10);
pub const IDLE_TIMEOUT: Duration = secs(60);
pub const BODY_READ_TIMEOUT: Duration = secs(30);
pub const SHUTDOWN_GRACE: Duration = secs(30);

// Permissions.
/// A whole http backend call, waiting for a slot included.
pub const PERMISSIONS_TIMEOUT: Duration = secs(2);
pub const PERMISSIONS_MAX_CONCURRENCY: usize = 64;
/// Connections of the `postgres` permissions backend's pool at most.
pub const POSTGRES_POOL_SIZE: usize = 16;
/// The longest a Redis command may take: Redis answers in well under a millisecond when healthy.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// Prepended to every key scopegate writes in Redis.
pub const REDIS_KEY_PREFIX: &str = "scopegate:";
pub const PERMISSIONS_CACHE_ENTRIES: u64 = 10_000;
/// When the backend's answer names no `ttl`.
pub const PERMISSIONS_DEFAULT_TTL: Duration = secs(60);
/// The cap on the backend's `ttl`.
pub const PERMISSIONS_MAX_TTL: Duration = secs(300);
/// How long "not a member" is kept.
pub const NEGATIVE_TTL: Duration = secs(10);
/// How long a stale answer may be served with `on_error: stale`.
pub const STALE_FOR: Duration = secs(300);

// Minting and exchange.
/// The longest `forward.ttl` accepted.
pub const MAX_FORWARD_TTL: Duration = secs(24 * 3600);
/// An exchange rule's lifetime when it names none.
pub const EXCHANGE_MAX_TTL: Duration = secs(3600);
/// The longest exchange `max_ttl` accepted.
pub const EXCHANGE_TTL_BOUND: Duration = secs(30 * 24 * 3600);
pub const MAX_ACT_DEPTH: usize = 2;
pub const MAX_AUTH_FAILURES_PER_MINUTE: u32 = 10;

// WebSocket routes.
/// No byte either way for this long closes a WebSocket connection.
pub const WEBSOCKET_IDLE_TIMEOUT: Duration = secs(300);
/// The lifetime of a public route's WebSocket connections (others end with their minted token).
pub const PUBLIC_WEBSOCKET_MAX_LIFETIME: Duration = secs(3600);

// CORS.
/// How long a browser may cache a preflight answer.
pub const CORS_MAX_AGE: Duration = secs(600);
/// The longest `max_age` accepted (browsers cap it lower: Chromium at 2h, Firefox at 24h).
pub const CORS_MAX_AGE_BOUND: Duration = secs(24 * 3600);
/// Request headers a page may send when `allow_headers` is not given.
pub const CORS_ALLOW_HEADERS: [&str; 2] = ["authorization", "content-type"];
/// Response headers a page may always read: why scopegate refused, and when to retry.
pub const CORS_EXPOSE_HEADERS: [&str; 2] = ["www-authenticate", "retry-after"];
