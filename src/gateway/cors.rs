//! CORS in proxy mode. A preflight whose route has a CORS policy is answered here: the route is
//! the one the real request would be decided on (the same checks, normalized path, host and
//! match), no token is asked for, nothing reaches the upstream, and nothing is granted but the
//! browser's permission to send the real request, which is then decided like any other. Every
//! other answer gets its route's CORS headers (the server file's policy when no route matched).

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::{Either, Full};

use super::{Body, Gateway, Target};
use crate::audit::Audit;
use crate::cors::{CorsError, Preflight};
use crate::reject::Rejection;

impl Gateway {
    /// The answer to a CORS preflight for a route with a CORS policy; `None` for any other
    /// request (an `OPTIONS` for a route without one is routed as a normal request).
    pub(super) fn preflight<'a>(
        &'a self,
        parts: &Parts,
        audit: &mut Audit<'a>,
    ) -> Option<Result<Response<Body>, Rejection>> {
        let preflight = Preflight::of(&parts.method, &parts.headers)?;
        let host = crate::host::of_request(parts.version, &parts.uri, &parts.headers).ok()?;
        let host = host.as_ref();
        // The route of the method asked for; else the route an OPTIONS would go to, which must
        // not see a preflight for a method its policy does not allow.
        let locate = |method: &Method| {
            let target = Target {
                method,
                uri: &parts.uri,
                host,
                headers: &parts.headers,
            };
            let (method, path) = self.checked(&target).ok()?;
            let route = self
                .matched(&method, host.map(|h| h.name()), &path)
                .ok()?
                .route;
            route.cors.as_ref().map(|policy| (route, policy, path))
        };
        let (route, path, outcome) = match preflight.method.as_ref().and_then(locate) {
            Some((route, policy, path)) => (route, path, crate::cors::answer(policy, &preflight)),
            None => {
                let (route, _, path) = locate(&Method::OPTIONS)?;
                (route, path, Err(CorsError::Method))
            }
        };
        audit.path = Some(path);
        audit.matched = Some(route);
        let label = outcome.as_ref().map_or_else(|e| e.outcome(), |_| "granted");
        self.metrics
            .cors_preflights
            .with_label_values(&[label])
            .inc();
        Some(outcome.map_err(Rejection::from).map(|grant| {
            let mut answer = Response::new(Either::Right(Full::new(Bytes::new())));
            *answer.status_mut() = StatusCode::NO_CONTENT;
            *answer.headers_mut() = grant;
            answer
        }))
    }

    /// Gives an answer its CORS headers: a preflight's refusal only `Vary: Origin` (a granted
    /// one has its own), any other answer those of its route's policy, or of the server file's
    /// when no route was matched.
    pub(super) fn cors_headers(
        &self,
        audit: &Audit<'_>,
        origin: Option<&HeaderValue>,
        preflight: bool,
        headers: &mut HeaderMap,
    ) {
        if preflight {
            crate::cors::vary(headers);
            return;
        }
        let policy = match audit.matched {
            Some(route) => route.cors.as_deref(),
            None => self.cors.as_deref(),
        };
        if let Some(policy) = policy {
            crate::cors::decorate(policy, origin, headers);
        }
    }
}
