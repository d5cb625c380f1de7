//! `GET /api/flash-sale/events`: the present first, stock changes on every
//! node, each shopper's own outcomes only, and a client that stops reading
//! is cut off without anything piling up for it. The worker-driven outcome
//! test is in workers/tests/live_events.rs.

mod common;

use std::time::Duration;

use common::{
    RedisConnection, spawn_app, spawn_app_behind_redis_proxy, spawn_app_with, spawn_second_node,
};
use flashsale::http::routes::purchase::PurchaseAccepted;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(5);

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_stream_starts_with_the_sale_and_both_nodes_deliver_a_stock_change(pg: PgPool) {
    let first = spawn_app(pg).await;
    let second = spawn_second_node(&first).await;
    let admin = first.admin_token().await;
    let sale = first.open_sale(&admin, 10, 1).await;

    let mut on_first = first.events(&sale, None).await;
    let mut on_second = second.events(&sale, None).await;
    for stream in [&mut on_first, &mut on_second] {
        let present = stream.next_named("sale", WAIT).await;
        assert_eq!(present.data["sale_id"], sale.as_str());
        assert_eq!(present.data["state"], "active");
        assert_eq!(present.data["remaining"], 10);
        assert_eq!(present.data["stock"], 10);
        assert!(present.data["server_time"].is_string());
    }

    // A purchase on the first node only.
    let (_, shopper) = first.shopper();
    let reply = first
        .attempt(&shopper, "k-1", json!({ "sale_id": sale }))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);

    for stream in [&mut on_first, &mut on_second] {
        let change = stream.next_named("sale", WAIT).await;
        assert_eq!(change.data["remaining"], 9, "{}", change.data);
    }

    // An admin's pause reaches the streams as a state change.
    let paused = second
        .patch(
            &format!("/api/admin/flash-sales/{sale}"),
            Some(&admin),
            json!({ "action": "pause" }),
        )
        .await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.body);
    for stream in [&mut on_first, &mut on_second] {
        let change = stream.next_named("sale", WAIT).await;
        assert_eq!(change.data["state"], "paused", "{}", change.data);
    }
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn outcomes_reach_their_shopper_only_and_reconnects_start_from_the_present(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 10, 1).await;
    let sale_id: Uuid = sale.parse().unwrap();
    let (_, alice) = app.shopper();
    let (_, bob) = app.shopper();

    let mut alice_events = app.events(&sale, Some(&alice)).await;
    let mut bob_events = app.events(&sale, Some(&bob)).await;
    let mut anonymous = app.events(&sale, None).await;
    alice_events.next_named("sale", WAIT).await;
    bob_events.next_named("sale", WAIT).await;
    anonymous.next_named("sale", WAIT).await;

    let alices = app.attempt(&alice, "a-1", json!({ "sale_id": sale })).await;
    assert_eq!(alices.status, StatusCode::ACCEPTED, "{}", alices.body);
    let alices = alices.json::<PurchaseAccepted>().reservation_id;
    let bobs = app.attempt(&bob, "b-1", json!({ "sale_id": sale })).await;
    let bobs = bobs.json::<PurchaseAccepted>().reservation_id;

    // What the worker does once PostgreSQL committed the order.
    let store = app.redis_store();
    assert_eq!(store.confirm(sale_id, &[(alices, None)]).await.unwrap(), 1);
    let outcome = alice_events.next_named("purchase", WAIT).await;
    assert_eq!(outcome.data["reservation_id"], alices.to_string());
    assert_eq!(outcome.data["status"], "confirmed");

    // Bob's next purchase event is his own: Alice's never reached him.
    store
        .release(
            sale_id,
            bobs,
            flashsale::domain::ReservationStatus::Failed,
            flashsale::domain::FailureReason::SaleCancelled,
            flashsale::store::redis::Restock::all(1),
        )
        .await
        .unwrap();
    let outcome = bob_events.next_named("purchase", WAIT).await;
    assert_eq!(outcome.data["reservation_id"], bobs.to_string());
    assert_eq!(outcome.data["status"], "failed");
    assert_eq!(
        outcome.data["reason"],
        flashsale::domain::FailureReason::SaleCancelled.message()
    );
    assert_eq!(outcome.data["reason_code"], "sale_cancelled");

    // The anonymous stream carries sales only.
    let next = anonymous.next(WAIT).await.expect("stream open");
    assert_eq!(next.name, "sale");

    // Reconnecting: the present first, the sale and then Alice's outcome.
    drop(alice_events);
    let mut again = app.events(&sale, Some(&alice)).await;
    let first = again.next(WAIT).await.unwrap();
    assert_eq!(first.name, "sale");
    let second = again.next(WAIT).await.unwrap();
    assert_eq!(second.name, "purchase");
    assert_eq!(second.data["reservation_id"], alices.to_string());
    assert_eq!(second.data["status"], "confirmed");
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn bad_requests_get_the_error_shape_and_open_no_stream(pg: PgPool) {
    let app = spawn_app(pg).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 10, 1).await;
    app.get(
        &format!("/api/flash-sale/events?sale_id={}", Uuid::now_v7()),
        None,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "SALE_NOT_FOUND");
    app.get("/api/flash-sale/events?sale_id=nope", None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "VALIDATION_FAILED");
    app.get(
        &format!("/api/flash-sale/events?sale_id={sale}"),
        Some("not-a-token"),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_eq!(app.state.live.streams(), 0);
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn with_redis_unreachable_a_new_stream_is_refused_with_503(pg: PgPool) {
    let (app, proxy) = spawn_app_behind_redis_proxy(pg, RedisConnection::Store).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 10, 1).await;

    proxy.cut();
    // Following a sale means subscribing to its channel, which needs Redis.
    let reply = app
        .get(&format!("/api/flash-sale/events?sale_id={sale}"), None)
        .await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    assert!(reply.headers.contains_key("retry-after"));
}

