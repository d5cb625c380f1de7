//! Accepted reservations become orders: exactly once, whatever is delivered
//! twice, whatever push failed, and failures end visibly.

mod common;

use std::time::Duration;

use common::{Harness, WORKER, eventually};
use flashsale::{
    domain::{Decision, FailureReason, ReservationStatus},
    jobs::SettlementJob,
    store::redis::Counter,
};
use sqlx::PgPool;

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn ten_thousand_queued_reservations_become_ten_thousand_orders(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 10_000, 1).await;
    let users = harness.users(10_000).await;
    let jobs = harness.reserve(&users).await;
    assert_eq!(jobs.len(), 10_000);
    harness.enqueue(&jobs).await;

    let _worker = harness.spawn_worker(&[]);
    harness
        .wait_for_orders(10_000, Duration::from_secs(120))
        .await;

    harness.assert_invariants(&jobs).await;
    let available: i64 =
        sqlx::query_scalar("select available_quantity from stocks where product_id = $1")
            .bind(harness.sale.product_id)
            .fetch_one(&harness.pg)
            .await
            .unwrap();
    assert_eq!(available, 0, "PostgreSQL stock went down by exactly 10,000");
    // The reconciler (every 2 s by default) finds Redis and PostgreSQL agree.
    eventually(
        Duration::from_secs(15),
        "the reconciler measures drift 0",
        || async {
            let counters = harness.redis.sale_counters(harness.sale.id).await.unwrap();
            counters.get(Counter::DriftCheckedAtMs) > 0 && counters.get(Counter::Drift) == 0
        },
    )
    .await;
    // The reconciler forgets the finished jobs apalis would keep forever.
    eventually(
        Duration::from_secs(15),
        "finished jobs vacuumed",
        || async { harness.finished_job_leftovers().await == (0, 0, 0) },
    )
    .await;
    for job in jobs.iter().step_by(997) {
        assert_eq!(
            harness
                .reservation_status(job.reservation_id)
                .await
                .unwrap()
                .0,
            ReservationStatus::Confirmed
        );
        // Redis's record names the order PostgreSQL holds (status reads
        // answer from it).
        let order: uuid::Uuid =
            sqlx::query_scalar("select id from orders where reservation_id = $1")
                .bind(job.reservation_id)
                .fetch_one(&harness.pg)
                .await
                .unwrap();
        let record = harness
            .redis
            .reservation(harness.sale.id, job.reservation_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.order_id, Some(order));
    }
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_job_delivered_twice_to_two_racing_workers_makes_one_order(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 1_000, 1).await;
    let users = harness.users(1_000).await;
    let jobs = harness.reserve(&users).await;
    // Every reservation queued twice, as two distinct jobs.
    harness.enqueue(&jobs).await;
    for job in &jobs {
        harness
            .queue
            .enqueue_keyed(
                SettlementJob::single(job.clone()),
                format!("{}:again", job.reservation_id),
            )
            .await
            .unwrap();
    }

    // The reconciler (which would vacuum the done set this test counts)
    // runs once a year here.
    let settings = [
        ("FLASHSALE_WORKER_BATCH_SIZE", "64"),
        ("FLASHSALE_RECONCILE_SCHEDULE", "0 0 0 1 1 *"),
    ];
    let _first = harness.spawn_worker(&settings);
    let _second = harness.spawn_worker(&settings);
    harness
        .wait_for_orders(1_000, Duration::from_secs(60))
        .await;
    // Wait until both copies of every job have run, then check nothing doubled.
    eventually(Duration::from_secs(30), "all 2,000 jobs done", || async {
        harness.jobs_done().await == 2_000
    })
    .await;

    assert_eq!(harness.order_count().await, 1_000);
    harness.assert_invariants(&jobs).await;
    let counters = harness.redis.sale_counters(harness.sale.id).await.unwrap();
    assert_eq!(
        counters.get(Counter::Confirmed),
        1_000,
        "each reservation confirmed once"
    );
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_reservation_whose_push_failed_is_enqueued_by_the_reconciler(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 10, 1).await;
    let users = harness.users(3).await;
    // Reserved, never pushed: what an API node leaves behind when its
    // outbox cannot push, or when it dies with purchases in its outbox.
    let jobs = harness.reserve(&users).await;
    assert_eq!(harness.queue.depth().await.unwrap().waiting, 0);

    let _worker = harness.spawn_worker(&[
        ("FLASHSALE_RECONCILE_SCHEDULE", "* * * * * *"),
        ("FLASHSALE_RECONCILE_PENDING_AFTER_SECS", "1"),
    ]);
    harness.wait_for_orders(3, Duration::from_secs(30)).await;
    harness.assert_invariants(&jobs).await;
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_job_that_can_never_succeed_is_released_visibly_and_the_shopper_may_buy_again(
    pg: PgPool,
) {
    let harness = Harness::new(WORKER, pg, 5, 1).await;
    let users = harness.users(2).await;
    let (gone, present) = (users[0], users[1]);
    let jobs = harness.reserve(&users).await;
    let gone_job = jobs.iter().find(|job| job.user_id == gone).unwrap().clone();
    // The account is removed between the reservation and its commit.
    sqlx::query("delete from users where id = $1")
        .bind(gone)
        .execute(&harness.pg)
        .await
        .unwrap();
    harness.enqueue(&jobs).await;

    let _worker = harness.spawn_worker(&[]);
    harness.wait_for_orders(1, Duration::from_secs(30)).await;

    let (status, reason) = harness
        .reservation_status(gone_job.reservation_id)
        .await
        .unwrap();
    assert_eq!(status, ReservationStatus::Failed);
    assert_eq!(reason, Some(FailureReason::UserGone));
    assert_eq!(
        harness.redis.remaining(harness.sale.id).await.unwrap(),
        Some(4),
        "the failed reservation's unit is back on sale"
    );
    assert_eq!(
        harness
            .redis
            .units_held(harness.sale.id, gone)
            .await
            .unwrap(),
        0
    );
    harness.assert_invariants(&jobs).await;

    // The account comes back (same id); its owner buys again, and it sticks.
    sqlx::query(
        "insert into users (id, email, issuer, subject)
         values ($1, 'back@shop.test', 'local', 'back@shop.test')",
    )
    .bind(gone)
    .execute(&harness.pg)
    .await
    .unwrap();
    let again = harness.reserve(&[gone]).await;
    assert_eq!(again.len(), 1, "the released shopper may reserve again");
    harness.enqueue(&again).await;
    harness.wait_for_orders(2, Duration::from_secs(30)).await;
    assert_eq!(
        harness
            .reservation_status(again[0].reservation_id)
            .await
            .unwrap()
            .0,
        ReservationStatus::Confirmed
    );
    let all: Vec<_> = jobs.into_iter().chain(again).collect();
    harness.assert_invariants(&all).await;
    assert_eq!(
        harness
            .redis
            .units_held(harness.sale.id, present)
            .await
            .unwrap(),
        1
    );
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn reservations_of_a_cancelled_sale_fail_with_the_reason_and_return_their_units(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 10, 1).await;
    let users = harness.users(4).await;
    let jobs = harness.reserve(&users).await;
    harness
        .db
        .apply_sale_action(
            harness.sale.id,
            flashsale::domain::SaleAction::Cancel,
            chrono::Utc::now(),
            &harness.admin,
        )
        .await
        .unwrap();
    harness.enqueue(&jobs).await;

    let _worker = harness.spawn_worker(&[]);
    eventually(
        Duration::from_secs(30),
        "no reservation left pending",
        || async { harness.pending_count().await == 0 },
    )
    .await;
    assert_eq!(harness.order_count().await, 0);
    for job in &jobs {
        let (status, reason) = harness
            .reservation_status(job.reservation_id)
            .await
            .unwrap();
        assert_eq!(status, ReservationStatus::Failed);
        assert_eq!(reason, Some(FailureReason::SaleCancelled));
    }
    assert_eq!(
        harness.redis.remaining(harness.sale.id).await.unwrap(),
        Some(10)
    );
    harness.assert_invariants(&jobs).await;
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_banned_shoppers_pending_reservations_are_released_and_their_units_resold(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 3, 1).await;
    let users = harness.users(3).await;
    let banned = users[0];
    let jobs = harness.reserve(&users).await;
    assert_eq!(jobs.len(), 3);
    harness.db.ban_user(banned, &harness.admin).await.unwrap();
    harness.enqueue(&jobs).await;

    let _worker = harness.spawn_worker(&[]);
    harness.wait_for_orders(2, Duration::from_secs(30)).await;
    let banned_job = jobs.iter().find(|job| job.user_id == banned).unwrap();
    let (status, reason) = harness
        .reservation_status(banned_job.reservation_id)
        .await
        .unwrap();
    assert_eq!(status, ReservationStatus::Failed);
    assert_eq!(reason, Some(FailureReason::Banned));
    assert_eq!(
        harness.redis.remaining(harness.sale.id).await.unwrap(),
        Some(1),
        "the banned shopper's unit is back on sale"
    );
    harness.assert_invariants(&jobs).await;
    // Someone else buys it.
    let buyer = harness.users(1).await;
    let resold = harness.reserve(&buyer).await;
    assert_eq!(resold.len(), 1);
    harness.enqueue(&resold).await;
    harness.wait_for_orders(3, Duration::from_secs(30)).await;
}

