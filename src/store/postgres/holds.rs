//! Checkout holds in PostgreSQL: ending them (the sweep's expiry and its
//! cancel of a cancelled sale's holds, the shopper's cancel), offering
//! their units to the sale's waitlist in the same transaction
//! (`waitlist.rs`), and the Redis work each end leaves owed.
//!
//! An awaiting order counts in its sale's `confirmed_quantity`, its
//! product's sold units and its buyer's `sale_buyers` units, exactly like
//! a sold one. Ending a hold gives all three back in the same statement
//! that changes the order's status, under the product's advisory lock (the
//! lock settlement and admin changes take), and only from
//! `awaiting_payment`: a hold a payment took first is not ended, and none
//! is ended twice.

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{
    Db,
    sales::lock_product,
    settlement::room_left,
    waitlist::{count_offers, offer_returned_units},
};
use crate::{
    domain::{DomainError, OrderStatus},
    store::StoreError,
};

/// How long after its deadline a hold is expired. A payment that reached a
/// node by `pay_by` is judged by that arrival (`payments.rs`), and may
/// still be waiting for a connection or a lock: the sweep leaves it this
/// long to commit (every PostgreSQL call is bounded by the dependency
/// timeout, 1 s by default). A payment slower than this finds the hold
/// expired and is recorded `refund_required`: late, never both.
pub const PAYMENT_GRACE_SECS: i32 = 2;

/// A hold that ended without a payment, whose units go back.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EndedHold {
    pub order_id: Uuid,
    pub reservation_id: Uuid,
    pub flash_sale_id: Uuid,
    pub user_id: Uuid,
    pub quantity: i32,
    #[sqlx(try_from = "String")]
    pub status: OrderStatus,
}

/// What a shopper's cancel found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// The hold ended now; its units are owed back to Redis.
    Now(EndedHold),
    /// The order is not awaiting payment (paid, expired, cancelled, or a
    /// sale without holds); nothing changed.
    NotAwaiting(OrderStatus),
}

impl Db {
    /// Products whose sales have holds to end: past their deadline and the
    /// grace, or of a cancelled sale.
    pub async fn products_with_due_holds(&self) -> Result<Vec<Uuid>, StoreError> {
        self.bounded(
            sqlx::query_scalar(
                "select s.product_id
                 from orders o join flash_sales s on s.id = o.flash_sale_id
                 where o.status = 'awaiting_payment'
                   and o.pay_by < now() - make_interval(secs => $1)
                 union
                 select product_id from flash_sales where holds_to_cancel",
            )
            .bind(PAYMENT_GRACE_SECS)
            .fetch_all(self.pool()),
        )
        .await
    }

    /// Ends at most `limit` holds of the product's sales and gives their
    /// units back in PostgreSQL: first those of cancelled sales (a cancel
    /// changes only the sale, so a stampede's worth of holds never has to
    /// end within one bounded call; payments refuse them meanwhile), as
    /// `cancelled`, offering their units to nobody; then those past their
    /// deadline and the grace, oldest deadline first, as `expired`, their
    /// units offered to the sale's waitlist.
    pub async fn end_due_holds(
        &self,
        product_id: Uuid,
        limit: i64,
    ) -> Result<Vec<EndedHold>, StoreError> {
        self.bounded(async {
            let mut tx = self.pool().begin().await?;
            lock_product(&mut tx, product_id).await?;
            let of_cancelled_sales: Vec<Uuid> = sqlx::query_scalar(
                "select o.id from orders o
                 where o.status = 'awaiting_payment'
                   and o.flash_sale_id in (select id from flash_sales
                                           where product_id = $1 and holds_to_cancel)
                 limit $2",
            )
            .bind(product_id)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            let mut ended = end_holds(
                &mut tx,
                product_id,
                &of_cancelled_sales,
                OrderStatus::Cancelled,
            )
            .await?;
            if (of_cancelled_sales.len() as i64) < limit {
                // Every one found: under this lock no cancelled sale gains a
                // hold (settlement fails its reservations, no offers).
                sqlx::query(
                    "update flash_sales set holds_to_cancel = false
                     where product_id = $1 and holds_to_cancel",
                )
                .bind(product_id)
                .execute(&mut *tx)
                .await?;
            }
            // Room after what was picked, not what ended: a hold a payment
            // took meanwhile leaves none for the expiry query to fill.
            let (room, mut offered) = (limit - of_cancelled_sales.len() as i64, 0);
            if room > 0 {
                let due: Vec<Uuid> = sqlx::query_scalar(
                    "select o.id from orders o
                     where o.status = 'awaiting_payment'
                       and o.pay_by < now() - make_interval(secs => $3)
                       and o.flash_sale_id in (select id from flash_sales
                                               where product_id = $1 and state <> 'cancelled')
                     order by o.pay_by
                     limit $2",
                )
                .bind(product_id)
                .bind(room)
                .bind(PAYMENT_GRACE_SECS)
                .fetch_all(&mut *tx)
                .await?;
                let expired = end_holds(&mut tx, product_id, &due, OrderStatus::Expired).await?;
                offered = offer_returned_units(&mut tx, &expired).await?;
                ended.extend(expired);
            }
            tx.commit().await?;
            count_offers(offered);
            Ok::<_, sqlx::Error>(ended)
        })
        .await
    }

