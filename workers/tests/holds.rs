//! Checkout holds end to end: shoppers buy through a real API node, the
//! real worker writes their orders awaiting payment and sweeps the unpaid
//! ones, and a fake payment provider signs and delivers real webhooks.
//! Holds last 1–3 s here (`--hold-min-secs=1`).

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{
    Harness, Shop, WORKER, eventually, hold_with_a_stopped_worker, make_holds_due, order_id, pay_by,
};
use flashsale::{domain::Role, store::holds};
use flashsale_testkit::{
    node::ApiNode,
    payments::{FOREIGN_SECRET, FakeProvider, NEXT_SECRET, SECRET},
};
use futures::{StreamExt, stream};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// A node taking the provider's signed payments, for sales with holds as
/// short as the tests' (1 s).
async fn paying_node(harness: &Harness) -> ApiNode {
    ApiNode::start(
        harness,
        &[&format!("--webhook-secrets={SECRET}"), "--hold-min-secs=1"],
    )
    .await
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_paid_hold_is_sold_and_stays_sold_past_its_deadline(pg: PgPool) {
    let shop = Shop::open(pg, 5, 2).await;
    let (_, token) = shop.shopper().await;
    let accepted = shop.buy(&token).await;
    // The 202 names what to pay and by when: the sale's price, and the
    // reservation's own time plus the hold.
    let hold = &accepted["hold"];
    assert_eq!(hold["amount"], 4_999, "{accepted}");
    assert_eq!(hold["currency"], "EUR");

    let order = shop.order_of(&token, &accepted).await;
    assert_eq!(order["status"], "awaiting_payment", "{order}");
    assert_eq!(order["pay_by"], hold["pay_by"], "one deadline, one clock");
    let (status, receipt) = shop.pay("evt_paid", &order).await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(receipt["outcome"], "paid");
    assert_eq!(receipt["duplicate"], false);

    // Past the deadline and several sweeps, it is still paid and sold.
    tokio::time::sleep((pay_by(&order) - Utc::now()).to_std().unwrap_or_default()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, now) = shop.order(&token, order["id"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(now["status"], "paid", "{now}");
    let invariants = shop.invariants().await;
    assert_eq!(invariants["passed"], true, "{invariants:#}");
    assert_eq!(invariants["holds_paid"], 1);
    assert_eq!(invariants["units_sold"], 1);
    assert_eq!(shop.harness.redis_stock().await, 4);
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn an_abandoned_hold_expires_its_unit_is_sold_again_and_a_late_payment_is_refunded(
    pg: PgPool,
) {
    let shop = Shop::open(pg, 1, 1).await;
    let (first, first_token) = shop.shopper().await;
    let abandoned = shop
        .order_of(&first_token, &shop.buy(&first_token).await)
        .await;
    assert_eq!(abandoned["status"], "awaiting_payment");
    assert_eq!(shop.harness.redis_stock().await, 0, "held, not for sale");

    // The sweep expires it and the unit goes back on sale.
    let id = abandoned["id"].as_str().unwrap();
    eventually(Duration::from_secs(10), "the hold expires", || async {
        shop.order(&first_token, id).await.1["status"] == "expired"
    })
    .await;
    eventually(Duration::from_secs(5), "the unit is back", || async {
        shop.harness.redis_stock().await == 1
    })
    .await;
    let held: Option<i64> = shop.harness.redis_units_held(first).await;
    assert_eq!(held, None, "the shopper's allowance is given back");

    // Someone else buys it and is held for it.
    let (_, second_token) = shop.shopper().await;
    let resold = shop
        .order_of(&second_token, &shop.buy(&second_token).await)
        .await;
    assert_eq!(resold["status"], "awaiting_payment");

    // The first shopper pays after all: the money must go back, and the
    // unit stays the second shopper's.
    let (status, receipt) = shop.pay("evt_late", &abandoned).await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(receipt["outcome"], "refund_required");
    assert_eq!(shop.order(&first_token, id).await.1["status"], "expired");
    let invariants = shop.invariants().await;
    assert_eq!(invariants["passed"], true, "{invariants:#}");
    assert_eq!(invariants["oversold"], 0);
    assert_eq!(invariants["units_sold"], 1);
    assert_eq!(invariants["holds_expired"], 1);
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_shopper_cancels_their_hold_and_only_theirs(pg: PgPool) {
    let shop = Shop::open(pg, 1, 60).await;
    let (_, token) = shop.shopper().await;
    let (_, stranger) = shop.shopper().await;
    let order = shop.order_of(&token, &shop.buy(&token).await).await;
    let id = order["id"].as_str().unwrap();

    // Another shopper neither sees nor cancels it; an admin sees it.
    let (status, body) = shop.order(&stranger, id).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("ORDER_NOT_FOUND"))
    );
    let (status, _) = shop.cancel(&stranger, id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let admin = shop.node.token(shop.harness.admin.actor_id, Role::Admin);
    assert_eq!(shop.order(&admin, id).await.0, StatusCode::OK);

    let (status, cancelled) = shop.cancel(&token, id).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(
        shop.harness.redis_stock().await,
        1,
        "the unit is back at once"
    );
    let (status, again) = shop.cancel(&token, id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(again["error"]["code"], "ORDER_NOT_AWAITING_PAYMENT");
    // A payment for it now is refunded, not taken.
    assert_eq!(
        shop.pay("evt_after_cancel", &order).await.1["outcome"],
        "refund_required"
    );

    // The stranger buys the unit.
    let resold = shop.order_of(&stranger, &shop.buy(&stranger).await).await;
    assert_eq!(resold["status"], "awaiting_payment");
    let invariants = shop.invariants().await;
    assert_eq!(invariants["passed"], true, "{invariants:#}");
    assert_eq!(invariants["holds_cancelled"], 1);
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn one_event_delivered_twenty_times_at_once_pays_once(pg: PgPool) {
    let shop = Shop::open(pg, 2, 60).await;
    let (_, token) = shop.shopper().await;
    let order = shop.order_of(&token, &shop.buy(&token).await).await;
    let delivery = shop.provider.signed(
        "evt_twenty",
        FakeProvider::payment_body(order_id(&order), 4_999, "EUR"),
    );
    let answers: Vec<_> = stream::iter(0..20)
        .map(|_| shop.provider.send(&delivery))
        .buffer_unordered(20)
        .collect()
        .await;
    assert!(
        answers.iter().all(|answer| answer.status == StatusCode::OK),
        "{answers:?}"
    );
    assert!(
        answers
            .iter()
            .all(|answer| answer.body["outcome"] == "paid")
    );
    let firsts = answers
        .iter()
        .filter(|answer| answer.body["duplicate"] == false)
        .count();
    assert_eq!(firsts, 1, "exactly one delivery acted: {answers:?}");
    assert_eq!(shop.payment_events().await, 1);
    let invariants = shop.invariants().await;
    assert_eq!(invariants["passed"], true, "{invariants:#}");
    assert_eq!(invariants["holds_paid"], 1);
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn forged_stale_or_oversized_webhooks_change_nothing_and_a_rotated_secret_pays(pg: PgPool) {
    let shop = Shop::open(pg, 2, 60).await;
    let (_, token) = shop.shopper().await;
    let order = shop.order_of(&token, &shop.buy(&token).await).await;
    let body = FakeProvider::payment_body(order_id(&order), 4_999, "EUR");
    let refused = |answer: &flashsale_testkit::payments::Answer, status: StatusCode, code: &str| {
        assert_eq!(answer.status, status, "{}", answer.body);
        assert_eq!(answer.body["error"]["code"], code, "{}", answer.body);
        assert!(answer.body["error"]["request_id"].is_string());
    };

    // The body changed after signing: one cent less, same signature.
    let mut tampered = shop.provider.signed("evt_tampered", body.clone());
    tampered.body = tampered.body.replace("4999", "4998");
    refused(
        &shop.provider.send(&tampered).await,
        StatusCode::UNAUTHORIZED,
        "WEBHOOK_SIGNATURE_INVALID",
    );
    // Signed with a secret the shop does not know.
    let foreign = FakeProvider::new(&shop.node.base, FOREIGN_SECRET);
    refused(
        &foreign
            .send(&foreign.signed("evt_foreign", body.clone()))
            .await,
        StatusCode::UNAUTHORIZED,
        "WEBHOOK_SIGNATURE_INVALID",
    );
    // A genuine delivery replayed ten minutes later.
    let stale = shop
        .provider
        .signed_at("evt_stale", Utc::now().timestamp() - 600, body.clone());
    refused(
        &shop.provider.send(&stale).await,
        StatusCode::BAD_REQUEST,
        "WEBHOOK_TIMESTAMP_STALE",
    );
    // No signature at all.
    let mut unsigned = shop.provider.signed("evt_unsigned", body.clone());
    unsigned.signature = String::new();
    refused(
        &shop.provider.send(&unsigned).await,
        StatusCode::UNAUTHORIZED,
        "WEBHOOK_SIGNATURE_INVALID",
    );
    // A body past the node's bound (16 KiB), correctly signed.
    let padded = json!({
        "type": "payment.succeeded",
        "data": { "order_id": order_id(&order), "amount": 4_999, "currency": "EUR" },
        "padding": "x".repeat(20_000),
    });
    let oversized = shop.provider.signed("evt_oversized", padded.to_string());
    refused(
        &shop.provider.send(&oversized).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
    );
    // Authentic but not an event this engine reads.
    let garbage = shop.provider.signed("evt_garbage", "{\"type\":".to_owned());
    refused(
        &shop.provider.send(&garbage).await,
        StatusCode::BAD_REQUEST,
        "WEBHOOK_MALFORMED",
    );

    assert_eq!(
        shop.payment_events().await,
        0,
        "nothing refused was recorded"
    );
    assert_eq!(
        shop.order(&token, order["id"].as_str().unwrap()).await.1["status"],
        "awaiting_payment"
    );

    // The provider rotates to the next secret: the shop accepts both.
    let rotated = FakeProvider::new(&shop.node.base, NEXT_SECRET);
    let answer = rotated
        .pay("evt_rotated", order_id(&order), 4_999, "EUR")
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["outcome"], "paid");
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_payment_of_another_amount_or_currency_is_flagged_not_taken(pg: PgPool) {
    let shop = Shop::open(pg, 2, 60).await;
    let (_, token) = shop.shopper().await;
    let order = shop.order_of(&token, &shop.buy(&token).await).await;
    let id = order_id(&order);
    for (event, amount, currency) in [("evt_short", 4_998, "EUR"), ("evt_dollars", 4_999, "USD")] {
        let answer = shop.provider.pay(event, id, amount, currency).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.body["outcome"], "amount_mismatch");
    }
    let unknown = shop
        .provider
        .pay("evt_unknown", Uuid::now_v7(), 4_999, "EUR")
        .await;
    assert_eq!(
        unknown.status,
        StatusCode::OK,
        "the provider must stop retrying"
    );
    assert_eq!(unknown.body["outcome"], "unknown_order");
    assert_eq!(
        shop.order(&token, &id.to_string()).await.1["status"],
        "awaiting_payment"
    );
    assert_eq!(
        shop.payment_events().await,
        3,
        "each flagged for an operator"
    );
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_thousand_payments_at_their_exact_deadline_each_end_their_hold_once(pg: PgPool) {
    let holds = 1_000;
    let harness = Harness::with_hold(WORKER, pg, holds, 1, Some(3)).await;
    let node = paying_node(&harness).await;
    let provider = FakeProvider::new(&node.base, SECRET);
    let users = harness.users(holds as usize).await;
    let purchases = harness.reserve(&users).await;
    assert_eq!(purchases.len(), holds as usize);
    harness.enqueue_in_jobs_of(&purchases, 100).await;
    let _worker = harness.spawn_worker(&[("FLASHSALE_HOLD_SWEEP_MS", "50")]);
    harness
        .wait_for_orders(holds, Duration::from_secs(30))
        .await;

    // Each payment leaves around its own order's deadline (from 1 s before
    // to 1 s after, spread evenly): those that reach the node by
    // the deadline pay, however long they then queue for PostgreSQL; the
    // others meet the sweep (every 50 ms, expiring what is past its
    // deadline and the grace) on the same rows.
    let orders: Vec<(Uuid, DateTime<Utc>)> =
        sqlx::query_as("select id, pay_by from orders where flash_sale_id = $1")
            .bind(harness.sale.id)
            .fetch_all(&harness.pg)
            .await
            .unwrap();
    let answers: Vec<_> = stream::iter(orders.iter().copied().enumerate())
        .map(|(index, (order_id, pay_by))| {
            let provider = &provider;
            let at = pay_by + chrono::Duration::milliseconds(index as i64 * 2 - 1_000);
            async move {
                tokio::time::sleep((at - Utc::now()).to_std().unwrap_or_default()).await;
                // A provider delivers again, same event, after a 503, and
                // keeps trying for a while (real ones for hours): on a
                // loaded machine a burst of a thousand can keep some
                // payments past the node's 1 s bound for a few seconds.
                provider
                    .pay_until_answered(
                        &format!("evt_{order_id}"),
                        order_id,
                        4_999,
                        "EUR",
                        Duration::from_secs(60),
                    )
                    .await
            }
        })
        .buffer_unordered(holds as usize)
        .collect()
        .await;
    let failed: Vec<_> = answers
        .iter()
        .filter(|answer| answer.status != StatusCode::OK)
        .collect();
    assert!(
        failed.is_empty(),
        "{} refused, e.g. {:?}",
        failed.len(),
        failed.first()
    );

    // Each order ended once: paid with the one payment that paid it, or
    // expired with its payment to be refunded; never both, never neither.
    eventually(
        Duration::from_secs(10),
        "no hold is left awaiting",
        || async {
            let awaiting: i64 = sqlx::query_scalar(
            "select count(*) from orders where flash_sale_id = $1 and status = 'awaiting_payment'",
        )
        .bind(harness.sale.id)
        .fetch_one(&harness.pg)
        .await
        .unwrap();
            awaiting == 0
        },
    )
    .await;
    let outcomes: Vec<(String, String)> = sqlx::query_as(
        "select o.status, e.outcome from orders o
         join payment_events e on e.order_id = o.id
         where o.flash_sale_id = $1",
    )
    .bind(harness.sale.id)
    .fetch_all(&harness.pg)
    .await
    .unwrap();
    assert_eq!(
        outcomes.len(),
        holds as usize,
        "one payment event per order"
    );
    let paid = outcomes
        .iter()
        .filter(|(status, _)| status == "paid")
        .count();
    for (status, outcome) in &outcomes {
        match (status.as_str(), outcome.as_str()) {
            ("paid", "paid") | ("expired", "refund_required") => {}
            other => panic!("an order ended inconsistently: {other:?}"),
        }
    }
    eventually(
        Duration::from_secs(10),
        "every expired unit is back in Redis",
        || async { harness.redis_stock().await == holds - paid as i64 },
    )
    .await;
    let invariants: String = sqlx::query_scalar("select flash_sale_invariants($1)::text")
        .bind(harness.sale.id)
        .fetch_one(&harness.pg)
        .await
        .unwrap();
    let invariants: Value = serde_json::from_str(&invariants).unwrap();
    assert_eq!(invariants["passed"], true, "{invariants:#}");
    assert_eq!(invariants["holds_paid"], paid as i64);
    assert_eq!(invariants["holds_expired"], holds - paid as i64);
    let paid_late: i64 = sqlx::query_scalar(
        "select count(*) from payment_events e join orders o on o.id = e.order_id
         where e.outcome = 'paid' and e.received_at > o.pay_by",
    )
    .fetch_one(&harness.pg)
    .await
    .unwrap();
    assert_eq!(
        paid_late, 0,
        "a payment received after its deadline was taken"
    );
    eprintln!(
        "at the deadline: {paid} paid, {} expired and refunded",
        holds - paid as i64
    );
}

/// Units Redis wrote off for the sale.
async fn written_off(harness: &Harness) -> i64 {
    redis::cmd("HGET")
        .arg(&harness.redis.sale_keys(harness.sale.id).stats)
        .arg("units_written_off")
        .query_async::<Option<i64>>(&mut harness.raw.clone())
        .await
        .unwrap()
        .unwrap_or_default()
}

/// `count` shoppers' holds, written and confirmed in Redis without a
/// worker, all past their deadline.
async fn due_holds(harness: &Harness, count: usize) {
    let jobs = harness.reserve(&harness.users(count).await).await;
    let to_settle: Vec<flashsale::store::postgres::ReservationToSettle> =
        jobs.iter().map(Into::into).collect();
    let settled = harness
        .db
        .settle_batch(harness.sale.id, &to_settle)
        .await
        .unwrap();
    let confirmed: Vec<_> = jobs
        .iter()
        .zip(&settled.order_ids)
        .map(|(job, order)| (job.reservation_id, *order))
        .collect();
    harness
        .redis
        .confirm(harness.sale.id, &confirmed)
        .await
        .unwrap();
    make_holds_due(harness).await;
}

/// Review of issue 20: the return counted an order PostgreSQL had
/// committed but Redis not yet confirmed (still pending there) against the
/// room a second time, and wrote the cancelled hold's unit off: Redis then
/// said sold out while PostgreSQL had the unit.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_cancelled_holds_unit_goes_back_while_another_order_awaits_its_confirm(pg: PgPool) {
    let harness = Harness::with_hold(WORKER, pg, 2, 1, Some(60)).await;
    let users = harness.users(2).await;
    let jobs = harness.reserve(&users).await;
    let (cancelling, committed) = (&jobs[0], &jobs[1]);
    let settled = harness
        .db
        .settle_batch(harness.sale.id, &[cancelling.into(), committed.into()])
        .await
        .unwrap();
    let cancelled_order = settled.order_ids[0].unwrap();
    // The first is confirmed in Redis; the second's confirm has not run yet.
    harness
        .redis
        .confirm(
            harness.sale.id,
            &[(cancelling.reservation_id, Some(cancelled_order))],
        )
        .await
        .unwrap();
    assert_eq!(harness.pending_count().await, 1);

    let flashsale::store::postgres::Cancelled::Now(hold) = harness
        .db
        .cancel_hold(cancelled_order, cancelling.user_id)
        .await
        .unwrap()
    else {
        panic!("the hold was awaiting payment");
    };
    let returned =
        flashsale::store::holds::return_units(&harness.db, &harness.redis, &[hold]).await;
    assert_eq!(returned.holds, 1);
    assert_eq!(
        harness.redis_stock().await,
        1,
        "the cancelled unit is on sale again"
    );
    assert_eq!(written_off(&harness).await, 0);
}

/// Review of hold-storm (2026-12-02 06:31 UTC: 148 units written off,
/// Redis short of PostgreSQL by as many for good): a return reads the room
/// PostgreSQL has left, then gives its units back in Redis. Another worker
/// that ended its holds after that read and gave them back first made the
/// room look too small by its own units, and the first return's units were
/// written off instead of going back on sale.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_return_whose_room_was_read_before_another_return_writes_nothing_off(pg: PgPool) {
    let harness = Harness::with_hold(WORKER, pg, 2, 1, Some(60)).await;
    let (sale, product) = (harness.sale.id, harness.sale.product_id);
    due_holds(&harness, 2).await;

    // The first worker ends one hold and reads the room: one unit.
    let first = harness.db.end_due_holds(product, 1).await.unwrap();
    let room = holds::read_room(&harness.db, &harness.redis, sale)
        .await
        .unwrap();
    // The second ends the other and gives it back before the first's
    // Redis call.
    let second = harness.db.end_due_holds(product, 1).await.unwrap();
    let returned = holds::return_units(&harness.db, &harness.redis, &second).await;
    assert_eq!(returned.holds, 1);
    // The first gives its unit back with the room it read.
    harness
        .redis
        .return_held(sale, &first, &[], room)
        .await
        .unwrap();

    assert_eq!(written_off(&harness).await, 0);
    assert_eq!(
        harness.redis_stock().await,
        2,
        "both units are on sale again"
    );
}

/// Review of the return's room: an operator adding a unit to the sale
/// between a return's room read and its Redis call (PostgreSQL's allotment
/// grows, arming adds the unit to Redis's stock) made the room look short
/// by that unit, and the return's unit was written off.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_return_whose_room_was_read_before_an_operator_added_stock_writes_nothing_off(
    pg: PgPool,
) {
    let harness = Harness::with_hold(WORKER, pg, 1, 1, Some(60)).await;
    let (sale, product) = (harness.sale.id, harness.sale.product_id);
    due_holds(&harness, 1).await;

    let ended = harness.db.end_due_holds(product, 1).await.unwrap();
    let room = holds::read_room(&harness.db, &harness.redis, sale)
        .await
        .unwrap();
    // The operator adds a unit (the product had one more) before the
    // return's Redis call.
    sqlx::query(
        "update stocks set total_quantity = total_quantity + 1,
                           available_quantity = available_quantity + 1
         where product_id = $1",
    )
    .bind(product)
    .execute(&harness.pg)
    .await
    .unwrap();
    let grown = harness
        .db
        .add_sale_stock(sale, 1, Utc::now(), &harness.admin)
        .await
        .unwrap();
    flashsale::store::arming::arm_sale(&harness.db, &harness.redis, &grown)
        .await
        .unwrap();
    harness
        .redis
        .return_held(sale, &ended, &[], room)
        .await
        .unwrap();

    assert_eq!(written_off(&harness).await, 0);
    assert_eq!(
        harness.redis_stock().await,
        2,
        "the returned unit and the added one are on sale"
    );
}

/// Review of issue 20: after Redis lost a sale, arming restored the
/// record of a hold cancelled in PostgreSQL (its return to Redis still
/// owed) as `confirmed`; the owed return then took the shopper's units
/// down a second time, below what they hold, and they could buy past the
/// per-user limit.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn an_owed_return_after_redis_lost_the_sale_gives_nothing_back_twice(pg: PgPool) {
    let harness = Harness::with_hold(WORKER, pg, 5, 2, Some(60)).await;
    let shopper = harness.users(1).await[0];
    let first = harness.reserve(&[shopper]).await.remove(0);
    let second = harness.reserve(&[shopper]).await.remove(0);
    let settled = harness
        .db
        .settle_batch(harness.sale.id, &[(&first).into(), (&second).into()])
        .await
        .unwrap();
    // The first hold is cancelled in PostgreSQL; Redis goes away before
    // the units are returned there.
    let cancelled = harness
        .db
        .cancel_hold(settled.order_ids[0].unwrap(), shopper)
        .await
        .unwrap();
    assert!(matches!(
        cancelled,
        flashsale::store::postgres::Cancelled::Now(_)
    ));
    harness.wipe_redis().await;
    flashsale::store::arming::arm_sale(&harness.db, &harness.redis, &harness.sale)
        .await
        .unwrap();
    assert_eq!(
        harness.redis_units_held(shopper).await,
        Some(1),
        "rebuilt from PostgreSQL"
    );
    assert_eq!(harness.redis_stock().await, 4);

    let owed = flashsale::store::holds::return_owed(&harness.db, &harness.redis).await;
    assert_eq!(owed.failed_sales, 0);
    assert_eq!(
        harness.redis_units_held(shopper).await,
        Some(1),
        "still the one unit held"
    );
    assert_eq!(harness.redis_stock().await, 4, "nothing offered twice");
    let (status, _) = harness
        .reservation_status(first.reservation_id)
        .await
        .unwrap();
    assert_eq!(status.as_str(), "released", "restored as the hold ended");
}

/// Review of issue 20: a cancelled sale's unpaid holds could still be paid
/// for up to their whole hold. A payment after the cancel is refunded, and
/// the sweep ends the holds (`cancelled`) and gives their units back.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn cancelling_a_sale_cancels_its_unpaid_holds(pg: PgPool) {
    let shop = Shop::open(pg, 3, 600).await;
    let (shopper, token) = shop.shopper().await;
    let order = shop.order_of(&token, &shop.buy(&token).await).await;
    shop.change_sale(json!({"action": "cancel"})).await;

    assert_eq!(
        shop.pay("evt_after_sale_cancel", &order).await.1["outcome"],
        "refund_required"
    );
    let id = order["id"].as_str().unwrap();
    eventually(
        Duration::from_secs(10),
        "the sweep cancels the hold",
        || async { shop.order(&token, id).await.1["status"] == "cancelled" },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the sweep returns the units to Redis",
        || async { shop.harness.redis_units_held(shopper).await.is_none() },
    )
    .await;
    let invariants = shop.invariants().await;
    assert_eq!(invariants["passed"], true, "{invariants:#}");
    assert_eq!(invariants["holds_cancelled"], 1);
}

/// With no worker sweeping, so that only the sale's state can refuse it: a
/// payment after the cancel is refunded and the hold stays as it was; its
/// shopper's own cancel still works meanwhile; the sweep then ends the rest
/// `cancelled`, even past their deadline (never `expired`).
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_cancelled_sales_hold_is_refused_payment_until_the_sweep_cancels_it(pg: PgPool) {
    let harness = Harness::with_hold(WORKER, pg, 2, 1, Some(600)).await;
    let users = harness.users(2).await;
    hold_with_a_stopped_worker(&harness, &users).await;
    let node = paying_node(&harness).await;
    let (status, sale) = node
        .change_sale(&harness, json!({"action": "cancel"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{sale}");
    let statuses = || async {
        sqlx::query_scalar::<_, String>(
            "select status from orders where flash_sale_id = $1 order by id",
        )
        .bind(harness.sale.id)
        .fetch_all(&harness.pg)
        .await
        .unwrap()
    };
    assert_eq!(
        statuses().await,
        ["awaiting_payment"; 2],
        "the sweep's to end"
    );
    let holds_to_cancel = || async {
        sqlx::query_scalar::<_, bool>("select holds_to_cancel from flash_sales where id = $1")
            .bind(harness.sale.id)
            .fetch_one(&harness.pg)
            .await
            .unwrap()
    };
    assert!(holds_to_cancel().await, "the sweep is told");

    let order: Uuid = sqlx::query_scalar("select id from orders where user_id = $1")
        .bind(users[0])
        .fetch_one(&harness.pg)
        .await
        .unwrap();
    let provider = FakeProvider::new(&node.base, SECRET);
    let paid = provider
        .pay("evt_cancelled_sale", order, 4_999, "EUR")
        .await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    assert_eq!(paid.body["outcome"], "refund_required", "{}", paid.body);
    assert_eq!(statuses().await, ["awaiting_payment"; 2], "nothing paid");

    // The other shopper lets theirs go before the sweep comes.
    let other: Uuid = sqlx::query_scalar("select id from orders where user_id = $1")
        .bind(users[1])
        .fetch_one(&harness.pg)
        .await
        .unwrap();
    let own_cancel = node
        .client
        .post(format!("{}/api/orders/{other}/cancel", node.base))
        .bearer_auth(node.token(users[1], Role::Shopper))
        .send()
        .await
        .unwrap();
    assert_eq!(own_cancel.status(), StatusCode::OK);

    make_holds_due(&harness).await;
    let swept = holds::sweep(
        &harness.db,
        &harness.redis,
        &mut holds::SweepBatch::default(),
    )
    .await;
    assert_eq!(
        (swept.cancelled_with_sale, swept.expired, swept.failures),
        (1, 0, 0)
    );
    assert_eq!(statuses().await, ["cancelled"; 2]);
    assert!(
        !holds_to_cancel().await,
        "none left: the sweep stops asking"
    );
    let invariants = harness.sale_invariants().await;
    assert_eq!(invariants["passed"], true, "{invariants:#}");
    assert_eq!(invariants["holds_cancelled"], 2);
}

/// The red-team reading's race: a payment waits for its order's lock (held
/// here as another delivery or a sweep batch would), and the sale is
/// cancelled during that wait. The payment's first read of the sale is from
/// before the wait; it must still not pay.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_payment_that_waited_on_its_order_while_the_sale_was_cancelled_is_refunded(pg: PgPool) {
    let harness = Harness::with_hold(WORKER, pg, 1, 1, Some(600)).await;
    let users = harness.users(1).await;
    hold_with_a_stopped_worker(&harness, &users).await;
    let node = paying_node(&harness).await;
    let provider = FakeProvider::new(&node.base, SECRET);
    let order: Uuid = sqlx::query_scalar("select id from orders where user_id = $1")
        .bind(users[0])
        .fetch_one(&harness.pg)
        .await
        .unwrap();

    let mut holding = harness.pg.begin().await.unwrap();
    sqlx::query("select id from orders where id = $1 for update")
        .bind(order)
        .execute(&mut *holding)
        .await
        .unwrap();
    let (paid, ()) = tokio::join!(
        provider.pay("evt_waited_through_a_cancel", order, 4_999, "EUR"),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (status, sale) = node
                .change_sale(&harness, json!({"action": "cancel"}))
                .await;
            assert_eq!(status, StatusCode::OK, "{sale}");
            holding.commit().await.unwrap();
        }
    );
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    assert_eq!(paid.body["outcome"], "refund_required", "{}", paid.body);
    let status: String = sqlx::query_scalar("select status from orders where id = $1")
        .bind(order)
        .fetch_one(&harness.pg)
        .await
        .unwrap();
    assert_eq!(
        status, "awaiting_payment",
        "not paid; the sweep's to cancel"
    );
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn the_shoppers_stream_tells_how_each_hold_ended(pg: PgPool) {
    let shop = Shop::open(pg, 3, 60).await;
    let (_, token) = shop.shopper().await;
    let mut events = shop.events(&token).await;
    events.next_named("sale", Duration::from_secs(5)).await;

    let paid = shop.order_of(&token, &shop.buy(&token).await).await;
    // The purchase event names the order and what to pay, by when.
    let confirmed = events.next_named("purchase", Duration::from_secs(10)).await;
    assert_eq!(confirmed.data["status"], "confirmed");
    assert_eq!(confirmed.data["order_id"], paid["id"], "{}", confirmed.data);
    assert_eq!(
        confirmed.data["hold"],
        json!({"pay_by": paid["pay_by"], "amount": paid["amount"], "currency": paid["currency"]})
    );
    assert_eq!(
        shop.pay("evt_stream_paid", &paid).await.1["outcome"],
        "paid"
    );
    let event = events.next_named("order", Duration::from_secs(10)).await;
    assert_eq!(event.data["order_id"], paid["id"]);
    assert_eq!(event.data["status"], "paid");

    // A second purchase (the limit is one: a fresh shopper's stream).
    let (_, other) = shop.shopper().await;
    let mut other_events = shop.events(&other).await;
    other_events
        .next_named("sale", Duration::from_secs(5))
        .await;
    let cancelled = shop.order_of(&other, &shop.buy(&other).await).await;
    assert_eq!(
        shop.cancel(&other, cancelled["id"].as_str().unwrap())
            .await
            .0,
        StatusCode::OK
    );
    let event = other_events
        .next_named("order", Duration::from_secs(10))
        .await;
    assert_eq!(event.data["order_id"], cancelled["id"]);
    assert_eq!(event.data["status"], "cancelled");
    // The first shopper's stream is not told of another shopper's order.
    let leaked = tokio::time::timeout(
        Duration::from_secs(1),
        events.next_named("order", Duration::from_secs(5)),
    )
    .await;
    assert!(leaked.is_err(), "another shopper's order event: {leaked:?}");

    // A stream opened afterwards starts with the present: the purchase,
    // and how its hold ended.
    let mut reconnected = shop.events(&other).await;
    let purchase = reconnected
        .next_named("purchase", Duration::from_secs(5))
        .await;
    assert_eq!(purchase.data["status"], "confirmed", "it became an order");
    assert_eq!(purchase.data["order_id"], cancelled["id"]);
    assert_eq!(purchase.data["hold"]["pay_by"], cancelled["pay_by"]);
    let ended = reconnected
        .next_named("order", Duration::from_secs(5))
        .await;
    assert_eq!(ended.data["status"], "cancelled");
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn the_development_payment_path_pays_with_a_signed_webhook(pg: PgPool) {
    let shop = Shop::open(pg, 3, 60).await;
    let (_, token) = shop.shopper().await;
    let (_, stranger) = shop.shopper().await;
    let order = shop.order_of(&token, &shop.buy(&token).await).await;
    let path = format!("/api/dev/orders/{}/pay", order["id"].as_str().unwrap());

    let (status, _) = shop
        .request(reqwest::Method::POST, &path, &stranger, Some(json!({})))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "only the order's owner pays it here"
    );
    let (status, receipt) = shop
        .request(reqwest::Method::POST, &path, &token, Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(receipt["outcome"], "paid");
    assert_eq!(
        shop.order(&token, order["id"].as_str().unwrap()).await.1["status"],
        "paid"
    );
    // Paying again is a second payment event: refunded, not a second sale.
    let (_, again) = shop
        .request(reqwest::Method::POST, &path, &token, Some(json!({})))
        .await;
    assert_eq!(again["outcome"], "refund_required");
    assert_eq!(shop.payment_events().await, 2);
}

/// Review of hold-storm (RELIABILITY.md): the units of an expiry wave came
/// back ~30 s late while every sweep of both workers timed out at its 1 s
/// bound. An expiry batch that outlasts the bound is given up by the
/// worker but goes on in PostgreSQL, holding the product's lock, and is
/// rolled back at its end; the next sweep waits for that lock out of its
/// own second and gives up in turn, and a batch as large never finishes.
/// Here each expiry costs 10 ms, so the 300 holds due take 3 s in one
/// batch against the worker's 1 s bound.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn holds_expire_when_one_batch_outlasts_the_bound_and_postgres_drops_what_the_worker_gave_up(
    pg: PgPool,
) {
    const HOLDS: i64 = 300;
    let harness = Harness::with_hold(WORKER, pg, HOLDS, 1, Some(600)).await;
    let users = harness.users(HOLDS as usize).await;
    hold_with_a_stopped_worker(&harness, &users).await;
    for statement in [
        "create function slow_expiry() returns trigger language plpgsql as
         $$ begin perform pg_sleep(0.01); return new; end $$",
        "create trigger slow_expiry before update of status on orders for each row
         when (old.status = 'awaiting_payment' and new.status = 'expired')
         execute function slow_expiry()",
    ] {
        sqlx::query(statement).execute(&harness.pg).await.unwrap();
    }
    make_holds_due(&harness).await;

    let _worker = harness.spawn_worker(&[("FLASHSALE_DEPENDENCY_TIMEOUT_MS", "1000")]);
    let give_up = Instant::now() + Duration::from_secs(40);
    let (mut longest_statement, mut longest_query) = (0.0_f64, String::new());
    loop {
        // The longest statement a client session (the worker's, or this
        // test's pool) is running now; not PostgreSQL's own (a CI run
        // failed on autovacuum's 7.5 s `VACUUM ANALYZE orders`, which no
        // bound of the worker's covers).
        let (expired, running, query): (i64, f64, String) = sqlx::query_as(
            "select (select count(*) from orders
                     where flash_sale_id = $1 and status = 'expired'),
                    coalesce(longest.seconds, 0)::float8, coalesce(longest.query, '')
             from (select 1) one left join lateral (
                 select extract(epoch from clock_timestamp() - query_start) as seconds,
                        application_name || ' (' || backend_type || '): ' || left(query, 120) as query
                 from pg_stat_activity
                 where datname = current_database() and state = 'active'
                   and backend_type = 'client backend' and pid <> pg_backend_pid()
                 order by query_start limit 1) longest on true",
        )
        .bind(harness.sale.id)
        .fetch_one(&harness.pg)
        .await
        .unwrap();
        if running > longest_statement {
            (longest_statement, longest_query) = (running, query);
        }
        if expired == HOLDS {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "{expired} of {HOLDS} holds expired in 40 s; the longest statement ran {longest_statement:.1} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        longest_statement < 1.5,
        "PostgreSQL ran a statement for {longest_statement:.1} s, past the worker's 1 s bound: {longest_query}"
    );
    let invariants = harness.sale_invariants().await;
    assert_eq!(invariants["passed"], true, "{invariants:#}");
}
