//! Crashes and data loss: a worker killed mid-drain, and Redis losing its
//! data mid-sale. Nothing accepted is lost or doubled; nothing is oversold.

mod common;

use std::time::Duration;

use common::{Harness, WORKER, eventually};
use flashsale::store::arming;
use sqlx::PgPool;

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_worker_killed_mid_drain_loses_and_duplicates_nothing(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 10_000, 1).await;
    let users = harness.users(10_000).await;
    let jobs = harness.reserve(&users).await;
    harness.enqueue(&jobs).await;

    // Small batches so the first worker is surely mid-drain when it dies.
    let mut doomed = harness.spawn_worker(&[("FLASHSALE_WORKER_BATCH_SIZE", "32")]);
    eventually(
        Duration::from_secs(60),
        "500 orders from the first worker",
        || async { harness.order_count().await >= 500 },
    )
    .await;
    doomed.signal(nix::sys::signal::Signal::SIGKILL);
    doomed.exit_within(Duration::from_secs(5));
    let at_kill = harness.order_count().await;
    assert!(at_kill < 10_000, "the worker finished before it was killed");

    let _survivor = harness.spawn_worker(&[]);
    harness
        .wait_for_orders(10_000, Duration::from_secs(120))
        .await;
    harness.assert_invariants(&jobs).await;
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn redis_losing_its_data_mid_sale_rebuilds_stock_from_postgres_without_overselling(
    pg: PgPool,
) {
    let harness = Harness::new(WORKER, pg, 1_000, 1).await;
    let buyers = harness.users(300).await;
    let committed = harness.reserve(&buyers).await;
    harness.enqueue(&committed).await;
    let worker = harness.spawn_worker(&[]);
    harness.wait_for_orders(300, Duration::from_secs(60)).await;
    drop(worker);

    // 100 more reservations, left pending (no worker runs).
    let waiting_users = harness.users(100).await;
    let waiting = harness.reserve(&waiting_users).await;
    assert_eq!(waiting.len(), 100);

    // Partial loss: the counter and the mirror go, pending reservations survive.
    let keys = harness.redis.sale_keys(harness.sale.id);
    let mut raw = harness.raw.clone();
    let _: () = redis::cmd("DEL")
        .arg(&keys.meta)
        .arg(&keys.buyers)
        .query_async(&mut raw)
        .await
        .unwrap();
    let sale = harness
        .db
        .find_sale(harness.sale.id)
        .await
        .unwrap()
        .unwrap();
    let armed = arming::arm_sale(&harness.db, &harness.redis, &sale)
        .await
        .unwrap();
    assert!(armed.rebuilt);
    assert_eq!(
        armed.remaining,
        1_000 - 300 - 100,
        "allotted - confirmed - surviving pending"
    );
    // Per-user limits survive too: an earlier buyer cannot buy again.
    assert!(harness.reserve(&buyers[..5]).await.is_empty());

    // Full loss, as after a restart without persistence: everything under
    // the prefix is gone, including the 100 pending reservations and the queue.
    harness.wipe_redis().await;
    let armed = arming::arm_sale(&harness.db, &harness.redis, &sale)
        .await
        .unwrap();
    assert_eq!(armed.remaining, 700, "allotted - confirmed; never invented");

    // A stampede after the loss: 2,000 new shoppers and the 300 earlier buyers.
    let newcomers = harness.users(2_000).await;
    let everyone: Vec<_> = newcomers.iter().chain(&buyers).copied().collect();
    let accepted = harness.reserve(&everyone).await;
    assert_eq!(
        accepted.len(),
        700,
        "exactly the units PostgreSQL still has"
    );
    assert!(
        accepted.iter().all(|job| !buyers.contains(&job.user_id)),
        "an earlier buyer got a second unit"
    );
    harness.enqueue(&accepted).await;
    let _worker = harness.spawn_worker(&[]);
    harness
        .wait_for_orders(1_000, Duration::from_secs(60))
        .await;
    let sold: i64 = sqlx::query_scalar(
        "select coalesce(sum(quantity), 0)::bigint from orders where flash_sale_id = $1",
    )
    .bind(harness.sale.id)
    .fetch_one(&harness.pg)
    .await
    .unwrap();
    assert_eq!(sold, 1_000, "sold out exactly, not one more");
    // The first 300 reservations' Redis records died with Redis; their
    // orders are counted above, the survivors' outcomes are checked here.
    assert_eq!(committed.len(), 300);
    harness.assert_invariants(&accepted).await;
}