    /// Cancels the shopper's order while it awaits payment. Another
    /// shopper's order is not found.
    pub async fn cancel_hold(
        &self,
        order_id: Uuid,
        user_id: Uuid,
    ) -> Result<Cancelled, StoreError> {
        self.bounded(async {
            let found: Option<(Uuid, String)> = sqlx::query_as(
                "select s.product_id, o.status
                 from orders o join flash_sales s on s.id = o.flash_sale_id
                 where o.id = $1 and o.user_id = $2",
            )
            .bind(order_id)
            .bind(user_id)
            .fetch_optional(self.pool())
            .await?;
            let (product_id, _) = found.ok_or(DomainError::OrderNotFound(order_id))?;
            let mut tx = self.pool().begin().await?;
            lock_product(&mut tx, product_id).await?;
            let mut ended =
                end_holds(&mut tx, product_id, &[order_id], OrderStatus::Cancelled).await?;
            let offered = offer_returned_units(&mut tx, &ended).await?;
            let outcome = match ended.pop() {
                Some(hold) => Cancelled::Now(hold),
                None => {
                    let status: String =
                        sqlx::query_scalar("select status from orders where id = $1")
                            .bind(order_id)
                            .fetch_one(&mut *tx)
                            .await?;
                    Cancelled::NotAwaiting(
                        OrderStatus::parse(&status).unwrap_or(OrderStatus::Confirmed),
                    )
                }
            };
            tx.commit().await?;
            count_offers(offered);
            Ok::<_, StoreError>(outcome)
        })
        .await
    }

    /// Ended holds whose units Redis has not been given back yet (a sweep
    /// or a cancel that committed in PostgreSQL and then lost Redis), the
    /// oldest first. A waitlist offer is returned only after the hold it
    /// came from: that return grants the offer in Redis, and the offer's
    /// own return must undo the grant, never come before it.
    pub async fn holds_owing_units(&self, limit: i64) -> Result<Vec<EndedHold>, StoreError> {
        self.bounded(
            sqlx::query_as::<_, EndedHold>(
                "select o.id as order_id, o.reservation_id, o.flash_sale_id, o.user_id,
                        o.quantity, o.status
                 from orders o
                 where o.status in ('expired', 'cancelled') and o.pay_by is not null
                   and o.units_returned_at is null
                   and not exists (select 1 from orders parent
                                   where parent.id = o.offered_from
                                     and parent.units_returned_at is null)
                 order by o.ended_at
                 limit $1",
            )
            .bind(limit)
            .fetch_all(self.pool()),
        )
        .await
    }

    /// Of these ended holds, the waitlist offers whose own hold of origin
    /// Redis has not been given back yet: they wait for it (see
    /// [`Self::holds_owing_units`]).
    pub async fn offers_before_their_origin(
        &self,
        order_ids: &[Uuid],
    ) -> Result<Vec<Uuid>, StoreError> {
        self.bounded(
            sqlx::query_scalar(
                "select o.id from orders o join orders parent on parent.id = o.offered_from
                 where o.id = any($1) and parent.units_returned_at is null",
            )
            .bind(order_ids)
            .fetch_all(self.pool()),
        )
        .await
    }

