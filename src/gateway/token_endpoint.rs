//! The token endpoint of the pipeline: `POST <issuer>/oauth2/token` (RFC 8693), with the
//! per-address limit on failed client authentication.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::Gateway;
use crate::exchange::ExchangeConfig;

impl Gateway {
    /// `POST <issuer>/oauth2/token`: RFC 8693 token exchange.
    pub(super) async fn token_endpoint(
        &self,
        exchange: &ExchangeConfig,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Bytes> {
        use crate::exchange::{
            ErrorCode, Form, MAX_FORM_BYTES, err, issue, response, subject_token,
        };
        let bad = |d: &str| Err(err(ErrorCode::InvalidRequest, d));
        if request.method() != Method::POST {
            return response(bad("use POST"));
        }
        // Checked before the credentials, so a guesser learns nothing more this minute.
        if self.auth_failures.blocked(peer.ip()) {
            self.metrics
                .limit_rejections
                .with_label_values(&["client_auth_failures"])
                .inc();
            return crate::exchange::too_many_failures();
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
            return response(bad("the body must be application/x-www-form-urlencoded"));
        }
        let (parts, body) = request.into_parts();
        let Ok(body) = Limited::new(body, MAX_FORM_BYTES).collect().await else {
            return response(bad("the body is unreadable or too large"));
        };
        let form = Form::parse(&body.to_bytes());
        let mut client_label = "unauthenticated".to_string();
        let result = async {
            let client = exchange
                .authenticate(&parts.headers, &form)
                .inspect_err(|e| {
                    if e.code == ErrorCode::InvalidClient && self.auth_failures.record(peer.ip()) {
                        tracing::warn!(peer = %peer.ip(), limit = exchange.max_auth_failures_per_minute, "client authentication at the token endpoint failed too often; refusing this address for the rest of the minute");
                    }
                })?;
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
}
