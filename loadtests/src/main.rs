//! Goose load scenarios against a running flashsale cluster
//! (`scripts/up`, then `cargo run --release -- --host http://127.0.0.1:8080 ...`).
//!
//! Scenarios (pick one with `--scenarios`; loadtests/README.md has recipes):
//! - `browse`: anonymous shoppers reading the current sale's status.
//! - `stampede`: each shopper logs in, reads the sale, attempts one
//!   purchase with an idempotency key and follows its status until it is
//!   confirmed or failed.
//! - `retry-storm`: each shopper retries one purchase with the same
//!   idempotency key again and again; a second reservation for one key is a
//!   failure.

mod browse;
mod retry_storm;
mod shopper;
mod stampede;

use goose::prelude::*;

#[tokio::main]
async fn main() -> Result<(), GooseError> {
    GooseAttack::initialize()?
        .register_scenario(browse::scenario())
        .register_scenario(stampede::scenario())
        .register_scenario(retry_storm::scenario())
        .execute()
        .await?;
    print!("{}", shopper::purchase_answers_report());
    Ok(())
}
