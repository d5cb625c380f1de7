//! One reservation round trip against a real Redis: the Lua script that
//! decides a purchase (idempotency, state, window, limit, stock, writes),
//! accepted and refused (sold out, the common refusal of a stampede), and
//! the settlement's `confirm.lua` on a batch of accepted reservations.
//! Criterion times the round trip, which the loopback dominates; after each
//! bench the Redis time per script call (`INFO commandstats`, the script's
//! own execution) is printed, which is what the script's shape changes.
//! Needs the project's Redis: start it with `scripts/up` or
//! `scripts/test`, then `cargo bench --bench reservation`
//! (`FLASHSALE_BENCH_REDIS_URL` points elsewhere). Keys go under a fresh
//! prefix, deleted afterwards.

use std::{
    cell::Cell,
    time::{Duration, Instant},
};

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use flashsale::{
    config::{RedisSettings, Secret},
    store::redis::{RedisStore, ReserveOutcome, ReserveRequest, SaleMirror, UserRate},
};
use redis::aio::MultiplexedConnection;
use uuid::Uuid;

fn reservation_round_trip(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let url = std::env::var("FLASHSALE_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:56379".into());
    let prefix = format!("bench-{}", Uuid::now_v7().simple());
    let settings = RedisSettings {
        redis_url: Secret::new(url),
        redis_prefix: prefix.clone(),
    };
    // The connection's driver task is spawned on the runtime it is opened in.
    let redis = {
        let _runtime = runtime.enter();
        RedisStore::connect_lazy(&settings, Duration::from_secs(2)).expect("Redis connection")
    };
    let mut stats_connection = runtime.block_on(async {
        redis::Client::open(settings.redis_url.expose())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("Redis must be running (scripts/up or scripts/test)")
    });
    let arm = |allotted: i64| {
        let sale_id = Uuid::now_v7();
        let now = Utc::now().timestamp_millis();
        runtime
            .block_on(redis.arm(&SaleMirror {
                sale_id,
                allotted,
                confirmed: 0,
                state: "active",
                starts_at_ms: now - 60_000,
                ends_at_ms: now + 3_600_000,
                per_user_limit: 1,
                price: 4_999,
                version: 1,
                // A new sale: no buyers to restore (an empty staging hash).
                staged_buyers: Some(redis.sale_keys(sale_id).staging(Uuid::nil())),
            }))
            .expect("arm");
        sale_id
    };
    let open_sale = arm(1_000_000_000);
    let sold_out_sale = arm(0);
    // A new shopper per attempt: never rate-limited, never at the limit.
    let attempt = |sale_id: Uuid| ReserveRequest {
        sale_id,
        user_id: Uuid::now_v7(),
        quantity: flashsale::domain::Quantity::ONE,
        idempotency_key: "bench",
        reservation_id: Uuid::now_v7(),
        rate: UserRate {
            per_second: 10_000,
            burst: 10_000,
        },
    };

    let before = runtime.block_on(script_time(&mut stats_connection));
    c.bench_function("reserve_lua_round_trip_accepted", |b| {
        b.to_async(&runtime).iter(|| async {
            let outcome = redis.reserve(&attempt(open_sale)).await.expect("reserve");
            assert!(matches!(outcome, ReserveOutcome::Accepted { .. }));
        })
    });
    let after = runtime.block_on(script_time(&mut stats_connection));
    report_script_time("accepted", before, after);

    let before = after;
    c.bench_function("reserve_lua_round_trip_refused_sold_out", |b| {
        b.to_async(&runtime).iter(|| async {
            let outcome = redis
                .reserve(&attempt(sold_out_sale))
                .await
                .expect("reserve");
            assert!(matches!(outcome, ReserveOutcome::SoldOut { .. }));
        })
    });
    let after = runtime.block_on(script_time(&mut stats_connection));
    report_script_time("refused (sold out)", before, after);

    // Settlement's Redis step: a batch of accepted reservations confirmed
    // with their order ids, as the worker does after each commit. Only the
    // confirm call is timed; reserving the batch is the setup.
    let confirm_time = Cell::new((0u64, 0u64));
    let mut group = c.benchmark_group("confirm_lua");
    group.sample_size(20);
    group.bench_function(format!("batch_of_{CONFIRM_BATCH}"), |b| {
        b.to_async(&runtime).iter_custom(|iterations| {
            let redis = &redis;
            let mut stats_connection = stats_connection.clone();
            let confirm_time = &confirm_time;
            async move {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iterations {
                    let batch = reserve_batch(redis, open_sale, &attempt).await;
                    let before = script_time(&mut stats_connection).await;
                    let started = Instant::now();
                    let confirmed = redis.confirm(open_sale, &batch).await.expect("confirm");
                    elapsed += started.elapsed();
                    let after = script_time(&mut stats_connection).await;
                    assert_eq!(confirmed, CONFIRM_BATCH);
                    let (reservations, usec) = confirm_time.get();
                    confirm_time.set((
                        reservations + CONFIRM_BATCH as u64,
                        usec + after.1 - before.1,
                    ));
                }
                elapsed
            }
        })
    });
    group.finish();
    let (reservations, usec) = confirm_time.get();
    if reservations > 0 {
        println!(
            "confirm.lua: {:.2} µs of Redis time per reservation confirmed over {reservations} (INFO commandstats)",
            usec as f64 / reservations as f64
        );
    }

    // The cheapest command over the same connection, for comparison: what a
    // round trip costs before the script does anything.
    c.bench_function("get_round_trip", |b| {
        b.to_async(&runtime)
            .iter(|| async { redis.remaining(open_sale).await.expect("get") })
    });

    runtime.block_on(async {
        let client = redis::Client::open(settings.redis_url.expose()).expect("url");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut connection)
            .await
            .expect("keys");
        if !keys.is_empty() {
            let _: () = redis::cmd("UNLINK")
                .arg(keys)
                .query_async(&mut connection)
                .await
                .expect("unlink");
        }
    });
}

