//! Waitlists in PostgreSQL: shoppers join a sold-out sale's waitlist, and a
//! hold that ends unpaid gives its units to the head of it, each as an
//! offer that is itself a hold.
//!
//! Offers are made in the transaction that ends the holds, under the
//! product's lock (`holds.rs`): the units move from the ended hold to the
//! offer without ever being free, so nobody buying at that moment can take
//! them, and the sale's counts move by exactly the units offered.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{Db, EndedHold, SaleRow, sales::select_sale};
use crate::{
    domain::{DomainError, SaleState},
    store::StoreError,
};

/// Where a shopper stands on a waitlist.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WaitlistPlace {
    /// 1 for the head of the waitlist.
    pub position: i64,
    /// Shoppers waiting in all.
    pub length: i64,
    pub joined_at: DateTime<Utc>,
}

/// A unit given to a shopper from the waitlist: the offer's order, and
/// what Redis needs to give the shopper the unit too.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Offer {
    pub order_id: Uuid,
    pub reservation_id: Uuid,
    pub user_id: Uuid,
    pub idempotency_key: String,
    /// The ended hold whose unit this is.
    pub offered_from: Uuid,
    /// Still awaiting payment: announced to the shopper when Redis gets it,
    /// with its terms.
    pub awaiting: bool,
    pub pay_by: DateTime<Utc>,
    pub amount: i64,
    pub currency: String,
}

/// The idempotency key of an offer's order. `#` is outside the characters
/// a client's `Idempotency-Key` may use, so no purchase can collide with it.
fn offer_key(entry_id: i64) -> String {
    format!("waitlist#{entry_id}")
}

impl Db {
    /// Puts the shopper on the sale's waitlist (once: joining again keeps
    /// the place) and says where they stand. Refused for a shopper holding
    /// a unit awaiting payment, or one at the limit. Whether the sale has
    /// holds, is active and is sold out is the caller's to check (the
    /// node's snapshot and Redis know).
    pub async fn join_waitlist(
        &self,
        sale_id: Uuid,
        user_id: Uuid,
    ) -> Result<(WaitlistPlace, bool), StoreError> {
        self.bounded(async {
            let mut tx = self.pool().begin().await?;
            let limit: i32 =
                sqlx::query_scalar("select per_user_limit from flash_sales where id = $1")
                    .bind(sale_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or(DomainError::SaleNotFound(sale_id))?;
            let (holding, held): (bool, i64) = sqlx::query_as(
                "select exists (select 1 from orders
                                where flash_sale_id = $1 and user_id = $2
                                  and status = 'awaiting_payment'),
                        coalesce((select units from sale_buyers
                                  where flash_sale_id = $1 and user_id = $2), 0)::bigint",
            )
            .bind(sale_id)
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
            if holding {
                return Err(DomainError::HoldAwaitingPayment.into());
            }
            if held >= i64::from(limit) {
                return Err(DomainError::AlreadyPurchased {
                    held,
                    limit: i64::from(limit),
                }
                .into());
            }
            let joined_now = sqlx::query(
                "insert into waitlist_entries (flash_sale_id, user_id) values ($1, $2)
                 on conflict (flash_sale_id, user_id) do nothing",
            )
            .bind(sale_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            let place = place_on(&mut tx, sale_id, user_id)
                .await?
                .ok_or(DomainError::NotOnWaitlist)?;
            tx.commit().await?;
            Ok::<_, StoreError>((place, joined_now))
        })
        .await
    }

    /// Takes the shopper off the sale's waitlist; false if they were not on it.
    pub async fn leave_waitlist(&self, sale_id: Uuid, user_id: Uuid) -> Result<bool, StoreError> {
        self.bounded(
            sqlx::query("delete from waitlist_entries where flash_sale_id = $1 and user_id = $2")
                .bind(sale_id)
                .bind(user_id)
                .execute(self.pool()),
        )
        .await
        .map(|done| done.rows_affected() == 1)
    }

    /// Where the shopper stands on the sale's waitlist, if they are on it.
    pub async fn waitlist_place(
        &self,
        sale_id: Uuid,
        user_id: Uuid,
    ) -> Result<Option<WaitlistPlace>, StoreError> {
        self.bounded(async {
            let mut tx = self.pool().begin().await?;
            let place = place_on(&mut tx, sale_id, user_id).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(place)
        })
        .await
    }

    /// The offers made from these ended holds, oldest first, with whether
    /// each still awaits payment.
    pub async fn offers_from(&self, ended_orders: &[Uuid]) -> Result<Vec<Offer>, StoreError> {
        if ended_orders.is_empty() {
            return Ok(Vec::new());
        }
        self.bounded(
            sqlx::query_as::<_, Offer>(
                "select o.id as order_id, o.reservation_id, o.user_id, o.idempotency_key,
                        o.offered_from, o.status = 'awaiting_payment' as awaiting,
                        o.pay_by, o.unit_price * o.quantity as amount, p.currency
                 from orders o
                 join flash_sales s on s.id = o.flash_sale_id
                 join products p on p.id = s.product_id
                 where o.offered_from = any($1)
                 order by o.created_at, o.id",
            )
            .bind(ended_orders)
            .fetch_all(self.pool()),
        )
        .await
    }
}

async fn place_on(
    tx: &mut Transaction<'_, Postgres>,
    sale_id: Uuid,
    user_id: Uuid,
) -> Result<Option<WaitlistPlace>, sqlx::Error> {
    sqlx::query_as::<_, WaitlistPlace>(
        "select (select count(*) from waitlist_entries x
                 where x.flash_sale_id = $1 and x.id <= w.id) as position,
                (select count(*) from waitlist_entries x where x.flash_sale_id = $1) as length,
                w.joined_at
         from waitlist_entries w where w.flash_sale_id = $1 and w.user_id = $2",
    )
    .bind(sale_id)
    .bind(user_id)
    .fetch_optional(&mut **tx)
    .await
}

