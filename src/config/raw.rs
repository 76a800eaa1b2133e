//! The YAML schema as serde sees it. Every struct denies unknown fields: a typo in a security
//! policy must fail loudly. Nothing here is used at request time; `config::load` validates these
//! into the typed configuration.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

mod policy;
mod tls;
pub(crate) use policy::*;
pub(crate) use tls::{ClientTls, Tls, TlsVersion};

/// `scopegate.yaml`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Server {
    pub(crate) listen: Listen,
    /// Threads serving requests (default: one per CPU core); read at start only.
    #[serde(default)]
    pub(crate) workers: Option<u64>,
    #[serde(default)]
    pub(crate) tls: Option<Tls>,
    /// Policy files or folders (every `*.yaml`/`*.yml` in it), relative to this file.
    pub(crate) policies: Vec<String>,
    #[serde(default)]
    pub(crate) issuers: BTreeMap<String, Issuer>,
    #[serde(default)]
    pub(crate) upstreams: BTreeMap<String, Upstream>,
    #[serde(default)]
    pub(crate) limits: Limits,
    pub(crate) signing: Signing,
    #[serde(default)]
    pub(crate) permissions: Option<Permissions>,
    #[serde(default)]
    pub(crate) exchange: Option<Exchange>,
    #[serde(default)]
    pub(crate) forward_auth: Option<ForwardAuth>,
    #[serde(default)]
    pub(crate) log: Option<Log>,
    #[serde(default)]
    pub(crate) requests: Option<Requests>,
    /// CORS for browser callers of every route (a route may replace it or turn it off).
    #[serde(default)]
    pub(crate) cors: Option<Cors>,
    /// State shared by every replica: revocations, limited-use tokens, shared limits.
    #[serde(default)]
    pub(crate) state: Option<State>,
}

/// `state:`: where replicas share what they must agree on.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct State {
    pub(crate) redis: Redis,
}

/// `state.redis`: the Redis server every replica points at.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Redis {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    pub(crate) url: String,
    /// With `rediss://`: a private CA (then trusted alone) and a client certificate.
    #[serde(default)]
    pub(crate) tls: Option<ClientTls>,
    /// Prepended to every key and channel (default `scopegate:`), to share one Redis.
    #[serde(default)]
    pub(crate) key_prefix: Option<String>,
    /// The longest a Redis command may take before it counts as failed (default 250ms).
    #[serde(default)]
    pub(crate) timeout: Option<String>,
    /// What an IdP token gets when its revocation cannot be checked: `deny` (default, 503) or
    /// `allow`. Exchanged and limited-use tokens are always refused then.
    #[serde(default)]
    pub(crate) idp_tokens_when_unavailable: Option<WhenUnavailable>,
    /// Allow `redis://` to a host that is not loopback; warned at every load.
    #[serde(default)]
    pub(crate) insecure_plaintext: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WhenUnavailable {
    Deny,
    Allow,
}

