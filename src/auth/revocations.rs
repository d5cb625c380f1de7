//! Bans and voided tokens, known to every node without a per-request
//! lookup. PostgreSQL holds them (`users.banned_at`,
//! `users.tokens_valid_after`); each node loads the whole (small) set at
//! start, applies every change an admin publishes on the accounts channel
//! the moment it arrives, loads again whenever that channel is
//! (re)subscribed — anything published while the node was cut off is then
//! caught up — and every [`RELOAD_EVERY`] in case a publish was lost.
//! Every change carries its commit time as a version and a node keeps the
//! newest it heard of, so a late message or a reload read before a change
//! never undoes it. Until the first load a node refuses tokens (503): it
//! cannot tell a banned user from anyone else.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use parking_lot::RwLock;

use redis::PushInfo;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::TokenError;
use crate::store::{
    postgres::Db,
    redis::{AccountChange, AccountPush, EventSubscriber, parse_account_push},
};

/// Safety net for a change published while no node listened.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);
/// How soon a lost subscription is asked for again.
const RESUBSCRIBE_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Revocations {
    /// By user: the newest change heard of. Never shrinks: an unban keeps
    /// the user's void-before instant.
    users: RwLock<HashMap<Uuid, AccountChange>>,
    loaded: AtomicBool,
}

impl Revocations {
    /// Refuses a banned user's every token and a token issued (`iat`, Unix
    /// seconds) before the user's tokens were voided.
    pub fn check(&self, user_id: Uuid, issued_at: Option<u64>) -> Result<(), TokenError> {
        let users = self.users.read();
        let Some(revocation) = users.get(&user_id) else {
            return Ok(());
        };
        if revocation.banned {
            return Err(TokenError::Suspended);
        }
        let issued_ms =
            issued_at.and_then(|seconds| i64::try_from(seconds.saturating_mul(1000)).ok());
        match (revocation.tokens_valid_after_ms, issued_ms) {
            (Some(valid_after), Some(issued)) if issued >= valid_after => Ok(()),
            (Some(_), _) => Err(TokenError::Revoked),
            (None, _) => Ok(()),
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Applies one change (from the channel, from this node's own ban, or
    /// from a reload) unless a newer one of the user was already applied.
    pub fn apply(&self, change: &AccountChange) {
        let mut users = self.users.write();
        Self::keep_newest(&mut users, change);
    }

    fn keep_newest(users: &mut HashMap<Uuid, AccountChange>, change: &AccountChange) {
        let newer = users
            .get(&change.user_id)
            .is_none_or(|known| known.version < change.version);
        if newer {
            users.insert(change.user_id, *change);
        }
    }

    /// Merges in what PostgreSQL holds.
    pub async fn reload(&self, db: &Db) -> bool {
        match db.revoked_users().await {
            Ok(rows) => {
                let mut users = self.users.write();
                for change in &rows {
                    Self::keep_newest(&mut users, change);
                }
                self.loaded.store(true, Ordering::Release);
                true
            }
            Err(error) => {
                tracing::warn!(%error, "could not load revoked accounts; keeping the last ones");
                false
            }
        }
    }
}

/// Keeps a node's set current until `shutdown`: subscribes the accounts
/// channel (again after every loss), applies each change, and reloads
/// from PostgreSQL on every (re)subscription and every [`RELOAD_EVERY`].
pub async fn watch(
    revocations: Arc<Revocations>,
    db: Db,
    subscriber: EventSubscriber,
    mut inbox: mpsc::Receiver<PushInfo>,
    shutdown: CancellationToken,
) {
    let mut resubscribe_at = Some(tokio::time::Instant::now());
    let mut reload_at = tokio::time::Instant::now();
    loop {
        let resubscribe = async {
            match resubscribe_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = resubscribe => {
                resubscribe_at = match subscriber.subscribe_accounts().await {
                    Ok(()) => None,
                    Err(error) => {
                        tracing::debug!(%error, "accounts channel: subscribing failed; retrying");
                        Some(tokio::time::Instant::now() + RESUBSCRIBE_EVERY)
                    }
                };
            }
            () = tokio::time::sleep_until(reload_at) => {
                // A node that could not load yet refuses every token: it
                // tries again every second until PostgreSQL answers.
                let wait = if revocations.reload(&db).await { RELOAD_EVERY } else { RESUBSCRIBE_EVERY };
                reload_at = tokio::time::Instant::now() + wait;
            }
            push = inbox.recv() => {
                let Some(push) = push else { return };
                match parse_account_push(&push) {
                    Some(AccountPush::Changed(change)) => revocations.apply(&change),
                    Some(AccountPush::Subscribed) => { revocations.reload(&db).await; }
                    Some(AccountPush::Disconnected) => {
                        tracing::warn!("accounts channel lost; subscribing again");
                        resubscribe_at = Some(tokio::time::Instant::now() + RESUBSCRIBE_EVERY);
                    }
                    None => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(user_id: Uuid, banned: bool, version: i64) -> AccountChange {
        AccountChange {
            user_id,
            banned,
            tokens_valid_after_ms: Some(10_000),
            version,
        }
    }

    #[test]
    fn a_banned_user_is_suspended_and_old_tokens_stay_void_after_the_unban() {
        let revocations = Revocations::default();
        let (ann, bob) = (Uuid::now_v7(), Uuid::now_v7());
        revocations.apply(&change(ann, true, 1));
        assert!(matches!(
            revocations.check(ann, Some(20)),
            Err(TokenError::Suspended)
        ));
        assert!(revocations.check(bob, Some(1)).is_ok());
        revocations.apply(&change(ann, false, 2));
        assert!(matches!(
            revocations.check(ann, Some(9)),
            Err(TokenError::Revoked)
        ));
        assert!(matches!(
            revocations.check(ann, None),
            Err(TokenError::Revoked)
        ));
        assert!(revocations.check(ann, Some(10)).is_ok());
    }

    #[test]
    fn a_late_message_never_undoes_a_newer_change() {
        let revocations = Revocations::default();
        let ann = Uuid::now_v7();
        // Banned at version 3; the unban of version 2 arrives afterwards.
        revocations.apply(&change(ann, true, 3));
        revocations.apply(&change(ann, false, 2));
        assert!(matches!(
            revocations.check(ann, Some(20)),
            Err(TokenError::Suspended)
        ));
    }
}
