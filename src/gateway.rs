//! The request pipeline, written out once, top to bottom:
//! normalize → route → authenticate → organization → permissions → decide → mint, in
//! [`Gateway::authorize`], which proxy mode (then forward) and forward-auth mode (then answer)
//! both call. Each stage is a leaf module; only this file composes them. Every failure becomes a
//! [`Rejection`], rendered in one place.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::audit::Audit;
use crate::config::{Config, defaults};
use crate::decide::{Decision, Input, decide};
use crate::exchange::ExchangeConfig;
use crate::forward_auth::ForwardAuthConfig;
use crate::host::Host;
use crate::inbound::{RequestError, RequestRules};
use crate::jwks::{IssuerKeys, KeySet};
use crate::metrics::Metrics;
use crate::mint::{MintRequest, Minted, Minter};
use crate::permissions::{Permissions, Query};
use crate::policy::{Access, Route};
use crate::policy::{IssuerConfig, Roles};
use crate::principal::{Principal, TokenKind};
use crate::proxy::{Inbound, Upstreams};
use crate::reject::Rejection;
use crate::route::RouteTable;
use crate::verify::Verifier;

mod cors;
mod ext_authz;
mod folding;
mod forward_auth;
mod locate;
mod outcome;
mod revoke;
mod shared;
mod token_endpoint;

/// The body of every answer: the upstream's, streamed, or one scopegate wrote.
pub(crate) type Body = Either<Incoming, Full<Bytes>>;

/// What a simulation supplies instead of the real thing.
#[derive(Debug, Default)]
pub struct Overrides {
    /// The caller, instead of verifying the request's token.
    pub principal: Option<Arc<Principal>>,
    /// The backend's answer, instead of asking it.
    pub membership: Option<crate::policy::Membership>,
}

/// The request being decided, however it arrived (proxied, or described by an ingress).
#[derive(Debug)]
pub struct Target<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    /// The validated host (`None` only for an HTTP/1.0 request without one).
    pub host: Option<&'a Host>,
    pub headers: &'a HeaderMap,
}

/// An allowed request: where it goes and what it carries.
#[derive(Debug)]
pub struct Authorized<'a> {
    pub route: &'a Arc<Route>,
    /// The normalized path: what was authorized and what is forwarded.
    pub path: String,
    pub principal: Option<Arc<Principal>>,
    pub organization: Option<String>,
    /// The minted token (none for public routes).
    pub minted: Option<Arc<Minted>>,
    /// The scopes in the minted token.
    pub scopes: Vec<String>,
}

/// Everything the pipeline needs, built once from a validated [`Config`].
#[derive(Debug)]
pub struct Gateway {
    routes: RouteTable,
    roles: Roles,
    verifier: Verifier,
    permissions: Option<Arc<Permissions>>,
    minter: Minter,
    upstreams: Upstreams,
    exchange: Option<Arc<ExchangeConfig>>,
    /// Failed token-endpoint client authentications per address (this replica's count; Redis
    /// holds the shared one when configured).
    auth_failures: crate::exchange::AuthFailures,
    /// Shared state (Redis): revocations, limited-use tokens, shared limits.
    store: Option<Arc<crate::store::Store>>,
    forward_auth: ForwardAuthConfig,
    requests: Arc<RequestRules>,
    /// The server file's CORS policy, for answers no route was matched for.
    cors: Option<Arc<crate::policy::Cors>>,
    pub metrics: Metrics,
    /// Trusted identity providers (not scopegate itself).
    pub issuers: Vec<Arc<IssuerKeys>>,
    /// scopegate's own issuer endpoints on the proxy listener, computed once: every request is
    /// compared against them.
    own_paths: OwnPaths,
    /// The time token decisions read (the system clock outside tests).
    clock: crate::token::Clock,
}

/// The request paths of scopegate's issuer documents and token endpoint.
#[derive(Debug)]
struct OwnPaths {
    jwks: String,
    discovery: String,
    token: String,
    revoke: String,
}

