//! A development token issuer: serves a JWKS and an OIDC discovery document on loopback and
//! signs tokens with keys it generates. `scopegate dev` uses it so nothing external is needed;
//! the end-to-end tests use it as the identity provider, with the switches they need (keys
//! published later, the endpoint taken down, a count of JWKS fetches).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::keys::{KeyError, SigningKey};

#[derive(Debug, Default)]
struct State {
    /// Keys that can sign; only `published` ones appear in the JWKS.
    keys: RwLock<Vec<(SigningKey, bool)>>,
    jwks_fetches: AtomicUsize,
    down: AtomicBool,
}

/// A running development issuer.
#[derive(Debug, Clone)]
pub struct DevIssuer {
    /// The issuer URL (`iss`), `http://127.0.0.1:<port>`.
    pub url: String,
    state: Arc<State>,
}

impl DevIssuer {
    /// Starts on `127.0.0.1:0`, with no keys.
    pub async fn start(shutdown: watch::Receiver<bool>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(State::default());
        let (s, u) = (state.clone(), url.clone());
        crate::serve::spawn_listener(listener, None, shutdown, None, move |req, _| {
            let answer = answer(&s, &u, req.uri().path());
            async move { Ok::<_, Infallible>(answer) }
        });
        Ok(Self { url, state })
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.url)
    }

    /// The OIDC discovery URL.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.url)
    }

    /// Generates a key and publishes it in the JWKS.
    pub fn add_key(&self, kid: &str, alg: Algorithm) -> Result<(), KeyError> {
        self.add(kid, alg, true)
    }

    /// Generates a key that signs but is not published (yet): an untrusted or rotated-in key.
    pub fn add_unpublished_key(&self, kid: &str, alg: Algorithm) -> Result<(), KeyError> {
        self.add(kid, alg, false)
    }

    fn add(&self, kid: &str, alg: Algorithm, published: bool) -> Result<(), KeyError> {
        let key = SigningKey::generate(kid, alg)?;
        self.write_keys().push((key, published));
        Ok(())
    }

    /// Publishes a key added with [`add_unpublished_key`](Self::add_unpublished_key).
    pub fn publish(&self, kid: &str) {
        self.set_published(kid, true);
    }

    /// Removes key `kid` from the JWKS (a compromised or retired key); it still signs.
    pub fn unpublish(&self, kid: &str) {
        self.set_published(kid, false);
    }

    fn set_published(&self, kid: &str, value: bool) {
        for (key, published) in self.write_keys().iter_mut() {
            if key.kid == kid {
                *published = value;
            }
        }
    }

    /// Signs `claims` with key `kid` (header `typ: JWT`); `None` when there is no such key.
    pub fn sign(&self, kid: &str, claims: &serde_json::Value) -> Option<String> {
        let keys = self.state.keys.read().unwrap_or_else(|e| e.into_inner());
        let (key, _) = keys.iter().find(|(k, _)| k.kid == kid)?;
        key.sign("JWT", claims).ok()
    }

    /// The public JWK of key `kid`.
    pub fn public_jwk(&self, kid: &str) -> Option<serde_json::Value> {
        let keys = self.state.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .find(|(k, _)| k.kid == kid)
            .map(|(k, _)| k.public_jwk().clone())
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Takes the endpoints down (503) or back up.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    fn write_keys(&self) -> std::sync::RwLockWriteGuard<'_, Vec<(SigningKey, bool)>> {
        self.state.keys.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn answer(state: &State, url: &str, path: &str) -> Response<Full<Bytes>> {
    let (status, body) = if state.down.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, json!({"error": "down"}))
    } else {
        match path {
            "/.well-known/jwks.json" => {
                state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
                let keys = state.keys.read().unwrap_or_else(|e| e.into_inner());
                (
                    StatusCode::OK,
                    crate::keys::jwks(keys.iter().filter(|(_, p)| *p).map(|(k, _)| k)),
                )
            }
            "/.well-known/openid-configuration" => (
                StatusCode::OK,
                json!({"issuer": url, "jwks_uri": format!("{url}/.well-known/jwks.json"), "id_token_signing_alg_values_supported": ["ES256", "RS256", "EdDSA"]}),
            ),
            _ => (StatusCode::NOT_FOUND, json!({"error": "not found"})),
        }
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}
