//! An operator's change sent again (a timeout, a proxy's retry, a double
//! click) with its `Idempotency-Key` happens once: added stock is added
//! once, a sale is created once, a keyed action is not applied again.

mod common;

use std::time::Duration;

use common::{Reply, Route, TestApp, spawn_app, spawn_app_with, spawn_second_node_with};
use flashsale::domain::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// A sale of 10 units of a 100-unit product; its admin path.
async fn sale_of_ten(app: &TestApp, admin: &str) -> (Uuid, String) {
    let product = app.create_product(admin, 100).await;
    let sale = app.create_sale(admin, product, 10).await;
    (sale.id, format!("/api/admin/flash-sales/{}", sale.id))
}

/// A sale's creation sent to `node` with its `Idempotency-Key`.
async fn create_sale_keyed(node: &TestApp, admin: &str, key: &str, body: &Value) -> Reply {
    node.keyed(
        Method::POST,
        "/api/admin/flash-sales",
        admin,
        key,
        body.clone(),
    )
    .await
}

async fn allotted(app: &TestApp, sale: Uuid) -> i64 {
    sqlx::query_scalar("select allotted_quantity::bigint from flash_sales where id = $1")
        .bind(sale)
        .fetch_one(&app.pg)
        .await
        .unwrap()
}

async fn audit_records(app: &TestApp, sale: Uuid, action: &str) -> i64 {
    sqlx::query_scalar("select count(*) from admin_audit where target_id = $1 and action = $2")
        .bind(sale)
        .bind(action)
        .fetch_one(&app.pg)
        .await
        .unwrap()
}

#[sqlx::test]
async fn added_stock_sent_again_with_its_key_is_added_once(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let (sale, path) = sale_of_ten(&app, &admin).await;
    let add_five = json!({"add_stock": 5});

    for _ in 0..3 {
        let reply = app
            .keyed(Method::PATCH, &path, &admin, "restock-1", add_five.clone())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(
            (
                reply.body["stock"].as_i64(),
                reply.body["remaining"].as_i64()
            ),
            (Some(15), Some(15))
        );
    }
    // The same retry from eight clients at once (two operators' consoles,
    // a proxy's retries): still once.
    let retries = (0..8).map(|_| {
        app.keyed(
            Method::PATCH,
            &path,
            &admin,
            "restock-2",
            json!({"add_stock": 3}),
        )
    });
    for reply in futures::future::join_all(retries).await {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["stock"], 18, "{}", reply.body);
    }

    assert_eq!(allotted(&app, sale).await, 18);
    assert_eq!(app.redis_stock(&sale.to_string()).await, Some(18));
    assert_eq!(audit_records(&app, sale, "sale.add_stock").await, 2);
    let audit = app
        .get(
            &format!("/api/admin/audit?target_id={sale}&limit=1"),
            Some(&admin),
        )
        .await;
    assert_eq!(
        audit.body["entries"][0]["idempotency_key"], "restock-2",
        "{}",
        audit.body
    );

    // Keys are per admin: another operator's key of the same name is theirs.
    let second_admin = app
        .mint_token("second-operator@example.com", Role::Admin)
        .await;
    let theirs = app
        .keyed(Method::PATCH, &path, &second_admin, "restock-1", add_five)
        .await;
    assert_eq!(theirs.body["stock"], 23, "{}", theirs.body);
    // Without a key, a change is a new change each time.
    for stock in [24, 25] {
        let reply = app
            .patch(&path, Some(&admin), json!({"add_stock": 1}))
            .await;
        assert_eq!(reply.body["stock"], stock, "{}", reply.body);
    }

    // The operator ended the sale meanwhile; a late retry of the first add
    // is answered with the sale as it is (an unkeyed add would be 409),
    // and adds nothing.
    let ended = app
        .patch(&path, Some(&admin), json!({"action": "end"}))
        .await;
    assert_eq!(ended.body["state"], "ended", "{}", ended.body);
    let late = app
        .keyed(
            Method::PATCH,
            &path,
            &admin,
            "restock-1",
            json!({"add_stock": 5}),
        )
        .await;
    assert_eq!(late.status, StatusCode::OK, "{}", late.body);
    assert_eq!(
        (late.body["state"].as_str(), late.body["stock"].as_i64()),
        (Some("ended"), Some(25))
    );
    assert_eq!(allotted(&app, sale).await, 25);
}

