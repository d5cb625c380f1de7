//! Purchase jobs: the payload the API pushes after a reservation and the
//! worker consumes, and the queue both sides open the same way.

use std::time::Duration;

use apalis_core::{backend::TaskSink, task::builder::TaskBuilder};
use apalis_redis::{Config, RedisStorage};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::{Dependency, StoreError, bounded};

/// Turn one accepted reservation into an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseJob {
    pub reservation_id: Uuid,
    pub sale_id: Uuid,
    pub user_id: Uuid,
    pub quantity: u32,
    pub idempotency_key: String,
    /// Redis server time of the reservation, Unix milliseconds.
    pub reserved_at_ms: i64,
}

/// The purchase queue (apalis on Redis).
#[derive(Clone)]
pub struct PurchaseQueue {
    storage: RedisStorage<PurchaseJob>,
    timeout: Duration,
}

/// Queue name for a deployment prefix. The braces are a Redis Cluster hash
/// tag: every key apalis derives from the name lands in one slot.
pub fn queue_name(prefix: &str) -> String {
    format!("{prefix}:{{purchases}}")
}

impl PurchaseQueue {
    /// Opens the queue on a `ConnectionManager` (apalis needs a cloneable,
    /// reconnecting connection; deadpool's pooled ones are neither).
    /// `idempotency_ttl` makes a second push of the same reservation within
    /// that time a no-op; without a TTL apalis would ignore the key.
    pub fn new(
        connection: ConnectionManager,
        prefix: &str,
        idempotency_ttl: Duration,
        timeout: Duration,
    ) -> Self {
        let config = Config::default()
            .queue(queue_name(prefix))
            .idempotency_ttl(Some(idempotency_ttl));
        Self {
            storage: RedisStorage::new(connection).with_config(config),
            timeout,
        }
    }

    /// Connects without waiting for Redis: the first push connects, and a
    /// failed connection only fails that push.
    pub fn connect_lazy(
        url: &str,
        prefix: &str,
        idempotency_ttl: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|error| anyhow::anyhow!("invalid queue Redis URL: {error}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|error| anyhow::anyhow!("cannot open the queue connection: {error}"))?;
        Ok(Self::new(connection, prefix, idempotency_ttl, timeout))
    }

    /// Pushes the job, keyed by its reservation so a repeated push is a no-op.
    pub async fn enqueue(&self, job: PurchaseJob) -> Result<(), StoreError> {
        let mut storage = self.storage.clone();
        let task = TaskBuilder::new(job.clone())
            .idempotency_key(job.reservation_id.to_string())
            .build();
        bounded(Dependency::Redis, self.timeout, async move {
            storage.push_task(task).await.map_err(|error| {
                StoreError::unavailable(Dependency::Redis, format!("queue push failed: {error}"))
            })
        })
        .await
    }
}
