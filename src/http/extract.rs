//! Extractors that turn every malformed input into an [`ApiError`] with the
//! one error shape: JSON bodies validated with `validator`, path and query
//! parameters, and the authenticated caller.

use axum::{
    extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request},
    http::{header, request::Parts},
};
use serde::de::DeserializeOwned;
use uuid::Uuid;
use validator::Validate;

use super::{ApiError, AppState};
use crate::{domain::Role, store::postgres::AdminAct};

/// A JSON body that parsed and passed its `validator` rules.
pub struct ValidJson<T>(pub T);

impl<T, S> FromRequest<S> for ValidJson<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(request, state).await?;
        value.validate()?;
        Ok(Self(value))
    }
}

/// Path parameters, with rejections in the API's error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct PathParams<T>(pub T);

/// Query parameters, with rejections in the API's error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct QueryParams<T>(pub T);

/// The caller, from a verified `Authorization: Bearer <token>`: this
/// deployment's own token or the shop's provider's (`auth`). No database or
/// Redis call per request: the token carries the identity, bans are known
/// to every node in memory.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user_id: Uuid,
    pub role: Role,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("send `Authorization: Bearer <token>`"))?;
        // Exactly `Bearer <token>`: a variant with more spaces would be the
        // same token to the node but another key to nginx's hash.
        let token = value
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .filter(|token| !token.is_empty() && !token.contains(char::is_whitespace))
            .ok_or_else(|| {
                ApiError::invalid_token("the Authorization header must be `Bearer <token>`")
            })?;
        let caller = state.auth.authenticate(token).await?;
        Ok(Self {
            user_id: caller.user_id,
            role: caller.role,
        })
    }
}

impl OptionalFromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    /// No Authorization header: anonymous. A header that does not verify
    /// is still a 401, so a client with a broken token finds out.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            <Caller as FromRequestParts<AppState>>::from_request_parts(parts, state)
                .await
                .map(Some)
        } else {
            Ok(None)
        }
    }
}

/// The `Idempotency-Key` header: required on purchases, 1-128 characters of
/// letters, digits, `.`, `_`, `:` or `-`. Scoped per user and per sale.
/// Optional on an operator's changes (`Option<IdempotencyKey>`): scoped per
/// admin there, kept with the change's audit record.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        <Self as OptionalFromRequestParts<S>>::from_request_parts(parts, state)
            .await?
            .ok_or_else(|| ApiError::validation("Idempotency-Key: header required; send a new random value (e.g. a UUID) per purchase intent and reuse it on retries"))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    /// No header: `None`; a header that is not a valid key is refused
    /// rather than ignored, so a client never believes a retry is safe
    /// when it is not.
    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(None);
        };
        let key = value.to_str().unwrap_or_default();
        let valid = (1..=128).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if !valid {
            return Err(ApiError::validation(
                "Idempotency-Key: use 1-128 characters of letters, digits, '.', '_', ':' or '-'",
            ));
        }
        Ok(Some(Self(key.to_string())))
    }
}

/// A caller with the admin role (anyone else gets 403), with the request
/// id every admin action is audited under.
#[derive(Debug, Clone)]
pub struct Admin {
    pub caller: Caller,
    pub request_id: Option<String>,
}

impl Admin {
    /// Who is acting, for the store's audit record.
    pub fn act(&self) -> AdminAct {
        self.act_once(None)
    }

    /// Who is acting on a change that happens once per `key` when given.
    pub fn act_once(&self, key: Option<IdempotencyKey>) -> AdminAct {
        AdminAct {
            actor_id: self.caller.user_id,
            request_id: self.request_id.clone(),
            idempotency_key: key.map(|IdempotencyKey(key)| key),
        }
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller =
            <Caller as FromRequestParts<AppState>>::from_request_parts(parts, state).await?;
        if caller.role != Role::Admin {
            return Err(ApiError::forbidden());
        }
        // nginx sets the id; a node reached directly keeps a client's, so
        // only a plausible one goes into the audit trail.
        let request_id = parts
            .headers
            .get(super::REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .filter(|id| {
                (1..=64).contains(&id.len())
                    && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
            .map(str::to_owned);
        Ok(Self { caller, request_id })
    }
}
