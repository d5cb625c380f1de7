//! Provider tokens this node verified recently. An RS256 or ES256
//! signature costs 40 to 300 µs of CPU (BENCHMARKS.md), a hundred times an
//! HS256 one, and a shopper sends the same token with every request of a
//! sale (the purchase, each status read, the event stream): the verdict is
//! kept per token digest for a short while instead of verified again.
//!
//! Kept: who the token names and when it stops being valid. A kept verdict
//! is used only until the token's own `exp` and for at most [`KEEP_FOR`], so
//! a key the provider withdraws stops working within that bound; bans and
//! voided tokens are checked on every request after this cache, never in it.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use parking_lot::RwLock;

use sha2::{Digest, Sha256};

use super::{local::unix_now, oidc::ProviderCaller};

/// Longest a verdict is reused.
pub const KEEP_FOR: Duration = Duration::from_secs(60);
/// Verdicts kept per node before the memory starts over (about 300 bytes
/// each).
const CAPACITY: usize = 200_000;

struct Verdict {
    caller: ProviderCaller,
    usable_until: Instant,
}

#[derive(Default)]
pub struct VerifiedTokens {
    verdicts: RwLock<HashMap<[u8; 32], Verdict>>,
}

impl VerifiedTokens {
    /// The caller of a token verified within its bounds, if any.
    pub fn get(&self, token: &str) -> Option<ProviderCaller> {
        let verdicts = self.verdicts.read();
        verdicts
            .get(&digest(token))
            .filter(|verdict| Instant::now() < verdict.usable_until)
            .map(|verdict| verdict.caller.clone())
    }

    /// Keeps the verdict of a token just verified, valid until `expires_at`
    /// (its `exp`, Unix seconds).
    pub fn keep(&self, token: &str, caller: &ProviderCaller, expires_at: u64) {
        let left = expires_at.saturating_sub(unix_now());
        let usable_until = Instant::now() + KEEP_FOR.min(Duration::from_secs(left));
        let mut verdicts = self.verdicts.write();
        if verdicts.len() >= CAPACITY {
            let now = Instant::now();
            verdicts.retain(|_, verdict| now < verdict.usable_until);
            if verdicts.len() >= CAPACITY {
                verdicts.clear();
            }
        }
        let verdict = Verdict {
            caller: caller.clone(),
            usable_until,
        };
        verdicts.insert(digest(token), verdict);
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Identity, Role};

    fn caller() -> ProviderCaller {
        ProviderCaller {
            identity: Identity {
                issuer: "https://login.example.com".into(),
                subject: "ann".into(),
            },
            role: Role::Shopper,
            issued_at: Some(1),
            expires_at: unix_now() + 300,
            email: None,
        }
    }

    #[test]
    fn a_verdict_is_reused_for_its_token_only_and_never_past_the_tokens_expiry() {
        let verified = VerifiedTokens::default();
        verified.keep("token-a", &caller(), unix_now() + 300);
        assert_eq!(verified.get("token-a"), Some(caller()));
        assert_eq!(verified.get("token-b"), None);
        verified.keep("expired", &caller(), unix_now() - 1);
        assert_eq!(verified.get("expired"), None);
    }
}
