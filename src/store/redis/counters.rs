//! The names of a sale's counters (its `stats` hash), one enum for the
//! Rust side; the Lua scripts write the same names, and a test below reads
//! every script to check that each name they write is one of these (a typo
//! would otherwise read 0 forever).

use crate::domain::ReservationStatus;

/// One field of a sale's `stats` hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Reservations accepted (`reserve.lua`).
    Accepted,
    /// Repeated requests answered from their idempotency record.
    Replayed,
    RejectedKeyReused,
    RejectedRateLimited,
    RejectedNotActive,
    RejectedAboveLimit,
    /// Refused: the shopper would go past the per-user limit.
    RejectedLimit,
    RejectedSoldOut,
    /// Units of reservations still pending (a gauge). The units reserved
    /// are not counted apart: nothing read them, and the accepted path
    /// saves the write (issue 19).
    PendingUnits,
    /// Reservations confirmed, and their units (`confirm.lua`).
    Confirmed,
    UnitsConfirmed,
    /// Reservations ended without an order, by outcome (`release.lua`).
    Released,
    Expired,
    Failed,
    UnitsReleased,
    UnitsWrittenOff,
    /// Checkout holds that ended without a payment, and the units that went
    /// back on sale (`return_held.lua`).
    HoldsExpired,
    HoldsCancelled,
    UnitsReturned,
    /// Written by the worker and the reconciler from Rust.
    DeadLettered,
    Drift,
    DriftCheckedAtMs,
}

impl Counter {
    pub const ALL: [Counter; 22] = [
        Counter::Accepted,
        Counter::Replayed,
        Counter::RejectedKeyReused,
        Counter::RejectedRateLimited,
        Counter::RejectedNotActive,
        Counter::RejectedAboveLimit,
        Counter::RejectedLimit,
        Counter::RejectedSoldOut,
        Counter::PendingUnits,
        Counter::Confirmed,
        Counter::UnitsConfirmed,
        Counter::Released,
        Counter::Expired,
        Counter::Failed,
        Counter::UnitsReleased,
        Counter::UnitsWrittenOff,
        Counter::HoldsExpired,
        Counter::HoldsCancelled,
        Counter::UnitsReturned,
        Counter::DeadLettered,
        Counter::Drift,
        Counter::DriftCheckedAtMs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::Accepted => "accepted",
            Counter::Replayed => "replayed",
            Counter::RejectedKeyReused => "rejected_key_reused",
            Counter::RejectedRateLimited => "rejected_rate_limited",
            Counter::RejectedNotActive => "rejected_not_active",
            Counter::RejectedAboveLimit => "rejected_above_limit",
            Counter::RejectedLimit => "rejected_limit",
            Counter::RejectedSoldOut => "rejected_sold_out",
            Counter::PendingUnits => "pending_units",
            Counter::Confirmed => "confirmed",
            Counter::UnitsConfirmed => "units_confirmed",
            Counter::Released => "released",
            Counter::Expired => "expired",
            Counter::Failed => "failed",
            Counter::UnitsReleased => "units_released",
            Counter::UnitsWrittenOff => "units_written_off",
            Counter::HoldsExpired => "holds_expired",
            Counter::HoldsCancelled => "holds_cancelled",
            Counter::UnitsReturned => "units_returned",
            Counter::DeadLettered => "dead_lettered",
            Counter::Drift => "drift",
            Counter::DriftCheckedAtMs => "drift_checked_at_ms",
        }
    }

    /// The counter `release.lua` adds one to for a reservation ending with
    /// `outcome` (it writes the outcome's name), if there is one.
    pub fn for_release(outcome: ReservationStatus) -> Option<Counter> {
        match outcome {
            ReservationStatus::Released => Some(Counter::Released),
            ReservationStatus::Expired => Some(Counter::Expired),
            ReservationStatus::Failed => Some(Counter::Failed),
            ReservationStatus::Pending | ReservationStatus::Confirmed => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const SCRIPTS: [(&str, &str); 6] = [
        ("reserve.lua", include_str!("scripts/reserve.lua")),
        ("confirm.lua", include_str!("scripts/confirm.lua")),
        ("release.lua", include_str!("scripts/release.lua")),
        ("arm_sale.lua", include_str!("scripts/arm_sale.lua")),
        ("return_held.lua", include_str!("scripts/return_held.lua")),
        (
            "restore_orders.lua",
            include_str!("scripts/restore_orders.lua"),
        ),
    ];

    /// The literal names a script writes into the stats hash: `count('x')`
    /// in reserve.lua, and `HINCRBY`/`HSET` on the stats key elsewhere.
    fn names_written(script: &str, stats_key: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let patterns = [
            "count('".to_string(),
            "refuse('".to_string(),
            format!("redis.call('HINCRBY', {stats_key}, '"),
            format!("redis.call('HSET', {stats_key}, '"),
        ];
        for pattern in &patterns {
            for (start, _) in script.match_indices(pattern.as_str()) {
                let rest = &script[start + pattern.len()..];
                let end = rest.find('\'').expect("a closing quote");
                names.insert(rest[..end].to_string());
            }
        }
        names
    }

    #[test]
    fn every_counter_a_script_writes_is_a_known_counter_and_each_is_written() {
        let known: BTreeSet<&str> = Counter::ALL.iter().map(|counter| counter.name()).collect();
        let stats_key = |script: &str| match script {
            "reserve.lua" => "KEYS[6]",
            "confirm.lua" => "KEYS[3]",
            "release.lua" => "KEYS[5]",
            "arm_sale.lua" => "KEYS[5]",
            "return_held.lua" => "KEYS[4]",
            _ => "KEYS[0]",
        };
        let mut written = BTreeSet::new();
        for (name, script) in SCRIPTS {
            for counter in names_written(script, stats_key(name)) {
                assert!(
                    known.contains(counter.as_str()),
                    "{name} writes {counter:?}, which no Counter names"
                );
                written.insert(counter);
            }
        }
        // release.lua writes the outcome's name; the Rust side writes these.
        let from_elsewhere = [
            Counter::Released,
            Counter::Expired,
            Counter::Failed,
            Counter::DeadLettered,
            Counter::Drift,
            Counter::DriftCheckedAtMs,
        ];
        for counter in Counter::ALL {
            assert!(
                written.contains(counter.name()) || from_elsewhere.contains(&counter),
                "nothing writes {counter:?}"
            );
        }
        for outcome in [
            ReservationStatus::Released,
            ReservationStatus::Expired,
            ReservationStatus::Failed,
        ] {
            assert_eq!(
                Counter::for_release(outcome).map(Counter::name),
                Some(outcome.as_str()),
                "release.lua counts {outcome:?} under its status name"
            );
        }
    }
}
