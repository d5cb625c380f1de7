//! One reservation round trip against a real Redis: the Lua script that
//! decides a purchase (idempotency, state, window, limit, stock, writes).
//! Needs the project's Redis: start it with `scripts/up` or `scripts/test`,
//! then `cargo bench --bench reservation` (`FLASHSALE_BENCH_REDIS_URL`
//! points elsewhere). Keys go under a fresh prefix, deleted afterwards.

use std::time::Duration;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use flashsale::{
    config::{RedisSettings, Secret},
    store::redis::{RedisStore, ReserveOutcome, ReserveRequest, SaleMirror, UserRate},
};
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
    let sale_id = Uuid::now_v7();
    let now = Utc::now().timestamp_millis();
    runtime
        .block_on(redis.arm(&SaleMirror {
            sale_id,
            allotted: 1_000_000_000,
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
        .expect("Redis must be running (scripts/up or scripts/test)");

    c.bench_function("reserve_lua_round_trip_accepted", |b| {
        b.to_async(&runtime).iter(|| async {
            let user_id = Uuid::now_v7();
            let request = ReserveRequest {
                sale_id,
                user_id,
                quantity: flashsale::domain::Quantity::ONE,
                idempotency_key: "bench",
                reservation_id: Uuid::now_v7(),
                rate: UserRate {
                    per_second: 10_000,
                    burst: 10_000,
                },
            };
            let outcome = redis.reserve(&request).await.expect("reserve");
            assert!(matches!(outcome, ReserveOutcome::Accepted { .. }));
        })
    });

    // The cheapest command over the same connection, for comparison: what a
    // round trip costs before the script does anything.
    c.bench_function("get_round_trip", |b| {
        b.to_async(&runtime)
            .iter(|| async { redis.remaining(sale_id).await.expect("get") })
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
            let _: () = redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut connection)
                .await
                .expect("del");
        }
    });
}

criterion_group!(benches, reservation_round_trip);
criterion_main!(benches);
