//! What every handler can reach. Cheap to clone: pools and keys are shared.

use std::{sync::Arc, time::Instant};

use metrics_exporter_prometheus::PrometheusHandle;

use uuid::Uuid;

use super::{
    ApiError, rate_limit::UserRateLimiter, readiness::ReadinessCache, routes::stats::StatsCache,
};
use crate::{
    auth::Authenticator,
    config::PurchaseSettings,
    domain::DomainError,
    jobs::PurchaseQueue,
    live::LiveEvents,
    snapshot::{SaleSnapshot, SaleView},
    store::{arming::SingleFlight, postgres::Db, redis::RedisStore},
};

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub redis: RedisStore,
    /// Verifies every bearer token (and signs development logins).
    pub auth: Arc<Authenticator>,
    /// The last readiness verdict, reused for a short while.
    pub readiness: Arc<ReadinessCache>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// For the uptime in `/api/health`.
    pub started_at: Instant,
    /// Where accepted reservations go to become orders.
    pub queue: PurchaseQueue,
    /// Per-user purchase attempt limit on this node.
    pub limiter: Arc<UserRateLimiter>,
    /// Open sales as last read, for reads that must not touch a store.
    pub snapshot: Arc<SaleSnapshot>,
    /// Recently computed sale stats.
    pub stats: Arc<StatsCache>,
    pub purchase: Arc<PurchaseSettings>,
    /// Fans sale changes and purchase outcomes out to event streams.
    pub live: Arc<LiveEvents>,
    /// One arming per sale at a time on this node.
    pub arming: SingleFlight,
}

impl AppState {
    /// The sale a request names, or the current one: from the snapshot when
    /// it knows, else from PostgreSQL.
    pub async fn sale_id_or_current(&self, sale_id: Option<Uuid>) -> Result<Uuid, ApiError> {
        if let Some(id) = sale_id.or_else(|| self.snapshot.current_sale_id()) {
            return Ok(id);
        }
        let current = self.db.current_sale().await?;
        Ok(current.ok_or(DomainError::NoCurrentSale)?.id)
    }

    /// The given (or current) sale: from the node's snapshot of open sales
    /// when it is fresh; sales it does not hold (ended, or new on another
    /// node) from the stores.
    pub async fn sale_view(&self, sale_id: Option<Uuid>) -> Result<SaleView, ApiError> {
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
}
