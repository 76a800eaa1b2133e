//! Trusted issuers' public keys: fetched at start, refreshed in the background, and refreshed on
//! an unknown `kid` at most once per cool-down, with concurrent triggers sharing that one fetch.
//! Request code reads an immutable snapshot and never waits on a lock unless it is itself
//! waiting for a refresh it needs. When a fetch fails, the last good keys stay in use.

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;

use crate::fetch::{FetchClient, FetchError};
use crate::metrics::Metrics;
use crate::policy::{IssuerConfig, KeysSource};

/// Why a key set could not be refreshed.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The discovery document or the JWKS could not be fetched.
    #[error("fetching `{url}`: {source}")]
    Fetch { url: String, source: FetchError },
    /// The discovery document names another issuer or an unusable `jwks_uri`.
    #[error("discovery document: {0}")]
    Discovery(String),
    /// The JWKS held no key scopegate can use.
    #[error("the JWKS has no usable signing key")]
    NoUsableKey,
}

/// One usable public key.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    /// The JWK's `alg`, when it pins one.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("alg", &self.alg)
            .field("family", &self.key.family())
            .finish_non_exhaustive()
    }
}

impl Key {
    fn fits(&self, alg: Algorithm) -> bool {
        self.key.family() == alg.family() && self.alg.is_none_or(|a| a == alg)
    }
}

/// An immutable set of keys.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// Builds a set from a JWKS document, skipping what cannot be used for signature checks:
    /// symmetric (`oct`) keys, keys for encryption (`use: enc`), and entries that do not parse.
    pub fn from_jwks(doc: &serde_json::Value) -> Self {
        let entries = doc
            .get("keys")
            .and_then(|k| k.as_array())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let keys = entries
            .iter()
            .filter_map(|entry| serde_json::from_value::<Jwk>(entry.clone()).ok())
            .filter(|jwk| !matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)))
            .filter(|jwk| {
                !matches!(
                    jwk.common.public_key_use,
                    Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
                )
            })
            .filter_map(|jwk| {
                let alg = match jwk.common.key_algorithm {
                    None => None,
                    Some(a) => Some(crate::policy::asymmetric_algorithm(&a.to_string())?),
                };
                let key = DecodingKey::from_jwk(&jwk).ok()?;
                (key.family() != AlgorithmFamily::Hmac).then_some(Key {
                    kid: jwk.common.key_id,
                    alg,
                    key,
                })
            })
            .collect();
        Self { keys }
    }

    /// The key for a token header: the one with this `kid` that fits `alg`; without a `kid`,
    /// the only key that fits `alg` (several candidates are refused rather than tried in turn).
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&Key> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid) && k.fits(alg)),
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
                let first = fitting.next()?;
                fitting.next().is_none().then_some(first)
            }
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[derive(Debug, Default)]
struct RefreshState {
    /// When an unknown `kid` last caused a fetch; scheduled refreshes do not count against the
    /// cool-down, so a key rotated in right after a scheduled fetch is still picked up at once.
    last_on_demand: Option<Instant>,
}

