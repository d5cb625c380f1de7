//! What a live event stream carries: the sale as it stands, and a
//! shopper's own purchase outcome.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    domain::{
        Currency, FailureReason, HoldTerms, Money, OrderStatus, PurchaseStatus, Quantity,
        ReservationStatus, SaleState,
    },
    snapshot::SaleView,
    store::redis::ReservationRecord,
};

/// The `sale` event: sent first on every (re)connect, then whenever the
/// state or remaining stock changes, at most four times a second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SaleUpdate {
    pub sale_id: Uuid,
    /// What is for sale.
    pub product_name: String,
    pub product_description: String,
    pub state: SaleState,
    /// Units left to reserve; null while the sale is not armed.
    pub remaining: Option<i64>,
    /// Units allotted to the sale.
    pub stock: i64,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub price: Money,
    pub currency: Currency,
    pub per_user_limit: i32,
    /// Seconds a buyer has to pay for their order; null: sold when ordered.
    pub hold_seconds: Option<i32>,
}

impl SaleUpdate {
    /// What `quantity` units reserved at `reserved_at_ms` (Unix ms) cost and
    /// must be paid by; none without a checkout hold.
    pub fn hold_terms(&self, quantity: Quantity, reserved_at_ms: i64) -> Option<HoldTerms> {
        HoldTerms::new(
            self.hold_seconds,
            self.price,
            &self.currency,
            quantity,
            reserved_at_ms,
        )
    }

    pub fn of(view: &SaleView, now: DateTime<Utc>) -> Self {
        let sale = &view.sale;
        Self {
            sale_id: sale.id,
            product_name: sale.product_name.clone(),
            product_description: sale.product_description.clone(),
            state: view.state(now),
            remaining: view.remaining,
            stock: sale.allotted_quantity,
            starts_at: sale.starts_at,
            ends_at: sale.ends_at,
            price: sale.sale_price,
            currency: sale.currency.clone(),
            per_user_limit: sale.per_user_limit,
            hold_seconds: sale.hold_seconds,
        }
    }
}

/// A `sale` event as sent: the update plus the node's clock, to count
/// down against.
#[derive(Debug, Serialize, ToSchema)]
pub struct SaleEvent {
    #[serde(flatten)]
    pub sale: SaleUpdate,
    pub server_time: DateTime<Utc>,
}

/// The `purchase` event, for an authenticated shopper only: their latest
/// purchase in the sale on connect, then each outcome as the worker
/// commits or releases it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PurchaseEvent {
    pub reservation_id: Uuid,
    pub sale_id: Uuid,
    pub status: PurchaseStatus,
    /// Why a purchase failed, in words for the shopper.
    pub reason: Option<String>,
    /// The same as a stable code (see the purchase status).
    pub reason_code: Option<String>,
    /// The order a confirmed purchase became.
    pub order_id: Option<Uuid>,
    /// In a sale with a checkout hold: what to pay for that order, and by
    /// when (as the 202's `hold`).
    pub hold: Option<HoldTerms>,
}

impl PurchaseEvent {
    pub fn new(
        reservation_id: Uuid,
        sale_id: Uuid,
        status: ReservationStatus,
        reason: Option<FailureReason>,
    ) -> Self {
        Self {
            reservation_id,
            sale_id,
            status: status.for_shopper(),
            reason: reason.map(|reason| reason.message().to_string()),
            reason_code: reason.map(|reason| reason.code().to_string()),
            order_id: None,
            hold: None,
        }
    }

    /// The same, for a purchase that became `order_id`, with its hold's
    /// terms if the sale has a hold.
    pub fn with_order(mut self, order_id: Uuid, hold: Option<HoldTerms>) -> Self {
        self.order_id = Some(order_id);
        self.hold = hold;
        self
    }
}

impl From<ReservationRecord> for PurchaseEvent {
    fn from(record: ReservationRecord) -> Self {
        // A reservation that became an order is a confirmed purchase,
        // whatever became of the order (a hold that expired or was
        // cancelled is told by an `order` event).
        let status = if record.order_id.is_some() {
            ReservationStatus::Confirmed
        } else {
            record.status
        };
        let mut event = Self::new(record.reservation_id, record.sale_id, status, record.reason);
        event.order_id = record.order_id;
        event
    }
}

/// The `order` event, for an authenticated shopper only: one of their
/// checkout holds ended (`paid`, `expired` or `cancelled`), or the waitlist
/// offered them a unit (`awaiting_payment`: a new order to pay by its
/// `pay_by`; `GET /api/orders/{id}` has its terms). An expired or
/// cancelled hold's unit is on sale again (or offered to the waitlist);
/// the shopper may buy again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OrderEvent {
    pub order_id: Uuid,
    pub reservation_id: Uuid,
    pub sale_id: Uuid,
    pub status: OrderStatus,
    /// For a waitlist offer (`awaiting_payment`): what to pay, and by when.
    pub hold: Option<HoldTerms>,
}

impl OrderEvent {
    /// How the record's hold ended, if it ended unpaid: what a stream that
    /// (re)connects re-reads, as it re-reads the purchase. (A paid order's
    /// record still says `confirmed`; `GET /api/orders/{id}` tells it.)
    pub fn of_ended_hold(record: &ReservationRecord) -> Option<Self> {
        let status = match record.status {
            ReservationStatus::Expired => OrderStatus::Expired,
            ReservationStatus::Released => OrderStatus::Cancelled,
            _ => return None,
        };
        Some(Self {
            order_id: record.order_id?,
            reservation_id: record.reservation_id,
            sale_id: record.sale_id,
            status,
            hold: None,
        })
    }
}
