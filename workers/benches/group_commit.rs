//! One group commit: a batch of 256 reservations settled in PostgreSQL in
//! one transaction (`Db::settle_batch`: product lock, ledger, one keyed
//! lookup per reservation, decisions, orders + sale_buyers + counters +
//! stock in one statement, the failures' audit rows (none here: every
//! reservation commits), commit). PostgreSQL only; the Redis
//! steps the worker takes afterwards are not in it.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:55432/flashsale \
//!   cargo bench -p flashsale-workers --bench group_commit
//! ```
//! Each iteration commits 256 new orders into a fresh database, so later
//! samples see a few hundred thousand orders at most.

use std::time::Duration;

use chrono::Utc;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use flashsale::store::postgres::ReservationToSettle;
use flashsale_testkit::worker::{Harness, drop_database, fresh_database};
use uuid::Uuid;

const BATCH: usize = 256;

fn group_commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let admin_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:55432/flashsale".into());
    let (pool, name) = runtime.block_on(fresh_database(&admin_url));
    // Stock and the per-user limit far above what the bench commits, so every
    // reservation becomes an order: the bench measures the commit path.
    let harness = runtime.block_on(Harness::new(
        env!("CARGO_BIN_EXE_flashsale-worker"),
        pool.clone(),
        1_000_000_000,
        1_000_000_000,
    ));
    let users = runtime.block_on(harness.users(BATCH));
    let sale_id = harness.sale.id;
    let batch = || -> Vec<ReservationToSettle> {
        users
            .iter()
            .map(|&user_id| ReservationToSettle {
                reservation_id: Uuid::now_v7(),
                user_id,
                quantity: flashsale::domain::Quantity::ONE,
                idempotency_key: format!("bench-{}", Uuid::now_v7().simple()),
                reserved_at: Utc::now(),
            })
            .collect()
    };

    let settled = runtime
        .block_on(harness.db.settle_batch(sale_id, &batch()))
        .expect("settle");
    assert_eq!(settled.orders_inserted, BATCH, "every reservation commits");

    let mut group = c.benchmark_group("group_commit");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(15));
    group.bench_function("settle_256_reservations", |b| {
        b.to_async(&runtime).iter_batched(
            batch,
            |reservations| {
                let db = &harness.db;
                async move {
                    let settled = db
                        .settle_batch(sale_id, &reservations)
                        .await
                        .expect("settle");
                    assert_eq!(settled.orders_inserted, BATCH);
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();

    runtime.block_on(async {
        pool.close().await;
        drop_database(&admin_url, &name).await;
    });
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