/// One issuer's keys and the machinery that keeps them fresh.
#[derive(Debug)]
pub struct IssuerKeys {
    pub config: Arc<IssuerConfig>,
    current: ArcSwapOption<KeySet>,
    /// Bumped after every fetch attempt, so callers that queued behind one do not repeat it.
    attempts: AtomicU64,
    refresh: tokio::sync::Mutex<RefreshState>,
    client: FetchClient,
    metrics: Metrics,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl IssuerKeys {
    /// Keys known in-process (scopegate's own): loaded from the start, never fetched.
    pub fn local(config: Arc<IssuerConfig>, keys: KeySet, metrics: Metrics) -> Self {
        let this = Self::new(config, FetchClient::new(None), metrics);
        this.current.store(Some(Arc::new(keys)));
        this
    }

    pub fn new(config: Arc<IssuerConfig>, client: FetchClient, metrics: Metrics) -> Self {
        Self {
            config,
            current: ArcSwapOption::empty(),
            attempts: AtomicU64::new(0),
            refresh: Default::default(),
            client,
            metrics,
        }
    }

    /// Starts with `keys` (from the gateway this one replaces), before any fetch.
    pub fn seed(&self, keys: Arc<KeySet>) {
        self.current.store(Some(keys));
    }

    /// The keys now in use, if any were ever loaded.
    pub fn snapshot(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    /// Whether `set` is the key set now in force (a cheap guard load, no reference count).
    pub fn is_current(&self, set: &Arc<KeySet>) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, set))
    }

    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    /// Refreshes because a token named a `kid` we do not have (or no keys are loaded yet). Waits
    /// for a refresh already under way instead of starting another, and does nothing when the
    /// last on-demand fetch is younger than the cool-down.
    pub async fn refresh_for_unknown_kid(&self) {
        if matches!(self.config.keys, KeysSource::Local) {
            return;
        }
        let seen = self.attempts.load(Ordering::Acquire);
        let mut state = self.refresh.lock().await;
        if self.attempts.load(Ordering::Acquire) != seen {
            return;
        }
        if state
            .last_on_demand
            .is_some_and(|t| t.elapsed() < self.config.unknown_kid_cooldown)
        {
            return;
        }
        state.last_on_demand = Some(Instant::now());
        let _ = self.attempt().await;
    }

    /// Fetches now, regardless of the cool-down (start-up and the background timer).
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let _state = self.refresh.lock().await;
        self.attempt().await
    }

    /// One fetch; callers hold the refresh lock.
    async fn attempt(&self) -> Result<(), JwksError> {
        let result = self.fetch().await;
        self.attempts.fetch_add(1, Ordering::AcqRel);
        let name = &self.config.name;
        match &result {
            Ok(set) => {
                tracing::debug!(issuer = %name, keys = set.len(), "JWKS refreshed");
                self.metrics
                    .jwks_refreshes
                    .with_label_values(&[name.as_str(), "ok"])
                    .inc();
            }
            Err(e) => {
                tracing::warn!(issuer = %name, error = %e, "JWKS refresh failed; keeping the last good keys");
                self.metrics
                    .jwks_refreshes
                    .with_label_values(&[name.as_str(), "error"])
                    .inc();
            }
        }
        result.map(|set| self.current.store(Some(Arc::new(set))))
    }

    async fn fetch(&self) -> Result<KeySet, JwksError> {
        let timeout = self.config.fetch_timeout;
        let jwks_uri = match &self.config.keys {
            KeysSource::Local => {
                return self
                    .snapshot()
                    .map(|s| KeySet {
                        keys: s.keys.clone(),
                    })
                    .ok_or(JwksError::NoUsableKey);
            }
            KeysSource::Jwks(uri) => uri.clone(),
            KeysSource::Discovery(uri) => {
                let doc: Discovery =
                    self.client.get_json(uri, timeout).await.map_err(|source| {
                        JwksError::Fetch {
                            url: uri.to_string(),
                            source,
                        }
                    })?;
                if doc.issuer != self.config.issuer {
                    return Err(JwksError::Discovery(format!(
                        "names issuer `{}`, expected `{}`",
                        doc.issuer, self.config.issuer
                    )));
                }
                discovered_jwks_uri(uri, &doc.jwks_uri, self.config.insecure_http)?
            }
        };
        let doc: serde_json::Value =
            self.client
                .get_json(&jwks_uri, timeout)
                .await
                .map_err(|source| JwksError::Fetch {
                    url: jwks_uri.to_string(),
                    source,
                })?;
        let set = KeySet::from_jwks(&doc);
        if set.is_empty() {
            Err(JwksError::NoUsableKey)
        } else {
            Ok(set)
        }
    }

    /// Refreshes every `refresh_interval`; after a failure, retries sooner (a tenth of the
    /// interval, at least a second) until it succeeds.
    pub fn spawn_refresher(self: &Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        let weak = Arc::downgrade(self);
        let interval = self.config.refresh_interval;
        let retry = (interval / 10).max(Duration::from_secs(1));
        // Start-up has just fetched: wait a full interval if that worked, retry soon if not.
        let initial = if self.is_loaded() { interval } else { retry };
        crate::supervise::spawn("jwks refresher", move || {
            let (this, mut shutdown) = (weak.clone(), shutdown.clone());
            async move {
                let mut wait = initial;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => return,
                    }
                    let Some(keys) = this.upgrade() else { return };
                    wait = match keys.refresh().await {
                        Ok(()) => interval,
                        Err(_) => retry,
                    };
                }
            }
        });
    }
}

/// The discovery document's `jwks_uri`, held to the same HTTPS-or-loopback rule as configured
/// URLs: plain http only from a plain-http discovery document, on loopback or when the issuer
/// says `insecure_http: true`. An https document never downgrades its keys to http.
fn discovered_jwks_uri(
    discovery: &http::Uri,
    jwks_uri: &str,
    insecure_http: bool,
) -> Result<http::Uri, JwksError> {
    let uri: http::Uri = jwks_uri
        .parse()
        .map_err(|_| JwksError::Discovery("`jwks_uri` is not a URL".into()))?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http")
            if discovery.scheme_str() == Some("http")
                && (insecure_http || crate::policy::is_loopback(&uri)) =>
        {
            Ok(uri)
        }
        _ => Err(JwksError::Discovery(
            "`jwks_uri` must be https (plain http only on loopback)".into(),
        )),
    }
}
