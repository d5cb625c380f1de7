//! Sale administration and arming: PostgreSQL is the truth, Redis mirrors it.

mod common;

use std::time::Duration;

use common::spawn_app;
use flashsale::{
    domain::SaleState,
    http::routes::{purchase::PurchaseAccepted, sale_status::SaleStatusResponse},
};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test]
async fn a_created_sale_is_armed_with_its_allotted_stock(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, 500).await;
    let sale = app.create_sale(&admin, product, 120).await;
    let id = &sale.id.to_string();

    assert_eq!(sale.state, SaleState::Active);
    assert_eq!(sale.stock, 120);
    assert_eq!(sale.remaining, Some(120));
    assert!(sale.armed);
    assert_eq!(app.redis_stock(id).await, Some(120));
    assert_eq!(app.redis_meta(id, "state").await.as_deref(), Some("active"));
    assert_eq!(
        app.redis_meta(id, "per_user_limit").await.as_deref(),
        Some("2")
    );
    assert_eq!(app.redis_meta(id, "allotted").await.as_deref(), Some("120"));

    let read = app
        .get(&format!("/api/admin/flash-sales/{id}"), Some(&admin))
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["remaining"], 120);
}

#[sqlx::test]
async fn arming_again_leaves_reserved_stock_alone(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, 100).await;
    let sale = app.create_sale(&admin, product, 50).await;
    let id = &sale.id.to_string();
    // Seven units taken by reservations since arming.
    let _: i64 = redis::cmd("HINCRBY")
        .arg(app.sale_keys(id).meta)
        .arg("stock")
        .arg(-7)
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();

    for _ in 0..2 {
        let ready = app.get("/api/health/ready", None).await;
        assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
        let sale = app
            .state
            .db
            .find_sale(id.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        let armed = flashsale::store::arming::arm_sale(&app.state.db, &app.redis_store(), &sale)
            .await
            .unwrap();
        assert!(!armed.rebuilt);
    }
    assert_eq!(
        app.redis_stock(id).await,
        Some(43),
        "re-arming reset the stock counter"
    );
}

#[sqlx::test]
async fn arming_after_redis_lost_its_data_rebuilds_from_postgres_without_inventing_stock(
    pg: PgPool,
) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, 100).await;
    let sale = app.create_sale(&admin, product, 60).await;
    let id = &sale.id.to_string();
    // 25 units already committed as orders (what the worker records).
    sqlx::query("update flash_sales set confirmed_quantity = 25 where id = $1::uuid")
        .bind(id)
        .execute(&app.pg)
        .await
        .unwrap();

    app.wipe_redis().await;
    assert_eq!(app.redis_stock(id).await, None);
    // Readiness answers at once and arms the missing sale in the background.
    let ready = app.get("/api/health/ready", None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    common::eventually(
        Duration::from_secs(5),
        "the sale is armed again",
        || async { app.redis_stock(id).await.is_some() },
    )
    .await;
    assert_eq!(
        app.redis_stock(id).await,
        Some(35),
        "allotted 60 - confirmed 25"
    );
    assert_eq!(app.redis_meta(id, "state").await.as_deref(), Some("active"));
}

#[sqlx::test]
async fn pause_resume_cancel_and_end_reach_redis(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, 100).await;
    let sale = app.create_sale(&admin, product, 10).await;
    let id = &sale.id.to_string();
    let path = format!("/api/admin/flash-sales/{id}");

    for (action, state) in [
        ("pause", "paused"),
        ("pause", "paused"),
        ("resume", "active"),
        ("end", "ended"),
    ] {
        let reply = app
            .patch(&path, Some(&admin), json!({"action": action}))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{action}: {}", reply.body);
        assert_eq!(reply.body["state"], state, "{action}");
        assert_eq!(
            app.redis_meta(id, "state").await.as_deref(),
            Some(state),
            "{action}"
        );
    }
    app.patch(&path, Some(&admin), json!({"action": "cancel"}))
        .await
        .assert_error(StatusCode::CONFLICT, "INVALID_STATE_TRANSITION");
}

