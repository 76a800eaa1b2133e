//! Shared state across replicas, in Redis: token revocations, limited-use tokens and shared
//! limits. Every replica pointing at the same Redis sees one truth. Redis is optional; when it
//! is configured and down, each feature fails as documented in the README: closed for
//! revocation and use checks (503 `state_unavailable`), per-replica counting for limits.

mod revocations;
#[cfg(test)]
mod tests;

pub(crate) use revocations::{Revocation, key_of};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::metrics::Metrics;
use crate::principal::{Principal, TokenKind};

/// The validated `state.redis` settings.
#[derive(Clone)]
pub(crate) struct StoreConfig {
    pub(crate) client: redis::Client,
    /// Prepended to every key and to the revocation channel, so several deployments can share
    /// one Redis.
    pub(crate) prefix: String,
    /// The longest any Redis command may take before it counts as a failure.
    pub(crate) timeout: Duration,
    /// Whether an IdP token passes when its revocation cannot be checked (exchanged and
    /// limited-use tokens never do).
    pub(crate) idp_tokens_when_unavailable: WhenUnavailable,
    /// `host:port`, for logs (the URL may hold a password).
    pub(crate) address: String,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("address", &self.address)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What happens to a request whose token's revocation cannot be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenUnavailable {
    /// Refused with 503 `state_unavailable` (the default: fail closed).
    Deny,
    /// Let through on what this replica already knows, counted and warned about.
    Allow,
}

/// Why shared state refused or could not decide a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The token, its subject, or its subject within the organization was revoked (401).
    #[error("the token has been revoked")]
    Revoked,
    /// A limited-use token was presented more often than its exchange rule allows (401).
    #[error("the token has been used as many times as it may be")]
    UsedUp,
    /// Redis did not answer in time: what it would have said cannot be checked (503).
    #[error("shared state is unavailable; retry later")]
    Unavailable,
}

/// How long a token's clean revocation check holds before it is asked again when the
/// revocation channel is down: a revocation reaches every replica within this.
const RECHECK_WITHOUT_CHANNEL: Duration = Duration::from_secs(1);
/// Tokens whose clean check this replica remembers, at most.
const CHECKED_ENTRIES: u64 = 200_000;

