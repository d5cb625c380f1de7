//! Fault injection for the fault suite (`scripts/chaos crash-after-commit`),
//! compiled only into builds with the `failpoints` feature: release builds
//! carry none of it.
//!
//! `FLASHSALE_FAILPOINT_CRASH_AFTER_COMMIT=N` aborts the process right after
//! the N-th batch that inserted orders has committed in PostgreSQL — before
//! Redis hears of it and before any job is acknowledged, the window in which
//! a crash leaves committed orders whose jobs will be delivered again.

#[cfg(feature = "failpoints")]
pub fn after_commit(orders_inserted: usize) {
    use std::sync::atomic::{AtomicU64, Ordering};

    static COMMITS: AtomicU64 = AtomicU64::new(0);
    if orders_inserted == 0 {
        return;
    }
    let Some(crash_at) = std::env::var("FLASHSALE_FAILPOINT_CRASH_AFTER_COMMIT")
        .ok()
        .and_then(|value| value.parse::<u64>().ok())
    else {
        return;
    };
    if COMMITS.fetch_add(1, Ordering::SeqCst) + 1 == crash_at {
        eprintln!(
            "failpoint crash-after-commit: aborting after commit {crash_at} ({orders_inserted} orders), before the Redis steps and the acks"
        );
        std::process::abort();
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn after_commit(_orders_inserted: usize) {}
