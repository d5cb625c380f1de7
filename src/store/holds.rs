//! Ending checkout holds across both stores: PostgreSQL ends the hold,
//! counts its units back and offers them to the sale's waitlist first
//! (`postgres::holds`, `postgres::waitlist`), then Redis gives the shopper
//! their allowance back, the stock what no offer took, and each offered
//! shopper their unit (`return_held.lua`), then PostgreSQL records that
//! Redis has them. A crash or a Redis failure in
//! between leaves the hold owed, and the worker's sweep returns it later
//! ([`return_owed`]); every step is idempotent.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use uuid::Uuid;

use crate::domain::OrderStatus;

use super::{
    StoreError,
    postgres::{Db, EndedHold},
    redis::{RedisStore, RoomRead},
};

/// Holds ended or owed per sweep step at most.
pub const SWEEP_BATCH: i64 = 512;

/// How many holds one sweep transaction ends. A batch that failed (most
/// often: PostgreSQL could not finish it within the bound, and a batch as
/// large would never finish) halves the next, down to one hold; one that
/// finished within half the bound (the product's lock wait included)
/// doubles it, up to [`SWEEP_BATCH`]. A worker keeps one across its sweeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepBatch {
    size: i64,
}

impl Default for SweepBatch {
    fn default() -> Self {
        Self { size: SWEEP_BATCH }
    }
}

impl SweepBatch {
    pub fn size(self) -> i64 {
        self.size
    }

    fn failed(&mut self) {
        self.size = (self.size / 2).max(1);
    }

    fn finished(&mut self, took: Duration, bound: Duration) {
        if took < bound / 2 {
            self.size = (self.size * 2).min(SWEEP_BATCH);
        }
    }
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Holds past their deadline ended now.
    pub expired: usize,
    /// Holds of cancelled sales ended now.
    pub cancelled_with_sale: usize,
    /// Ended holds whose units Redis got back now.
    pub returned: usize,
    /// Steps that failed (logged); what they left is owed to the next sweep.
    pub failures: usize,
}

/// What giving ended holds back to Redis did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Returned {
    pub holds: usize,
    /// Sales whose return failed (logged): their holds stay owed.
    pub failed_sales: usize,
}

/// Gives Redis the units of holds PostgreSQL has ended, sale by sale,
/// drops the shoppers' cached order pages, and records the return. A sale
/// whose return fails is logged and skipped: its holds stay owed, and the
/// other sales' returns go on.
pub async fn return_units(db: &Db, redis: &RedisStore, ended: &[EndedHold]) -> Returned {
    let mut by_sale: BTreeMap<Uuid, Vec<EndedHold>> = BTreeMap::new();
    for hold in ended {
        by_sale
            .entry(hold.flash_sale_id)
            .or_default()
            .push(hold.clone());
    }
    let mut returned = Returned::default();
    for (sale_id, holds) in by_sale {
        match return_sale_units(db, redis, sale_id, &holds).await {
            Ok(count) => returned.holds += count,
            Err(error) => {
                tracing::warn!(%error, %sale_id, holds = holds.len(), "ended holds' units not yet back in Redis; the next sweep returns them");
                returned.failed_sales += 1;
            }
        }
    }
    returned
}

async fn return_sale_units(
    db: &Db,
    redis: &RedisStore,
    sale_id: Uuid,
    holds: &[EndedHold],
) -> Result<usize, StoreError> {
    let ended_ids: Vec<Uuid> = holds.iter().map(|hold| hold.order_id).collect();
    // An offer whose hold of origin is still owed waits for it (it is
    // found owed again once that return has granted it).
    let deferred_offers = db.offers_before_their_origin(&ended_ids).await?;
    let ready: Vec<EndedHold> = holds
        .iter()
        .filter(|hold| !deferred_offers.contains(&hold.order_id))
        .cloned()
        .collect();
    let ready_ids: Vec<Uuid> = ready.iter().map(|hold| hold.order_id).collect();
    let offers = db.offers_from(&ready_ids).await?;
    let room = read_room(db, redis, sale_id).await?;
    let returned = redis.return_held(sale_id, &ready, &offers, room).await?;
    let mut buyers: Vec<Uuid> = ready.iter().map(|hold| hold.user_id).collect();
    buyers.extend(offers.iter().map(|offer| offer.user_id));
    redis.invalidate_orders_of(&buyers).await?;
    db.mark_units_returned(&ready_ids).await?;
    Ok(returned)
}

