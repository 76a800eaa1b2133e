//! Background work that must not die quietly: a supervised task is restarted, after a pause,
//! when it panics (the panic is logged), and ends only when its own future returns.

use std::future::Future;
use std::time::Duration;

/// How long a panicked task waits before it starts again (no hot loop on a persistent bug).
const RESTART_AFTER: Duration = Duration::from_secs(1);

/// Runs `make()`'s future on its own task; when it panics, logs `name` and runs a new one.
pub(crate) fn spawn<F, Fut>(name: &'static str, make: F) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match tokio::spawn(make()).await {
                Ok(()) => return,
                Err(e) if e.is_panic() => {
                    tracing::error!(task = name, "background task panicked; restarting it");
                    tokio::time::sleep(RESTART_AFTER).await;
                }
                // Cancelled: the runtime is shutting down.
                Err(_) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_panicking_task_is_restarted_until_it_returns() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let handle = super::spawn("test", move || {
            let counter = counter.clone();
            async move {
                #[allow(clippy::panic, reason = "the panic is what is supervised")]
                if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom");
                }
            }
        });
        handle.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }
}
