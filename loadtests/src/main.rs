//! Goose load scenarios against a running flashsale cluster
//! (`scripts/up`, then `cargo run --release -- --host http://127.0.0.1:8080 ...`).
//!
//! Scenarios (pick one with `--scenarios`):
//! - `browse`: anonymous shoppers reading the current sale's status, the
//!   request a stampede starts with. It exercises nginx's micro-cache and
//!   the API's status path.
//!
//! The purchase scenarios (`stampede`, `retry-storm`) arrive with the
//! purchase endpoint (issues 3 and 5).

use goose::prelude::*;

#[tokio::main]
async fn main() -> Result<(), GooseError> {
    GooseAttack::initialize()?
        .register_scenario(scenario!("browse").register_transaction(transaction!(read_sale_status)))
        .execute()
        .await?;
    Ok(())
}

/// One read of the current sale; anything but 200 counts as a failure.
async fn read_sale_status(user: &mut GooseUser) -> TransactionResult {
    let mut goose = user.get("/api/flash-sale/status").await?;
    if let Ok(response) = &goose.response
        && !response.status().is_success()
    {
        let status = response.status();
        return user.set_failure(
            &format!("status answered {status}"),
            &mut goose.request,
            None,
            None,
        );
    }
    Ok(())
}
