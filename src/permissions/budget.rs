//! The per-caller budget of permissions-cache misses: one token naming many organizations must
//! not take every backend slot and push other members to 503. Each caller (issuer, subject) has
//! a token bucket (a rate and a burst of misses) and a bound on its misses in flight; a miss over
//! either is refused with how long to wait. Hits and coalesced misses cost nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budget settings, validated at load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// Misses per second, sustained.
    pub per_second: f64,
    /// Misses at once after a quiet period.
    pub burst: u32,
    /// Misses in flight at once.
    pub concurrency: usize,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            per_second: 10.0,
            burst: 50,
            concurrency: 8,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    /// (tokens left, when last refilled).
    tokens: Mutex<(f64, Instant)>,
    in_flight: Arc<Semaphore>,
}

/// Every caller's budget, bounded in entries (an idle caller's bucket is dropped: it would be
/// full again anyway).
#[derive(Debug)]
pub(crate) struct MissBudget {
    config: BudgetConfig,
    buckets: moka::sync::Cache<(String, String), Arc<Bucket>>,
}

/// A miss in flight; its concurrency slot is given back on drop.
#[derive(Debug)]
pub(crate) struct MissPermit {
    _slot: OwnedSemaphorePermit,
}

impl MissBudget {
    pub(crate) fn new(config: BudgetConfig) -> Self {
        let refill = Duration::from_secs_f64(f64::from(config.burst) / config.per_second);
        Self {
            config,
            buckets: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(refill.max(Duration::from_secs(1)))
                .build(),
        }
    }

    /// Takes one miss from the caller's budget, or says how long to wait before trying again.
    pub(crate) fn take(&self, issuer: &str, subject: &str) -> Result<MissPermit, Duration> {
        let config = self.config;
        let bucket = self
            .buckets
            .get_with((issuer.to_string(), subject.to_string()), || {
                Arc::new(Bucket {
                    tokens: Mutex::new((f64::from(config.burst), Instant::now())),
                    in_flight: Arc::new(Semaphore::new(config.concurrency)),
                })
            });
        let slot = bucket
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| Duration::from_secs(1))?;
        let mut tokens = bucket.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refilled = (tokens.0 + now.duration_since(tokens.1).as_secs_f64() * config.per_second)
            .min(f64::from(config.burst));
        if refilled < 1.0 {
            *tokens = (refilled, now);
            let wait = (1.0 - refilled) / config.per_second;
            return Err(Duration::from_secs_f64(wait.ceil().max(1.0)));
        }
        *tokens = (refilled - 1.0, now);
        Ok(MissPermit { _slot: slot })
    }
}

/// Takes one miss from the caller's budget counted in Redis, across every replica: `burst`
/// misses per window of `burst / per_second` (the time the local bucket takes to refill), so
/// the rate and burst mean what they mean per replica. Redis down: the local bucket (already
/// taken) is the only bound, as documented.
pub(crate) async fn take_shared(
    store: &crate::store::Store,
    config: &BudgetConfig,
    query: &super::Query,
) -> Result<(), Duration> {
    let window = Duration::from_secs_f64(f64::from(config.burst) / config.per_second);
    let caller = crate::store::key_of(&query.issuer, &query.subject, None);
    match store.count(&["miss", &caller], window).await {
        Ok((count, left)) if count > u64::from(config.burst) => Err(Duration::from_secs(
            left.as_secs_f64().ceil().max(1.0) as u64,
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_gets_its_burst_then_its_rate_and_others_are_unaffected() {
        let budget = MissBudget::new(BudgetConfig {
            per_second: 1.0,
            burst: 3,
            concurrency: 10,
        });
        let held: Vec<_> = (0..3)
            .map(|_| budget.take("i", "mallory").unwrap())
            .collect();
        assert_eq!(
            budget.take("i", "mallory").err(),
            Some(Duration::from_secs(1))
        );
        assert!(
            budget.take("i", "alice").is_ok(),
            "another caller has its own budget"
        );
        assert!(
            budget.take("other-issuer", "mallory").is_ok(),
            "identity is (issuer, subject)"
        );
        drop(held);
    }

    #[test]
    fn misses_in_flight_are_bounded_per_caller() {
        let budget = MissBudget::new(BudgetConfig {
            per_second: 1000.0,
            burst: 1000,
            concurrency: 2,
        });
        let a = budget.take("i", "mallory").unwrap();
        let _b = budget.take("i", "mallory").unwrap();
        assert!(budget.take("i", "mallory").is_err());
        drop(a);
        assert!(budget.take("i", "mallory").is_ok());
    }
}
