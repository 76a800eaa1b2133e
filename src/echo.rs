//! The demo upstream: answers every request with JSON describing what it received (method, path,
//! headers, body size and SHA-256, and the decoded claims of the bearer token it got), so a
//! newcomer and the tests can see exactly what scopegate forwarded. The body is hashed as it
//! streams, never buffered. A request header `x-echo-delay-ms` delays the answer (timeout demos).
//!
//! Started with a discovery URL, it also verifies every bearer token it receives the way a
//! standard JWT authorizer would — discovery document, then JWKS, then signature, `iss` and
//! `exp` — with jsonwebtoken directly, independent of scopegate's own verifier, and reports the
//! result as `token_verified` / `token_error`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::fetch::FetchClient;

/// Where the echo checks tokens, when it does.
type Verify = Option<(http::Uri, FetchClient)>;

/// Starts the echo server on `addr`; it runs until `shutdown` turns true.
pub async fn start(
    addr: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    start_verifying(addr, shutdown, None).await
}

/// Like [`start`], verifying tokens against the issuer whose discovery document is at `discovery`.
pub async fn start_verifying(
    addr: SocketAddr,
    shutdown: watch::Receiver<bool>,
    discovery: Option<http::Uri>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let verify: Arc<Verify> = Arc::new(discovery.map(|d| (d, FetchClient::new(None))));
    crate::serve::spawn_listener(listener, None, shutdown, None, move |req, _| {
        let verify = verify.clone();
        async move { Ok::<_, Infallible>(echo(req, &verify).await) }
    });
    Ok(bound)
}

async fn echo(request: Request<Incoming>, verify: &Verify) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    if let Some(ms) = parts
        .headers
        .get("x-echo-delay-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    }
    let (bytes, sha256, body_error) = hash_body(body).await;
    let token = bearer(&parts.headers);
    let (verified, verify_error, token_header) = match (token, verify) {
        (Some(t), Some((discovery, client))) => match check(t, discovery, client).await {
            Ok(h) => (Value::Bool(true), Value::Null, h),
            Err(e) => (Value::Bool(false), Value::String(e), Value::Null),
        },
        _ => (Value::Null, Value::Null, Value::Null),
    };
    let answer = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers_json(&parts.headers),
        "body_bytes": bytes,
        "body_sha256": sha256,
        "body_error": body_error,
        "token_claims": token.map_or(Value::Null, claims),
        "token_verified": verified,
        "token_error": verify_error,
        "token_header": token_header,
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(answer.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Streams the body through SHA-256: (bytes, hex digest, error).
async fn hash_body(mut body: Incoming) -> (u64, String, Option<String>) {
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut bytes = 0u64;
    let mut error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    bytes += data.len() as u64;
                    digest.update(data);
                }
            }
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    (
        bytes,
        digest
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        error,
    )
}

fn headers_json(headers: &HeaderMap) -> BTreeMap<String, Value> {
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    for (name, value) in headers {
        let v = Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match out.get_mut(name.as_str()) {
            Some(Value::Array(a)) => a.push(v),
            Some(existing) => *existing = Value::Array(vec![existing.clone(), v]),
            None => {
                out.insert(name.as_str().to_string(), v);
            }
        }
    }
    out
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The payload of a token, decoded for display only.
fn claims(token: &str) -> Value {
    token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// Verifies `token` as an upstream would: discovery → JWKS → signature, `iss`, `exp`.
async fn check(token: &str, discovery: &http::Uri, client: &FetchClient) -> Result<Value, String> {
    let timeout = Duration::from_secs(5);
    let doc: Value = client
        .get_json(discovery, timeout)
        .await
        .map_err(|e| format!("discovery: {e}"))?;
    let issuer = doc["issuer"].as_str().ok_or("discovery has no issuer")?;
    let jwks_uri: http::Uri = doc["jwks_uri"]
        .as_str()
        .and_then(|u| u.parse().ok())
        .ok_or("discovery has no jwks_uri")?;
    let jwks: jsonwebtoken::jwk::JwkSet = client
        .get_json(&jwks_uri, timeout)
        .await
        .map_err(|e| format!("jwks: {e}"))?;
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
    let kid = header.kid.as_deref().ok_or("no kid")?;
    let jwk = jwks
        .find(kid)
        .ok_or_else(|| format!("kid `{kid}` is not in the JWKS"))?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| format!("jwk: {e}"))?;
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map_err(|e| format!("invalid: {e}"))?;
    Ok(
        json!({"typ": data.header.typ, "kid": data.header.kid, "alg": format!("{:?}", data.header.alg)}),
    )
}
