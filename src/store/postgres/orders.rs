//! Orders as shoppers read them. Orders are written by the worker.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Db;
use crate::{
    domain::{Currency, Money, OrderStatus, Quantity, ReservationStatus},
    store::StoreError,
};

#[derive(
    Debug,
    Clone,
    PartialEq,
    Eq,
    sqlx::FromRow,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct OrderRow {
    pub id: Uuid,
    pub reservation_id: Uuid,
    pub flash_sale_id: Uuid,
    pub quantity: Quantity,
    pub unit_price: Money,
    /// What the shopper pays: the unit price times the quantity.
    pub amount: i64,
    pub currency: Currency,
    #[sqlx(try_from = "String")]
    pub status: OrderStatus,
    /// For a sale with a checkout hold: when an unpaid order expires.
    pub pay_by: Option<DateTime<Utc>>,
    /// The order is a waitlist offer: a unit another buyer's hold gave back.
    pub from_waitlist: bool,
    pub created_at: DateTime<Utc>,
}

/// `select <every OrderRow column and the owner's user_id> from orders o
/// ...` followed by the given clauses.
macro_rules! select_orders {
    ($($clause:literal),*) => {
        concat!(
            "select o.id, o.reservation_id, o.flash_sale_id, o.quantity, o.unit_price,
                    o.unit_price * o.quantity as amount, p.currency, o.status, o.pay_by,
                    o.offered_from is not null as from_waitlist, o.created_at, o.user_id
             from orders o
             join flash_sales s on s.id = o.flash_sale_id
             join products p on p.id = s.product_id ",
            $($clause),*
        )
    };
}

impl Db {
    /// One page of the user's orders, newest first, and their total count.
    pub async fn user_orders(
        &self,
        user_id: Uuid,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<OrderRow>, i64), StoreError> {
        self.bounded(async {
            let orders = sqlx::query_as::<_, OrderRow>(select_orders!(
                "where o.user_id = $1
                 order by o.created_at desc, o.id desc
                 limit $2 offset $3"
            ))
            .bind(user_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(self.pool())
            .await?;
            let total: i64 = sqlx::query_scalar("select count(*) from orders where user_id = $1")
                .bind(user_id)
                .fetch_one(self.pool())
                .await?;
            Ok::<_, sqlx::Error>((orders, total))
        })
        .await
    }

    /// The order a reservation became, with its owner.
    pub async fn order_for_reservation(
        &self,
        reservation_id: Uuid,
    ) -> Result<Option<(OrderRow, Uuid)>, StoreError> {
        let owned: Option<Owned> = self
            .bounded(
                sqlx::query_as(select_orders!("where o.reservation_id = $1"))
                    .bind(reservation_id)
                    .fetch_optional(self.pool()),
            )
            .await?;
        Ok(owned.map(|owned| (owned.order, owned.user_id)))
    }

    /// The shopper's latest waitlist offer in the sale.
    pub async fn latest_offer(
        &self,
        sale_id: Uuid,
        user_id: Uuid,
    ) -> Result<Option<OrderRow>, StoreError> {
        let owned: Option<Owned> = self
            .bounded(
                sqlx::query_as(select_orders!(
                    "where o.flash_sale_id = $1 and o.user_id = $2 and o.offered_from is not null
                     order by o.created_at desc, o.id desc
                     limit 1"
                ))
                .bind(sale_id)
                .bind(user_id)
                .fetch_optional(self.pool()),
            )
            .await?;
        Ok(owned.map(|owned| owned.order))
    }

    /// An order by id, with its owner.
    pub async fn order(&self, order_id: Uuid) -> Result<Option<(OrderRow, Uuid)>, StoreError> {
        let owned: Option<Owned> = self
            .bounded(
                sqlx::query_as(select_orders!("where o.id = $1"))
                    .bind(order_id)
                    .fetch_optional(self.pool()),
            )
            .await?;
        Ok(owned.map(|owned| (owned.order, owned.user_id)))
    }
}

/// An order with the user who owns it.
#[derive(sqlx::FromRow)]
struct Owned {
    #[sqlx(flatten)]
    order: OrderRow,
    user_id: Uuid,
}

/// An order PostgreSQL committed, as a retry of its key must find it after
/// Redis lost the sale's data.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CommittedOrder {
    pub id: Uuid,
    pub reservation_id: Uuid,
    pub user_id: Uuid,
    pub quantity: Quantity,
    pub idempotency_key: String,
    pub created_at: DateTime<Utc>,
    #[sqlx(try_from = "String")]
    pub status: OrderStatus,
}

