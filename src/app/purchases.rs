//! Shoppers' purchases: attempt (reserve, re-arm on a miss, post to the
//! outbox), the status of one, a page of their orders, and the job entry
//! that settles a reservation, built one way for the attempt and the
//! reconciler.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{AppError, Sales};
use crate::{
    domain::{DomainError, FailureReason, HoldTerms, PurchaseStatus, Quantity, ReservationStatus},
    jobs::{PurchaseJob, outbox::Outbox},
    store::{
        Dependency, StoreError,
        postgres::OrderRow,
        redis::{CachedOrders, ReservationRecord, ReserveOutcome, ReserveRequest, UserRate},
    },
};

/// What a shopper asks to buy.
#[derive(Debug, Clone)]
pub struct PurchaseIntent {
    /// The sale; `None` for the current one.
    pub sale_id: Option<Uuid>,
    pub quantity: Quantity,
    /// Owned: an accepted attempt moves it into its job.
    pub idempotency_key: String,
}

/// An attempt the engine took on (or a replay of one it took before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub reservation_id: Uuid,
    pub sale_id: Uuid,
    /// `pending` on first acceptance; a replay reports the current status.
    pub status: PurchaseStatus,
    /// In a sale with a checkout hold, on first acceptance: what the
    /// shopper will owe and by when.
    pub hold: Option<HoldTerms>,
}

/// One purchase as its shopper sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseView {
    pub reservation_id: Uuid,
    pub sale_id: Uuid,
    pub status: PurchaseStatus,
    pub quantity: Quantity,
    pub reason: Option<FailureReason>,
    /// The order, once confirmed.
    pub order_id: Option<Uuid>,
    /// In a sale with a checkout hold, the order as it stands (awaiting
    /// payment until `pay_by`, then paid, expired or cancelled).
    pub order: Option<OrderRow>,
}

/// One page of a user's orders, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrdersPage {
    pub orders: Vec<OrderRow>,
    pub page: u32,
    pub per_page: u32,
    pub total: i64,
}

/// Purchases reach the stores through [`Sales`] (the same pools, snapshot
/// and arming), plus the outbox that queues their orders.
pub struct Purchases {
    sales: Sales,
    outbox: Outbox,
    /// The per-user attempt rate the whole cluster enforces (in Redis).
    rate: UserRate,
    orders_cache_ttl_secs: u64,
}

impl Purchases {
    pub fn new(sales: Sales, outbox: Outbox, rate: UserRate, orders_cache_ttl_secs: u64) -> Self {
        Self {
            sales,
            outbox,
            rate,
            orders_cache_ttl_secs,
        }
    }

    /// Reserves stock and posts the order to the outbox; the same key
    /// answers with the first reservation, never a second purchase.
    pub async fn attempt(
        &self,
        shopper: Uuid,
        intent: PurchaseIntent,
    ) -> Result<Accepted, AppError> {
        let sale_id = self.sales.id_or_current(intent.sale_id).await?;
        let reserve = ReserveRequest {
            sale_id,
            user_id: shopper,
            quantity: intent.quantity,
            idempotency_key: &intent.idempotency_key,
            reservation_id: Uuid::now_v7(),
            rate: self.rate,
        };
        let mut outcome = self.sales.redis.reserve(&reserve).await?;
        if outcome == ReserveOutcome::NotArmed {
            self.sales.arm_if_open(sale_id).await?;
            outcome = self.sales.redis.reserve(&reserve).await?;
        }
        metrics::counter!("purchase_attempts_total", "outcome" => outcome_label(&outcome))
            .increment(1);
        let (reservation_id, status, hold) = match outcome {
            ReserveOutcome::Accepted {
                reservation_id,
                reserved_at_ms,
                ..
            } => {
                let hold = self.hold_terms(sale_id, intent.quantity, reserved_at_ms);
                let record = ReservationRecord {
                    reservation_id,
                    sale_id,
                    user_id: shopper,
                    quantity: intent.quantity,
                    status: ReservationStatus::Pending,
                    reserved_at_ms,
                    idempotency_key: intent.idempotency_key,
                    reason: None,
                    order_id: None,
                };
                self.outbox.post(purchase_job(record));
                (reservation_id, PurchaseStatus::Pending, hold)
            }
            ReserveOutcome::Replayed {
                reservation_id,
                status,
            } => (reservation_id, status.for_shopper(), None),
            refused => return Err(refusal(refused)),
        };
        Ok(Accepted {
            reservation_id,
            sale_id,
            status,
            hold,
        })
    }