#[sqlx::test]
async fn a_key_sent_with_another_request_is_refused_and_changes_nothing(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let (sale, path) = sale_of_ten(&app, &admin).await;
    let (other_sale, other_path) = sale_of_ten(&app, &admin).await;
    app.keyed(Method::PATCH, &path, &admin, "k-1", json!({"add_stock": 5}))
        .await;

    for (path, body) in [
        (&path, json!({"add_stock": 6})),
        (&path, json!({"action": "pause"})),
        (&other_path, json!({"add_stock": 5})),
    ] {
        app.keyed(Method::PATCH, path, &admin, "k-1", body)
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED");
    }
    let product = app.create_product(&admin, 100).await;
    app.keyed(
        Method::POST,
        "/api/admin/flash-sales",
        &admin,
        "k-1",
        TestApp::sale_body(product, 10),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED");

    assert_eq!(
        (allotted(&app, sale).await, allotted(&app, other_sale).await),
        (15, 10)
    );
    let sales: i64 = sqlx::query_scalar("select count(*) from flash_sales")
        .fetch_one(&app.pg)
        .await
        .unwrap();
    assert_eq!(sales, 2, "no sale created under a used key");
    let read = app.get(&path, Some(&admin)).await;
    assert_eq!(
        read.body["state"], "active",
        "the pause under a used key was not applied"
    );

    // A key that is not a key is refused, not ignored.
    app.keyed(
        Method::PATCH,
        &path,
        &admin,
        "not a key!",
        json!({"add_stock": 1}),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert_eq!(allotted(&app, sale).await, 15);
}

#[sqlx::test]
async fn a_sale_created_again_with_its_key_is_created_once(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, 100).await;
    let body = TestApp::sale_body(product, 30);

    let attempts = (0..5).map(|_| {
        app.keyed(
            Method::POST,
            "/api/admin/flash-sales",
            &admin,
            "launch-1",
            body.clone(),
        )
    });
    let replies = futures::future::join_all(attempts).await;
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        assert_eq!(
            reply.body["id"], replies[0].body["id"],
            "one sale, answered to each"
        );
    }
    let (sales, allotted): (i64, i64) = sqlx::query_as(
        "select count(*), coalesce(sum(allotted_quantity), 0)::bigint from flash_sales where product_id = $1",
    )
    .bind(product)
    .fetch_one(&app.pg)
    .await
    .unwrap();
    assert_eq!((sales, allotted), (1, 30));
}

#[sqlx::test]
async fn a_sale_created_with_its_key_is_answered_again_after_it_ended(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let product = app.create_product(&admin, 100).await;
    // Longer than the first creation can take (each dependency call is cut
    // off at 1 s, and a 503 fails the assertion below, not the retry's).
    let ends_at = chrono::Utc::now() + chrono::Duration::seconds(5);
    let mut body = TestApp::sale_body(product, 30);
    body["ends_at"] = json!(ends_at);
    let create = |key: &'static str, body: serde_json::Value| {
        app.keyed(Method::POST, "/api/admin/flash-sales", &admin, key, body)
    };
    let first = create("short-1", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);

    // The answer was lost; the console retries once the short sale is over.
    // The sale exists (it ran): the retry answers with it, never "ends_at
    // must be in the future", which would tell the operator it was not made.
    let over = ends_at + chrono::Duration::milliseconds(100) - chrono::Utc::now();
    tokio::time::sleep(over.to_std().unwrap_or_default()).await;
    let retry = create("short-1", body.clone()).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert_eq!(retry.body["id"], first.body["id"], "the same sale");
    assert_eq!(retry.body["state"], "ended", "{}", retry.body);

    // A new request for a window already over is still refused, as before.
    let late = create("short-2", body).await;
    late.assert_error(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let sales: i64 = sqlx::query_scalar("select count(*) from flash_sales where product_id = $1")
        .bind(product)
        .fetch_one(&app.pg)
        .await
        .unwrap();
    assert_eq!(sales, 1);
}

