//! The domain error enum: what can go wrong for business reasons, not I/O.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{OrderStatus, SaleAction, SaleState};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("no flash sale with id {0}")]
    SaleNotFound(Uuid),

    #[error("there is no current flash sale")]
    NoCurrentSale,

    #[error("no product with id {0}")]
    ProductNotFound(Uuid),

    #[error("no user with id {0}")]
    UserNotFound(Uuid),

    #[error("a product with sku {0:?} already exists")]
    SkuTaken(String),

    #[error("only {available} unit(s) of the product are free to allot, {requested} requested")]
    InsufficientStock { requested: i64, available: i64 },

    #[error("cannot {action} a sale that is {state}")]
    InvalidTransition {
        state: SaleState,
        action: SaleAction,
    },

    #[error("stock cannot be added to a sale that is {state}")]
    StockChangeNotAllowed { state: SaleState },

    #[error("the sale is {state}; purchases are accepted only while it is active")]
    SaleNotActive { state: SaleState },

    #[error("sold out: {remaining} unit(s) left")]
    SoldOut { remaining: i64 },

    #[error("you already hold {held} of the {limit} unit(s) one shopper may buy in this sale")]
    AlreadyPurchased { held: i64, limit: i64 },

    #[error("this sale allows at most {limit} unit(s) per shopper")]
    QuantityAboveLimit { limit: i64 },

    #[error(
        "this Idempotency-Key was already used with another request (another body, sale or action); use a new key"
    )]
    IdempotencyKeyReused,

    #[error(
        "no purchase of yours matches: neither an order nor a pending reservation; an accepted purchase missing here was lost before it could be committed, and you may buy again"
    )]
    PurchaseNotFound,

    #[error("no order {0} of yours")]
    OrderNotFound(Uuid),

    #[error("order {order_id} is {status}, not awaiting payment: nothing was changed")]
    OrderNotAwaitingPayment { order_id: Uuid, status: OrderStatus },

    #[error(
        "this sale keeps no waitlist: without a checkout hold its units never come back on sale"
    )]
    NoWaitlist,

    #[error("{remaining} unit(s) are on sale: buy one instead of joining the waitlist")]
    UnitsOnSale { remaining: i64 },

    #[error(
        "you hold a unit of this sale awaiting payment: pay for it or cancel it before joining the waitlist"
    )]
    HoldAwaitingPayment,

    #[error("you are not on this sale's waitlist (never joined, left, or offered a unit already)")]
    NotOnWaitlist,

    #[error(
        "ends_at must be in the future: {} is not after the server's time {}; to read a sale created before, send its creation again with its Idempotency-Key",
        rfc3339(ends_at),
        rfc3339(now)
    )]
    SaleWindowOver {
        ends_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },

    #[error(
        "{field}: must be {min} to {} seconds (the shortest is this node's FLASHSALE_HOLD_MIN_SECS)",
        super::MAX_HOLD_SECONDS
    )]
    HoldOutOfBounds { field: &'static str, min: i32 },
}

/// A time as the API's JSON writes it (RFC 3339, UTC, with the fraction
/// it has).
fn rfc3339(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}
