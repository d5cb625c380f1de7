//! How callers get identities: which mode this deployment runs in, and the
//! development login (`dev` mode only), which hands out shopper tokens by
//! email and never the admin role.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;
use validator::{Validate, ValidateEmail, ValidationError};

use crate::{
    config::AuthMode,
    domain::{Email, Role},
    http::error_code::error_responses,
    http::{ApiError, AppState, ErrorCode, extract::ValidJson},
    store::postgres::UserRow,
};

/// The mode endpoint always; the login only in `dev` mode (a 404 otherwise).
pub fn router(mode: AuthMode) -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new().routes(routes!(get_auth_config));
    match mode {
        AuthMode::Dev => router.routes(routes!(login)),
        AuthMode::Oidc => router,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthConfigResponse {
    /// `oidc`: send the shop's identity provider's access token;
    /// `dev`: `POST /api/auth/login` gives shopper tokens by email.
    #[schema(example = "dev")]
    pub mode: &'static str,
    /// The provider's issuer (`oidc` mode).
    pub issuer: Option<String>,
}

/// How this deployment identifies callers (pages use it to offer the
/// development login or not).
#[utoipa::path(get, path = "/api/auth/config", tag = "auth",
    responses((status = 200, description = "The identity mode", body = AuthConfigResponse)))]
async fn get_auth_config(State(state): State<AppState>) -> Json<AuthConfigResponse> {
    Json(AuthConfigResponse {
        mode: state.auth.mode().as_str(),
        issuer: state.auth.provider_issuer().map(str::to_owned),
    })
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
pub struct LoginRequest {
    /// Surrounding spaces are ignored and case does not matter.
    #[validate(length(max = 254), custom(function = "email_after_trimming"))]
    #[schema(example = "ann@example.com")]
    pub email: String,
}

fn email_after_trimming(raw: &str) -> Result<(), ValidationError> {
    if raw.trim().validate_email() {
        Ok(())
    } else {
        Err(ValidationError::new("email").with_message("must be an email address".into()))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    pub expires_at: DateTime<Utc>,
    pub user: UserResponse,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    pub id: Uuid,
    pub email: Option<String>,
    /// Always `shopper`: the development login never grants admin.
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

impl UserResponse {
    fn shopper(user: UserRow) -> Self {
        Self {
            id: user.id,
            email: user.email,
            role: Role::Shopper,
            created_at: user.created_at,
        }
    }
}

error_responses!(LoginErrors: [JSON_BODY] Unavailable);

/// Log in by email (`dev` mode only; 404 in `oidc` mode). Creates the user
/// on first login and hands out a shopper token, whatever the email: admin
/// tokens are minted from the shell (`flashsale-api token --admin`).
#[utoipa::path(post, path = "/api/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in as a shopper", body = LoginResponse),
        LoginErrors,
    ))]
async fn login(
    State(state): State<AppState>,
    ValidJson(request): ValidJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let tokens = state
        .auth
        .local()
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such endpoint"))?;
    let email = Email::normalize(&request.email);
    let user = state.db.upsert_local_user(&email, Role::Shopper).await?;
    let issued = tokens.issue(user.id, Role::Shopper, state.auth.login_ttl_secs());
    tracing::info!(user_id = %user.id, "development login");
    Ok(Json(LoginResponse {
        token: issued.token,
        token_type: "Bearer",
        expires_at: DateTime::from_timestamp(issued.expires_at as i64, 0).unwrap_or_default(),
        user: UserResponse::shopper(user),
    }))
}
