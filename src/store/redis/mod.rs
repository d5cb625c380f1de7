//! Redis: the fast gate and cache. One multiplexed, self-reconnecting
//! connection per process with every timeout set (so an unreachable Redis
//! answers quickly), the key layout, and the Lua scripts, each a `.lua` file
//! under `scripts/` documenting its KEYS/ARGV.

mod accounts;
mod counters;
mod keys;
mod latency;
mod purchase;
mod settlement;
mod subscriber;

use std::{future::Future, sync::Arc, time::Duration};

use redis::{
    ErrorKind, FromRedisValue, Script, ServerErrorKind,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use uuid::Uuid;

pub use accounts::{AccountChange, AccountPush, accounts_channel, parse_account_push};
pub use counters::Counter;
pub use keys::SaleKeys;
use keys::SaleKeysCache;
pub use purchase::{
    CachedOrders, ReservationRecord, ReserveOutcome, ReserveRequest, SaleCounters, SaleLiveState,
    UserRate, parse_record,
};
pub use settlement::{ReleaseOutcome, Restock, RoomRead};
pub use subscriber::{EventSubscriber, Published, parse_push};

use super::{Dependency, StoreError, bounded, postgres::CommittedOrder};
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
    /// The sale's version in PostgreSQL: Redis keeps the newest it was given.
    pub version: i64,
    /// The staging hash holding the units each buyer holds in PostgreSQL
    /// ([`RedisStore::stage_buyers`]); given when the stock counter was
    /// seen missing, so that a rebuild restores per-user limits too.
    pub staged_buyers: Option<String>,
}

/// The outcome of arming one sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Armed {
    pub remaining: i64,
    /// The stock counter was missing and was built from PostgreSQL.
    pub rebuilt: bool,
    /// Redis already held a newer version of the sale; nothing was written.
    pub superseded: bool,
    /// The counter was missing but no buyers were staged; nothing was
    /// written (stage them and arm again).
    pub needs_restore: bool,
}

/// How long a staging hash outlives an arming that died half-way.
const STAGING_TTL_SECS: u64 = 300;

/// A script that reads or writes reservation records, with the record
/// codec (`scripts/record.lua`) in front of it.
macro_rules! with_records {
    ($script:literal) => {
        concat!(include_str!("scripts/record.lua"), include_str!($script))
    };
}

/// The Redis handle: connection, key prefix, call bound, loaded scripts.
/// Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: Arc<str>,
    timeout: Duration,
    scripts: Arc<Scripts>,
    sale_keys: Arc<SaleKeysCache>,
}

/// The Lua scripts, called by hash (EVALSHA); a Redis that does not know
/// one (NOSCRIPT) is sent it again.
struct Scripts {
    arm: Script,
    reserve: Script,
    release: Script,
    confirm: Script,
    stale_pending: Script,
    restore_orders: Script,
    return_held: Script,
    cached_orders: Script,
    cache_orders: Script,
}

impl RedisStore {
    /// Opens the connection lazily (like the PostgreSQL pool): the first
    /// call connects, and while Redis is unreachable each call fails within
    /// `timeout` and the connection keeps trying to come back.
    ///
    /// One multiplexed connection, not a pool: concurrent calls share one
    /// socket and are written to it together, so Redis reads many commands
    /// per system call; a pooled connection also cost a validation round
    /// trip (`UNWATCH` + `PING`) on every checkout (docs/decisions.md).
    /// Call it inside a Tokio runtime: the connection's task is spawned there.
    pub fn connect_lazy(settings: &RedisSettings, timeout: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(settings.redis_url.expose()).map_err(|error| {
            anyhow::anyhow!("invalid configuration: FLASHSALE_REDIS_URL: {error}")
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|error| anyhow::anyhow!("cannot open the Redis connection: {error}"))?;
        let prefix: Arc<str> = settings.redis_prefix.as_str().into();
        Ok(Self {
            connection,
            prefix: prefix.clone(),
            timeout,
            scripts: Arc::new(Scripts {
                arm: Script::new(with_records!("scripts/arm_sale.lua")),
                reserve: Script::new(with_records!("scripts/reserve.lua")),
                release: Script::new(with_records!("scripts/release.lua")),
                confirm: Script::new(with_records!("scripts/confirm.lua")),
                stale_pending: Script::new(include_str!("scripts/stale_pending.lua")),
                restore_orders: Script::new(with_records!("scripts/restore_orders.lua")),
                return_held: Script::new(with_records!("scripts/return_held.lua")),
                cached_orders: Script::new(include_str!("scripts/cached_orders.lua")),
                cache_orders: Script::new(include_str!("scripts/cache_orders.lua")),
            }),
            sale_keys: Arc::new(SaleKeysCache::new(prefix.clone())),
        })
    }

    pub fn sale_keys(&self, sale_id: Uuid) -> Arc<SaleKeys> {
        self.sale_keys.get(sale_id)
    }

    /// Runs one call on the shared connection, bounded as a whole.
    async fn with_connection<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        bounded(
            Dependency::Redis,
            self.timeout,
            call(self.connection.clone()),
        )
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

    /// One call of `script` on `keys`, whose arguments `command` (from
    /// [`script_command`]) already carries; bounded. Redis that does not
    /// know the script (restarted, flushed) answers NOSCRIPT: it is loaded
    /// and the call made once more, as `ScriptInvocation` does.
    async fn run_script_command<T: FromRedisValue>(
        &self,
        script: &Script,
        command: redis::Cmd,
    ) -> Result<T, StoreError> {
        self.with_connection(|mut connection| async move {
            match command.query_async(&mut connection).await {
                Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    script.load_async(&mut connection).await?;
                    command.query_async(&mut connection).await
                }
                result => result,
            }
        })
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
        self.query(redis::Cmd::hget(&self.sale_keys(sale_id).meta, "stock"))
            .await
    }

