//! Access tokens: HS256 JWTs carrying the user id and role. Verification
//! needs no database, so every API node checks tokens on its own.
//!
//! Only the configured algorithm and key are accepted (so `alg: none` and
//! algorithm-confusion tokens fail), and `exp`, `iss` and `aud` are required.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{config::AuthSettings, domain::Role};

/// The claims we write and require.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: Uuid,
    pub role: Role,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

/// Why a token was refused. The message is safe to show the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the access token has expired; log in again")]
    Expired,
    #[error("the access token is not valid yet")]
    NotYetValid,
    #[error("the access token is invalid")]
    Invalid,
}

/// A token handed to a client, with its expiry (seconds since the epoch).
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_at: u64,
}

/// Signs and verifies tokens with one key. Cheap to clone.
#[derive(Clone)]
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl_secs: u64,
}

impl TokenService {
    pub fn new(settings: &AuthSettings) -> Self {
        let secret = settings.jwt_secret.expose().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&settings.jwt_issuer]);
        validation.set_audience(&[&settings.jwt_audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        // Clocks of API nodes on one machine or NTP-synced hosts agree within
        // seconds; a larger leeway would extend stolen tokens.
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: settings.jwt_issuer.clone(),
            audience: settings.jwt_audience.clone(),
            ttl_secs: settings.token_ttl_secs,
        }
    }

    pub fn issue(&self, user_id: Uuid, role: Role) -> IssuedToken {
        let now = unix_now();
        let claims = Claims {
            sub: user_id,
            role,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + self.ttl_secs,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail");
        IssuedToken {
            token,
            expires_at: claims.exp,
        }
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                _ => TokenError::Invalid,
            })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn service(secret: &str) -> TokenService {
        TokenService::new(&AuthSettings {
            jwt_secret: Secret::new(secret),
            jwt_issuer: "flashsale".into(),
            jwt_audience: "flashsale-api".into(),
            token_ttl_secs: 60,
            admin_emails: vec![],
        })
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let tokens = service(&"a".repeat(32));
        let user = Uuid::now_v7();
        let claims = tokens
            .verify(&tokens.issue(user, Role::Admin).token)
            .unwrap();
        assert_eq!((claims.sub, claims.role), (user, Role::Admin));
    }

    #[test]
    fn a_token_signed_with_another_key_is_invalid() {
        let issued = service(&"a".repeat(32)).issue(Uuid::now_v7(), Role::Admin);
        assert_eq!(
            service(&"b".repeat(32)).verify(&issued.token),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn garbage_is_invalid() {
        let tokens = service(&"a".repeat(32));
        for garbage in ["", "abc", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
            assert_eq!(
                tokens.verify(garbage),
                Err(TokenError::Invalid),
                "{garbage:?}"
            );
        }
    }
}