/// Counts offers a transaction made, once it committed.
pub(super) fn count_offers(made: usize) {
    if made > 0 {
        metrics::counter!("waitlist_offers_total").increment(made as u64);
    }
}

/// Gives the units of holds that just ended (in the caller's transaction,
/// under the product's lock) to the heads of their sales' waitlists, one
/// unit per shopper, in join order. Each offer is an order awaiting payment
/// until now + the sale's offer time, counted like any hold. Heads that can
/// no longer be offered a unit leave the waitlist as they are met (see
/// [`next_heads`]); only as many entries are read as there are units. A
/// sale that is not active (paused, ended, cancelled, or past its window)
/// makes no offers.
pub(super) async fn offer_returned_units(
    tx: &mut Transaction<'_, Postgres>,
    ended: &[EndedHold],
) -> Result<usize, sqlx::Error> {
    let mut units_by_sale: BTreeMap<Uuid, Vec<Uuid>> = BTreeMap::new();
    for hold in ended {
        let units = units_by_sale.entry(hold.flash_sale_id).or_default();
        units.extend(std::iter::repeat_n(
            hold.order_id,
            hold.quantity.max(0) as usize,
        ));
    }
    let mut offered = 0;
    for (sale_id, units) in units_by_sale {
        let Some(sale) = offering_sale(tx, sale_id).await? else {
            continue;
        };
        // Whoever just let a unit go is not handed it back as an offer.
        let released: Vec<Uuid> = ended
            .iter()
            .filter(|hold| hold.flash_sale_id == sale_id)
            .map(|hold| hold.user_id)
            .collect();
        let mut heads = Vec::new();
        while heads.len() < units.len() {
            let wanted = units.len() - heads.len();
            let (offerable, read) =
                next_heads(tx, sale_id, sale.per_user_limit, &released, wanted).await?;
            heads.extend(offerable);
            if read < wanted {
                break;
            }
        }
        offered += insert_offers(tx, &sale, &heads, &units).await?;
    }
    Ok(offered)
}

/// The sale, if it makes offers now: it has holds and is active (by its
/// stored state and the clock, as shoppers see it).
async fn offering_sale(
    tx: &mut Transaction<'_, Postgres>,
    sale_id: Uuid,
) -> Result<Option<SaleRow>, sqlx::Error> {
    let sale = select_sale(tx, sale_id, false).await?;
    Ok(sale.filter(|sale| {
        sale.offer_window().is_some() && sale.effective_state(Utc::now()) == SaleState::Active
    }))
}

