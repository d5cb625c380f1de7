//! What the operators' stats read from PostgreSQL beyond the sale itself.

use uuid::Uuid;

use super::Db;
use crate::store::StoreError;

/// A sale's checkout holds and waitlist, for the operators' stats.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema,
)]
pub struct CheckoutCounts {
    /// Orders awaiting payment now (waitlist offers included).
    pub awaiting_payment: i64,
    pub paid: i64,
    pub expired: i64,
    pub cancelled: i64,
    /// Payments received for orders no longer awaiting payment (expired,
    /// cancelled, paid by another event) or after their deadline: the money
    /// must go back.
    pub refunds_required: i64,
    /// Payments of another amount or currency than their order's: flagged,
    /// not taken.
    pub amount_mismatches: i64,
    /// Shoppers on the waitlist now.
    pub waitlist: i64,
    /// Units offered to the waitlist so far.
    pub offers: i64,
}

impl Db {
    /// The sale's holds, payments to act on and waitlist, counted now.
    pub async fn checkout_counts(&self, sale_id: Uuid) -> Result<CheckoutCounts, StoreError> {
        self.bounded(
            sqlx::query_as::<_, CheckoutCounts>(
                "select count(*) filter (where status = 'awaiting_payment') as awaiting_payment,
                        count(*) filter (where status = 'paid') as paid,
                        count(*) filter (where status = 'expired') as expired,
                        count(*) filter (where status = 'cancelled' and pay_by is not null) as cancelled,
                        (select count(*) from payment_events e join orders o on o.id = e.order_id
                         where o.flash_sale_id = $1 and e.outcome = 'refund_required') as refunds_required,
                        (select count(*) from payment_events e join orders o on o.id = e.order_id
                         where o.flash_sale_id = $1 and e.outcome = 'amount_mismatch') as amount_mismatches,
                        (select count(*) from waitlist_entries where flash_sale_id = $1) as waitlist,
                        count(*) filter (where offered_from is not null) as offers
                 from orders where flash_sale_id = $1",
            )
            .bind(sale_id)
            .fetch_one(self.pool()),
        )
        .await
    }
}
