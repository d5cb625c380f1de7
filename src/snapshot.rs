//! The per-node view of open sales that the hot read paths use (DESIGN.md
//! §6): under a stampede, a status read must not cost a database or Redis
//! round trip. One loop refreshes remaining stock and mirrored state from
//! Redis every ~100 ms (one pipelined round trip for all open sales),
//! another the list of open sales from PostgreSQL every second, or sooner
//! when this node changed a sale.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::RwLock;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, watch};
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
}

/// The open sales as PostgreSQL last listed them.
struct Catalog {
    sales: Vec<SaleRow>,
    current: Option<Uuid>,
}

pub struct SaleSnapshot {
    views: RwLock<Arc<Views>>,
    catalog: RwLock<Option<Arc<Catalog>>>,
    refresh_every: Duration,
    /// Older than this, the snapshot is not served (readers go to the stores).
    max_age: Duration,
    catalog_every: Duration,
    catalog_stale: Notify,
    /// Ticks after every refresh, for the live-event hub.
    refreshed: watch::Sender<()>,
}

impl SaleSnapshot {
    pub fn new(refresh_every: Duration) -> Self {
        Self {
            views: RwLock::default(),
            catalog: RwLock::default(),
            refresh_every,
            max_age: (refresh_every * 20).max(Duration::from_secs(1)),
            catalog_every: Duration::from_secs(1),
            catalog_stale: Notify::new(),
            refreshed: watch::Sender::new(()),
        }
    }

    /// Marked changed after every refresh of the views.
    pub fn refreshes(&self) -> watch::Receiver<()> {
        self.refreshed.subscribe()
    }

    /// The views as last refreshed, however old (writers only swap the
    /// `Arc`, so a reader never sees half a refresh).
    fn latest(&self) -> Arc<Views> {
        self.views.read().clone()
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

    /// `read` of the given open sale, without copying it (the purchase
    /// path asks this per accepted attempt), if the snapshot is fresh and
    /// has it.
    pub fn read<R>(&self, sale_id: Uuid, read: impl FnOnce(&SaleView) -> R) -> Option<R> {
        self.fresh()?.sales.get(&sale_id).map(read)
    }

    /// `read` of the given open sale as last seen, fresh or not: for what
    /// never changes once a sale exists (its price, currency and hold).
    pub fn read_last_seen<R>(&self, sale_id: Uuid, read: impl FnOnce(&SaleView) -> R) -> Option<R> {
        self.latest().sales.get(&sale_id).map(read)
    }

    /// Loads the open sales and their live state once (a node about to
    /// serve, so its first requests find them).
    pub async fn load(&self, db: &Db, redis: &RedisStore) -> Result<(), StoreError> {
        self.reload_catalog(db).await?;
        self.refresh_live(redis).await
    }

    /// The current sale's id, if the snapshot is fresh and there is one.
    pub fn current_sale_id(&self) -> Option<Uuid> {
        self.fresh()?.current
    }

    /// Ids of the open sales last seen (fresh or not).
    pub fn open_sale_ids(&self) -> Vec<Uuid> {
        self.latest().sales.keys().copied().collect()
    }

    /// Asks for the sale list to be reloaded at once (this node created or
    /// changed a sale).
    pub fn catalog_changed(&self) {
        self.catalog_stale.notify_one();
    }

    /// Reads the live state of the catalog's sales from Redis (one
    /// pipelined round trip) and publishes the new views.
    async fn refresh_live(&self, redis: &RedisStore) -> Result<(), StoreError> {
        let catalog = self.catalog.read().clone();
        let Some(catalog) = catalog else {
            return Ok(());
        };
        let ids: Vec<Uuid> = catalog.sales.iter().map(|sale| sale.id).collect();
        let live = redis.live_states(&ids).await?;
        let sales = catalog
            .sales
            .iter()
            .zip(live)
            .map(|(sale, live)| {
                (
                    sale.id,
                    SaleView {
                        sale: sale.clone(),
                        remaining: live.remaining,
                        mirrored_state: live.state,
                    },
                )
            })
            .collect();
        let next = Views {
            sales,
            current: catalog.current,
            refreshed_at: Some(Instant::now()),
        };
        *self.views.write() = Arc::new(next);
        self.refreshed.send_replace(());
        Ok(())
    }

    async fn reload_catalog(&self, db: &Db) -> Result<(), StoreError> {
        let (sales, current) = tokio::try_join!(db.sales_to_arm(), db.current_sale())?;
        *self.catalog.write() = Some(Arc::new(Catalog {
            sales,
            current: current.map(|sale| sale.id),
        }));
        Ok(())
    }

    /// Refreshes until `shutdown`, in two loops so that neither store
    /// holds up the other: the catalog from PostgreSQL every second (at
    /// once when this node changed a sale), live state from Redis every
    /// tick. A PostgreSQL outage leaves the last catalog in place and the
    /// stock still fresh, so sale status and purchases keep answering from
    /// Redis. Failures are logged and retried; readers stop trusting the
    /// snapshot once it is too old.
    pub async fn run(self: Arc<Self>, db: Db, redis: RedisStore, shutdown: CancellationToken) {
        let catalog = async {
            let mut ticker = tokio::time::interval(self.catalog_every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                    () = self.catalog_stale.notified() => {}
                }
                match self.reload_catalog(&db).await {
                    // Publish a changed catalog without waiting for the next tick.
                    Ok(()) => {
                        if let Err(error) = self.refresh_live(&redis).await {
                            tracing::debug!(%error, "sale snapshot refresh failed");
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%error, "sale catalog not reloaded; keeping the last one");
                    }
                }
            }
        };
        let live = async {
            let mut ticker = tokio::time::interval(self.refresh_every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                if let Err(error) = self.refresh_live(&redis).await {
                    tracing::debug!(%error, "sale snapshot refresh failed");
                }
            }
        };
        tokio::join!(catalog, live);
    }
}
