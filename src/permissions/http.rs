//! The `http` backend: `POST <url>` with `{"subject","organization","issuer","client_id"}`;
//! `200 {"roles","scopes","claims","ttl"}` is a member, `404` is not. Bounded concurrency and a
//! timeout that covers waiting for a slot, connecting and reading the (size-bounded) body.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::{Answer, Backend, BackendError, BoxFuture, Grants, Membership, Query};

const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Permissions from an HTTP API.
#[derive(Debug)]
pub(crate) struct HttpBackend {
    url: http::Uri,
    timeout: Duration,
    slots: tokio::sync::Semaphore,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    claims: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    ttl: Option<u64>,
}

impl HttpBackend {
    pub(crate) fn new(
        url: http::Uri,
        timeout: Duration,
        max_concurrency: usize,
        tls: Option<&crate::policy::ClientTls>,
    ) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(crate::fetch::https_connector(
                timeout,
                tls,
                crate::fetch::Alpn::Both,
            ));
        Self {
            url,
            timeout,
            slots: tokio::sync::Semaphore::new(max_concurrency.max(1)),
            client,
        }
    }

    async fn call(&self, query: &Query) -> Result<Answer, BackendError> {
        // The semaphore is never closed; a closed one would mean no slot, and time out.
        let Ok(_slot) = self.slots.acquire().await else {
            return Err(BackendError::Timeout);
        };
        let body = serde_json::json!({
            "subject": query.subject, "organization": query.organization,
            "issuer": query.issuer, "client_id": query.client_id,
        });
        let request = http::Request::post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(BackendError::Request)?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(BackendError::Unreachable)?;
        match response.status() {
            http::StatusCode::NOT_FOUND => {
                return Ok(Answer {
                    membership: Membership::NotMember,
                    ttl: None,
                });
            }
            http::StatusCode::OK => {}
            other => {
                return Err(BackendError::Status(other));
            }
        }
        let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(BackendError::Body)?
            .to_bytes();
        let body: Body = serde_json::from_slice(&bytes).map_err(BackendError::Json)?;
        Ok(Answer {
            membership: Membership::Member(Grants {
                roles: body.roles,
                scopes: body.scopes,
                claims: body.claims,
            }),
            ttl: body.ttl.map(Duration::from_secs),
        })
    }
}

impl Backend for HttpBackend {
    fn lookup<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Answer, BackendError>> {
        super::timed(self.timeout, self.call(query))
    }
}
