//! What every handler can reach. Cheap to clone: pools and keys are shared.

use std::{sync::Arc, time::Instant};

use metrics_exporter_prometheus::PrometheusHandle;

use crate::{
    auth::TokenService,
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
}