/// Takes the next `wanted` entries off the head of the sale's waitlist and
/// returns those that may be offered a unit (`(entry id, user id)`, in join
/// order) and how many entries were taken. An entry that may not leaves
/// all the same: a banned shopper, one at the limit, one holding a unit
/// awaiting payment (bought since they joined), one who just let a unit go.
async fn next_heads(
    tx: &mut Transaction<'_, Postgres>,
    sale_id: Uuid,
    per_user_limit: i32,
    released: &[Uuid],
    wanted: usize,
) -> Result<(Vec<(i64, Uuid)>, usize), sqlx::Error> {
    let mut taken: Vec<(i64, Uuid, bool)> = sqlx::query_as(
        "with heads as (
             delete from waitlist_entries where id in (
                 select id from waitlist_entries where flash_sale_id = $1
                 order by id limit $2)
             returning id, user_id
         )
         select h.id, h.user_id,
                not (h.user_id = any($4)
                     or exists (select 1 from users u where u.id = h.user_id and u.banned_at is not null)
                     or exists (select 1 from sale_buyers b
                                where b.flash_sale_id = $1 and b.user_id = h.user_id
                                  and b.units >= $3)
                     or exists (select 1 from orders o
                                where o.flash_sale_id = $1 and o.user_id = h.user_id
                                  and o.status = 'awaiting_payment')) as offerable
         from heads h",
    )
    .bind(sale_id)
    .bind(wanted as i64)
    .bind(per_user_limit)
    .bind(released)
    .fetch_all(&mut **tx)
    .await?;
    taken.sort_unstable();
    let read = taken.len();
    let offerable: Vec<(i64, Uuid)> = taken
        .into_iter()
        .filter_map(|(id, user_id, offerable)| offerable.then_some((id, user_id)))
        .collect();
    if offerable.len() < read {
        tracing::info!(%sale_id, passed_over = read - offerable.len(), "waitlist entries that can no longer be offered a unit left the waitlist");
    }
    Ok((offerable, read))
}

/// Writes one offer per head (`heads` in join order, `units` naming the
/// ended hold each unit came from) and moves the shopper's units, the
/// sale's confirmed count and the product's stock by what was offered.
async fn insert_offers(
    tx: &mut Transaction<'_, Postgres>,
    sale: &SaleRow,
    heads: &[(i64, Uuid)],
    units: &[Uuid],
) -> Result<usize, sqlx::Error> {
    if heads.is_empty() {
        return Ok(0);
    }
    let offers: Vec<NewOffer> = heads
        .iter()
        .zip(units)
        .map(|(&(entry_id, user_id), &offered_from)| NewOffer {
            order_id: Uuid::now_v7(),
            reservation_id: Uuid::now_v7(),
            user_id,
            idempotency_key: offer_key(entry_id),
            offered_from,
        })
        .collect();
    let column = |pick: fn(&NewOffer) -> Uuid| offers.iter().map(pick).collect::<Vec<Uuid>>();
    let keys: Vec<&str> = offers.iter().map(|o| o.idempotency_key.as_str()).collect();
    sqlx::query(
        "with offered as (
             insert into orders (id, reservation_id, flash_sale_id, user_id, quantity, unit_price,
                                 idempotency_key, status, pay_by, offered_from, reserved_at)
             select o.id, o.reservation_id, $1, o.user_id, 1, $2, o.idempotency_key,
                    'awaiting_payment',
                    date_trunc('milliseconds', clock_timestamp()) + make_interval(secs => $3),
                    o.offered_from, now()
             from unnest($4::uuid[], $5::uuid[], $6::uuid[], $7::text[], $8::uuid[])
                  as o(id, reservation_id, user_id, idempotency_key, offered_from)
             returning reservation_id, user_id
         ), buyers as (
             insert into sale_buyers (flash_sale_id, user_id, units, per_user_limit)
             select $1, user_id, 1, $9 from offered
             on conflict (flash_sale_id, user_id)
             do update set units = sale_buyers.units + 1, updated_at = now()
         ), sale as (
             update flash_sales set confirmed_quantity = confirmed_quantity + (select count(*) from offered),
                                    updated_at = now()
             where id = $1
         )
         update stocks set available_quantity = available_quantity - (select count(*) from offered),
                           version = version + 1, updated_at = now()
         where product_id = $10",
    )
    .bind(sale.id)
    .bind(sale.sale_price)
    .bind(sale.offer_window())
    .bind(column(|o| o.order_id))
    .bind(column(|o| o.reservation_id))
    .bind(column(|o| o.user_id))
    .bind(&keys)
    .bind(column(|o| o.offered_from))
    .bind(sale.per_user_limit)
    .bind(sale.product_id)
    .execute(&mut **tx)
    .await?;
    Ok(offers.len())
}

/// An offer's order as [`insert_offers`] writes it.
struct NewOffer {
    order_id: Uuid,
    reservation_id: Uuid,
    user_id: Uuid,
    idempotency_key: String,
    offered_from: Uuid,
}