/// The lock a ban shares with settlement: a batch in flight holds its
/// users `for key share`; the ban (`for update`) waits for its commit, so
/// an admin who got an answer never sees an order of the user committed
/// after it, and every later batch reads the ban.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_ban_waits_for_the_batch_in_flight_and_later_batches_see_it(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 3, 1).await;
    let user = harness.users(1).await[0];
    let mut batch = harness.pg.begin().await.unwrap();
    sqlx::query("select id from users where id = $1 for key share")
        .bind(user)
        .execute(&mut *batch)
        .await
        .unwrap();

    let db = harness.db.clone();
    let admin = harness.admin.clone();
    let ban = tokio::spawn(async move { db.ban_user(user, &admin).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !ban.is_finished(),
        "the ban did not wait for the batch in flight"
    );
    batch.commit().await.unwrap();
    let banned = tokio::time::timeout(Duration::from_secs(5), ban)
        .await
        .expect("the ban went through once the batch committed")
        .unwrap()
        .unwrap();
    assert!(banned.banned_at.is_some());

    let jobs = harness.reserve(&[user]).await;
    harness.enqueue(&jobs).await;
    let _worker = harness.spawn_worker(&[]);
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = harness
            .reservation_status(jobs[0].reservation_id)
            .await
            .unwrap();
        if status == ReservationStatus::Failed {
            break;
        }
        assert!(tokio::time::Instant::now() < give_up, "still {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(harness.order_count().await, 0);
}

/// The other side of that lock: a batch settling while a ban holds the
/// user's row waits for the ban, then reads it and fails the reservation.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_batch_waits_for_a_ban_in_flight_and_fails_its_user(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 3, 1).await;
    let user = harness.users(1).await[0];
    let job = harness.reserve(&[user]).await.remove(0);
    let mut ban = harness.pg.begin().await.unwrap();
    sqlx::query("select id from users where id = $1 for update")
        .bind(user)
        .execute(&mut *ban)
        .await
        .unwrap();

    let db = harness.db.clone();
    let sale_id = harness.sale.id;
    let reservation = flashsale::store::postgres::ReservationToSettle::from(&job);
    let settle = tokio::spawn(async move { db.settle_batch(sale_id, &[reservation]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !settle.is_finished(),
        "the batch did not wait for the ban in flight"
    );
    sqlx::query("update users set banned_at = now(), tokens_valid_after = now() where id = $1")
        .bind(user)
        .execute(&mut *ban)
        .await
        .unwrap();
    ban.commit().await.unwrap();
    let settled = tokio::time::timeout(Duration::from_secs(5), settle)
        .await
        .expect("the batch went on once the ban committed")
        .unwrap()
        .unwrap();
    assert_eq!(
        settled.decisions,
        [flashsale::domain::Decision::Fail {
            reason: FailureReason::Banned,
            restock: 1
        }]
    );
    assert_eq!(settled.orders_inserted, 0);
}

/// The invariants every checker shares (flash_sale_invariants) see an
/// order that no ledger counted, and a buyer over the limit.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn the_shared_invariants_catch_an_order_the_ledgers_never_counted(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 10, 1).await;
    let users = harness.users(1).await;
    let jobs = harness.reserve(&users).await;
    harness.enqueue(&jobs).await;
    let _worker = harness.spawn_worker(&[]);
    harness.wait_for_orders(1, Duration::from_secs(30)).await;
    harness.assert_invariants(&jobs).await;

    sqlx::query(
        "insert into orders (id, reservation_id, flash_sale_id, user_id, quantity, unit_price, idempotency_key)
         values (gen_random_uuid(), gen_random_uuid(), $1, $2, 1, 100, 'smuggled')",
    )
    .bind(harness.sale.id)
    .bind(users[0])
    .execute(&harness.pg)
    .await
    .unwrap();
    let invariants: String = sqlx::query_scalar("select flash_sale_invariants($1)::text")
        .bind(harness.sale.id)
        .fetch_one(&harness.pg)
        .await
        .unwrap();
    let invariants: serde_json::Value = serde_json::from_str(&invariants).unwrap();
    assert_eq!(invariants["passed"], false, "{invariants:#}");
    assert_eq!(
        invariants["checks"]["ledgers_agree"], false,
        "{invariants:#}"
    );
    assert_eq!(
        invariants["checks"]["within_per_user_limit"], false,
        "{invariants:#}"
    );
    assert_eq!(invariants["checks"]["no_oversell"], true, "{invariants:#}");

    // The schema holds the domain's bounds too: no row the API could not
    // read back as a Quantity.
    let oversized = sqlx::query(
        "insert into orders (id, reservation_id, flash_sale_id, user_id, quantity, unit_price, idempotency_key)
         values (gen_random_uuid(), gen_random_uuid(), $1, $2, 1001, 100, 'oversized')",
    )
    .bind(harness.sale.id)
    .bind(users[0])
    .execute(&harness.pg)
    .await;
    let refused = oversized.expect_err("an order of 1,001 units was stored");
    assert!(
        refused.to_string().contains("orders_quantity_within_bound"),
        "{refused}"
    );
}

/// One row of `purchase_endings`, times in Unix ms (reserved) and µs
/// (settled).
#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Ending {
    reservation_id: uuid::Uuid,
    outcome: String,
    reason: Option<String>,
    reserved_at_ms: i64,
    ended_at_us: i64,
}

