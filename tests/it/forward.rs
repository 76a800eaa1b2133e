//! Forwarding: bodies stream both ways intact, hop-by-hop and scopegate-owned headers are
//! stripped, X-Forwarded-* are set, and upstream failures become 502/504.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, StreamBody};

use crate::util::Harness;

#[tokio::test]
async fn a_100_mb_body_streams_through_with_a_matching_checksum() {
    let h = Harness::start().await;
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 1600; // 1600 * 64 KiB = 100 MiB
    let mut expected = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i * 31 % 251) as u8).collect();
    for _ in 0..CHUNKS {
        expected.update(&chunk);
    }
    let expected: String = expected
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let chunk = Bytes::from(chunk);
    let stream = futures_util::stream::iter(0..CHUNKS)
        .map(move |_| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk.clone())));
    let body = BodyExt::boxed(StreamBody::new(stream));
    let token = h.token("");
    let a = h
        .client
        .send_body(
            Method::PUT,
            &h.url("/upload"),
            &[("authorization", &format!("Bearer {token}"))],
            body,
        )
        .await;
    a.expect_status(StatusCode::OK);
    let echo = a.json();
    assert_eq!(echo["body_bytes"], (CHUNK * CHUNKS) as u64);
    assert_eq!(echo["body_sha256"], expected);
}

#[tokio::test]
async fn hop_by_hop_and_owned_headers_are_stripped_and_forwarded_headers_set() {
    let h = Harness::start().await;
    let token = h.token("read:builds");
    let bearer = format!("Bearer {token}");
    let a = h
        .client
        .get(
            &h.url("/orgs/acme/builds"),
            &[
                ("authorization", &bearer),
                ("connection", "x-secret-hop, keep-alive"),
                ("x-secret-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-authorization", "Basic abc"),
                ("x-scopegate-subject", "admin"),
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil.example.com"),
                (
                    "forwarded",
                    "for=203.0.113.9;proto=https;host=evil.example.com",
                ),
                ("x-real-ip", "203.0.113.9"),
                ("x-custom", "kept"),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let headers = &a.json()["headers"];
    for gone in [
        "connection",
        "x-secret-hop",
        "keep-alive",
        "proxy-authorization",
        "x-scopegate-subject",
        "forwarded",
        "x-real-ip",
    ] {
        assert!(
            headers.get(gone).is_none(),
            "{gone} reached the upstream: {headers}"
        );
    }
    assert_eq!(headers["x-custom"], "kept");
    assert_eq!(
        headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1",
        "the peer is appended"
    );
    assert_eq!(
        headers["x-forwarded-proto"], "http",
        "replaced with what scopegate saw"
    );
    assert_eq!(
        headers["x-forwarded-host"],
        h.gateway.proxy_addr.to_string()
    );
    assert_eq!(
        headers["host"],
        h.echo.to_string(),
        "Host is the upstream's"
    );
    // The caller's token never reaches the upstream: a minted one replaces it, and the upstream
    // verified it through scopegate's discovery document.
    assert_ne!(headers["authorization"], bearer.as_str());
    let echo = a.json();
    assert_eq!(echo["token_verified"], true, "{}", echo["token_error"]);
    assert_eq!(echo["token_header"]["typ"], "at+jwt");
    assert_eq!(echo["token_claims"]["sub"], "alice");
    assert_eq!(echo["token_claims"]["scope"], "read:builds");
    assert_eq!(echo["token_claims"]["aud"], "echo");
    assert_eq!(echo["token_claims"]["client_id"], "cli");
    assert_eq!(echo["token_claims"]["token_use"], "upstream");
}

#[tokio::test]
async fn public_routes_need_no_token() {
    let h = Harness::start().await;
    let a = h.client.get(&h.url("/public"), &[]).await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    let h = Harness::start().await;
    let token = h.token("");
    let a = h.get("/down", &token).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(a.code(), "upstream_unavailable");
    let bearer = format!("Bearer {token}");
    let a = h
        .client
        .get(
            &h.url("/slow"),
            &[("authorization", &bearer), ("x-echo-delay-ms", "2000")],
        )
        .await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(a.code(), "upstream_timeout");
}

#[tokio::test]
async fn http2_prior_knowledge_clients_are_served() {
    let h = Harness::start().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<Bytes>>();
    let request = http::Request::get(h.url("/orgs/acme/builds"))
        .header(
            "authorization",
            format!("Bearer {}", h.token("read:builds")),
        )
        .body(Default::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["path"], "/orgs/acme/builds");
}

#[tokio::test]
async fn a_route_body_limit_is_413_and_an_upstream_at_its_concurrency_bound_is_503() {
    let h = Harness::start().await;
    let bearer = format!("Bearer {}", h.token(""));
    let a = h
        .client
        .send(
            Method::PUT,
            &h.url("/limited"),
            &[("authorization", &bearer)],
            Bytes::from(vec![b'x'; 2000]),
        )
        .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.code(), "body_too_large");
    let a = h
        .client
        .send(
            Method::PUT,
            &h.url("/limited"),
            &[("authorization", &bearer)],
            Bytes::from(vec![b'x'; 1000]),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["body_bytes"], 1000);

    // `single` allows one request in flight: a second one meanwhile is refused, not queued.
    let (client, url, b) = (h.client.clone(), h.url("/single"), bearer.clone());
    let first = tokio::spawn(async move {
        client
            .get(&url, &[("authorization", &b), ("x-echo-delay-ms", "600")])
            .await
            .status
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = h
        .client
        .get(&h.url("/single"), &[("authorization", &bearer)])
        .await;
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second.code(), "upstream_busy");
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    assert_eq!(
        h.client
            .get(&h.url("/single"), &[("authorization", &bearer)])
            .await
            .status,
        StatusCode::OK,
        "the slot is free again"
    );
    let metrics = String::from_utf8_lossy(&h.admin_get("/metrics").await.body).into_owned();
    assert!(
        metrics.contains(r#"scopegate_limit_rejections_total{limit="body"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"scopegate_limit_rejections_total{limit="upstream"} 1"#),
        "{metrics}"
    );
}

/// Regression (amplification): a client that stops sending its body held an upstream
/// concurrency slot for as long as it liked. Past `body_read_timeout` it gets 408 and the slot
/// is free again.
#[tokio::test]
async fn a_stalled_request_body_gets_408_and_gives_its_upstream_slot_back() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = crate::util::Harness::with(crate::util::Options {
        limits: "limits: { body_read_timeout: 1s }".into(),
        ..Default::default()
    })
    .await;
    let token = h.token("");
    let mut stalled = tokio::net::TcpStream::connect(h.gateway.proxy_addr)
        .await
        .unwrap();
    stalled
        .write_all(
            format!(
                "POST /single HTTP/1.1\r\nHost: a.example\r\nAuthorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n0123456789"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), stalled.read(&mut answer))
        .await
        .expect("an answer within the timeout")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_stalled"), "{text}");
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(900),
        "{waited:?}"
    );
    // The one slot of `single` is free again.
    h.get("/single", &token)
        .await
        .expect_status(http::StatusCode::OK);
}
