//! The admin listener: liveness, readiness, Prometheus metrics and, with shared state, the
//! revocation API, on a port of its own so it is never exposed with the proxy.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;

use crate::state::Shared;
use crate::store::StateError;

/// Answers one admin request.
pub(crate) async fn handle<B>(shared: &Shared, request: &Request<B>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match request.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" => readiness(shared),
        "/metrics" => {
            let gateway = shared.gateway();
            gateway.count_cache_entries();
            (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                gateway.metrics.render(),
            )
        }
        "/revoke" if request.method() == Method::POST => {
            revoke(shared, request.uri().query()).await
        }
        "/revoke" => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use POST\n".to_string(),
        ),
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

/// `/readyz`: 503 while shutting down or without an issuer's keys. Shared state is reported but
/// does not make a replica unready: every replica shares the same Redis, so taking them all out
/// of the Service would turn a degraded state into an outage.
fn readiness(shared: &Shared) -> (StatusCode, &'static str, String) {
    let state = match shared.gateway().store() {
        None => "",
        Some(s) if s.up() => "shared state (redis): up\n",
        Some(_) => "shared state (redis): unavailable; checks that need it fail closed\n",
    };
    if shared.ready() {
        (StatusCode::OK, "text/plain", format!("ready\n{state}"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("not ready: shutting down, or an issuer's keys are not loaded\n{state}"),
        )
    }
}

/// `POST /revoke?jti=ID`, or `?iss=ISSUER&sub=SUBJECT[&org=ORGANIZATION]`: revokes one token, or
/// everything a subject (within an organization) holds now, on every replica.
async fn revoke(shared: &Shared, query: Option<&str>) -> (StatusCode, &'static str, String) {
    let json = "application/json";
    let gateway = shared.gateway();
    let Some(store) = gateway.store() else {
        return (
            StatusCode::NOT_FOUND,
            json,
            r#"{"error":"revocation needs shared state: configure state.redis"}"#.to_string(),
        );
    };
    let params: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let one = |name: &str| {
        let mut values = params.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
        match (values.next(), values.next()) {
            (Some(v), None) if !v.is_empty() => Some(v.as_str()),
            _ => None,
        }
    };
    let revocation = match (one("jti"), one("iss"), one("sub")) {
        (Some(jti), None, None) => store.token_revocation(jti),
        (None, Some(iss), Some(sub)) => store.subject_revocation(iss, sub, one("org")),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                json,
                r#"{"error":"give `jti`, or `iss` and `sub` (and optionally `org`), each once"}"#
                    .to_string(),
            );
        }
    };
    match store.revoke(revocation).await {
        Ok(r) => {
            tracing::info!(revocation = ?r, "revoked through the admin API");
            (
                StatusCode::OK,
                json,
                serde_json::to_string(&r).unwrap_or_default(),
            )
        }
        Err(StateError::Unavailable) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json,
            r#"{"error":"shared state (redis) is unavailable; nothing was revoked"}"#.to_string(),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json,
            serde_json::json!({"error": e.to_string()}).to_string(),
        ),
    }
}
