//! What every handler can reach. Cheap to clone: pools and keys are shared.

use std::{sync::Arc, time::Instant};

use metrics_exporter_prometheus::PrometheusHandle;

use super::{rate_limit::UserRateLimiter, readiness::ReadinessCache};
use crate::{
    app::{Purchases, Sales, Stats},
    auth::Authenticator,
    live::LiveEvents,
    snapshot::SaleSnapshot,
    store::{postgres::Db, redis::RedisStore},
};

#[derive(Clone)]
pub struct AppState {
    /// The use cases handlers call (behind `Arc`s: the state is cloned for
    /// every request).
    pub purchases: Arc<Purchases>,
    pub sales: Arc<Sales>,
    pub stats: Arc<Stats>,
    /// The stores, for the resources without a use case of their own
    /// (products, users, audit, identity, probes).
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
    /// Per-user purchase attempt limit on this node.
    pub limiter: Arc<UserRateLimiter>,
    /// Open sales as last read, for reads that must not touch a store.
    pub snapshot: Arc<SaleSnapshot>,
    /// Fans sale changes and purchase outcomes out to event streams.
    pub live: Arc<LiveEvents>,
}
