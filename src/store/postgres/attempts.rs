//! The audit rows of settlement: one `purchase_attempts` row per
//! reservation that failed (its reason). A confirmed reservation's record
//! is its order; `purchase_endings` (migrations/20261206000001) shows both.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::ReservationToSettle;

/// The failures of one batch, as column arrays for one multi-row insert.
#[derive(Default)]
pub(super) struct FailedAttempts<'a> {
    reservation_ids: Vec<Uuid>,
    user_ids: Vec<Uuid>,
    quantities: Vec<i32>,
    reasons: Vec<&'a str>,
    reserved_at: Vec<DateTime<Utc>>,
}

impl<'a> FailedAttempts<'a> {
    /// `reason`: a `FailureReason` code.
    pub(super) fn push(&mut self, reservation: &ReservationToSettle, reason: &'a str) {
        self.reservation_ids.push(reservation.reservation_id);
        self.user_ids.push(reservation.user_id);
        self.quantities.push(reservation.quantity.get());
        self.reasons.push(reason);
        self.reserved_at.push(reservation.reserved_at);
    }

    pub(super) async fn insert(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        sale_id: Uuid,
    ) -> Result<(), sqlx::Error> {
        if self.reservation_ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "insert into purchase_attempts
               (reservation_id, flash_sale_id, user_id, quantity, outcome, reason, reserved_at)
             select a.reservation_id, $1, a.user_id, a.quantity, 'failed', a.reason, a.reserved_at
             from unnest($2::uuid[], $3::uuid[], $4::int[], $5::text[], $6::timestamptz[])
                  as a(reservation_id, user_id, quantity, reason, reserved_at)
             on conflict (reservation_id) do nothing",
        )
        .bind(sale_id)
        .bind(&self.reservation_ids)
        .bind(&self.user_ids)
        .bind(&self.quantities)
        .bind(&self.reasons)
        .bind(&self.reserved_at)
        .execute(&mut **tx)
        .await
        .map(drop)
    }
}