/// Two streams of one shopper on one node get the same stream of outcomes,
/// paced so that a reading client keeps up. One reads; the other asked for
/// its stream and then never reads. The node must cut the second off
/// without keeping what it could not send, and keep serving the first.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_client_that_stops_reading_is_disconnected_and_nothing_piles_up(pg: PgPool) {
    let app = spawn_app_with(pg, Default::default(), |settings| {
        settings.http.write_stall_timeout = Duration::from_secs(1);
    })
    .await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 10, 1).await;
    let (user_id, token) = app.shopper();

    // The stalled client: a small receive window, so the node's writes
    // stall early.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4 * 1024).unwrap();
    let address = app.base.trim_start_matches("http://").parse().unwrap();
    let mut stalled = socket.connect(address).await.unwrap();
    let request = format!(
        "GET /api/flash-sale/events?sale_id={sale} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stalled.write_all(request.as_bytes()).await.unwrap();

    // The reading client counts the outcomes it gets.
    let mut reading = app.events(&sale, Some(&token)).await;
    reading.next_named("sale", WAIT).await;
    let (counter, mut received) = tokio::sync::watch::channel(0_usize);
    let reader = tokio::spawn(async move {
        while let Some(event) = reading.next(Duration::from_secs(30)).await {
            if event.name == "purchase" {
                counter.send_modify(|count| *count += 1);
            }
        }
    });
    common::eventually(WAIT, "both streams are open", || async {
        app.state.live.streams() == 2
    })
    .await;

    // 60,000 outcomes of ~200 bytes for this shopper (an outcome carries
    // ids and codes only), six at a time (a stream's backlog is eight),
    // each batch once the reading
    // client has the previous one: 12 MB if the node kept them all for the
    // stalled client.
    let channel = format!("{}:{{sale:{sale}}}:events", app.prefix);
    let mut published = 0;
    let mut published_bytes = 0;
    for _ in 0..10_000 {
        let mut pipe = redis::pipe();
        for _ in 0..6 {
            let message = json!({
                "type": "purchase", "sale_id": sale, "reservation_id": Uuid::now_v7(),
                "user_id": user_id, "status": "failed", "reason": "limit_reached",
            })
            .to_string();
            published_bytes += message.len();
            pipe.publish(&channel, message).ignore();
        }
        let () = pipe.query_async(&mut app.redis.clone()).await.unwrap();
        published += 6;
        tokio::time::timeout(WAIT, received.wait_for(|count| *count >= published))
            .await
            .expect("the reading client keeps up")
            .unwrap();
    }

    common::eventually(WAIT, "the node drops the stalled stream", || async {
        app.state.live.streams() == 1
    })
    .await;
    assert!(!reader.is_finished(), "the reading client was cut off too");

    // What reaches the stalled client is what was in flight (the kernel's
    // socket buffers, which grow up to tcp_wmem's maximum, and at most
    // hyper's write buffer), then the end.
    let mut bytes = Vec::new();
    tokio::time::timeout(WAIT, stalled.read_to_end(&mut bytes))
        .await
        .expect("the node closed the stalled connection")
        .ok();
    let in_flight_bound = kernel_send_buffer_max() + 1024 * 1024;
    assert!(
        published_bytes > 2 * in_flight_bound,
        "the flood ({published_bytes} bytes) is too small to tell buffering from dropping"
    );
    assert!(
        bytes.len() < in_flight_bound,
        "{} bytes reached a client that stopped reading, of {published_bytes} published",
        bytes.len()
    );
}

/// The largest send buffer Linux grows a TCP socket to.
fn kernel_send_buffer_max() -> usize {
    let wmem = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap();
    wmem.split_whitespace().last().unwrap().parse().unwrap()
}

/// Pub/sub keeps nothing for a subscriber that is away: an outcome
/// published while the node's connection was down must still reach the
/// shopper once the node is back on the channel.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn an_outcome_published_while_the_node_was_cut_off_arrives_after_it_reconnects(pg: PgPool) {
    let (app, proxy) = spawn_app_behind_redis_proxy(pg, RedisConnection::Store).await;
    let admin = app.admin_token().await;
    let sale = app.open_sale(&admin, 10, 1).await;
    let sale_id: Uuid = sale.parse().unwrap();
    let (_, shopper) = app.shopper();
    let accepted = app
        .attempt(&shopper, "k-1", json!({ "sale_id": sale }))
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    let reservation = accepted.body["reservation_id"]
        .as_str()
        .unwrap()
        .to_string();

    let mut events = app.events(&sale, Some(&shopper)).await;
    let pending = events.next_named("purchase", WAIT).await;
    assert_eq!(pending.data["status"], "pending");

    proxy.cut();
    // The worker's commit, published while this node cannot hear it.
    let store = app.redis_store();
    let confirmed = store
        .confirm(sale_id, &[(reservation.parse().unwrap(), None)])
        .await
        .unwrap();
    assert_eq!(confirmed, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();

    let outcome = events.next_named("purchase", Duration::from_secs(15)).await;
    assert_eq!(outcome.data["reservation_id"], reservation.as_str());
    assert_eq!(outcome.data["status"], "confirmed");
}
