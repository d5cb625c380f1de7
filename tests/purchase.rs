//! The purchase path: atomic reservation under real concurrency,
//! idempotency, limits, outcomes, dependency failures, status and orders.

mod common;

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use common::{Reply, Route, TestApp, proxy::FaultProxy, spawn_app, spawn_app_with};
use flashsale::{
    domain::{FailureReason, ReservationStatus},
    http::routes::purchase::PurchaseAccepted,
};
use futures::{StreamExt, stream};
use redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// In-flight requests at once in the races below.
const CONCURRENCY: usize = 500;

/// An app for the races: a debug build sharing two cores with the rest of
/// the suite is slow, and a 503 there would be load shedding, not the
/// outcome under test; so dependency calls get a generous bound.
async fn spawn_race_app(pg: PgPool) -> TestApp {
    spawn_app_with(pg, Route::default(), |settings| {
        settings.dependencies.dependency_timeout = Duration::from_secs(10);
    })
    .await
}

async fn race(app: &TestApp, attempts: Vec<(String, String, serde_json::Value)>) -> Vec<Reply> {
    stream::iter(attempts)
        .map(|(token, key, body)| async move { app.attempt(&token, &key, body).await })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

fn count_by_status(replies: &[Reply]) -> HashMap<u16, usize> {
    let mut counts = HashMap::new();
    for reply in replies {
        *counts.entry(reply.status.as_u16()).or_default() += 1;
    }
    counts
}

async fn zcard(app: &TestApp, key: String) -> i64 {
    app.redis.clone().zcard(key).await.unwrap()
}

#[sqlx::test]
async fn two_thousand_shoppers_racing_for_a_hundred_units_get_exactly_a_hundred(pg: PgPool) {
    let app = spawn_race_app(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 100, 1).await;
    let attempts = (0..2_000)
        .map(|_| {
            (
                app.shopper().1,
                Uuid::now_v7().to_string(),
                json!({ "sale_id": sale }),
            )
        })
        .collect();

    let replies = race(&app, attempts).await;

    let counts = count_by_status(&replies);
    if let Some(unavailable) = replies.iter().find(|reply| reply.status.is_server_error()) {
        panic!("{counts:?}; e.g. {}", unavailable.body);
    }
    assert_eq!(counts.get(&202), Some(&100), "{counts:?}");
    assert_eq!(counts.get(&410), Some(&1_900), "{counts:?}");
    for reply in replies
        .iter()
        .filter(|reply| reply.status == StatusCode::GONE)
    {
        reply.assert_error(StatusCode::GONE, "SOLD_OUT");
    }
    let reservations: HashSet<&str> = replies
        .iter()
        .filter_map(|reply| reply.body["reservation_id"].as_str())
        .collect();
    assert_eq!(reservations.len(), 100, "reservation ids must be distinct");
    assert_eq!(app.redis_stock(&sale).await, Some(0));
    assert_eq!(zcard(&app, app.sale_keys(&sale).pending).await, 100);
    // Every accepted purchase is queued once (in fewer jobs: the outbox
    // gathers them).
    app.await_queued(reservations.iter().map(|id| id.parse().unwrap()))
        .await;
}

#[sqlx::test]
async fn one_shopper_with_two_hundred_keys_at_limit_one_gets_one_reservation(pg: PgPool) {
    let app = spawn_race_app(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 50, 1).await;
    let (user, token) = app.shopper();
    let attempts = (0..200)
        .map(|_| {
            (
                token.clone(),
                Uuid::now_v7().to_string(),
                json!({ "sale_id": sale }),
            )
        })
        .collect();

    let replies = race(&app, attempts).await;

    let counts = count_by_status(&replies);
    assert_eq!(counts.get(&202), Some(&1), "{counts:?}");
    assert_eq!(counts.get(&409), Some(&199), "{counts:?}");
    for reply in replies
        .iter()
        .filter(|reply| reply.status == StatusCode::CONFLICT)
    {
        reply.assert_error(StatusCode::CONFLICT, "ALREADY_PURCHASED");
    }
    assert_eq!(app.redis_stock(&sale).await, Some(49));
    let held: Option<i64> = app
        .redis
        .clone()
        .hget(app.sale_keys(&sale).buyers, user.to_string())
        .await
        .unwrap();
    assert_eq!(held, Some(1));
}

#[sqlx::test]
async fn one_key_repeated_concurrently_always_answers_the_same_reservation(pg: PgPool) {
    let app = spawn_race_app(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 50, 1).await;
    let (_, token) = app.shopper();
    let attempts = (0..200)
        .map(|_| {
            (
                token.clone(),
                "the-one-key".to_string(),
                json!({ "sale_id": sale }),
            )
        })
        .collect();

    let replies = race(&app, attempts).await;

    assert!(
        replies
            .iter()
            .all(|reply| reply.status == StatusCode::ACCEPTED),
        "{:?}",
        count_by_status(&replies)
    );
    let reservations: HashSet<&str> = replies
        .iter()
        .map(|reply| reply.body["reservation_id"].as_str().unwrap())
        .collect();
    assert_eq!(reservations.len(), 1, "one key, one reservation");
    assert_eq!(app.redis_stock(&sale).await, Some(49), "stock taken once");
    assert_eq!(zcard(&app, app.sale_keys(&sale).pending).await, 1);
    app.await_queued(reservations.iter().map(|id| id.parse().unwrap()))
        .await;
}

#[sqlx::test]
async fn bad_quantities_keys_and_bodies_are_refused_and_reserve_nothing(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 10, 2).await;
    let (_, token) = app.shopper();
    let table = [
        (
            "above the per-user limit",
            "k1",
            json!({"sale_id": sale, "quantity": 3}),
            StatusCode::BAD_REQUEST,
            "QUANTITY_ABOVE_LIMIT",
        ),
        (
            "zero",
            "k2",
            json!({"sale_id": sale, "quantity": 0}),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
        (
            "negative",
            "k3",
            json!({"sale_id": sale, "quantity": -1}),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
        (
            "huge",
            "k4",
            json!({"sale_id": sale, "quantity": 1_000_000_000_000_i64}),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
        (
            "fractional",
            "k5",
            json!({"sale_id": sale, "quantity": 1.5}),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
        (
            "a string",
            "k6",
            json!({"sale_id": sale, "quantity": "two"}),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
        (
            "unknown field",
            "k7",
            json!({"sale_id": sale, "qty": 1}),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
        (
            "sale id not a uuid",
            "k8",
            json!({"sale_id": "s-1"}),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
        (
            "key with a space",
            "bad key",
            json!({"sale_id": sale}),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
        (
            "key too long",
            &"k".repeat(129),
            json!({"sale_id": sale}),
            StatusCode::BAD_REQUEST,
            "VALIDATION_FAILED",
        ),
    ];
    for (case, key, body, status, code) in table {
        let reply = app.attempt(&token, key, body).await;
        assert_eq!(reply.status, status, "{case}: {}", reply.body);
        reply.assert_error(status, code);
        if matches!(case, "zero" | "negative" | "huge") {
            // What the shop page shows the shopper, word for word.
            assert_eq!(
                reply.body["error"]["message"], "quantity: must be a whole number from 1 to 1000",
                "{case}"
            );
        }
    }
    let no_key = app
        .post(
            "/api/purchase/attempt",
            Some(&token),
            json!({"sale_id": sale}),
        )
        .await;
    no_key.assert_error(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let anonymous = app
        .client
        .post(format!("{}/api/purchase/attempt", app.base))
        .header("idempotency-key", "k9")
        .json(&json!({"sale_id": sale}))
        .send()
        .await
        .unwrap();
    TestApp::read(anonymous)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");

    assert_eq!(app.redis_stock(&sale).await, Some(10));
    assert_eq!(zcard(&app, app.sale_keys(&sale).pending).await, 0);
    assert_eq!(app.queued_jobs().await, 0);
}

#[sqlx::test]
async fn the_limit_counts_units_across_purchases(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 10, 2).await;
    let (_, token) = app.shopper();
    let steps = [
        (1, StatusCode::ACCEPTED),
        (2, StatusCode::CONFLICT),
        (1, StatusCode::ACCEPTED),
        (1, StatusCode::CONFLICT),
    ];
    for (step, (quantity, status)) in steps.into_iter().enumerate() {
        let reply = app
            .attempt(
                &token,
                &format!("step-{step}"),
                json!({"sale_id": sale, "quantity": quantity}),
            )
            .await;
        assert_eq!(reply.status, status, "step {step}: {}", reply.body);
    }
    assert_eq!(app.redis_stock(&sale).await, Some(8));
}

#[sqlx::test]
async fn the_same_key_with_a_different_body_is_refused_with_422(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 10, 2).await;
    let (_, token) = app.shopper();
    assert_eq!(
        app.attempt(&token, "key-1", json!({"sale_id": sale, "quantity": 1}))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    app.attempt(&token, "key-1", json!({"sale_id": sale, "quantity": 2}))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.redis_stock(&sale).await, Some(9));
}

#[sqlx::test]
async fn sales_that_are_not_selling_refuse_with_sale_not_active_and_unknown_ones_with_404(
    pg: PgPool,
) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let (_, token) = app.shopper();

    let mut closed = Vec::new();
    for (case, action) in [
        ("paused", "pause"),
        ("ended", "end"),
        ("cancelled", "cancel"),
    ] {
        let sale = app.open_sale(&admin, 10, 1).await;
        let reply = app
            .patch(
                &format!("/api/admin/flash-sales/{sale}"),
                Some(&admin),
                json!({ "action": action }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{action}: {}", reply.body);
        closed.push((case, sale));
    }
    let product = app.create_product(&admin, 10).await;
    let mut later = TestApp::sale_body(product, 10);
    let now = chrono::Utc::now();
    later["starts_at"] = json!(now + chrono::Duration::hours(1));
    later["ends_at"] = json!(now + chrono::Duration::hours(2));
    let not_started = app
        .post("/api/admin/flash-sales", Some(&admin), later)
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();

    closed.push(("not started", not_started));
    for (case, sale) in &closed {
        let reply = app
            .attempt(
                &token,
                &format!("key-{case}").replace(' ', "-"),
                json!({"sale_id": sale}),
            )
            .await;
        reply.assert_error(StatusCode::CONFLICT, "SALE_NOT_ACTIVE");
        assert_eq!(app.redis_stock(sale).await, Some(10), "{case}: stock taken");
    }
    app.attempt(&token, "key-unknown", json!({"sale_id": Uuid::now_v7()}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "SALE_NOT_FOUND");
}

#[sqlx::test]
async fn without_a_sale_id_the_current_sale_is_bought(pg: PgPool) {
    let app = spawn_app(pg).await;
    let (_, token) = app.shopper();
    app.attempt(&token, "early", json!({}))
        .await
        .assert_error(StatusCode::NOT_FOUND, "NO_CURRENT_SALE");
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 5, 1).await;
    let reply = app.attempt(&token, "now", json!({})).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(reply.body["sale_id"], sale.as_str());
    assert_eq!(reply.body["status"], "pending");
    let status_url = reply.body["status_url"].as_str().unwrap();
    let status = app.get(status_url, Some(&token)).await;
    assert_eq!(status.body["status"], "pending", "{}", status.body);
}

/// After Redis forgot something, the next purchase of a five-unit sale is
/// accepted and takes one unit, as if nothing had happened.
async fn assert_the_next_purchase_takes_a_unit(app: &TestApp, sale: &str) {
    let (_, token) = app.shopper();
    let reply = app
        .attempt(&token, "after-forgetting", json!({"sale_id": sale}))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(app.redis_stock(sale).await, Some(4));
}

/// A restarted or flushed Redis has forgotten the scripts: the purchase
/// (which calls its script by hash) loads it again and is decided. The
/// flush reaches the other tests sharing this Redis too; every script call
/// of the engine recovers the same way, so only one caught between its own
/// reload and its retry (one round trip, once per run) could notice.
#[sqlx::test]
async fn a_purchase_after_redis_forgot_its_scripts_is_decided(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 5, 1).await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    assert_the_next_purchase_takes_a_unit(&app, &sale).await;
}

#[sqlx::test]
async fn a_sale_redis_forgot_is_rearmed_from_postgres_on_the_next_purchase(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 5, 1).await;
    app.wipe_redis().await;
    assert_the_next_purchase_takes_a_unit(&app, &sale).await;
}

/// Purchases while Redis misbehaves through `fail`: 503 with Retry-After
/// within a bound (never a hang), then 202 again once Redis is back,
/// without restarting anything.
async fn assert_purchases_survive(pg: PgPool, fail: fn(&FaultProxy)) {
    let (app, redis_proxy) =
        common::spawn_app_behind_redis_proxy(pg, common::RedisConnection::Store).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 5, 1).await;
    let (_, token) = app.shopper();

    fail(&redis_proxy);
    let started = Instant::now();
    let reply = app
        .attempt(&token, "while-down", json!({"sale_id": sale}))
        .await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    assert!(reply.headers.get("retry-after").is_some());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        started.elapsed()
    );

    redis_proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = app
            .attempt(&token, "after-recovery", json!({"sale_id": sale}))
            .await;
        if reply.status == StatusCode::ACCEPTED {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {}", reply.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.redis_stock(&sale).await, Some(4));
}

#[sqlx::test]
async fn with_redis_stopped_purchases_answer_503_quickly_and_recover_by_themselves(pg: PgPool) {
    assert_purchases_survive(pg, FaultProxy::cut).await;
}

#[sqlx::test]
async fn with_redis_paused_purchases_answer_503_quickly_and_recover_by_themselves(pg: PgPool) {
    assert_purchases_survive(pg, FaultProxy::stall).await;
}

#[sqlx::test]
async fn a_failed_queue_push_still_accepts_and_leaves_the_reservation_pending_once(pg: PgPool) {
    let (app, queue_proxy) =
        common::spawn_app_behind_redis_proxy(pg, common::RedisConnection::Queue).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 5, 1).await;
    let (_, token) = app.shopper();

    queue_proxy.cut();
    let first = app
        .attempt(&token, "push-fails", json!({"sale_id": sale}))
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let reservation = first.body["reservation_id"].as_str().unwrap();
    let replay = app
        .attempt(&token, "push-fails", json!({"sale_id": sale}))
        .await;
    assert_eq!(
        replay.body["reservation_id"], reservation,
        "a retry must not reserve again"
    );

    let pending: Vec<String> = app
        .redis
        .clone()
        .zrange(app.sale_keys(&sale).pending, 0, -1)
        .await
        .unwrap();
    assert_eq!(
        pending,
        vec![reservation.to_string()],
        "left pending for the reconciler"
    );
    assert_eq!(app.redis_stock(&sale).await, Some(4), "taken once");
    // The outbox pushes after the answer: past its gather and the push's
    // timeout, with the queue reachable again, nothing pushes it later.
    tokio::time::sleep(common::FAULT_TIMEOUT + Duration::from_secs(1)).await;
    queue_proxy.restore();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.queued_jobs().await, 0, "the queue was unreachable");
}

/// The worker writes the order id into the reservation's Redis record, so
/// the status of a confirmed purchase (what a shop page polls) needs no
/// PostgreSQL read: it answers with PostgreSQL unreachable.
#[sqlx::test]
async fn a_confirmed_purchase_names_its_order_without_asking_postgresql(pg: PgPool) {
    let (app, pg_proxy) = common::spawn_app_behind_postgres_proxy(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 5, 1).await;
    let (_, token) = app.shopper();
    let reply = app
        .attempt(&token, "order-in-redis", json!({"sale_id": sale}))
        .await;
    let reservation = reply.json::<PurchaseAccepted>().reservation_id;
    // What the worker does once PostgreSQL committed the order.
    let order = Uuid::now_v7();
    app.redis_store()
        .confirm(sale.parse().unwrap(), &[(reservation, Some(order))])
        .await
        .unwrap();

    pg_proxy.cut();
    let status = app
        .get(
            &format!("/api/purchase/status?sale_id={sale}&reservation_id={reservation}"),
            Some(&token),
        )
        .await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.body);
    assert_eq!(status.body["status"], "confirmed");
    assert_eq!(status.body["order_id"], order.to_string());
}

#[sqlx::test]
async fn purchase_status_is_the_owners_alone_and_shows_failures_with_a_reason(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 5, 1).await;
    let (owner, token) = app.shopper();
    let (_, stranger) = app.shopper();
    let reply = app.attempt(&token, "mine", json!({"sale_id": sale})).await;
    let reservation = reply.json::<PurchaseAccepted>().reservation_id;

    for query in [
        format!("reservation_id={reservation}"),
        format!("sale_id={sale}"),
        format!("sale_id={sale}&reservation_id={reservation}"),
    ] {
        let status = app
            .get(&format!("/api/purchase/status?{query}"), Some(&token))
            .await;
        assert_eq!(status.status, StatusCode::OK, "{query}: {}", status.body);
        assert_eq!(status.body["status"], "pending");
        assert_eq!(status.body["quantity"], 1);
    }
    for query in [
        format!("reservation_id={reservation}"),
        format!("sale_id={sale}"),
    ] {
        app.get(&format!("/api/purchase/status?{query}"), Some(&stranger))
            .await
            .assert_error(StatusCode::NOT_FOUND, "PURCHASE_NOT_FOUND");
    }
    app.get("/api/purchase/status", Some(&token))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");

    // What a worker does with a purchase that can never complete.
    let store = app.redis_store();
    let sale_id: Uuid = sale.parse().unwrap();
    store
        .release(
            sale_id,
            reservation,
            ReservationStatus::Failed,
            FailureReason::SaleCancelled,
            flashsale::store::redis::Restock::all(1),
        )
        .await
        .unwrap();
    let failed = app
        .get(
            &format!("/api/purchase/status?reservation_id={reservation}"),
            Some(&token),
        )
        .await;
    assert_eq!(failed.body["status"], "failed", "{}", failed.body);
    assert_eq!(
        failed.body["reason"],
        FailureReason::SaleCancelled.message()
    );
    assert_eq!(failed.body["reason_code"], "sale_cancelled");
    assert_eq!(
        app.redis_stock(&sale).await,
        Some(5),
        "released stock is back"
    );
    assert_eq!(store.units_held(sale_id, owner).await.unwrap(), 0);
    let again = app
        .attempt(&token, "second-try", json!({"sale_id": sale}))
        .await;
    assert_eq!(
        again.status,
        StatusCode::ACCEPTED,
        "a released shopper may buy again: {}",
        again.body
    );
}

#[sqlx::test]
async fn a_users_orders_are_paginated_cached_and_shown_only_to_them_or_an_admin(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 10, 5).await;
    let token = app.login("ann@example.com").await;
    let user_id = app.tokens.verify(&token).unwrap().sub;
    app.insert_orders(user_id, &sale, 3).await;
    let path = format!("/api/purchase/user/{user_id}?page=1&per_page=2");

    let first = app.get(&path, Some(&token)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["total"], 3);
    assert_eq!(first.body["orders"].as_array().unwrap().len(), 2);
    let second = app
        .get(
            &format!("/api/purchase/user/{user_id}?page=2&per_page=2"),
            Some(&token),
        )
        .await;
    assert_eq!(second.body["orders"].as_array().unwrap().len(), 1);

    // An order PostgreSQL gains behind the cache's back (orders are never
    // deleted: the order is the record of its reservation).
    sqlx::query(
        "insert into orders (id, reservation_id, flash_sale_id, user_id, quantity, unit_price, idempotency_key)
         values (gen_random_uuid(), gen_random_uuid(), $1::uuid, $2, 1, 4999, 'behind-the-cache')",
    )
    .bind(&sale)
    .bind(user_id)
    .execute(&app.pg)
    .await
    .unwrap();
    let cached = app.get(&path, Some(&token)).await;
    assert_eq!(cached.body, first.body, "served from the cache");
    app.redis_store().invalidate_orders(user_id).await.unwrap();
    let fresh = app.get(&path, Some(&token)).await;
    assert_eq!(
        fresh.body["total"], 4,
        "after invalidation PostgreSQL answers"
    );

    let (_, stranger) = app.shopper();
    app.get(&path, Some(&stranger))
        .await
        .assert_error(StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(app.get(&path, Some(&admin)).await.status, StatusCode::OK);
    app.get(
        &format!("/api/purchase/user/{user_id}?per_page=1000"),
        Some(&token),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
}

#[sqlx::test]
async fn a_shopper_over_the_per_user_rate_gets_429_with_retry_after(pg: PgPool) {
    let app = spawn_app_with(pg, Route::default(), |settings| {
        settings.purchase.user_rate_per_sec = 1.try_into().unwrap();
        settings.purchase.user_burst = 2.try_into().unwrap();
    })
    .await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 10, 1).await;
    let (_, token) = app.shopper();
    let (_, other) = app.shopper();
    let mut statuses = Vec::new();
    for attempt in 0..3 {
        statuses.push(
            app.attempt(&token, &format!("r{attempt}"), json!({"sale_id": sale}))
                .await,
        );
    }
    assert_eq!(statuses[0].status, StatusCode::ACCEPTED);
    assert_eq!(
        statuses[1].status,
        StatusCode::CONFLICT,
        "limit 1: already purchased"
    );
    statuses[2].assert_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    let retry_after: u64 = statuses[2].headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    let unaffected = app
        .attempt(&other, "other-user", json!({"sale_id": sale}))
        .await;
    assert_eq!(
        unaffected.status,
        StatusCode::ACCEPTED,
        "the limit is per user"
    );
}

#[sqlx::test]
async fn stats_count_every_outcome(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 2, 1).await;
    let (_, first) = app.shopper();
    let (_, second) = app.shopper();
    let (_, third) = app.shopper();
    let mut accepted = vec![app.attempt(&first, "a", json!({"sale_id": sale})).await];
    app.attempt(&first, "a", json!({"sale_id": sale})).await; // replay
    app.attempt(&first, "b", json!({"sale_id": sale})).await; // already purchased
    accepted.push(app.attempt(&second, "c", json!({"sale_id": sale})).await);
    app.attempt(&third, "d", json!({"sale_id": sale})).await; // sold out
    app.await_queued(
        accepted
            .iter()
            .map(|reply| reply.json::<PurchaseAccepted>().reservation_id),
    )
    .await;

    for path in [
        format!("/api/admin/flash-sales/{sale}/stats"),
        format!("/api/flash-sale/stats?sale_id={sale}"),
    ] {
        let stats = app.get(&path, Some(&admin)).await;
        assert_eq!(stats.status, StatusCode::OK, "{path}: {}", stats.body);
        let body = &stats.body;
        assert_eq!(
            (
                body["attempts"].as_i64(),
                body["accepted"].as_i64(),
                body["replayed"].as_i64()
            ),
            (Some(5), Some(2), Some(1)),
            "{body}"
        );
        assert_eq!(body["rejected"]["already_purchased"], 1);
        assert_eq!(body["rejected"]["sold_out"], 1);
        assert_eq!(
            (
                body["pending"].as_i64(),
                body["remaining"].as_i64(),
                body["allotted"].as_i64()
            ),
            (Some(2), Some(0), Some(2))
        );
        // No worker runs here: both purchases wait, in one job or two (the
        // outbox gathers a node's purchases for 2 ms); nothing failed or
        // drifted yet.
        let waiting = body["queue"]["waiting"].as_i64().unwrap();
        assert!((1..=2).contains(&waiting), "{body}");
        assert_eq!(
            (body["failed"].as_i64(), body["dead_lettered"].as_i64()),
            (Some(0), Some(0))
        );
        assert!(
            body["drain_lag_ms"].as_i64().is_some_and(|lag| lag >= 0),
            "{body}"
        );
        assert!(body["drift"].is_null(), "no reconciler has run: {body}");
    }
    app.get(
        &format!("/api/admin/flash-sales/{sale}/stats"),
        Some(&first),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
}

#[sqlx::test]
async fn the_status_page_follows_stock_and_tells_a_shopper_whether_they_may_buy(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 3, 1).await;
    let (_, token) = app.shopper();
    let before = app
        .get(
            &format!("/api/flash-sale/status?sale_id={sale}"),
            Some(&token),
        )
        .await;
    assert_eq!(before.body["you"]["can_purchase"], true, "{}", before.body);
    assert!(app.get("/api/flash-sale/status", None).await.body["you"].is_null());

    app.attempt(&token, "buy", json!({"sale_id": sale})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = app
            .get(
                &format!("/api/flash-sale/status?sale_id={sale}"),
                Some(&token),
            )
            .await;
        if status.body["remaining"] == 2 {
            assert_eq!(status.body["you"]["units_held"], 1);
            assert_eq!(status.body["you"]["can_purchase"], false);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the snapshot never showed the sale: {}",
            status.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.get("/api/flash-sale/status", Some("not-a-token"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}

#[sqlx::test]
async fn pushing_the_same_reservation_twice_queues_one_job(pg: PgPool) {
    let app = spawn_app(pg).await;
    let queue = flashsale::jobs::PurchaseQueue::connect_lazy(
        &common::redis_url(),
        &app.prefix,
        Duration::from_secs(60),
        common::DEPENDENCY_TIMEOUT,
    )
    .unwrap();
    let job = flashsale::jobs::PurchaseJob {
        reservation_id: Uuid::now_v7(),
        sale_id: Uuid::now_v7(),
        user_id: Uuid::now_v7(),
        quantity: flashsale::domain::Quantity::ONE,
        idempotency_key: "k".into(),
        reserved_at_ms: 0,
    };
    let single = flashsale::jobs::SettlementJob::single;
    queue.enqueue(single(job.clone())).await.unwrap();
    queue.enqueue(single(job.clone())).await.unwrap();
    assert_eq!(
        app.queued_jobs().await,
        1,
        "the second push must be a no-op"
    );
    let other = flashsale::jobs::PurchaseJob {
        reservation_id: Uuid::now_v7(),
        ..job
    };
    queue.enqueue(single(other)).await.unwrap();
    assert_eq!(app.queued_jobs().await, 2);
}

#[sqlx::test]
async fn a_page_read_before_a_commit_is_never_cached_after_it(pg: PgPool) {
    use flashsale::store::redis::CachedOrders;
    let app = spawn_app(pg).await;
    let store = app.redis_store();
    let user_id = Uuid::now_v7();
    let page = "1:20";
    let ttl_secs = 30;
    let miss = async || match store.cached_orders(user_id, page, ttl_secs).await.unwrap() {
        CachedOrders::Miss { reading } => reading,
        CachedOrders::Hit(json) => panic!("nothing fresh was cached, found {json}"),
    };
    // A node misses the cache and reads the page from PostgreSQL...
    let before_commit = miss().await;
    // ...the worker commits the user's order and drops their cache...
    store.invalidate_orders(user_id).await.unwrap();
    // ...another node misses too, after the commit...
    let after_commit = miss().await;
    // ...and the first node, late, stores what it read before the commit.
    let cached = store
        .cache_orders(user_id, page, r#"{"orders":[]}"#, &before_commit)
        .await
        .unwrap();
    assert!(!cached, "a page older than the commit was cached");
    assert!(matches!(
        store.cached_orders(user_id, page, ttl_secs).await.unwrap(),
        CachedOrders::Miss { .. }
    ));

    // A page read after the commit is cached as before.
    let reading = miss().await;
    assert_ne!(reading, after_commit, "each miss reads under its own mark");
    assert!(
        store
            .cache_orders(user_id, page, r#"{"orders":[1]}"#, &reading)
            .await
            .unwrap()
    );
    assert_eq!(
        store.cached_orders(user_id, page, ttl_secs).await.unwrap(),
        CachedOrders::Hit(r#"{"orders":[1]}"#.into())
    );
}

/// A worker drops the cached pages of every buyer of a batch in one call:
/// each buyer's cached page and each read in flight go, whoever else is in
/// the batch (buyers who never read their orders included).
#[sqlx::test]
async fn a_batch_drops_the_cached_pages_of_every_buyer_in_it(pg: PgPool) {
    use flashsale::store::redis::CachedOrders;
    let app = spawn_app(pg).await;
    let store = app.redis_store();
    let page = "1:20";
    let (cached, in_flight, never_read, outside) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let miss = async |user_id| match store.cached_orders(user_id, page, 30).await.unwrap() {
        CachedOrders::Miss { reading } => reading,
        CachedOrders::Hit(json) => panic!("nothing was cached yet, found {json}"),
    };
    for user_id in [cached, outside] {
        let reading = miss(user_id).await;
        assert!(
            store
                .cache_orders(user_id, page, "[]", &reading)
                .await
                .unwrap()
        );
    }
    let late_reading = miss(in_flight).await;

    store
        .invalidate_orders_of(&[cached, in_flight, never_read])
        .await
        .unwrap();

    assert!(matches!(
        store.cached_orders(cached, page, 30).await.unwrap(),
        CachedOrders::Miss { .. }
    ));
    assert!(
        !store
            .cache_orders(in_flight, page, "[]", &late_reading)
            .await
            .unwrap(),
        "a read from before the batch was cached after it"
    );
    assert_eq!(
        store.cached_orders(outside, page, 30).await.unwrap(),
        CachedOrders::Hit("[]".into()),
        "a user outside the batch lost their page"
    );
}

/// The idempotency key is written into the Redis record (`|`-separated)
/// and names a field of the sale's `shoppers` hash beside `<user>|latest`:
/// a key that could reach into either encoding is refused before Redis,
/// and takes nothing.
#[sqlx::test]
async fn keys_that_could_forge_a_record_or_a_shopper_field_are_refused(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 5, 1).await;
    let (_, token) = app.shopper();
    for key in ["a|b", "|latest", "k|1|confirmed", "x y", ""] {
        let reply = app.attempt(&token, key, json!({"sale_id": sale})).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{key:?}: {}",
            reply.body
        );
    }
    assert_eq!(app.redis_stock(&sale).await, Some(5), "nothing taken");
    assert_eq!(zcard(&app, app.sale_keys(&sale).pending).await, 0);
}
