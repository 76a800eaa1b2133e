//! Prometheus metrics. One registry per gateway (not the global default), so tests and several
//! gateways in one process never share counters.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
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
}

const GATEWAY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05,
    0.25, 1.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "scopegate_requests_total",
                "Requests by route, decision and HTTP status.",
            ),
            &["route", "decision", "status"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let gateway_duration = HistogramVec::new(
            HistogramOpts::new(
                "scopegate_gateway_duration_seconds",
                "Latency scopegate adds: request received to request forwarded (or denial sent).",
            )
            .buckets(GATEWAY_BUCKETS.to_vec()),
            &["decision"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "scopegate_upstream_duration_seconds",
                "Time to upstream response headers.",
            ),
            &["upstream"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let jwks_refreshes = IntCounterVec::new(
            Opts::new(
                "scopegate_jwks_refreshes_total",
                "JWKS fetches by issuer and result.",
            ),
            &["issuer", "result"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(gateway_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(jwks_refreshes.clone()),
        ] {
            registry
                .register(c)
                .unwrap_or_else(|e| unreachable!("metric names are unique: {e}"));
        }
        Self {
            registry,
            requests,
            gateway_duration,
            upstream_duration,
            jwks_refreshes,
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
