//! Units in one purchase: one type from the request to the database, so a
//! count is checked once and never cast (or saturated) on its way.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A whole number of units, 1 to [`Quantity::MAX`].
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(try_from = "i64", into = "i64")]
#[schema(value_type = i64, minimum = 1, maximum = 1000)]
pub struct Quantity(i32);

impl Quantity {
    /// The most units one purchase (and one shopper's limit) may count.
    pub const MAX: i32 = 1000;
    pub const ONE: Self = Self(1);

    pub fn new(units: i64) -> Option<Self> {
        i32::try_from(units)
            .ok()
            .filter(|units| (1..=Self::MAX).contains(units))
            .map(Self)
    }

    /// As PostgreSQL stores it (`integer`).
    pub fn get(self) -> i32 {
        self.0
    }

    /// For sums with stock counts.
    pub fn units(self) -> i64 {
        self.0.into()
    }
}

impl TryFrom<i64> for Quantity {
    type Error = String;

    fn try_from(units: i64) -> Result<Self, Self::Error> {
        Self::new(units).ok_or_else(|| format!("must be a whole number from 1 to {}", Self::MAX))
    }
}

impl std::str::FromStr for Quantity {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let units: i64 = text
            .parse()
            .map_err(|_| format!("{text:?} is not a whole number"))?;
        units.try_into()
    }
}

impl From<Quantity> for i64 {
    fn from(quantity: Quantity) -> Self {
        quantity.units()
    }
}

impl From<Quantity> for i32 {
    fn from(quantity: Quantity) -> Self {
        quantity.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantity_is_one_to_the_maximum() {
        assert_eq!(Quantity::new(0), None);
        assert_eq!(Quantity::new(-1), None);
        assert_eq!(Quantity::new(1001), None);
        assert_eq!(Quantity::new(1_000_000_000_000), None);
        assert_eq!(Quantity::new(1000).map(Quantity::get), Some(1000));
    }

    #[test]
    fn json_numbers_outside_the_range_are_refused_with_the_range() {
        let refused = serde_json::from_str::<Quantity>("0").unwrap_err();
        assert!(refused.to_string().contains("from 1 to 1000"), "{refused}");
        assert!(serde_json::from_str::<Quantity>("1.5").is_err());
        assert_eq!(serde_json::from_str::<Quantity>("3").unwrap().units(), 3);
        assert_eq!(serde_json::to_string(&Quantity::ONE).unwrap(), "1");
    }
}
