//! `retry-storm`: shoppers whose clients retry one purchase over and over
//! with the same idempotency key (a flaky network, an impatient button).
//! Every 202 for one key must name the same reservation; a second
//! reservation is a failure. 429 (the per-user limit) and the answers a
//! first attempt can get (409, 410) are expected.

use goose::prelude::*;

use crate::shopper::{self, attempt_purchase, failure};

pub fn scenario() -> Scenario {
    scenario!("retry-storm")
        .register_transaction(transaction!(log_in).set_name("log in").set_on_start())
        .register_transaction(transaction!(retry_purchase).set_name("retry with the same key"))
}

async fn log_in(user: &mut GooseUser) -> TransactionResult {
    shopper::log_in(user, "storm").await
}

async fn retry_purchase(user: &mut GooseUser) -> TransactionResult {
    let key = format!("storm-{}-{}", shopper::run_id(), user.weighted_users_index);
    let (status, body) = attempt_purchase(user, &key, &[202, 409, 410, 429]).await?;
    if status != 202 {
        return Ok(());
    }
    let reservation = body["reservation_id"].as_str().map(str::to_owned);
    let mut session = shopper::shopper(user);
    match (&session.reservation, &reservation) {
        (Some(first), Some(this)) if first != this => Err(failure(format!(
            "idempotency key {key} produced a second reservation: {first} then {this}"
        ))),
        (None, Some(_)) => {
            session.reservation = reservation;
            user.set_session_data(session);
            Ok(())
        }
        _ => Ok(()),
    }
}
