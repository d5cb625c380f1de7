//! What every purchasing scenario shares: the shopper's session (token,
//! idempotency key, reservation), logging in, the purchase request, and
//! turning unexpected answers into goose failures.

use std::{
    collections::BTreeMap,
    sync::{Mutex, OnceLock},
    time::{SystemTime, UNIX_EPOCH},
};

use goose::{goose::GooseResponse, prelude::*};
use serde_json::{Value, json};

/// One simulated shopper's state between transactions.
#[derive(Debug, Clone, Default)]
pub struct Shopper {
    pub token: String,
    /// Purchases attempted so far; part of each fresh idempotency key.
    pub attempts: u32,
    /// The reservation of the last accepted purchase, if any.
    pub reservation: Option<String>,
}

/// Distinguishes one run's shoppers from the last run's, so that every run
/// starts with shoppers who have not bought yet. `LOADTEST_RUN_ID` pins it.
pub fn run_id() -> &'static str {
    static RUN_ID: OnceLock<String> = OnceLock::new();
    RUN_ID.get_or_init(|| {
        std::env::var("LOADTEST_RUN_ID").unwrap_or_else(|_| {
            let seconds = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| elapsed.as_secs())
                .unwrap_or_default();
            seconds.to_string()
        })
    })
}

/// The purchase body: the sale named by `LOADTEST_SALE_ID`, else the
/// current sale.
pub fn purchase_body() -> Value {
    match std::env::var("LOADTEST_SALE_ID") {
        Ok(sale_id) => json!({ "sale_id": sale_id, "quantity": 1 }),
        Err(_) => json!({ "quantity": 1 }),
    }
}

/// Logs the shopper in as `<scenario>-<run>-<user index>@load.local` and
/// keeps the token in the session.
pub async fn log_in(user: &mut GooseUser, scenario: &str) -> TransactionResult {
    let email = format!(
        "{scenario}-{}-{}@load.local",
        run_id(),
        user.weighted_users_index
    );
    let builder = user
        .get_request_builder(&GooseMethod::Post, "/api/auth/login")?
        .json(&json!({ "email": email }));
    let request = GooseRequest::builder()
        .set_request_builder(builder)
        .name("login")
        .build();
    let goose = user.request(request).await?;
    let body = expect_ok(user, goose).await?;
    let Some(token) = body["token"].as_str() else {
        return Err(failure("login answered without a token".into()));
    };
    user.set_session_data(Shopper {
        token: token.to_owned(),
        ..Shopper::default()
    });
    Ok(())
}

/// The session of a logged-in shopper.
pub fn shopper(user: &GooseUser) -> Shopper {
    user.get_session_data::<Shopper>()
        .cloned()
        .unwrap_or_default()
}

/// An authenticated request builder.
pub fn authorized(
    user: &GooseUser,
    method: &GooseMethod,
    path: &str,
) -> Result<reqwest::RequestBuilder, Box<TransactionError>> {
    Ok(user
        .get_request_builder(method, path)?
        .bearer_auth(shopper(user).token))
}

/// `POST /api/purchase/attempt` with the given idempotency key; returns the
/// status and the JSON body. 202 accepted, 409 already purchased or not
/// active, 410 sold out and 429 rate limited are answers a shopper can get
/// in a stampede; `expected` says which of them this scenario counts as
/// success, anything else fails the transaction with the status and code.
///
/// Sent with the user's client directly rather than through goose's request
/// metrics: goose counts every non-2xx answer as an error before the
/// scenario can look at it (and `set_success` does not take it back out of
/// the error summary), so a sold-out answer in a sold-out sale would read
/// as a failure. The purchase is timed and judged as the transaction that
/// wraps it ("attempt a purchase").
pub async fn attempt_purchase(
    user: &mut GooseUser,
    idempotency_key: &str,
    expected: &[u16],
) -> Result<(u16, Value), Box<TransactionError>> {
    let response = authorized(user, &GooseMethod::Post, "/api/purchase/attempt")?
        .header("Idempotency-Key", idempotency_key)
        .json(&purchase_body())
        .send()
        .await
        .map_err(|error| failure(format!("purchase attempt failed: {error}")))?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("no error code");
    count_purchase_answer(status, if status == 202 { "accepted" } else { code });
    if !expected.contains(&status) {
        return Err(failure(format!(
            "purchase answered {status} {code}, expected one of {expected:?}"
        )));
    }
    Ok((status, body))
}

/// Reads the body of a request goose tracked as JSON, marking the request
/// failed unless it answered 200. A transport error is already a goose
/// failure and reads as a null body.
pub async fn expect_ok(
    user: &mut GooseUser,
    goose: GooseResponse,
) -> Result<Value, Box<TransactionError>> {
    let GooseResponse {
        mut request,
        response,
    } = goose;
    let Ok(response) = response else {
        return Ok(Value::Null);
    };
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status != 200 {
        let code = body["error"]["code"].as_str().unwrap_or("no error code");
        user.set_failure(
            &format!("answered {status} {code}, expected 200"),
            &mut request,
            None,
            None,
        )?;
    }
    Ok(body)
}

/// Purchase answers of the whole run by status and code, since goose's
/// request tables do not see them (see `attempt_purchase`).
static PURCHASE_ANSWERS: Mutex<BTreeMap<(u16, String), u64>> = Mutex::new(BTreeMap::new());

fn count_purchase_answer(status: u16, code: &str) {
    let mut answers = PURCHASE_ANSWERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *answers.entry((status, code.to_owned())).or_default() += 1;
}

/// The purchase answers as a table for the end of the run; empty when the
/// scenario made no purchase.
pub fn purchase_answers_report() -> String {
    let answers = PURCHASE_ANSWERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if answers.is_empty() {
        return String::new();
    }
    let mut report = String::from(
        "\n === PURCHASE ANSWERS (each judged by its scenario; failures are in the tables above) ===\n",
    );
    for ((status, code), count) in answers.iter() {
        report.push_str(&format!(" {status} {code:<24} {count:>10}\n"));
    }
    report
}

/// A transaction failure with words for the error summary.
pub fn failure(message: String) -> Box<TransactionError> {
    Box::new(TransactionError::Custom(message))
}
