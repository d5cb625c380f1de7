//! The per-user request limit of one API node (governor). nginx hashes by
//! Authorization, so all requests with one token meet the same limiter; a
//! user with several sign-ins meets several, which `reserve.lua`'s
//! cluster-wide rate covers.

use std::{num::NonZeroU32, time::Duration};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::keyed::DefaultKeyedStateStore,
};
use uuid::Uuid;

pub struct UserRateLimiter {
    limiter: RateLimiter<Uuid, DefaultKeyedStateStore<Uuid>, DefaultClock>,
    clock: DefaultClock,
}

impl UserRateLimiter {
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        let clock = DefaultClock::default();
        Self {
            limiter: RateLimiter::dashmap_with_clock(
                Quota::per_second(per_second).allow_burst(burst),
                clock.clone(),
            ),
            clock,
        }
    }

    /// `Err(wait)` when the user must wait before the next attempt.
    pub fn check(&self, user_id: Uuid) -> Result<(), Duration> {
        self.limiter
            .check_key(&user_id)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets users whose bucket is full again, so memory follows the
    /// number of recently active users, not every user ever seen.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_past_the_burst_waits_and_others_do_not() {
        let limiter =
            UserRateLimiter::new(NonZeroU32::new(1).unwrap(), NonZeroU32::new(2).unwrap());
        let (busy, other) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(limiter.check(busy).is_ok());
        assert!(limiter.check(busy).is_ok());
        let wait = limiter.check(busy).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limiter.check(other).is_ok());
    }
}
