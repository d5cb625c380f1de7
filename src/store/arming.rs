//! Arming: building a sale's Redis state from PostgreSQL (DESIGN.md §7).
//! Runs when a sale is created or changed, when a node starts, on every
//! readiness probe and on every reconciler tick, so a Redis that lost its
//! data is rebuilt before it can sell anything it should not.

use super::{
    StoreError,
    postgres::{Db, SaleRow},
    redis::{Armed, RedisStore, SaleMirror},
};

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
            price: sale.sale_price,
            version: sale.version,
            buyers: None,
        }
    }
}

/// Mirrors one sale into Redis. When its stock counter is missing (first
/// arming, or Redis lost its data), the buyers PostgreSQL knows go along so
/// the rebuild restores per-user limits as well as stock.
pub async fn arm_sale(db: &Db, redis: &RedisStore, sale: &SaleRow) -> Result<Armed, StoreError> {
    let mut mirror = SaleMirror::from(sale);
    if redis.remaining(sale.id).await?.is_none() {
        mirror.buyers = Some(if sale.confirmed_quantity > 0 {
            db.sale_buyer_units(sale.id).await?
        } else {
            Vec::new()
        });
    }
    redis.arm(&mirror).await
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
