//! What every handler can reach. Cheap to clone: pools and keys are shared.

use std::{sync::Arc, time::Instant};

use metrics_exporter_prometheus::PrometheusHandle;

use super::{rate_limit::UserRateLimiter, routes::stats::StatsCache};
use crate::{
    auth::TokenService,
    config::PurchaseSettings,
    jobs::PurchaseQueue,
    snapshot::SaleSnapshot,
    store::{postgres::Db, redis::RedisStore},
};

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub redis: RedisStore,
    /// Verifies every bearer token; issues tokens at login.
    pub tokens: Arc<TokenService>,
    /// Emails (normalised) that log in as admins.
    pub admin_emails: Arc<[String]>,
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
}
