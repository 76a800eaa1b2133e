//! Prometheus metrics. One registry per gateway (not the global default), so tests and several
//! gateways in one process never share counters.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric scopegate exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by route (`none` when unmatched), decision (`allow`/`deny`) and status.
    pub requests: IntCounterVec,
    /// Time from receiving the request to handing it upstream (or answering a denial).
    pub gateway_duration: HistogramVec,
    /// Time the upstream took to send response headers.
    pub upstream_duration: HistogramVec,
    /// JWKS fetches by issuer and result (`ok`/`error`).
    pub jwks_refreshes: IntCounterVec,
    /// Permission lookups by result (`hit`, `miss`, `coalesced`).
    pub permissions_lookups: IntCounterVec,
    /// `permissions_lookups{result="hit"}`, resolved once: the per-request label lookup hashes
    /// and locks.
    pub permissions_hits: IntCounter,
    /// `gateway_duration{decision="allow"}`, resolved once.
    pub gateway_allowed: Histogram,
    /// Permissions backend call latency.
    pub permissions_backend_duration: Histogram,
    /// Permissions backend failures.
    pub permissions_backend_errors: IntCounter,
    /// Role names a backend granted that no policy defines (each grants nothing).
    pub permissions_unknown_roles: IntCounter,
    /// 1 while a backend's change listener (`postgres.listen`) is listening, else 0.
    pub permissions_listening: IntGauge,
    /// 1 while shared state (Redis) answered its last command, else 0.
    pub state_up: IntGauge,
    /// 1 while the revocation channel is subscribed and this replica's revocations are synced.
    pub state_listening: IntGauge,
    /// Shared-state commands that failed, by feature (`revocation`, `uses`, `limit`,
    /// `revocation_channel`; `revocation_allowed` counts IdP tokens let through unchecked).
    pub state_failures: IntCounterVec,
    /// Revocations this replica recorded (token endpoint and admin API).
    pub revocations: IntCounter,
    /// Revocations this replica knows (each until the last token it names expires).
    pub revocations_known: IntGauge,
    /// Tokens signed for upstreams.
    pub tokens_minted: IntCounter,
    /// Minted tokens reused from the cache.
    pub mint_cache_hits: IntCounter,
    /// Configuration reloads by result (`ok`/`error`).
    pub config_reloads: IntCounterVec,
    /// Unix time of the last successful (re)load.
    pub config_last_reload: IntGauge,
    /// Requests or connections refused by a limit, by limit.
    pub limit_rejections: IntCounterVec,
    /// Token exchanges by client (`unauthenticated` when the client did not prove itself) and
    /// result (`ok` or the RFC 6749 error code).
    pub token_exchanges: IntCounterVec,
    /// WebSocket tunnels open now.
    pub websocket_connections: IntGauge,
    /// Bytes WebSocket tunnels carried, by direction (`upstream`: client to upstream).
    pub websocket_bytes: IntCounterVec,
    /// Closed WebSocket tunnels by reason (`closed`, `idle`, `lifetime`, `shutdown`, `error`).
    pub websocket_closures: IntCounterVec,
    /// CORS preflights scopegate answered, by outcome (`granted`, `origin_not_allowed`,
    /// `method_not_allowed`, `headers_not_allowed`).
    pub cors_preflights: IntCounterVec,
    /// Targets reached over plain http on a non-loopback host (`insecure_http: true`), by name.
    pub insecure_http_targets: IntGaugeVec,
    /// Entries in each cache (`verified_tokens`, `minted_tokens`, `permissions`), read at scrape
    /// time: with the per-entry sizes in the README, what a pod's memory must hold.
    pub cache_entries: IntGaugeVec,
}

const GATEWAY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05,
    0.25, 1.0,
];

