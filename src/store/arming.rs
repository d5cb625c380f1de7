//! Arming: building a sale's Redis state from PostgreSQL (DESIGN.md §7).
//! Runs when a sale is created or changed, when a node starts, when a
//! purchase finds its sale missing, in the background after a readiness
//! probe, and on every reconciler tick, so a Redis that lost its data is
//! rebuilt before it can sell anything it should not.
//!
//! A rebuild restores what PostgreSQL knows in chunks before the sale can
//! sell again: the replay records of committed orders (a retried key gets
//! its original reservation back) and each buyer's units, staged in a hash
//! that the arming script swaps in at once (per-user limits hold). No call
//! carries more than one chunk, whatever the number of buyers.

use std::{
    collections::HashMap,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, Ordering},
    },
};

use parking_lot::Mutex;

use uuid::Uuid;

use super::{
    StoreError,
    postgres::{Db, SaleRow},
    redis::{Armed, RedisStore, SaleMirror},
};

/// Rows read from PostgreSQL and sent to Redis per call while restoring.
pub const RESTORE_CHUNK: usize = 1_000;

impl From<&SaleRow> for SaleMirror {
    fn from(sale: &SaleRow) -> Self {
        SaleMirror {
            sale_id: sale.id,
            allotted: sale.allotted_quantity,
            confirmed: sale.confirmed_quantity,
            state: sale.state.as_str(),
            starts_at_ms: sale.starts_at.timestamp_millis(),
            ends_at_ms: sale.ends_at.timestamp_millis(),
            per_user_limit: sale.per_user_limit,
            price: sale.sale_price.minor(),
            version: sale.version,
            staged_buyers: None,
        }
    }
}

/// Mirrors one sale into Redis. When its stock counter is missing (first
/// arming, or Redis lost its data), what PostgreSQL holds of its buyers
/// and orders is restored first.
///
/// An archived sale is never armed again (its keys left Redis for good).
pub async fn arm_sale(db: &Db, redis: &RedisStore, sale: &SaleRow) -> Result<Armed, StoreError> {
    if sale.archived_counters.is_some() {
        return Ok(Armed {
            remaining: 0,
            rebuilt: false,
            superseded: true,
            needs_restore: false,
        });
    }
    if redis.remaining(sale.id).await?.is_some() {
        let armed = redis.arm(&SaleMirror::from(sale)).await?;
        if !armed.needs_restore {
            return Ok(armed);
        }
        // The counter went missing between the look and the script (Redis
        // lost its data just then): the script wrote nothing.
    }
    rebuild(db, redis, sale).await
}

/// Restores what PostgreSQL holds, then arms from the sale as read after
/// the restore: orders committed while it ran count as confirmed (a
/// counter built from the earlier read would count their units twice).
async fn rebuild(db: &Db, redis: &RedisStore, sale: &SaleRow) -> Result<Armed, StoreError> {
    let staged = restore_from_postgres(db, redis, sale.id).await?;
    let fresh = db.find_sale(sale.id).await?.unwrap_or_else(|| sale.clone());
    let mut mirror = SaleMirror::from(&fresh);
    mirror.staged_buyers = Some(staged);
    redis.arm(&mirror).await
}

/// Writes the committed orders' replay records, and stages each buyer's
/// units for the arming script; returns the staging hash.
async fn restore_from_postgres(
    db: &Db,
    redis: &RedisStore,
    sale_id: Uuid,
) -> Result<String, StoreError> {
    let mut after = None;
    loop {
        let orders = db
            .committed_orders_page(sale_id, after.as_ref(), RESTORE_CHUNK)
            .await?;
        redis.restore_orders(sale_id, &orders).await?;
        match orders.last() {
            Some(last) if orders.len() == RESTORE_CHUNK => after = Some(last.clone()),
            _ => break,
        }
    }
    let staging = redis.sale_keys(sale_id).staging(Uuid::now_v7());
    let mut after = None;
    loop {
        let buyers = db.buyer_units_page(sale_id, after, RESTORE_CHUNK).await?;
        redis.stage_buyers(&staging, &buyers).await?;
        match buyers.last() {
            Some((last, _)) if buyers.len() == RESTORE_CHUNK => after = Some(*last),
            _ => break,
        }
    }
    Ok(staging)
}

