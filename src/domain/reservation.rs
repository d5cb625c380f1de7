//! A reservation: units taken from a sale's stock for one shopper, waiting
//! to become an order (or to be released).

use serde::{Deserialize, Serialize};

/// How a reservation stands. `pending` ends exactly once, as `confirmed`
/// (an order exists) or as one of the release outcomes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString, strum::Display,
)]
#[strum(serialize_all = "lowercase")]
pub enum ReservationStatus {
    Pending,
    Confirmed,
    Released,
    Expired,
    Failed,
}

impl TryFrom<String> for ReservationStatus {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or_else(|| format!("unknown reservation status {value:?}"))
    }
}

/// What a shopper is told: still waiting, bought, or not bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PurchaseStatus {
    Pending,
    Confirmed,
    Failed,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(value: &str) -> Option<Self> {
        value.parse().ok()
    }

    pub fn for_shopper(self) -> PurchaseStatus {
        match self {
            ReservationStatus::Pending => PurchaseStatus::Pending,
            ReservationStatus::Confirmed => PurchaseStatus::Confirmed,
            ReservationStatus::Released
            | ReservationStatus::Expired
            | ReservationStatus::Failed => PurchaseStatus::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_release_outcome_is_a_failure_for_the_shopper() {
        for status in [
            ReservationStatus::Released,
            ReservationStatus::Expired,
            ReservationStatus::Failed,
        ] {
            assert_eq!(status.for_shopper(), PurchaseStatus::Failed);
            assert_eq!(ReservationStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(
            ReservationStatus::Pending.for_shopper(),
            PurchaseStatus::Pending
        );
        assert_eq!(
            ReservationStatus::Confirmed.for_shopper(),
            PurchaseStatus::Confirmed
        );
    }
}