/// Every ending `purchase_endings` shows for the sale, oldest first.
async fn endings(harness: &Harness) -> Vec<Ending> {
    sqlx::query_as(
        "select reservation_id, outcome, reason,
                (extract(epoch from reserved_at) * 1000)::bigint as reserved_at_ms,
                (extract(epoch from ended_at) * 1000000)::bigint as ended_at_us
         from purchase_endings where flash_sale_id = $1 order by reserved_at, reservation_id",
    )
    .bind(harness.sale.id)
    .fetch_all(&harness.pg)
    .await
    .unwrap()
}

/// Three reservations settled in one batch, oldest first: the first two
/// commit, the third's shopper is banned before it settles.
async fn two_orders_and_a_failure(harness: &Harness) -> Vec<flashsale::jobs::PurchaseJob> {
    let users = harness.users(3).await;
    let mut jobs = harness.reserve(&users).await;
    assert_eq!(jobs.len(), 3);
    jobs.sort_by_key(|job| (job.reserved_at_ms, job.reservation_id));
    sqlx::query("update users set banned_at = now(), tokens_valid_after = now() where id = $1")
        .bind(jobs[2].user_id)
        .execute(&harness.pg)
        .await
        .unwrap();
    let batch: Vec<_> = jobs.iter().map(Into::into).collect();
    let settled = harness
        .db
        .settle_batch(harness.sale.id, &batch)
        .await
        .unwrap();
    assert_eq!(settled.orders_inserted, 2);
    jobs
}

