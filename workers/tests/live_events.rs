//! The live path end to end: a shopper buys through a real API node, the
//! real worker commits the order, and the shopper's event stream says
//! "confirmed" without being asked again.

mod common;

use std::time::Duration;

use clap::Parser;
use common::{Harness, WORKER, database_url, redis_url};
use flashsale::{auth::LocalTokens, config::ApiSettings, domain::Role, server};
use flashsale_testkit::sse;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const JWT_SECRET: &str = "worker-test-secret-at-least-32-bytes-long";

/// An API node's settings, read the way the binary reads them.
#[derive(Parser)]
struct ApiArgs {
    #[command(flatten)]
    settings: ApiSettings,
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_shoppers_stream_says_confirmed_once_the_worker_commits(pg: PgPool) {
    let harness = Harness::new(WORKER, pg, 10, 1).await;
    let settings = ApiArgs::parse_from([
        "flashsale-api",
        "--bind=127.0.0.1:0",
        &format!("--database-url={}", database_url(&harness.pg)),
        &format!("--redis-url={}", redis_url()),
        &format!("--redis-prefix={}", harness.prefix),
        "--auth-mode=dev",
        &format!("--jwt-secret={JWT_SECRET}"),
    ])
    .settings;
    let state = server::build_state(&settings).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let operator_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let serving = stop.clone();
    let node_settings = settings.clone();
    tokio::spawn(async move {
        server::serve(&node_settings, state, listener, operator_listener, serving).await
    });
    let _stop = stop.drop_guard();

    let user_id = harness.users(1).await[0];
    let local = &settings.auth.local;
    let token = LocalTokens::new(
        local.jwt_secret.as_ref().unwrap(),
        &local.jwt_issuer,
        &local.jwt_audience,
    )
    .issue(user_id, Role::Shopper, 600)
    .token;
    flashsale::tls::install_provider();
    let client = reqwest::Client::new();
    // The node judges tokens once it has loaded the banned accounts.
    common::eventually(Duration::from_secs(10), "the node is ready", || async {
        let ready = client.get(format!("{base}/api/health/ready")).send().await;
        ready.is_ok_and(|reply| reply.status().is_success())
    })
    .await;
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
