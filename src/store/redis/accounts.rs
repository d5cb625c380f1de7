//! The accounts channel: an admin's ban or unban, published after it is
//! committed in PostgreSQL, reaches every API node's revocation set within
//! milliseconds (`auth::revocations`). Pub/sub keeps nothing, so nodes load
//! the whole set from PostgreSQL whenever they (re)subscribe.

use redis::{PushInfo, PushKind, Value};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::RedisStore;
use crate::store::{Dependency, StoreError};

/// One user's revocation state after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountChange {
    pub user_id: Uuid,
    pub banned: bool,
    /// Tokens issued before this instant (Unix ms) are void.
    pub tokens_valid_after_ms: Option<i64>,
    /// When the change was committed (the row's `updated_at`, Unix µs): a
    /// node keeps the newest it heard of, whatever order messages and
    /// reloads arrive in.
    pub version: i64,
}

/// What the accounts channel delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountPush {
    Changed(AccountChange),
    /// The channel is (again) subscribed: changes may have been missed.
    Subscribed,
    Disconnected,
}

/// The channel's name for a deployment prefix.
pub fn accounts_channel(prefix: &str) -> String {
    format!("{prefix}:accounts")
}

impl RedisStore {
    /// Tells every node about a committed account change.
    pub async fn publish_account_change(&self, change: &AccountChange) -> Result<(), StoreError> {
        let payload = serde_json::to_string(change)
            .map_err(|error| StoreError::unexpected(Dependency::Redis, error.to_string()))?;
        let mut command = redis::cmd("PUBLISH");
        command.arg(accounts_channel(&self.prefix)).arg(payload);
        self.query::<i64>(command).await.map(drop)
    }
}

/// Reads one push of the accounts subscription.
pub fn parse_account_push(push: &PushInfo) -> Option<AccountPush> {
    match push.kind {
        PushKind::Message => {
            let Some(Value::BulkString(payload)) = push.data.get(1) else {
                return None;
            };
            match serde_json::from_slice(payload) {
                Ok(change) => Some(AccountPush::Changed(change)),
                Err(error) => {
                    tracing::warn!(%error, "unreadable message on the accounts channel");
                    None
                }
            }
        }
        PushKind::Subscribe => Some(AccountPush::Subscribed),
        PushKind::Disconnection => Some(AccountPush::Disconnected),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_change_reads_back() {
        let change = AccountChange {
            user_id: Uuid::now_v7(),
            banned: true,
            tokens_valid_after_ms: Some(1_700_000_000_000),
            version: 1_700_000_000_000_000,
        };
        let push = PushInfo {
            kind: PushKind::Message,
            data: vec![
                Value::BulkString(accounts_channel("fs").into_bytes()),
                Value::BulkString(serde_json::to_vec(&change).unwrap()),
            ],
        };
        assert_eq!(
            parse_account_push(&push),
            Some(AccountPush::Changed(change))
        );
    }
}
