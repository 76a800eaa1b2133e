//! A permissions API for the `http` backend tests: alice is project-admin in acme and
//! project-viewer in globex; every other (subject, organization) is 404. It counts calls, can be
//! slowed down, and can be taken down (503).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::sync::watch;

#[derive(Default)]
struct State {
    calls: AtomicUsize,
    down: AtomicBool,
    delay_ms: AtomicU64,
}

pub struct PermsApi {
    pub url: String,
    state: Arc<State>,
    _stop: watch::Sender<bool>,
}

impl PermsApi {
    pub async fn start() -> Self {
        let (stop, stopped) = watch::channel(false);
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let url = format!("http://{}/v1/permissions", listener.local_addr().unwrap());
        let state = Arc::new(State::default());
        let s = state.clone();
        scopegate::serve::spawn_listener(listener, None, stopped, None, move |req, _| {
            let s = s.clone();
            async move {
                s.calls.fetch_add(1, Ordering::SeqCst);
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                tokio::time::sleep(Duration::from_millis(s.delay_ms.load(Ordering::SeqCst))).await;
                let (status, answer) = if s.down.load(Ordering::SeqCst) {
                    (StatusCode::SERVICE_UNAVAILABLE, json!({"error": "down"}))
                } else {
                    answer(&serde_json::from_slice(&body).unwrap_or(Value::Null))
                };
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from(answer.to_string())))
                        .unwrap(),
                )
            }
        });
        Self {
            url,
            state,
            _stop: stop,
        }
    }

    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

fn answer(q: &Value) -> (StatusCode, Value) {
    assert!(
        q["issuer"].is_string() && q["client_id"].is_string(),
        "the backend gets issuer and client_id: {q}"
    );
    match (q["subject"].as_str(), q["organization"].as_str()) {
        (Some("alice"), Some("acme")) => (
            StatusCode::OK,
            json!({"roles": ["project-admin"], "ttl": 60}),
        ),
        (Some("alice"), Some("globex")) => (
            StatusCode::OK,
            json!({"roles": ["project-viewer"], "scopes": [], "claims": {}, "ttl": 60}),
        ),
        (Some(_), Some(org)) if org.starts_with("open-") => {
            (StatusCode::OK, json!({"roles": ["project-viewer"]}))
        }
        _ => (StatusCode::NOT_FOUND, json!({"error": "not a member"})),
    }
}
