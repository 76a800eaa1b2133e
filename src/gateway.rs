//! The request pipeline, written out once, top to bottom:
//! normalize → route → authenticate → organization → permissions → decide → mint → forward.
//! Each stage is a leaf module; only this function composes them. Every failure becomes a
//! [`Rejection`], rendered in one place.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::config::{Config, Roles};
use crate::decide::{Decision, Input, decide};
use crate::jwks::IssuerKeys;
use crate::metrics::Metrics;
use crate::mint::{MintRequest, Minter};
use crate::permissions::{Permissions, Query};
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
    roles: Roles,
    verifier: Verifier,
    permissions: Option<Arc<Permissions>>,
    minter: Minter,
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
        let permissions = config
            .permissions
            .map(|p| Arc::new(Permissions::new(p.backend, p.cache, metrics.clone())));
        let minter = Minter::new(
            config.signing,
            config.limits.mint_cache_entries,
            metrics.clone(),
        );
        Self {
            routes: config.routes,
            roles: config.roles,
            verifier,
            permissions,
            minter,
            upstreams,
            metrics,
            issuers,
        }
    }

    /// Whether every issuer's keys are loaded.
    pub fn ready(&self) -> bool {
        self.verifier.ready()
    }

    /// The permissions front, when a backend is configured.
    pub fn permissions(&self) -> Option<&Arc<Permissions>> {
        self.permissions.as_ref()
    }

    /// Entries in the verified-token cache.
    pub fn cached_tokens(&self) -> u64 {
        self.verifier.cached_tokens()
    }

    /// Entries in the minted-token cache.
    pub fn cached_minted_tokens(&self) -> u64 {
        self.minter.cached_tokens()
    }

    /// Handles one request on the proxy listener.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        scheme: &'static str,
    ) -> Response<Body> {
        if let Some(document) = self.issuer_document(&request) {
            return document.map(|b| Either::Right(Full::new(b)));
        }
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
                let decision = if upstream_failed { "allow" } else { "deny" };
                (
                    rejection.to_response().map(|b| Either::Right(Full::new(b))),
                    decision,
                )
            }
        };
        self.metrics
            .requests
            .with_label_values(&[route_name, decision, response.status().as_str()])
            .inc();
        response
    }

    /// scopegate's own JWKS and discovery documents, served under its issuer URL's path.
    fn issuer_document<B>(&self, request: &Request<B>) -> Option<Response<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return None;
        }
        let signing = self.minter.signing();
        let path = request.uri().path();
        let body = if path == signing.jwks_path() {
            signing.jwks()
        } else if path == signing.discovery_path() {
            signing.discovery()
        } else {
            return None;
        };
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CACHE_CONTROL, "public, max-age=300")
            .body(Bytes::from(body.to_string()))
            .ok()
    }

    async fn pipeline<'a>(
        &'a self,
        request: Request<Incoming>,
        peer: SocketAddr,
        scheme: &'static str,
        started: Instant,
        route_name: &mut &'a str,
    ) -> Result<Response<Incoming>, Rejection> {
        let (parts, body) = request.into_parts();
        let path = crate::normalize::normalize(parts.uri.path())?;
        let host_header = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let host = host_header
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .map(host_only);
        let matched = self
            .routes
            .find(&parts.method, host.as_deref(), &path)
            .ok_or(Rejection::NoRoute)?;
        let route = matched.route;
        *route_name = &route.name;
        let principal = match &route.access {
            Access::Public => None,
            Access::Scopes(_) => Some(self.verifier.authenticate(&parts.headers).await?),
        };
        let organization = match &route.organization {
            None => None,
            Some(source) => Some(source.resolve(
                &parts,
                host.as_deref(),
                &matched.params,
                principal.as_deref(),
            )?),
        };
        let membership = match (&organization, &principal, &self.permissions) {
            (Some(org), Some(p), Some(permissions)) => {
                let query = Query {
                    issuer: p.issuer.issuer.clone(),
                    subject: p.subject.clone(),
                    organization: org.clone(),
                    client_id: crate::mint::client_id(p).map(str::to_string),
                };
                let looked = permissions
                    .lookup(&query)
                    .await
                    .map_err(|_| Rejection::PermissionsUnavailable)?;
                Some(looked.membership)
            }
            _ => None,
        };
        let decision = decide(&Input {
            route,
            roles: &self.roles,
            principal: principal.as_deref(),
            organization: organization.as_deref(),
            membership: membership.as_deref(),
            params: &matched.params,
            method: parts.method.as_str(),
            path: &path,
        });
        let allowed = match decision {
            Decision::Allow(a) => a,
            Decision::Deny(rejection) => return Err(rejection),
        };
        let minted = match &principal {
            None => None,
            Some(p) => Some(self.minter.mint(&MintRequest {
                principal: p,
                organization: organization.as_deref(),
                audience: &route.upstream.audience,
                scopes: &allowed.scopes,
                claims: allowed.claims,
                ttl: route.forward.ttl,
            })?),
        };
        self.metrics
            .gateway_duration
            .with_label_values(&["allow"])
            .observe(started.elapsed().as_secs_f64());
        let authorization = match &minted {
            Some(m) => Some(
                HeaderValue::try_from(format!("Bearer {}", m.0.token))
                    .map_err(|_| Rejection::Mint(crate::mint::MintError::Sign))?,
            ),
            None => None,
        };
        let inbound = Inbound {
            peer,
            scheme,
            host: host_header.as_ref(),
            authorization,
        };
        let request = Request::from_parts(parts, body);
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
