//! Operators act while reservations are in flight, and Redis loses data:
//! an ended sale's backlog keeps its units until it settles, admin changes
//! take the settlement lock, and a key stays one purchase.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{Harness, WORKER};
use flashsale::{
    domain::{
        DomainError, FailureReason, Money, OpeningRules, ReservationStatus, SaleAction, SaleWindow,
    },
    store::{
        StoreError, arming, closing,
        postgres::NewSale,
        redis::{ReserveOutcome, ReserveRequest, UserRate},
    },
};
use sqlx::PgPool;
use uuid::Uuid;

/// What these tests do as an operator, on top of the shared harness.
trait OperatorSteps {
    async fn second_sale(
        &self,
        stock: i64,
    ) -> Result<flashsale::store::postgres::SaleRow, StoreError>;
    async fn act(&self, action: SaleAction);
    async fn allotment_released(&self) -> bool;
}

impl OperatorSteps for Harness {
    /// Another sale of the harness's product with `stock` units.
    async fn second_sale(
        &self,
        stock: i64,
    ) -> Result<flashsale::store::postgres::SaleRow, StoreError> {
        let now = Utc::now();
        self.db
            .create_sale(
                &NewSale {
                    product_id: self.sale.product_id,
                    price: Money::from_minor(3_999).unwrap(),
                    window: SaleWindow::new(now, now + chrono::Duration::hours(1)).unwrap(),
                    per_user_limit: 1,
                    stock,
                    hold_seconds: None,
                    offer_seconds: None,
                },
                // No hold: the node's shortest hold does not apply.
                OpeningRules {
                    now,
                    hold_min_secs: 1,
                },
                &self.admin,
            )
            .await
    }

    async fn act(&self, action: SaleAction) {
        let sale = self
            .db
            .apply_sale_action(self.sale.id, action, Utc::now(), &self.admin)
            .await
            .unwrap();
        arming::arm_sale(&self.db, &self.redis, &sale)
            .await
            .unwrap();
    }

    async fn allotment_released(&self) -> bool {
        sqlx::query_scalar(
            "select allotment_released_at is not null from flash_sales where id = $1",
        )
        .bind(self.sale.id)
        .fetch_one(&self.pg)
        .await
        .unwrap()
    }
}

fn free_stock_refused(result: Result<flashsale::store::postgres::SaleRow, StoreError>) -> i64 {
    match result {
        Err(StoreError::Domain(DomainError::InsufficientStock { available, .. })) => available,
        other => panic!("expected INSUFFICIENT_STOCK, got {other:?}"),
    }
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn an_ended_sales_backlog_keeps_its_units_until_it_settles(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 10, 1).await;
    let users = harness.users(4).await;
    let backlog = harness.reserve(&users).await;
    assert_eq!(backlog.len(), 4);
    harness.act(SaleAction::End).await;

    // The backlog may still commit against the product: none of the sale's
    // units are free for another sale yet.
    assert_eq!(free_stock_refused(harness.second_sale(10).await), 0);
    assert_eq!(
        closing::release_drained_allotments(&harness.db, &harness.redis)
            .await
            .unwrap(),
        0,
        "released while four reservations were pending"
    );

    harness.enqueue(&backlog).await;
    let _worker = harness.spawn_worker(&[]);
    harness.wait_for_orders(4, Duration::from_secs(30)).await;
    common::eventually(
        Duration::from_secs(30),
        "the drained sale's units are released",
        || async {
            closing::release_drained_allotments(&harness.db, &harness.redis)
                .await
                .unwrap();
            harness.allotment_released().await
        },
    )
    .await;

    // Exactly the unsold six are free, and every order of the first sale held.
    assert_eq!(free_stock_refused(harness.second_sale(7).await), 6);
    harness.second_sale(6).await.unwrap();
    harness.assert_invariants(&backlog).await;
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_cancel_waits_for_the_batch_in_flight(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 3, 1).await;
    // A settlement batch in flight holds the product lock until it commits.
    let mut batch = harness.pg.begin().await.unwrap();
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1::text, 0))")
        .bind(harness.sale.product_id)
        .execute(&mut *batch)
        .await
        .unwrap();

    let (db, admin, sale) = (harness.db.clone(), harness.admin.clone(), harness.sale.id);
    let cancel = tokio::spawn(async move {
        db.apply_sale_action(sale, SaleAction::Cancel, Utc::now(), &admin)
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !cancel.is_finished(),
        "the cancel was answered while a batch could still commit orders"
    );
    batch.commit().await.unwrap();
    let cancelled = tokio::time::timeout(Duration::from_secs(5), cancel)
        .await
        .expect("the cancel went through once the batch committed")
        .unwrap()
        .unwrap();
    assert_eq!(cancelled.state, flashsale::domain::SaleState::Cancelled);
}

