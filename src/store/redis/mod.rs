//! Redis: the fast gate and cache. A deadpool pool with every timeout set
//! (so an unreachable Redis answers quickly), the key layout, and the Lua
//! scripts, each a `.lua` file under `scripts/` documenting its KEYS/ARGV.

mod keys;
mod purchase;
mod settlement;

use std::{future::Future, sync::Arc, time::Duration};

use deadpool_redis::{Config, Connection, Pool, PoolError, Runtime};
use redis::{FromRedisValue, Script};
use uuid::Uuid;

pub use keys::SaleKeys;
pub use purchase::{
    ReservationRecord, ReserveOutcome, ReserveRequest, SaleCounters, SaleLiveState,
};
pub use settlement::{ReleaseOutcome, StockDisposition};

use super::{Dependency, StoreError, bounded};
use crate::config::RedisSettings;

/// What arming writes for one sale (see `scripts/arm_sale.lua`).
#[derive(Debug, Clone)]
pub struct SaleMirror {
    pub sale_id: Uuid,
    pub allotted: i64,
    pub confirmed: i64,
    pub state: &'static str,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub per_user_limit: i32,
    pub price: i64,
    /// Units each buyer holds in PostgreSQL; given when the stock counter was
    /// seen missing, so that a rebuild restores per-user limits too.
    pub buyers: Option<Vec<(Uuid, i64)>>,
}

/// The outcome of arming one sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Armed {
    pub remaining: i64,
    /// The stock counter was missing and was built from PostgreSQL.
    pub rebuilt: bool,
}

/// The Redis handle: pool, key prefix, call bound, loaded scripts. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    pool: Pool,
    prefix: Arc<str>,
    timeout: Duration,
    scripts: Arc<Scripts>,
}

/// The Lua scripts, loaded once per process (EVALSHA, EVAL on NOSCRIPT).
struct Scripts {
    arm: Script,
    reserve: Script,
    release: Script,
    confirm: Script,
    stale_pending: Script,
}

impl RedisStore {
    /// Builds the pool without connecting (like the PostgreSQL pool), with
    /// wait/create/recycle timeouts: deadpool leaves them unset by default,
    /// which would let a caller wait forever for an unreachable Redis.
    pub fn connect_lazy(settings: &RedisSettings, timeout: Duration) -> anyhow::Result<Self> {
        let pool = Config::from_url(settings.redis_url.expose())
            .builder()
            .map_err(|error| {
                anyhow::anyhow!("invalid configuration: FLASHSALE_REDIS_URL: {error}")
            })?
            .max_size(settings.redis_pool_size)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|error| anyhow::anyhow!("cannot build the Redis pool: {error}"))?;
        Ok(Self {
            pool,
            prefix: settings.redis_prefix.as_str().into(),
            timeout,
            scripts: Arc::new(Scripts {
                arm: Script::new(include_str!("scripts/arm_sale.lua")),
                reserve: Script::new(include_str!("scripts/reserve.lua")),
                release: Script::new(include_str!("scripts/release.lua")),
                confirm: Script::new(include_str!("scripts/confirm.lua")),
                stale_pending: Script::new(include_str!("scripts/stale_pending.lua")),
            }),
        })
    }

    pub fn sale_keys(&self, sale_id: Uuid) -> SaleKeys {
        SaleKeys::new(&self.prefix, sale_id)
    }

    /// Checks out a connection and runs one call on it, bounded as a whole.
    async fn with_connection<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        bounded(Dependency::Redis, self.timeout, async {
            let connection = self.pool.get().await?;
            call(connection).await.map_err(StoreError::from)
        })
        .await
    }

    /// One command, bounded.
    async fn query<T: FromRedisValue>(&self, command: redis::Cmd) -> Result<T, StoreError> {
        self.with_connection(
            |mut connection| async move { command.query_async(&mut connection).await },
        )
        .await
    }

    /// One pipeline (one round trip), bounded.
    async fn query_pipe<T: FromRedisValue>(&self, pipe: redis::Pipeline) -> Result<T, StoreError> {
        self.with_connection(
            |mut connection| async move { pipe.query_async(&mut connection).await },
        )
        .await
    }

    /// One Lua script call, bounded.
    async fn run_script<T: FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.with_connection(|mut connection| async move {
            invocation.invoke_async(&mut connection).await
        })
        .await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.query::<String>(redis::cmd("PING")).await.map(drop)
    }

    /// Units left to reserve, or `None` when the sale is not armed.
    pub async fn remaining(&self, sale_id: Uuid) -> Result<Option<i64>, StoreError> {
        self.query(redis::Cmd::get(self.sale_keys(sale_id).stock))
            .await
    }

    pub async fn arm(&self, sale: &SaleMirror) -> Result<Armed, StoreError> {
        let keys = self.sale_keys(sale.sale_id);
        let mut invocation = self.scripts.arm.prepare_invoke();
        invocation
            .key(&keys.stock)
            .key(&keys.meta)
            .key(&keys.buyers)
            .key(&keys.reservations)
            .key(&keys.pending)
            .key(&keys.stats)
            .arg(sale.allotted)
            .arg(sale.confirmed)
            .arg(sale.state)
            .arg(sale.starts_at_ms)
            .arg(sale.ends_at_ms)
            .arg(sale.per_user_limit)
            .arg(sale.price)
            .arg(u8::from(sale.buyers.is_some()));
        for (user_id, units) in sale.buyers.iter().flatten() {
            invocation.arg(user_id.to_string()).arg(*units);
        }
        let (remaining, rebuilt): (i64, i64) = self.run_script(invocation).await?;
        Ok(Armed {
            remaining,
            rebuilt: rebuilt == 1,
        })
    }
}

impl From<PoolError> for StoreError {
    fn from(error: PoolError) -> Self {
        match error {
            PoolError::Backend(error) => error.into(),
            other => StoreError::unavailable(Dependency::Redis, other),
        }
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(error: redis::RedisError) -> Self {
        let transient = error.is_io_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || matches!(
                error.kind(),
                redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
                    | redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain)
                    | redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown)
            );
        if transient {
            StoreError::unavailable(Dependency::Redis, error)
        } else {
            StoreError::unexpected(Dependency::Redis, error)
        }
    }
}
