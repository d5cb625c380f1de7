//! Sales as operators steer them and shoppers find them: create, change
//! (an action or added stock), read; the current sale and its live view.
//! Every change commits in PostgreSQL, then arms Redis, then tells this
//! node's snapshot (DESIGN.md §5).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::AppError;
use crate::{
    domain::{DomainError, OpeningRules, SaleAction, may_buy},
    snapshot::{SaleSnapshot, SaleView},
    store::{
        arming::{self, SingleFlight},
        postgres::{AdminAct, Db, NewSale, SaleRow},
        redis::RedisStore,
    },
};

/// A sale after a read or a change, with what Redis holds of it.
#[derive(Debug, Clone)]
pub struct SaleReport {
    pub sale: SaleRow,
    /// Units left to reserve; `None` when Redis does not hold the sale.
    pub remaining: Option<i64>,
    /// Whether Redis holds the sale's current state; when false, the next
    /// readiness probe (or a retry of the change) arms it.
    pub armed: bool,
}

/// Where one shopper stands in a sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Units the shopper holds (pending and confirmed).
    pub units_held: i64,
    /// Whether one more unit would be reserved now ([`may_buy`]).
    pub may_buy: bool,
}

/// A change an operator makes to a sale.
#[derive(Debug, Clone, Copy)]
pub enum SaleChange {
    Action(SaleAction),
    AddStock(i64),
}

#[derive(Clone)]
pub struct Sales {
    pub(super) db: Db,
    pub(super) redis: RedisStore,
    pub(super) snapshot: Arc<SaleSnapshot>,
    /// One arming per sale at a time on this node.
    arming: SingleFlight,
    /// The shortest checkout hold this node creates a sale with
    /// (`FLASHSALE_HOLD_MIN_SECS`).
    hold_min_secs: i32,
}

impl Sales {
    pub fn new(db: Db, redis: RedisStore, snapshot: Arc<SaleSnapshot>, hold_min_secs: i32) -> Self {
        Self {
            db,
            redis,
            snapshot,
            arming: SingleFlight::default(),
            hold_min_secs,
        }
    }

    /// Creates a sale and arms it; a sale saved but not armed is reported
    /// so (`armed: false`), and readiness arms it later.
    pub async fn create(&self, new: &NewSale, act: &AdminAct) -> Result<SaleReport, AppError> {
        let rules = OpeningRules {
            now: Utc::now(),
            hold_min_secs: self.hold_min_secs,
        };
        // The store logs the change (or that it was a keyed retry).
        let sale = self.db.create_sale(new, rules, act).await?;
        Ok(self.armed_after_change(sale).await)
    }

    pub async fn change(
        &self,
        id: Uuid,
        change: SaleChange,
        act: &AdminAct,
    ) -> Result<SaleReport, AppError> {
        let now = Utc::now();
        match change {
            SaleChange::AddStock(units) => {
                let sale = self.db.add_sale_stock(id, units, now, act).await?;
                Ok(self.armed_after_change(sale).await)
            }
            SaleChange::Action(action) => {
                let sale = self.db.apply_sale_action(id, action, now, act).await?;
                // A pause or cancel that Redis did not hear would keep
                // selling: the operator must see the failure and retry (the
                // action is idempotent).
                let armed = arming::arm_sale(&self.db, &self.redis, &sale).await?;
                self.snapshot.catalog_changed();
                Ok(SaleReport {
                    sale,
                    remaining: Some(armed.remaining),
                    armed: true,
                })
            }
        }
    }

    pub async fn read(&self, id: Uuid) -> Result<SaleReport, AppError> {
        let sale = self
            .db
            .find_sale(id)
            .await?
            .ok_or(DomainError::SaleNotFound(id))?;
        let remaining = self.redis.remaining(id).await?;
        Ok(SaleReport {
            sale,
            remaining,
            armed: remaining.is_some(),
        })
    }

    /// The sale a request names, or the current one: from the snapshot when
    /// it knows, else from PostgreSQL.
    pub async fn id_or_current(&self, sale_id: Option<Uuid>) -> Result<Uuid, AppError> {
        if let Some(id) = sale_id.or_else(|| self.snapshot.current_sale_id()) {
            return Ok(id);
        }
        let current = self.db.current_sale().await?;
        Ok(current.ok_or(DomainError::NoCurrentSale)?.id)
    }

    /// The given (or current) sale: from the node's snapshot of open sales
    /// when it is fresh; sales it does not hold (ended, or new on another
    /// node) from the stores.
    pub async fn view(&self, sale_id: Option<Uuid>) -> Result<SaleView, AppError> {
        if let Some(view) = self.snapshot.lookup(sale_id) {
            return Ok(view);
        }
        let sale = match sale_id {
            Some(id) => self
                .db
                .find_sale(id)
                .await?
                .ok_or(DomainError::SaleNotFound(id))?,
            None => self
                .db
                .current_sale()
                .await?
                .ok_or(DomainError::NoCurrentSale)?,
        };
        let live = self.redis.live_states(&[sale.id]).await?;
        let live = live.first().copied().unwrap_or_default();
        Ok(SaleView {
            sale,
            remaining: live.remaining,
            mirrored_state: live.state,
        })
    }

    /// What the shopper holds in the sale and whether they may buy now.
    pub async fn standing(
        &self,
        view: &SaleView,
        shopper: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Standing, AppError> {
        let units_held = self.redis.units_held(view.sale.id, shopper).await?;
        let limit = i64::from(view.sale.per_user_limit);
        Ok(Standing {
            units_held,
            may_buy: may_buy(view.state(now), view.remaining, units_held, limit),
        })
    }

    /// Redis does not know the sale: unknown, over, or Redis lost its data.
    /// Arms it from PostgreSQL if it is open, once per node however many
    /// purchases missed it together.
    pub async fn arm_if_open(&self, sale_id: Uuid) -> Result<(), AppError> {
        self.arming
            .arm_if_missing(&self.db, &self.redis, sale_id, || async {
                let sale = self
                    .db
                    .find_sale(sale_id)
                    .await?
                    .ok_or(DomainError::SaleNotFound(sale_id))?;
                let state = sale.effective_state(Utc::now());
                if state.is_terminal() {
                    return Err(AppError::from(DomainError::SaleNotActive { state }));
                }
                Ok(sale)
            })
            .await
    }

    /// Arms every open sale Redis lacks, off the caller's path (readiness).
    pub fn arm_missing_in_background(&self) {
        self.arming.sweep_in_background(&self.db, &self.redis);
    }

    /// After a change committed in PostgreSQL: arm, or report it not
    /// armed. The snapshot reloads after arming, so it never shows a new
    /// sale without its stock.
    async fn armed_after_change(&self, sale: SaleRow) -> SaleReport {
        let report = match arming::arm_sale(&self.db, &self.redis, &sale).await {
            Ok(armed) => SaleReport {
                sale,
                remaining: Some(armed.remaining),
                armed: true,
            },
            Err(error) => {
                tracing::warn!(sale_id = %sale.id, %error, "sale saved but not armed; readiness will retry");
                SaleReport {
                    sale,
                    remaining: None,
                    armed: false,
                }
            }
        };
        self.snapshot.catalog_changed();
        report
    }
}
