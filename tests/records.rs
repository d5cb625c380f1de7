//! A reservation record is written and read by five Lua scripts (through
//! `scripts/record.lua`) and by Rust (`ReservationRecord::encode` and
//! `parse_record`). Each script here reads a record Rust wrote, or writes
//! one Rust reads, against the real test Redis.

mod common;

use std::time::Duration;

use chrono::Utc;
use flashsale::{
    config::{RedisSettings, Secret},
    domain::{FailureReason, OrderStatus, Quantity, ReservationStatus, SaleState, may_buy},
    store::postgres::{CommittedOrder, EndedHold, Offer},
    store::redis::{
        RedisStore, ReleaseOutcome, ReservationRecord, ReserveOutcome, ReserveRequest, RoomRead,
        SaleKeys, SaleMirror, UserRate, parse_record,
    },
};
use futures::StreamExt;
use redis::AsyncCommands;
use uuid::Uuid;

const ALLOTTED: i64 = 100;

struct Sale {
    store: RedisStore,
    raw: redis::aio::MultiplexedConnection,
    id: Uuid,
}

impl Sale {
    async fn armed() -> Self {
        flashsale::tls::install_provider();
        let settings = RedisSettings {
            redis_url: Secret::new(common::redis_url()),
            redis_prefix: format!("records-{}", Uuid::now_v7().simple()),
        };
        let store = RedisStore::connect_lazy(&settings, Duration::from_secs(5)).unwrap();
        let id = Uuid::now_v7();
        let nothing_staged = store.sale_keys(id).staging(Uuid::nil());
        store
            .arm(&active_mirror(id, Some(nothing_staged)))
            .await
            .unwrap();
        Self {
            store,
            raw: common::redis_connection().await,
            id,
        }
    }

    /// A pending reservation written the way Rust encodes records, with
    /// its units taken from stock as `reserve.lua` would.
    async fn pending_from_rust(&mut self, quantity: i64, reserved_at_ms: i64) -> ReservationRecord {
        let record = ReservationRecord {
            reservation_id: Uuid::now_v7(),
            sale_id: self.id,
            user_id: Uuid::now_v7(),
            quantity: Quantity::new(quantity).unwrap(),
            status: ReservationStatus::Pending,
            reserved_at_ms,
            idempotency_key: format!("key-{}", Uuid::now_v7().simple()),
            reason: None,
            order_id: None,
        };
        let keys = self.store.sale_keys(self.id);
        let id = record.reservation_id.to_string();
        let _: () = redis::pipe()
            .hset(&keys.reservations, &id, record.encode())
            .zadd(&keys.pending, &id, reserved_at_ms)
            .hincr(&keys.buyers, record.user_id.to_string(), quantity)
            .hset(
                &keys.shoppers,
                format!("{}:{}", record.user_id, record.idempotency_key),
                format!("{id}|{quantity}"),
            )
            .hincr(&keys.meta, "stock", -quantity)
            .hincr(&keys.stats, "pending_units", quantity)
            .query_async(&mut self.raw)
            .await
            .unwrap();
        record
    }

    async fn stored(&mut self, reservation_id: Uuid) -> String {
        let keys = self.store.sale_keys(self.id);
        self.raw
            .hget(&keys.reservations, reservation_id.to_string())
            .await
            .unwrap()
    }

    async fn stat(&mut self, name: &str) -> i64 {
        let keys = self.store.sale_keys(self.id);
        let value: Option<i64> = self.raw.hget(&keys.stats, name).await.unwrap();
        value.unwrap_or_default()
    }
}

/// An active sale of ALLOTTED units, 3 per shopper, as arming mirrors it.
fn active_mirror(sale_id: Uuid, staged_buyers: Option<String>) -> SaleMirror {
    let now = Utc::now().timestamp_millis();
    SaleMirror {
        sale_id,
        allotted: ALLOTTED,
        confirmed: 0,
        state: "active",
        starts_at_ms: now - 60_000,
        ends_at_ms: now + 3_600_000,
        per_user_limit: 3,
        price: 100,
        version: 1,
        staged_buyers,
    }
}

