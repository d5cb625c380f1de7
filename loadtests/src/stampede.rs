//! `stampede`: the flash-sale moment. Each shopper logs in once, then per
//! iteration reads the sale, attempts one purchase with a fresh
//! idempotency key and follows its status until confirmed or failed.
//! Run with `--iterations 1` for exactly one purchase per shopper; later
//! iterations of a shopper who bought get 409 ALREADY_PURCHASED, which is
//! counted as an answer, not a failure.

use std::time::Duration;

use goose::prelude::*;

use crate::shopper::{self, Shopper, attempt_purchase, authorized, expect_ok, failure};

/// How often and how long a shopper follows a pending purchase
/// (`LOADTEST_STATUS_POLL_MS`, `LOADTEST_STATUS_POLL_LIMIT`).
fn status_polling() -> (Duration, u32) {
    let every = std::env::var("LOADTEST_STATUS_POLL_MS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(100);
    let limit = std::env::var("LOADTEST_STATUS_POLL_LIMIT")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(100);
    (Duration::from_millis(every), limit)
}

pub fn scenario() -> Scenario {
    scenario!("stampede")
        .register_transaction(transaction!(log_in).set_name("log in").set_on_start())
        .register_transaction(
            transaction!(read_status)
                .set_name("read the sale")
                .set_sequence(1),
        )
        .register_transaction(
            transaction!(purchase)
                .set_name("attempt a purchase")
                .set_sequence(2),
        )
        .register_transaction(
            transaction!(follow_status)
                .set_name("follow until confirmed or failed")
                .set_sequence(3),
        )
}

async fn log_in(user: &mut GooseUser) -> TransactionResult {
    shopper::log_in(user, "stampede").await
}

/// The personalised status (`you.can_purchase`): never from nginx's cache.
async fn read_status(user: &mut GooseUser) -> TransactionResult {
    let builder = authorized(user, &GooseMethod::Get, "/api/flash-sale/status")?;
    let request = GooseRequest::builder()
        .set_request_builder(builder)
        .name("sale status (signed in)")
        .build();
    let goose = user.request(request).await?;
    expect_ok(user, goose).await?;
    Ok(())
}

async fn purchase(user: &mut GooseUser) -> TransactionResult {
    let mut session = shopper::shopper(user);
    session.attempts += 1;
    let key = format!(
        "stampede-{}-{}-{}",
        shopper::run_id(),
        user.weighted_users_index,
        session.attempts
    );
    let (status, body) = attempt_purchase(user, &key, &[202, 409, 410]).await?;
    session.reservation = match status {
        202 => body["reservation_id"].as_str().map(str::to_owned),
        _ => None,
    };
    user.set_session_data(session);
    Ok(())
}

/// Polls `GET /api/purchase/status` until the reservation is confirmed or
/// failed; still pending after the poll limit is a failure.
async fn follow_status(user: &mut GooseUser) -> TransactionResult {
    let Some(reservation) = shopper::shopper(user).reservation else {
        return Ok(());
    };
    let (every, limit) = status_polling();
    let path = format!("/api/purchase/status?reservation_id={reservation}");
    for _ in 0..limit {
        let builder = authorized(user, &GooseMethod::Get, &path)?;
        let request = GooseRequest::builder()
            .set_request_builder(builder)
            .name("purchase status")
            .build();
        let goose = user.request(request).await?;
        let body = expect_ok(user, goose).await?;
        if matches!(body["status"].as_str(), Some("confirmed" | "failed")) {
            user.set_session_data(Shopper {
                reservation: None,
                ..shopper::shopper(user)
            });
            return Ok(());
        }
        tokio::time::sleep(every).await;
    }
    Err(failure(format!(
        "reservation {reservation} still pending after {limit} reads"
    )))
}
