//! The per-node view of open sales that the hot read paths use (DESIGN.md
//! §6): under a stampede, a status read must not cost a database or Redis
//! round trip. A loop refreshes remaining stock and mirrored state from
//! Redis every ~100 ms (one pipelined round trip for all open sales) and
//! the list of open sales from PostgreSQL every second, or sooner when this
//! node changed a sale.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    domain::SaleState,
    store::{
        StoreError,
        postgres::{Db, SaleRow},
        redis::RedisStore,
    },
};

/// A sale as last seen: the PostgreSQL row plus what Redis says now.
#[derive(Debug, Clone)]
pub struct SaleView {
    pub sale: SaleRow,
    /// Units left to reserve; `None` while the sale is not armed.
    pub remaining: Option<i64>,
    /// The state Redis enforces (an admin change reaches it first).
    pub mirrored_state: Option<SaleState>,
}

impl SaleView {
    pub fn state(&self, now: DateTime<Utc>) -> SaleState {
        let stored = self.mirrored_state.unwrap_or(self.sale.state);
        self.sale.window().effective_state(stored, now)
    }
}

#[derive(Default)]
struct Views {
    sales: HashMap<Uuid, SaleView>,
    current: Option<Uuid>,
    refreshed_at: Option<Instant>,
    catalog_at: Option<Instant>,
}

pub struct SaleSnapshot {
    views: RwLock<Arc<Views>>,
    refresh_every: Duration,
    /// Older than this, the snapshot is not served (readers go to the stores).
    max_age: Duration,
    catalog_every: Duration,
    catalog_stale: Notify,
}

impl SaleSnapshot {
    pub fn new(refresh_every: Duration) -> Self {
        Self {
            views: RwLock::default(),
            refresh_every,
            max_age: (refresh_every * 20).max(Duration::from_secs(1)),
            catalog_every: Duration::from_secs(1),
            catalog_stale: Notify::new(),
        }
    }

    /// The views as last refreshed, however old. A poisoned lock still
    /// holds a whole `Arc` (writers only swap it), so it is safe to read.
    fn latest(&self) -> Arc<Views> {
        self.views
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn fresh(&self) -> Option<Arc<Views>> {
        let views = self.latest();
        views
            .refreshed_at
            .is_some_and(|at| at.elapsed() <= self.max_age)
            .then_some(views)
    }

    /// The given (or current) open sale, if the snapshot is fresh and has it.
    pub fn lookup(&self, sale_id: Option<Uuid>) -> Option<SaleView> {
        let views = self.fresh()?;
        let id = sale_id.or(views.current)?;
        views.sales.get(&id).cloned()
    }

    /// The current sale's id, if the snapshot is fresh and there is one.
    pub fn current_sale_id(&self) -> Option<Uuid> {
        self.fresh()?.current
    }

    /// Ids of the open sales last seen (fresh or not).
    pub fn open_sale_ids(&self) -> Vec<Uuid> {
        self.latest().sales.keys().copied().collect()
    }

    /// Asks for the sale list to be reloaded at the next tick (this node
    /// created or changed a sale).
    pub fn catalog_changed(&self) {
        self.catalog_stale.notify_one();
    }

    /// One refresh: the catalog from PostgreSQL when due, live state from
    /// Redis. When PostgreSQL cannot give the catalog, the last one is kept
    /// and its live state still refreshed, so a PostgreSQL outage does not
    /// take the sale status (or the purchases that read it) down with it.
    /// Returns whether the catalog was reloaded.
    pub async fn refresh(
        &self,
        db: &Db,
        redis: &RedisStore,
        reload_catalog: bool,
    ) -> Result<bool, StoreError> {
        let previous = self.latest();
        let catalog_due = reload_catalog
            || previous
                .catalog_at
                .is_none_or(|at| at.elapsed() >= self.catalog_every);
        let reloaded = if catalog_due {
            match tokio::try_join!(db.sales_to_arm(), db.current_sale()) {
                Ok(catalog) => Some(catalog),
                Err(error) if previous.catalog_at.is_some() => {
                    tracing::debug!(%error, "sale catalog not reloaded; keeping the last one");
                    None
                }
                Err(error) => return Err(error),
            }
        } else {
            None
        };
        let catalog_reloaded = reloaded.is_some();
        let (rows, current, catalog_at): (Vec<SaleRow>, Option<Uuid>, Option<Instant>) =
            match reloaded {
                Some((rows, current)) => (rows, current.map(|sale| sale.id), Some(Instant::now())),
                None => {
                    let rows = previous
                        .sales
                        .values()
                        .map(|view| view.sale.clone())
                        .collect();
                    (rows, previous.current, previous.catalog_at)
                }
            };
        let ids: Vec<Uuid> = rows.iter().map(|sale| sale.id).collect();
        let live = redis.live_states(&ids).await?;
        let sales = rows
            .into_iter()
            .zip(live)
            .map(|(sale, live)| {
                (
                    sale.id,
                    SaleView {
                        sale,
                        remaining: live.remaining,
                        mirrored_state: live.state,
                    },
                )
            })
            .collect();
        let next = Views {
            sales,
            current,
            refreshed_at: Some(Instant::now()),
            catalog_at,
        };
        *self
            .views
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(next);
        Ok(catalog_reloaded)
    }

    /// Refreshes until `shutdown`. Failures are logged and retried at the
    /// next tick; readers stop trusting the snapshot once it is too old.
    pub async fn run(self: Arc<Self>, db: Db, redis: RedisStore, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.refresh_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reload_catalog = true;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
                () = self.catalog_stale.notified() => reload_catalog = true,
            }
            match self.refresh(&db, &redis, reload_catalog).await {
                Ok(catalog_reloaded) => reload_catalog &= !catalog_reloaded,
                Err(error) => tracing::debug!(%error, "sale snapshot refresh failed"),
            }
        }
    }
}
