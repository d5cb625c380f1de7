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
use crate::domain::Role;

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

/// The caller, from a verified `Authorization: Bearer <jwt>`. No database
/// call: the token carries the id and role.
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
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized(
                "send `Authorization: Bearer <token>` (from POST /api/auth/login)",
            )
        })?;
        let token = value
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        let claims = state.tokens.verify(token.trim())?;
        Ok(Self {
            user_id: claims.sub,
            role: claims.role,
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
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get("idempotency-key")
            .ok_or_else(|| ApiError::validation("Idempotency-Key: header required; send a new random value (e.g. a UUID) per purchase intent and reuse it on retries"))?;
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
        Ok(Self(key.to_string()))
    }
}

/// A caller with the admin role; anyone else gets 403.
#[derive(Debug, Clone, Copy)]
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller =
            <Caller as FromRequestParts<AppState>>::from_request_parts(parts, state).await?;
        match caller.role {
            Role::Admin => Ok(Self(caller)),
            Role::Shopper => Err(ApiError::forbidden()),
        }
    }
}
