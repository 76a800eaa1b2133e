//! Envoy's `ext_authz` over gRPC: the `envoy.service.auth.v3.Authorization/Check` service on
//! the forward-auth listener, for Envoy, Istio, Contour and Gloo. The check's attributes
//! describe the original request; it goes through the same trust rule, normalization and
//! pipeline as the HTTP conventions, and the answer carries the same decision: OK with the
//! minted `Authorization` (and the identity headers) to set upstream, or denied with
//! scopegate's status, headers and problem body for Envoy to send the client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderAppendAction,
    HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tonic::codegen::Service;

use super::Gateway;
use crate::forward_auth::OriginalError;

/// The largest `CheckRequest` read: the client's headers, bounded like a request's head.
const MAX_CHECK_BYTES: usize = 256 * 1024;

/// The headers scopegate's answer may set upstream; the client's own are removed when the
/// decision does not set them (a client must not name itself, its organization or scopes).
const IDENTITY: [&str; 5] = [
    "authorization",
    "x-scopegate-subject",
    "x-scopegate-organization",
    "x-scopegate-scope",
    "x-scopegate-route",
];

/// The body of an answer on the forward-auth listener: HTTP conventions or gRPC.
pub(crate) type AuthBody = Either<Full<Bytes>, tonic::body::Body>;

impl Gateway {
    /// Answers one request on the forward-auth listener: a gRPC call (`content-type:
    /// application/grpc`) is Envoy's `Check`; anything else is an HTTP convention.
    pub async fn handle_auth_listener(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<AuthBody> {
        if crate::grpc::requested(request.headers()).is_none() {
            return self.handle_auth(request, peer).await.map(Either::Left);
        }
        let mut server = AuthorizationServer::new(Check {
            gateway: self,
            peer,
        })
        .max_decoding_message_size(MAX_CHECK_BYTES);
        match server.call(request).await {
            Ok(response) => response.map(Either::Right),
            Err(never) => match never {},
        }
    }

    /// Decides one check.
    async fn check(&self, check: CheckRequest, peer: SocketAddr) -> CheckResponse {
        let started = Instant::now();
        let http = check
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .unwrap_or_default();
        let (headers, described) = match client_headers(&http) {
            Ok(headers) => {
                let original = self.forward_auth.described(
                    peer.ip(),
                    &http.method,
                    &http.path,
                    &http.host,
                    &headers,
                );
                (headers, original)
            }
            Err(e) => (HeaderMap::new(), Err(e)),
        };
        let (answer, allowed) = self
            .decide_original(described, &headers, &http.method, "ext_authz_grpc", started)
            .await;
        if allowed && answer.status() == StatusCode::OK {
            ok(&answer)
        } else {
            denied(&answer)
        }
    }
}

/// The tonic service: one per call, so it knows the peer it trusts or not.
struct Check {
    gateway: Arc<Gateway>,
    peer: SocketAddr,
}

#[tonic::async_trait]
impl Authorization for Check {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let answer = self.gateway.check(request.into_inner(), self.peer).await;
        Ok(tonic::Response::new(answer))
    }
}

/// The client's headers from the check: the `headers` map, or the raw `header_map` when Envoy
/// sends `encode_raw_headers`. Pseudo-headers (`:path`, `:authority`, ...) are left out: the
/// attributes' own fields say the method, target and host.
fn client_headers(
    http: &envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest,
) -> Result<HeaderMap, OriginalError> {
    let raw = http.header_map.iter().flat_map(|m| m.headers.iter());
    let pairs: Vec<(&str, &[u8])> = if http.headers.is_empty() {
        raw.map(|h| (h.key.as_str(), h.raw_value.as_slice()))
            .collect()
    } else {
        (http.headers.iter())
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect()
    };
    let mut headers = HeaderMap::new();
    for (name, value) in pairs.into_iter().filter(|(n, _)| !n.starts_with(':')) {
        let name = HeaderName::from_bytes(name.as_bytes());
        let value = HeaderValue::from_bytes(value);
        match (name, value) {
            (Ok(n), Ok(v)) => {
                headers.append(n, v);
            }
            _ => return Err(OriginalError::Malformed("headers")),
        }
    }
    Ok(headers)
}

/// OK: set what the decision sets upstream (replacing the client's values), remove the
/// identity headers it does not set.
fn ok(answer: &Response<Bytes>) -> CheckResponse {
    let mut upstream = OkHttpResponseBuilder::new();
    for (name, value) in answer.headers() {
        if name == header::CACHE_CONTROL {
            continue;
        }
        upstream.add_header(
            name.as_str(),
            String::from_utf8_lossy(value.as_bytes()),
            Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
            false,
        );
    }
    for name in IDENTITY
        .iter()
        .filter(|n| !answer.headers().contains_key(**n))
    {
        upstream.remove_header(*name);
    }
    let mut response = CheckResponse::with_status(tonic::Status::ok(""));
    response.set_http_response(upstream);
    response
}

/// Denied: scopegate's answer (status, headers, problem body) for Envoy to send the client;
/// the gRPC status says the same for Envoy's logs.
fn denied(answer: &Response<Bytes>) -> CheckResponse {
    let mut client = DeniedHttpResponseBuilder::new();
    let status = answer.status();
    client.set_http_status(
        HttpStatusCode::try_from(i32::from(status.as_u16())).unwrap_or(HttpStatusCode::Forbidden),
    );
    for (name, value) in answer.headers() {
        client.add_header(
            name.as_str(),
            String::from_utf8_lossy(value.as_bytes()),
            Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
            false,
        );
    }
    client.set_body(String::from_utf8_lossy(answer.body()));
    let reason = status.canonical_reason().unwrap_or("denied");
    let mut response = CheckResponse::with_status(tonic::Status::new(
        tonic::Code::from(i32::from(crate::grpc::code(status))),
        reason,
    ));
    response.set_http_response(client);
    response
}
