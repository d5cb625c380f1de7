//! Settling reservations: how one batch of accepted reservations is decided
//! against what PostgreSQL holds (no I/O). The worker reads the ledger and
//! each reservation's facts under the product's lock, asks [`decide`], and
//! writes exactly what it returns, so every reservation ends exactly once
//! (invariant I4) and PostgreSQL never sells a unit it does not have (I1) or
//! more than a shopper's limit (I3).

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::{Quantity, ReservationStatus, SaleState};

/// The sale as PostgreSQL holds it while the batch is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaleLedger {
    pub state: SaleState,
    pub per_user_limit: i64,
    pub allotted: i64,
    pub confirmed: i64,
    /// Units of the product this sale may still take: its unsold units
    /// (`stocks.available_quantity`); once a closed sale's allotment went
    /// back to the product, only the units no sale holds (a reservation
    /// settling that late takes nothing another sale was promised).
    pub available: i64,
}

/// What PostgreSQL already recorded for a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriorOutcome {
    Undecided,
    Confirmed,
    Ended {
        status: ReservationStatus,
        /// `None` when the stored code is not one this build knows.
        reason: Option<FailureReason>,
    },
}

/// One reservation of the batch with the facts the decision needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub reservation_id: Uuid,
    pub user_id: Uuid,
    pub quantity: Quantity,
    pub prior: PriorOutcome,
    pub user_exists: bool,
    /// The user was suspended (banned) before this batch settled.
    pub banned: bool,
    /// Units the user already bought in this sale (`sale_buyers.units`).
    pub units_bought: i64,
    pub idempotency_key: String,
    /// Another reservation of the same shopper and key is already an order.
    pub key_ordered: bool,
}

/// Why a reservation can never become an order. The code is what Redis
/// records and PostgreSQL stores (`purchase_attempts.reason`); the message
/// is only ever shown, never read back, so rewording it changes nothing.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::EnumIter,
)]
#[strum(serialize_all = "snake_case")]
pub enum FailureReason {
    SaleCancelled,
    UserGone,
    Banned,
    LimitReached,
    NoStock,
    /// The key was already used for an order (a retry Redis could not
    /// recognise after losing data): the key is one purchase.
    KeyAlreadyOrdered,
}

impl FailureReason {
    /// Every reason.
    pub fn all() -> impl Iterator<Item = Self> {
        <Self as strum::IntoEnumIterator>::iter()
    }

    /// The stable code: stored, published, labelled in metrics.
    pub fn code(self) -> &'static str {
        self.into()
    }

    pub fn from_code(code: &str) -> Option<Self> {
        code.parse().ok()
    }

    /// What the shopper reads in their purchase status.
    pub fn message(self) -> &'static str {
        match self {
            FailureReason::SaleCancelled => "the sale was cancelled before the order was committed",
            FailureReason::UserGone => "the account no longer exists",
            FailureReason::Banned => {
                "the account was suspended by the shop before the order was committed"
            }
            FailureReason::LimitReached => "the per-user limit of this sale was already reached",
            FailureReason::NoStock => "no unit was left in stock for this reservation",
            FailureReason::KeyAlreadyOrdered => {
                "this Idempotency-Key already made an order in this sale; that order is the purchase"
            }
        }
    }

    /// Whether the reserved units exist in PostgreSQL and may be sold
    /// again. With `NoStock` only the part that still fits does.
    pub fn units_exist(self) -> bool {
        self != FailureReason::NoStock
    }
}

/// What to do with one reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Insert its order now.
    Commit,
    /// Its order exists (a redelivered job): only Redis may need telling.
    AlreadyConfirmed,
    /// It can never succeed: record the failure and release it, putting
    /// `restock` of its units back on sale; the rest never existed in
    /// PostgreSQL (Redis had counted them) and are written off.
    Fail { reason: FailureReason, restock: i64 },
    /// A failure PostgreSQL recorded earlier: release it again (idempotent).
    AlreadyEnded {
        status: ReservationStatus,
        reason: Option<FailureReason>,
    },
}

impl Decision {
    fn fail(reason: FailureReason, quantity: Quantity) -> Self {
        let restock = if reason.units_exist() {
            quantity.units()
        } else {
            0
        };
        Decision::Fail { reason, restock }
    }
}