fn reserve_request(sale_id: Uuid, user_id: Uuid, quantity: i64, key: &str) -> ReserveRequest<'_> {
    ReserveRequest {
        sale_id,
        user_id,
        quantity: Quantity::new(quantity).unwrap(),
        idempotency_key: key,
        reservation_id: Uuid::now_v7(),
        rate: UserRate {
            per_second: 1000,
            burst: 1000,
        },
    }
}

#[tokio::test]
async fn reserve_lua_writes_the_record_rust_reads() {
    let mut sale = Sale::armed().await;
    let user = Uuid::now_v7();
    let request = reserve_request(sale.id, user, 3, "from-lua");
    let ReserveOutcome::Accepted {
        reservation_id,
        reserved_at_ms,
        ..
    } = sale.store.reserve(&request).await.unwrap()
    else {
        panic!("the reservation was not accepted");
    };
    let stored = sale.stored(reservation_id).await;
    let parsed = parse_record(sale.id, reservation_id, &stored).unwrap();
    assert_eq!(
        parsed,
        ReservationRecord {
            reservation_id,
            sale_id: sale.id,
            user_id: user,
            quantity: Quantity::new(3).unwrap(),
            status: ReservationStatus::Pending,
            reserved_at_ms,
            idempotency_key: "from-lua".into(),
            reason: None,
            order_id: None,
        }
    );
    assert_eq!(parsed.encode(), stored, "Rust writes what Lua wrote");
}

/// `reserve.lua` writes the reservation time as text cut from `TIME`'s
/// seconds and microseconds (no number formatting), and answers it as a
/// number: the record, the pending set and the answer agree, for
/// reservations made until one falls in the first tenth of a second
/// (microseconds below 100,000: zero-padded) and one after it.
#[tokio::test]
async fn reserve_lua_records_the_time_it_answers() {
    let mut sale = Sale::armed().await;
    let keys = sale.store.sale_keys(sale.id);
    let _: () = sale.raw.hset(&keys.meta, "stock", 1_000).await.unwrap();
    let (mut padded, mut unpadded) = (0, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while padded == 0 || unpadded == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no time in {} of a second was drawn within 10 s",
            if padded == 0 {
                "the first tenth"
            } else {
                "the rest"
            }
        );
        tokio::time::sleep(Duration::from_millis(7)).await;
        let request = reserve_request(sale.id, Uuid::now_v7(), 1, "time");
        let ReserveOutcome::Accepted {
            reservation_id,
            reserved_at_ms,
            ..
        } = sale.store.reserve(&request).await.unwrap()
        else {
            panic!("not accepted");
        };
        let stored =
            parse_record(sale.id, reservation_id, &sale.stored(reservation_id).await).unwrap();
        assert_eq!(stored.reserved_at_ms, reserved_at_ms);
        let score: f64 = sale
            .raw
            .zscore(&keys.pending, reservation_id.to_string())
            .await
            .unwrap();
        assert_eq!(score as i64, reserved_at_ms);
        let now = Utc::now().timestamp_millis();
        assert!(
            (now - reserved_at_ms).abs() < 5_000,
            "{reserved_at_ms} vs {now}"
        );
        if reserved_at_ms % 1_000 < 100 {
            padded += 1;
        } else {
            unpadded += 1;
        }
    }
}

#[tokio::test]
async fn reserve_lua_replays_a_record_rust_wrote() {
    let mut sale = Sale::armed().await;
    let record = sale.pending_from_rust(2, 17).await;
    let request = reserve_request(sale.id, record.user_id, 2, &record.idempotency_key);
    assert_eq!(
        sale.store.reserve(&request).await.unwrap(),
        ReserveOutcome::Replayed {
            reservation_id: record.reservation_id,
            status: ReservationStatus::Pending,
        }
    );
}

/// A reservation that became an order replays as confirmed whatever became
/// of the order since (here a checkout hold that expired): `reserve.lua`
/// reads the order id from the seven-field record Rust writes. Without an
/// order, the record's own status is the answer.
#[tokio::test]
async fn reserve_lua_replays_a_reservation_that_became_an_order_as_confirmed() {
    let mut sale = Sale::armed().await;
    let keys = sale.store.sale_keys(sale.id);
    for (order_id, replayed) in [
        (Some(Uuid::now_v7()), ReservationStatus::Confirmed),
        (None, ReservationStatus::Expired),
    ] {
        let pending = sale.pending_from_rust(1, 17).await;
        let ended = ReservationRecord {
            status: ReservationStatus::Expired,
            order_id,
            ..pending.clone()
        };
        let _: () = sale
            .raw
            .hset(
                &keys.reservations,
                ended.reservation_id.to_string(),
                ended.encode(),
            )
            .await
            .unwrap();
        let request = reserve_request(sale.id, ended.user_id, 1, &ended.idempotency_key);
        assert_eq!(
            sale.store.reserve(&request).await.unwrap(),
            ReserveOutcome::Replayed {
                reservation_id: ended.reservation_id,
                status: replayed,
            }
        );
    }
}