    /// The version of the sale Redis mirrors, or `None` when not armed.
    pub async fn armed_version(&self, sale_id: Uuid) -> Result<Option<i64>, StoreError> {
        self.query(redis::Cmd::hget(&self.sale_keys(sale_id).meta, "version"))
            .await
    }

    pub async fn arm(&self, sale: &SaleMirror) -> Result<Armed, StoreError> {
        let keys = self.sale_keys(sale.sale_id);
        let mut invocation = self.scripts.arm.prepare_invoke();
        invocation
            .key(&keys.meta)
            .key(&keys.buyers)
            .key(&keys.reservations)
            .key(&keys.pending)
            .key(&keys.stats)
            // Nothing staged: a key that never exists stands in.
            .key(
                sale.staged_buyers
                    .clone()
                    .unwrap_or_else(|| keys.staging(Uuid::nil())),
            )
            .key(&keys.shoppers)
            .arg(sale.allotted)
            .arg(sale.confirmed)
            .arg(sale.state)
            .arg(sale.starts_at_ms)
            .arg(sale.ends_at_ms)
            .arg(sale.per_user_limit)
            .arg(sale.price)
            .arg(sale.version)
            .arg(u8::from(sale.staged_buyers.is_some()));
        let (remaining, rebuilt, superseded, needs_restore): (i64, i64, i64, i64) =
            self.run_script(invocation).await?;
        Ok(Armed {
            remaining,
            rebuilt: rebuilt == 1,
            superseded: superseded == 1,
            needs_restore: needs_restore == 1,
        })
    }

    /// Adds one chunk of (buyer, units) to a staging hash for arming.
    pub async fn stage_buyers(
        &self,
        staging: &str,
        buyers: &[(Uuid, i64)],
    ) -> Result<(), StoreError> {
        if buyers.is_empty() {
            return Ok(());
        }
        let fields: Vec<(String, i64)> = buyers
            .iter()
            .map(|(user_id, units)| (user_id.to_string(), *units))
            .collect();
        let mut pipe = redis::pipe();
        pipe.hset_multiple(staging, &fields)
            .ignore()
            .expire(staging, STAGING_TTL_SECS as i64)
            .ignore();
        self.query_pipe(pipe).await
    }

    /// Puts back the replay records of one chunk of committed orders
    /// (`scripts/restore_orders.lua`); returns how many keys were missing
    /// and are restored.
    pub async fn restore_orders(
        &self,
        sale_id: Uuid,
        orders: &[CommittedOrder],
    ) -> Result<usize, StoreError> {
        if orders.is_empty() {
            return Ok(0);
        }
        let keys = self.sale_keys(sale_id);
        let mut invocation = self.scripts.restore_orders.prepare_invoke();
        invocation.key(&keys.shoppers).key(&keys.reservations);
        for order in orders {
            invocation
                .arg(order.reservation_id.to_string())
                .arg(order.user_id.to_string())
                .arg(order.quantity)
                .arg(order.created_at.timestamp_millis())
                .arg(&order.idempotency_key)
                .arg(order.id.to_string())
                .arg(order.record_status().as_str());
        }
        self.run_script(invocation).await
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

/// Scripts take a quantity as its decimal text.
impl redis::ToRedisArgs for crate::domain::Quantity {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        self.get().write_redis_args(out);
    }
}

/// `EVALSHA` of `script` on `keys`; the caller appends the arguments. Keys
/// and arguments go straight into the command's one buffer: the purchase's
/// script uses it, where a `ScriptInvocation` first copied each key and
/// argument into a vector of its own (a tenth of an API node's allocations
/// per purchase).
fn script_command(script: &Script, keys: &[&str]) -> redis::Cmd {
    let mut command = redis::cmd("EVALSHA");
    command.arg(script.get_hash()).arg(keys.len()).arg(keys);
    command
}
