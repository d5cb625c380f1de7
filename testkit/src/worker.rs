//! Harness for the worker's tests: a sale in a fresh database (from
//! `#[sqlx::test]`) and a fresh Redis prefix, reservations made through the
//! real Lua script and queued through the real queue, worker processes
//! started from the real binary, and the invariants of DESIGN.md checked
//! in PostgreSQL and Redis.
use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use chrono::Utc;
use flashsale::{
    domain::{
        Currency, Email, FailureReason, Money, OpeningRules, Quantity, ReservationStatus, Role,
        SaleWindow,
    },
    jobs::{PurchaseJob, PurchaseQueue, SettlementJob},
    store::{
        arming,
        postgres::{AdminAct, Db, NewProduct, NewSale, SaleRow},
        redis::{Counter, RedisStore, ReserveOutcome, ReserveRequest, UserRate},
    },
};
use futures::{StreamExt, stream};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, postgres::PgPoolOptions};
use uuid::Uuid;

use crate::services::{database_url, redis_connection, redis_url};

const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Harness {
    /// The `flashsale-worker` binary its workers run (a test or bench
    /// passes `env!("CARGO_BIN_EXE_flashsale-worker")`).
    pub worker_binary: &'static str,
    pub pg: PgPool,
    pub db: Db,
    pub redis: RedisStore,
    pub queue: PurchaseQueue,
    pub prefix: String,
    pub sale: SaleRow,
    pub raw: redis::aio::MultiplexedConnection,
    /// The operator the harness acts as (admin store calls are audited).
    pub admin: AdminAct,
}

