//! Forward-auth mode of the pipeline: read the original request from the trusted ingress,
//! decide it, and answer 200 with the minted token and identity headers, never forwarding.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;

use super::{Authorized, Gateway, Target};
use crate::audit::Audit;
use crate::forward_auth::{Original, OriginalError};
use crate::mint::MintError;
use crate::reject::Rejection;

impl Gateway {
    /// Handles one request on the forward-auth listener: decide, never forward.
    pub async fn handle_auth(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let (parts, _body) = request.into_parts();
        let original =
            self.forward_auth
                .original(peer.ip(), &parts.method, &parts.uri, &parts.headers);
        let method = parts.method.as_str();
        let (response, _) = self
            .decide_original(original, &parts.headers, method, "forward_auth", started)
            .await;
        response.map(Full::new)
    }

    /// Decides the original request an ingress describes (or refuses the description), records
    /// it under `mode`, and answers as forward-auth does: 200 with the minted token and the
    /// identity headers, or scopegate's rejection. Also says whether it was allowed.
    pub(super) async fn decide_original(
        &self,
        original: Result<Original, OriginalError>,
        headers: &HeaderMap,
        method: &str,
        mode: &'static str,
        started: Instant,
    ) -> (Response<Bytes>, bool) {
        let mut audit = Audit::default();
        let result = match original {
            Err(e) => Err(Rejection::from(e)),
            Ok(original) => {
                let target = Target {
                    method: &original.method,
                    uri: &original.uri,
                    host: Some(&original.host),
                    headers,
                };
                self.authorize(&target, &mut audit)
                    .await
                    .and_then(|a| allowed_answer(&a))
            }
        };
        let (response, reason, allowed) = match result {
            Ok(r) => {
                self.metrics
                    .gateway_allowed
                    .observe(started.elapsed().as_secs_f64());
                (r, "allowed", true)
            }
            Err(rejection) => {
                let (code, after_allow) = (rejection.code(), rejection.after_allow());
                (self.reject(rejection, started, None), code, after_allow)
            }
        };
        let traceparent = crate::audit::traceparent(headers);
        self.finish(
            &audit,
            mode,
            method,
            (allowed, reason),
            traceparent,
            started,
            response.status(),
        );
        (response, allowed)
    }
}

/// The 200 of forward-auth: the minted token and identity headers for the ingress to copy.
fn allowed_answer(a: &Authorized<'_>) -> Result<Response<Bytes>, Rejection> {
    let mut response = Response::new(Bytes::new());
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(m) = &a.minted {
        headers.insert(header::AUTHORIZATION, m.authorization.clone());
        headers.insert(
            "x-scopegate-scope",
            HeaderValue::from_str(&a.scopes.join(" ")).map_err(MintError::from)?,
        );
    }
    if let Some(p) = &a.principal {
        // Subjects are arbitrary strings; one that cannot be a header value is left out.
        if let Ok(v) = HeaderValue::from_str(&p.subject) {
            headers.insert("x-scopegate-subject", v);
        }
    }
    if let Some(org) = &a.organization {
        headers.insert(
            "x-scopegate-organization",
            HeaderValue::from_str(org).map_err(MintError::from)?,
        );
    }
    headers.insert(
        "x-scopegate-route",
        HeaderValue::from_str(&a.route.name).map_err(MintError::from)?,
    );
    Ok(response)
}
