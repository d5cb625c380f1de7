//! Payment events, each recorded once by its id, and what each did to its
//! order (`domain::decide_payment`), in one transaction under the order's
//! row lock: a payment and the sweep's end of the same hold (expired, or
//! cancelled with its sale) serialise on that lock, so each hold ends
//! exactly once.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Db;
use crate::{
    domain::{Currency, Money, OrderStatus, PayableOrder, Payment, PaymentOutcome, decide_payment},
    store::StoreError,
};

/// What the webhook reports back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecorded {
    pub outcome: PaymentOutcome,
    /// The event id was recorded before: nothing changed now.
    pub duplicate: bool,
    /// The order a `paid` outcome paid, for the shopper's events.
    pub paid: Option<PaidOrder>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidOrder {
    pub order_id: Uuid,
    pub reservation_id: Uuid,
    pub flash_sale_id: Uuid,
    pub user_id: Uuid,
}

#[derive(sqlx::FromRow)]
struct LockedOrder {
    reservation_id: Uuid,
    flash_sale_id: Uuid,
    user_id: Uuid,
    #[sqlx(try_from = "String")]
    status: OrderStatus,
    pay_by: Option<DateTime<Utc>>,
    unit_price: Money,
    quantity: i32,
    currency: Currency,
    sale_cancelled: bool,
}

impl Db {
    /// Records the event `event_id` paying `order_id` (once: a replay finds
    /// the first outcome), and pays the order if it awaits payment, was
    /// received (`received_at`, the node's clock) by its deadline, and is
    /// for exactly its amount and currency.
    pub async fn record_payment(
        &self,
        event_id: &str,
        order_id: Uuid,
        payment: &Payment,
        received_at: DateTime<Utc>,
    ) -> Result<PaymentRecorded, StoreError> {
        self.bounded(async {
            let mut tx = self.pool().begin().await?;
            // The event's row first: a concurrent delivery of the same event
            // waits here on the primary key until this one commits, then
            // finds it.
            let fresh: Option<String> = sqlx::query_scalar(
                "insert into payment_events (event_id, order_id, amount, currency, outcome, received_at)
                 values ($1, $2, $3, $4, 'unknown_order', $5)
                 on conflict (event_id) do nothing
                 returning event_id",
            )
            .bind(event_id)
            .bind(order_id)
            .bind(payment.amount)
            .bind(&payment.currency)
            .bind(received_at)
            .fetch_optional(&mut *tx)
            .await?;
            if fresh.is_none() {
                let first: String =
                    sqlx::query_scalar("select outcome from payment_events where event_id = $1")
                        .bind(event_id)
                        .fetch_one(&mut *tx)
                        .await?;
                tx.commit().await?;
                return Ok(PaymentRecorded {
                    outcome: PaymentOutcome::parse(&first).unwrap_or(PaymentOutcome::UnknownOrder),
                    duplicate: true,
                    paid: None,
                });
            }
            let locked: Option<LockedOrder> = sqlx::query_as(
                "select o.reservation_id, o.flash_sale_id, o.user_id, o.status, o.pay_by,
                        o.unit_price, o.quantity, p.currency, s.state = 'cancelled' as sale_cancelled
                 from orders o
                 join flash_sales s on s.id = o.flash_sale_id
                 join products p on p.id = s.product_id
                 where o.id = $1
                 for update of o",
            )
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?;
            let payable = locked.as_ref().map(|order| PayableOrder {
                status: order.status,
                pay_by: order.pay_by,
                unit_price: order.unit_price,
                quantity: i64::from(order.quantity),
                currency: order.currency.clone(),
                sale_cancelled: order.sale_cancelled,
            });
            let mut outcome = decide_payment(payable.as_ref(), payment, received_at);
            if outcome == PaymentOutcome::Paid {
                // The sale's state above is the snapshot from before any wait
                // for the order's lock (another delivery, a sweep), and a
                // cancel may have committed during that wait: the update, a
                // statement of its own, reads the state afresh and pays only
                // a sale not cancelled (the order is locked awaiting payment,
                // so that is the only way it updates nothing). A cancel that
                // commits after it is ordered after this payment (it changes
                // only the sale; the sweep then finds the order paid).
                let paid = sqlx::query(
                    "update orders o set status = 'paid', ended_at = now(), updated_at = now()
                     where o.id = $1 and o.status = 'awaiting_payment'
                       and not exists (select 1 from flash_sales s
                                       where s.id = o.flash_sale_id and s.state = 'cancelled')",
                )
                .bind(order_id)
                .execute(&mut *tx)
                .await?;
                if paid.rows_affected() == 0 {
                    outcome = PaymentOutcome::RefundRequired;
                }
            }
            sqlx::query("update payment_events set outcome = $2 where event_id = $1")
                .bind(event_id)
                .bind(outcome.as_str())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            let paid = locked
                .filter(|_| outcome == PaymentOutcome::Paid)
                .map(|order| PaidOrder {
                    order_id,
                    reservation_id: order.reservation_id,
                    flash_sale_id: order.flash_sale_id,
                    user_id: order.user_id,
                });
            Ok::<_, sqlx::Error>(PaymentRecorded {
                outcome,
                duplicate: false,
                paid,
            })
        })
        .await
    }
}
