//! Who is calling (DESIGN.md §10), decided on every node without a database
//! or Redis call per request:
//! - [`local`]: this deployment's own HS256 tokens (the development login,
//!   operator tokens minted from the shell);
//! - [`oidc`] and [`keys`]: tokens of the shop's OpenID Connect provider,
//!   verified against its cached keys;
//! - [`revocations`]: bans and voided tokens, pushed to every node;
//! - [`directory`]: the provider's (issuer, sub) as an internal user,
//!   created on first sight.
//!
//! [`Authenticator`] routes a token to the verifier of its kind: HS256 is
//! only ever this deployment's own (the provider's algorithms are
//! asymmetric, HS* is refused for them at boot), anything else only ever
//! the provider's (and refused in `dev` mode).

pub mod directory;
pub mod keys;
pub mod local;
pub mod oidc;
pub mod revocations;
pub mod verified;

use std::sync::Arc;

use jsonwebtoken::Algorithm;
use uuid::Uuid;

pub use local::{IssuedToken, LocalClaims, LocalTokens, mint};

use crate::{
    config::{AuthMode, AuthSettings},
    domain::Role,
    store::{StoreError, postgres::Db},
};
use directory::UserDirectory;
use keys::KeyCache;
use oidc::{OidcVerifier, ProviderCaller};
use revocations::Revocations;
use verified::VerifiedTokens;

/// Why a token was refused. Every message is safe to show the caller.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the access token has expired; sign in again")]
    Expired,
    #[error("the access token is not valid yet")]
    NotYetValid,
    #[error("{0}")]
    Invalid(&'static str),
    #[error("the access token was revoked; sign in again")]
    Revoked,
    #[error("this account is suspended by the shop")]
    Suspended,
    /// The provider's keys could not be fetched for too long.
    #[error("tokens cannot be checked right now; retry shortly")]
    KeysUnavailable,
    /// The node has not loaded the banned accounts yet: until it has, it
    /// cannot tell a banned user from anyone else.
    #[error("this node is starting; retry shortly")]
    NotReady,
    /// The provider's user could not be recorded (PostgreSQL).
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// A verified caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authenticated {
    pub user_id: Uuid,
    pub role: Role,
}

pub struct Authenticator {
    mode: AuthMode,
    local: Option<LocalTokens>,
    oidc: Option<OidcVerifier>,
    max_token_bytes: usize,
    token_ttl_secs: u64,
    directory: UserDirectory,
    revocations: Arc<Revocations>,
    verified: VerifiedTokens,
}

impl Authenticator {
    pub fn new(settings: &AuthSettings, db: Db) -> anyhow::Result<Self> {
        let local = settings.local.jwt_secret.as_ref().map(|secret| {
            LocalTokens::new(
                secret,
                &settings.local.jwt_issuer,
                &settings.local.jwt_audience,
            )
        });
        let oidc = match settings.auth_mode {
            AuthMode::Dev => None,
            AuthMode::Oidc => Some(OidcVerifier::new(
                &settings.oidc,
                Arc::new(KeyCache::new(&settings.oidc)?),
            )?),
        };
        Ok(Self {
            mode: settings.auth_mode,
            local,
            oidc,
            max_token_bytes: settings.max_token_bytes,
            token_ttl_secs: settings.token_ttl_secs,
            directory: UserDirectory::new(db),
            revocations: Arc::new(Revocations::default()),
            verified: VerifiedTokens::default(),
        })
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// This deployment's own tokens, when a key is configured.
    pub fn local(&self) -> Option<&LocalTokens> {
        self.local.as_ref()
    }

    /// Lifetime of development-login tokens.
    pub fn login_ttl_secs(&self) -> u64 {
        self.token_ttl_secs
    }

    /// The provider's issuer (`oidc` mode).
    pub fn provider_issuer(&self) -> Option<&str> {
        self.oidc.as_ref().map(OidcVerifier::issuer)
    }

    /// The provider's key cache (`oidc` mode), to run its refresh loop.
    pub fn provider_keys(&self) -> Option<&Arc<KeyCache>> {
        self.oidc.as_ref().map(OidcVerifier::keys)
    }

    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// Whether this node can judge tokens: revocations loaded, and in
    /// `oidc` mode the provider's keys at hand.
    pub fn is_ready(&self) -> bool {
        self.revocations.is_loaded()
            && self
                .provider_keys()
                .is_none_or(|keys| keys.has_usable_keys())
    }

    /// Verifies a bearer token and checks the caller is not banned and the
    /// token not voided.
    pub async fn authenticate(&self, token: &str) -> Result<Authenticated, TokenError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::Invalid("the access token is too long"));
        }
        if !self.revocations.is_loaded() {
            return Err(TokenError::NotReady);
        }
        // The two lookups below come before the header is decoded: decoding
        // it costs more than either (BENCHMARKS.md, "The token check" and "A
        // provider's token seen before"), and a verifier decodes it again.
        // This deployment's own tokens are told by their header's bytes.
        if let Some(local) = self
            .local
            .as_ref()
            .filter(|local| local.wrote_header_of(token))
        {
            return self.local_caller(local, token);
        }
        // A provider token this node verified a moment ago: the same string,
        // so the same header, already checked.
        if let Some(provided) = self.reusable_verdict(token) {
            return self.provider_caller(provided).await;
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::Invalid("the access token is invalid"))?;
        let not_accepted = || TokenError::Invalid("the token's algorithm is not accepted");
        if header.alg == Algorithm::HS256 {
            let local = self.local.as_ref().ok_or_else(not_accepted)?;
            return self.local_caller(local, token);
        }
        let oidc = self.oidc.as_ref().ok_or_else(not_accepted)?;
        let provided = oidc.verify(token, &header).await?;
        self.verified.keep(token, &provided, provided.expires_at);
        self.provider_caller(provided).await
    }

    fn local_caller(&self, local: &LocalTokens, token: &str) -> Result<Authenticated, TokenError> {
        let claims = local.verify(token)?;
        self.revocations.check(claims.sub, Some(claims.iat))?;
        Ok(Authenticated {
            user_id: claims.sub,
            role: claims.role,
        })
    }

    /// The kept verdict of a provider token, unless the provider's keys are
    /// past their staleness bound: then nothing is reused, and every token
    /// meets the verifier, which answers that keys are unavailable.
    fn reusable_verdict(&self, token: &str) -> Option<ProviderCaller> {
        let oidc = self.oidc.as_ref()?;
        if !oidc.keys().has_usable_keys() {
            return None;
        }
        self.verified.get(token)
    }

    async fn provider_caller(&self, provided: ProviderCaller) -> Result<Authenticated, TokenError> {
        let user_id = provided.identity.user_id();
        // Banned users are refused before their first sight costs a write,
        // and again after one: a ban may have arrived while it was written.
        self.revocations.check(user_id, provided.issued_at)?;
        if self.directory.record(user_id, &provided).await? {
            self.revocations.check(user_id, provided.issued_at)?;
        }
        Ok(Authenticated {
            user_id,
            role: provided.role,
        })
    }
}
