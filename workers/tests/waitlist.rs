//! Waitlists end to end: shoppers join a sold-out sale's waitlist through a
//! real API node, the real worker's sweep (or a shopper's cancel) ends a
//! hold and offers its unit to the head of the waitlist, and the offer is a
//! hold of its own, paid by a signed webhook or expiring to the next.

mod common;

use std::time::Duration;

use common::{Harness, Shop, WORKER, eventually, hold_with_a_stopped_worker, make_holds_due};
use flashsale::{
    domain::Role,
    store::{holds, postgres::Cancelled},
};
use flashsale_testkit::node::ApiNode;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

async fn join(shop: &Shop, token: &str) -> (StatusCode, Value) {
    shop.request(Method::POST, &waitlist_path(shop), token, None)
        .await
}

async fn place(shop: &Shop, token: &str) -> (StatusCode, Value) {
    shop.request(Method::GET, &waitlist_path(shop), token, None)
        .await
}

async fn leave(shop: &Shop, token: &str) -> StatusCode {
    shop.request(Method::DELETE, &waitlist_path(shop), token, None)
        .await
        .0
}

fn waitlist_path(shop: &Shop) -> String {
    format!("/api/flash-sale/{}/waitlist", shop.harness.sale.id)
}

/// The shopper's offer, once the waitlist made it.
async fn offer_of(shop: &Shop, token: &str) -> Value {
    let mut last = Value::Null;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        let (_, view) = place(shop, token).await;
        if view["state"] == "offered" {
            return view["offer"].clone();
        }
        last = view;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no offer came: {last}");
}

