//! The development identity: log in with an email, get a bearer token.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;
use validator::{Validate, ValidateEmail, ValidationError};

use crate::{
    domain::{Email, Role},
    http::{ApiError, AppState, extract::ValidJson},
    store::postgres::UserRow,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(login))
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
    pub email: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

impl From<UserRow> for UserResponse {
    fn from(user: UserRow) -> Self {
        Self {
            id: user.id,
            email: user.email,
            role: user.role,
            created_at: user.created_at,
        }
    }
}

/// Log in by email (development identity). Creates the user on first login;
/// the role is `admin` when the email is in `FLASHSALE_ADMIN_EMAILS`.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 400, description = "Not an email", body = crate::http::ErrorBody),
        (status = 413, description = "PAYLOAD_TOO_LARGE: body above FLASHSALE_MAX_BODY_BYTES", body = crate::http::ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE: the body is not sent as application/json", body = crate::http::ErrorBody),
        (status = 503, description = "PostgreSQL unavailable", body = crate::http::ErrorBody),
    ))]
async fn login(
    State(state): State<AppState>,
    ValidJson(request): ValidJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let email = Email::normalize(&request.email);
    let role = email.role_given(&state.admin_emails);
    let user = state.db.upsert_user_on_login(&email, role).await?;
    let issued = state.tokens.issue(user.id, user.role);
    tracing::info!(user_id = %user.id, role = %user.role, "login");
    Ok(Json(LoginResponse {
        token: issued.token,
        token_type: "Bearer",
        expires_at: DateTime::from_timestamp(issued.expires_at as i64, 0).unwrap_or_default(),
        user: user.into(),
    }))
}
