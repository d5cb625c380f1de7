//! The provider's users as internal users. A user's id is derived from
//! (issuer, sub) (`Identity::user_id`), so every node computes the same id
//! without asking anyone; the row that orders, bans and the audit trail
//! refer to is written the first time a node sees the user, then
//! remembered, so it costs one database call per user per node.

use std::collections::HashSet;

use parking_lot::RwLock;

use uuid::Uuid;

use super::oidc::ProviderCaller;
use crate::store::{StoreError, postgres::Db};

/// Users remembered per node before the memory starts over; a user seen
/// again after that is written again (an idempotent upsert).
const REMEMBERED_USERS: usize = 1_000_000;

pub struct UserDirectory {
    db: Db,
    known: RwLock<HashSet<Uuid>>,
}

impl UserDirectory {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            known: RwLock::default(),
        }
    }

    /// Writes the provider's user (internal id `user_id`) the first time
    /// this node sees it; returns whether it did.
    pub async fn record(&self, user_id: Uuid, caller: &ProviderCaller) -> Result<bool, StoreError> {
        let known = self.known.read().contains(&user_id);
        if !known {
            self.db
                .upsert_identity(user_id, &caller.identity, caller.email.as_deref())
                .await?;
            let mut known = self.known.write();
            if known.len() >= REMEMBERED_USERS {
                known.clear();
            }
            known.insert(user_id);
        }
        Ok(!known)
    }
}