    /// The hold's terms of a reservation made at `reserved_at_ms`, if the
    /// sale (as this node's snapshot knows it) has a checkout hold.
    fn hold_terms(
        &self,
        sale_id: Uuid,
        quantity: Quantity,
        reserved_at_ms: i64,
    ) -> Option<HoldTerms> {
        // A sale's price and hold never change: a stale snapshot knows them.
        self.sales.snapshot.read_last_seen(sale_id, |view| {
            view.sale.hold_terms(quantity, reserved_at_ms)
        })?
    }

    /// Pushes the purchases still in the outbox and stops it, waiting at
    /// most `within` (a stopping node).
    pub async fn close_outbox(&self, within: std::time::Duration) {
        self.outbox.close(within).await;
    }

    /// The shopper's purchase by reservation (in a sale, or in any open
    /// one), or their latest in a sale. Others' purchases are not found.
    pub async fn status(
        &self,
        shopper: Uuid,
        sale_id: Option<Uuid>,
        reservation_id: Option<Uuid>,
    ) -> Result<PurchaseView, AppError> {
        let record = match (reservation_id, sale_id) {
            (Some(reservation), Some(sale)) => {
                self.sales.redis.reservation(sale, reservation).await?
            }
            (Some(reservation), None) => self.find_in_open_sales(reservation).await?,
            (None, Some(sale)) => self.sales.redis.latest_reservation(sale, shopper).await?,
            (None, None) => {
                return Err(AppError::Invalid(
                    "query: give sale_id, reservation_id or both".into(),
                ));
            }
        };
        if let Some(record) = record.filter(|record| record.user_id == shopper) {
            return self.view_of(record).await;
        }
        // Redis no longer holds it (the sale was archived, or Redis lost
        // its data): PostgreSQL has every purchase that settled.
        let settled = match (reservation_id, sale_id) {
            (Some(reservation), _) => self.sales.db.settled_purchase(reservation).await?,
            (None, Some(sale)) => self.sales.db.latest_settled_purchase(sale, shopper).await?,
            (None, None) => None,
        };
        let settled = settled
            .filter(|settled| {
                settled.user_id == shopper
                    && sale_id.is_none_or(|sale| sale == settled.flash_sale_id)
            })
            .ok_or(DomainError::PurchaseNotFound)?;
        Ok(PurchaseView {
            reservation_id: settled.reservation_id,
            sale_id: settled.flash_sale_id,
            status: settled.status.for_shopper(),
            quantity: settled.quantity,
            reason: settled.reason.as_deref().and_then(FailureReason::from_code),
            order_id: settled.order_id,
            order: None,
        })
    }

    /// Searches the open sales this node knows, then any it has not seen
    /// yet (a sale created a moment ago on another node).
    async fn find_in_open_sales(
        &self,
        reservation_id: Uuid,
    ) -> Result<Option<ReservationRecord>, StoreError> {
        let known = self.sales.snapshot.open_sale_ids();
        if let Some(record) = self
            .sales
            .redis
            .find_reservation(&known, reservation_id)
            .await?
        {
            return Ok(Some(record));
        }
        let unseen: Vec<Uuid> = self
            .sales
            .db
            .sales_to_arm()
            .await?
            .into_iter()
            .map(|sale| sale.id)
            .filter(|id| !known.contains(id))
            .collect();
        self.sales
            .redis
            .find_reservation(&unseen, reservation_id)
            .await
    }

    /// The record's view; the order id of a confirmed reservation comes
    /// from the record itself, or from PostgreSQL for a record written
    /// before the worker kept it there. In a sale with a checkout hold (or
    /// one this node no longer holds open), the order itself comes from
    /// PostgreSQL: its payment state lives there.
    async fn view_of(&self, record: ReservationRecord) -> Result<PurchaseView, AppError> {
        // Whether the sale has a checkout hold: known from the snapshot for
        // open sales; for others (closed, or not seen yet) PostgreSQL is
        // asked, and answers only if it can.
        let hold_sale = self
            .sales
            .snapshot
            .read(record.sale_id, |view| view.sale.hold_seconds.is_some());
        if hold_sale != Some(false)
            && let Some(order_id) = record.order_id
        {
            match self.sales.db.order(order_id).await {
                Ok(Some((order, _))) if order.pay_by.is_some() => {
                    return Ok(PurchaseView {
                        reservation_id: record.reservation_id,
                        sale_id: record.sale_id,
                        status: PurchaseStatus::Confirmed,
                        quantity: record.quantity,
                        reason: None,
                        order_id: Some(order.id),
                        order: Some(order),
                    });
                }
                Ok(_) => {}
                Err(error) if hold_sale.is_none() => {
                    tracing::debug!(%error, "order not read; the purchase is answered from Redis alone");
                }
                Err(error) => return Err(error.into()),
            }
        }
        let order_id = match (record.status, record.order_id) {
            (ReservationStatus::Confirmed, None) => self
                .sales
                .db
                .order_for_reservation(record.reservation_id)
                .await?
                .map(|(order, _)| order.id),
            (_, known) => known,
        };
        // A reservation that became an order is a confirmed purchase,
        // whatever became of the order (a hold that expired or was
        // cancelled says so in `order`): as `reserve.lua` replays it.
        let status = if order_id.is_some() {
            PurchaseStatus::Confirmed
        } else {
            record.status.for_shopper()
        };
        Ok(PurchaseView {
            reservation_id: record.reservation_id,
            sale_id: record.sale_id,
            status,
            quantity: record.quantity,
            reason: record.reason,
            order_id,
            order: None,
        })
    }

