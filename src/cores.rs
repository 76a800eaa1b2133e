//! Thread per core: which serving thread the current code runs on. Each serving thread runs its
//! own single-threaded runtime accepting from the listener's one socket, and each keeps its own
//! upstream connection pools, picked by this index: a request, its upstream connection and
//! the tasks that drive both stay on one thread, with no wake-ups handed between threads.

use std::cell::Cell;

thread_local! {
    static CORE: Cell<usize> = const { Cell::new(0) };
}

/// This thread's serving index (0 on threads that are not serving threads).
pub(crate) fn current() -> usize {
    CORE.with(Cell::get)
}

/// Marks this thread as serving thread `index`.
pub(crate) fn enter(index: usize) {
    CORE.with(|c| c.set(index));
}

/// The number of serving threads: `workers:`, else one per CPU core.
pub(crate) fn count(workers: Option<usize>) -> usize {
    workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
