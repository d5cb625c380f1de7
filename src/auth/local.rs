//! This deployment's own tokens: HS256 JWTs carrying the internal user id
//! and role, signed with `FLASHSALE_JWT_SECRET`. The development login
//! issues shopper tokens with them; operators mint admin tokens from the
//! shell (`flashsale-api token --admin`), never over HTTP.
//!
//! Only HS256 with this key is accepted (so `alg: none` and
//! algorithm-confusion tokens fail), and `exp`, `nbf`, `iss`, `aud` and
//! `sub` are required.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::TokenError;
use crate::{
    config::Secret,
    domain::{Email, Role},
    store::{
        StoreError,
        postgres::{Db, UserRow},
    },
};

/// The claims we write and require.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LocalClaims {
    pub sub: Uuid,
    pub role: Role,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

/// A token handed to a client, with its expiry (seconds since the epoch).
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_at: u64,
}

/// Signs and verifies this deployment's tokens with one key. Cheap to clone.
#[derive(Clone)]
pub struct LocalTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    /// The first segment of every token [`Self::issue`] writes (the
    /// encoded HS256 header).
    own_header: String,
}

impl LocalTokens {
    pub fn new(secret: &Secret, issuer: &str, audience: &str) -> Self {
        let secret = secret.expose().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        // The nodes that sign and verify these share clocks (one machine or
        // NTP-synced hosts); a larger leeway would extend stolen tokens.
        validation.leeway = 5;
        let encoding = EncodingKey::from_secret(secret);
        // Whatever the claims, the header segment is the same: sign nothing
        // once and keep it.
        let signed_nothing = jsonwebtoken::encode(&Self::header(), &(), &encoding)
            .expect("HS256 signing of plain claims cannot fail");
        let own_header = signed_nothing
            .split_once('.')
            .map(|(header, _)| header.to_owned())
            .expect("a signed token has three segments");
        Self {
            encoding,
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            own_header,
        }
    }

    /// The header of every token this deployment signs.
    fn header() -> Header {
        Header::new(Algorithm::HS256)
    }

    /// Whether the token's header is, byte for byte, the one this
    /// deployment writes: such a token goes to [`Self::verify`] without its
    /// header being decoded first, since `verify` decodes and checks it
    /// anyway (BENCHMARKS.md, "The token check"). Says nothing of the
    /// token's validity.
    pub fn wrote_header_of(&self, token: &str) -> bool {
        token
            .split_once('.')
            .is_some_and(|(header, _)| header == self.own_header)
    }

    pub fn issue(&self, user_id: Uuid, role: Role, ttl_secs: u64) -> IssuedToken {
        let now = unix_now();
        let claims = LocalClaims {
            sub: user_id,
            role,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + ttl_secs,
        };
        let token = jsonwebtoken::encode(&Self::header(), &claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail");
        IssuedToken {
            token,
            expires_at: claims.exp,
        }
    }

    pub fn verify(&self, token: &str) -> Result<LocalClaims, TokenError> {
        jsonwebtoken::decode::<LocalClaims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                _ => TokenError::Invalid("the access token is invalid"),
            })
    }
}

/// A token for the local user of `email` (created if new): what
/// `flashsale-api token` prints, and how tests and benches get tokens.
pub async fn mint(
    db: &Db,
    tokens: &LocalTokens,
    email: &Email,
    role: Role,
    ttl_secs: u64,
) -> Result<(UserRow, IssuedToken), StoreError> {
    let user = db.upsert_local_user(email, role).await?;
    let issued = tokens.issue(user.id, role, ttl_secs);
    Ok((user, issued))
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_issued_token_carries_the_header_this_deployment_writes() {
        let tokens = tokens("a-secret-of-at-least-thirty-two-bytes!");
        for role in [Role::Shopper, Role::Admin] {
            let issued = tokens.issue(Uuid::now_v7(), role, 60).token;
            assert!(tokens.wrote_header_of(&issued), "{issued}");
        }
        let untyped = Header {
            typ: None,
            ..Header::new(Algorithm::HS256)
        };
        let written_otherwise = jsonwebtoken::encode(&untyped, &(), &tokens.encoding).unwrap();
        for token in [written_otherwise.as_str(), "", ".", "not-a-token"] {
            assert!(!tokens.wrote_header_of(token), "{token}");
        }
    }

    fn tokens(secret: &str) -> LocalTokens {
        LocalTokens::new(&Secret::new(secret), "flashsale", "flashsale-api")
    }

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let tokens = tokens(&"a".repeat(32));
        let user = Uuid::now_v7();
        let claims = tokens
            .verify(&tokens.issue(user, Role::Admin, 60).token)
            .unwrap();
        assert_eq!((claims.sub, claims.role), (user, Role::Admin));
    }

    #[test]
    fn a_token_signed_with_another_key_is_invalid() {
        let issued = tokens(&"a".repeat(32)).issue(Uuid::now_v7(), Role::Admin, 60);
        assert!(matches!(
            tokens(&"b".repeat(32)).verify(&issued.token),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn garbage_is_invalid() {
        let tokens = tokens(&"a".repeat(32));
        for garbage in ["", "abc", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
            assert!(
                matches!(tokens.verify(garbage), Err(TokenError::Invalid(_))),
                "{garbage:?}"
            );
        }
    }
}
