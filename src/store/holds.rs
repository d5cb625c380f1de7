//! Ending checkout holds across both stores: PostgreSQL ends the hold and
//! counts its units back first (`postgres::holds`), then Redis gives the
//! shopper their allowance and the stock back (`return_held.lua`), then
//! PostgreSQL records that Redis has them. A crash or a Redis failure in
//! between leaves the hold owed, and the worker's sweep returns it later
//! ([`return_owed`]); every step is idempotent.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{
    StoreError,
    postgres::{Db, EndedHold},
    redis::RedisStore,
};

/// Holds expired or owed per sweep step at most.
pub const SWEEP_BATCH: i64 = 512;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Holds past their deadline ended now.
    pub expired: usize,
    /// Ended holds whose units Redis got back now.
    pub returned: usize,
}

/// Gives Redis the units of holds PostgreSQL has ended, sale by sale,
/// drops the shoppers' cached order pages, and records the return.
pub async fn return_units(
    db: &Db,
    redis: &RedisStore,
    ended: &[EndedHold],
) -> Result<usize, StoreError> {
    let mut by_sale: BTreeMap<Uuid, Vec<EndedHold>> = BTreeMap::new();
    for hold in ended {
        by_sale
            .entry(hold.flash_sale_id)
            .or_default()
            .push(hold.clone());
    }
    let mut returned = 0;
    for (sale_id, holds) in by_sale {
        let room = db.sale_room(sale_id).await?;
        returned += redis.return_held(sale_id, &holds, room).await?;
        let buyers: Vec<Uuid> = holds.iter().map(|hold| hold.user_id).collect();
        redis.invalidate_orders_of(&buyers).await?;
        let orders: Vec<Uuid> = holds.iter().map(|hold| hold.order_id).collect();
        db.mark_units_returned(&orders).await?;
    }
    Ok(returned)
}

/// One sweep: returns what earlier ends still owe Redis, then expires every
/// hold past its deadline (in batches, under each product's lock) and
/// returns their units.
pub async fn sweep(db: &Db, redis: &RedisStore) -> Result<Swept, StoreError> {
    let mut swept = Swept {
        returned: return_owed(db, redis).await?,
        ..Swept::default()
    };
    for product_id in db.products_with_due_holds().await? {
        loop {
            let ended = db.expire_due_holds(product_id, SWEEP_BATCH).await?;
            swept.expired += ended.len();
            swept.returned += return_units(db, redis, &ended).await?;
            if (ended.len() as i64) < SWEEP_BATCH {
                break;
            }
        }
    }
    Ok(swept)
}

/// Returns the units of holds that ended in PostgreSQL but whose return to
/// Redis did not happen (a crash, Redis down).
pub async fn return_owed(db: &Db, redis: &RedisStore) -> Result<usize, StoreError> {
    let mut returned = 0;
    loop {
        let owed = db.holds_owing_units(SWEEP_BATCH).await?;
        returned += return_units(db, redis, &owed).await?;
        if (owed.len() as i64) < SWEEP_BATCH {
            return Ok(returned);
        }
    }
}