async fn assert_invariants(shop: &Shop) -> Value {
    let invariants = shop.invariants().await;
    assert_eq!(invariants["passed"], true, "{invariants:#}");
    invariants
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn offers_go_in_join_order_each_is_a_hold_and_an_unpaid_one_goes_to_the_next(pg: PgPool) {
    let shop = Shop::open(pg, 1, 2).await;
    let (_, buyer) = shop.shopper().await;
    let waiters: Vec<(Uuid, String)> = [
        shop.shopper().await,
        shop.shopper().await,
        shop.shopper().await,
    ]
    .into();

    // While a unit is on sale, shoppers buy instead of waiting.
    let (status, refused) = join(&shop, &waiters[0].1).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "UNITS_ON_SALE");

    let held = shop.order_of(&buyer, &shop.buy(&buyer).await).await;
    let (status, refused) = join(&shop, &buyer).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(
        refused["error"]["code"], "HOLD_AWAITING_PAYMENT",
        "a holder pays or cancels first"
    );

    for (position, (_, token)) in waiters.iter().enumerate() {
        let (status, joined) = join(&shop, token).await;
        assert_eq!(status, StatusCode::CREATED, "{joined}");
        assert_eq!(joined["state"], "waiting");
        assert_eq!(joined["position"], position as i64 + 1, "join order");
    }
    let (status, again) = join(&shop, &waiters[0].1).await;
    assert_eq!(status, StatusCode::OK, "joining again keeps the place");
    assert_eq!(again["position"], 1);
    assert_eq!(again["length"], 3);

    // The second waiter leaves; the third moves up.
    assert_eq!(leave(&shop, &waiters[1].1).await, StatusCode::NO_CONTENT);
    let (status, gone) = place(&shop, &waiters[1].1).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(gone["error"]["code"], "NOT_ON_WAITLIST");
    assert_eq!(leave(&shop, &waiters[1].1).await, StatusCode::NOT_FOUND);
    assert_eq!(place(&shop, &waiters[2].1).await.1["position"], 2);

    // The buyer does not pay: their unit goes to the head of the waitlist
    // as a hold of its own, and never back on open sale.
    let first = offer_of(&shop, &waiters[0].1).await;
    assert_eq!(first["status"], "awaiting_payment", "{first}");
    assert_eq!(first["from_waitlist"], true);
    assert_eq!(first["amount"], held["amount"]);
    let id = first["id"].as_str().unwrap();
    assert_eq!(
        shop.order(&buyer, held["id"].as_str().unwrap()).await.1["status"],
        "expired"
    );
    assert_eq!(
        shop.order(&waiters[0].1, id).await.1["status"],
        "awaiting_payment"
    );
    assert_eq!(place(&shop, &waiters[2].1).await.1["position"], 1);
    eventually(Duration::from_secs(5), "Redis counts the offer", || async {
        shop.harness.redis_units_held(waiters[0].0).await == Some(1)
    })
    .await;
    assert_eq!(
        shop.harness.redis_stock().await,
        0,
        "the unit was offered, not put on sale"
    );
    let retry = shop
        .node
        .client
        .post(format!("{}/api/purchase/attempt", shop.node.base))
        .bearer_auth(&buyer)
        .header("idempotency-key", "buy-after-expiry")
        .json(&json!({ "sale_id": shop.harness.sale.id }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        retry.status(),
        StatusCode::GONE,
        "nobody buys an offered unit"
    );
    // The offer is the shopper's latest purchase.
    let (_, status_view) = shop
        .request(
            Method::GET,
            &format!("/api/purchase/status?sale_id={}", shop.harness.sale.id),
            &waiters[0].1,
            None,
        )
        .await;
    assert_eq!(status_view["order"]["id"], first["id"], "{status_view}");

    // Unpaid, it expires and goes to the next in line, who pays.
    let second = offer_of(&shop, &waiters[2].1).await;
    assert_eq!(shop.order(&waiters[0].1, id).await.1["status"], "expired");
    let (status, receipt) = shop.pay("evt_offer_paid", &second).await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(receipt["outcome"], "paid");
    let (status, view) = place(&shop, &waiters[2].1).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        view["offer"]["status"], "paid",
        "the offer stays shown: {view}"
    );
    let invariants = assert_invariants(&shop).await;
    assert_eq!(invariants["holds_expired"], 2);
    assert_eq!(invariants["holds_paid"], 1);
    assert_eq!(invariants["units_sold"], 1);
    assert_eq!(invariants["oversold"], 0);
    // An offer's order is its record: made when it was offered, with no
    // audit row beside it.
    let (offers, unstamped, audited): (i64, i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where o.reserved_at is null),
                count(a.reservation_id)
         from orders o left join purchase_attempts a using (reservation_id)
         where o.flash_sale_id = $1 and o.offered_from is not null",
    )
    .bind(shop.harness.sale.id)
    .fetch_one(&shop.harness.pg)
    .await
    .unwrap();
    assert_eq!((offers, unstamped, audited), (2, 0, 0));
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_cancel_offers_at_once_on_the_waiters_stream(pg: PgPool) {
    let shop = Shop::open(pg, 1, 600).await;
    let (_, buyer) = shop.shopper().await;
    let (_, waiter) = shop.shopper().await;
    let held = shop.order_of(&buyer, &shop.buy(&buyer).await).await;
    assert_eq!(join(&shop, &waiter).await.0, StatusCode::CREATED);
    let mut events = shop.events(&waiter).await;
    events.next_named("sale", Duration::from_secs(5)).await;

    let (status, cancelled) = shop.cancel(&buyer, held["id"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    let offered = events.next_named("order", Duration::from_secs(5)).await;
    let offered = offered.data;
    assert_eq!(offered["status"], "awaiting_payment", "{offered}");
    let offer = offer_of(&shop, &waiter).await;
    assert_eq!(offered["order_id"], offer["id"]);
    assert_eq!(
        offered["hold"],
        json!({"pay_by": offer["pay_by"], "amount": offer["amount"], "currency": offer["currency"]}),
        "the offer's terms come with it"
    );
    let (status, receipt) = shop.pay("evt_offer", &offer).await;
    assert_eq!(
        (status, receipt["outcome"].clone()),
        (StatusCode::OK, json!("paid"))
    );
    let paid = events.next_named("order", Duration::from_secs(5)).await;
    assert_eq!(paid.data["status"], "paid", "{}", paid.data);
    let invariants = assert_invariants(&shop).await;
    assert_eq!(invariants["holds_cancelled"], 1);
    assert_eq!(invariants["holds_paid"], 1);
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_banned_waiter_is_passed_over(pg: PgPool) {
    let shop = Shop::open(pg, 1, 1).await;
    let (_, buyer) = shop.shopper().await;
    let (banned_id, banned) = shop.shopper().await;
    let (_, next) = shop.shopper().await;
    shop.order_of(&buyer, &shop.buy(&buyer).await).await;
    assert_eq!(join(&shop, &banned).await.0, StatusCode::CREATED);
    assert_eq!(join(&shop, &next).await.0, StatusCode::CREATED);
    let admin = shop.node.token(shop.harness.admin.actor_id, Role::Admin);
    let (status, body) = shop
        .request(
            Method::POST,
            &format!("/api/admin/users/{banned_id}/ban"),
            &admin,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let offer = offer_of(&shop, &next).await;
    assert_eq!(offer["status"], "awaiting_payment");
    let offered_to_banned: i64 = sqlx::query_scalar(
        "select count(*) from orders where user_id = $1 and offered_from is not null",
    )
    .bind(banned_id)
    .fetch_one(&shop.harness.pg)
    .await
    .unwrap();
    assert_eq!(offered_to_banned, 0);
    let still_listed: i64 =
        sqlx::query_scalar("select count(*) from waitlist_entries where user_id = $1")
            .bind(banned_id)
            .fetch_one(&shop.harness.pg)
            .await
            .unwrap();
    assert_eq!(still_listed, 0, "a banned shopper leaves the waitlist");
    assert_invariants(&shop).await;
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn an_ended_sale_makes_no_offers(pg: PgPool) {
    let shop = Shop::open(pg, 1, 1).await;
    let (buyer_id, buyer) = shop.shopper().await;
    let (_, waiter) = shop.shopper().await;
    let held = shop.order_of(&buyer, &shop.buy(&buyer).await).await;
    assert_eq!(join(&shop, &waiter).await.0, StatusCode::CREATED);
    shop.change_sale(json!({"action": "end"})).await;

    eventually(Duration::from_secs(10), "the hold expires", || async {
        shop.order(&buyer, held["id"].as_str().unwrap()).await.1["status"] == "expired"
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "its units are back in Redis",
        || async { shop.harness.redis_units_held(buyer_id).await.is_none() },
    )
    .await;
    let (status, view) = place(&shop, &waiter).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["state"], "closed", "no offer after the end: {view}");
    assert_eq!(view["offer"], Value::Null);
    let (status, refused) = join(&shop, &buyer).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(refused["error"]["code"], "SALE_NOT_ACTIVE");
    let invariants = assert_invariants(&shop).await;
    assert_eq!(invariants["units_sold"], 0);
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_sale_without_holds_keeps_no_waitlist_and_a_buyer_at_the_limit_cannot_wait(pg: PgPool) {
    let harness = Harness::with_hold(WORKER, pg, 1, 1, None).await;
    let node = ApiNode::start(&harness, &[]).await;
    let user = harness.users(1).await[0];
    let token = node.token(user, Role::Shopper);
    let reply = node
        .client
        .post(format!(
            "{}/api/flash-sale/{}/waitlist",
            node.base, harness.sale.id
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::CONFLICT);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NO_WAITLIST", "{body}");

    // A buyer who paid for their limit has nothing to wait for.
    let shop = Shop::open(harness.pg.clone(), 1, 60).await;
    let (_, buyer) = shop.shopper().await;
    let order = shop.order_of(&buyer, &shop.buy(&buyer).await).await;
    assert_eq!(shop.pay("evt_limit", &order).await.1["outcome"], "paid");
    let (status, refused) = join(&shop, &buyer).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "ALREADY_PURCHASED");
}

/// Review of the waitlist: an offer that ended before Redis heard of it (its
/// hold of origin's return to Redis failed, and the offer's shopper
/// cancelled it meanwhile) was returned first, finding no record; the
/// origin's return then kept its unit from the stock for the offer and did
/// not grant it: Redis lost the unit for good.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn an_offer_that_ends_before_redis_heard_of_it_loses_no_unit(pg: PgPool) {
    let harness = Harness::with_hold(WORKER, pg, 1, 1, Some(600)).await;
    let [buyer, waiter] = harness.users(2).await[..] else {
        unreachable!()
    };
    hold_with_a_stopped_worker(&harness, &[buyer]).await;
    harness
        .db
        .join_waitlist(harness.sale.id, waiter)
        .await
        .unwrap();

    // The sweep ends the hold and offers its unit in PostgreSQL, then loses
    // Redis: nothing is returned there yet.
    make_holds_due(&harness).await;
    let ended = harness
        .db
        .end_due_holds(harness.sale.product_id, 512)
        .await
        .unwrap();
    assert_eq!(ended.len(), 1);
    let offer: Uuid = sqlx::query_scalar("select id from orders where offered_from is not null")
        .fetch_one(&harness.pg)
        .await
        .unwrap();

    // The waiter cancels the offer (they saw it in GET .../waitlist), and
    // its return runs while its origin is still owed.
    let Cancelled::Now(cancelled) = harness.db.cancel_hold(offer, waiter).await.unwrap() else {
        panic!("the offer was awaiting payment")
    };
    holds::return_units(&harness.db, &harness.redis, &[cancelled]).await;
    // Redis is back: the sweep pays what is owed.
    holds::return_owed(&harness.db, &harness.redis).await;
    holds::return_owed(&harness.db, &harness.redis).await;

    let owed: i64 = sqlx::query_scalar(
        "select count(*) from orders where pay_by is not null
           and status in ('expired', 'cancelled') and units_returned_at is null",
    )
    .fetch_one(&harness.pg)
    .await
    .unwrap();
    assert_eq!(owed, 0, "every return paid");
    assert_eq!(
        harness.redis_stock().await,
        harness.db.sale_room(harness.sale.id).await.unwrap(),
        "Redis offers what PostgreSQL can still sell"
    );
    assert_eq!(
        harness.redis_stock().await,
        1,
        "nobody waits: the unit is on sale"
    );
    assert_eq!(harness.redis_units_held(buyer).await, None);
    assert_eq!(harness.redis_units_held(waiter).await, None);
    let invariants = harness.sale_invariants().await;
    assert_eq!(invariants["passed"], true, "{invariants:#}");
}

/// Review of the waitlist: a waiter who bought from stock that came back
/// (an operator added units) and was offered a unit before that purchase
/// settled had the purchase refused at their limit: a 202 broken. The
/// purchase now wins and the offer goes to the next in line.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn a_purchase_accepted_before_an_offer_to_the_same_shopper_is_kept(pg: PgPool) {
    let harness = Harness::with_hold(WORKER, pg, 1, 1, Some(600)).await;
    let [buyer, waiter, next] = harness.users(3).await[..] else {
        unreachable!()
    };
    hold_with_a_stopped_worker(&harness, &[buyer]).await;
    for user in [waiter, next] {
        harness
            .db
            .join_waitlist(harness.sale.id, user)
            .await
            .unwrap();
    }
    // One more unit on sale: the waiter buys it (Redis accepts).
    sqlx::query(
        "update stocks set total_quantity = total_quantity + 1,
                           available_quantity = available_quantity + 1
         where product_id = $1",
    )
    .bind(harness.sale.product_id)
    .execute(&harness.pg)
    .await
    .unwrap();
    let node = ApiNode::start(&harness, &["--hold-min-secs=1"]).await;
    let (status, sale) = node.change_sale(&harness, json!({ "add_stock": 1 })).await;
    assert_eq!(status, StatusCode::OK, "{sale}");
    let purchase = harness.reserve(&[waiter]).await;
    assert_eq!(purchase.len(), 1, "the waiter's purchase is accepted");

    // Before it settles, the buyer's hold expires and its unit is offered
    // to the head of the waitlist: the same waiter.
    make_holds_due(&harness).await;
    harness
        .db
        .end_due_holds(harness.sale.product_id, 512)
        .await
        .unwrap();
    harness.enqueue(&purchase).await;
    let _worker = harness.spawn_worker(&[("FLASHSALE_HOLD_SWEEP_MS", "100")]);
    eventually(Duration::from_secs(15), "the purchase settles", || async {
        harness.pending_count().await == 0
    })
    .await;
    let (status, reason) = harness
        .reservation_status(purchase[0].reservation_id)
        .await
        .unwrap();
    assert_eq!(status.as_str(), "confirmed", "the 202 is kept: {reason:?}");
    let offers: Vec<(Uuid, String)> = sqlx::query_as(
        "select user_id, status from orders where offered_from is not null order by created_at",
    )
    .fetch_all(&harness.pg)
    .await
    .unwrap();
    assert_eq!(
        offers,
        [
            (waiter, "cancelled".to_string()),
            (next, "awaiting_payment".to_string())
        ],
        "the offer yielded to the purchase and went to the next in line"
    );
    eventually(Duration::from_secs(10), "Redis agrees", || async {
        harness.redis_units_held(waiter).await == Some(1)
            && harness.redis_units_held(next).await == Some(1)
    })
    .await;
    let invariants = harness.sale_invariants().await;
    assert_eq!(invariants["passed"], true, "{invariants:#}");
}

#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn the_operators_stats_count_holds_payments_to_act_on_and_the_waitlist(pg: PgPool) {
    let shop = Shop::open(pg, 2, 1).await;
    let (_, payer) = shop.shopper().await;
    let (_, walker) = shop.shopper().await;
    let (_, waiter) = shop.shopper().await;
    let paid = shop.order_of(&payer, &shop.buy(&payer).await).await;
    assert_eq!(shop.pay("evt_stats_paid", &paid).await.1["outcome"], "paid");
    let abandoned = shop.order_of(&walker, &shop.buy(&walker).await).await;
    assert_eq!(join(&shop, &waiter).await.0, StatusCode::CREATED);
    let offer = offer_of(&shop, &waiter).await;
    // A late payment for the expired hold, and a wrong amount for the offer.
    assert_eq!(
        shop.pay("evt_stats_late", &abandoned).await.1["outcome"],
        "refund_required"
    );
    let wrong = shop
        .provider
        .pay(
            "evt_stats_wrong",
            common::order_id(&offer),
            offer["amount"].as_i64().unwrap() + 1,
            "EUR",
        )
        .await;
    assert_eq!(wrong.body["outcome"], "amount_mismatch");

    let admin = shop.node.token(shop.harness.admin.actor_id, Role::Admin);
    let path = format!("/api/admin/flash-sales/{}/stats", shop.harness.sale.id);
    let mut stats = Value::Null;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        stats = shop.request(Method::GET, &path, &admin, None).await.1;
        if stats["purchase_latency"]["requests"].as_u64() >= Some(2)
            && stats["checkout"]["amount_mismatches"] == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        stats["checkout"],
        json!({
            "awaiting_payment": 1, "paid": 1, "expired": 1, "cancelled": 0,
            "refunds_required": 1, "amount_mismatches": 1, "waitlist": 0, "offers": 1,
        }),
        "{stats:#}"
    );
    let latency = &stats["purchase_latency"];
    assert!(latency["nodes"].as_u64() >= Some(1), "{latency}");
    assert!(latency["requests"].as_u64() >= Some(2), "{latency}");
    let (p50, p99) = (
        latency["p50_ms"].as_f64().unwrap(),
        latency["p99_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99, "{latency}");
}

/// An operator cancels the sale while a waitlist offer awaits payment and
/// more shoppers wait: the offer is cancelled with the other holds, nobody
/// is offered its unit, and the waitlist reads closed.
#[sqlx::test(migrator = "flashsale::store::postgres::MIGRATOR")]
async fn cancelling_the_sale_mid_offer_cancels_the_offer_and_offers_nothing_more(pg: PgPool) {
    let shop = Shop::open(pg, 1, 1).await;
    let (_, buyer) = shop.shopper().await;
    let (_, offered) = shop.shopper().await;
    let (_, next) = shop.shopper().await;
    shop.order_of(&buyer, &shop.buy(&buyer).await).await;
    for token in [&offered, &next] {
        assert_eq!(join(&shop, token).await.0, StatusCode::CREATED);
    }
    let offer = offer_of(&shop, &offered).await;
    // Long enough that the sweep would not end it before the cancel.
    sqlx::query("update orders set pay_by = now() + interval '10 minutes' where id = $1")
        .bind(common::order_id(&offer))
        .execute(&shop.harness.pg)
        .await
        .unwrap();
    shop.change_sale(json!({"action": "cancel"})).await;

    assert_eq!(
        shop.pay("evt_offer_after_cancel", &offer).await.1["outcome"],
        "refund_required"
    );
    let id = offer["id"].as_str().unwrap();
    eventually(
        Duration::from_secs(10),
        "the sweep cancels the offer",
        || async { shop.order(&offered, id).await.1["status"] == "cancelled" },
    )
    .await;
    // Sweeps come and go: the cancelled offer's unit goes to nobody.
    eventually(
        Duration::from_secs(10),
        "the cancelled offer's return",
        || async {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from orders where units_returned_at is null
               and status in ('expired', 'cancelled')",
            )
            .fetch_one(&shop.harness.pg)
            .await
            .unwrap()
                == 0
        },
    )
    .await;
    let (status, view) = place(&shop, &next).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["state"], "closed", "{view}");
    let offers: i64 =
        sqlx::query_scalar("select count(*) from orders where offered_from is not null")
            .fetch_one(&shop.harness.pg)
            .await
            .unwrap();
    assert_eq!(offers, 1, "no offer after the cancel");
    let invariants = assert_invariants(&shop).await;
    assert_eq!(invariants["units_sold"], 0);
}
