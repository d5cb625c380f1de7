//! The worker's side of Redis: settling reservations once PostgreSQL has
//! decided them (confirm or release, each publishing the sale's events),
//! finding reservations left pending too long, and the reconciler's and
//! dead-letter figures that operators read in the sale's stats.

use std::time::Duration;

use uuid::Uuid;

use super::{
    Counter, RedisStore, ReservationRecord,
    purchase::{field, malformed, parse_record},
};
use crate::{
    domain::{FailureReason, OrderStatus, ReservationStatus},
    store::{
        StoreError,
        postgres::{EndedHold, Offer, PaidOrder},
    },
};

/// How many of a released reservation's units go back on sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restock {
    pub units: i64,
    /// The room PostgreSQL has left for the sale: when given, no more go
    /// back than keep Redis's stock plus pending units within it.
    pub within_room: Option<i64>,
}

impl Restock {
    /// All of them, unconditionally (they exist in PostgreSQL).
    pub fn all(units: i64) -> Self {
        Self {
            units,
            within_room: None,
        }
    }
}

/// What `release.lua` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseOutcome {
    Released { remaining: i64 },
    NotPending(ReservationStatus),
    Unknown,
}

fn parse_release(reply: &[String]) -> Result<ReleaseOutcome, StoreError> {
    Ok(match reply.first().map(String::as_str) {
        Some("RELEASED") => ReleaseOutcome::Released {
            remaining: field(reply, 1, "release")?,
        },
        Some("NOT_PENDING") => ReleaseOutcome::NotPending(
            reply
                .get(1)
                .and_then(|status| ReservationStatus::parse(status))
                .ok_or_else(|| malformed("release", reply))?,
        ),
        Some("UNKNOWN") => ReleaseOutcome::Unknown,
        _ => return Err(malformed("release", reply)),
    })
}

/// The room PostgreSQL has left for a sale, the bound on what a return
/// puts back in stock, with what Redis's stock had grown by before it was
/// read (returns, allotment growth): growth landing in between is added to
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomRead {
    pub units: i64,
    pub grown_before: i64,
}

impl RedisStore {
    /// Ends a pending reservation without an order (`scripts/release.lua`),
    /// putting `restock` of its units back on sale and writing off the rest.
    pub async fn release(
        &self,
        sale_id: Uuid,
        reservation_id: Uuid,
        outcome: ReservationStatus,
        reason: FailureReason,
        restock: Restock,
    ) -> Result<ReleaseOutcome, StoreError> {
        let keys = self.sale_keys(sale_id);
        let mut invocation = self.scripts.release.prepare_invoke();
        invocation
            .key(&keys.meta)
            .key(&keys.buyers)
            .key(&keys.reservations)
            .key(&keys.pending)
            .key(&keys.stats)
            .arg(reservation_id.to_string())
            .arg(outcome.as_str())
            .arg(reason.code())
            .arg(restock.units)
            .arg(sale_id.to_string())
            .arg(&keys.events)
            .arg(restock.within_room.unwrap_or(-1));
        let reply: Vec<String> = self.run_script(invocation).await?;
        parse_release(&reply)
    }

    /// Marks reservations whose orders are committed as confirmed, each
    /// with its order id when known (`scripts/confirm.lua`); returns how
    /// many changed now.
    pub async fn confirm(
        &self,
        sale_id: Uuid,
        confirmed: &[(Uuid, Option<Uuid>)],
    ) -> Result<usize, StoreError> {
        if confirmed.is_empty() {
            return Ok(0);
        }
        let keys = self.sale_keys(sale_id);
        let mut invocation = self.scripts.confirm.prepare_invoke();
        invocation
            .key(&keys.reservations)
            .key(&keys.pending)
            .key(&keys.stats)
            .arg(sale_id.to_string())
            .arg(&keys.events);
        for (reservation_id, order_id) in confirmed {
            invocation
                .arg(reservation_id.to_string())
                .arg(order_id.map(|id| id.to_string()).unwrap_or_default());
        }
        self.run_script(invocation).await
    }

    /// The units the sale's stock has grown by so far, from returns and the
    /// allotment's growth; read before PostgreSQL's room (see [`RoomRead`]).
    pub async fn stock_grown(&self, sale_id: Uuid) -> Result<i64, StoreError> {
        let mut command = redis::cmd("HGET");
        command
            .arg(&self.sale_keys(sale_id).meta)
            .arg("stock_grown");
        Ok(self
            .query::<Option<i64>>(command)
            .await?
            .unwrap_or_default())
    }