    /// Records that Redis has the units of these ended holds back.
    pub async fn mark_units_returned(&self, order_ids: &[Uuid]) -> Result<(), StoreError> {
        if order_ids.is_empty() {
            return Ok(());
        }
        self.bounded(
            sqlx::query(
                "update orders set units_returned_at = now()
                 where id = any($1) and units_returned_at is null",
            )
            .bind(order_ids)
            .execute(self.pool()),
        )
        .await
        .map(drop)
    }

    /// Units PostgreSQL can still commit for the sale (the cap on what
    /// Redis may offer again).
    pub async fn sale_room(&self, sale_id: Uuid) -> Result<i64, StoreError> {
        self.bounded(async {
            let mut tx = self.pool().begin().await?;
            let room = room_left(&mut tx, sale_id).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(room)
        })
        .await
    }
}

/// Cancels the unpaid waitlist offers of these shoppers in the sale (in the
/// settlement's transaction, under the product's lock) and offers their
/// units to the next in line: a purchase of theirs that Redis accepted
/// needs the room under their limit. Their units are owed to Redis like any
/// ended hold's (the next sweep returns them). Returns the offers cancelled
/// and the offers made in their place.
pub(super) async fn yield_offers_to_purchases(
    tx: &mut Transaction<'_, Postgres>,
    product_id: Uuid,
    sale_id: Uuid,
    user_ids: &[Uuid],
) -> Result<(usize, usize), sqlx::Error> {
    let offers: Vec<Uuid> = sqlx::query_scalar(
        "select id from orders
         where flash_sale_id = $1 and user_id = any($2)
           and status = 'awaiting_payment' and offered_from is not null",
    )
    .bind(sale_id)
    .bind(user_ids)
    .fetch_all(&mut **tx)
    .await?;
    let ended = end_holds(tx, product_id, &offers, OrderStatus::Cancelled).await?;
    if ended.is_empty() {
        return Ok((0, 0));
    }
    tracing::info!(%sale_id, offers = ended.len(), "waitlist offers yielded to purchases their shoppers made meanwhile");
    let offered = offer_returned_units(tx, &ended).await?;
    Ok((ended.len(), offered))
}

/// Ends those of `order_ids` still awaiting payment as `status`, and in
/// the same statement gives their units back: the buyer's `sale_buyers`
/// units (a buyer left with none has no row), the sale's
/// `confirmed_quantity` and the product's available stock. The caller holds
/// the product's lock.
async fn end_holds(
    tx: &mut Transaction<'_, Postgres>,
    product_id: Uuid,
    order_ids: &[Uuid],
    status: OrderStatus,
) -> Result<Vec<EndedHold>, sqlx::Error> {
    if order_ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as::<_, EndedHold>(
        "with ended as (
             update orders set status = $3, ended_at = now(), updated_at = now()
             where id = any($2) and status = 'awaiting_payment'
             returning id, reservation_id, flash_sale_id, user_id, quantity, status
         ), per_buyer as (
             select flash_sale_id, user_id, sum(quantity)::int as units
             from ended group by flash_sale_id, user_id
         ), emptied as (
             delete from sale_buyers b using per_buyer p
             where b.flash_sale_id = p.flash_sale_id and b.user_id = p.user_id
               and b.units <= p.units
         ), reduced as (
             update sale_buyers b set units = b.units - p.units, updated_at = now()
             from per_buyer p
             where b.flash_sale_id = p.flash_sale_id and b.user_id = p.user_id
               and b.units > p.units
         ), per_sale as (
             select flash_sale_id, sum(quantity)::bigint as units
             from ended group by flash_sale_id
         ), sales as (
             update flash_sales s
             set confirmed_quantity = s.confirmed_quantity - p.units, updated_at = now()
             from per_sale p where s.id = p.flash_sale_id
         ), stock as (
             update stocks
             set available_quantity = available_quantity + (select sum(units) from per_sale),
                 version = version + 1, updated_at = now()
             where product_id = $1 and exists (select 1 from ended)
         )
         select id as order_id, reservation_id, flash_sale_id, user_id, quantity, status
         from ended",
    )
    .bind(product_id)
    .bind(order_ids)
    .bind(status.as_str())
    .fetch_all(&mut **tx)
    .await
}