/// A `purchase_attempts` row for a reservation, as a test plants it.
async fn plant_audit_row(
    harness: &Harness,
    reservation: uuid::Uuid,
    user: uuid::Uuid,
    reserved_in: &str,
) {
    sqlx::query(
        "insert into purchase_attempts (reservation_id, flash_sale_id, user_id, quantity, outcome, reason, reserved_at)
         values ($1, $2, $3, 1, 'failed', 'banned', now() + $4::interval)",
    )
    .bind(reservation)
    .bind(harness.sale.id)
    .bind(user)
    .bind(reserved_in)
    .execute(&harness.pg)
    .await
    .unwrap();
}

/// A confirmed reservation's record is its order: settlement writes no
/// `purchase_attempts` row for it (issue 19), and `purchase_endings` still
/// shows every reservation PostgreSQL decided, once, with when it was
/// reserved and when it was settled; status reads that fall back on
/// PostgreSQL read it.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_confirmed_reservation_is_recorded_by_its_order_alone(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 10, 1).await;
    let jobs = two_orders_and_a_failure(&harness).await;

    let audited: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "select reservation_id, outcome from purchase_attempts where flash_sale_id = $1",
    )
    .bind(harness.sale.id)
    .fetch_all(&harness.pg)
    .await
    .unwrap();
    assert_eq!(
        audited,
        [(jobs[2].reservation_id, "failed".to_owned())],
        "only the reservation that ended without an order has an audit row"
    );
    let found = endings(&harness).await;
    let settled_at_us = found[0].ended_at_us;
    let expected: Vec<Ending> = jobs
        .iter()
        .zip(["confirmed", "confirmed", "failed"])
        .map(|(job, outcome)| Ending {
            reservation_id: job.reservation_id,
            outcome: outcome.to_owned(),
            reason: (outcome == "failed").then(|| FailureReason::Banned.code().to_owned()),
            reserved_at_ms: job.reserved_at_ms,
            ended_at_us: settled_at_us,
        })
        .collect();
    assert_eq!(
        found, expected,
        "one ending per reservation, all settled by one transaction"
    );
    let invariants: serde_json::Value = harness.sale_invariants().await;
    assert_eq!(invariants["passed"], true, "{invariants:#}");

    let confirmed = harness
        .db
        .settled_purchase(jobs[0].reservation_id)
        .await
        .unwrap()
        .expect("a confirmed reservation is settled");
    assert_eq!(confirmed.status, ReservationStatus::Confirmed);
    assert!(confirmed.order_id.is_some());
    let failed = harness
        .db
        .settled_purchase(jobs[2].reservation_id)
        .await
        .unwrap()
        .expect("a failed reservation is settled");
    assert_eq!(failed.status, ReservationStatus::Failed);
    assert_eq!(failed.reason.as_deref(), Some(FailureReason::Banned.code()));
    assert_eq!(failed.order_id, None);
}