impl CommittedOrder {
    /// What its reservation's Redis record says: `confirmed` while the
    /// order's units are the buyer's; for a hold that ended unpaid, how it
    /// ended (the record `return_held.lua` would have left).
    pub fn record_status(&self) -> ReservationStatus {
        match self.status {
            OrderStatus::Expired => ReservationStatus::Expired,
            OrderStatus::Cancelled => ReservationStatus::Released,
            OrderStatus::Confirmed | OrderStatus::AwaitingPayment | OrderStatus::Paid => {
                ReservationStatus::Confirmed
            }
        }
    }
}

impl Db {
    /// One page of the sale's orders in the order of its unique index
    /// (user, key): those after `after`, at most `limit`.
    pub async fn committed_orders_page(
        &self,
        sale_id: Uuid,
        after: Option<&CommittedOrder>,
        limit: usize,
    ) -> Result<Vec<CommittedOrder>, StoreError> {
        self.bounded(
            sqlx::query_as::<_, CommittedOrder>(
                "select id, reservation_id, user_id, quantity, idempotency_key, created_at, status
                 from orders
                 where flash_sale_id = $1 and ($2::uuid is null or (user_id, idempotency_key) > ($2, $3))
                 order by user_id, idempotency_key limit $4",
            )
            .bind(sale_id)
            .bind(after.map(|order| order.user_id))
            .bind(after.map(|order| order.idempotency_key.as_str()))
            .bind(limit as i64)
            .fetch_all(self.pool()),
        )
        .await
    }

    /// One page of the units each buyer holds in the sale, by user id after
    /// `after`, at most `limit`.
    pub async fn buyer_units_page(
        &self,
        sale_id: Uuid,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<(Uuid, i64)>, StoreError> {
        self.bounded(
            sqlx::query_as::<_, (Uuid, i64)>(
                "select user_id, units::bigint from sale_buyers
                 where flash_sale_id = $1 and ($2::uuid is null or user_id > $2)
                 order by user_id limit $3",
            )
            .bind(sale_id)
            .bind(after)
            .bind(limit as i64)
            .fetch_all(self.pool()),
        )
        .await
    }
}

/// A purchase as PostgreSQL recorded its end (`purchase_endings`: its
/// order, or its `purchase_attempts` row), with its order if it became one.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SettledPurchase {
    pub reservation_id: Uuid,
    pub flash_sale_id: Uuid,
    pub user_id: Uuid,
    pub quantity: Quantity,
    #[sqlx(try_from = "String")]
    pub status: ReservationStatus,
    /// A `FailureReason` code.
    pub reason: Option<String>,
    pub order_id: Option<Uuid>,
}

/// `select <every SettledPurchase column> from purchase_endings e ...`
/// followed by the given clause.
macro_rules! select_settled {
    ($clause:literal) => {
        concat!(
            "select e.reservation_id, e.flash_sale_id, e.user_id, e.quantity,
                    e.outcome as status, e.reason, e.order_id
             from purchase_endings e ",
            $clause
        )
    };
}

impl Db {
    pub async fn settled_purchase(
        &self,
        reservation_id: Uuid,
    ) -> Result<Option<SettledPurchase>, StoreError> {
        self.bounded(
            sqlx::query_as::<_, SettledPurchase>(select_settled!("where e.reservation_id = $1"))
                .bind(reservation_id)
                .fetch_optional(self.pool()),
        )
        .await
    }

    /// The user's latest settled purchase in the sale.
    pub async fn latest_settled_purchase(
        &self,
        sale_id: Uuid,
        user_id: Uuid,
    ) -> Result<Option<SettledPurchase>, StoreError> {
        self.bounded(
            sqlx::query_as::<_, SettledPurchase>(select_settled!(
                "where e.flash_sale_id = $1 and e.user_id = $2
                 order by e.reserved_at desc, e.reservation_id desc limit 1"
            ))
            .bind(sale_id)
            .bind(user_id)
            .fetch_optional(self.pool()),
        )
        .await
    }
}