#[sqlx::test]
async fn a_sale_created_with_its_key_is_answered_again_by_a_node_with_a_longer_minimum_hold(
    pg: PgPool,
) {
    let first = spawn_app_with(pg, Route::default(), |settings| {
        settings.payments.hold_min_secs = 60;
    })
    .await;
    let admin = first.admin_token().await;
    let product = first.create_product(&admin, 100).await;
    let mut body = TestApp::sale_body(product, 30);
    body["hold_seconds"] = json!(60);
    let created = create_sale_keyed(&first, &admin, "held-1", &body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);

    // The answer was lost, and the retry reaches a node whose operator has
    // since raised FLASHSALE_HOLD_MIN_SECS above the sale's hold. The sale
    // exists: the retry answers with it, never "hold_seconds: must be 300
    // to 3600 seconds", which would tell the operator it was not made.
    let stricter = spawn_second_node_with(&first, |settings| {
        settings.payments.hold_min_secs = 300;
    })
    .await;
    let retry = create_sale_keyed(&stricter, &admin, "held-1", &body).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert_eq!(retry.body["id"], created.body["id"], "the same sale");
    assert_eq!(retry.body["hold_seconds"], 60, "{}", retry.body);

    // A new request with that hold is refused there, as before, and
    // writes nothing.
    let new = create_sale_keyed(&stricter, &admin, "held-2", &body).await;
    new.assert_error(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    assert!(
        new.body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("hold_seconds: must be 300 to 3600")),
        "{}",
        new.body
    );
    assert_eq!(first.count("flash_sales").await, 1);
}

#[sqlx::test]
async fn a_keyed_pause_retried_after_a_resume_does_not_pause_again(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let (sale, path) = sale_of_ten(&app, &admin).await;

    let pause = || {
        app.keyed(
            Method::PATCH,
            &path,
            &admin,
            "pause-1",
            json!({"action": "pause"}),
        )
    };
    let paused = pause().await;
    assert_eq!(paused.body["state"], "paused", "{}", paused.body);
    let resumed = app
        .patch(&path, Some(&admin), json!({"action": "resume"}))
        .await;
    assert_eq!(resumed.body["state"], "active", "{}", resumed.body);

    // The first pause's answer was lost; its retry arrives late.
    let late = pause().await;
    assert_eq!(late.status, StatusCode::OK, "{}", late.body);
    assert_eq!(late.body["state"], "active", "the sale as it is now");
    assert_eq!(
        app.redis_meta(&sale.to_string(), "state").await.as_deref(),
        Some("active")
    );
    assert_eq!(audit_records(&app, sale, "sale.pause").await, 1);
}

#[sqlx::test]
async fn one_key_racing_under_two_locks_is_refused_at_its_index(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let admin_id = app.tokens.verify(&admin).unwrap().sub;
    let (sale, path) = sale_of_ten(&app, &admin).await;

    // Another change of this admin under the key, in flight on another
    // product (its lock is not this sale's): not committed yet, so the
    // request below finds the key new and meets it at the unique index.
    let mut other = app.pg.begin().await.unwrap();
    sqlx::query(
        "insert into admin_audit (id, actor_id, action, target_type, target_id, details,
                                  idempotency_key, idempotency_request)
         values ($1, $2, 'sale.add_stock', 'sale', $3, '{}', 'race-1', '{}')",
    )
    .bind(Uuid::now_v7())
    .bind(admin_id)
    .bind(Uuid::now_v7())
    .execute(&mut *other)
    .await
    .unwrap();
    let racing = app.keyed(
        Method::PATCH,
        &path,
        &admin,
        "race-1",
        json!({"add_stock": 5}),
    );
    // Committed once the request waits on the key's index entry, so the
    // refusal comes from the index, not from a lookup after the commit.
    let commit_other = async {
        common::eventually(
            Duration::from_secs(5),
            "the request waits on the key",
            || async {
                let waiting: i64 = sqlx::query_scalar(
                    "select count(*) from pg_stat_activity
                 where datname = current_database() and wait_event_type = 'Lock'
                   and query like 'insert into admin_audit%'",
                )
                .fetch_one(&app.pg)
                .await
                .unwrap();
                waiting > 0
            },
        )
        .await;
        other.commit().await.unwrap();
    };
    let (reply, ()) = tokio::join!(racing, commit_other);

    reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(
        allotted(&app, sale).await,
        10,
        "the losing change rolled back"
    );
    assert_eq!(audit_records(&app, sale, "sale.add_stock").await, 0);
}