/// A worker process, killed when dropped.
pub struct WorkerProcess {
    pub child: Child,
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WorkerProcess {
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().try_into().unwrap());
        nix::sys::signal::kill(pid, signal).unwrap_or_else(|error| panic!("{signal}: {error}"));
    }

    /// Waits for the process to exit; panics past `limit`.
    pub fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the worker did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Harness {
    /// An active sale of `stock` units with the given per-user limit.
    pub async fn new(
        worker_binary: &'static str,
        pg: PgPool,
        stock: i64,
        per_user_limit: i32,
    ) -> Self {
        Self::with_hold(worker_binary, pg, stock, per_user_limit, None).await
    }

    /// The same, with a checkout hold of `hold_seconds` (orders await
    /// payment until the reservation's time plus the hold).
    pub async fn with_hold(
        worker_binary: &'static str,
        pg: PgPool,
        stock: i64,
        per_user_limit: i32,
        hold_seconds: Option<i32>,
    ) -> Self {
        let prefix = format!("wtest-{}", Uuid::now_v7().simple());
        let db = Db::new(pg.clone(), TIMEOUT);
        let redis_settings = flashsale::config::RedisSettings {
            redis_url: flashsale::config::Secret::new(redis_url()),
            redis_prefix: prefix.clone(),
        };
        let redis = RedisStore::connect_lazy(&redis_settings, TIMEOUT).unwrap();
        let queue =
            PurchaseQueue::connect_lazy(&redis_url(), &prefix, Duration::from_secs(3600), TIMEOUT)
                .unwrap();
        let operator = db
            .upsert_local_user(&Email::normalize("harness@flashsale.test"), Role::Admin)
            .await
            .unwrap();
        let admin = AdminAct {
            actor_id: operator.id,
            request_id: None,
            idempotency_key: None,
        };
        let product = db
            .create_product(
                &NewProduct {
                    sku: format!("SKU-{}", Uuid::now_v7().simple()),
                    name: "Sneaker".into(),
                    description: String::new(),
                    price: Money::from_minor(12_999).unwrap(),
                    currency: Currency::parse("EUR").unwrap(),
                    stock,
                },
                &admin,
            )
            .await
            .unwrap();
        let now = Utc::now();
        let sale = db
            .create_sale(
                &NewSale {
                    product_id: product.id,
                    price: Money::from_minor(4_999).unwrap(),
                    window: SaleWindow::new(
                        now - chrono::Duration::minutes(1),
                        now + chrono::Duration::hours(1),
                    )
                    .unwrap(),
                    per_user_limit,
                    stock,
                    hold_seconds,
                    offer_seconds: None,
                },
                // The harness's holds last seconds, below any node's minimum.
                OpeningRules {
                    now,
                    hold_min_secs: 1,
                },
                &admin,
            )
            .await
            .unwrap();
        arming::arm_sale(&db, &redis, &sale).await.unwrap();
        let raw = redis_connection().await;
        Self {
            worker_binary,
            pg,
            db,
            redis,
            queue,
            prefix,
            sale,
            raw,
            admin,
        }
    }

    /// Creates `count` users in PostgreSQL.
    pub async fn users(&self, count: usize) -> Vec<Uuid> {
        let ids: Vec<Uuid> = (0..count).map(|_| Uuid::now_v7()).collect();
        let emails: Vec<String> = ids
            .iter()
            .map(|id| format!("{}@shop.test", id.simple()))
            .collect();
        sqlx::query(
            "insert into users (id, email, issuer, subject)
             select id, email, 'local', email from unnest($1::uuid[], $2::text[]) as u(id, email)",
        )
        .bind(&ids)
        .bind(&emails)
        .execute(&self.pg)
        .await
        .unwrap();
        ids
    }

    /// One reservation per user through `reserve.lua`; returns the jobs of
    /// the accepted ones (not queued).
    pub async fn reserve(&self, users: &[Uuid]) -> Vec<PurchaseJob> {
        let sale_id = self.sale.id;
        stream::iter(users.iter().copied())
            .map(|user_id| async move {
                let reservation_id = Uuid::now_v7();
                let key = format!("buy-{}", reservation_id.simple());
                let outcome = self
                    .redis
                    .reserve(&ReserveRequest {
                        sale_id,
                        user_id,
                        quantity: Quantity::ONE,
                        idempotency_key: &key,
                        reservation_id,
                        rate: UserRate {
                            per_second: 10_000,
                            burst: 10_000,
                        },
                    })
                    .await
                    .unwrap();
                match outcome {
                    ReserveOutcome::Accepted { reserved_at_ms, .. } => Some(PurchaseJob {
                        reservation_id,
                        sale_id,
                        user_id,
                        quantity: Quantity::ONE,
                        idempotency_key: key,
                        reserved_at_ms,
                    }),
                    _ => None,
                }
            })
            .buffer_unordered(256)
            .filter_map(|job| async move { job })
            .collect()
            .await
    }

    /// Queues the purchases as jobs of `size` purchases each, the way an
    /// API node's outbox gathers them during a stampede.
    pub async fn enqueue_in_jobs_of(&self, purchases: &[PurchaseJob], size: usize) {
        stream::iter(purchases.chunks(size.max(1)))
            .map(|chunk| {
                self.queue.enqueue(SettlementJob {
                    sale_id: self.sale.id,
                    purchases: chunk.to_vec(),
                })
            })
            .buffer_unordered(256)
            .for_each(|pushed| async move { pushed.unwrap() })
            .await;
    }

    pub async fn enqueue(&self, jobs: &[PurchaseJob]) {
        stream::iter(jobs.iter().cloned())
            .map(|job| self.queue.enqueue(SettlementJob::single(job)))
            .buffer_unordered(256)
            .for_each(|pushed| async move { pushed.unwrap() })
            .await;
    }

    /// Starts a worker process on this test's database and Redis prefix.
    pub fn spawn_worker(&self, extra: &[(&str, &str)]) -> WorkerProcess {
        let mut command = Command::new(self.worker_binary);
        command
            .env("FLASHSALE_DATABASE_URL", database_url(&self.pg))
            .env("FLASHSALE_REDIS_URL", redis_url())
            .env("FLASHSALE_REDIS_PREFIX", &self.prefix)
            .env("FLASHSALE_PG_MAX_CONNECTIONS", "4")
            .env("FLASHSALE_WORKER_METRICS_ADDR", "127.0.0.1:0")
            .env("FLASHSALE_WORKER_HEARTBEAT_SECS", "1")
            .env("FLASHSALE_WORKER_MISSED_HEARTBEATS", "2")
            .env("FLASHSALE_LOG", "info")
            // Logs go to stdout; FLASHSALE_TEST_WORKER_LOGS=1 shows them.
            .stdout(
                if std::env::var_os("FLASHSALE_TEST_WORKER_LOGS").is_some() {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                },
            )
            .stderr(Stdio::inherit());
        for (name, value) in extra {
            command.env(name, value);
        }
        WorkerProcess {
            child: command.spawn().unwrap(),
        }
    }

    pub async fn order_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from orders where flash_sale_id = $1")
            .bind(self.sale.id)
            .fetch_one(&self.pg)
            .await
            .unwrap()
    }

    /// What apalis still keeps of finished jobs: payloads, done-set entries
    /// and metadata keys.
    pub async fn finished_job_leftovers(&self) -> (i64, i64, usize) {
        let queue = flashsale::jobs::queue_name(&self.prefix);
        let mut raw = self.raw.clone();
        let (payloads, done): (i64, i64) = redis::pipe()
            .hlen(format!("{queue}:data"))
            .scard(format!("{queue}:done"))
            .query_async(&mut raw)
            .await
            .unwrap();
        let meta: Vec<redis::RedisResult<String>> =
            redis::AsyncCommands::scan_match(&mut raw, format!("{queue}:meta:*"))
                .await
                .unwrap()
                .collect()
                .await;
        (payloads, done, meta.len())
    }

    /// Units the sale has confirmed (one row: cheap to poll).
    pub async fn confirmed_units(&self) -> i64 {
        sqlx::query_scalar("select confirmed_quantity from flash_sales where id = $1")
            .bind(self.sale.id)
            .fetch_one(&self.pg)
            .await
            .unwrap()
    }

    /// Jobs apalis has acked as done (its done set).
    pub async fn jobs_done(&self) -> i64 {
        redis::cmd("SCARD")
            .arg(format!(
                "{}:done",
                flashsale::jobs::queue_name(&self.prefix)
            ))
            .query_async(&mut self.raw.clone())
            .await
            .unwrap()
    }

    /// Everything under the harness's prefix is gone (the sale, the
    /// queue), as after a Redis restart without persistence.
    pub async fn wipe_redis(&self) {
        let mut raw = self.raw.clone();
        let keys: Vec<redis::RedisResult<String>> =
            redis::AsyncCommands::scan_match(&mut raw, format!("{}:*", self.prefix))
                .await
                .unwrap()
                .collect()
                .await;
        let keys: Vec<String> = keys.into_iter().map(Result::unwrap).collect();
        if keys.is_empty() {
            return;
        }
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut raw)
            .await
            .unwrap();
    }

    /// Units left to reserve in Redis (0 when the sale is not armed).
    pub async fn redis_stock(&self) -> i64 {
        self.redis
            .remaining(self.sale.id)
            .await
            .unwrap()
            .unwrap_or_default()
    }

    /// Units Redis counts as the shopper's (pending and ordered), if any.
    pub async fn redis_units_held(&self, user_id: Uuid) -> Option<i64> {
        redis::cmd("HGET")
            .arg(&self.redis.sale_keys(self.sale.id).buyers)
            .arg(user_id.to_string())
            .query_async(&mut self.raw.clone())
            .await
            .unwrap()
    }

    pub async fn pending_count(&self) -> i64 {
        self.redis
            .sale_counters(self.sale.id)
            .await
            .unwrap()
            .pending
    }

    /// Polls until every reservation left the pending set and `orders`
    /// orders exist; panics with the figures past `limit`.
    pub async fn wait_for_orders(&self, orders: i64, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let (committed, pending) = (self.order_count().await, self.pending_count().await);
            if committed == orders && pending == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "after {limit:?}: {committed} orders (want {orders}), {pending} still pending"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn reservation_status(
        &self,
        reservation_id: Uuid,
    ) -> Option<(ReservationStatus, Option<FailureReason>)> {
        self.redis
            .reservation(self.sale.id, reservation_id)
            .await
            .unwrap()
            .map(|record| (record.status, record.reason))
    }

    /// The sale's invariants as PostgreSQL's `flash_sale_invariants`
    /// reports them (figures, checks and `passed`).
    pub async fn sale_invariants(&self) -> serde_json::Value {
        let invariants: String = sqlx::query_scalar("select flash_sale_invariants($1)::text")
            .bind(self.sale.id)
            .fetch_one(&self.pg)
            .await
            .unwrap();
        serde_json::from_str(&invariants).unwrap()
    }

    /// Invariants I1-I6 of DESIGN.md once the sale is quiet: `accepted` are
    /// every reservation Redis accepted (and still knows).
    pub async fn assert_invariants(&self, accepted: &[PurchaseJob]) {
        let sale = self.db.find_sale(self.sale.id).await.unwrap().unwrap();
        // I1, I3, one order per reservation, the ledgers (sale, product
        // stock, sale_buyers), no reservation with an order recorded as
        // ending otherwise: the one definition scripts/bench and
        // scripts/chaos also check (flash_sale_invariants, last defined in
        // migrations/20261206000001_the_order_is_the_record.sql).
        let invariants = self.sale_invariants().await;
        assert_eq!(
            invariants["passed"], true,
            "the sale's invariants do not hold: {invariants:#}"
        );
        let order_units = invariants["units_sold"].as_i64().unwrap();
        // I4 + I5: every accepted reservation ended exactly once, visibly
        // (`purchase_endings`: its order when it was confirmed, its audit
        // row otherwise).
        let endings: Vec<(Uuid, String)> = sqlx::query_as(
            "select reservation_id, outcome from purchase_endings where flash_sale_id = $1",
        )
        .bind(sale.id)
        .fetch_all(&self.pg)
        .await
        .unwrap();
        let ended: HashMap<Uuid, String> = endings.into_iter().collect();
        for job in accepted {
            let outcome = ended
                .get(&job.reservation_id)
                .unwrap_or_else(|| panic!("reservation {} never ended", job.reservation_id));
            let (status, _) = self.reservation_status(job.reservation_id).await.unwrap();
            assert_eq!(status.as_str(), outcome, "Redis shows another outcome");
        }
        // I2 + I6: quiet Redis equals what PostgreSQL implies.
        let counters = self.redis.sale_counters(sale.id).await.unwrap();
        assert_eq!(counters.pending, 0, "reservations still pending");
        assert_eq!(
            counters.get(Counter::PendingUnits),
            0,
            "pending units still counted"
        );
        assert_eq!(
            counters.remaining,
            Some(
                sale.allotted_quantity
                    - sale.confirmed_quantity
                    - counters.get(Counter::UnitsWrittenOff)
            ),
            "Redis stock differs from allotted - confirmed"
        );
        let buyers: HashMap<String, i64> = redis::AsyncCommands::hgetall(
            &mut self.raw.clone(),
            &self.redis.sale_keys(sale.id).buyers,
        )
        .await
        .unwrap();
        let redis_units: i64 = buyers.values().sum();
        assert_eq!(
            redis_units, order_units,
            "Redis per-user units differ from the orders"
        );
    }
}

/// A fresh, migrated database for one benchmark run (tests get theirs from
/// `#[sqlx::test]`); returns the pool and the database name.
pub async fn fresh_database(admin_url: &str) -> (sqlx::PgPool, String) {
    let name = format!("bench_{}", Uuid::now_v7().simple());
    let mut admin = PgConnection::connect(admin_url)
        .await
        .expect("DATABASE_URL reachable");
    // The name is ours (a UUID's hex digits), so formatting it in is safe.
    sqlx::query(AssertSqlSafe(format!("create database {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .unwrap();
    flashsale::store::postgres::MIGRATOR
        .run(&pool)
        .await
        .unwrap();
    (pool, name)
}

/// Drops a database made by [`fresh_database`].
pub async fn drop_database(admin_url: &str, name: &str) {
    let mut admin = PgConnection::connect(admin_url).await.unwrap();
    sqlx::query(AssertSqlSafe(format!("drop database {name} with (force)")))
        .execute(&mut admin)
        .await
        .unwrap();
}
