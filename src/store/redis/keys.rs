//! The Redis key layout. Every key of one sale carries the hash tag
//! `{sale:<id>}`, so a Lua script touching a sale touches one Redis Cluster
//! slot; the deployment prefix in front lets deployments and tests share a
//! Redis.

use uuid::Uuid;

/// The keys of one sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleKeys {
    /// Units left to reserve (an integer counter).
    pub stock: String,
    /// Hash mirroring the sale from PostgreSQL: state, window (ms), price,
    /// per-user limit and the allotment Redis stock was built from.
    pub meta: String,
}

impl SaleKeys {
    pub fn new(prefix: &str, sale_id: Uuid) -> Self {
        let tag = format!("{prefix}:{{sale:{sale_id}}}");
        Self {
            stock: format!("{tag}:stock"),
            meta: format!("{tag}:meta"),
        }
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
        assert_eq!(hash_tag(&keys.stock), expected);
        assert_eq!(hash_tag(&keys.meta), expected);
        assert!(keys.stock.starts_with("fs:"));
    }
}