    /// Gives Redis the units of the sale's ended holds (`return_held.lua`,
    /// one call per way they ended) and grants the waitlist offers made
    /// from them (all of them: one that ended since is returned after this,
    /// see `Db::holds_owing_units`). Returns the holds returned.
    pub async fn return_held(
        &self,
        sale_id: Uuid,
        ended: &[EndedHold],
        offers: &[Offer],
        room: RoomRead,
    ) -> Result<usize, StoreError> {
        let keys = self.sale_keys(sale_id);
        let mut returned = 0;
        for status in [OrderStatus::Expired, OrderStatus::Cancelled] {
            let holds: Vec<&EndedHold> = ended
                .iter()
                .filter(|hold| hold.flash_sale_id == sale_id && hold.status == status)
                .collect();
            if holds.is_empty() {
                continue;
            }
            let mut invocation = self.scripts.return_held.prepare_invoke();
            invocation
                .key(&keys.meta)
                .key(&keys.buyers)
                .key(&keys.reservations)
                .key(&keys.stats)
                .key(&keys.pending)
                .key(&keys.shoppers)
                .arg(sale_id.to_string())
                .arg(&keys.events)
                .arg(room.units)
                .arg(room.grown_before)
                .arg(status.as_str())
                .arg(holds.len());
            for hold in &holds {
                let offered = offers
                    .iter()
                    .filter(|offer| offer.offered_from == hold.order_id)
                    .count();
                invocation
                    .arg(hold.reservation_id.to_string())
                    .arg(hold.order_id.to_string())
                    .arg(offered);
            }
            let theirs = offers
                .iter()
                .filter(|offer| holds.iter().any(|hold| hold.order_id == offer.offered_from));
            for offer in theirs {
                invocation
                    .arg(offer.reservation_id.to_string())
                    .arg(offer.order_id.to_string())
                    .arg(offer.user_id.to_string())
                    .arg(&offer.idempotency_key)
                    .arg(u8::from(offer.awaiting))
                    .arg(offer.pay_by.timestamp_millis())
                    .arg(offer.amount)
                    .arg(&offer.currency);
            }
            let (holds, _restocked, _granted): (usize, i64, usize) =
                self.run_script(invocation).await?;
            returned += holds;
        }
        Ok(returned)
    }

    /// Tells the sale's subscribers that a shopper's order was paid (the
    /// same `order` message `return_held.lua` publishes for ended holds).
    pub async fn publish_paid(&self, paid: &PaidOrder) -> Result<(), StoreError> {
        let keys = self.sale_keys(paid.flash_sale_id);
        let message = serde_json::json!({
            "type": "order",
            "sale_id": paid.flash_sale_id,
            "reservation_id": paid.reservation_id,
            "order_id": paid.order_id,
            "user_id": paid.user_id,
            "status": OrderStatus::Paid.as_str(),
        });
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&keys.events).arg(message.to_string());
        self.query::<i64>(publish).await.map(drop)
    }

    /// Pending reservations reserved more than `older_than` ago (Redis
    /// time), oldest first, at most `limit`.
    pub async fn stale_pending(
        &self,
        sale_id: Uuid,
        older_than: Duration,
        limit: usize,
    ) -> Result<Vec<ReservationRecord>, StoreError> {
        let keys = self.sale_keys(sale_id);
        let mut invocation = self.scripts.stale_pending.prepare_invoke();
        invocation
            .key(&keys.pending)
            .key(&keys.reservations)
            .arg(older_than.as_millis() as u64)
            .arg(limit);
        let reply: Vec<String> = self.run_script(invocation).await?;
        let mut records = Vec::with_capacity(reply.len() / 2);
        for pair in reply.chunks(2) {
            let [id, record] = pair else {
                return Err(malformed("stale_pending", &reply));
            };
            let reservation_id: Uuid =
                id.parse().map_err(|_| malformed("stale_pending", &reply))?;
            if record.is_empty() {
                tracing::warn!(%sale_id, %reservation_id, "pending reservation without a record");
                continue;
            }
            records.push(parse_record(sale_id, reservation_id, record)?);
        }
        Ok(records)
    }

    /// Removes every key of a closed, archived sale (UNLINK: large hashes
    /// are freed in the background, never blocking Redis).
    pub async fn purge_sale(&self, sale_id: Uuid) -> Result<(), StoreError> {
        let keys = self.sale_keys(sale_id);
        let mut unlink = redis::cmd("UNLINK");
        unlink.arg(&keys.stored()[..]).arg(&keys.legacy()[..]);
        self.query::<i64>(unlink).await.map(drop)
    }

    /// Counts the purchases of a job given up on after too many failed
    /// attempts.
    pub async fn count_dead_letter(&self, sale_id: Uuid, purchases: u64) -> Result<(), StoreError> {
        self.query(redis::Cmd::hincr(
            &self.sale_keys(sale_id).stats,
            Counter::DeadLettered.name(),
            purchases,
        ))
        .await
    }

    /// Records the reconciler's last drift figure for the sale's stats.
    pub async fn record_drift(
        &self,
        sale_id: Uuid,
        drift: i64,
        checked_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.query(redis::Cmd::hset_multiple(
            &self.sale_keys(sale_id).stats,
            &[
                (Counter::Drift.name(), drift),
                (Counter::DriftCheckedAtMs.name(), checked_at_ms),
            ],
        ))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_replies_parse_into_outcomes() {
        let reply = |values: &[&str]| values.iter().map(|v| v.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_release(&reply(&["RELEASED", "4"])).unwrap(),
            ReleaseOutcome::Released { remaining: 4 }
        );
        assert_eq!(
            parse_release(&reply(&["NOT_PENDING", "confirmed"])).unwrap(),
            ReleaseOutcome::NotPending(ReservationStatus::Confirmed)
        );
        assert_eq!(
            parse_release(&reply(&["UNKNOWN"])).unwrap(),
            ReleaseOutcome::Unknown
        );
        assert!(parse_release(&reply(&["RELEASED", "x"])).is_err());
    }
}
