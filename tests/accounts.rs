//! Operators acting on accounts mid-sale: bans that bite on every node
//! within a second, tokens that stay void after an unban, the audit trail
//! of every admin action, and one user's attempt limit across nodes.

mod common;

use std::time::{Duration, Instant};

use common::{Route, TestApp, spawn_app, spawn_app_with, spawn_second_node};
use flashsale::{
    domain::Role,
    store::postgres::{AdminAct, Db},
};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

async fn user_id_of(app: &TestApp, token: &str) -> Uuid {
    app.tokens.verify(token).unwrap().sub
}

#[sqlx::test]
async fn a_ban_stops_every_token_of_the_user_on_every_node_within_a_second(pg: PgPool) {
    let first = spawn_app(pg).await;
    let second = spawn_second_node(&first).await;
    let admin = first.admin_token().await;
    let (ann_1, ann_2) = (
        first.login("ann@example.com").await,
        first.login("ann@example.com").await,
    );
    let bob = first.login("bob@example.com").await;
    let ann = user_id_of(&first, &ann_1).await;
    let orders = format!("/api/purchase/user/{ann}");
    for node in [&first, &second] {
        assert_eq!(node.get(&orders, Some(&ann_2)).await.status, StatusCode::OK);
    }

    let ban = first
        .post(
            &format!("/api/admin/users/{ann}/ban"),
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(ban.status, StatusCode::OK, "{}", ban.body);
    assert!(ban.body["banned_at"].is_string());
    assert_eq!(
        ban.body["orders"],
        json!([]),
        "orders are listed (none yet)"
    );
    for node in [&first, &second] {
        for token in [&ann_1, &ann_2] {
            node.wait_for_status_as(
                &orders,
                Some(token),
                StatusCode::FORBIDDEN,
                Duration::from_secs(1),
            )
            .await;
        }
    }
    let refused = second.get(&orders, Some(&ann_1)).await;
    refused.assert_error(StatusCode::FORBIDDEN, "ACCOUNT_SUSPENDED");
    let bob_id = user_id_of(&first, &bob).await;
    assert_eq!(
        second
            .get(&format!("/api/purchase/user/{bob_id}"), Some(&bob))
            .await
            .status,
        StatusCode::OK,
        "other shoppers are untouched"
    );

    // Unbanned: the tokens from before the ban stay void; a new sign-in works.
    let unban = second
        .post(
            &format!("/api/admin/users/{ann}/unban"),
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(unban.status, StatusCode::OK, "{}", unban.body);
    assert!(unban.body["banned_at"].is_null());
    for node in [&first, &second] {
        node.wait_for_status_as(
            &orders,
            Some(&ann_1),
            StatusCode::UNAUTHORIZED,
            Duration::from_secs(1),
        )
        .await;
    }
    first
        .get(&orders, Some(&ann_2))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    // iat has a one-second grain: a token from the ban's own second is void.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = first.login("ann@example.com").await;
    assert_eq!(
        second.get(&orders, Some(&fresh)).await.status,
        StatusCode::OK
    );
}

#[sqlx::test]
async fn a_ban_committed_while_the_channel_was_silent_reaches_nodes_from_postgres(pg: PgPool) {
    let app = spawn_app(pg).await;
    let ann = app.login("ann@example.com").await;
    let ann_id = user_id_of(&app, &ann).await;
    let operator = app.mint_token("ops@example.com", Role::Admin).await;
    let operator_id = user_id_of(&app, &operator).await;
    // Written straight to PostgreSQL: no node was told.
    Db::new(app.pg.clone(), common::DEPENDENCY_TIMEOUT)
        .ban_user(
            ann_id,
            &AdminAct {
                actor_id: operator_id,
                request_id: None,
                idempotency_key: None,
            },
        )
        .await
        .unwrap();
    app.wait_for_status_as(
        &format!("/api/purchase/user/{ann_id}"),
        Some(&ann),
        StatusCode::FORBIDDEN,
        flashsale::auth::revocations::RELOAD_EVERY + Duration::from_secs(5),
    )
    .await;
}

/// A node that has not loaded the banned accounts cannot tell a banned
/// user from anyone else: it refuses tokens with 503 until it has (here:
/// started while PostgreSQL was unreachable).
#[sqlx::test]
async fn a_node_that_could_not_load_the_bans_refuses_tokens_until_it_has(pg: PgPool) {
    let pg_proxy = common::proxy::FaultProxy::in_front_of_postgres(&pg).await;
    pg_proxy.cut();
    let app = common::spawn_app_routed(
        pg,
        Route {
            postgres: Some(pg_proxy.addr),
            ..Route::default()
        },
    )
    .await;
    let (user, token) = app.shopper();
    let orders = format!("/api/purchase/status?sale_id={user}");
    let refused = app.get(&orders, Some(&token)).await;
    refused.assert_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    assert!(refused.headers.contains_key("retry-after"));
    pg_proxy.restore();
    app.wait_for_status_as(
        &orders,
        Some(&token),
        StatusCode::NOT_FOUND,
        Duration::from_secs(10),
    )
    .await;
}

#[sqlx::test]
async fn every_admin_action_is_audited_with_who_what_and_the_request_id(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let admin_id = user_id_of(&app, &admin).await;
    let sale = app.open_sale(&admin, 10, 2).await;
    let pause = app
        .patch(
            &format!("/api/admin/flash-sales/{sale}"),
            Some(&admin),
            json!({"action": "pause"}),
        )
        .await;
    assert_eq!(pause.status, StatusCode::OK, "{}", pause.body);
    app.patch(
        &format!("/api/admin/flash-sales/{sale}"),
        Some(&admin),
        json!({"add_stock": 0}),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    let ann = app.login("ann@example.com").await;
    let ann_id = user_id_of(&app, &ann).await;
    app.post(
        &format!("/api/admin/users/{ann_id}/ban"),
        Some(&admin),
        json!({}),
    )
    .await;

    let audit = app.get("/api/admin/audit?limit=10", Some(&admin)).await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.body);
    let entries = audit.body["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|entry| entry["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["user.ban", "sale.pause", "sale.create", "product.create"],
        "newest first; a refused request changes nothing and is not recorded"
    );
    for entry in entries {
        assert_eq!(entry["actor_id"], admin_id.to_string());
        assert_eq!(entry["actor_subject"], common::ADMIN_EMAIL);
        assert!(entry["request_id"].is_string(), "{entry}");
    }
    assert_eq!(
        entries[1]["request_id"].as_str(),
        pause.headers["x-request-id"].to_str().ok()
    );
    assert_eq!(
        entries[1]["details"],
        json!({"from": "active", "to": "paused"})
    );

    let page = app.get("/api/admin/audit?limit=2", Some(&admin)).await;
    let next = page.body["next_before"].as_str().unwrap();
    let rest = app
        .get(
            &format!("/api/admin/audit?limit=10&before={next}"),
            Some(&admin),
        )
        .await;
    assert_eq!(rest.body["entries"].as_array().unwrap().len(), 2);
    app.get("/api/admin/audit", Some(&ann))
        .await
        .assert_error(StatusCode::FORBIDDEN, "ACCOUNT_SUSPENDED");
    let shopper = app.login("bob@example.com").await;
    app.get("/api/admin/audit", Some(&shopper))
        .await
        .assert_error(StatusCode::FORBIDDEN, "FORBIDDEN");
}

/// Found by the schema fuzzer: an operator's token banned its own account
/// (the id appears in the audit trail), locking out every script that
/// mints tokens for that operator.
#[sqlx::test]
async fn an_operator_cannot_ban_their_own_account(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let own = user_id_of(&app, &admin).await;
    app.post(
        &format!("/api/admin/users/{own}/ban"),
        Some(&admin),
        json!({}),
    )
    .await
    .assert_error(StatusCode::CONFLICT, "CANNOT_BAN_YOURSELF");
    assert_eq!(
        app.get("/api/admin/audit", Some(&admin)).await.status,
        StatusCode::OK
    );
    assert_eq!(app.count("admin_audit").await, 0);
}

#[sqlx::test]
async fn banning_an_unknown_user_is_404_and_changes_nothing(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    app.post(
        &format!("/api/admin/users/{}/ban", Uuid::now_v7()),
        Some(&admin),
        json!({}),
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "USER_NOT_FOUND");
    assert_eq!(app.count("admin_audit").await, 0);
}

/// nginx sends a user's requests to one node by the Authorization header,
/// but a second sign-in (another token) or a header variant lands on
/// another node: the limit must hold across nodes, not per node.
#[sqlx::test]
async fn one_users_attempts_spread_over_nodes_and_tokens_meet_one_limit(pg: PgPool) {
    let (rate, burst) = (1, 3);
    let first = spawn_app_with(pg, Route::default(), |settings| {
        settings.purchase.user_rate_per_sec = rate.try_into().unwrap();
        settings.purchase.user_burst = burst.try_into().unwrap();
    })
    .await;
    let second = spawn_second_node(&first).await;
    let admin = first.admin_token().await;
    let sale = first.open_sale(&admin, 100, 100).await;
    let (token_a, token_b) = (
        first.login("ann@example.com").await,
        first.login("ann@example.com").await,
    );
    let started = Instant::now();
    let mut not_limited = 0;
    for attempt in 0..12 {
        let node = if attempt % 2 == 0 { &first } else { &second };
        let token = if attempt % 3 == 0 { &token_a } else { &token_b };
        let reply = node
            .attempt(
                token,
                &format!("spread-{attempt}"),
                json!({"sale_id": sale}),
            )
            .await;
        if reply.status != StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
            not_limited += 1;
        } else {
            assert!(reply.headers.contains_key("retry-after"));
        }
    }
    let refilled = started.elapsed().as_secs() as u32 * rate;
    assert!(
        not_limited <= burst + refilled,
        "{not_limited} attempts got through; one user's limit is {burst} at once + {rate}/s"
    );
    assert!(not_limited >= burst, "the burst itself was refused");
}
