//! The live path end to end: a shopper buys through a real API node, the
//! real worker commits the order, and the shopper's event stream says
//! "confirmed" without being asked again.

mod common;

use std::time::Duration;

use common::{Harness, WORKER};
use flashsale::domain::Role;
use flashsale_testkit::{node::ApiNode, sse};
use sqlx::PgPool;

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_shoppers_stream_says_confirmed_once_the_worker_commits(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 10, 1).await;
    let node = ApiNode::start(&harness, &[]).await;
    let (base, client) = (&node.base, &node.client);
    let user_id = harness.users(1).await[0];
    let token = node.token(user_id, Role::Shopper);
    let sale_id = harness.sale.id;
    let events = client
        .get(format!("{base}/api/flash-sale/events?sale_id={sale_id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let mut events = sse::EventReader::new(events);
    let present = events.next_named("sale", Duration::from_secs(5)).await;
    assert_eq!(present.data["remaining"], 10);

    let accepted = client
        .post(format!("{base}/api/purchase/attempt"))
        .bearer_auth(&token)
        .header("idempotency-key", "buy-once")
        .json(&serde_json::json!({ "sale_id": sale_id }))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), reqwest::StatusCode::ACCEPTED);
    let accepted: serde_json::Value = accepted.json().await.unwrap();
    let reservation_id = accepted["reservation_id"].as_str().unwrap().to_string();

    let _worker = harness.spawn_worker(&[]);
    let outcome = events.next_named("purchase", Duration::from_secs(30)).await;
    assert_eq!(outcome.data["reservation_id"], reservation_id.as_str());
    assert_eq!(outcome.data["status"], "confirmed", "{}", outcome.data);
    // The order the stream announced is in PostgreSQL.
    assert_eq!(harness.order_count().await, 1);
}