#[tokio::test]
async fn release_lua_reads_rust_records_and_writes_a_reason_code() {
    let mut sale = Sale::armed().await;
    let record = sale.pending_from_rust(3, 17).await;
    // Two of the three units exist in PostgreSQL; one is written off.
    let released = sale
        .store
        .release(
            sale.id,
            record.reservation_id,
            ReservationStatus::Failed,
            FailureReason::NoStock,
            flashsale::store::redis::Restock::all(2),
        )
        .await
        .unwrap();
    assert_eq!(
        released,
        ReleaseOutcome::Released {
            remaining: ALLOTTED - 3 + 2
        }
    );
    assert_eq!(sale.stat("units_written_off").await, 1);
    assert_eq!(sale.stat("pending_units").await, 0);
    let stored = sale.stored(record.reservation_id).await;
    assert!(stored.ends_with("|no_stock"), "{stored}");
    let parsed = parse_record(sale.id, record.reservation_id, &stored).unwrap();
    assert_eq!(
        parsed,
        ReservationRecord {
            status: ReservationStatus::Failed,
            reason: Some(FailureReason::NoStock),
            ..record
        }
    );
}

#[tokio::test]
async fn confirm_lua_reads_rust_records_and_writes_the_order() {
    let mut sale = Sale::armed().await;
    let record = sale.pending_from_rust(2, 17).await;
    let order = Uuid::now_v7();
    assert_eq!(
        sale.store
            .confirm(sale.id, &[(record.reservation_id, Some(order))])
            .await
            .unwrap(),
        1
    );
    let stored = sale.stored(record.reservation_id).await;
    assert_eq!(
        parse_record(sale.id, record.reservation_id, &stored).unwrap(),
        ReservationRecord {
            status: ReservationStatus::Confirmed,
            order_id: Some(order),
            ..record
        }
    );
    assert_eq!(sale.stat("units_confirmed").await, 2);

    // Confirmed without a known order, the record keeps six fields, the
    // form every older build reads.
    let older = sale.pending_from_rust(1, 18).await;
    let six_fields = older.encode();
    assert_eq!(six_fields.matches('|').count(), 5, "{six_fields}");
    assert_eq!(
        sale.store
            .confirm(sale.id, &[(older.reservation_id, None)])
            .await
            .unwrap(),
        1
    );
    let stored = sale.stored(older.reservation_id).await;
    assert_eq!(stored.matches('|').count(), 5, "{stored}");
    assert_eq!(
        parse_record(sale.id, older.reservation_id, &stored)
            .unwrap()
            .status,
        ReservationStatus::Confirmed
    );
}

