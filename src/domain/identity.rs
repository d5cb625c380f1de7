//! Who is calling: roles and normalised emails.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
}

/// The issuer of users who sign in with the development login or hold an
/// operator token minted from the shell; their subject is their email.
pub const LOCAL_ISSUER: &str = "local";

/// Who a user is to the outside world: an identity of an issuer. The shop's
/// provider names its users by `sub` within its issuer URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
}

/// Namespace of the ids derived from identities (a fixed random UUID).
const IDENTITY_NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_0d39_8a1e_4c6b_9f57_2d0e_4b8a_91c3);

impl Identity {
    pub fn local(email: &Email) -> Self {
        Self {
            issuer: LOCAL_ISSUER.to_owned(),
            subject: email.as_str().to_owned(),
        }
    }

    /// The internal user id of this identity, the same on every node
    /// without asking the database (a name-based UUID of issuer and
    /// subject; the newline cannot occur in an issuer URL).
    pub fn user_id(&self) -> Uuid {
        let name = format!("{}\n{}", self.issuer, self.subject);
        Uuid::new_v5(&IDENTITY_NAMESPACE, name.as_bytes())
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
    fn an_identity_has_one_id_everywhere_and_issuers_do_not_collide() {
        let ann = Identity {
            issuer: "https://login.example.com".into(),
            subject: "ann".into(),
        };
        assert_eq!(ann.user_id(), ann.clone().user_id());
        let elsewhere = Identity {
            issuer: "https://other.example.com".into(),
            ..ann.clone()
        };
        assert_ne!(ann.user_id(), elsewhere.user_id());
        let local = Identity::local(&Email::normalize("Ann@Example.com"));
        assert_eq!(local.issuer, LOCAL_ISSUER);
        assert_eq!(local.subject, "ann@example.com");
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in [Role::Shopper, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
