//! The life of a flash sale: its window, its states, and which admin actions
//! are allowed from which state.
//!
//! Two things decide what shoppers see: what an admin decided (stored in
//! PostgreSQL and mirrored to Redis) and the clock. A sale stored as
//! `scheduled` or `active` is *open*: the window alone says whether it has
//! started or ended. `paused`, `ended` and `cancelled` are admin decisions
//! the clock does not override.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::DomainError;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum SaleState {
    Scheduled,
    Active,
    Paused,
    Ended,
    Cancelled,
}

impl SaleState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(value: &str) -> Option<Self> {
        value.parse().ok()
    }

    /// Ended and cancelled sales never sell again.
    pub fn is_terminal(self) -> bool {
        matches!(self, SaleState::Ended | SaleState::Cancelled)
    }
}

impl TryFrom<String> for SaleState {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or_else(|| format!("unknown sale state {value:?}"))
    }
}

/// What an admin can ask of a sale with `PATCH /api/admin/flash-sales/{id}`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum SaleAction {
    Pause,
    Resume,
    Cancel,
    End,
}

impl SaleAction {
    /// The action's name in the admin audit trail.
    pub fn audit_name(self) -> &'static str {
        match self {
            SaleAction::Pause => "sale.pause",
            SaleAction::Resume => "sale.resume",
            SaleAction::Cancel => "sale.cancel",
            SaleAction::End => "sale.end",
        }
    }
}

/// When a sale sells: `[starts_at, ends_at)`, with `starts_at < ends_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaleWindow {
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
}

impl SaleWindow {
    pub fn new(starts_at: DateTime<Utc>, ends_at: DateTime<Utc>) -> Option<Self> {
        (starts_at < ends_at).then_some(Self { starts_at, ends_at })
    }

    pub fn starts_at(&self) -> DateTime<Utc> {
        self.starts_at
    }

    pub fn ends_at(&self) -> DateTime<Utc> {
        self.ends_at
    }

    /// The state of an open sale at `now`, by the clock alone.
    fn open_state_at(&self, now: DateTime<Utc>) -> SaleState {
        if now < self.starts_at {
            SaleState::Scheduled
        } else if now < self.ends_at {
            SaleState::Active
        } else {
            SaleState::Ended
        }
    }

    /// The state stored for a sale that is (re)opened at `now`: it records
    /// whether it had started, for readers of the table; the clock still rules.
    pub fn opening_state(&self, now: DateTime<Utc>) -> SaleState {
        if now < self.starts_at {
            SaleState::Scheduled
        } else {
            SaleState::Active
        }
    }

    /// What shoppers see at `now` given what is stored.
    pub fn effective_state(&self, stored: SaleState, now: DateTime<Utc>) -> SaleState {
        match stored {
            SaleState::Scheduled | SaleState::Active => self.open_state_at(now),
            decided => decided,
        }
    }

    /// The state to store after `action`, or why it is not allowed. Repeating
    /// an action is allowed and changes nothing, so an admin whose request
    /// timed out can safely retry it.
    pub fn apply(
        &self,
        stored: SaleState,
        action: SaleAction,
        now: DateTime<Utc>,
    ) -> Result<SaleState, DomainError> {
        let state = self.effective_state(stored, now);
        let next = match (action, state) {
            (SaleAction::Pause, s) if !s.is_terminal() => SaleState::Paused,
            (SaleAction::Resume, s) if !s.is_terminal() => self.opening_state(now),
            (SaleAction::Cancel, s) if s != SaleState::Ended => SaleState::Cancelled,
            (SaleAction::End, s) if s != SaleState::Cancelled => SaleState::Ended,
            _ => return Err(DomainError::InvalidTransition { state, action }),
        };
        Ok(next)
    }

    /// A new sale may be created for this window only while it has not
    /// ended: one already over would sell nothing.
    pub fn may_open(&self, now: DateTime<Utc>) -> Result<(), DomainError> {
        if self.ends_at <= now {
            return Err(DomainError::SaleWindowOver {
                ends_at: self.ends_at,
                now,
            });
        }
        Ok(())
    }