#[sqlx::test]
async fn added_stock_reaches_redis_exactly_once_even_when_redis_missed_it(pg: PgPool) {
    let (app, redis_proxy) =
        common::spawn_app_behind_redis_proxy(pg, common::RedisConnection::Store).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, 100).await;
    let sale = app.create_sale(&admin, product, 10).await;
    let id = &sale.id.to_string();
    let path = format!("/api/admin/flash-sales/{id}");

    let added = app
        .patch(&path, Some(&admin), json!({"add_stock": 5}))
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    assert_eq!(
        (
            added.body["stock"].as_i64(),
            added.body["remaining"].as_i64()
        ),
        (Some(15), Some(15))
    );

    redis_proxy.cut();
    let missed = app
        .patch(&path, Some(&admin), json!({"add_stock": 3}))
        .await;
    assert_eq!(missed.status, StatusCode::OK, "{}", missed.body);
    assert_eq!(missed.body["armed"], false);
    assert_eq!(missed.body["stock"], 18);
    assert_eq!(
        app.redis_stock(id).await,
        Some(15),
        "Redis was down; it cannot have the 3 yet"
    );

    redis_proxy.restore();
    app.wait_for_status("/api/health/ready", StatusCode::OK, Duration::from_secs(15))
        .await;
    // The probe armed the open sales in the background.
    common::eventually(
        Duration::from_secs(5),
        "the missed units arrive",
        || async { app.redis_stock(id).await == Some(18) },
    )
    .await;
    app.get("/api/health/ready", None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        app.redis_stock(id).await,
        Some(18),
        "the missed 3 units arrive once, not twice"
    );
}

#[sqlx::test]
async fn concurrent_sales_never_allot_more_than_the_product_has(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, 100).await;

    let attempts = (0..10).map(|_| {
        app.post(
            "/api/admin/flash-sales",
            Some(&admin),
            common::TestApp::sale_body(product, 15),
        )
    });
    let replies = futures::future::join_all(attempts).await;
    let created = replies
        .iter()
        .filter(|reply| reply.status == StatusCode::CREATED)
        .count();
    let refused = replies
        .iter()
        .filter(|reply| reply.body["error"]["code"] == "INSUFFICIENT_STOCK")
        .count();
    assert_eq!((created, refused), (6, 4), "100 units fit six sales of 15");

    let allotted: i64 =
        sqlx::query_scalar("select sum(allotted_quantity)::bigint from flash_sales")
            .fetch_one(&app.pg)
            .await
            .unwrap();
    assert_eq!(allotted, 90);
}

#[sqlx::test]
async fn a_cancelled_sale_gives_its_unsold_allotment_back(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, 10).await;
    let sale = app.create_sale(&admin, product, 10).await;
    let path = format!("/api/admin/flash-sales/{}", sale.id);
    let refused = app
        .post(
            "/api/admin/flash-sales",
            Some(&admin),
            common::TestApp::sale_body(product, 1),
        )
        .await;
    refused.assert_error(StatusCode::CONFLICT, "INSUFFICIENT_STOCK");

    assert_eq!(
        app.patch(&path, Some(&admin), json!({"action": "cancel"}))
            .await
            .status,
        StatusCode::OK
    );
    app.create_sale(&admin, product, 10).await;
}

#[sqlx::test]
async fn the_public_status_shows_the_current_sale_with_remaining_stock(pg: PgPool) {
    let app = spawn_app(pg).await;
    app.get("/api/flash-sale/status", None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "NO_CURRENT_SALE");

    let admin = app.admin_token().await;
    let product = app.create_product(&admin, 100).await;
    let sale = app.create_sale(&admin, product, 30).await;
    let id = &sale.id.to_string();
    // The node's snapshot is at most one refresh behind the stores.
    common::eventually(
        Duration::from_secs(2),
        "the status shows the armed stock",
        || async { app.get("/api/flash-sale/status", None).await.body["remaining"] == 30 },
    )
    .await;
    let current = app.get("/api/flash-sale/status", None).await;
    assert_eq!(current.status, StatusCode::OK, "{}", current.body);
    let current: SaleStatusResponse = current.json();
    assert_eq!(current.sale_id, sale.id);
    assert_eq!(current.state, SaleState::Active);
    assert_eq!(current.remaining, Some(30));
    assert_eq!(current.price.minor(), 4_999);
    assert_eq!(current.product_name, "Sneaker", "it names what is for sale");
    assert_eq!(current.hold_seconds, None);

    let by_id: SaleStatusResponse = app
        .get(&format!("/api/flash-sale/status?sale_id={id}"), None)
        .await
        .json();
    assert_eq!(by_id.sale_id, sale.id);
    app.get(
        &format!("/api/flash-sale/status?sale_id={}", uuid::Uuid::now_v7()),
        None,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "SALE_NOT_FOUND");
}

