//! Settlement jobs: the payload the API's [`outbox`] pushes after
//! reservations and the worker consumes, and the queue both sides open the
//! same way. What the worker does to apalis's own keys (which apalis has no
//! API for) is in [`upkeep`].

pub mod outbox;
pub mod upkeep;

use std::{sync::Arc, time::Duration};

use apalis_core::{backend::TaskSink, task::builder::TaskBuilder};
use apalis_redis::{Config, RedisStorage};
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    config::{QueueSettings, RedisSettings},
    domain::Quantity,
    store::{Dependency, StoreError, bounded, postgres::ReservationToSettle},
};

/// Jobs waiting in the queue, by where apalis keeps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Ready to be fetched.
    pub waiting: u64,
    /// Failed attempts waiting for their retry time.
    pub scheduled: u64,
    /// Given up on after too many attempts (apalis's dead set).
    pub dead: u64,
}

/// One accepted reservation to turn into an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseJob {
    pub reservation_id: Uuid,
    pub sale_id: Uuid,
    pub user_id: Uuid,
    pub quantity: Quantity,
    pub idempotency_key: String,
    /// Redis server time of the reservation, Unix milliseconds.
    pub reserved_at_ms: i64,
}

impl From<&PurchaseJob> for ReservationToSettle {
    /// What the worker hands PostgreSQL for a reserved purchase. A job
    /// whose time does not read (never written so) is stamped now rather
    /// than stopping its batch.
    fn from(job: &PurchaseJob) -> Self {
        ReservationToSettle {
            reservation_id: job.reservation_id,
            user_id: job.user_id,
            quantity: job.quantity,
            idempotency_key: job.idempotency_key.clone(),
            reserved_at: DateTime::<Utc>::from_timestamp_millis(job.reserved_at_ms)
                .unwrap_or_else(Utc::now),
        }
    }
}

/// The queue's job: settle these reservations of one sale. The outbox
/// pushes a few milliseconds of one node's accepted purchases as one job;
/// the reconciler pushes a sale's reservations left pending in jobs of at
/// most [`MAX_PURCHASES_PER_JOB`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "QueuedJob")]
pub struct SettlementJob {
    pub sale_id: Uuid,
    /// Each of the sale, each reservation once.
    pub purchases: Vec<PurchaseJob>,
}

/// Purchases one job carries at most (a settlement batch's worth).
pub const MAX_PURCHASES_PER_JOB: usize = 512;

/// What a queued job may hold: this build's jobs, or a single purchase as
/// builds before the outbox queued them (read as a job of one), so that
/// jobs left in the queue across an upgrade are settled instead of failing
/// to decode (which would stop the consumer, not dead-letter the job).
#[derive(Deserialize)]
#[serde(untagged)]
enum QueuedJob {
    Settlement {
        sale_id: Uuid,
        purchases: Vec<PurchaseJob>,
    },
    Purchase(PurchaseJob),
}

impl From<QueuedJob> for SettlementJob {
    fn from(queued: QueuedJob) -> Self {
        match queued {
            QueuedJob::Settlement { sale_id, purchases } => Self { sale_id, purchases },
            QueuedJob::Purchase(purchase) => Self::single(purchase),
        }
    }
}

impl SettlementJob {
    /// A job of one purchase.
    pub fn single(purchase: PurchaseJob) -> Self {
        Self {
            sale_id: purchase.sale_id,
            purchases: vec![purchase],
        }
    }
}

/// The purchase queue (apalis on Redis).
#[derive(Clone)]
pub struct PurchaseQueue {
    storage: RedisStorage<SettlementJob>,
    timeout: Duration,
    upkeep: Arc<upkeep::Scripts>,
}

/// Queue name for a deployment prefix. The braces are a Redis Cluster hash
/// tag: every key apalis derives from the name lands in one slot.
pub fn queue_name(prefix: &str) -> String {
    format!("{prefix}:{{purchases}}")
}

impl PurchaseQueue {
    /// The queue the settings name (its own Redis, or the main one).
    pub fn from_settings(
        queue: &QueueSettings,
        redis: &RedisSettings,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        Self::connect_lazy(
            queue.url(redis).expose(),
            &redis.redis_prefix,
            queue.queue_idempotency_ttl,
            timeout,
        )
    }

