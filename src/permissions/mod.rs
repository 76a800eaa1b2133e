//! What a subject may do in an organization, from a permissions backend, behind a cache.
//!
//! The cache is keyed by (issuer, subject, organization), bounded in entries, kept for the TTL
//! the backend gives (capped), with "not a member" answers kept for a shorter time. Concurrent
//! misses for one key share one backend call (moka's `try_get_with`). When the backend fails,
//! `on_error: stale` serves the last good answer up to `stale_for`, else the request gets 503.

pub(crate) mod budget;
pub(crate) mod file;
pub(crate) mod http;
pub(crate) mod postgres;
pub(crate) mod watch;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::policy::{Grants, Membership};

/// An answer with how long the backend says it may be cached (`None`: the default).
#[derive(Debug, Clone)]
pub struct Answer {
    pub membership: Membership,
    pub ttl: Option<Duration>,
}

/// Who is asking about which organization.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Query {
    pub issuer: String,
    pub subject: String,
    pub organization: String,
    pub client_id: Option<String>,
}

/// Why the backend could not answer (the request gets 503 unless a stale answer is served).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No answer in time.
    #[error("the permissions backend timed out")]
    Timeout,
    /// The request could not be built (the configured URL is unusable).
    #[error("the request to the permissions backend could not be built: {0}")]
    Request(#[source] ::http::Error),
    /// The backend could not be reached (refused, reset, TLS failure).
    #[error("the permissions backend could not be reached: {0}")]
    Unreachable(#[source] hyper_util::client::legacy::Error),
    /// An answer other than 200 (an answer) or 404 (not a member).
    #[error("the permissions backend answered HTTP {0}")]
    Status(::http::StatusCode),
    /// The answer's body could not be read, or is larger than the bound.
    #[error("the permissions backend's answer is unreadable or too large: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The answer is not the contract's JSON.
    #[error("the permissions backend's answer is not the expected JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The database could not be reached, or refused the query.
    #[error("the permissions database failed: {0}")]
    Database(String),
    /// A row the query returned is not the contract's columns and types.
    #[error("the permissions database returned an unusable row: {0}")]
    Row(String),
    /// The caller is over its budget of cache misses (429): retry after this long.
    #[error("too many lookups of uncached organizations; retry later")]
    Throttled(Duration),
}

/// A boxed future, so backends can be chosen at run time.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// `call` bounded by `timeout` (past it, [`BackendError::Timeout`]), boxed for
/// [`Backend::lookup`].
pub(crate) fn timed<'a>(
    timeout: Duration,
    call: impl Future<Output = Result<Answer, BackendError>> + Send + 'a,
) -> BoxFuture<'a, Result<Answer, BackendError>> {
    Box::pin(async move {
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| BackendError::Timeout)?
    })
}

/// A source of permissions.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// What `query.subject` may do in `query.organization`.
    fn lookup<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Answer, BackendError>>;

    /// Re-reads the backend's source if it changed; `Ok(true)` when it did. Polled periodically.
    fn reload(&self) -> Result<bool, String> {
        Ok(false)
    }

    /// Whether the backend reports changes to its data ([`Backend::watch`]).
    fn watches(&self) -> bool {
        false
    }

    /// Starts reporting changes to `forget`, until it says the caches are gone.
    fn watch(&self, _forget: watch::Forget) {}
}

/// What to do when the backend fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Deny,
    /// Serve the last good answer while it is younger than this.
    Stale(Duration),
}

/// Cache settings.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    pub entries: u64,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    pub negative_ttl: Duration,
    pub on_error: OnError,
    /// The backend's whole-lookup timeout: how long an answer read before a reported change
    /// may still be on its way into the cache.
    pub lookup_timeout: Duration,
    /// Per-caller bound on misses (each costs a backend call).
    pub budget: budget::BudgetConfig,
}

#[derive(Debug)]
pub(crate) struct Entry {
    membership: Arc<Membership>,
    ttl: Duration,
    fetched: Instant,
}

struct EntryTtl;

impl moka::Expiry<Query, Arc<Entry>> for EntryTtl {
    fn expire_after_create(&self, _: &Query, value: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The cached, coalescing front of a backend.
#[derive(Debug)]
pub struct Permissions {
    backend: Arc<dyn Backend>,
    config: CacheConfig,
    caches: Arc<watch::Caches>,
    /// The role names the policies define.
    known_roles: std::collections::HashSet<String>,
    budget: budget::MissBudget,
    /// Where the budget is counted across replicas, when shared state is configured.
    shared: Option<Arc<crate::store::Store>>,
    metrics: Metrics,
}

/// A lookup's result, with where it came from.
#[derive(Debug)]
pub struct Looked {
    pub membership: Arc<Membership>,
    pub source: Source,
}

/// Where an answer came from (for the audit record and `explain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The cache, or a concurrent lookup of the same key.
    Cache,
    /// This request's own backend call.
    Backend,
    /// The stale store, because the backend failed (`on_error: stale`).
    Stale,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Backend => "backend",
            Source::Stale => "stale",
        }
    }
}