/// Decides a batch in order (oldest reservation first, as the caller sorts
/// it). Units committed earlier in the batch count against later ones.
///
/// A reservation that does not fit fails as a whole (a shopper asked for
/// all its units), but whatever room the sale still has once the batch's
/// commits are counted goes back on sale through those failures, oldest
/// first, instead of being written off with them.
pub fn decide(ledger: &SaleLedger, candidates: &[Candidate]) -> Vec<Decision> {
    let mut room = (ledger.allotted - ledger.confirmed).min(ledger.available);
    let mut bought: HashMap<Uuid, i64> = HashMap::new();
    let mut keys_committed: HashSet<(Uuid, &str)> = HashSet::new();
    let mut reservations_committed: HashSet<Uuid> = HashSet::new();
    let mut decisions: Vec<Decision> = candidates
        .iter()
        .map(|candidate| {
            // A reservation given twice was decided the first time: failing
            // the repeat (its key is taken) would put a sold unit back on sale.
            if reservations_committed.contains(&candidate.reservation_id) {
                return Decision::AlreadyConfirmed;
            }
            match &candidate.prior {
                PriorOutcome::Confirmed => return Decision::AlreadyConfirmed,
                PriorOutcome::Ended { status, reason } => {
                    return Decision::AlreadyEnded {
                        status: *status,
                        reason: *reason,
                    };
                }
                PriorOutcome::Undecided => {}
            }
            let units = bought
                .entry(candidate.user_id)
                .or_insert(candidate.units_bought);
            let failure = if ledger.state == SaleState::Cancelled {
                Some(FailureReason::SaleCancelled)
            } else if !candidate.user_exists {
                Some(FailureReason::UserGone)
            } else if candidate.banned {
                Some(FailureReason::Banned)
            } else if candidate.key_ordered
                || keys_committed.contains(&(candidate.user_id, candidate.idempotency_key.as_str()))
            {
                Some(FailureReason::KeyAlreadyOrdered)
            } else if *units + candidate.quantity.units() > ledger.per_user_limit {
                Some(FailureReason::LimitReached)
            } else if candidate.quantity.units() > room {
                Some(FailureReason::NoStock)
            } else {
                None
            };
            match failure {
                Some(reason) => Decision::fail(reason, candidate.quantity),
                None => {
                    *units += candidate.quantity.units();
                    room -= candidate.quantity.units();
                    keys_committed.insert((candidate.user_id, candidate.idempotency_key.as_str()));
                    reservations_committed.insert(candidate.reservation_id);
                    Decision::Commit
                }
            }
        })
        .collect();
    for (decision, candidate) in decisions.iter_mut().zip(candidates) {
        if let Decision::Fail {
            reason: FailureReason::NoStock,
            restock,
        } = decision
        {
            *restock = candidate.quantity.units().min(room.max(0));
            room -= *restock;
        }
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(allotted: i64, confirmed: i64, available: i64) -> SaleLedger {
        SaleLedger {
            state: SaleState::Active,
            per_user_limit: 2,
            allotted,
            confirmed,
            available,
        }
    }

    fn candidate(user_id: Uuid, quantity: i64) -> Candidate {
        Candidate {
            reservation_id: Uuid::now_v7(),
            user_id,
            quantity: Quantity::new(quantity).unwrap(),
            prior: PriorOutcome::Undecided,
            user_exists: true,
            banned: false,
            units_bought: 0,
            idempotency_key: format!("key-{}", Uuid::now_v7().simple()),
            key_ordered: false,
        }
    }

    #[test]
    fn reservations_commit_while_the_sale_and_the_product_have_units() {
        let batch = [
            candidate(Uuid::now_v7(), 2),
            candidate(Uuid::now_v7(), 1),
            candidate(Uuid::now_v7(), 1),
        ];
        // Three units left in the sale, but only two of the product.
        let decisions = decide(&ledger(10, 7, 3), &batch);
        assert_eq!(
            decisions,
            [
                Decision::Commit,
                Decision::Commit,
                Decision::Fail {
                    reason: FailureReason::NoStock,
                    restock: 0
                }
            ]
        );
        let decisions = decide(&ledger(10, 8, 100), &batch);
        assert_eq!(
            decisions,
            [
                Decision::Commit,
                Decision::Fail {
                    reason: FailureReason::NoStock,
                    restock: 0
                },
                Decision::Fail {
                    reason: FailureReason::NoStock,
                    restock: 0
                }
            ]
        );
    }

    #[test]
    fn the_per_user_limit_counts_earlier_purchases_and_the_batch_itself() {
        let user = Uuid::now_v7();
        let mut earlier = candidate(user, 1);
        earlier.units_bought = 1;
        let mut same_user_again = candidate(user, 1);
        same_user_again.units_bought = 1;
        let decisions = decide(&ledger(10, 0, 10), &[earlier, same_user_again]);
        assert_eq!(
            decisions,
            [
                Decision::Commit,
                Decision::Fail {
                    reason: FailureReason::LimitReached,
                    restock: 1
                }
            ]
        );
    }

    #[test]
    fn decided_reservations_keep_their_first_outcome() {
        let mut confirmed = candidate(Uuid::now_v7(), 1);
        confirmed.prior = PriorOutcome::Confirmed;
        let mut failed = candidate(Uuid::now_v7(), 1);
        failed.prior = PriorOutcome::Ended {
            status: ReservationStatus::Failed,
            reason: Some(FailureReason::NoStock),
        };
        let mut cancelled = ledger(10, 0, 10);
        cancelled.state = SaleState::Cancelled;
        assert_eq!(
            decide(&cancelled, &[confirmed, failed]),
            [
                Decision::AlreadyConfirmed,
                Decision::AlreadyEnded {
                    status: ReservationStatus::Failed,
                    reason: Some(FailureReason::NoStock)
                }
            ]
        );
    }

    #[test]
    fn cancelled_sales_and_removed_users_fail_for_good() {
        let mut gone = candidate(Uuid::now_v7(), 1);
        gone.user_exists = false;
        let present = candidate(Uuid::now_v7(), 1);
        assert_eq!(
            decide(&ledger(10, 0, 10), &[gone.clone(), present.clone()]),
            [
                Decision::Fail {
                    reason: FailureReason::UserGone,
                    restock: 1
                },
                Decision::Commit
            ]
        );
        let mut cancelled = ledger(10, 0, 10);
        cancelled.state = SaleState::Cancelled;
        assert_eq!(
            decide(&cancelled, &[present]),
            [Decision::Fail {
                reason: FailureReason::SaleCancelled,
                restock: 1
            }]
        );
    }

    #[test]
    fn a_banned_users_reservation_fails_and_its_unit_goes_back_to_sale() {
        let mut banned = candidate(Uuid::now_v7(), 1);
        banned.banned = true;
        let other = candidate(Uuid::now_v7(), 1);
        assert_eq!(
            decide(&ledger(1, 0, 1), &[banned, other]),
            [
                Decision::Fail {
                    reason: FailureReason::Banned,
                    restock: 1
                },
                Decision::Commit
            ]
        );
        assert!(FailureReason::Banned.units_exist());
    }

    #[test]
    fn a_reservation_too_big_for_the_room_left_fails_but_the_room_goes_back_on_sale() {
        // Redis accepted 2 units where PostgreSQL has 1 (it had counted a
        // unit that does not exist): the reservation fails, 1 unit goes
        // back on sale and 1 is written off.
        let decisions = decide(&ledger(10, 9, 100), &[candidate(Uuid::now_v7(), 2)]);
        assert_eq!(
            decisions,
            [Decision::Fail {
                reason: FailureReason::NoStock,
                restock: 1
            }]
        );
        // Commits later in the batch are served first; only what is left
        // over goes back through the failure.
        let decisions = decide(
            &ledger(10, 7, 100),
            &[candidate(Uuid::now_v7(), 2), candidate(Uuid::now_v7(), 2)],
        );
        assert_eq!(
            decisions,
            [
                Decision::Commit,
                Decision::Fail {
                    reason: FailureReason::NoStock,
                    restock: 1
                }
            ]
        );
    }

    #[test]
    fn a_key_is_one_order_whether_the_order_exists_or_commits_in_this_batch() {
        let user = Uuid::now_v7();
        let mut already = candidate(user, 1);
        already.key_ordered = true;
        let first = candidate(user, 1);
        let mut retry = candidate(user, 1);
        retry.idempotency_key = first.idempotency_key.clone();
        let key_reused = Decision::Fail {
            reason: FailureReason::KeyAlreadyOrdered,
            restock: 1,
        };
        assert_eq!(
            decide(&ledger(10, 0, 10), &[already, first, retry]),
            [key_reused.clone(), Decision::Commit, key_reused]
        );
    }

    #[test]
    fn failure_codes_round_trip_and_only_missing_stock_is_written_off() {
        for reason in FailureReason::all() {
            assert_eq!(FailureReason::from_code(reason.code()), Some(reason));
            assert!(!reason.code().contains('|'));
            assert_eq!(reason.units_exist(), reason != FailureReason::NoStock);
        }
        assert_eq!(
            FailureReason::from_code(FailureReason::NoStock.message()),
            None
        );
        // Stored in PostgreSQL and Redis records: renaming one is a migration.
        let codes: Vec<&str> = FailureReason::all().map(FailureReason::code).collect();
        assert_eq!(
            codes,
            [
                "sale_cancelled",
                "user_gone",
                "banned",
                "limit_reached",
                "no_stock",
                "key_already_ordered"
            ]
        );
    }
}
