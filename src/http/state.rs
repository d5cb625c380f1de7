//! What every handler can reach, behind one `Arc`: axum clones the state
//! for every request and every middleware, so a clone is one count (it was
//! thirteen, a measurable share of a purchase's CPU; issue 19).

use std::{ops::Deref, sync::Arc, time::Instant};

use metrics_exporter_prometheus::PrometheusHandle;

use super::{
    rate_limit::UserRateLimiter, readiness::ReadinessCache, request_metrics::RouteMetrics,
};
use crate::{
    app::{Payments, Purchases, Sales, Stats, Waitlist},
    auth::Authenticator,
    latency::LatencyHistogram,
    live::LiveEvents,
    snapshot::SaleSnapshot,
    store::{postgres::Db, redis::RedisStore},
};

#[derive(Clone)]
pub struct AppState(Arc<AppServices>);

impl AppState {
    pub fn new(services: AppServices) -> Self {
        Self(Arc::new(services))
    }
}

impl Deref for AppState {
    type Target = AppServices;

    fn deref(&self) -> &AppServices {
        &self.0
    }
}

pub struct AppServices {
    /// The use cases handlers call (`Purchases` is shared with the server,
    /// which closes its outbox on the way out).
    pub purchases: Arc<Purchases>,
    pub sales: Arc<Sales>,
    pub stats: Arc<Stats>,
    /// Checkout holds: the payment webhook, a shopper's order and cancel.
    pub payments: Arc<Payments>,
    /// Sold-out sales' waitlists: join, place, leave.
    pub waitlist: Arc<Waitlist>,
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
    /// The per-route request metrics' handles, made once each.
    pub route_metrics: RouteMetrics,
    /// For the uptime in `/api/health`.
    pub started_at: Instant,
    /// Per-user purchase attempt limit on this node.
    pub limiter: Arc<UserRateLimiter>,
    /// Open sales as last read, for reads that must not touch a store.
    pub snapshot: Arc<SaleSnapshot>,
    /// This node's purchase answers, published for the operators' stats.
    pub purchase_latency: Arc<LatencyHistogram>,
    /// Fans sale changes and purchase outcomes out to event streams.
    pub live: Arc<LiveEvents>,
}
