//! `POST <issuer>/oauth2/revoke` (RFC 7009): the client that obtained an exchanged token revokes
//! it, authenticated like the token endpoint. Every replica refuses it from then on.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::Value;

use super::Gateway;
use crate::exchange::{ErrorCode, ExchangeConfig, err, response};
use crate::principal::TokenKind;
use crate::store::{Revocation, StateError, Store};

impl Gateway {
    pub(super) async fn revoke_endpoint(
        &self,
        exchange: &ExchangeConfig,
        store: &Store,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Bytes> {
        let (headers, form) = match self.client_form(request, peer).await {
            Ok(read) => read,
            Err(answer) => return answer,
        };
        let result = async {
            let client = self.authenticate(exchange, &headers, &form, peer).await?;
            let token = form
                .one("token")?
                .ok_or_else(|| err(ErrorCode::InvalidRequest, "`token` is missing"))?;
            // RFC 7009 section 2.2: a token that is invalid, expired or already unusable
            // needs no revocation, and the client could do nothing with an error.
            let Ok(principal) = self.verifier.verify(token).await else {
                return Ok(None);
            };
            let issued_to = principal
                .claims
                .get("act")
                .and_then(|a| a.get("sub"))
                .and_then(Value::as_str);
            if !matches!(principal.kind, TokenKind::Exchanged(_)) || issued_to != Some(&client) {
                return Err(err(
                    ErrorCode::UnauthorizedClient,
                    "the token was not issued to this client",
                ));
            }
            let revocation = Revocation::Token {
                id: principal.token_id.to_string(),
                expires: principal.expires_at,
            };
            store.revoke(revocation).await.map_err(|e| match e {
                StateError::Unavailable => err(
                    ErrorCode::TemporarilyUnavailable,
                    "the revocation cannot be recorded now; retry later",
                ),
                _ => err(ErrorCode::ServerError, "the revocation failed"),
            })?;
            tracing::info!(client = %client, token = %principal.token_id, "exchanged token revoked");
            Ok(Some(client))
        }
        .await;
        match result {
            Ok(_) => Response::builder()
                .status(StatusCode::OK)
                .header(header::CACHE_CONTROL, "no-store")
                .body(Bytes::new())
                .unwrap_or_else(|_| Response::new(Bytes::new())),
            Err(e) => {
                let mut answer = response(Err(e));
                if answer.status() == StatusCode::SERVICE_UNAVAILABLE {
                    answer
                        .headers_mut()
                        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                }
                answer
            }
        }
    }
}