/// Reservations per `confirm.lua` call: a group commit's share of a
/// stampede (the outbox gathers tens to hundreds per job).
const CONFIRM_BATCH: usize = 256;

/// Reserves a batch on the sale, all at once over the one connection, and
/// gives each an order id to confirm it with.
async fn reserve_batch(
    redis: &RedisStore,
    sale_id: Uuid,
    attempt: &impl Fn(Uuid) -> ReserveRequest<'static>,
) -> Vec<(Uuid, Option<Uuid>)> {
    let requests: Vec<ReserveRequest> = (0..CONFIRM_BATCH).map(|_| attempt(sale_id)).collect();
    let outcomes = futures::future::join_all(requests.iter().map(|r| redis.reserve(r))).await;
    outcomes
        .into_iter()
        .map(|outcome| match outcome.expect("reserve") {
            ReserveOutcome::Accepted { reservation_id, .. } => {
                (reservation_id, Some(Uuid::now_v7()))
            }
            other => panic!("the open sale refused a reservation: {other:?}"),
        })
        .collect()
}

/// Script calls Redis has run so far and the microseconds they took
/// (`cmdstat_evalsha`: every script of this Redis, which the bench has to
/// itself while it runs).
async fn script_time(connection: &mut MultiplexedConnection) -> (u64, u64) {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(connection)
        .await
        .expect("INFO");
    let field = |line: &str, name: &str| -> u64 {
        line.split([':', ','])
            .find_map(|part| part.strip_prefix(name))
            .and_then(|value| value.parse().ok())
            .unwrap_or_default()
    };
    info.lines()
        .find(|line| line.starts_with("cmdstat_evalsha:"))
        .map(|line| (field(line, "calls="), field(line, "usec=")))
        .unwrap_or_default()
}

fn report_script_time(what: &str, before: (u64, u64), after: (u64, u64)) {
    let calls = after.0.saturating_sub(before.0);
    let usec = after.1.saturating_sub(before.1);
    if calls > 0 {
        println!(
            "reserve.lua {what}: {:.1} µs of Redis time per call over {calls} calls (INFO commandstats)",
            usec as f64 / calls as f64
        );
    }
}

criterion_group!(benches, reservation_round_trip);
criterion_main!(benches);