/// Mirrors every sale Redis must hold; returns how many counters had to be
/// rebuilt from PostgreSQL.
pub async fn arm_open_sales(db: &Db, redis: &RedisStore) -> Result<usize, StoreError> {
    let mut rebuilt = 0;
    for sale in db.sales_to_arm().await? {
        let armed = arm_sale(db, redis, &sale).await?;
        if armed.rebuilt {
            tracing::info!(sale_id = %sale.id, remaining = armed.remaining, "sale armed in Redis");
            rebuilt += 1;
        }
    }
    Ok(rebuilt)
}

/// One arming per sale at a time on this node. After Redis lost its data,
/// every purchase of a sale finds it missing at once; they wait for the one
/// arming in flight instead of each reading PostgreSQL and restoring the
/// buyers again. Cheap to clone.
#[derive(Clone, Default)]
pub struct SingleFlight {
    turns: Arc<Mutex<HashMap<Uuid, Weak<tokio::sync::Mutex<()>>>>>,
    sweeping: Arc<AtomicBool>,
}

impl SingleFlight {
    /// Arms every open sale in a background task, unless such a sweep is
    /// already running on this node. (Readiness asks for this: a probe
    /// never waits for arming, and a flood of probes starts one sweep at a
    /// time.)
    pub fn sweep_in_background(&self, db: &Db, redis: &RedisStore) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let (flight, db, redis) = (self.clone(), db.clone(), redis.clone());
        tokio::spawn(async move {
            if let Err(error) = flight.sweep(&db, &redis).await {
                tracing::warn!(%error, "arming open sales failed; the next probe or purchase retries");
            }
            flight.sweeping.store(false, Ordering::Release);
        });
    }

    /// Mirrors every open sale (missing ones rebuilt, changes Redis missed
    /// applied), each in its sale's turn.
    async fn sweep(&self, db: &Db, redis: &RedisStore) -> Result<(), StoreError> {
        for sale in db.sales_to_arm().await? {
            let turn = self.turn(sale.id);
            let _mine = turn.lock().await;
            arm_sale(db, redis, &sale).await?;
        }
        Ok(())
    }

    /// Arms the sale unless its counter is there (possibly armed by the
    /// call this one waited for). `load` reads the sale from PostgreSQL;
    /// it runs only when arming is needed.
    pub async fn arm_if_missing<F, Fut, E>(
        &self,
        db: &Db,
        redis: &RedisStore,
        sale_id: Uuid,
        load: F,
    ) -> Result<(), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<SaleRow, E>>,
        E: From<StoreError>,
    {
        let turn = self.turn(sale_id);
        let _mine = turn.lock().await;
        if redis.remaining(sale_id).await?.is_some() {
            return Ok(());
        }
        let sale = load().await?;
        arm_sale(db, redis, &sale).await?;
        Ok(())
    }

    fn turn(&self, sale_id: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock();
        if let Some(turn) = turns.get(&sale_id).and_then(Weak::upgrade) {
            return turn;
        }
        // Forget sales nobody waits on (misses for unknown sale ids must
        // not grow the map).
        turns.retain(|_, turn| turn.strong_count() > 0);
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        turns.insert(sale_id, Arc::downgrade(&turn));
        turn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_turn_per_sale_while_someone_holds_it_and_none_kept_after() {
        let flight = SingleFlight::default();
        let sale = Uuid::now_v7();
        let first = flight.turn(sale);
        let second = flight.turn(sale);
        assert!(Arc::ptr_eq(&first, &second));
        assert!(!Arc::ptr_eq(&first, &flight.turn(Uuid::now_v7())));
        drop((first, second));
        flight.turn(Uuid::now_v7());
        assert_eq!(flight.turns.lock().len(), 1);
    }
}