/// One replica's handle on the shared state.
pub(crate) struct Store {
    config: StoreConfig,
    /// `None` when the client could not be set up: every command then fails (closed).
    connection: Option<ConnectionManager>,
    revocations: revocations::Local,
    /// Tokens (with the organization of the request) checked against Redis, and when.
    checked: moka::sync::Cache<(Box<str>, Option<Box<str>>), Instant>,
    /// How long a revocation by subject holds: the longest lifetime any accepted token can
    /// have, so every token it names has expired by then.
    revocation_ttl: Duration,
    /// True while the revocation channel is subscribed and the local set synced.
    listening: AtomicBool,
    /// When the last "falling back" warning was logged (seconds since the epoch).
    warned: AtomicU64,
    metrics: Metrics,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.config)
            .field("listening", &self.listening)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A handle that connects on first use and reconnects on its own.
    pub(crate) fn new(
        config: StoreConfig,
        revocation_ttl: Duration,
        metrics: Metrics,
    ) -> Arc<Self> {
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(config.client.clone(), manager)
            .inspect_err(|e| tracing::error!(redis = %config.address, error = %e, "cannot set up the Redis client; shared-state checks will fail closed"))
            .ok();
        Arc::new(Self {
            config,
            connection,
            revocations: revocations::Local::default(),
            checked: moka::sync::Cache::builder()
                .max_capacity(CHECKED_ENTRIES)
                .time_to_live(Duration::from_secs(60))
                .build(),
            revocation_ttl,
            listening: AtomicBool::new(false),
            warned: AtomicU64::new(0),
            metrics,
        })
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.config.prefix.clone();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                key.push(':');
            }
            key.push_str(part);
        }
        key
    }

    /// Runs one command or atomic pipeline within the timeout; a failure is counted and marks
    /// Redis down until the next success.
    async fn run<T: redis::FromRedisValue>(
        &self,
        feature: &'static str,
        command: Command<'_>,
    ) -> Result<T, StateError> {
        let Some(mut connection) = self.connection.clone() else {
            self.failed(feature, "no Redis client");
            return Err(StateError::Unavailable);
        };
        let query = async {
            match command {
                Command::One(c) => c.query_async(&mut connection).await,
                Command::Atomic(p) => p.query_async(&mut connection).await,
            }
        };
        let result = tokio::time::timeout(self.config.timeout, query).await;
        match result {
            Ok(Ok(v)) => {
                self.metrics.state_up.set(1);
                Ok(v)
            }
            Ok(Err(e)) => {
                self.failed(feature, &e.to_string());
                Err(StateError::Unavailable)
            }
            Err(_) => {
                self.failed(feature, "timed out");
                Err(StateError::Unavailable)
            }
        }
    }

    fn failed(&self, feature: &'static str, error: &str) {
        self.metrics.state_up.set(0);
        self.metrics
            .state_failures
            .with_label_values(&[feature])
            .inc();
        // At most one warning every 10 seconds: an outage must not flood the log.
        let now = crate::token::unix_now();
        let last = self.warned.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(redis = %self.config.address, feature, error, "shared state (Redis) failed");
        }
    }

    /// Whether Redis answered the last command (for `/readyz`).
    pub(crate) fn up(&self) -> bool {
        self.metrics.state_up.get() == 1
    }

    /// Refuses a revoked token: revoked by `jti`, by subject, or by subject within
    /// `organization`. Known revocations are answered locally; a token this replica has not
    /// checked yet (or not within a second, while the revocation channel is down) is checked in
    /// Redis too.
    pub(crate) async fn admit(
        &self,
        principal: &Principal,
        organization: Option<&str>,
    ) -> Result<(), StateError> {
        let now = crate::token::unix_now();
        if self.revocations.revoked(principal, organization, now) {
            return Err(StateError::Revoked);
        }
        let seen = (principal.token_id.clone(), organization.map(Box::from));
        if let Some(at) = self.checked.get(&seen)
            && (self.listening.load(Ordering::Acquire) || at.elapsed() < RECHECK_WITHOUT_CHANNEL)
        {
            return Ok(());
        }
        let subject = revocations::subject_key(principal, None);
        let in_org = organization.map(|o| revocations::subject_key(principal, Some(o)));
        let keys = [
            self.key(&["revoked", "jti", &principal.token_id]),
            self.key(&["revoked", "sub", &subject]),
            in_org
                .as_deref()
                .map_or_else(String::new, |k| self.key(&["revoked", "sub", k])),
        ];
        let mget = redis::cmd("MGET").arg(&keys[..]).clone();
        let found = self
            .run::<(Option<u64>, Option<u64>, Option<u64>)>("revocation", Command::One(&mget))
            .await;
        match found {
            Ok((jti, sub, sub_org)) => {
                if let Some(exp) = jti {
                    self.revocations.learn(Revocation::Token {
                        id: principal.token_id.to_string(),
                        expires: exp,
                    });
                }
                for (key, before) in [(Some(subject), sub), (in_org, sub_org)] {
                    if let (Some(key), Some(before)) = (key, before) {
                        self.revocations.learn(Revocation::Subject {
                            key,
                            before,
                            expires: before + self.revocation_ttl.as_secs(),
                        });
                    }
                }
                if jti.is_some()
                    || sub.is_some_and(|b| principal_issued_by(principal, b))
                    || sub_org.is_some_and(|b| principal_issued_by(principal, b))
                {
                    return Err(StateError::Revoked);
                }
                self.checked.insert(seen, Instant::now());
                Ok(())
            }
            Err(e) => match (&principal.kind, self.config.idp_tokens_when_unavailable) {
                (TokenKind::Idp, WhenUnavailable::Allow) => {
                    self.metrics
                        .state_failures
                        .with_label_values(&["revocation_allowed"])
                        .inc();
                    Ok(())
                }
                _ => Err(e),
            },
        }
    }

    /// Counts one use of a limited-use token across replicas; refuses the use beyond `max`.
    /// The counter expires with the token.
    pub(crate) async fn spend(&self, principal: &Principal, max: u32) -> Result<(), StateError> {
        let key = self.key(&["uses", &principal.token_id]);
        let expires_ms = (principal.expires_at + 60) * 1000;
        let pipe = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&key)
            .arg(0)
            .arg("NX")
            .arg("PXAT")
            .arg(expires_ms)
            .ignore()
            .cmd("INCR")
            .arg(&key)
            .clone();
        let (count,): (u64,) = self.run("uses", Command::Atomic(&pipe)).await?;
        if count > u64::from(max) {
            return Err(StateError::UsedUp);
        }
        Ok(())
    }

    /// Counts one event under `name` in a window that starts with its first event; returns the
    /// count so far and the time left in the window.
    pub(crate) async fn count(
        &self,
        name: &[&str],
        window: Duration,
    ) -> Result<(u64, Duration), StateError> {
        let key = self.key(&[&["limit"], name].concat());
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let pipe = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg(&key)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(window_ms)
            .arg("NX")
            .ignore()
            .cmd("PTTL")
            .arg(&key)
            .clone();
        let (count, left): (u64, i64) = self.run("limit", Command::Atomic(&pipe)).await?;
        let left = Duration::from_millis(u64::try_from(left).unwrap_or(window_ms));
        Ok((count, left))
    }

    /// The count of `name` in its current window (0 when none is open).
    pub(crate) async fn peek(&self, name: &[&str]) -> Result<u64, StateError> {
        let key = self.key(&[&["limit"], name].concat());
        let get = redis::cmd("GET").arg(&key).clone();
        let count: Option<u64> = self.run("limit", Command::One(&get)).await?;
        Ok(count.unwrap_or(0))
    }

    /// Records a revocation in Redis and tells every replica. Returns it as recorded.
    pub(crate) async fn revoke(&self, revocation: Revocation) -> Result<Revocation, StateError> {
        let key = match &revocation {
            Revocation::Token { id, .. } => self.key(&["revoked", "jti", id]),
            Revocation::Subject { key, .. } => self.key(&["revoked", "sub", key]),
        };
        let (value, expires) = match &revocation {
            Revocation::Token { expires, .. } => (*expires, *expires),
            Revocation::Subject {
                before, expires, ..
            } => (*before, *expires),
        };
        let message = revocation.to_message();
        let channel = self.channel();
        let pipe = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&key)
            .arg(value)
            .arg("EXAT")
            .arg(expires.max(crate::token::unix_now() + 1))
            .ignore()
            .cmd("PUBLISH")
            .arg(&channel)
            .arg(&message)
            .ignore()
            .clone();
        self.run::<()>("revocation", Command::Atomic(&pipe)).await?;
        self.revocations.learn(revocation.clone());
        self.metrics.revocations.inc();
        Ok(revocation)
    }

    /// A revocation of everything `subject` of `issuer` (within `organization`, if given) holds
    /// now, lasting until every such token has expired.
    pub(crate) fn subject_revocation(
        &self,
        issuer: &str,
        subject: &str,
        organization: Option<&str>,
    ) -> Revocation {
        let now = crate::token::unix_now();
        Revocation::Subject {
            key: revocations::key_of(issuer, subject, organization),
            before: now,
            expires: now + self.revocation_ttl.as_secs(),
        }
    }

    /// A revocation of the token with this `jti` (or audit-log id), whose expiry is unknown
    /// here: it lasts as long as any accepted token can.
    pub(crate) fn token_revocation(&self, id: &str) -> Revocation {
        Revocation::Token {
            id: id.to_string(),
            expires: crate::token::unix_now() + self.revocation_ttl.as_secs(),
        }
    }

    fn channel(&self) -> String {
        self.key(&["revocations"])
    }

    /// Subscribes to the revocation channel until the store is dropped: every revocation any
    /// replica records is pushed into this replica's local set. On (re)subscription the set is
    /// synced from Redis, so a revocation made while disconnected is not missed.
    pub(crate) fn spawn_listener(self: &Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        revocations::spawn_listener(Arc::downgrade(self), stop);
    }
}

/// A prepared Redis command: one, or several run atomically (`MULTI`/`EXEC`).
enum Command<'a> {
    One(&'a redis::Cmd),
    Atomic(&'a redis::Pipeline),
}

/// Whether a subject revocation made at `before` covers the principal's token: issued at or
/// before it (a token without `iat` cannot show it is newer).
fn principal_issued_by(principal: &Principal, before: u64) -> bool {
    principal.issued_at <= before
}
