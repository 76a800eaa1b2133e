//! The demo upstream: answers every request with JSON describing what it received (method, path,
//! headers, body size and SHA-256, and the decoded claims of the bearer token it got), so a
//! newcomer and the tests can see exactly what scopegate forwarded. The body is hashed as it
//! streams, never buffered. A request header `x-echo-delay-ms` delays the answer (timeout demos).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Starts the echo server on `addr`; it runs until `shutdown` turns true.
pub async fn start(
    addr: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    crate::serve::spawn_listener(listener, None, shutdown, |req, _| async move {
        Ok::<_, Infallible>(echo(req).await)
    });
    Ok(bound)
}

async fn echo(request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, mut body) = request.into_parts();
    if let Some(ms) = parts
        .headers
        .get("x-echo-delay-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    }
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut bytes = 0u64;
    let mut body_error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    bytes += data.len() as u64;
                    digest.update(data);
                }
            }
            Err(e) => {
                body_error = Some(e.to_string());
                break;
            }
        }
    }
    let mut headers: BTreeMap<String, Value> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let v = Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match headers.get_mut(name.as_str()) {
            Some(Value::Array(a)) => a.push(v),
            Some(existing) => *existing = Value::Array(vec![existing.clone(), v]),
            None => {
                headers.insert(name.as_str().to_string(), v);
            }
        }
    }
    let sha256: String = digest
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let answer = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": bytes,
        "body_sha256": sha256,
        "body_error": body_error,
        "token_claims": bearer_claims(&parts.headers),
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(answer.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// The payload of the bearer token, decoded for display only (this server verifies nothing).
fn bearer_claims(headers: &http::HeaderMap) -> Value {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Value::Null;
    };
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
