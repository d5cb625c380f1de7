//! The Redis key layout. Every key of one sale carries the hash tag
//! `{sale:<id>}`, so a Lua script touching a sale touches one Redis Cluster
//! slot; the deployment prefix in front lets deployments and tests share a
//! Redis.

use std::{collections::HashMap, sync::Arc};

use parking_lot::RwLock;
use uuid::Uuid;

/// The keys of one sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleKeys {
    /// Hash mirroring the sale from PostgreSQL: state, window (ms), price,
    /// per-user limit and the allotment Redis stock was built from; and
    /// `stock`, the units left to reserve (read with the rest in one call).
    pub meta: String,
    /// Hash user id -> units the user holds (pending + confirmed).
    pub buyers: String,
    /// Hash reservation id -> `user|quantity|status|reserved_ms|idempotency_key|reason`.
    pub reservations: String,
    /// Sorted set of pending reservation ids, scored by reservation time (ms).
    pub pending: String,
    /// Hash of what the sale knows per shopper, read and written in one
    /// call each by `reserve.lua`: `<user>:<key>` -> `reservation|quantity`
    /// (the first answer per idempotency key), `<user>|latest` ->
    /// `<latest reservation>|<next attempt due>`: the user's latest
    /// reservation, and when their next attempt is due (GCRA, µs: the
    /// per-user attempt limit across nodes); either part may be empty
    /// (`encode_latest` in `scripts/record.lua`, `parse_latest` in `purchase.rs`).
    pub shoppers: String,
    /// Hash of counters: attempts, accepted, rejected by reason, ...
    pub stats: String,
    /// Pub/sub channel of the sale's events (each settled purchase).
    pub events: String,
    /// `<prefix>:{sale:<id>}`, the front of every key above.
    tag: String,
}

/// Sales whose keys a process keeps built at most: more than any node
/// serves at once. Sale ids come from requests, so the cache is bounded: it
/// starts over when full (building keys again is cheap, just not free).
const CACHED_SALES: usize = 1024;

/// The keys of the sales a process works on, built once per sale: every
/// purchase names its sale's keys, and building them is eight formatted
/// strings (a tenth of an API node's allocations per purchase).
pub(super) struct SaleKeysCache {
    prefix: Arc<str>,
    sales: RwLock<HashMap<Uuid, Arc<SaleKeys>>>,
}

impl SaleKeysCache {
    pub(super) fn new(prefix: Arc<str>) -> Self {
        Self {
            prefix,
            sales: RwLock::default(),
        }
    }

    pub(super) fn get(&self, sale_id: Uuid) -> Arc<SaleKeys> {
        if let Some(keys) = self.sales.read().get(&sale_id) {
            return Arc::clone(keys);
        }
        let keys = Arc::new(SaleKeys::new(&self.prefix, sale_id));
        let mut sales = self.sales.write();
        if sales.len() >= CACHED_SALES {
            sales.clear();
        }
        sales.insert(sale_id, Arc::clone(&keys));
        keys
    }
}

impl SaleKeys {
    pub fn new(prefix: &str, sale_id: Uuid) -> Self {
        let tag = format!("{prefix}:{{sale:{sale_id}}}");
        Self {
            meta: format!("{tag}:meta"),
            buyers: format!("{tag}:buyers"),
            reservations: format!("{tag}:reservations"),
            pending: format!("{tag}:pending"),
            shoppers: format!("{tag}:shoppers"),
            stats: format!("{tag}:stats"),
            events: format!("{tag}:events"),
            tag,
        }
    }

    /// Every key that stores the sale's data (all but the events channel
    /// and arming's short-lived staging hashes).
    pub fn stored(&self) -> [&str; 6] {
        [
            &self.meta,
            &self.buyers,
            &self.reservations,
            &self.pending,
            &self.shoppers,
            &self.stats,
        ]
    }

    /// Keys of the layout before issue 19 (the stock counter, then the
    /// replay records, latest reservations and rates in hashes of their
    /// own): archiving a sale armed by an older build unlinks them too.
    pub fn legacy(&self) -> [String; 4] {
        ["stock", "idempotency", "latest", "rate"].map(|name| format!("{}:{name}", self.tag))
    }

    /// The field of [`Self::shoppers`] holding the user's latest reservation.
    pub fn latest_field(user_id: Uuid) -> String {
        format!("{user_id}|latest")
    }

    /// A hash arming writes buyers into before swapping it in (one per
    /// arming attempt, so concurrent attempts never mix their chunks).
    pub fn staging(&self, attempt: Uuid) -> String {
        format!("{}:staging:{}", self.tag, attempt.simple())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis Cluster hashes only the text between the first `{` and the next `}`.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = open + key[open..].find('}').unwrap();
        &key[open + 1..close]
    }

    #[test]
    fn every_key_of_a_sale_shares_one_hash_tag() {
        let sale = Uuid::now_v7();
        let keys = SaleKeys::new("fs", sale);
        let expected = format!("sale:{sale}");
        let staging = keys.staging(Uuid::now_v7());
        let others = [keys.events.as_str(), staging.as_str()];
        for key in keys.stored().into_iter().chain(others) {
            assert_eq!(hash_tag(key), expected, "{key}");
        }
        assert!(keys.meta.starts_with("fs:"));
    }

    #[test]
    fn the_cache_builds_the_keys_of_a_sale_once_and_stays_bounded() {
        let cache = SaleKeysCache::new("fs".into());
        let sale = Uuid::now_v7();
        let first = cache.get(sale);
        assert_eq!(*first, SaleKeys::new("fs", sale));
        assert!(Arc::ptr_eq(&first, &cache.get(sale)), "built again");
        for _ in 0..CACHED_SALES {
            cache.get(Uuid::now_v7());
        }
        assert!(cache.sales.read().len() <= CACHED_SALES);
        assert_eq!(*cache.get(sale), SaleKeys::new("fs", sale));
    }
}
