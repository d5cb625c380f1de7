//! The worker binary as operators run it: it refuses an unmigrated
//! database, and SIGTERM mid-drain stops it cleanly without losing work.

mod common;

use std::{process::Command, time::Duration};

use common::{Harness, WORKER, database_url, eventually, redis_url};
use sqlx::PgPool;

#[sqlx::test(migrations = false)]
async fn the_worker_refuses_a_database_without_migrations(pg: PgPool) {
    sqlx::query(
        "create table _sqlx_migrations (version bigint primary key, success boolean not null)",
    )
    .execute(&pg)
    .await
    .unwrap();
    let output = Command::new(WORKER)
        .env("FLASHSALE_DATABASE_URL", database_url(&pg))
        .env("FLASHSALE_REDIS_URL", redis_url())
        .env("FLASHSALE_WORKER_METRICS_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("flashsale-api migrate"),
        "the message does not say what to run:\n{stderr}"
    );
}

#[test]
fn a_bad_setting_stops_the_worker_with_the_variable_named() {
    let output = Command::new(WORKER)
        .env("FLASHSALE_DATABASE_URL", "postgres://unused")
        .env("FLASHSALE_REDIS_URL", redis_url())
        .env("FLASHSALE_WORKER_CONCURRENCY", "10")
        .env("FLASHSALE_WORKER_BATCH_SIZE", "256")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("FLASHSALE_WORKER_CONCURRENCY"), "{stderr}");
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn sigterm_mid_drain_exits_zero_in_bounded_time_and_loses_nothing(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 5_000, 1).await;
    let users = harness.users(5_000).await;
    let jobs = harness.reserve(&users).await;
    harness.enqueue(&jobs).await;

    let mut first = harness.spawn_worker(&[
        ("FLASHSALE_WORKER_BATCH_SIZE", "32"),
        ("FLASHSALE_WORKER_SHUTDOWN_GRACE_SECS", "10"),
    ]);
    eventually(
        Duration::from_secs(60),
        "200 orders before SIGTERM",
        || async { harness.order_count().await >= 200 },
    )
    .await;
    first.signal(nix::sys::signal::Signal::SIGTERM);
    let status = first.exit_within(Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");

    // What it had not finished went back to the queue, not into limbo: a
    // second worker completes the sale without waiting for a reconciler.
    let _second = harness.spawn_worker(&[("FLASHSALE_RECONCILE_PENDING_AFTER_SECS", "3600")]);
    harness
        .wait_for_orders(5_000, Duration::from_secs(90))
        .await;
    harness.assert_invariants(&jobs).await;
}
