//! The proxy listener over TLS (rustls): HTTP/1.1 and HTTP/2 chosen by ALPN.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::util::{Harness, Options};

#[tokio::test]
async fn the_proxy_serves_tls_with_h2_and_http1_by_alpn() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("scopegate-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    let tls = format!(
        "tls: {{ cert: \"{}\", key: \"{}\" }}",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    let h = Harness::with(Options {
        server_extra: tls,
        ..Options::default()
    })
    .await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let token = h.token("read:builds");
    for (h2, expected) in [
        (true, http::Version::HTTP_2),
        (false, http::Version::HTTP_11),
    ] {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        // The connector offers by ALPN only the protocol it enables.
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only();
        let connector = if h2 {
            builder.enable_http2().build()
        } else {
            builder.enable_http1().build()
        };
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
        let url = format!(
            "https://localhost:{}/orgs/acme/builds",
            h.gateway.proxy_addr.port()
        );
        let request = http::Request::get(url)
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.version(), expected);
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            echo["headers"]["x-forwarded-proto"], "https",
            "the upstream learns the client used TLS"
        );
    }
}
