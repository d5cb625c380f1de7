//! Access tokens of the shop's OpenID Connect provider (`oidc` mode).
//!
//! A token is accepted only when its header names an allowed asymmetric
//! algorithm and a `kid` whose key has that same algorithm, it carries no
//! key of its own (`jku`, `x5u`, `jwk`, `x5c` are refused, never followed),
//! its signature verifies, `iss`, `aud`, `exp`, `iat` and `sub` are present
//! and valid within the configured leeway, and `nbf`, when present, has
//! passed. (`nbf` is checked but not required: the access tokens of Okta,
//! Google, Keycloak and Auth0 carry none, and RFC 9068 does not ask for
//! it; `iat` is required because revoking a user's tokens compares it.)
//! Admin rights come from a configured claim and value, never from an
//! email.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde_json::Value;

use super::{
    TokenError,
    keys::{KeyCache, KeyLookupError},
};
use crate::{
    config::OidcSettings,
    domain::{Email, Identity, Role},
};

/// What a verified provider token says about its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderCaller {
    pub identity: Identity,
    pub role: Role,
    pub issued_at: Option<u64>,
    /// The token's `exp` (Unix seconds).
    pub expires_at: u64,
    /// The `email` claim, if any: a label for operators, never a key.
    pub email: Option<String>,
}

pub struct OidcVerifier {
    issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway: u64,
    admin_claim: Vec<String>,
    admin_value: String,
    keys: Arc<KeyCache>,
}

impl OidcVerifier {
    pub fn new(settings: &OidcSettings, keys: Arc<KeyCache>) -> anyhow::Result<Self> {
        Ok(Self {
            issuer: settings
                .issuer()
                .ok_or_else(|| anyhow::anyhow!("FLASHSALE_OIDC_ISSUER is not set"))?
                .to_owned(),
            audiences: settings.audiences(),
            algorithms: settings.algorithms()?,
            leeway: settings.oidc_leeway_secs,
            admin_claim: settings
                .oidc_admin_claim
                .trim()
                .split('.')
                .map(str::to_owned)
                .collect(),
            admin_value: settings.oidc_admin_value.clone(),
            keys,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn keys(&self) -> &Arc<KeyCache> {
        &self.keys
    }

    pub async fn verify(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
    ) -> Result<ProviderCaller, TokenError> {
        if !self.algorithms.contains(&header.alg) {
            return Err(TokenError::Invalid("the token's algorithm is not accepted"));
        }
        if header.jku.is_some()
            || header.x5u.is_some()
            || header.jwk.is_some()
            || header.x5c.is_some()
        {
            return Err(TokenError::Invalid(
                "the token names its own key; keys come only from the provider",
            ));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or(TokenError::Invalid("the token names no key (kid)"))?;
        let key = self.keys.key(kid).await.map_err(|error| match error {
            KeyLookupError::UnknownKid => TokenError::Invalid("the token's key (kid) is unknown"),
            KeyLookupError::Unavailable => TokenError::KeysUnavailable,
        })?;
        if key.algorithm != header.alg {
            return Err(TokenError::Invalid(
                "the token's algorithm does not match its key",
            ));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        let claims = jsonwebtoken::decode::<Value>(token, &key.key, &validation)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer => TokenError::Invalid("the token is from another issuer"),
                ErrorKind::InvalidAudience => {
                    TokenError::Invalid("the token is meant for another audience")
                }
                _ => TokenError::Invalid("the access token is invalid"),
            })?
            .claims;
        let subject = claims["sub"]
            .as_str()
            .filter(|sub| !sub.is_empty() && sub.len() <= 255 && !sub.contains('\0'))
            .ok_or(TokenError::Invalid("the token's subject (sub) is unusable"))?;
        let issued_at =
            claims["iat"]
                .as_u64()
                .filter(|iat| *iat < 1 << 40)
                .ok_or(TokenError::Invalid(
                    "the token's issue time (iat) is unusable",
                ))?;
        Ok(ProviderCaller {
            identity: Identity {
                issuer: self.issuer.clone(),
                subject: subject.to_owned(),
            },
            role: if self.grants_admin(&claims) {
                Role::Admin
            } else {
                Role::Shopper
            },
            issued_at: Some(issued_at),
            expires_at: claims["exp"].as_u64().unwrap_or_default(),
            email: claims["email"].as_str().and_then(email_label),
        })
    }

    /// Whether the admin claim holds the admin value, as a string or in a
    /// list. The claim is looked up by its whole name first (namespaced
    /// claims such as `https://shop.example/roles` contain dots), then as a
    /// dotted path into objects (`realm_access.roles`).
    fn grants_admin(&self, claims: &Value) -> bool {
        let found = claims.get(self.admin_claim.join(".")).or_else(|| {
            self.admin_claim
                .iter()
                .try_fold(claims, |value, step| value.get(step))
        });
        match found {
            Some(Value::String(value)) => value == &self.admin_value,
            Some(Value::Array(values)) => values
                .iter()
                .any(|value| value.as_str() == Some(self.admin_value.as_str())),
            _ => false,
        }
    }
}

/// The `email` claim as the users table keeps it (normalised as every
/// email is, something before and after one `@`, no NUL), or none: a
/// label, so an unusable one is dropped rather than refused.
fn email_label(raw: &str) -> Option<String> {
    let email = Email::normalize(raw);
    let (local, domain) = email.as_str().split_once('@')?;
    let usable = !local.is_empty()
        && !domain.is_empty()
        && email.as_str().len() <= 254
        && !email.as_str().contains('\0');
    usable.then(|| email.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_usable_emails_become_labels() {
        assert_eq!(
            email_label(" Ann@Example.COM "),
            Some("ann@example.com".into())
        );
        for unusable in ["x@", "@x", "nobody", "a@b\0c", ""] {
            assert_eq!(email_label(unusable), None, "{unusable:?}");
        }
    }
}
