use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Meters, Reason, UpgradeError, requested, run};
use crate::metrics::Metrics;
use crate::policy::WebSocketBounds as Bounds;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

const WS: &[(&str, &str)] = &[("upgrade", "websocket"), ("connection", "Upgrade")];

#[test]
fn only_a_well_formed_websocket_get_is_an_upgrade() {
    let get =
        |h: &[(&'static str, &'static str)]| requested(Version::HTTP_11, &Method::GET, &headers(h));
    assert_eq!(
        get(&[]),
        Ok(false),
        "no Upgrade header: an ordinary request"
    );
    assert_eq!(get(&[("connection", "upgrade")]), Ok(false));
    assert_eq!(get(WS), Ok(true));
    assert_eq!(
        get(&[
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, upgrade")
        ]),
        Ok(true)
    );
    for other in ["h2c", "websocket, h2c", "TLS/1.0"] {
        assert_eq!(
            get(&[("upgrade", other), ("connection", "upgrade")]),
            Err(UpgradeError::Unsupported),
            "{other}"
        );
    }
    assert_eq!(
        get(&[("upgrade", "websocket")]),
        Err(UpgradeError::Malformed),
        "Connection does not name upgrade"
    );
    assert_eq!(
        get(&[
            ("upgrade", "websocket"),
            ("upgrade", "websocket"),
            ("connection", "upgrade")
        ]),
        Err(UpgradeError::Malformed)
    );
    assert_eq!(
        requested(Version::HTTP_11, &Method::POST, &headers(WS)),
        Err(UpgradeError::Malformed)
    );
    assert_eq!(
        requested(Version::HTTP_10, &Method::GET, &headers(WS)),
        Err(UpgradeError::Malformed)
    );
}

#[test]
fn a_tunnel_never_outlives_its_token_and_max_lifetime_only_shortens_it() {
    let now = 1_700_000_000;
    let bounds = |max| Bounds {
        idle_timeout: Duration::from_secs(300),
        max_lifetime: max,
    };
    let lifetime = |max, exp| super::tunnel(&bounds(max), exp, now).lifetime;
    let left = lifetime(None, Some(now + 100));
    assert_eq!(left, Duration::from_secs(100));
    assert_eq!(
        lifetime(Some(Duration::from_secs(10)), Some(now + 100)),
        Duration::from_secs(10)
    );
    let capped = lifetime(Some(Duration::from_secs(1000)), Some(now + 100));
    assert_eq!(capped, Duration::from_secs(100));
    assert_eq!(lifetime(None, Some(now - 5)), Duration::ZERO, "expired");
    assert_eq!(
        lifetime(Some(Duration::from_secs(7)), None),
        Duration::from_secs(7),
        "a public route"
    );
    assert_eq!(lifetime(None, None), Duration::ZERO, "fails closed");
}

/// A tunnel between two in-memory pipes; returns the test's ends of both.
fn pipes() -> ((DuplexStream, DuplexStream), (DuplexStream, DuplexStream)) {
    let (client, client_far) = tokio::io::duplex(1024);
    let (upstream, upstream_far) = tokio::io::duplex(1024);
    ((client, client_far), (upstream, upstream_far))
}

async fn tunnel(
    idle: Duration,
    lifetime: Duration,
    drain: Option<watch::Receiver<()>>,
) -> (
    DuplexStream,
    DuplexStream,
    tokio::task::JoinHandle<Reason>,
    Metrics,
) {
    let ((client, client_far), (upstream, upstream_far)) = pipes();
    let metrics = Metrics::new();
    let meters = Meters::of(&metrics);
    let deadline = Instant::now() + lifetime;
    let task =
        tokio::spawn(
            async move { run(client_far, upstream_far, idle, deadline, drain, &meters).await },
        );
    (client, upstream, task, metrics)
}

#[tokio::test]
async fn bytes_flow_both_ways_are_counted_and_closing_both_ends_is_closed() {
    let long = Duration::from_secs(60);
    let (mut client, mut upstream, task, metrics) = tunnel(long, long, None).await;
    client.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    upstream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");
    upstream.write_all(b"hi!").await.unwrap();
    let mut buf = [0u8; 3];
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hi!");
    drop(client);
    // The upstream sees the client's close as end of stream, then closes too.
    assert_eq!(upstream.read(&mut [0u8; 8]).await.unwrap(), 0);
    drop(upstream);
    assert_eq!(task.await.unwrap(), Reason::Closed);
    let bytes = |d: &str| metrics.websocket_bytes.with_label_values(&[d]).get();
    assert_eq!((bytes("upstream"), bytes("downstream")), (5, 3));
}

#[tokio::test]
async fn a_silent_tunnel_is_closed_at_its_idle_timeout_and_traffic_defers_it() {
    let (mut client, mut upstream, task, _) =
        tunnel(Duration::from_millis(300), Duration::from_secs(60), None).await;
    let started = Instant::now();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        client.write_all(b"x").await.unwrap();
        upstream.read_exact(&mut [0u8; 1]).await.unwrap();
    }
    assert_eq!(task.await.unwrap(), Reason::Idle);
    assert!(started.elapsed() >= Duration::from_millis(850));
    assert_eq!(client.read(&mut [0u8; 1]).await.unwrap(), 0, "dropped");
}

#[tokio::test]
async fn a_busy_tunnel_is_closed_at_its_lifetime() {
    let (mut client, mut upstream, task, _) =
        tunnel(Duration::from_secs(60), Duration::from_millis(300), None).await;
    let pump = tokio::spawn(async move {
        loop {
            if client.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let drained = tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = upstream.read_to_end(&mut sink).await;
    });
    assert_eq!(task.await.unwrap(), Reason::Lifetime);
    pump.await.unwrap();
    drained.await.unwrap();
}

#[tokio::test]
async fn a_draining_listener_closes_its_tunnels() {
    let (drain, drained) = watch::channel(());
    let long = Duration::from_secs(60);
    let (_client, _upstream, task, _) = tunnel(long, long, Some(drained)).await;
    drain.send(()).unwrap();
    assert_eq!(task.await.unwrap(), Reason::Shutdown);
}
