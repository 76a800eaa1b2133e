//! A small HTTPS GET client for JSON documents scopegate fetches itself (JWKS, OIDC discovery):
//! pooled, with a timeout and a bound on the response size.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

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

/// Fetches JSON over HTTP(S) with rustls and the Mozilla root store.
#[derive(Debug, Clone)]
pub struct FetchClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

/// The protocols a TLS connection offers by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alpn {
    /// No offer: HTTP/1.1.
    Http1,
    /// `h2` only.
    H2,
    /// `h2` and `http/1.1`: the server picks.
    Both,
}

/// An HTTPS-or-HTTP connector on aws-lc-rs with the bundled web PKI roots, offering `alpn` over
/// TLS.
pub(crate) fn https_connector(
    connect_timeout: Duration,
    alpn: Alpn,
) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    match builder.with_provider_and_webpki_roots(provider) {
        Ok(b) => match alpn {
            Alpn::Http1 => b.https_or_http().enable_http1().wrap_connector(http),
            Alpn::H2 => b.https_or_http().enable_http2().wrap_connector(http),
            Alpn::Both => b.https_or_http().enable_all_versions().wrap_connector(http),
        },
        // Only fails when the provider lacks safe protocol versions, which aws-lc-rs has.
        Err(e) => unreachable!("aws-lc-rs supports the default TLS versions: {e}"),
    }
}

impl FetchClient {
    pub fn new() -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https_connector(Duration::from_secs(5), Alpn::Both));
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
        Self::new()
    }
}