/// A shopper's latest settled purchase is found across both kinds of
/// ending: their order, then a later failure.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn the_latest_settled_purchase_is_an_order_or_a_later_failure(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 10, 1).await;
    let jobs = two_orders_and_a_failure(&harness).await;
    let shopper = jobs[1].user_id;
    let latest = |harness: &Harness| {
        let db = harness.db.clone();
        let sale = harness.sale.id;
        async move {
            db.latest_settled_purchase(sale, shopper)
                .await
                .unwrap()
                .expect("the shopper's purchase is settled")
        }
    };
    let order = latest(&harness).await;
    assert_eq!(order.reservation_id, jobs[1].reservation_id);
    assert_eq!(order.status, ReservationStatus::Confirmed);

    let later_failure = uuid::Uuid::now_v7();
    plant_audit_row(&harness, later_failure, shopper, "1 minute").await;
    let failure = latest(&harness).await;
    assert_eq!(failure.reservation_id, later_failure);
    assert_eq!(failure.status, ReservationStatus::Failed);
}

/// A second ending recorded for a reservation that has an order fails
/// the checks every checker shares, and only the audit's.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn the_shared_invariants_catch_a_failure_recorded_for_an_order(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 10, 1).await;
    let jobs = two_orders_and_a_failure(&harness).await;
    plant_audit_row(
        &harness,
        jobs[0].reservation_id,
        jobs[0].user_id,
        "0 seconds",
    )
    .await;

    let invariants: serde_json::Value = harness.sale_invariants().await;
    assert_eq!(invariants["passed"], false, "{invariants:#}");
    let failed: Vec<&String> = invariants["checks"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, passed)| **passed == false)
        .map(|(check, _)| check)
        .collect();
    assert_eq!(failed, ["audit_agrees_with_orders"], "{invariants:#}");
}