/// Registers `c` and hands it back; names are static and unique, so this cannot fail.
fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    c: Result<C, prometheus::Error>,
) -> C {
    let c = c.unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| unreachable!("metric names are unique: {e}"));
    c
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let gateway_duration = register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("scopegate_gateway_duration_seconds", "Latency scopegate adds: request received to request forwarded (or denial sent).")
                        .buckets(GATEWAY_BUCKETS.to_vec()),
                    &["decision"],
                ),
            );
        let permissions_lookups = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "scopegate_permissions_lookups_total",
                    "Permission lookups by result: hit, miss (backend called), coalesced (shared another call).",
                ),
                &["result"],
            ),
        );
        Self {
            requests: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "scopegate_requests_total",
                        "Requests by route, decision and HTTP status.",
                    ),
                    &["route", "decision", "status"],
                ),
            ),
            gateway_allowed: gateway_duration.with_label_values(&["allow"]),
            gateway_duration,
            upstream_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "scopegate_upstream_duration_seconds",
                        "Time to upstream response headers.",
                    ),
                    &["upstream"],
                ),
            ),
            jwks_refreshes: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "scopegate_jwks_refreshes_total",
                        "JWKS fetches by issuer and result.",
                    ),
                    &["issuer", "result"],
                ),
            ),
            permissions_hits: permissions_lookups.with_label_values(&["hit"]),
            permissions_lookups,
            permissions_backend_duration: register(
                &r,
                Histogram::with_opts(HistogramOpts::new(
                    "scopegate_permissions_backend_duration_seconds",
                    "Permissions backend call latency.",
                )),
            ),
            permissions_backend_errors: register(
                &r,
                IntCounter::new(
                    "scopegate_permissions_backend_errors_total",
                    "Permissions backend failures.",
                ),
            ),
            permissions_unknown_roles: register(
                &r,
                IntCounter::new(
                    "scopegate_permissions_unknown_roles_total",
                    "Role names a permissions backend granted that no policy defines (they grant nothing).",
                ),
            ),
            permissions_listening: register(
                &r,
                IntGauge::new(
                    "scopegate_permissions_change_listener_up",
                    "1 while the permissions backend's change listener is connected and listening (postgres listen: true); while 0, cached answers may be as old as the cache TTL.",
                ),
            ),
            state_up: register(
                &r,
                IntGauge::new(
                    "scopegate_state_up",
                    "1 while shared state (Redis) answered its last command; 0 when it failed (or is not configured).",
                ),
            ),
            state_listening: register(
                &r,
                IntGauge::new(
                    "scopegate_state_revocation_channel_up",
                    "1 while the Redis revocation channel is subscribed and this replica's revocations are synced; while 0, tokens are re-checked in Redis every second.",
                ),
            ),
            state_failures: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "scopegate_state_failures_total",
                        "Shared-state (Redis) commands that failed, by feature; revocation_allowed counts IdP tokens let through unchecked (idp_tokens_when_unavailable: allow).",
                    ),
                    &["feature"],
                ),
            ),
            revocations: register(
                &r,
                IntCounter::new(
                    "scopegate_revocations_total",
                    "Revocations this replica recorded (token endpoint and admin API).",
                ),
            ),
            revocations_known: register(
                &r,
                IntGauge::new(
                    "scopegate_revocations_known",
                    "Revocations this replica knows; each is kept until the last token it names expires.",
                ),
            ),
            tokens_minted: register(
                &r,
                IntCounter::new(
                    "scopegate_tokens_minted_total",
                    "Tokens signed for upstreams.",
                ),
            ),
            mint_cache_hits: register(
                &r,
                IntCounter::new(
                    "scopegate_mint_cache_hits_total",
                    "Minted tokens reused from the cache.",
                ),
            ),
            config_reloads: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "scopegate_config_reloads_total",
                        "Configuration reloads by result.",
                    ),
                    &["result"],
                ),
            ),
            config_last_reload: register(
                &r,
                IntGauge::new(
                    "scopegate_config_last_reload_success_timestamp_seconds",
                    "Unix time of the last successful configuration load.",
                ),
            ),
            limit_rejections: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "scopegate_limit_rejections_total",
                        "Requests or connections refused by a limit.",
                    ),
                    &["limit"],
                ),
            ),
            token_exchanges: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "scopegate_token_exchanges_total",
                        "Token exchanges by client and result.",
                    ),
                    &["client", "result"],
                ),
            ),
            websocket_connections: register(
                &r,
                IntGauge::new(
                    "scopegate_websocket_connections",
                    "WebSocket connections open now.",
                ),
            ),
            websocket_bytes: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "scopegate_websocket_bytes_total",
                        "Bytes carried by WebSocket connections, by direction (upstream: client to upstream).",
                    ),
                    &["direction"],
                ),
            ),
            cors_preflights: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "scopegate_cors_preflights_total",
                        "CORS preflights answered by scopegate, by outcome: granted, origin_not_allowed, method_not_allowed, headers_not_allowed.",
                    ),
                    &["outcome"],
                ),
            ),
            websocket_closures: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "scopegate_websocket_closures_total",
                        "Closed WebSocket connections by reason: closed, idle, lifetime, shutdown, error.",
                    ),
                    &["reason"],
                ),
            ),
            insecure_http_targets: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "scopegate_insecure_http_targets",
                        "1 for each target (issuer/<name>, permissions) allowed plain http to a non-loopback host by insecure_http: true.",
                    ),
                    &["target"],
                ),
            ),
            cache_entries: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "scopegate_cache_entries",
                        "Entries in each cache (verified_tokens, minted_tokens, permissions) at scrape time.",
                    ),
                    &["cache"],
                ),
            ),
            registry: r,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
