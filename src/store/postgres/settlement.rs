//! Settling reservations in PostgreSQL (group commit): one transaction per
//! batch under the product's advisory lock — the same lock admin changes of
//! allotments take — decides every reservation with
//! [`crate::domain::decide`] and writes orders, per-user units, the sale's
//! confirmed count, the product's stock and the failures' audit rows
//! together (an order is the record of its reservation).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{
    Db, attempts::FailedAttempts, holds::yield_offers_to_purchases, sales::lock_product,
    waitlist::count_offers,
};
use crate::{
    domain::{
        Candidate, Decision, DomainError, FailureReason, Money, PriorOutcome, Quantity,
        ReservationStatus, SaleLedger, SaleState, decide,
    },
    store::StoreError,
};

/// An accepted reservation to turn into an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationToSettle {
    pub reservation_id: Uuid,
    pub user_id: Uuid,
    pub quantity: Quantity,
    pub idempotency_key: String,
    pub reserved_at: DateTime<Utc>,
}

/// The outcome of one batch: a decision per reservation, in input order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledBatch {
    pub decisions: Vec<Decision>,
    /// Per reservation, in input order: its order, when it has one
    /// (committed now or before).
    pub order_ids: Vec<Option<Uuid>>,
    /// Orders inserted by this transaction.
    pub orders_inserted: usize,
    /// Units PostgreSQL can still commit for the sale after this batch.
    pub room_left: i64,
}

#[derive(sqlx::FromRow)]
struct LedgerRow {
    product_id: Uuid,
    #[sqlx(try_from = "String")]
    state: SaleState,
    per_user_limit: i32,
    allotted_quantity: i64,
    confirmed_quantity: i64,
    available_quantity: i64,
    sale_price: Money,
    hold_seconds: Option<i32>,
}

impl LedgerRow {
    /// Units PostgreSQL can still commit for the sale.
    fn room(&self) -> i64 {
        (self.allotted_quantity - self.confirmed_quantity).min(self.available_quantity)
    }
}

#[derive(sqlx::FromRow)]
struct CandidateRow {
    order_id: Option<Uuid>,
    outcome: Option<String>,
    reason: Option<String>,
    user_exists: bool,
    user_banned: bool,
    units_bought: i64,
    key_ordered: bool,
}

impl Db {
    /// Decides and writes one batch of reservations of one sale. The batch
    /// should hold each reservation once, oldest first.
    pub async fn settle_batch(
        &self,
        sale_id: Uuid,
        batch: &[ReservationToSettle],
    ) -> Result<SettledBatch, StoreError> {
        self.bounded(async {
            let product_id: Uuid =
                sqlx::query_scalar("select product_id from flash_sales where id = $1")
                    .bind(sale_id)
                    .fetch_optional(self.pool())
                    .await?
                    .ok_or(DomainError::SaleNotFound(sale_id))?;
            let mut tx = self.pool().begin().await?;
            lock_product(&mut tx, product_id).await?;
            let mut ledger = read_ledger(&mut tx, sale_id).await?;
            let (mut candidates, mut existing_orders) =
                read_candidates(&mut tx, sale_id, batch).await?;
            // A purchase Redis accepted is a promise; a waitlist offer made
            // to the same shopper since is not yet one they acted on. Where
            // both do not fit the limit, the offer yields (and its unit goes
            // to the next in line), and the batch is read again.
            let over_limit: Vec<Uuid> = candidates
                .iter()
                .filter(|candidate| {
                    matches!(candidate.prior, PriorOutcome::Undecided)
                        && candidate.units_bought + i64::from(candidate.quantity.get())
                            > i64::from(ledger.per_user_limit)
                })
                .map(|candidate| candidate.user_id)
                .collect();
            let (yielded, offered) = if over_limit.is_empty() {
                (0, 0)
            } else {
                yield_offers_to_purchases(&mut tx, product_id, sale_id, &over_limit).await?
            };
            if yielded > 0 {
                ledger = read_ledger(&mut tx, sale_id).await?;
                (candidates, existing_orders) = read_candidates(&mut tx, sale_id, batch).await?;
            }
            let ledger_view = SaleLedger {
                state: ledger.state,
                per_user_limit: i64::from(ledger.per_user_limit),
                allotted: ledger.allotted_quantity,
                confirmed: ledger.confirmed_quantity,
                available: ledger.available_quantity,
            };
            let decisions = decide(&ledger_view, &candidates);
            let mut committed_now: HashMap<Uuid, Uuid> = HashMap::new();
            let order_ids: Vec<Option<Uuid>> = batch
                .iter()
                .zip(&decisions)
                .zip(existing_orders)
                .map(|((reservation, decision), existing)| match decision {
                    Decision::Commit => {
                        let order_id = Uuid::now_v7();
                        committed_now.insert(reservation.reservation_id, order_id);
                        Some(order_id)
                    }
                    // Ordered before, or earlier in this batch.
                    Decision::AlreadyConfirmed => {
                        existing.or_else(|| committed_now.get(&reservation.reservation_id).copied())
                    }
                    _ => None,
                })
                .collect();
            let committed_units: i64 = batch
                .iter()
                .zip(&decisions)
                .filter(|(_, decision)| matches!(decision, Decision::Commit))
                .map(|(reservation, _)| i64::from(reservation.quantity))
                .sum();
            let room_left = ledger.room() - committed_units;
            let orders_inserted =
                write_decisions(&mut tx, sale_id, &ledger, batch, &decisions, &order_ids).await?;
            tx.commit().await?;
            count_offers(offered);
            Ok::<_, StoreError>(SettledBatch {
                decisions,
                order_ids,
                orders_inserted,
                room_left,
            })
        })
        .await
    }
}