    /// A page of the user's orders as JSON text, from a short-lived Redis
    /// cache that the worker drops when it adds an order. Redis down: the
    /// page comes from PostgreSQL and is not cached.
    pub async fn orders_page(
        &self,
        user_id: Uuid,
        page: u32,
        per_page: u32,
    ) -> Result<String, AppError> {
        if !(1..=10_000).contains(&page) || !(1..=100).contains(&per_page) {
            return Err(AppError::Invalid(
                "query: page must be 1-10000 and per_page 1-100".into(),
            ));
        }
        let cache_field = format!("{page}:{per_page}");
        let reading = match self
            .sales
            .redis
            .cached_orders(user_id, &cache_field, self.orders_cache_ttl_secs)
            .await
        {
            Ok(CachedOrders::Hit(cached)) => return Ok(cached),
            Ok(CachedOrders::Miss { reading }) => Some(reading),
            Err(_) => None,
        };
        let offset = i64::from(page - 1) * i64::from(per_page);
        let (orders, total) = self
            .sales
            .db
            .user_orders(user_id, per_page.into(), offset)
            .await?;
        let page = OrdersPage {
            orders,
            page,
            per_page,
            total,
        };
        let body = serde_json::to_string(&page).map_err(|error| {
            tracing::error!(%error, "orders page did not serialise");
            StoreError::unexpected(Dependency::Postgres, "an orders page did not serialise")
        })?;
        if let Some(reading) = reading
            && let Err(error) = self
                .sales
                .redis
                .cache_orders(user_id, &cache_field, &body, &reading)
                .await
        {
            tracing::debug!(%error, "orders page not cached");
        }
        Ok(body)
    }
}

/// What settles a reservation into an order: the attempt posts it to the
/// outbox, the reconciler queues it again for a reservation left pending.
pub fn purchase_job(record: ReservationRecord) -> PurchaseJob {
    PurchaseJob {
        reservation_id: record.reservation_id,
        sale_id: record.sale_id,
        user_id: record.user_id,
        quantity: record.quantity,
        idempotency_key: record.idempotency_key,
        reserved_at_ms: record.reserved_at_ms,
    }
}

fn refusal(outcome: ReserveOutcome) -> AppError {
    let domain = match outcome {
        ReserveOutcome::RateLimited { wait_ms } => {
            return AppError::RateLimited(std::time::Duration::from_millis(wait_ms));
        }
        ReserveOutcome::KeyReused => DomainError::IdempotencyKeyReused,
        ReserveOutcome::NotActive { state } => DomainError::SaleNotActive { state },
        ReserveOutcome::AboveLimit { limit } => DomainError::QuantityAboveLimit { limit },
        ReserveOutcome::LimitReached { held, limit } => {
            DomainError::AlreadyPurchased { held, limit }
        }
        ReserveOutcome::SoldOut { remaining } => DomainError::SoldOut { remaining },
        // Armed a moment ago and gone again: Redis is losing data.
        ReserveOutcome::NotArmed
        | ReserveOutcome::Accepted { .. }
        | ReserveOutcome::Replayed { .. } => {
            return StoreError::unavailable(Dependency::Redis, "the sale left Redis after arming")
                .into();
        }
    };
    domain.into()
}

fn outcome_label(outcome: &ReserveOutcome) -> &'static str {
    match outcome {
        ReserveOutcome::Accepted { .. } => "accepted",
        ReserveOutcome::Replayed { .. } => "replayed",
        ReserveOutcome::KeyReused => "key_reused",
        ReserveOutcome::NotArmed => "not_armed",
        ReserveOutcome::RateLimited { .. } => "rate_limited",
        ReserveOutcome::NotActive { .. } => "not_active",
        ReserveOutcome::AboveLimit { .. } => "above_limit",
        ReserveOutcome::LimitReached { .. } => "already_purchased",
        ReserveOutcome::SoldOut { .. } => "sold_out",
    }
}