impl Permissions {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        config: CacheConfig,
        known_roles: std::collections::HashSet<String>,
        shared: Option<Arc<crate::store::Store>>,
        metrics: Metrics,
    ) -> Self {
        // Invalidation closures cost a check on every hit while one is pending: only for a
        // backend that reports changes.
        let watching = backend.watches();
        let mut fresh = moka::future::Cache::builder()
            .max_capacity(config.entries)
            .expire_after(EntryTtl);
        if watching {
            fresh = fresh.support_invalidation_closures();
        }
        let stale = match config.on_error {
            OnError::Stale(age) => {
                let mut stale = moka::sync::Cache::builder()
                    .max_capacity(config.entries)
                    .time_to_live(age);
                if watching {
                    stale = stale.support_invalidation_closures();
                }
                Some(stale.build())
            }
            OnError::Deny => None,
        };
        let caches = Arc::new(watch::Caches::new(fresh.build(), stale));
        if watching {
            backend.watch(watch::Forget::new(
                &caches,
                config.lookup_timeout,
                metrics.permissions_listening.clone(),
            ));
        }
        Self {
            backend,
            budget: budget::MissBudget::new(config.budget),
            shared,
            config,
            caches,
            known_roles,
            metrics,
        }
    }

    /// Warns about each granted role no policy defines, once per backend answer (a typo in the
    /// data grants nothing and would otherwise show only as a puzzling 403).
    fn report_unknown_roles(&self, query: &Query, grants: &Grants) {
        for role in grants
            .roles
            .iter()
            .filter(|r| !self.known_roles.contains(*r))
        {
            self.metrics.permissions_unknown_roles.inc();
            tracing::warn!(%role, organization = %query.organization, subject = %query.subject, "the permissions backend granted a role no policy defines; it grants nothing");
        }
    }

    /// The membership of `query`, from cache or the backend. The error is shared: coalesced
    /// waiters of one failed call all see it.
    pub async fn lookup(&self, query: &Query) -> Result<Looked, Arc<BackendError>> {
        if let Some(entry) = self.caches.fresh.get(query).await {
            self.metrics.permissions_hits.inc();
            return Ok(Looked {
                membership: entry.membership.clone(),
                source: Source::Cache,
            });
        }
        let mut called = false;
        let result = self
            .caches
            .fresh
            .try_get_with_by_ref(query, async {
                // Charged once per backend call: coalesced waiters share the caller's miss.
                let _permit = self
                    .budget
                    .take(&query.issuer, &query.subject)
                    .map_err(BackendError::Throttled)?;
                if let Some(store) = &self.shared {
                    budget::take_shared(store, &self.config.budget, query)
                        .await
                        .map_err(BackendError::Throttled)?;
                }
                called = true;
                let started = Instant::now();
                let answer = self.backend.lookup(query).await;
                self.metrics
                    .permissions_backend_duration
                    .observe(started.elapsed().as_secs_f64());
                let answer = answer?;
                if let Membership::Member(grants) = &answer.membership {
                    self.report_unknown_roles(query, grants);
                }
                let ttl = match answer.membership {
                    Membership::NotMember => self.config.negative_ttl,
                    Membership::Member(_) => answer
                        .ttl
                        .unwrap_or(self.config.default_ttl)
                        .min(self.config.max_ttl),
                };
                let entry = Arc::new(Entry {
                    membership: Arc::new(answer.membership),
                    ttl,
                    fetched: Instant::now(),
                });
                if let Some(stale) = &self.caches.stale {
                    stale.insert(query.clone(), entry.clone());
                }
                Ok::<_, BackendError>(entry)
            })
            .await;
        let outcome = match (&result, called) {
            (Err(e), _) if matches!(**e, BackendError::Throttled(_)) => "throttled",
            (_, true) => "miss",
            (_, false) => "coalesced",
        };
        self.metrics
            .permissions_lookups
            .with_label_values(&[outcome])
            .inc();
        match result {
            Ok(entry) => Ok(Looked {
                membership: entry.membership.clone(),
                source: if called {
                    Source::Backend
                } else {
                    Source::Cache
                },
            }),
            Err(e) if matches!(*e, BackendError::Throttled(_)) => {
                self.metrics
                    .limit_rejections
                    .with_label_values(&["permissions_misses"])
                    .inc();
                Err(e)
            }
            Err(e) => {
                if called {
                    self.metrics.permissions_backend_errors.inc();
                    tracing::warn!(organization = %query.organization, error = %e, "permissions backend failed");
                }
                let fallback = self
                    .caches
                    .stale
                    .as_ref()
                    .and_then(|s| s.get(query))
                    .filter(|entry| match self.config.on_error {
                        OnError::Stale(age) => entry.fetched.elapsed() <= age,
                        OnError::Deny => false,
                    });
                match fallback {
                    Some(entry) => {
                        tracing::warn!(organization = %query.organization, error = %e, "permissions backend failed; serving a stale answer");
                        Ok(Looked {
                            membership: entry.membership.clone(),
                            source: Source::Stale,
                        })
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// Polls the backend's source for changes every `every`, dropping cached answers on change.
    pub fn spawn_reloader(
        self: &Arc<Self>,
        every: Duration,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let weak = Arc::downgrade(self);
        crate::supervise::spawn("permissions reloader", move || {
            let (this, mut shutdown) = (weak.clone(), shutdown.clone());
            async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = shutdown.changed() => return,
                    }
                    let Some(p) = this.upgrade() else { return };
                    match p.backend.reload() {
                        Ok(true) => {
                            p.caches.drop_all();
                            tracing::info!("permissions data reloaded");
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "permissions data is invalid; keeping the last good data")
                        }
                    }
                }
            }
        });
    }

    /// Entries in the cache (after pending maintenance).
    /// Entries in the answer cache, without waiting for its pending maintenance (the admin
    /// listener's scrape is synchronous).
    pub fn approximate_entries(&self) -> u64 {
        self.caches.fresh.entry_count()
    }

    pub async fn cached_entries(&self) -> u64 {
        self.caches.fresh.run_pending_tasks().await;
        self.caches.fresh.entry_count()
    }
}
