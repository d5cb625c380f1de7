//! Fault injection for the fault suite (`scripts/chaos crash-after-commit`),
//! through the `fail` crate: its fail points compile to nothing unless the
//! `failpoints` feature is on, so release builds carry none of it.
//!
//! `FAILPOINTS='crash-after-commit=2*off->return'` aborts the process right
//! after the 3rd batch that inserted orders has committed in PostgreSQL —
//! before Redis hears of it and before any job is acknowledged, the window
//! in which a crash leaves committed orders whose jobs will be delivered
//! again.

pub fn after_commit(orders_inserted: usize) {
    if orders_inserted == 0 {
        return;
    }
    fail::fail_point!("crash-after-commit", |_| {
        eprintln!(
            "failpoint crash-after-commit: aborting after a commit of {orders_inserted} orders, before the Redis steps and the acks"
        );
        std::process::abort()
    });
}
