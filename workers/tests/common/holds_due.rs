//! Holds written by a worker that then stops, and made due at once, so each
//! step after runs alone (a store call, or a worker started for it).

use std::time::Duration;

use flashsale_testkit::worker::Harness;
use uuid::Uuid;

/// Writes the users' holds with a worker that then stops.
pub async fn hold_with_a_stopped_worker(harness: &Harness, users: &[Uuid]) {
    let jobs = harness.reserve(users).await;
    assert_eq!(jobs.len(), users.len());
    harness.enqueue(&jobs).await;
    let worker = harness.spawn_worker(&[]);
    harness
        .wait_for_orders(users.len() as i64, Duration::from_secs(15))
        .await;
    drop(worker);
}

/// Moves every hold of the sale a minute past its deadline.
pub async fn make_holds_due(harness: &Harness) {
    sqlx::query(
        "update orders set pay_by = now() - interval '1 minute'
         where flash_sale_id = $1 and status = 'awaiting_payment'",
    )
    .bind(harness.sale.id)
    .execute(&harness.pg)
    .await
    .unwrap();
}