/// What requests may carry and what of them is never forwarded.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Requests {
    /// Upper-case extension methods accepted besides GET, HEAD, POST, PUT, DELETE, PATCH,
    /// OPTIONS and TRACE (for example WebDAV's `PROPFIND`).
    #[serde(default)]
    pub(crate) extension_methods: Vec<String>,
    /// Headers of the default strip list (method and URL overrides) to forward anyway.
    #[serde(default)]
    pub(crate) keep_headers: Vec<String>,
    /// More headers to remove before forwarding.
    #[serde(default)]
    pub(crate) strip_headers: Vec<String>,
    /// The most header fields a request may carry (default 100).
    #[serde(default)]
    pub(crate) max_header_count: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Log {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub(crate) format: Option<LogFormat>,
    /// A tracing filter such as `info` or `scopegate=debug`; `RUST_LOG` overrides it.
    #[serde(default)]
    pub(crate) level: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Exchange {
    /// Clients allowed to call the token endpoint, by `client_id`.
    pub(crate) clients: BTreeMap<String, ExchangeClient>,
    /// How many `act` levels an exchanged token may carry.
    #[serde(default)]
    pub(crate) max_act_depth: Option<usize>,
    /// Failed client authentications one address may make per minute before it is refused
    /// (429) for the rest of that minute (default 10).
    #[serde(default)]
    pub(crate) max_auth_failures_per_minute: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExchangeClient {
    #[serde(default)]
    pub(crate) secret_file: Option<String>,
    #[serde(default)]
    pub(crate) secret_env: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForwardAuth {
    /// Peers whose original-request headers are believed (CIDRs).
    #[serde(default)]
    pub(crate) trusted_peers: Option<Vec<String>>,
    /// The path prefix under which Envoy's ext_authz sends the original path.
    #[serde(default)]
    pub(crate) envoy_prefix: Option<String>,
    /// `nginx` (default), `ingress-nginx`, `traefik` (also Caddy), `envoy`, or `auto`.
    #[serde(default)]
    pub(crate) convention: Option<Convention>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Signing {
    /// scopegate's own issuer URL (`iss` of minted tokens; discovery is served under it).
    pub(crate) issuer: String,
    pub(crate) keys: Vec<SigningKey>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SigningKey {
    pub(crate) kid: String,
    #[serde(default)]
    pub(crate) alg: Option<String>,
    /// A PKCS#8 PEM private key file.
    #[serde(default)]
    pub(crate) file: Option<String>,
    /// Generate a key at start instead (development: tokens die with the process).
    #[serde(default)]
    pub(crate) generate: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Permissions {
    /// `file` backend: one or more YAML data files, merged.
    #[serde(default)]
    pub(crate) files: Option<Vec<String>>,
    /// `http` backend: the permissions API.
    #[serde(default)]
    pub(crate) url: Option<String>,
    /// `postgres` backend: memberships read from a PostgreSQL database.
    #[serde(default)]
    pub(crate) postgres: Option<Postgres>,
    #[serde(default)]
    pub(crate) timeout: Option<String>,
    #[serde(default)]
    pub(crate) max_concurrency: Option<usize>,
    #[serde(default)]
    pub(crate) cache_entries: Option<u64>,
    #[serde(default)]
    pub(crate) default_ttl: Option<String>,
    #[serde(default)]
    pub(crate) max_ttl: Option<String>,
    #[serde(default)]
    pub(crate) negative_ttl: Option<String>,
    #[serde(default)]
    pub(crate) on_error: Option<OnError>,
    #[serde(default)]
    pub(crate) stale_for: Option<String>,
    /// Per-caller bound on cache misses (each costs a backend call).
    #[serde(default)]
    pub(crate) miss_budget: Option<MissBudget>,
    /// TLS towards the `http` backend's URL.
    #[serde(default)]
    pub(crate) tls: Option<ClientTls>,
    /// Allow a plain `http://` URL on a non-loopback host; warned at every load and counted
    /// in metrics.
    #[serde(default)]
    pub(crate) insecure_http: bool,
}

/// The `postgres` permissions backend.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Postgres {
    /// A libpq connection string or URL (`postgresql://user:password@host:5432/db`).
    pub(crate) url: String,
    /// Connections in the pool at most (default 16).
    #[serde(default)]
    pub(crate) pool_size: Option<usize>,
    /// The lookup query (`$1` issuer, `$2` subject, `$3` organization, `$4` client id; columns
    /// `roles`, `scopes`, `claims`, `ttl`); default: the shipped schema's
    /// (`scopegate db schema`).
    #[serde(default)]
    pub(crate) query: Option<String>,
    /// TLS towards the database (then always required): its CA, client certificate, minimum
    /// version.
    #[serde(default)]
    pub(crate) tls: Option<ClientTls>,
    /// `LISTEN` for the schema trigger's change notifications and drop the cached answers they
    /// name at once (default false: changes take effect at the cache TTL).
    #[serde(default)]
    pub(crate) listen: bool,
    /// Allow an unencrypted connection to a host that is not loopback or a Unix socket; warned
    /// at every load and counted in metrics.
    #[serde(default)]
    pub(crate) insecure_plaintext: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MissBudget {
    /// Misses per second per caller, sustained (default 10).
    #[serde(default)]
    pub(crate) per_second: Option<f64>,
    /// Misses at once after a quiet period (default 50).
    #[serde(default)]
    pub(crate) burst: Option<u32>,
    /// Misses in flight at once per caller (default 8).
    #[serde(default)]
    pub(crate) concurrency: Option<usize>,
}

/// How an ingress describes the original request to the forward-auth listener.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Convention {
    Nginx,
    IngressNginx,
    Traefik,
    Caddy,
    Envoy,
    Auto,
}

/// The log line format.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OnError {
    Deny,
    Stale,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Listen {
    pub(crate) proxy: String,
    pub(crate) admin: String,
    /// The forward-auth decision listener, for ingress controllers.
    #[serde(default)]
    pub(crate) auth: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Issuer {
    /// The exact `iss` value of this issuer's tokens.
    pub(crate) issuer: String,
    #[serde(default)]
    pub(crate) jwks_url: Option<String>,
    #[serde(default)]
    pub(crate) discovery_url: Option<String>,
    #[serde(default)]
    pub(crate) algorithms: Option<Vec<String>>,
    pub(crate) audiences: Vec<String>,
    #[serde(default)]
    pub(crate) leeway: Option<String>,
    #[serde(default)]
    pub(crate) scopes: Option<ScopesClaim>,
    #[serde(default)]
    pub(crate) typ: Option<String>,
    #[serde(default)]
    pub(crate) refresh_interval: Option<String>,
    #[serde(default)]
    pub(crate) unknown_kid_cooldown: Option<String>,
    /// The longest remaining lifetime a token may have (default 24h); longer is refused.
    #[serde(default)]
    pub(crate) max_token_age: Option<String>,
    #[serde(default)]
    pub(crate) fetch_timeout: Option<String>,
    #[serde(default)]
    pub(crate) combine: Option<Combine>,
    /// TLS towards the discovery and JWKS URLs.
    #[serde(default)]
    pub(crate) tls: Option<ClientTls>,
    /// Allow plain `http://` key URLs on a non-loopback host (an in-cluster IdP); warned at
    /// every load and counted in metrics.
    #[serde(default)]
    pub(crate) insecure_http: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Combine {
    Intersect,
    Replace,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScopesClaim {
    pub(crate) claim: String,
    #[serde(default)]
    pub(crate) format: Option<ScopesFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ScopesFormat {
    Space,
    Array,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Upstream {
    pub(crate) url: String,
    #[serde(default)]
    pub(crate) connect_timeout: Option<String>,
    #[serde(default)]
    pub(crate) timeout: Option<String>,
    /// `aud` of the tokens minted for this upstream (default: the upstream's name).
    #[serde(default)]
    pub(crate) audience: Option<String>,
    /// Requests in flight to this upstream at most (503 beyond).
    #[serde(default)]
    pub(crate) max_concurrency: Option<usize>,
    /// The upstream's router ignores case (Express, ASP.NET, Spring by default): refuse a path
    /// that would match another route if it were lower-case.
    #[serde(default)]
    pub(crate) folds_case: bool,
    /// The upstream's router ignores a trailing `/` (Express, Flask with `strict_slashes=False`):
    /// refuse a path that would match another route with or without it.
    #[serde(default)]
    pub(crate) folds_trailing_slash: bool,
    /// The HTTP version spoken to the upstream (default `http1`).
    #[serde(default)]
    pub(crate) protocol: Option<Protocol>,
    /// TLS towards an `https://` upstream.
    #[serde(default)]
    pub(crate) tls: Option<ClientTls>,
}

/// `upstreams.<name>.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Protocol {
    Http1,
    H2c,
    H2,
    Auto,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Limits {
    #[serde(default)]
    pub(crate) max_token_bytes: Option<usize>,
    #[serde(default)]
    pub(crate) token_cache_entries: Option<u64>,
    #[serde(default)]
    pub(crate) mint_cache_entries: Option<u64>,
    /// Request header bytes (431 beyond).
    #[serde(default)]
    pub(crate) max_header_bytes: Option<usize>,
    /// Open connections per listener (503 beyond).
    #[serde(default)]
    pub(crate) max_connections: Option<usize>,
    /// Open connections per listener from one client IP address (503 beyond; at most
    /// `max_connections`).
    #[serde(default)]
    pub(crate) max_connections_per_peer: Option<usize>,
    /// Time from accepting a connection (TLS handshake included) to a complete request head,
    /// and between requests on a kept-alive HTTP/1 connection (slow-loris bound; 408).
    #[serde(default)]
    pub(crate) header_read_timeout: Option<String>,
    /// Time a connection may stay open with no request in flight (HTTP/1 and HTTP/2).
    #[serde(default)]
    pub(crate) idle_timeout: Option<String>,
    /// The longest pause in a request body being forwarded (default 30s); then 408.
    #[serde(default)]
    pub(crate) body_read_timeout: Option<String>,
    /// How long in-flight requests may finish after SIGTERM.
    #[serde(default)]
    pub(crate) shutdown_grace: Option<String>,
}