    /// Stock can be added while the sale can still sell.
    pub fn can_add_stock(&self, stored: SaleState, now: DateTime<Utc>) -> Result<(), DomainError> {
        let state = self.effective_state(stored, now);
        if state.is_terminal() {
            return Err(DomainError::StockChangeNotAllowed { state });
        }
        Ok(())
    }
}

/// Longest checkout hold, and longest waitlist offer, a sale may give.
pub const MAX_HOLD_SECONDS: i32 = 3600;

/// What a new sale is judged against when it is made: the server's time,
/// and the node's shortest checkout hold (`FLASHSALE_HOLD_MIN_SECS`).
/// Both can have moved since a creation whose answer was lost, so they are
/// judged after a keyed retry's lookup: the retry is answered with the
/// sale it made.
#[derive(Debug, Clone, Copy)]
pub struct OpeningRules {
    pub now: DateTime<Utc>,
    pub hold_min_secs: i32,
}

impl OpeningRules {
    /// Whether a new sale of `window`, with this checkout hold and
    /// waitlist offer, may be made now.
    pub fn admit(
        &self,
        window: &SaleWindow,
        hold_seconds: Option<i32>,
        offer_seconds: Option<i32>,
    ) -> Result<(), DomainError> {
        window.may_open(self.now)?;
        for (field, seconds) in [
            ("hold_seconds", hold_seconds),
            ("offer_seconds", offer_seconds),
        ] {
            let bounds = self.hold_min_secs..=MAX_HOLD_SECONDS;
            if seconds.is_some_and(|seconds| !bounds.contains(&seconds)) {
                return Err(DomainError::HoldOutOfBounds {
                    field,
                    min: self.hold_min_secs,
                });
            }
        }
        Ok(())
    }
}