/// `confirm.lua` works through a group commit a chunk of 500 reservations
/// at a time (`CHUNK` there; 1,201 make three chunks, the last of one): every
/// reservation past the first chunk is confirmed too, a
/// reservation named twice in one chunk or in two counts once, one Redis
/// does not know is skipped, and each confirmed one is published once as
/// a JSON event, with its order or without one. A pending record whose
/// numbers do not read is left as it is.
#[tokio::test]
async fn confirm_lua_confirms_a_batch_beyond_one_chunk_each_reservation_once() {
    let mut sale = Sale::armed().await;
    let mut records = Vec::new();
    for i in 0..1_201 {
        records.push(
            sale.pending_from_rust(1 + i % 3, 1_700_000_000_000 + i)
                .await,
        );
    }
    let units: i64 = records.iter().map(|r| i64::from(r.quantity.get())).sum();
    // The second has no known order: its event says none.
    let confirmed: Vec<(Uuid, Option<Uuid>)> = records
        .iter()
        .enumerate()
        .map(|(i, record)| (record.reservation_id, (i != 1).then(Uuid::now_v7)))
        .collect();
    let mut call = confirmed.clone();
    // Named twice in the first chunk, and once more in the last.
    call.insert(10, confirmed[0]);
    call.insert(600, (Uuid::now_v7(), None));
    call.push(confirmed[0]);
    let unreadable = Uuid::now_v7();
    let unreadable_record = format!("{}|many|pending|soon|key-x|", Uuid::now_v7());
    let _: () = sale
        .raw
        .hset(
            &sale.store.sale_keys(sale.id).reservations,
            unreadable.to_string(),
            &unreadable_record,
        )
        .await
        .unwrap();
    call.insert(700, (unreadable, Some(Uuid::now_v7())));

    let mut events = redis::Client::open(common::redis_url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    events
        .subscribe(&sale.store.sale_keys(sale.id).events)
        .await
        .unwrap();

    assert_eq!(sale.store.confirm(sale.id, &call).await.unwrap(), 1_201);
    for (record, (_, order)) in records.iter().zip(&confirmed) {
        let stored = sale.stored(record.reservation_id).await;
        assert_eq!(
            parse_record(sale.id, record.reservation_id, &stored).unwrap(),
            ReservationRecord {
                status: ReservationStatus::Confirmed,
                order_id: *order,
                ..record.clone()
            }
        );
    }
    assert_eq!(sale.stat("confirmed").await, 1_201);
    assert_eq!(sale.stored(unreadable).await, unreadable_record);
    assert_eq!(sale.stat("units_confirmed").await, units);
    assert_eq!(sale.stat("pending_units").await, 0);
    let keys = sale.store.sale_keys(sale.id);
    let still_pending: i64 = sale.raw.zcard(&keys.pending).await.unwrap();
    assert_eq!(still_pending, 0);

    // A redelivered batch changes nothing.
    assert_eq!(sale.store.confirm(sale.id, &call).await.unwrap(), 0);
    assert_eq!(sale.stat("units_confirmed").await, units);

    let mut messages = events.on_message();
    let mut published = Vec::new();
    while published.len() < 1_201 {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("an event per confirmed reservation")
            .unwrap();
        let payload: String = message.get_payload().unwrap();
        published.push(serde_json::from_str::<serde_json::Value>(&payload).unwrap());
    }
    let more = tokio::time::timeout(Duration::from_millis(300), messages.next()).await;
    assert!(
        more.is_err(),
        "an event beyond one per confirmed reservation"
    );
    let expected: Vec<serde_json::Value> = records
        .iter()
        .zip(&confirmed)
        .map(|(record, (_, order))| {
            let mut event = serde_json::json!({
                "type": "purchase",
                "sale_id": sale.id,
                "reservation_id": record.reservation_id,
                "user_id": record.user_id,
                "status": "confirmed",
                "quantity": record.quantity.get(),
                "reserved_ms": record.reserved_at_ms,
            });
            if let Some(order) = order {
                event["order_id"] = serde_json::json!(order);
            }
            event
        })
        .collect();
    assert!(published[1].get("order_id").is_none(), "{}", published[1]);
    assert_eq!(published, expected);
}

#[tokio::test]
async fn arm_sale_lua_and_stale_pending_lua_read_rust_records() {
    let mut sale = Sale::armed().await;
    let old = Utc::now().timestamp_millis() - 60_000;
    let record = sale.pending_from_rust(3, old).await;

    let stale = sale
        .store
        .stale_pending(sale.id, Duration::from_secs(1), 10)
        .await
        .unwrap();
    assert_eq!(stale, std::slice::from_ref(&record));

    // A rebuild counts the surviving pending units the record names.
    let keys = sale.store.sale_keys(sale.id);
    let _: () = sale.raw.hdel(&keys.meta, "stock").await.unwrap();
    let nothing_staged = sale.store.sale_keys(sale.id).staging(Uuid::nil());
    let armed = sale
        .store
        .arm(&active_mirror(sale.id, Some(nothing_staged)))
        .await
        .unwrap();
    assert!(armed.rebuilt);
    assert_eq!(armed.remaining, ALLOTTED - 3);
    assert_eq!(
        sale.store
            .units_held(sale.id, record.user_id)
            .await
            .unwrap(),
        3,
        "the pending units are the user's again"
    );
}

/// What the sale knows of a shopper besides their keys is one field,
/// `<user>|latest` = `<latest reservation>|<next attempt due>`: a refusal
/// moves the due time and keeps the reservation, the due time holds
/// across attempts, a value an older build wrote (the reservation alone)
/// still names it, and a rebuild that raises the latest keeps the due time.
#[tokio::test]
async fn one_shopper_field_keeps_the_latest_reservation_and_the_attempt_rate() {
    let mut sale = Sale::armed().await;
    let keys = sale.store.sale_keys(sale.id);
    let user = Uuid::now_v7();
    let field = SaleKeys::latest_field(user);
    let slow = |quantity, key| ReserveRequest {
        rate: UserRate {
            per_second: 1,
            burst: 2,
        },
        ..reserve_request(sale.id, user, quantity, key)
    };
    let ReserveOutcome::Accepted { reservation_id, .. } =
        sale.store.reserve(&slow(1, "first")).await.unwrap()
    else {
        panic!("the first attempt was not accepted");
    };
    assert!(
        matches!(
            sale.store.reserve(&slow(3, "too-many")).await.unwrap(),
            ReserveOutcome::LimitReached { .. }
        ),
        "1 + 3 units is over the limit of 3"
    );
    assert!(
        matches!(
            sale.store.reserve(&slow(1, "third")).await.unwrap(),
            ReserveOutcome::RateLimited { .. }
        ),
        "a burst of 2 at one attempt a second: the third waits"
    );
    let latest = sale.store.latest_reservation(sale.id, user).await.unwrap();
    assert_eq!(
        latest.map(|record| record.reservation_id),
        Some(reservation_id)
    );
    let value: String = sale.raw.hget(&keys.shoppers, &field).await.unwrap();
    let (named, due) = value.split_once('|').unwrap();
    assert_eq!(named, reservation_id.to_string());
    let due: i64 = due.parse().unwrap();
    assert!(due > Utc::now().timestamp_micros(), "{value}");

    // An older build's value: the reservation alone, no due time.
    let _: () = sale
        .raw
        .hset(&keys.shoppers, &field, reservation_id.to_string())
        .await
        .unwrap();
    let latest = sale.store.latest_reservation(sale.id, user).await.unwrap();
    assert_eq!(
        latest.map(|record| record.reservation_id),
        Some(reservation_id)
    );
    // reserve.lua reads it too: a refusal (1 + 3 units is over the limit)
    // is not rate-limited (no due time) and keeps the reservation.
    assert!(
        matches!(
            sale.store.reserve(&slow(3, "after-upgrade")).await.unwrap(),
            ReserveOutcome::LimitReached { .. }
        ),
        "no due time: the attempt is not rate-limited"
    );
    let value: String = sale.raw.hget(&keys.shoppers, &field).await.unwrap();
    let (named, due) = value.split_once('|').unwrap();
    assert_eq!(named, reservation_id.to_string(), "{value}");
    assert!(due.parse::<i64>().is_ok(), "{value}");

    // A shopper who was only refused, then holds a pending reservation a
    // rebuild finds: it becomes their latest, and the due time stays.
    let record = sale
        .pending_from_rust(1, Utc::now().timestamp_millis())
        .await;
    let refused_only = SaleKeys::latest_field(record.user_id);
    let _: () = sale
        .raw
        .hset(&keys.shoppers, &refused_only, "|4102444800000000")
        .await
        .unwrap();
    let _: () = sale.raw.hdel(&keys.meta, "stock").await.unwrap();
    let armed = sale
        .store
        .arm(&active_mirror(sale.id, Some(keys.staging(Uuid::nil()))))
        .await
        .unwrap();
    assert!(armed.rebuilt);
    let value: String = sale.raw.hget(&keys.shoppers, &refused_only).await.unwrap();
    assert_eq!(value, format!("{}|4102444800000000", record.reservation_id));

    // Orders put back after a loss: a newer one becomes the latest and
    // keeps the due time; an older one changes nothing.
    let order_of = |reservation_id: Uuid| CommittedOrder {
        id: Uuid::now_v7(),
        reservation_id,
        user_id: record.user_id,
        quantity: Quantity::ONE,
        idempotency_key: format!("restored-{}", reservation_id.simple()),
        created_at: Utc::now(),
        status: OrderStatus::Confirmed,
    };
    let newer = Uuid::now_v7();
    let older = Uuid::from_u128(record.reservation_id.as_u128() - 1);
    for (restored, latest) in [(newer, newer), (older, newer)] {
        sale.store
            .restore_orders(sale.id, &[order_of(restored)])
            .await
            .unwrap();
        let value: String = sale.raw.hget(&keys.shoppers, &refused_only).await.unwrap();
        assert_eq!(value, format!("{latest}|4102444800000000"), "{restored}");
    }
}

/// A refusal for want of stock uses up the shopper's cluster-wide attempt
/// rate like any other refusal after the rate check: otherwise a shopper
/// with several sign-ins (each node limits only what reaches it) could poll
/// a sold-out sale faster than one sign-in may and catch returned units
/// first (docs/decisions.md). Two sold-out attempts at one attempt a second
/// with a burst of one: the second waits.
#[tokio::test]
async fn a_sold_out_refusal_uses_up_the_shoppers_cluster_wide_rate() {
    let mut sale = Sale::armed().await;
    let keys = sale.store.sale_keys(sale.id);
    let _: () = sale.raw.hset(&keys.meta, "stock", 0).await.unwrap();
    let (sale_id, user) = (sale.id, Uuid::now_v7());
    let one_attempt_a_second = |key| ReserveRequest {
        rate: UserRate {
            per_second: 1,
            burst: 1,
        },
        ..reserve_request(sale_id, user, 1, key)
    };
    let mut outcomes = Vec::new();
    for key in ["first", "second"] {
        outcomes.push(
            sale.store
                .reserve(&one_attempt_a_second(key))
                .await
                .unwrap(),
        );
    }
    assert!(
        matches!(
            outcomes[..],
            [
                ReserveOutcome::SoldOut { remaining: 0 },
                ReserveOutcome::RateLimited { .. }
            ]
        ),
        "{outcomes:?}"
    );
    let value: Option<String> = sale
        .raw
        .hget(&keys.shoppers, SaleKeys::latest_field(user))
        .await
        .unwrap();
    let value = value.expect("the refusal wrote the shopper's next-attempt time");
    let (latest, due) = value.split_once('|').unwrap();
    assert_eq!(latest, "", "a refusal names no reservation: {value}");
    assert!(
        due.parse::<i64>().unwrap() > Utc::now().timestamp_micros(),
        "{value}"
    );
    assert_eq!(
        (
            sale.stat("rejected_sold_out").await,
            sale.stat("rejected_rate_limited").await
        ),
        (1, 1)
    );
}

/// A waitlist offer granted from an ended hold (`return_held.lua`) becomes
/// its shopper's latest reservation, keeping their next-attempt time,
/// unless they reserved something newer since.
#[tokio::test]
async fn return_held_lua_makes_a_granted_offer_the_latest_unless_a_newer_reservation_exists() {
    let mut sale = Sale::armed().await;
    let keys = sale.store.sale_keys(sale.id);
    let held = sale
        .pending_from_rust(2, Utc::now().timestamp_millis())
        .await;
    let hold = EndedHold {
        order_id: Uuid::now_v7(),
        reservation_id: held.reservation_id,
        flash_sale_id: sale.id,
        user_id: held.user_id,
        quantity: 2,
        status: OrderStatus::Expired,
    };
    let offer_to = |user_id: Uuid| Offer {
        order_id: Uuid::now_v7(),
        reservation_id: Uuid::now_v7(),
        user_id,
        idempotency_key: format!("offer-{}", Uuid::now_v7().simple()),
        offered_from: hold.order_id,
        awaiting: true,
        pay_by: Utc::now(),
        amount: 4_999,
        currency: "EUR".into(),
    };
    let due = "4102444800000000";
    // Ann was only refused so far (a due time, no reservation); Bob
    // reserved after his offer was made.
    let (ann, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let offers = [offer_to(ann), offer_to(bob)];
    let bobs_newer = Uuid::now_v7();
    let (ann_field, bob_field) = (SaleKeys::latest_field(ann), SaleKeys::latest_field(bob));
    let _: () = sale
        .raw
        .hset_multiple(
            &keys.shoppers,
            &[
                (&ann_field, format!("|{due}")),
                (&bob_field, format!("{bobs_newer}|{due}")),
            ],
        )
        .await
        .unwrap();

    let room = RoomRead {
        units: ALLOTTED,
        grown_before: 0,
    };
    let returned = sale
        .store
        .return_held(sale.id, &[hold], &offers, room)
        .await
        .unwrap();
    assert_eq!(returned, 1);
    let ann_value: String = sale.raw.hget(&keys.shoppers, &ann_field).await.unwrap();
    assert_eq!(
        ann_value,
        format!("{}|{due}", offers[0].reservation_id),
        "the offer is Ann's latest, her due time kept"
    );
    let bob_value: String = sale.raw.hget(&keys.shoppers, &bob_field).await.unwrap();
    assert_eq!(
        bob_value,
        format!("{bobs_newer}|{due}"),
        "Bob's newer reservation stays his latest"
    );
}

#[tokio::test]
async fn arm_sale_lua_never_rebuilds_a_sale_without_its_buyers() {
    let mut sale = Sale::armed().await;
    // Redis loses the sale between the caller's look (counter present, so
    // it staged no buyers) and the script.
    let keys = sale.store.sale_keys(sale.id);
    let _: () = sale.raw.del(&[&keys.buyers, &keys.meta]).await.unwrap();
    let armed = sale.store.arm(&active_mirror(sale.id, None)).await.unwrap();
    assert!(armed.needs_restore && !armed.rebuilt, "{armed:?}");
    assert_eq!(
        sale.store.remaining(sale.id).await.unwrap(),
        None,
        "a counter was built without the buyers: per-user limits lost"
    );
}

#[tokio::test]
async fn release_lua_puts_back_no_more_than_the_room_beyond_what_redis_still_promises() {
    let mut sale = Sale::armed().await;
    let first = sale.pending_from_rust(3, 17).await;
    let _other = sale.pending_from_rust(2, 18).await;
    // Redis: 95 left + 5 pending units = 100 promised. PostgreSQL has room
    // for 98 only: releasing the 3-unit reservation may put back 1.
    let released = sale
        .store
        .release(
            sale.id,
            first.reservation_id,
            ReservationStatus::Failed,
            FailureReason::NoStock,
            flashsale::store::redis::Restock {
                units: 3,
                within_room: Some(98),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        released,
        ReleaseOutcome::Released {
            remaining: ALLOTTED - 5 + 1
        }
    );
    assert_eq!(sale.stat("units_written_off").await, 2);
}

/// `may_buy` (what the status route tells a shopper) and `reserve.lua`
/// (what an attempt does) are one rule: for every state, stock and
/// holding, "may buy" is exactly "one more unit would be accepted".
#[tokio::test]
async fn may_buy_and_reserve_lua_agree() {
    let now = Utc::now().timestamp_millis();
    let states = [
        SaleState::Active,
        SaleState::Scheduled,
        SaleState::Paused,
        SaleState::Ended,
        SaleState::Cancelled,
    ];
    for state in states {
        for (allotted, held, limit) in [(5, 0, 2), (5, 1, 2), (5, 2, 2), (2, 2, 3), (1, 0, 1)] {
            let sale = Sale::armed().await;
            let id = Uuid::now_v7();
            let user = Uuid::now_v7();
            let staged = sale.store.sale_keys(id).staging(Uuid::now_v7());
            let mut raw = common::redis_connection().await;
            if held > 0 {
                let _: () = raw.hset(&staged, user.to_string(), held).await.unwrap();
            }
            let opens_in_future = state == SaleState::Scheduled;
            let mirror = SaleMirror {
                allotted,
                confirmed: held,
                state: state.as_str(),
                per_user_limit: limit as i32,
                starts_at_ms: if opens_in_future {
                    now + 60_000
                } else {
                    now - 60_000
                },
                staged_buyers: Some(staged),
                ..active_mirror(id, None)
            };
            sale.store.arm(&mirror).await.unwrap();
            let remaining = sale.store.remaining(id).await.unwrap();
            let promised = may_buy(state, remaining, held, limit);
            let request = reserve_request(id, user, 1, "may-buy");
            let outcome = sale.store.reserve(&request).await.unwrap();
            let accepted = matches!(outcome, ReserveOutcome::Accepted { .. });
            assert_eq!(
                promised, accepted,
                "{state}, {allotted} allotted, {held} held of {limit}: may_buy says {promised}, reserve.lua answered {outcome:?}"
            );
        }
    }
}
