//! Payments for sales with a checkout hold: how a provider's webhook is
//! authenticated ([`signature`]) and what a payment event says
//! ([`PaymentEvent`]).

pub mod signature;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use signature::{SignatureError, SignedDelivery, WebhookSecret, verify};

/// The body of `POST /api/payments/webhook`: a provider tells that an
/// order was paid, and how much.
/// Fields beyond these are ignored: providers add fields over time.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentEvent {
    /// Only `payment.succeeded` is acted on; any other type is
    /// acknowledged and ignored.
    #[serde(rename = "type")]
    pub event_type: String,
    pub data: PaymentData,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentData {
    /// The order the shop's checkout passed to the provider.
    pub order_id: Uuid,
    /// Minor units (cents) the shopper paid.
    pub amount: i64,
    /// ISO 4217 code of the payment.
    pub currency: String,
}

/// The one event type that pays an order.
pub const PAYMENT_SUCCEEDED: &str = "payment.succeeded";