/// May a shopper holding `held` units buy one more now? Only while the
/// sale is active, has a unit left to reserve, and the shopper is under
/// the per-user limit. `reserve.lua` enforces the same rule on every
/// attempt; tests/records.rs holds the two together.
pub fn may_buy(state: SaleState, remaining: Option<i64>, held: i64, per_user_limit: i64) -> bool {
    state == SaleState::Active && remaining.is_some_and(|left| left > 0) && held < per_user_limit
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn window_around(now: DateTime<Utc>) -> SaleWindow {
        SaleWindow::new(now - Duration::minutes(5), now + Duration::minutes(5)).unwrap()
    }

    #[test]
    fn a_new_sales_holds_are_within_the_nodes_bounds() {
        let now = Utc::now();
        let rules = OpeningRules {
            now,
            hold_min_secs: 60,
        };
        let window = window_around(now);
        let out = |field| {
            Err(DomainError::HoldOutOfBounds {
                field,
                min: rules.hold_min_secs,
            })
        };
        for (hold, offer, judged) in [
            (None, None, Ok(())),
            (Some(60), None, Ok(())),
            (Some(3600), Some(60), Ok(())),
            (Some(59), None, out("hold_seconds")),
            (Some(0), None, out("hold_seconds")),
            (Some(3601), None, out("hold_seconds")),
            (Some(600), Some(59), out("offer_seconds")),
            (Some(600), Some(-1), out("offer_seconds")),
        ] {
            assert_eq!(
                rules.admit(&window, hold, offer),
                judged,
                "{hold:?} {offer:?}"
            );
        }
        let late = OpeningRules {
            now: window.ends_at(),
            ..rules
        };
        assert!(matches!(
            late.admit(&window, Some(600), None),
            Err(DomainError::SaleWindowOver { .. })
        ));
    }

    #[test]
    fn a_sale_opens_for_a_window_until_it_ends() {
        let now = Utc::now();
        let window = window_around(now);
        assert!(window.may_open(now - Duration::minutes(10)).is_ok());
        assert!(window.may_open(now).is_ok());
        assert!(
            window
                .may_open(window.ends_at() - Duration::milliseconds(1))
                .is_ok()
        );
        for late in [window.ends_at(), window.ends_at() + Duration::hours(1)] {
            assert_eq!(
                window.may_open(late),
                Err(DomainError::SaleWindowOver {
                    ends_at: window.ends_at(),
                    now: late
                })
            );
        }
    }

    #[test]
    fn a_window_must_end_after_it_starts() {
        let now = Utc::now();
        assert!(SaleWindow::new(now, now).is_none());
        assert!(SaleWindow::new(now, now - Duration::seconds(1)).is_none());
    }

    #[test]
    fn open_sales_follow_the_clock() {
        let now = Utc::now();
        let window = window_around(now);
        let before = now - Duration::minutes(10);
        let after = now + Duration::minutes(10);
        for stored in [SaleState::Scheduled, SaleState::Active] {
            assert_eq!(window.effective_state(stored, before), SaleState::Scheduled);
            assert_eq!(window.effective_state(stored, now), SaleState::Active);
            assert_eq!(window.effective_state(stored, after), SaleState::Ended);
        }
    }

    #[test]
    fn admin_decisions_override_the_clock() {
        let now = Utc::now();
        let window = window_around(now);
        for stored in [SaleState::Paused, SaleState::Ended, SaleState::Cancelled] {
            assert_eq!(window.effective_state(stored, now), stored);
        }
    }

    #[test]
    fn allowed_transitions_and_their_results() {
        let now = Utc::now();
        let window = window_around(now);
        let table = [
            (
                SaleState::Active,
                SaleAction::Pause,
                Some(SaleState::Paused),
            ),
            (
                SaleState::Paused,
                SaleAction::Pause,
                Some(SaleState::Paused),
            ),
            (
                SaleState::Paused,
                SaleAction::Resume,
                Some(SaleState::Active),
            ),
            (
                SaleState::Active,
                SaleAction::Resume,
                Some(SaleState::Active),
            ),
            (
                SaleState::Active,
                SaleAction::Cancel,
                Some(SaleState::Cancelled),
            ),
            (
                SaleState::Cancelled,
                SaleAction::Cancel,
                Some(SaleState::Cancelled),
            ),
            (SaleState::Paused, SaleAction::End, Some(SaleState::Ended)),
            (SaleState::Ended, SaleAction::End, Some(SaleState::Ended)),
            (SaleState::Ended, SaleAction::Resume, None),
            (SaleState::Ended, SaleAction::Pause, None),
            (SaleState::Ended, SaleAction::Cancel, None),
            (SaleState::Cancelled, SaleAction::Resume, None),
            (SaleState::Cancelled, SaleAction::End, None),
        ];
        for (stored, action, expected) in table {
            let result = window.apply(stored, action, now).ok();
            assert_eq!(result, expected, "{action} from {stored}");
        }
    }

    #[test]
    fn resuming_before_the_start_stores_scheduled() {
        let now = Utc::now();
        let window =
            SaleWindow::new(now + Duration::minutes(1), now + Duration::minutes(2)).unwrap();
        assert_eq!(
            window.apply(SaleState::Paused, SaleAction::Resume, now),
            Ok(SaleState::Scheduled)
        );
    }

    #[test]
    fn a_sale_past_its_window_cannot_be_paused_or_restocked() {
        let now = Utc::now();
        let window =
            SaleWindow::new(now - Duration::minutes(2), now - Duration::minutes(1)).unwrap();
        assert!(
            window
                .apply(SaleState::Active, SaleAction::Pause, now)
                .is_err()
        );
        assert!(window.can_add_stock(SaleState::Active, now).is_err());
        assert!(window.can_add_stock(SaleState::Paused, now).is_ok());
    }

    #[test]
    fn a_shopper_may_buy_only_from_an_active_sale_with_stock_under_the_limit() {
        assert!(may_buy(SaleState::Active, Some(1), 0, 1));
        assert!(!may_buy(SaleState::Active, Some(0), 0, 1), "sold out");
        assert!(!may_buy(SaleState::Active, None, 0, 1), "not armed");
        assert!(!may_buy(SaleState::Active, Some(5), 2, 2), "at the limit");
        for state in [
            SaleState::Scheduled,
            SaleState::Paused,
            SaleState::Ended,
            SaleState::Cancelled,
        ] {
            assert!(!may_buy(state, Some(5), 0, 2), "{state}");
        }
    }
}