/// Units PostgreSQL can still commit for the sale, read in `tx`.
pub(super) async fn room_left(
    tx: &mut Transaction<'_, Postgres>,
    sale_id: Uuid,
) -> Result<i64, StoreError> {
    Ok(read_ledger(tx, sale_id).await?.room())
}

async fn read_ledger(
    tx: &mut Transaction<'_, Postgres>,
    sale_id: Uuid,
) -> Result<LedgerRow, StoreError> {
    let ledger = sqlx::query_as::<_, LedgerRow>(
        "select s.product_id, s.state, s.per_user_limit, s.allotted_quantity,
                s.confirmed_quantity, s.sale_price, s.hold_seconds,
                case when s.allotment_released_at is null then st.available_quantity
                     else st.available_quantity - coalesce((
                         select sum(o.allotted_quantity - o.confirmed_quantity)
                         from flash_sales o
                         where o.product_id = s.product_id and o.allotment_released_at is null
                     ), 0)::bigint
                end as available_quantity
         from flash_sales s join stocks st on st.product_id = s.product_id
         where s.id = $1",
    )
    .bind(sale_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(ledger.ok_or(DomainError::SaleNotFound(sale_id))?)
}

/// Each reservation's facts, and its order if it has one, in input order,
/// in one round trip.
async fn read_candidates(
    tx: &mut Transaction<'_, Postgres>,
    sale_id: Uuid,
    batch: &[ReservationToSettle],
) -> Result<(Vec<Candidate>, Vec<Option<Uuid>>), StoreError> {
    let reservation_ids: Vec<Uuid> = batch.iter().map(|r| r.reservation_id).collect();
    let user_ids: Vec<Uuid> = batch.iter().map(|r| r.user_id).collect();
    let keys: Vec<&str> = batch.iter().map(|r| r.idempotency_key.as_str()).collect();
    // Each user's row is locked `for key share` until the commit: a ban
    // locks its user `for update`, so it waits for this batch, and a batch
    // that comes after the ban reads it. No order of a user is committed
    // after a ban was answered.
    let rows = sqlx::query_as::<_, CandidateRow>(
        "select o.id as order_id, pa.outcome, pa.reason,
                u.id is not null as user_exists, coalesce(u.banned, false) as user_banned,
                coalesce(b.units, 0)::bigint as units_bought,
                k.id is not null as key_ordered
         from unnest($2::uuid[], $3::uuid[], $4::text[])
              with ordinality as c(reservation_id, user_id, idempotency_key, position)
         left join lateral (select id from orders
                            where reservation_id = c.reservation_id limit 1) o on true
         left join lateral (select outcome, reason from purchase_attempts
                            where reservation_id = c.reservation_id limit 1) pa on true
         left join lateral (select id, banned_at is not null as banned from users
                            where id = c.user_id limit 1 for key share) u on true
         left join lateral (select units from sale_buyers
                            where flash_sale_id = $1 and user_id = c.user_id limit 1) b on true
         left join lateral (select id from orders
                            where flash_sale_id = $1 and user_id = c.user_id
                              and idempotency_key = c.idempotency_key
                              and reservation_id <> c.reservation_id limit 1) k on true
         order by c.position",
    )
    // The cost of a batch must follow the batch, not the tables. Each
    // `lateral ... limit 1` is one keyed lookup per reservation (the limit
    // keeps the planner from turning it into a join that scans the whole
    // table), and the statement is planned afresh every time: a plan cached
    // while the tables were empty chose whole-table scans, and batches crept
    // from 30 ms to 1 s until autoanalyze replanned.
    .persistent(false)
    .bind(sale_id)
    .bind(&reservation_ids)
    .bind(&user_ids)
    .bind(&keys)
    .fetch_all(&mut **tx)
    .await?;
    Ok(batch
        .iter()
        .zip(rows)
        .map(|(reservation, row)| {
            let candidate = Candidate {
                reservation_id: reservation.reservation_id,
                user_id: reservation.user_id,
                quantity: reservation.quantity,
                prior: prior_outcome(&row),
                user_exists: row.user_exists,
                banned: row.user_banned,
                units_bought: row.units_bought,
                idempotency_key: reservation.idempotency_key.clone(),
                key_ordered: row.key_ordered,
            };
            (candidate, row.order_id)
        })
        .unzip())
}

fn prior_outcome(row: &CandidateRow) -> PriorOutcome {
    if row.order_id.is_some() {
        return PriorOutcome::Confirmed;
    }
    match row.outcome.as_deref().and_then(ReservationStatus::parse) {
        None | Some(ReservationStatus::Pending) => PriorOutcome::Undecided,
        Some(ReservationStatus::Confirmed) => PriorOutcome::Confirmed,
        Some(status) => PriorOutcome::Ended {
            status,
            reason: row.reason.as_deref().and_then(FailureReason::from_code),
        },
    }
}

/// Writes the batch's decisions; returns the number of orders inserted.
async fn write_decisions(
    tx: &mut Transaction<'_, Postgres>,
    sale_id: Uuid,
    ledger: &LedgerRow,
    batch: &[ReservationToSettle],
    decisions: &[Decision],
    order_ids: &[Option<Uuid>],
) -> Result<usize, sqlx::Error> {
    let committed: Vec<(&ReservationToSettle, Uuid)> = batch
        .iter()
        .zip(decisions)
        .zip(order_ids)
        .filter_map(
            |((reservation, decision), order_id)| match (decision, order_id) {
                (Decision::Commit, Some(order_id)) => Some((reservation, *order_id)),
                _ => None,
            },
        )
        .collect();
    let orders_inserted = insert_orders(tx, sale_id, ledger, &committed).await?;

    // A committed reservation's order is its record (`purchase_endings`):
    // only the failures get an audit row.
    let mut failures = FailedAttempts::default();
    for (reservation, decision) in batch.iter().zip(decisions) {
        if let Decision::Fail { reason, .. } = decision {
            failures.push(reservation, reason.code());
        }
    }
    failures.insert(tx, sale_id).await?;
    Ok(orders_inserted)
}

/// Inserts the orders (a redelivered reservation inserts nothing) and moves
/// the per-user units, the sale's confirmed count and the product's stock by
/// exactly what was inserted, in one statement.
async fn insert_orders(
    tx: &mut Transaction<'_, Postgres>,
    sale_id: Uuid,
    ledger: &LedgerRow,
    committed: &[(&ReservationToSettle, Uuid)],
) -> Result<usize, sqlx::Error> {
    if committed.is_empty() {
        return Ok(0);
    }
    let order_ids: Vec<Uuid> = committed.iter().map(|(_, order_id)| *order_id).collect();
    let reservation_ids: Vec<Uuid> = committed.iter().map(|(r, _)| r.reservation_id).collect();
    let user_ids: Vec<Uuid> = committed.iter().map(|(r, _)| r.user_id).collect();
    let quantities: Vec<i32> = committed.iter().map(|(r, _)| r.quantity.get()).collect();
    let keys: Vec<&str> = committed
        .iter()
        .map(|(r, _)| r.idempotency_key.as_str())
        .collect();
    let reserved_at: Vec<DateTime<Utc>> = committed.iter().map(|(r, _)| r.reserved_at).collect();
    // A sale with a checkout hold writes its orders awaiting payment until
    // `pay_by`: the reservation's time (Redis's clock decided it) plus the
    // hold. They count as sold below until the hold ends.
    let (inserted, units): (i64, i64) = sqlx::query_as(
        "with inserted as (
             insert into orders (id, reservation_id, flash_sale_id, user_id, quantity, unit_price,
                                 idempotency_key, status, pay_by, reserved_at)
             select o.id, o.reservation_id, $1, o.user_id, o.quantity, $2, o.idempotency_key,
                    case when $10::int is null then 'confirmed' else 'awaiting_payment' end,
                    o.reserved_at + make_interval(secs => $10::int), o.reserved_at
             from unnest($3::uuid[], $4::uuid[], $5::uuid[], $6::int[], $7::text[], $11::timestamptz[])
                  as o(id, reservation_id, user_id, quantity, idempotency_key, reserved_at)
             on conflict (reservation_id) do nothing
             returning user_id, quantity
         ), per_user as (
             select user_id, sum(quantity)::int as units from inserted group by user_id
         ), buyers as (
             insert into sale_buyers (flash_sale_id, user_id, units, per_user_limit)
             select $1, user_id, units, $8 from per_user
             on conflict (flash_sale_id, user_id)
             do update set units = sale_buyers.units + excluded.units, updated_at = now()
         ), total as (
             select count(*)::bigint as orders, coalesce(sum(quantity), 0)::bigint as units from inserted
         ), sale as (
             update flash_sales set confirmed_quantity = confirmed_quantity + total.units, updated_at = now()
             from total where id = $1 and total.units > 0
         ), stock as (
             update stocks set available_quantity = available_quantity - total.units,
                               version = version + 1, updated_at = now()
             from total where product_id = $9 and total.units > 0
         )
         select orders, units from total",
    )
    .bind(sale_id)
    .bind(ledger.sale_price)
    .bind(&order_ids)
    .bind(&reservation_ids)
    .bind(&user_ids)
    .bind(&quantities)
    .bind(&keys)
    .bind(ledger.per_user_limit)
    .bind(ledger.product_id)
    .bind(ledger.hold_seconds)
    .bind(&reserved_at)
    .fetch_one(&mut **tx)
    .await?;
    tracing::debug!(%sale_id, inserted, units, "orders inserted");
    Ok(inserted as usize)
}
