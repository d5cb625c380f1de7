//! Closing a sale for good. `end` stops new reservations at once (as
//! `cancel` does, which also fails every pending reservation and so frees
//! the units at once), but an ended sale's pending reservations still
//! commit against the
//! product's shared stock, so its unsold allotment stays promised (not free
//! for a new sale) until none of them can: the sale's closed state is in
//! Redis at its current version (no reservation can be accepted after it)
//! and nothing of the sale is pending there. Then the units go back to the
//! product, under the settlement lock.
//!
//! Retention: once a closed sale has been settled for the retention period,
//! its Redis counters are kept in PostgreSQL and its keys removed, so Redis
//! does not grow with every sale ever sold. Stats, orders and purchase
//! statuses of an archived sale answer from PostgreSQL. The reconciler runs
//! both every tick.

use std::time::Duration;

use super::{StoreError, arming, postgres::Db, redis::RedisStore};

/// Ends the sales whose window has passed and mirrors closed sales Redis
/// holds an older version of (an arm after the close that failed, or a
/// Redis that came back without its last writes would keep selling them);
/// returns how many sales were armed.
pub async fn close_in_redis(db: &Db, redis: &RedisStore) -> Result<usize, StoreError> {
    let mut armed = 0;
    for sale in db.end_expired_sales().await? {
        tracing::info!(sale_id = %sale.id, "sale window passed; ended");
        arming::arm_sale(db, redis, &sale).await?;
        armed += 1;
    }
    for sale in db.closed_sales().await? {
        if redis
            .armed_version(sale.id)
            .await?
            .is_some_and(|version| version < sale.version)
        {
            tracing::warn!(sale_id = %sale.id, "Redis mirrored an older state of a closed sale; armed again");
            arming::arm_sale(db, redis, &sale).await?;
            armed += 1;
        }
    }
    Ok(armed)
}

/// Releases the allotment of every closed sale that has drained; returns
/// how many were released by this call.
pub async fn release_drained_allotments(db: &Db, redis: &RedisStore) -> Result<usize, StoreError> {
    let mut released = 0;
    for sale in db.closed_sales_holding_allotment().await? {
        // Arming the closed state first makes "nothing pending" final: a
        // reservation accepted before this arm is in the pending set now,
        // and none can be accepted after it (a stale arm of an older
        // version changes nothing).
        arming::arm_sale(db, redis, &sale).await?;
        if redis.sale_counters(sale.id).await?.pending > 0 {
            continue;
        }
        if db.release_allotment(sale.id).await? {
            tracing::info!(sale_id = %sale.id, state = sale.state.as_str(), "closed sale drained; its unsold units are free again");
            released += 1;
        }
    }
    Ok(released)
}

/// Archives every closed sale settled for longer than `retention`; returns
/// how many left Redis in this call.
pub async fn archive_settled_sales(
    db: &Db,
    redis: &RedisStore,
    retention: Duration,
) -> Result<usize, StoreError> {
    let mut archived = 0;
    for sale in db.sales_to_archive(retention).await? {
        let counters = redis.sale_counters(sale.id).await?;
        if counters.pending > 0 {
            continue; // a cancelled sale's reservations still being failed
        }
        db.keep_archived_counters(sale.id, &counters.counters)
            .await?;
        redis.purge_sale(sale.id).await?;
        db.mark_archived(sale.id).await?;
        tracing::info!(sale_id = %sale.id, "closed sale archived; its keys left Redis");
        archived += 1;
    }
    Ok(archived)
}
