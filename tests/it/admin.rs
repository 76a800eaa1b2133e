//! The admin listener: health, readiness, metrics.

use http::{Method, StatusCode};

use crate::util::Harness;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let h = Harness::start().await;
    assert_eq!(h.admin_get("/healthz").await.status, StatusCode::OK);
    assert_eq!(h.admin_get("/readyz").await.status, StatusCode::OK);
    assert_eq!(
        h.get("/orgs/acme/builds", &h.token("read:builds"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        h.get("/orgs/acme/builds", &h.token("other")).await.status,
        StatusCode::FORBIDDEN
    );
    let text = String::from_utf8_lossy(&h.admin_get("/metrics").await.body).into_owned();
    for line in [
        r#"scopegate_requests_total{decision="allow",route="list-builds",status="200"} 1"#,
        r#"scopegate_requests_total{decision="deny",route="list-builds",status="403"} 1"#,
        r#"scopegate_jwks_refreshes_total{issuer="test",result="ok"} 1"#,
        "scopegate_gateway_duration_seconds_bucket",
        "scopegate_upstream_duration_seconds_bucket",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    // The proxy port does not serve admin paths.
    assert_eq!(
        h.client
            .send(Method::GET, &h.url("/metrics"), &[], Default::default())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn not_ready_while_an_issuer_has_no_keys() {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let issuer = scopegate::dev_issuer::DevIssuer::start(stopped)
        .await
        .unwrap();
    issuer.set_down(true);
    let server = scopegate::config::Source {
        path: "s.yaml".into(),
        text: format!(
            "listen: {{ proxy: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\npolicies: [p.yaml]\nissuers:\n  t: {{ issuer: x, jwks_url: \"{}\", audiences: [api] }}\nupstreams:\n  u: {{ url: \"http://127.0.0.1:1\" }}\nsigning: {{ issuer: \"http://x\", keys: [{{ kid: k, generate: true }}] }}\n",
            issuer.jwks_url()
        ),
    };
    let policy = scopegate::config::Source {
        path: "p.yaml".into(),
        text: "routes: []".into(),
    };
    let config =
        scopegate::config::from_sources(&server, std::path::Path::new("."), &[policy]).unwrap();
    let running = scopegate::serve::start(config).await.unwrap();
    let client = crate::util::TestClient::new();
    let a = client
        .send(
            Method::GET,
            &format!("http://{}/readyz", running.admin_addr),
            &[],
            Default::default(),
        )
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    drop(stop);
}
