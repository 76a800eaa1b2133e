//! `workers:`: the runtime's thread count, bounded at load.

use super::{POLICY, assert_error, load, one_error, server_with};

#[test]
fn workers_default_to_none_and_take_a_count() {
    let default = load(&server_with(""), &[("policy.yaml", POLICY)]).unwrap();
    assert_eq!(
        default.listen.workers, None,
        "one per core, chosen by the runtime"
    );
    let two = load(&server_with("workers: 2\n"), &[("policy.yaml", POLICY)]).unwrap();
    assert_eq!(two.listen.workers, Some(2));
}

#[test]
fn zero_and_absurd_worker_counts_are_refused_at_their_line() {
    for bad in ["workers: 0\n", "workers: 5000\n"] {
        let e = one_error(&server_with(bad), &[("policy.yaml", POLICY)]);
        assert_error(&e, "scopegate.yaml", 12, "is not between 1 and 1024");
        assert!(e.hint.as_deref().unwrap_or("").contains("CPU"), "{e}");
    }
}
