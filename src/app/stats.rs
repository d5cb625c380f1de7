//! Operators' view of a sale: Redis counters plus PostgreSQL, computed at
//! most every couple of seconds per node so a dashboard cannot load the
//! stores.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppError;
use crate::{
    domain::{DomainError, SaleState},
    jobs::PurchaseQueue,
    latency::{ClusterLatency, LatencyWindow},
    store::{
        postgres::{CheckoutCounts, Db},
        redis::{Counter, RedisStore, SaleCounters},
    },
};

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = SaleStatsResponse)]
pub struct SaleStats {
    pub sale_id: Uuid,
    pub state: SaleState,
    /// Units allotted to the sale.
    pub allotted: i64,
    /// Units left to reserve (Redis).
    pub remaining: Option<i64>,
    /// Purchase attempts that reached Redis (after each node's own rate
    /// limit): accepted + replayed + rejected.
    pub attempts: i64,
    /// Reservations accepted.
    pub accepted: i64,
    /// Repeated requests answered from their idempotency record.
    pub replayed: i64,
    pub rejected: RejectedCounts,
    /// Reservations waiting to become orders.
    pub pending: i64,
    /// Units committed as orders in PostgreSQL.
    pub confirmed_units: i64,
    /// Reservations released, expired or failed.
    pub released: i64,
    /// Of those, reservations that could never become an order (the
    /// shopper's status says why).
    pub failed: i64,
    /// Units dropped from Redis stock because PostgreSQL had no unit for
    /// them (Redis had counted too many).
    pub units_written_off: i64,
    /// Purchase jobs given up on after too many attempts; their
    /// reservations stay pending and the reconciler queues them again.
    pub dead_lettered: i64,
    /// Milliseconds the oldest pending reservation has waited for its order.
    pub drain_lag_ms: Option<i64>,
    /// Allotted minus (Redis remaining, pending units and PostgreSQL
    /// confirmed) at the reconciler's last run: 0 when Redis and PostgreSQL
    /// agree; briefly non-zero while batches commit.
    pub drift: Option<i64>,
    pub drift_checked_at: Option<DateTime<Utc>>,
    pub queue: QueueCounts,
    /// For a sale with checkout holds: its holds, the payments an operator
    /// must act on, and its waitlist (null for a sale without holds).
    pub checkout: Option<CheckoutCounts>,
    /// `POST /api/purchase/attempt` answers of every API node (all sales,
    /// not only this one) over about the last 10 s, from the histograms the
    /// nodes publish to Redis.
    pub purchase_latency: ClusterLatency,
    pub computed_at: DateTime<Utc>,
}

/// The purchase queue (all sales).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueCounts {
    /// Jobs waiting for a worker (each carries one node's few milliseconds
    /// of purchases of one sale; `pending` counts the purchases).
    pub waiting: u64,
    /// Failed attempts waiting for their retry.
    pub scheduled: u64,
    /// Jobs in the queue's dead set.
    pub dead: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RejectedCounts {
    pub sold_out: i64,
    pub already_purchased: i64,
    pub above_limit: i64,
    pub not_active: i64,
    pub idempotency_key_reused: i64,
    /// Over the per-user attempt limit of the whole cluster (attempts a
    /// node's own limiter refused never reach Redis and are not here).
    pub rate_limited: i64,
}

impl RejectedCounts {
    fn total(&self) -> i64 {
        self.sold_out
            + self.already_purchased
            + self.above_limit
            + self.not_active
            + self.idempotency_key_reused
            + self.rate_limited
    }
}

/// Stats computed recently on this node, per sale.
struct StatsCache {
    ttl: Duration,
    entries: Mutex<HashMap<Uuid, (Instant, SaleStats)>>,
}

impl StatsCache {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    fn get(&self, sale_id: Uuid) -> Option<SaleStats> {
        self.entries
            .lock()
            .get(&sale_id)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, stats)| stats.clone())
    }

    fn put(&self, stats: SaleStats) {
        let mut entries = self.entries.lock();
        entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
        entries.insert(stats.sale_id, (Instant::now(), stats));
    }
}

#[derive(Clone)]
pub struct Stats {
    db: Db,
    redis: RedisStore,
    queue: PurchaseQueue,
    cache: Arc<StatsCache>,
    /// The cluster's purchase latency as read lately, for the last ~10 s.
    latency: Arc<LatencyWindow>,
}

impl Stats {
    pub fn new(db: Db, redis: RedisStore, queue: PurchaseQueue, ttl: Duration) -> Self {
        Self {
            db,
            redis,
            queue,
            cache: Arc::new(StatsCache::new(ttl)),
            latency: Arc::default(),
        }
    }

    /// The sale's numbers, at most the cache's age old.
    pub async fn of_sale(&self, sale_id: Uuid) -> Result<SaleStats, AppError> {
        if let Some(cached) = self.cache.get(sale_id) {
            return Ok(cached);
        }
        let (sale, counters, queue, latency) = tokio::try_join!(
            self.db.find_sale(sale_id),
            self.redis.sale_counters(sale_id),
            self.queue.depth(),
            self.redis.cluster_latency()
        )?;
        let sale = sale.ok_or(DomainError::SaleNotFound(sale_id))?;
        let checkout = match sale.hold_seconds {
            Some(_) => Some(self.db.checkout_counts(sale_id).await?),
            None => None,
        };
        // An archived sale's keys left Redis; its counters were kept first.
        let counters = match &sale.archived_counters {
            Some(archived) if counters.counters.is_empty() => SaleCounters {
                counters: archived.0.clone(),
                ..SaleCounters::default()
            },
            _ => counters,
        };
        let now = Utc::now();
        let rejected = RejectedCounts {
            sold_out: counters.get(Counter::RejectedSoldOut),
            already_purchased: counters.get(Counter::RejectedLimit),
            above_limit: counters.get(Counter::RejectedAboveLimit),
            not_active: counters.get(Counter::RejectedNotActive),
            idempotency_key_reused: counters.get(Counter::RejectedKeyReused),
            rate_limited: counters.get(Counter::RejectedRateLimited),
        };
        let stats = SaleStats {
            sale_id,
            state: sale.effective_state(now),
            allotted: sale.allotted_quantity,
            remaining: counters.remaining,
            attempts: counters.get(Counter::Accepted)
                + counters.get(Counter::Replayed)
                + rejected.total(),
            accepted: counters.get(Counter::Accepted),
            replayed: counters.get(Counter::Replayed),
            rejected,
            pending: counters.pending,
            confirmed_units: sale.confirmed_quantity,
            released: counters.get(Counter::Released)
                + counters.get(Counter::Expired)
                + counters.get(Counter::Failed),
            failed: counters.get(Counter::Failed),
            units_written_off: counters.get(Counter::UnitsWrittenOff),
            dead_lettered: counters.get(Counter::DeadLettered),
            drain_lag_ms: counters
                .oldest_pending_ms
                .map(|oldest| (now.timestamp_millis() - oldest).max(0)),
            drift: counters.recorded(Counter::Drift),
            drift_checked_at: counters
                .recorded(Counter::DriftCheckedAtMs)
                .and_then(DateTime::from_timestamp_millis),
            queue: QueueCounts {
                waiting: queue.waiting,
                scheduled: queue.scheduled,
                dead: queue.dead,
            },
            checkout,
            purchase_latency: self.latency.observe(&latency),
            computed_at: now,
        };
        self.cache.put(stats.clone());
        Ok(stats)
    }
}
