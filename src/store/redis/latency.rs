//! Where the nodes share their purchase latency histograms (`crate::latency`):
//! one hash, node id -> `<published unix ms>|<counts>`, refreshed by each
//! node every couple of seconds; entries of nodes that stopped publishing
//! are dropped when read.

use std::collections::HashMap;

use chrono::Utc;
use uuid::Uuid;

use super::RedisStore;
use crate::{latency, store::StoreError};

/// A node's counts older than this are a stopped node's.
const FRESH_MS: i64 = 30_000;
/// The hash outlives its last writer by this much.
const KEEP_MS: i64 = 60_000;

impl RedisStore {
    fn latency_key(&self) -> String {
        format!("{}:latency:purchase", self.prefix)
    }

    /// Publishes this node's cumulative counts.
    pub async fn publish_latency(&self, node: Uuid, counts: &[u64]) -> Result<(), StoreError> {
        let key = self.latency_key();
        let value = format!(
            "{}|{}",
            Utc::now().timestamp_millis(),
            latency::encode(counts)
        );
        let mut pipe = redis::pipe();
        pipe.hset(&key, node.to_string(), value)
            .ignore()
            .pexpire(&key, KEEP_MS)
            .ignore();
        self.query_pipe(pipe).await
    }

    /// The counts of every node that published within the last 30 s; older
    /// entries are removed.
    pub async fn cluster_latency(&self) -> Result<Vec<Vec<u64>>, StoreError> {
        let key = self.latency_key();
        let entries: HashMap<String, String> = self.query(redis::Cmd::hgetall(&key)).await?;
        let now = Utc::now().timestamp_millis();
        let mut fresh = Vec::new();
        let mut stale = Vec::new();
        for (node, value) in entries {
            let parsed = value
                .split_once('|')
                .and_then(|(at, counts)| Some((at.parse::<i64>().ok()?, latency::decode(counts)?)));
            match parsed {
                Some((at, counts)) if now - at <= FRESH_MS => fresh.push(counts),
                _ => stale.push(node),
            }
        }
        if !stale.is_empty() {
            self.query::<i64>(redis::Cmd::hdel(&key, stale)).await?;
        }
        Ok(fresh)
    }
}
