//! The admin listener: liveness, readiness and Prometheus metrics, on a port of its own so it is
//! never exposed with the proxy.

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;

use crate::state::Shared;

/// Answers one admin request.
pub(crate) fn handle<B>(shared: &Shared, request: &Request<B>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match request.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" if shared.ready() => (StatusCode::OK, "text/plain", "ready\n".to_string()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready: shutting down, or an issuer's keys are not loaded\n".to_string(),
        ),
        "/metrics" => {
            let gateway = shared.gateway();
            gateway.count_cache_entries();
            (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                gateway.metrics.render(),
            )
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