    /// Opens the queue on a `ConnectionManager` (apalis needs a cloneable,
    /// reconnecting connection; deadpool's pooled ones are neither) without
    /// waiting for Redis: the first push connects, and a failed connection
    /// only fails that push. `idempotency_ttl` makes a second push of the
    /// same reservation within that time a no-op; without a TTL apalis would
    /// ignore the key.
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
        let config = Config::default()
            .queue(queue_name(prefix))
            .idempotency_ttl(Some(idempotency_ttl))
            // apalis would PUBLISH on every push and every ack for its
            // dashboard; nothing here subscribes, so it is pure cost on the
            // purchase path and the worker's commit path.
            .emit_events(false);
        Ok(Self {
            storage: RedisStorage::new(connection).with_config(config),
            timeout,
            upkeep: Arc::new(upkeep::Scripts::load()),
        })
    }

    /// The queue's configuration and a handle on its connection, for the
    /// commands apalis has no API for.
    fn raw(&self) -> (Config, ConnectionManager) {
        let mut storage = self.storage.clone();
        (
            storage.get_config().clone(),
            storage.get_connection().clone(),
        )
    }

    /// Pushes the job, keyed by its first reservation (a reservation enters
    /// one outbox job, once) so a repeated push is a no-op.
    pub async fn enqueue(&self, job: SettlementJob) -> Result<(), StoreError> {
        let key = job
            .purchases
            .first()
            .map(|purchase| purchase.reservation_id)
            .unwrap_or(job.sale_id)
            .to_string();
        self.enqueue_keyed(job, key).await
    }

    /// Pushes the job under an explicit idempotency key: a second push with
    /// the same key within the TTL is a no-op.
    pub async fn enqueue_keyed(&self, job: SettlementJob, key: String) -> Result<(), StoreError> {
        let mut storage = self.storage.clone();
        let task = TaskBuilder::new(job).idempotency_key(key).build();
        bounded(Dependency::Redis, self.timeout, async move {
            storage.push_task(task).await.map_err(|error| {
                StoreError::unavailable(Dependency::Redis, format!("queue push failed: {error}"))
            })
        })
        .await
    }

    /// How many jobs wait, wait for a retry, or were given up on. apalis
    /// parks every new job in its scheduled set until a worker promotes it,
    /// so jobs due now count as waiting and only future ones as retries.
    pub async fn depth(&self) -> Result<QueueDepth, StoreError> {
        let (config, mut connection) = self.raw();
        let now_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or_default();
        bounded(Dependency::Redis, self.timeout, async move {
            let (active, due, later, dead): (u64, u64, u64, u64) = redis::pipe()
                .llen(config.active_jobs_list())
                .zcount(config.scheduled_jobs_set(), "-inf", now_secs)
                .zcount(config.scheduled_jobs_set(), format!("({now_secs}"), "+inf")
                .scard(config.dead_jobs_set())
                .query_async(&mut connection)
                .await?;
            Ok::<_, redis::RedisError>(QueueDepth {
                waiting: active + due,
                scheduled: later,
                dead,
            })
        })
        .await
    }

    /// The storage a worker consumes from: the same queue and connection,
    /// with the worker's fetch size and heartbeat. Orphaned jobs of a worker
    /// that stopped heartbeating are handed to others after
    /// `heartbeat * missed_heartbeats`.
    pub fn consumer(
        &self,
        fetch_batch: usize,
        heartbeat: Duration,
        missed_heartbeats: usize,
    ) -> RedisStorage<SettlementJob> {
        let config = self
            .storage
            .get_config()
            .clone()
            .batch_size(fetch_batch.max(1))
            .heartbeat_interval(heartbeat)
            .missed_heartbeats(missed_heartbeats)
            // Leases add nothing we use (orphans are found by the inflight
            // set, not by leases) and their script runs LREM over the whole
            // waiting list once per job: quadratic in the backlog.
            .lock_tasks(false);
        self.storage.clone().with_config(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purchase() -> PurchaseJob {
        PurchaseJob {
            reservation_id: Uuid::now_v7(),
            sale_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            quantity: Quantity::ONE,
            idempotency_key: "k".into(),
            reserved_at_ms: 1_764_000_000_000,
        }
    }

    #[test]
    fn a_settlement_job_reads_back_as_written() {
        let job = SettlementJob::single(purchase());
        let text = serde_json::to_string(&job).unwrap();
        assert_eq!(serde_json::from_str::<SettlementJob>(&text).unwrap(), job);
    }

    #[test]
    fn a_single_purchase_queued_by_an_older_build_reads_as_a_job_of_one() {
        let old = purchase();
        let text = serde_json::to_string(&old).unwrap();
        let job: SettlementJob = serde_json::from_str(&text).unwrap();
        assert_eq!(job, SettlementJob::single(old));
    }
}