impl Gateway {
    pub fn new(config: Config, metrics: Metrics) -> Self {
        metrics.insecure_http_targets.reset();
        for target in &config.insecure_http {
            tracing::warn!(%target, "plain http to a non-loopback host (insecure_http: true): anyone on the path can forge its answers");
            metrics
                .insecure_http_targets
                .with_label_values(&[target])
                .set(1);
        }
        let public = crate::fetch::FetchClient::new(None);
        let client = |i: &IssuerConfig| match &i.tls {
            Some(tls) => crate::fetch::FetchClient::new(Some(tls)),
            None => public.clone(),
        };
        let issuers: Vec<Arc<IssuerKeys>> = (config.issuers.iter())
            .map(|i| Arc::new(IssuerKeys::new(i.clone(), client(i), metrics.clone())))
            .collect();
        let own = Arc::new(IssuerKeys::local(
            config.own_issuer.clone(),
            KeySet::from_jwks(&config.signing.jwks()),
            metrics.clone(),
        ));
        let max_act_depth = config.exchange.as_ref().map_or(0, |e| e.max_act_depth);
        let verifier = Verifier::new(
            issuers.iter().cloned().chain([own]),
            &config.limits,
            &config.signing.issuer,
            max_act_depth,
            crate::principal::KeptClaims::for_routes(config.routes.routes()),
            config.clock.clone(),
        );
        let upstreams = Upstreams::new(
            config.upstreams.values(),
            crate::cores::count(config.listen.workers),
            config.limits.body_read_timeout,
            metrics.clone(),
        );
        // A revocation holds until every token it can name has expired.
        let revocation_ttl = (config.issuers.iter().chain([&config.own_issuer]))
            .map(|i| i.max_token_age)
            .max()
            .unwrap_or_default();
        let store =
            (config.state).map(|s| crate::store::Store::new(s, revocation_ttl, metrics.clone()));
        let known_roles = config.roles.keys().cloned().collect();
        let permissions = config.permissions.map(|p| {
            Arc::new(Permissions::new(
                p.backend,
                p.cache,
                known_roles,
                store.clone(),
                metrics.clone(),
            ))
        });
        let own_paths = OwnPaths {
            jwks: config.signing.jwks_path(),
            discovery: config.signing.discovery_path(),
            token: config.signing.token_path(),
            revoke: config.signing.revoke_path(),
        };
        let minter = Minter::new(
            config.signing,
            config.limits.mint_cache_entries,
            metrics.clone(),
            config.clock.clone(),
        );
        Self {
            routes: config.routes,
            roles: config.roles,
            verifier,
            permissions,
            minter,
            upstreams,
            auth_failures: crate::exchange::AuthFailures::new(
                config
                    .exchange
                    .as_ref()
                    .map_or(defaults::MAX_AUTH_FAILURES_PER_MINUTE, |e| {
                        e.max_auth_failures_per_minute
                    }),
            ),
            exchange: config.exchange,
            store,
            forward_auth: config.forward_auth,
            requests: Arc::new(config.requests),
            cors: config.cors,
            metrics,
            issuers,
            own_paths,
            clock: config.clock,
        }
    }

    /// Shared state, when configured.
    pub(crate) fn store(&self) -> Option<&Arc<crate::store::Store>> {
        self.store.as_ref()
    }

    /// Whether every issuer's keys are loaded.
    pub fn ready(&self) -> bool {
        self.verifier.ready()
    }

    /// The permissions front, when a backend is configured.
    pub fn permissions(&self) -> Option<&Arc<Permissions>> {
        self.permissions.as_ref()
    }

    /// Role definitions (for `explain`).
    pub fn roles(&self) -> &Roles {
        &self.roles
    }

    /// The request rules (for `explain`).
    pub fn requests(&self) -> &RequestRules {
        &self.requests
    }

