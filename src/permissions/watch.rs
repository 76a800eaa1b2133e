//! Dropping cached answers when the backend says its data changed (the `postgres` backend's
//! `listen: true`), so a revoked role takes effect at once instead of at the cache's TTL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{Entry, Query};

/// Which answers a change makes wrong: every field given must match, an absent one matches
/// all (`{}` is everything). The payload of the `scopegate_memberships` notification.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Change {
    #[serde(default)]
    pub(crate) issuer: Option<String>,
    #[serde(default)]
    pub(crate) subject: Option<String>,
    #[serde(default)]
    pub(crate) organization: Option<String>,
}

impl Change {
    /// `{}`: every answer.
    fn is_everything(&self) -> bool {
        self.issuer.is_none() && self.subject.is_none() && self.organization.is_none()
    }

    fn matches(&self, q: &Query) -> bool {
        let field = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        field(&self.issuer, &q.issuer)
            && field(&self.subject, &q.subject)
            && field(&self.organization, &q.organization)
    }
}

/// Targeted drops a second at most; past that (a bulk update notifying thousands of rows),
/// everything is dropped instead. Each targeted drop is a predicate every cache hit checks
/// until maintenance applies it, so their number must stay small.
const TARGETED_PER_SECOND: u32 = 100;

/// The answer caches of one [`super::Permissions`].
pub(crate) struct Caches {
    pub(crate) fresh: moka::future::Cache<Query, Arc<Entry>>,
    /// Last good answers, for `on_error: stale`: a change drops them too, or a database outage
    /// would serve a revoked grant.
    pub(crate) stale: Option<moka::sync::Cache<Query, Arc<Entry>>>,
    /// The current second's targeted drops: (its start, how many).
    window: Mutex<(Instant, u32)>,
    /// Whether a delayed drop of everything is already scheduled.
    all_later: AtomicBool,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches").finish_non_exhaustive()
    }
}

impl Caches {
    pub(crate) fn new(
        fresh: moka::future::Cache<Query, Arc<Entry>>,
        stale: Option<moka::sync::Cache<Query, Arc<Entry>>>,
    ) -> Self {
        Self {
            fresh,
            stale,
            window: Mutex::new((Instant::now(), 0)),
            all_later: AtomicBool::new(false),
        }
    }

    /// Counts one targeted drop; `false` past this second's budget.
    fn within_budget(&self) -> bool {
        let Ok(mut window) = self.window.lock() else {
            return false;
        };
        if window.0.elapsed() >= Duration::from_secs(1) {
            *window = (Instant::now(), 0);
        }
        window.1 += 1;
        window.1 <= TARGETED_PER_SECOND
    }

    /// Drops every answer (a reported change of everything, a reloaded data file).
    pub(crate) fn drop_all(&self) {
        self.fresh.invalidate_all();
        if let Some(stale) = &self.stale {
            stale.invalidate_all();
        }
    }

    fn drop_matching(&self, change: &Arc<Change>) {
        let c = change.clone();
        // Only fails when the caches were built without invalidation closures, which
        // `Permissions::new` enables whenever the backend watches.
        let _ = self.fresh.invalidate_entries_if(move |q, _| c.matches(q));
        if let Some(stale) = &self.stale {
            let c = change.clone();
            let _ = stale.invalidate_entries_if(move |q, _| c.matches(q));
        }
    }
}

/// What a watching backend holds to drop cached answers. Weak: a gateway replaced by a reload
/// takes its caches with it, and its backend's watcher then stops.
#[derive(Debug, Clone)]
pub struct Forget {
    caches: Weak<Caches>,
    /// `scopegate_permissions_change_listener_up`.
    listening: prometheus::IntGauge,
    /// A lookup in flight when the change committed may store the old answer after the first
    /// drop; a second drop once every such lookup has timed out catches it.
    again_after: Duration,
}

