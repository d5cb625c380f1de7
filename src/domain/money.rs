//! Prices in integer minor units (cents), never floats.

use serde::{Deserialize, Serialize};

/// An amount in the currency's minor unit (e.g. cents). Non-negative.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(try_from = "i64", into = "i64")]
#[schema(value_type = i64, minimum = 0)]
pub struct Money(i64);

impl Money {
    /// Largest accepted price: 10^12 minor units, far below `i64::MAX` so
    /// that multiplying by a quantity cannot overflow.
    pub const MAX: i64 = 1_000_000_000_000;

    pub fn from_minor(minor: i64) -> Option<Self> {
        (0..=Self::MAX).contains(&minor).then_some(Self(minor))
    }

    pub fn minor(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Money {
    type Error = String;

    fn try_from(minor: i64) -> Result<Self, Self::Error> {
        Self::from_minor(minor).ok_or_else(|| format!("must be 0 to {} minor units", Self::MAX))
    }
}

impl From<Money> for i64 {
    fn from(money: Money) -> Self {
        money.0
    }
}

/// An ISO 4217 code: exactly three upper-case ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = "^[A-Z]{3}$", example = "EUR")]
pub struct Currency(String);

impl Currency {
    pub fn parse(code: &str) -> Option<Self> {
        (code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()))
            .then(|| Self(code.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = String;

    fn try_from(code: String) -> Result<Self, Self::Error> {
        Self::parse(&code).ok_or_else(|| format!("{code:?} is not an ISO 4217 code"))
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> Self {
        currency.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_rejects_negative_and_absurd_amounts() {
        assert_eq!(Money::from_minor(-1), None);
        assert_eq!(Money::from_minor(Money::MAX + 1), None);
        assert_eq!(Money::from_minor(1999).map(Money::minor), Some(1999));
    }

    #[test]
    fn currency_codes_are_three_upper_case_letters() {
        assert!(Currency::parse("EUR").is_some());
        for bad in ["eur", "EURO", "E1R", ""] {
            assert!(Currency::parse(bad).is_none(), "{bad:?} accepted");
        }
    }
}