/// An order settled before migration 20261206000001 has no reserved_at of
/// its own and a `confirmed` audit row: `purchase_endings` shows it once,
/// reserved when that row says.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn an_order_settled_before_the_order_was_the_record_ends_once(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 10, 1).await;
    let user = harness.users(1).await[0];
    let reservation = uuid::Uuid::now_v7();
    sqlx::query(
        "with ordered as (
             insert into orders (id, reservation_id, flash_sale_id, user_id, quantity, unit_price, idempotency_key)
             values (gen_random_uuid(), $1, $2, $3, 1, 100, 'before')
         )
         insert into purchase_attempts (reservation_id, flash_sale_id, user_id, quantity, outcome, reserved_at)
         values ($1, $2, $3, 1, 'confirmed', '2026-12-01T10:00:00.123Z')",
    )
    .bind(reservation)
    .bind(harness.sale.id)
    .bind(user)
    .execute(&harness.pg)
    .await
    .unwrap();
    let found = endings(&harness).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (
            found[0].reservation_id,
            found[0].outcome.as_str(),
            &found[0].reason
        ),
        (reservation, "confirmed", &None)
    );
    assert_eq!(found[0].reserved_at_ms, 1_796_119_200_123);
}

/// A reservation given twice in one batch commits once; the repeat is
/// already confirmed (with the same order), not failed as a key already
/// ordered, which would have put its sold unit back on sale in Redis and
/// recorded a second ending.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_reservation_given_twice_in_one_batch_ends_once(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 10, 1).await;
    let users = harness.users(1).await;
    let job = harness.reserve(&users).await.remove(0);
    let twice = [(&job).into(), (&job).into()];
    let settled = harness
        .db
        .settle_batch(harness.sale.id, &twice)
        .await
        .unwrap();
    assert_eq!(settled.orders_inserted, 1);
    assert_eq!(
        settled.decisions,
        [Decision::Commit, Decision::AlreadyConfirmed]
    );
    assert!(settled.order_ids[0].is_some());
    assert_eq!(settled.order_ids[0], settled.order_ids[1]);
    let found = endings(&harness).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].reservation_id, found[0].outcome.as_str()),
        (job.reservation_id, "confirmed")
    );
}
