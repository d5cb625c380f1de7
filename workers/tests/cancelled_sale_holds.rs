//! Cancelling a sale while a stampede's worth of holds await payment. A
//! file of its own: its 40,000 holds load PostgreSQL for several seconds,
//! which would starve the timing-bound tests of `holds.rs` running beside
//! it (test files run one after another, the tests of a file at once).

mod common;

use std::time::Duration;

use common::{Shop, eventually};
use flashsale::domain::Role;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// A cancel used to end every unpaid hold in its own transaction, under
/// the dependency bound (1 s): a sale with a whole stampede's holds awaiting
/// payment could not be cancelled at all (503 on every retry). The cancel
/// now only changes the sale; payments refuse a cancelled sale's holds and
/// the sweep ends them in batches.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_sale_with_a_stampedes_worth_of_unpaid_holds_can_be_cancelled(pg: PgPool) {
    const HOLDS: usize = 40_000;
    let shop = Shop::open(pg, HOLDS as i64, 600).await;
    let users = shop.harness.users(HOLDS).await;
    let jobs = shop.harness.reserve(&users).await;
    shop.harness.enqueue_in_jobs_of(&jobs, 500).await;
    shop.harness
        .wait_for_orders(HOLDS as i64, Duration::from_secs(120))
        .await;
    let shopper = users[0];
    let token = shop.node.token(shopper, Role::Shopper);
    let order_id: Uuid = sqlx::query_scalar("select id from orders where user_id = $1")
        .bind(shopper)
        .fetch_one(&shop.harness.pg)
        .await
        .unwrap();
    let (_, order) = shop.order(&token, &order_id.to_string()).await;
    assert_eq!(order["status"], "awaiting_payment", "{order}");

    // Before bf79021 this answered 503 (the bound passed), on every retry.
    let sale = shop.change_sale(json!({"action": "cancel"})).await;
    assert_eq!(sale["state"], "cancelled", "{sale}");
    assert_eq!(
        shop.pay("evt_cancelled_stampede", &order).await.1["outcome"],
        "refund_required",
        "nothing of a cancelled sale is paid for after the cancel"
    );
    eventually(
        Duration::from_secs(60),
        "the sweep cancels every hold",
        || async { shop.invariants().await["holds_cancelled"] == HOLDS },
    )
    .await;
    let invariants = shop.invariants().await;
    assert_eq!(invariants["passed"], true, "{invariants:#}");
    assert_eq!(invariants["holds_awaiting"], 0);
    assert_eq!(invariants["holds_paid"], 0);
    assert_eq!(invariants["units_sold"], 0);
}
