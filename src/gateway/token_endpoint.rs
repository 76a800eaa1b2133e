//! The token endpoint of the pipeline: `POST <issuer>/oauth2/token` (RFC 8693), with the
//! per-address limit on failed client authentication (counted in Redis across replicas when
//! shared state is configured, else per replica).

use std::net::SocketAddr;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::Gateway;
use crate::exchange::{ErrorCode, ExchangeConfig, ExchangeError, Form, err, response};

impl Gateway {
    /// `POST <issuer>/oauth2/token`: RFC 8693 token exchange.
    pub(super) async fn token_endpoint(
        &self,
        exchange: &ExchangeConfig,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Bytes> {
        use crate::exchange::{issue, subject_token};
        let (headers, form) = match self.client_form(request, peer).await {
            Ok(read) => read,
            Err(answer) => return answer,
        };
        let mut client_label = "unauthenticated".to_string();
        let result = async {
            let client = self.authenticate(exchange, &headers, &form, peer).await?;
            // Only a configured, authenticated client id becomes a label: bounded cardinality.
            client_label.clone_from(&client);
            let token = subject_token(&form)?;
            let subject = self
                .verifier
                .verify(token)
                .await
                .map_err(|e| {
                    err(ErrorCode::InvalidGrant, format!("subject token: {e}")).caused_by(e)
                })?;
            // A revoked token must not be laundered into a fresh one, nor a limited-use token
            // multiplied: the exchange is a presentation like any other.
            let presented = match self.admit(&subject, None).await {
                Ok(()) => self.spend(&subject).await,
                refused => refused,
            };
            presented.map_err(|r| match r {
                crate::reject::Rejection::State(crate::store::StateError::Unavailable) => err(
                    ErrorCode::TemporarilyUnavailable,
                    "shared state is unavailable; retry later",
                ),
                other => err(ErrorCode::InvalidGrant, format!("subject token: {other}")),
            })?;
            let granted = exchange.grant(&client, &subject, &form)?;
            tracing::info!(client = %client, rule = granted.rule, subject_token = %subject.token_id, "token exchanged");
            issue(
                self.minter.signing(),
                granted.claims,
                granted.lifetime,
                self.clock.now(),
            )
        }
        .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        self.metrics
            .token_exchanges
            .with_label_values(&[client_label.as_str(), outcome])
            .inc();
        if let Err(e) = &result
            && let Some(cause) = &e.cause
        {
            if e.code == ErrorCode::ServerError {
                tracing::error!(client = %client_label, error = %e, cause = %cause, "token exchange failed");
            } else {
                tracing::info!(client = %client_label, error = %e, cause = %cause, "token exchange refused");
            }
        }
        response(result)
    }

    /// The form of a client's request to the token or revocation endpoint: POST, form-encoded,
    /// bounded, from an address not over its failure budget.
    pub(super) async fn client_form(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<(HeaderMap, Form), Response<Bytes>> {
        use crate::exchange::MAX_FORM_BYTES;
        let bad = |d: &str| response(Err(err(ErrorCode::InvalidRequest, d)));
        if request.method() != Method::POST {
            return Err(bad("use POST"));
        }
        // Checked before the credentials, so a guesser learns nothing more this minute.
        if self.client_blocked(peer).await {
            self.metrics
                .limit_rejections
                .with_label_values(&["client_auth_failures"])
                .inc();
            return Err(crate::exchange::too_many_failures());
        }
        let form_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';').next().is_some_and(|t| {
                    t.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            });
        if !form_type {
            return Err(bad("the body must be application/x-www-form-urlencoded"));
        }
        let (parts, body) = request.into_parts();
        let Ok(body) = Limited::new(body, MAX_FORM_BYTES).collect().await else {
            return Err(bad("the body is unreadable or too large"));
        };
        Ok((parts.headers, Form::parse(&body.to_bytes())))
    }

    /// Authenticates the client; a failure counts against the peer's address.
    pub(super) async fn authenticate(
        &self,
        exchange: &ExchangeConfig,
        headers: &HeaderMap,
        form: &Form,
        peer: SocketAddr,
    ) -> Result<String, ExchangeError> {
        let result = exchange.authenticate(headers, form);
        if let Err(e) = &result
            && e.code == ErrorCode::InvalidClient
        {
            let limit = exchange.max_auth_failures_per_minute;
            let mut reached = self.auth_failures.record(peer.ip());
            if let Some(store) = &self.store {
                let ip = peer.ip().to_string();
                // Redis down: this replica's own count (above) still applies.
                if let Ok((count, _)) = store.count(&["auth", &ip], Duration::from_secs(60)).await {
                    reached = count == u64::from(limit);
                }
            }
            if reached {
                tracing::warn!(peer = %peer.ip(), limit, "client authentication at the token endpoint failed too often; refusing this address for the rest of the minute");
            }
        }
        result
    }

    /// Whether the peer's address has used up its failed authentications for this minute, on
    /// this replica or (with shared state) across all of them.
    async fn client_blocked(&self, peer: SocketAddr) -> bool {
        if self.auth_failures.blocked(peer.ip()) {
            return true;
        }
        let Some(store) = &self.store else {
            return false;
        };
        let limit = self.auth_failures.limit();
        store
            .peek(&["auth", &peer.ip().to_string()])
            .await
            .is_ok_and(|n| n >= u64::from(limit))
    }
}