    /// The route table (for `explain`).
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The trusted identity providers' configurations (not scopegate's own).
    pub fn issuer_configs(&self) -> Vec<Arc<IssuerConfig>> {
        self.issuers.iter().map(|k| k.config.clone()).collect()
    }

    /// Entries in the verified-token cache.
    pub fn cached_tokens(&self) -> u64 {
        self.verifier.cached_tokens()
    }

    /// Entries in the minted-token cache.
    pub fn cached_minted_tokens(&self) -> u64 {
        self.minter.cached_tokens()
    }

    /// Sets the cache-size gauges (at scrape time: keeping them current would cost every
    /// request).
    pub(crate) fn count_cache_entries(&self) {
        let permissions = self
            .permissions
            .as_ref()
            .map_or(0, |p| p.approximate_entries());
        for (cache, entries) in [
            ("verified_tokens", self.cached_tokens()),
            ("minted_tokens", self.cached_minted_tokens()),
            ("permissions", permissions),
        ] {
            let entries = i64::try_from(entries).unwrap_or(i64::MAX);
            self.metrics
                .cache_entries
                .with_label_values(&[cache])
                .set(entries);
        }
    }

    /// Handles one request on the proxy listener: scopegate's own issuer endpoints, else the
    /// proxy pipeline.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        scheme: &'static str,
    ) -> Response<Body> {
        let signing = self.minter.signing();
        let path = request.uri().path();
        let read = matches!(*request.method(), Method::GET | Method::HEAD);
        if read && path == self.own_paths.jwks {
            return json_document(&signing.jwks());
        }
        if read && path == self.own_paths.discovery {
            let revocation = self.exchange.is_some() && self.store.is_some();
            return json_document(&signing.discovery(self.exchange.is_some(), revocation));
        }
        if let Some(exchange) = &self.exchange {
            if path == self.own_paths.token {
                let answer = self.token_endpoint(exchange, request, peer).await;
                return answer.map(|b| Either::Right(Full::new(b)));
            }
            if let Some(store) = &self.store
                && path == self.own_paths.revoke
            {
                let answer = self.revoke_endpoint(exchange, store, request, peer).await;
                return answer.map(|b| Either::Right(Full::new(b)));
            }
        }
        self.proxy(request, peer, scheme).await
    }

    async fn proxy(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        scheme: &'static str,
    ) -> Response<Body> {
        let started = Instant::now();
        let mut audit = Audit::default();
        let (parts, body) = request.into_parts();
        let method = parts.method.clone();
        let traceparent = crate::audit::traceparent(&parts.headers).map(str::to_string);
        let origin = crate::cors::origin(&parts.headers).cloned();
        let grpc = crate::grpc::requested(&parts.headers);
        let preflight = self.preflight(&parts, &mut audit);
        let answered = preflight.is_some();
        let result = match preflight {
            Some(answer) => answer.map(|r| (r, "preflight")),
            None => self
                .proxy_allowed(parts, body, peer, scheme, started, &mut audit)
                .await
                .map(|r| (r.map(Either::Left), "allowed")),
        };
        // A gRPC refusal is counted and logged under the HTTP status it stands for.
        let (status, mut response, reason, allowed) = match result {
            Ok((r, reason)) => (r.status(), r, reason, true),
            Err(rejection) => {
                let (code, after_allow) = (rejection.code(), rejection.after_allow());
                let status = rejection.status();
                let response = self.reject(rejection, started, grpc);
                let response = response.map(|b| Either::Right(Full::new(b)));
                (status, response, code, after_allow)
            }
        };
        self.cors_headers(&audit, origin.as_ref(), answered, response.headers_mut());
        let (method, traceparent) = (method.as_str(), traceparent.as_deref());
        let decided = (allowed, reason);
        self.finish(
            &audit,
            "proxy",
            method,
            decided,
            traceparent,
            started,
            status,
        );
        response
    }

    /// The proxy pipeline for one request: its host, the decision, the checks on what will be
    /// forwarded, and forwarding.
    async fn proxy_allowed<'a>(
        &'a self,
        parts: http::request::Parts,
        body: Incoming,
        peer: SocketAddr,
        scheme: &'static str,
        started: Instant,
        audit: &mut Audit<'a>,
    ) -> Result<Response<Incoming>, Rejection> {
        let host = crate::host::of_request(parts.version, &parts.uri, &parts.headers)?;
        let upgrade = crate::websocket::requested(parts.version, &parts.method, &parts.headers)?;
        let target = Target {
            method: &parts.method,
            uri: &parts.uri,
            host: host.as_ref(),
            headers: &parts.headers,
        };
        let allowed = self.authorize(&target, audit).await?;
        // Bounded by the minted token: a tunnel never outlives the authorization it opened with.
        let expires = allowed.minted.as_ref().map(|m| m.expires_at);
        let ws = allowed.route.websocket.as_ref();
        let tunnel = crate::websocket::admit(upgrade, ws, expires, self.clock.now())?;
        self.within_body_limit(allowed.route, &parts.headers)?;
        let decision_header = match &allowed.route.organization {
            Some(crate::policy::OrgSource::Header(name)) => Some(name),
            _ => None,
        };
        if decision_header.is_some_and(|h| crate::inbound::connection_names(&parts.headers, h)) {
            return Err(RequestError::ConnectionStripsDecision.into());
        }
        self.metrics
            .gateway_allowed
            .observe(started.elapsed().as_secs_f64());
        let inbound = Inbound {
            peer,
            scheme,
            host: host.as_ref(),
            authorization: allowed.minted.as_ref().map(|m| m.authorization.clone()),
            rules: &self.requests,
            decision_header,
            websocket: tunnel.is_some(),
        };
        let mut request = Request::from_parts(parts, body);
        let upgrading = tunnel.map(|t| (crate::websocket::Upgrading::take(&mut request), t));
        let mut response = self
            .upstreams
            .forward(
                &allowed.route.upstream,
                request,
                &allowed.path,
                &inbound,
                allowed.route.max_body_bytes,
            )
            .await?;
        // Any other answer to an upgrade is relayed like any response.
        if let Some((client, tunnel)) = upgrading
            && response.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            crate::websocket::splice(client, &mut response, tunnel, &self.metrics);
        }
        Ok(response)
    }

    /// A route's body bound, checked against the declared `Content-Length` before anything is
    /// forwarded (a longer stream is cut off at the bound by the proxy).
    fn within_body_limit(&self, route: &Route, headers: &HeaderMap) -> Result<(), Rejection> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if route
            .max_body_bytes
            .zip(declared)
            .is_some_and(|(max, len)| len > max)
        {
            self.metrics
                .limit_rejections
                .with_label_values(&["body"])
                .inc();
            return Err(Rejection::BodyTooLarge);
        }
        Ok(())
    }

    /// Decides a request: the whole pipeline up to and including minting.
    pub async fn authorize<'a>(
        &'a self,
        target: &Target<'_>,
        audit: &mut Audit<'a>,
    ) -> Result<Authorized<'a>, Rejection> {
        self.authorize_with(target, audit, &Overrides::default())
            .await
    }

    /// [`authorize`](Self::authorize), with the caller or the backend's answer given instead of
    /// verified or looked up: what `explain` and policy tests use to simulate a request.
    pub async fn authorize_with<'a>(
        &'a self,
        target: &Target<'_>,
        audit: &mut Audit<'a>,
        overrides: &Overrides,
    ) -> Result<Authorized<'a>, Rejection> {
        let (method, path) = self.checked(target)?;
        let host = target.host.map(Host::name);
        let matched = self.matched(&method, host, &path)?;
        let route = matched.route;
        audit.matched = Some(route);
        audit.path = Some(path.clone());
        audit.condition = route.condition.as_ref().map(|c| c.source());
        // Only `explain` reads the params: copying them costs every other request.
        if audit.detailed {
            audit.params = matched
                .params
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect();
        }
        let principal = match &route.access {
            Access::Public => None,
            Access::Scopes(_) => match &overrides.principal {
                Some(p) => Some(p.clone()),
                None => Some(self.verifier.authenticate(target.headers).await?),
            },
        };
        audit.principal.clone_from(&principal);
        // An exchanged token is good only on routes of its audience, on its bound path, and
        // with its bound methods.
        if let Some(TokenKind::Exchanged(binding)) = principal.as_deref().map(|p| &p.kind)
            && (binding.audience != route.upstream.audience
                || binding.bound_path.as_ref().is_some_and(|b| *b != path)
                || binding
                    .bound_methods
                    .as_ref()
                    .is_some_and(|ms| !ms.iter().any(|m| m == method.as_str())))
        {
            return Err(Rejection::WrongResource);
        }
        let organization = match &route.organization {
            None => None,
            Some(source) => Some(source.resolve(
                target.headers,
                target.uri.query(),
                host,
                &matched.params,
                principal.as_deref(),
            )?),
        };
        audit.organization.clone_from(&organization);
        // A simulated caller (`explain`, policy tests) has no token to look up.
        if let Some(p) = principal.as_deref()
            && overrides.principal.is_none()
        {
            self.admit(p, organization.as_deref()).await?;
        }

        let membership = match (&organization, &principal, &self.permissions) {
            (Some(_), Some(_), _) if overrides.membership.is_some() => {
                audit.grants = Some("given");
                overrides.membership.clone().map(Arc::new)
            }
            (Some(org), Some(p), Some(permissions)) => {
                let query = Query {
                    issuer: p.origin().to_string(),
                    subject: p.subject.to_string(),
                    organization: org.clone(),
                    client_id: p.client_id().map(str::to_string),
                };
                let looked = permissions.lookup(&query).await.map_err(|e| match *e {
                    crate::permissions::BackendError::Throttled(wait) => Rejection::Throttled(wait),
                    _ => Rejection::PermissionsUnavailable,
                })?;
                audit.grants = Some(looked.source.as_str());
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
            method: method.as_str(),
            path: &path,
        });
        let mut allowed = match decision {
            Decision::Allow(a) => a,
            Decision::Deny { denial, effective } => {
                audit.effective = effective;
                return Err(denial.into());
            }
        };
        audit.effective = Some(std::mem::take(&mut allowed.effective));
        if let Some(p) = principal.as_deref()
            && overrides.principal.is_none()
        {
            self.spend(p).await?;
        }
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
        audit.minted.clone_from(&minted);
        Ok(Authorized {
            route,
            path,
            principal,
            organization,
            minted,
            scopes: allowed.scopes,
        })
    }
}

fn json_document(body: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "public, max-age=300")
        .body(Either::Right(Full::new(Bytes::from(body.to_string()))))
        .unwrap_or_else(|_| Response::new(Either::Right(Full::new(Bytes::new()))))
}