async fn retry(harness: &Harness, job: &flashsale::jobs::PurchaseJob) -> ReserveOutcome {
    harness
        .redis
        .reserve(&ReserveRequest {
            sale_id: harness.sale.id,
            user_id: job.user_id,
            quantity: job.quantity,
            idempotency_key: &job.idempotency_key,
            reservation_id: Uuid::now_v7(),
            rate: UserRate {
                per_second: 10_000,
                burst: 10_000,
            },
        })
        .await
        .unwrap()
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_key_retried_after_redis_lost_its_data_is_still_one_purchase(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 10, 2).await;
    let user = harness.users(1).await[0];
    let first = harness.reserve(&[user]).await.remove(0);
    harness.enqueue(std::slice::from_ref(&first)).await;
    let worker = harness.spawn_worker(&[]);
    harness.wait_for_orders(1, Duration::from_secs(30)).await;
    drop(worker);

    // Redis loses everything; the sale is armed again from PostgreSQL, and
    // the shopper retries the key whose answer they never saw.
    harness.wipe_redis().await;
    let sale = harness
        .db
        .find_sale(harness.sale.id)
        .await
        .unwrap()
        .unwrap();
    arming::arm_sale(&harness.db, &harness.redis, &sale)
        .await
        .unwrap();
    assert_eq!(
        retry(&harness, &first).await,
        ReserveOutcome::Replayed {
            reservation_id: first.reservation_id,
            status: ReservationStatus::Confirmed,
        },
        "the retry did not get its original reservation back"
    );
    assert_eq!(
        harness.redis.units_held(sale.id, user).await.unwrap(),
        1,
        "the shopper's committed unit counts against the limit again"
    );

    // Only the replay record is lost (the last second of the append-only
    // file): Redis takes the retry for a new purchase, but PostgreSQL
    // holds the key to one order.
    let keys = harness.redis.sale_keys(sale.id);
    let mut raw = harness.raw.clone();
    let replay_field = format!("{}:{}", first.user_id, first.idempotency_key);
    let _: () = redis::AsyncCommands::hdel(&mut raw, &keys.shoppers, replay_field)
        .await
        .unwrap();
    let ReserveOutcome::Accepted {
        reservation_id,
        reserved_at_ms,
        ..
    } = retry(&harness, &first).await
    else {
        panic!("Redis without the replay record should take the retry as new");
    };
    let second = flashsale::jobs::PurchaseJob {
        reservation_id,
        reserved_at_ms,
        ..first.clone()
    };
    harness.enqueue(std::slice::from_ref(&second)).await;
    let _worker = harness.spawn_worker(&[]);
    common::eventually(Duration::from_secs(30), "the retry settled", || async {
        harness.pending_count().await == 0
    })
    .await;
    assert_eq!(harness.order_count().await, 1, "the key bought twice");
    assert_eq!(
        harness.reservation_status(reservation_id).await,
        Some((
            ReservationStatus::Failed,
            Some(FailureReason::KeyAlreadyOrdered)
        ))
    );
    assert_eq!(
        harness.redis.remaining(sale.id).await.unwrap(),
        Some(9),
        "the refused retry's unit is back on sale"
    );
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn dead_jobs_beyond_the_number_kept_are_dropped(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 10, 1).await;
    // Jobs of a sale PostgreSQL does not know fail on every attempt.
    let user = harness.users(1).await[0];
    let doomed: Vec<_> = (0..6)
        .map(|index| flashsale::jobs::PurchaseJob {
            reservation_id: Uuid::now_v7(),
            sale_id: Uuid::now_v7(),
            user_id: user,
            quantity: flashsale::domain::Quantity::ONE,
            idempotency_key: format!("doomed-{index}"),
            reserved_at_ms: Utc::now().timestamp_millis(),
        })
        .collect();
    harness.enqueue(&doomed).await;
    let _worker = harness.spawn_worker(&[
        ("FLASHSALE_WORKER_MAX_ATTEMPTS", "1"),
        ("FLASHSALE_DEAD_JOBS_KEPT", "2"),
        ("FLASHSALE_RECONCILE_SCHEDULE", "* * * * * *"),
    ]);
    let queue = flashsale::jobs::queue_name(&harness.prefix);
    common::eventually(
        Duration::from_secs(30),
        "two dead jobs kept, with their payloads only",
        || async {
            let (dead, payloads): (i64, i64) = redis::pipe()
                .scard(format!("{queue}:dead"))
                .hlen(format!("{queue}:data"))
                .query_async(&mut harness.raw.clone())
                .await
                .unwrap();
            dead == 2 && payloads == 2
        },
    )
    .await;
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_reservation_stuck_in_a_sale_closed_days_ago_is_still_settled(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 10, 1).await;
    let users = harness.users(1).await;
    // Accepted, but its job was lost; then the sale ended, days ago.
    let stuck = harness.reserve(&users).await;
    harness.act(SaleAction::End).await;
    sqlx::query(
        "update flash_sales set starts_at = now() - interval '3 days',
                ends_at = now() - interval '2 days', updated_at = now() - interval '2 days'
         where id = $1",
    )
    .bind(harness.sale.id)
    .execute(&harness.pg)
    .await
    .unwrap();

    let _worker = harness.spawn_worker(&[
        ("FLASHSALE_RECONCILE_SCHEDULE", "* * * * * *"),
        ("FLASHSALE_RECONCILE_PENDING_AFTER_SECS", "1"),
    ]);
    harness.wait_for_orders(1, Duration::from_secs(30)).await;
    common::eventually(
        Duration::from_secs(30),
        "the drained sale's units are released",
        || async { harness.allotment_released().await },
    )
    .await;
    harness.assert_invariants(&stuck).await;
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_sale_closed_by_its_clock_is_ended_and_a_regressed_closed_sale_armed_again(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 10, 1).await;
    sqlx::query(
        "update flash_sales set starts_at = now() - interval '2 hours', ends_at = now() - interval '1 second'
         where id = $1",
    )
    .bind(harness.sale.id)
    .execute(&harness.pg)
    .await
    .unwrap();
    assert_eq!(
        closing::close_in_redis(&harness.db, &harness.redis)
            .await
            .unwrap(),
        1
    );
    let sale = harness
        .db
        .find_sale(harness.sale.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sale.state, flashsale::domain::SaleState::Ended);
    assert_eq!(sale.version, harness.sale.version + 1);
    let meta = harness.redis.sale_keys(sale.id).meta.clone();
    let mut raw = harness.raw.clone();
    let state: String = redis::AsyncCommands::hget(&mut raw, &meta, "state")
        .await
        .unwrap();
    assert_eq!(state, "ended");
    // Nothing pending: its units are free and it can be archived.
    closing::release_drained_allotments(&harness.db, &harness.redis)
        .await
        .unwrap();
    assert!(harness.allotment_released().await);

    // Redis comes back without its last writes: it mirrors the sale as it
    // was before the end. The reconciler's next tick arms the end again.
    let _: () = redis::AsyncCommands::hset_multiple(
        &mut raw,
        &meta,
        &[("state", "active"), ("version", "1")],
    )
    .await
    .unwrap();
    assert_eq!(
        closing::close_in_redis(&harness.db, &harness.redis)
            .await
            .unwrap(),
        1
    );
    let state: String = redis::AsyncCommands::hget(&mut raw, &meta, "state")
        .await
        .unwrap();
    assert_eq!(state, "ended");
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_reservation_settling_after_its_sales_units_were_released_takes_only_free_units(
    pg: PgPool,
) {
    let harness = Harness::new(WORKER, pg, 10, 1).await;
    let users = harness.users(2).await;
    let late = harness.reserve(&users).await;
    harness.act(SaleAction::End).await;
    // Redis lost the pending set (a wipe after the end): the reconciler saw
    // nothing pending and released the units, while the jobs still wait.
    assert!(harness.db.release_allotment(harness.sale.id).await.unwrap());
    harness.second_sale(7).await.unwrap();

    harness.enqueue(&late).await;
    let _worker = harness.spawn_worker(&[]);
    harness.wait_for_orders(2, Duration::from_secs(30)).await;
    // The two orders took two of the three units no sale held; the second
    // sale's seven stay whole.
    assert_eq!(free_stock_refused(harness.second_sale(2).await), 1);
}