/// The room PostgreSQL has left for the sale, read after what Redis's stock
/// had grown by: another worker's return or an operator's added stock
/// landing between the two reads is counted in the room, not taken for
/// stock beyond it (`return_held.lua`).
pub async fn read_room(db: &Db, redis: &RedisStore, sale_id: Uuid) -> Result<RoomRead, StoreError> {
    let grown_before = redis.stock_grown(sale_id).await?;
    Ok(RoomRead {
        units: db.sale_room(sale_id).await?,
        grown_before,
    })
}

/// One sweep: returns what earlier ends still owe Redis, then cancels every
/// unpaid hold of a cancelled sale and expires every hold past its deadline
/// and the grace (in batches of `batch`'s size, under each product's lock)
/// and returns their units. A failing step is logged and counted; the
/// others go on (Redis down still lets PostgreSQL end holds, and their
/// returns wait).
pub async fn sweep(db: &Db, redis: &RedisStore, batch: &mut SweepBatch) -> Swept {
    let mut swept = Swept::default();
    let owed = return_owed(db, redis).await;
    swept.returned += owed.holds;
    swept.failures += owed.failed_sales;
    let products = match db.products_with_due_holds().await {
        Ok(products) => products,
        Err(error) => {
            tracing::warn!(%error, "cannot list the holds due; the next sweep retries");
            swept.failures += 1;
            return swept;
        }
    };
    for product_id in products {
        loop {
            let size = batch.size();
            let started = Instant::now();
            let ended = match db.end_due_holds(product_id, size).await {
                Ok(ended) => ended,
                Err(error) => {
                    batch.failed();
                    tracing::warn!(%error, %product_id, batch = size, next_batch = batch.size(), "holds not ended; the next sweep retries with the next batch");
                    swept.failures += 1;
                    break;
                }
            };
            batch.finished(started.elapsed(), db.timeout());
            let cancelled = ended
                .iter()
                .filter(|hold| hold.status == OrderStatus::Cancelled)
                .count();
            swept.cancelled_with_sale += cancelled;
            swept.expired += ended.len() - cancelled;
            let returned = return_units(db, redis, &ended).await;
            swept.returned += returned.holds;
            swept.failures += returned.failed_sales;
            if (ended.len() as i64) < size {
                break;
            }
        }
    }
    swept
}

/// Returns the units of holds that ended in PostgreSQL but whose return to
/// Redis did not happen (a crash, Redis down). Stops at the first failure:
/// the same holds would be found owed again.
pub async fn return_owed(db: &Db, redis: &RedisStore) -> Returned {
    let mut total = Returned::default();
    loop {
        let owed = match db.holds_owing_units(SWEEP_BATCH).await {
            Ok(owed) => owed,
            Err(error) => {
                tracing::warn!(%error, "cannot list the holds owed to Redis; the next sweep retries");
                total.failed_sales += 1;
                return total;
            }
        };
        let returned = return_units(db, redis, &owed).await;
        total.holds += returned.holds;
        total.failed_sales += returned.failed_sales;
        if returned.failed_sales > 0 || (owed.len() as i64) < SWEEP_BATCH {
            return total;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(1);

    #[test]
    fn a_failed_batch_halves_the_next_down_to_one_hold() {
        let mut batch = SweepBatch::default();
        let mut sizes = Vec::new();
        for _ in 0..11 {
            batch.failed();
            sizes.push(batch.size());
        }
        assert_eq!(sizes, [256, 128, 64, 32, 16, 8, 4, 2, 1, 1, 1]);
    }

    #[test]
    fn only_a_batch_well_within_the_bound_grows_the_next_up_to_the_most() {
        let mut batch = SweepBatch::default();
        for _ in 0..4 {
            batch.failed();
        }
        batch.finished(BOUND * 3 / 4, BOUND);
        assert_eq!(batch.size(), 32, "most of the bound: the same size again");
        batch.finished(BOUND / 3, BOUND);
        assert_eq!(batch.size(), 64);
        for _ in 0..5 {
            batch.finished(Duration::ZERO, BOUND);
        }
        assert_eq!(batch.size(), SWEEP_BATCH);
    }
}
