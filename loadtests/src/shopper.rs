//! What every purchasing scenario shares: the shopper's session (token,
//! idempotency key, reservation), logging in, the purchase request, and
//! turning unexpected answers into goose failures.

use std::{
    sync::OnceLock,
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
    let (_, body) = expect_statuses(user, goose, &[200]).await?;
    let Some(token) = body["token"].as_str() else {
        return Err(Box::new(TransactionError::Custom(
            "login answered without a token".into(),
        )));
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
/// in a stampede; `accepted` says which of them this scenario counts as
/// success.
pub async fn attempt_purchase(
    user: &mut GooseUser,
    idempotency_key: &str,
    accepted: &[u16],
) -> Result<(u16, Value), Box<TransactionError>> {
    let builder = authorized(user, &GooseMethod::Post, "/api/purchase/attempt")?
        .header("Idempotency-Key", idempotency_key)
        .json(&purchase_body());
    let request = GooseRequest::builder()
        .set_request_builder(builder)
        .name("purchase attempt")
        .build();
    let goose = user.request(request).await?;
    expect_statuses(user, goose, accepted).await
}

/// Reads the body as JSON and marks the request failed unless its status
/// is one of `expected` (and succeeded when it is, whatever its class). A transport error is already a goose failure and
/// reads as status 0 with a null body.
pub async fn expect_statuses(
    user: &mut GooseUser,
    goose: GooseResponse,
    expected: &[u16],
) -> Result<(u16, Value), Box<TransactionError>> {
    let GooseResponse {
        mut request,
        response,
    } = goose;
    let Ok(response) = response else {
        return Ok((0, Value::Null));
    };
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !expected.contains(&status) {
        let code = body["error"]["code"].as_str().unwrap_or("no error code");
        user.set_failure(
            &format!("answered {status} {code}, expected one of {expected:?}"),
            &mut request,
            None,
            None,
        )?;
    } else if !request.success {
        // goose counts every non-2xx as a failure; 409, 410 and 429 are
        // answers a shopper can rightly get in these scenarios.
        user.set_success(&mut request)?;
    }
    Ok((status, body))
}