impl Forget {
    pub(crate) fn new(
        caches: &Arc<Caches>,
        again_after: Duration,
        listening: prometheus::IntGauge,
    ) -> Self {
        Self {
            caches: Arc::downgrade(caches),
            listening,
            again_after,
        }
    }

    /// Records whether the backend is listening for changes now.
    pub(crate) fn listening(&self, up: bool) {
        self.listening.set(i64::from(up));
    }

    /// Drops the answers `change` names, now and again after the lookup timeout; `false` once
    /// the caches are gone.
    pub(crate) fn forget(&self, change: Change) -> bool {
        let Some(caches) = self.caches.upgrade() else {
            return false;
        };
        let (later, after) = (self.caches.clone(), self.again_after);
        if change.is_everything() || !caches.within_budget() {
            caches.drop_all();
            // One delayed drop of everything covers every change until it runs.
            if !caches.all_later.swap(true, Ordering::AcqRel) {
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    if let Some(caches) = later.upgrade() {
                        caches.all_later.store(false, Ordering::Release);
                        caches.drop_all();
                    }
                });
            }
            return true;
        }
        let change = Arc::new(change);
        caches.drop_matching(&change);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Some(caches) = later.upgrade() {
                caches.drop_matching(&change);
            }
        });
        true
    }

    /// Whether the caches still exist.
    pub(crate) fn alive(&self) -> bool {
        self.caches.strong_count() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(issuer: &str, subject: &str, organization: &str) -> Query {
        Query {
            issuer: issuer.into(),
            subject: subject.into(),
            organization: organization.into(),
            client_id: Some("cli".into()),
        }
    }

    fn entry() -> Arc<Entry> {
        Arc::new(Entry {
            membership: Arc::new(crate::policy::Membership::NotMember),
            ttl: Duration::from_secs(300),
            fetched: Instant::now(),
        })
    }

    fn change(subject: &str) -> Change {
        Change {
            subject: Some(subject.into()),
            ..Change::default()
        }
    }

    #[tokio::test]
    async fn a_change_drops_its_answers_and_a_flood_of_changes_drops_everything() {
        let fresh = moka::future::Cache::builder()
            .max_capacity(100)
            .support_invalidation_closures()
            .build();
        let caches = Arc::new(Caches::new(fresh, None));
        let forget = Forget::new(
            &caches,
            Duration::from_secs(60),
            prometheus::IntGauge::new("listening", "test").unwrap(),
        );
        let (alice, bob) = (q("i", "alice", "acme"), q("i", "bob", "globex"));
        caches.fresh.insert(alice.clone(), entry()).await;
        caches.fresh.insert(bob.clone(), entry()).await;
        assert!(forget.forget(change("alice")));
        assert!(caches.fresh.get(&alice).await.is_none());
        assert!(
            caches.fresh.get(&bob).await.is_some(),
            "another subject stays"
        );
        // Past the budget a targeted drop becomes a drop of everything: bob goes too.
        for n in 0..TARGETED_PER_SECOND {
            forget.forget(change(&format!("nobody-{n}")));
        }
        assert!(caches.fresh.get(&bob).await.is_none());
        drop(caches);
        assert!(!forget.alive());
        assert!(!forget.forget(change("alice")), "the owner is gone");
    }

    #[test]
    fn a_change_matches_its_fields_and_an_absent_field_matches_all() {
        let one: Change =
            serde_json::from_str(r#"{"issuer":"i","subject":"alice","organization":"acme"}"#)
                .unwrap();
        assert!(one.matches(&q("i", "alice", "acme")));
        assert!(!one.matches(&q("i", "alice", "globex")));
        assert!(!one.matches(&q("other", "alice", "acme")));
        let org: Change = serde_json::from_str(r#"{"organization":"acme"}"#).unwrap();
        assert!(org.matches(&q("i", "bob", "acme")));
        assert!(!org.matches(&q("i", "bob", "globex")));
        let all: Change = serde_json::from_str("{}").unwrap();
        assert!(all.matches(&q("x", "y", "z")));
    }
}
