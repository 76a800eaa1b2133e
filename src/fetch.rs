//! The HTTPS client side: a target's TLS settings, the connector every client of scopegate's
//! builds from them, and a small GET client for the JSON documents scopegate fetches itself
//! (JWKS, OIDC discovery): pooled, with a timeout and a bound on the response size.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use rustls::pki_types::ServerName;

/// The most a fetched document may weigh.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Why a document could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// Connection or protocol failure.
    #[error("request failed: {0}")]
    Request(String),
    /// A status other than 200.
    #[error("answered HTTP {0}")]
    Status(u16),
    /// Larger than the bound, or cut short.
    #[error("body unreadable or over {MAX_DOCUMENT_BYTES} bytes")]
    Body,
    /// Not the JSON expected.
    #[error("not valid JSON: {0}")]
    Json(String),
}

/// How scopegate speaks TLS to one target it calls (its `tls:` block, built and checked at
/// load): the roots it trusts, the certificate it presents, the name it checks. The rustls
/// config carries no ALPN: each client adds the protocols it speaks.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: std::sync::Arc<rustls::ClientConfig>,
    /// Checked against the target's certificate instead of the URL's host, when set.
    pub server_name: Option<ServerName<'static>>,
}

/// Fetches JSON over HTTP(S) with rustls and the Mozilla root store.
#[derive(Debug, Clone)]
pub struct FetchClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

/// An HTTPS-or-HTTP connector on aws-lc-rs: with a target's `tls` settings (its CA, client
/// certificate, server name), or else the bundled web PKI roots.
pub(crate) fn https_connector(
    connect_timeout: Duration,
    tls: Option<&ClientTls>,
) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match tls {
        Some(tls) => builder.with_tls_config((*tls.config).clone()),
        None => {
            let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            match builder.with_provider_and_webpki_roots(provider) {
                Ok(b) => b,
                // Only fails when the provider lacks safe protocol versions, which aws-lc-rs has.
                Err(e) => unreachable!("aws-lc-rs supports the default TLS versions: {e}"),
            }
        }
    };
    let builder = builder.https_or_http();
    let builder = match tls.and_then(|t| t.server_name.clone()) {
        Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
        None => builder,
    };
    builder.enable_http1().enable_http2().wrap_connector(http)
}

impl FetchClient {
    /// A client with a target's `tls` settings, or the public roots.
    pub fn new(tls: Option<&ClientTls>) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https_connector(Duration::from_secs(5), tls));
        Self { client }
    }

    /// GETs `uri` and parses its JSON body, all within `timeout`.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        uri: &http::Uri,
        timeout: Duration,
    ) -> Result<T, FetchError> {
        let request = http::Request::get(uri.clone())
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("scopegate/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|e| FetchError::Request(e.to_string()))?;
        let work = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| FetchError::Request(e.to_string()))?;
            if response.status() != http::StatusCode::OK {
                return Err(FetchError::Status(response.status().as_u16()));
            }
            let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
                .collect()
                .await
                .map_err(|_| FetchError::Body)?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|e| FetchError::Json(e.to_string()))
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| FetchError::Timeout)?
    }
}

impl Default for FetchClient {
    fn default() -> Self {
        Self::new(None)
    }
}
