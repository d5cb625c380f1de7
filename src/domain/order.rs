//! An order and, for a sale with a checkout hold, its payment: what each
//! state may become, and what a payment event does to an order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Currency, Money, Quantity};

/// What a shopper must pay, and by when, for a reservation in a sale with a
/// checkout hold. `pay_by` is the reservation's own time (Redis's clock,
/// which decided it) plus the sale's hold: the order the worker writes
/// carries the same deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HoldTerms {
    pub pay_by: DateTime<Utc>,
    pub amount: i64,
    pub currency: Currency,
}

impl HoldTerms {
    /// The terms of `quantity` units at `unit_price` reserved at
    /// `reserved_at_ms` (Unix ms) in a sale holding `hold_seconds`; none in
    /// a sale without a hold.
    pub fn new(
        hold_seconds: Option<i32>,
        unit_price: Money,
        currency: &Currency,
        quantity: Quantity,
        reserved_at_ms: i64,
    ) -> Option<Self> {
        let reserved_at = DateTime::from_timestamp_millis(reserved_at_ms)?;
        Some(Self {
            pay_by: reserved_at + chrono::Duration::seconds(i64::from(hold_seconds?)),
            amount: unit_price.minor() * i64::from(quantity.get()),
            currency: currency.clone(),
        })
    }
}

/// How an order stands. A sale without a hold writes `confirmed` orders
/// (sold when written). A sale with one writes `awaiting_payment`, which
/// ends exactly once: `paid`, `expired` (the sweep, after `pay_by`) or
/// `cancelled` (the shopper, before paying).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum OrderStatus {
    Confirmed,
    AwaitingPayment,
    Paid,
    Expired,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(value: &str) -> Option<Self> {
        value.parse().ok()
    }

    /// Whether the order's units are the shopper's (sold, or held for
    /// them until they pay).
    pub fn holds_units(self) -> bool {
        matches!(
            self,
            OrderStatus::Confirmed | OrderStatus::AwaitingPayment | OrderStatus::Paid
        )
    }
}

impl TryFrom<String> for OrderStatus {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or_else(|| format!("unknown order status {value:?}"))
    }
}

/// What one authentic payment event did, as recorded once per event id.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum PaymentOutcome {
    /// The order was awaiting payment, in time: it is paid now.
    Paid,
    /// The order had already ended (expired, cancelled, paid by another
    /// event) or its deadline had passed: the money must go back.
    RefundRequired,
    /// Amount or currency differ from the order's: flagged for an
    /// operator, the order is unchanged.
    AmountMismatch,
    /// No such order (answered 200 so the provider stops retrying).
    UnknownOrder,
}

impl PaymentOutcome {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(value: &str) -> Option<Self> {
        value.parse().ok()
    }
}

/// What a payment event claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub amount: i64,
    pub currency: String,
}

/// The order a payment names, as PostgreSQL holds it under its row lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayableOrder {
    pub status: OrderStatus,
    pub pay_by: Option<DateTime<Utc>>,
    pub unit_price: Money,
    pub quantity: i64,
    pub currency: Currency,
    /// The order's sale was cancelled: its holds still awaiting payment
    /// are the sweep's to cancel, and none is paid for meanwhile.
    pub sale_cancelled: bool,
}

impl PayableOrder {
    /// What the shopper owes: the unit price times the quantity (no
    /// overflow: prices are at most 10^12 and quantities 1000).
    pub fn amount(&self) -> i64 {
        self.unit_price.minor() * self.quantity
    }
}

/// What a payment arriving at `now` does to `order`. A payment is only
/// ever taken for an order awaiting payment, before its deadline, in a sale
/// not cancelled, for exactly its amount and currency.
pub fn decide_payment(
    order: Option<&PayableOrder>,
    payment: &Payment,
    now: DateTime<Utc>,
) -> PaymentOutcome {
    let Some(order) = order else {
        return PaymentOutcome::UnknownOrder;
    };
    if payment.amount != order.amount() || payment.currency != order.currency.as_str() {
        return PaymentOutcome::AmountMismatch;
    }
    match (order.status, order.pay_by) {
        (OrderStatus::AwaitingPayment, Some(pay_by)) if now <= pay_by && !order.sale_cancelled => {
            PaymentOutcome::Paid
        }
        _ => PaymentOutcome::RefundRequired,
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn awaiting(pay_by: DateTime<Utc>) -> PayableOrder {
        PayableOrder {
            status: OrderStatus::AwaitingPayment,
            pay_by: Some(pay_by),
            unit_price: Money::from_minor(1_999).unwrap(),
            quantity: 2,
            currency: Currency::parse("EUR").unwrap(),
            sale_cancelled: false,
        }
    }

    fn payment(amount: i64, currency: &str) -> Payment {
        Payment {
            amount,
            currency: currency.into(),
        }
    }

    #[test]
    fn a_payment_in_time_for_the_exact_amount_pays() {
        let now = Utc::now();
        let order = awaiting(now);
        assert_eq!(
            decide_payment(Some(&order), &payment(3_998, "EUR"), now),
            PaymentOutcome::Paid,
            "a payment at the deadline itself is in time"
        );
    }

    #[test]
    fn a_late_payment_or_one_for_an_ended_order_must_be_refunded() {
        let now = Utc::now();
        let late = awaiting(now - Duration::milliseconds(1));
        assert_eq!(
            decide_payment(Some(&late), &payment(3_998, "EUR"), now),
            PaymentOutcome::RefundRequired
        );
        for status in [
            OrderStatus::Paid,
            OrderStatus::Expired,
            OrderStatus::Cancelled,
            OrderStatus::Confirmed,
        ] {
            let ended = PayableOrder {
                status,
                ..awaiting(now + Duration::minutes(5))
            };
            assert_eq!(
                decide_payment(Some(&ended), &payment(3_998, "EUR"), now),
                PaymentOutcome::RefundRequired,
                "{status}"
            );
        }
    }

    #[test]
    fn a_hold_of_a_cancelled_sale_is_not_paid_for_before_the_sweep_ends_it() {
        let now = Utc::now();
        let order = PayableOrder {
            sale_cancelled: true,
            ..awaiting(now + Duration::minutes(5))
        };
        assert_eq!(
            decide_payment(Some(&order), &payment(3_998, "EUR"), now),
            PaymentOutcome::RefundRequired
        );
    }

    #[test]
    fn a_wrong_amount_or_currency_is_flagged_and_pays_nothing() {
        let now = Utc::now();
        let order = awaiting(now + Duration::minutes(5));
        for wrong in [
            payment(3_997, "EUR"),
            payment(3_998, "USD"),
            payment(0, "EUR"),
        ] {
            assert_eq!(
                decide_payment(Some(&order), &wrong, now),
                PaymentOutcome::AmountMismatch
            );
        }
        assert_eq!(
            decide_payment(None, &payment(3_998, "EUR"), now),
            PaymentOutcome::UnknownOrder
        );
    }
}