#[sqlx::test]
async fn a_sale_that_starts_later_is_scheduled(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, 100).await;
    let now = chrono::Utc::now();
    let mut body = common::TestApp::sale_body(product, 5);
    body["starts_at"] = json!(now + chrono::Duration::hours(1));
    body["ends_at"] = json!(now + chrono::Duration::hours(2));
    let reply = app.post("/api/admin/flash-sales", Some(&admin), body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["state"], "scheduled");
    let status = app.get("/api/flash-sale/status", None).await;
    assert_eq!(status.body["state"], "scheduled");
}

/// A reader that saw the sale before an admin's cancel or end (the
/// reconciler, a readiness probe, a purchase re-arming a missing sale) and
/// arms it afterwards must not bring back the state it read: the sale's
/// version only moves forward in Redis.
#[sqlx::test]
async fn a_stale_arm_never_undoes_a_cancel_or_an_end(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let db = flashsale::store::postgres::Db::new(app.pg.clone(), common::DEPENDENCY_TIMEOUT);
    for (action, state) in [("cancel", "cancelled"), ("end", "ended")] {
        let sale = app.open_sale(&admin, 10, 1).await;
        let read_before = db.find_sale(sale.parse().unwrap()).await.unwrap().unwrap();
        let changed = app
            .patch(
                &format!("/api/admin/flash-sales/{sale}"),
                Some(&admin),
                json!({ "action": action }),
            )
            .await;
        assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);

        let armed = flashsale::store::arming::arm_sale(&db, &app.redis_store(), &read_before)
            .await
            .unwrap();
        assert!(
            armed.superseded,
            "{action}: the stale arm was not recognised"
        );
        assert_eq!(
            app.redis_meta(&sale, "state").await.as_deref(),
            Some(state),
            "{action} was undone by an arm from before it"
        );
        let (_, shopper) = app.shopper();
        app.attempt(
            &shopper,
            &format!("after-{action}"),
            json!({ "sale_id": sale }),
        )
        .await
        .assert_error(StatusCode::CONFLICT, "SALE_NOT_ACTIVE");
    }
}

#[sqlx::test]
async fn purchases_that_find_their_sale_missing_arm_it_once_per_node(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 10, 1).await;
    let sale_id: Uuid = sale.parse().unwrap();
    app.wipe_redis().await;

    let loads = std::sync::atomic::AtomicUsize::new(0);
    let redis = app.redis_store();
    let flight = flashsale::store::arming::SingleFlight::default();
    let attempts = (0..50).map(|_| {
        flight.arm_if_missing(&app.state.db, &redis, sale_id, || async {
            loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // A slow PostgreSQL read keeps the others waiting on it.
            tokio::time::sleep(Duration::from_millis(100)).await;
            app.state
                .db
                .find_sale(sale_id)
                .await
                .map(|sale| sale.expect("the sale exists"))
        })
    });
    for armed in futures::future::join_all(attempts).await {
        armed.unwrap();
    }
    assert_eq!(
        loads.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "each miss read PostgreSQL and armed on its own"
    );
    assert_eq!(app.redis_stock(&sale).await, Some(10));
}

