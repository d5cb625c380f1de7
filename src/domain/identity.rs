//! Who is calling: roles and normalised emails.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a caller may do. Shoppers buy; admins also run sales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Shopper,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Shopper => "shopper",
            Role::Admin => "admin",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "shopper" => Some(Role::Shopper),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl TryFrom<String> for Role {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or_else(|| format!("unknown role {value:?}"))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An email as stored: trimmed and lower-cased, so `Ann@X.com` and
/// `ann@x.com` are one user. Syntax is checked at the HTTP boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn normalize(raw: &str) -> Self {
        Self(raw.trim().to_lowercase())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Admins are configured by email; everyone else is a shopper.
    pub fn role_given(&self, admin_emails: &[String]) -> Role {
        if admin_emails.iter().any(|admin| admin == &self.0) {
            Role::Admin
        } else {
            Role::Shopper
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            Email::normalize("  Ann@Example.COM ").as_str(),
            "ann@example.com"
        );
    }

    #[test]
    fn only_listed_emails_become_admins() {
        let admins = vec!["boss@example.com".to_string()];
        assert_eq!(
            Email::normalize("BOSS@example.com").role_given(&admins),
            Role::Admin
        );
        assert_eq!(
            Email::normalize("ann@example.com").role_given(&admins),
            Role::Shopper
        );
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in [Role::Shopper, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
