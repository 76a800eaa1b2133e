//! The revocations one replica knows, and the channel that keeps them in step with every other
//! replica. Each revocation expires with the last token it can name, so the set stays bounded
//! by the revocations of the longest token lifetime.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dashmap::DashMap;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Command, StateError, Store};
use crate::principal::Principal;

/// One revocation, as stored, published and answered by the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Revocation {
    /// One token, by `jti` (or, for a token without one, the id the audit log shows).
    Token { id: String, expires: u64 },
    /// Every token of a subject (within an organization) issued at or before `before`.
    Subject {
        key: String,
        before: u64,
        expires: u64,
    },
}

impl Revocation {
    pub(super) fn to_message(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The subject key of `(issuer, subject, organization)`: a JSON array, so no issuer or subject
/// spelling can collide with another's.
pub(crate) fn key_of(issuer: &str, subject: &str, organization: Option<&str>) -> String {
    match organization {
        None => serde_json::json!([issuer, subject]),
        Some(o) => serde_json::json!([issuer, subject, o]),
    }
    .to_string()
}

/// The subject key of a principal: its original issuer (an exchanged token's user is the
/// identity provider's), not scopegate.
pub(super) fn subject_key(principal: &Principal, organization: Option<&str>) -> String {
    key_of(principal.origin(), &principal.subject, organization)
}

/// Revocations known to this replica, each until it expires.
#[derive(Debug, Default)]
pub(super) struct Local {
    tokens: DashMap<Box<str>, u64>,
    /// Subject key to (issued at or before, expires).
    subjects: DashMap<String, (u64, u64)>,
}

impl Local {
    pub(super) fn revoked(
        &self,
        principal: &Principal,
        organization: Option<&str>,
        now: u64,
    ) -> bool {
        if !self.tokens.is_empty()
            && self
                .tokens
                .get(&*principal.token_id)
                .is_some_and(|e| *e >= now)
        {
            return true;
        }
        if self.subjects.is_empty() {
            return false;
        }
        let covers = |key: &str| {
            self.subjects
                .get(key)
                .is_some_and(|r| r.1 >= now && principal.issued_at <= r.0)
        };
        covers(&subject_key(principal, None))
            || organization.is_some_and(|o| covers(&subject_key(principal, Some(o))))
    }

    pub(super) fn learn(&self, revocation: Revocation) {
        match revocation {
            Revocation::Token { id, expires } => {
                self.tokens.insert(id.into_boxed_str(), expires);
            }
            Revocation::Subject {
                key,
                before,
                expires,
            } => {
                let mut entry = self.subjects.entry(key).or_insert((before, expires));
                entry.0 = entry.0.max(before);
                entry.1 = entry.1.max(expires);
            }
        }
    }

    /// Forgets what has expired.
    fn purge(&self, now: u64) {
        self.tokens.retain(|_, e| *e >= now);
        self.subjects.retain(|_, r| r.1 >= now);
    }

    pub(super) fn len(&self) -> usize {
        self.tokens.len() + self.subjects.len()
    }
}

impl Store {
    /// Loads every revocation recorded in Redis into the local set.
    async fn sync(&self) -> Result<(), StateError> {
        let pattern = format!("{}revoked:*", glob_escape(&self.config.prefix));
        let mut cursor = 0u64;
        loop {
            let scan = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .clone();
            let (next, keys): (u64, Vec<String>) =
                self.run("revocation", Command::One(&scan)).await?;
            if !keys.is_empty() {
                let mget = redis::cmd("MGET").arg(&keys).clone();
                let values: Vec<Option<u64>> = self.run("revocation", Command::One(&mget)).await?;
                for (key, value) in keys.iter().zip(values) {
                    if let Some(r) = self.parse_stored(key, value) {
                        self.revocations.learn(r);
                    }
                }
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// A revocation from its Redis key and value.
    fn parse_stored(&self, key: &str, value: Option<u64>) -> Option<Revocation> {
        let value = value?;
        let rest = key.strip_prefix(&self.config.prefix)?;
        if let Some(id) = rest.strip_prefix("revoked:jti:") {
            return Some(Revocation::Token {
                id: id.to_string(),
                expires: value,
            });
        }
        let key = rest.strip_prefix("revoked:sub:")?.to_string();
        Some(Revocation::Subject {
            key,
            before: value,
            expires: value + self.revocation_ttl.as_secs(),
        })
    }
}

/// `prefix` with Redis glob characters escaped, for `SCAN MATCH`.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// How often the listener pings Redis on the subscribed connection (a silent loss of it would
/// otherwise leave the local set stale unnoticed) and checks that its store still exists.
const TICK: Duration = Duration::from_secs(1);
/// Every how many ticks expired revocations are forgotten.
const PURGE_EVERY: u32 = 30;

/// Subscribes to the revocation channel, syncs, and applies every published revocation; after a
/// failure, tries again every second. Ends when the store is dropped (a reload built another)
/// or the server stops.
pub(super) fn spawn_listener(store: Weak<Store>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            let Some((client, channel)) = store
                .upgrade()
                .map(|s| (s.config.client.clone(), s.channel()))
            else {
                return;
            };
            let session = async {
                let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
                pubsub
                    .subscribe(&channel)
                    .await
                    .map_err(|e| e.to_string())?;
                {
                    let Some(s) = store.upgrade() else {
                        return Ok(());
                    };
                    s.sync().await.map_err(|e| e.to_string())?;
                    s.listening.store(true, Ordering::Release);
                    s.metrics.state_listening.set(1);
                }
                let (mut sink, mut messages) = pubsub.split();
                let mut tick = tokio::time::interval(TICK);
                let mut ticks = 0u32;
                loop {
                    tokio::select! {
                        message = messages.next() => {
                            let Some(message) = message else {
                                return Err("the revocation channel closed".to_string());
                            };
                            let Some(s) = store.upgrade() else { return Ok(()) };
                            match message.get_payload::<String>().ok().and_then(|p| serde_json::from_str::<Revocation>(&p).ok()) {
                                Some(r) => s.revocations.learn(r),
                                None => tracing::warn!("ignored a malformed message on the revocation channel"),
                            }
                        }
                        _ = tick.tick() => {
                            let Some(s) = store.upgrade() else { return Ok(()) };
                            let timeout = s.config.timeout;
                            ticks = ticks.wrapping_add(1);
                            if ticks.is_multiple_of(PURGE_EVERY) {
                                s.revocations.purge(crate::token::unix_now());
                            }
                            s.metrics.revocations_known.set(s.revocations.len() as i64);
                            drop(s);
                            match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
                                Ok(Ok(_)) => {}
                                Ok(Err(e)) => return Err(e.to_string()),
                                Err(_) => return Err("the revocation channel did not answer a ping".to_string()),
                            }
                        }
                    }
                }
            };
            let ended = tokio::select! {
                ended = session => ended,
                _ = stop.changed() => return,
            };
            let Some(s) = store.upgrade() else { return };
            s.listening.store(false, Ordering::Release);
            s.metrics.state_listening.set(0);
            match ended {
                Ok(()) => return,
                Err(error) => {
                    s.failed("revocation_channel", &error);
                }
            }
            drop(s);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
        }
    });
}
