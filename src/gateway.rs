//! The request pipeline, written out once, top to bottom:
//! normalize → route → authenticate → decide → forward. Each stage is a leaf module; only this
//! function composes them. Every failure becomes a [`Rejection`], rendered in one place.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::config::Config;
use crate::decide::{Decision, decide};
use crate::jwks::IssuerKeys;
use crate::metrics::Metrics;
use crate::proxy::{Inbound, Upstreams};
use crate::reject::Rejection;
use crate::route::{Access, RouteTable};
use crate::verify::Verifier;

/// The body of every answer: the upstream's, streamed, or one scopegate wrote.
pub type Body = Either<Incoming, Full<Bytes>>;

/// Everything the pipeline needs, built once from a validated [`Config`].
#[derive(Debug)]
pub struct Gateway {
    routes: RouteTable,
    verifier: Verifier,
    upstreams: Upstreams,
    pub metrics: Metrics,
    pub issuers: Vec<Arc<IssuerKeys>>,
}

impl Gateway {
    pub fn new(config: Config, metrics: Metrics) -> Self {
        let client = crate::fetch::FetchClient::new();
        let issuers: Vec<Arc<IssuerKeys>> = config
            .issuers
            .iter()
            .map(|i| Arc::new(IssuerKeys::new(i.clone(), client.clone(), metrics.clone())))
            .collect();
        let verifier = Verifier::new(issuers.iter().cloned(), &config.limits);
        let upstreams = Upstreams::new(config.upstreams.values(), metrics.clone());
        Self {
            routes: config.routes,
            verifier,
            upstreams,
            metrics,
            issuers,
        }
    }

    /// Whether every issuer's keys are loaded.
    pub fn ready(&self) -> bool {
        self.verifier.ready()
    }

    /// Entries in the verified-token cache.
    pub fn cached_tokens(&self) -> u64 {
        self.verifier.cached_tokens()
    }

    /// Handles one proxied request.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        scheme: &'static str,
    ) -> Response<Body> {
        let started = Instant::now();
        let mut route_name = "none";
        let outcome = self
            .pipeline(request, peer, scheme, started, &mut route_name)
            .await;
        let (response, decision) = match outcome {
            Ok(r) => (r.map(Either::Left), "allow"),
            Err(rejection) => {
                // An upstream failure comes after an allow; its gateway time is already recorded.
                let upstream_failed = matches!(rejection, Rejection::Upstream(_));
                if !upstream_failed {
                    self.metrics
                        .gateway_duration
                        .with_label_values(&["deny"])
                        .observe(started.elapsed().as_secs_f64());
                }
                tracing::debug!(
                    route = route_name,
                    code = rejection.code(),
                    "request rejected"
                );
                (
                    rejection.to_response().map(|b| Either::Right(Full::new(b))),
                    if upstream_failed { "allow" } else { "deny" },
                )
            }
        };
        self.metrics
            .requests
            .with_label_values(&[route_name, decision, response.status().as_str()])
            .inc();
        response
    }

    async fn pipeline<'a>(
        &'a self,
        request: Request<Incoming>,
        peer: SocketAddr,
        scheme: &'static str,
        started: Instant,
        route_name: &mut &'a str,
    ) -> Result<Response<Incoming>, Rejection> {
        let path = crate::normalize::normalize(request.uri().path())?;
        let host_header = request.headers().get(header::HOST).cloned().or_else(|| {
            request
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let host = host_header
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .map(host_only);
        let matched = self
            .routes
            .find(request.method(), host.as_deref(), &path)
            .ok_or(Rejection::NoRoute)?;
        let route = matched.route;
        *route_name = &route.name;
        let principal = match &route.access {
            Access::Public => None,
            Access::Scopes(_) => Some(self.verifier.authenticate(request.headers()).await?),
        };
        if let Decision::Deny(rejection) = decide(&route.access, principal.as_deref()) {
            return Err(rejection);
        }
        self.metrics
            .gateway_duration
            .with_label_values(&["allow"])
            .observe(started.elapsed().as_secs_f64());
        let inbound = Inbound {
            peer,
            scheme,
            host: host_header.as_ref(),
        };
        Ok(self
            .upstreams
            .forward(&route.upstream, request, &path, &inbound)
            .await?)
    }
}

/// The host part of a Host header value, lower-cased, without port.
fn host_only(value: &str) -> String {
    let host = if let Some(rest) = value.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        value.rsplit_once(':').map_or(value, |(h, _)| h)
    };
    host.to_ascii_lowercase()
}