/// What the worker does with a batch: PostgreSQL decides and commits, then
/// Redis is told.
async fn settle(app: &common::TestApp, sale_id: Uuid, reservations: &[Uuid]) {
    use flashsale::{domain::Decision, store::postgres::ReservationToSettle};
    let redis = app.redis_store();
    let mut batch = Vec::new();
    for reservation in reservations {
        let record = redis
            .reservation(sale_id, *reservation)
            .await
            .unwrap()
            .unwrap();
        batch.push(ReservationToSettle {
            reservation_id: record.reservation_id,
            user_id: record.user_id,
            quantity: record.quantity,
            idempotency_key: record.idempotency_key,
            reserved_at: chrono::DateTime::from_timestamp_millis(record.reserved_at_ms).unwrap(),
        });
    }
    let settled = app.state.db.settle_batch(sale_id, &batch).await.unwrap();
    for (reservation, decision) in batch.iter().zip(settled.decisions) {
        match decision {
            Decision::Commit | Decision::AlreadyConfirmed => {
                redis
                    .confirm(sale_id, &[(reservation.reservation_id, None)])
                    .await
                    .unwrap();
            }
            Decision::Fail { reason, restock } => {
                redis
                    .release(
                        sale_id,
                        reservation.reservation_id,
                        flashsale::domain::ReservationStatus::Failed,
                        reason,
                        flashsale::store::redis::Restock::all(restock),
                    )
                    .await
                    .unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[sqlx::test]
async fn an_archived_sale_leaves_redis_and_still_answers_from_postgres(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, 10).await;
    let mut body = common::TestApp::sale_body(product, 5);
    body["per_user_limit"] = json!(3);
    let created = app.post("/api/admin/flash-sales", Some(&admin), body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let sale = created.body["id"].as_str().unwrap().to_string();
    let sale_id: Uuid = sale.parse().unwrap();

    let (buyer_id, buyer) = app.shopper();
    let (refused_id, refused) = app.shopper();
    for id in [buyer_id, refused_id] {
        sqlx::query(
            "insert into users (id, email, issuer, subject)
             values ($1, $1::text || '@shop.test', 'local', $1::text)",
        )
        .bind(id)
        .execute(&app.pg)
        .await
        .unwrap();
    }
    let bought = app
        .attempt(&buyer, "a", json!({"sale_id": sale, "quantity": 2}))
        .await;
    let failing = app.attempt(&refused, "b", json!({"sale_id": sale})).await;
    app.attempt(&refused, "c", json!({"sale_id": sale, "quantity": 9}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "QUANTITY_ABOVE_LIMIT");
    let bought_id = bought.json::<PurchaseAccepted>().reservation_id;
    let failing_id = failing.json::<PurchaseAccepted>().reservation_id;

    // The second shopper is suspended while their reservation waits, so it
    // fails; they are reinstated afterwards and may look at it.
    let ban = format!("/api/admin/users/{refused_id}/ban");
    assert_eq!(
        app.post(&ban, Some(&admin), json!({})).await.status,
        StatusCode::OK
    );
    settle(&app, sale_id, &[bought_id, failing_id]).await;
    let unban = format!("/api/admin/users/{refused_id}/unban");
    assert_eq!(
        app.post(&unban, Some(&admin), json!({})).await.status,
        StatusCode::OK
    );

    let end = app
        .patch(
            &format!("/api/admin/flash-sales/{sale}"),
            Some(&admin),
            json!({"action": "end"}),
        )
        .await;
    assert_eq!(end.status, StatusCode::OK, "{}", end.body);
    let redis = app.redis_store();
    let db = &app.state.db;
    assert_eq!(
        flashsale::store::closing::release_drained_allotments(db, &redis)
            .await
            .unwrap(),
        1
    );
    let stats_path = format!("/api/admin/flash-sales/{sale}/stats");
    let before = app.get(&stats_path, Some(&admin)).await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.body);

    let archived = flashsale::store::closing::archive_settled_sales(db, &redis, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(archived, 1);
    let left: Vec<String> = app
        .redis_keys()
        .await
        .into_iter()
        .filter(|key| key.contains(&sale))
        .collect();
    assert!(left.is_empty(), "the archived sale's keys stayed: {left:?}");

    // Stats answer from the archived counters.
    let after = app.get(&stats_path, Some(&admin)).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.body);
    for figure in [
        "attempts",
        "accepted",
        "rejected",
        "failed",
        "confirmed_units",
        "released",
    ] {
        assert_eq!(after.body[figure], before.body[figure], "{figure}");
    }
    assert_eq!(after.body["accepted"], 2);
    assert_eq!(after.body["rejected"]["above_limit"], 1);
    assert_eq!(after.body["confirmed_units"], 2);

    // Purchase statuses answer from PostgreSQL, by reservation or by sale.
    let status = app
        .get(
            &format!("/api/purchase/status?reservation_id={bought_id}"),
            Some(&buyer),
        )
        .await;
    assert_eq!(status.body["status"], "confirmed", "{}", status.body);
    assert!(status.body["order_id"].is_string());
    let latest = app
        .get(
            &format!("/api/purchase/status?sale_id={sale}"),
            Some(&buyer),
        )
        .await;
    assert_eq!(
        latest.body["reservation_id"],
        bought_id.to_string(),
        "{}",
        latest.body
    );
    // The ban revoked the tokens issued before it: the shopper signs in again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let refused = app
        .tokens
        .issue(refused_id, flashsale::domain::Role::Shopper, 600)
        .token;
    let failed = app
        .get(
            &format!("/api/purchase/status?reservation_id={failing_id}"),
            Some(&refused),
        )
        .await;
    assert_eq!(failed.status, StatusCode::OK, "{}", failed.body);
    assert_eq!(failed.body["status"], "failed");
    assert_eq!(failed.body["reason_code"], "banned");
    // Another shopper still cannot see it.
    app.get(
        &format!("/api/purchase/status?reservation_id={failing_id}"),
        Some(&buyer),
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "PURCHASE_NOT_FOUND");
}

/// Settlement looks each reservation's key up by (sale, user, key). With
/// statistics that lag a stampede, the planner took a second index leading
/// with the sale for it and scanned the sale's orders once per reservation
/// (`scripts/bench`: batches from 20 ms to 800 ms, the drain from 5,000 to
/// 430 orders/s). The unique (sale, user, key) index must be the only one.
#[sqlx::test]
async fn no_index_on_orders_but_the_key_one_leads_with_the_sale(pg: PgPool) {
    let leading_with_the_sale: Vec<String> = sqlx::query_scalar(
        "select indexname from pg_indexes
         where tablename = 'orders' and indexdef like '%(flash_sale_id%'",
    )
    .fetch_all(&pg)
    .await
    .unwrap();
    assert_eq!(leading_with_the_sale, ["orders_sale_user_key"]);
}

#[sqlx::test]
async fn a_checkout_hold_is_bounded_and_shown_with_the_sale(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, 100).await;
    let with_hold = |hold: serde_json::Value| {
        let mut body = common::TestApp::sale_body(product, 10);
        body["hold_seconds"] = hold;
        body
    };
    // Below the deployment's minimum (FLASHSALE_HOLD_MIN_SECS, 60), above
    // an hour, or not a number: refused, and no sale is created.
    for hold in [json!(30), json!(0), json!(3_601), json!("5m")] {
        let reply = app
            .post(
                "/api/admin/flash-sales",
                Some(&admin),
                with_hold(hold.clone()),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{hold}: {}",
            reply.body
        );
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("hold_seconds"), "{hold}: {message}");
        if hold.is_number() {
            assert!(
                message.contains("must be 60 to 3600 seconds"),
                "{hold}: {message}"
            );
        }
    }
    assert_eq!(app.count("flash_sales").await, 0);

    let reply = app
        .post(
            "/api/admin/flash-sales",
            Some(&admin),
            with_hold(json!(600)),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["hold_seconds"], 600);
    assert_eq!(
        reply.body["offer_seconds"], 600,
        "an offer lasts a hold unless told"
    );
    let plain = app.create_sale(&admin, product, 10).await;
    assert_eq!(plain.hold_seconds, None, "no hold unless asked for");
    assert_eq!(plain.offer_seconds, None, "no hold, no waitlist");

    // A waitlist offer's time: the hold's bounds, and only with a hold.
    let with_offer = |hold: serde_json::Value, offer: serde_json::Value| {
        let mut body = with_hold(hold);
        body["offer_seconds"] = offer;
        body
    };
    for (hold, offer) in [
        (json!(600), json!(30)),
        (json!(600), json!(3_601)),
        (json!(null), json!(300)),
    ] {
        let reply = app
            .post(
                "/api/admin/flash-sales",
                Some(&admin),
                with_offer(hold, offer.clone()),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{offer}: {}",
            reply.body
        );
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("offer_seconds")
        );
    }
    let reply = app
        .post(
            "/api/admin/flash-sales",
            Some(&admin),
            with_offer(json!(600), json!(120)),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["offer_seconds"], 120);
}

#[sqlx::test]
async fn a_deployment_without_webhook_secrets_takes_no_payment(pg: PgPool) {
    let app = spawn_app(pg).await;
    let reply = app
        .post(
            "/api/payments/webhook",
            None,
            json!({"type": "payment.succeeded", "data": {"order_id": Uuid::now_v7(), "amount": 1, "currency": "EUR"}}),
        )
        .await;
    reply.assert_error(StatusCode::NOT_FOUND, "PAYMENTS_NOT_CONFIGURED");
}
