//! The worker's upkeep of apalis's own keys, which apalis-redis 1.0 has no
//! API for: promoting due jobs in bounded steps, forgetting finished jobs,
//! dropping dead jobs beyond a number kept. Every script here writes
//! apalis-redis's private layout (the key names come from its `Config`; the
//! metadata key `<job_meta_hash>:<id>` is built inside the scripts), so the
//! layout is pinned by `tests/queue.rs` to the apalis-redis version in
//! `Cargo.lock`: an upgrade fails that test until the scripts are checked.
//!
//! Each call does a bounded amount of work (one chunk of jobs), so a large
//! backlog never blocks Redis for long; callers loop.

use redis::Script;

use super::PurchaseQueue;
use crate::store::{Dependency, StoreError, bounded};

/// The apalis-redis version the scripts were written against.
pub const APALIS_REDIS_VERSION: &str = "1.0.0";

/// Jobs one script call moves or removes at most; far below the ~8000
/// elements Lua's `unpack` accepts.
pub const CHUNK: usize = 1000;

/// The upkeep scripts, loaded once per queue handle (EVALSHA, EVAL on
/// NOSCRIPT), as `RedisStore` loads its own.
pub(super) struct Scripts {
    promote_due: Script,
    vacuum_done: Script,
    trim_dead: Script,
}

impl Scripts {
    pub(super) fn load() -> Self {
        Self {
            promote_due: Script::new(include_str!("scripts/promote_due.lua")),
            vacuum_done: Script::new(include_str!("scripts/vacuum_done.lua")),
            trim_dead: Script::new(include_str!("scripts/trim_dead.lua")),
        }
    }
}

impl PurchaseQueue {
    /// Moves due jobs from apalis's scheduled set to its active list, one
    /// chunk per script call, until none is due or `max_calls` calls were
    /// made (see `scripts/promote_due.lua` for why); returns how many.
    pub async fn promote_due(&self, max_calls: usize) -> Result<u64, StoreError> {
        let mut promoted = 0;
        for _ in 0..max_calls {
            let moved = self.promote_due_chunk().await?;
            promoted += moved;
            if moved < CHUNK as u64 {
                break;
            }
        }
        Ok(promoted)
    }

    async fn promote_due_chunk(&self) -> Result<u64, StoreError> {
        let (config, mut connection) = self.raw();
        let mut invocation = self.upkeep.promote_due.prepare_invoke();
        invocation
            .key(config.scheduled_jobs_set())
            .key(config.active_jobs_list())
            .key(config.signal_list())
            .arg(CHUNK);
        bounded(Dependency::Redis, self.timeout, async move {
            invocation.invoke_async(&mut connection).await
        })
        .await
    }

    /// Forgets up to `limit` finished jobs (see `scripts/vacuum_done.lua`);
    /// returns how many.
    pub async fn vacuum_done(&self, limit: usize) -> Result<u64, StoreError> {
        let (config, mut connection) = self.raw();
        let mut invocation = self.upkeep.vacuum_done.prepare_invoke();
        invocation
            .key(config.done_jobs_set())
            .key(config.job_data_hash())
            .arg(config.job_meta_hash())
            .arg(limit);
        bounded(Dependency::Redis, self.timeout, async move {
            invocation.invoke_async(&mut connection).await
        })
        .await
    }

    /// Drops dead jobs beyond `keep`, at most `limit` per call (see
    /// `scripts/trim_dead.lua`); returns how many.
    pub async fn trim_dead(&self, keep: usize, limit: usize) -> Result<u64, StoreError> {
        let (config, mut connection) = self.raw();
        let mut invocation = self.upkeep.trim_dead.prepare_invoke();
        invocation
            .key(config.dead_jobs_set())
            .key(config.job_data_hash())
            .arg(config.job_meta_hash())
            .arg(keep)
            .arg(limit);
        bounded(Dependency::Redis, self.timeout, async move {
            invocation.invoke_async(&mut connection).await
        })
        .await
    }
}
