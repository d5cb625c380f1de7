//! The one error model of the API (DESIGN.md §4): every failure answers
//! `{"error": {"code", "message", "request_id"}}` with a stable code.
//!
//! Handlers return [`ApiError`]; its response carries the error in an
//! extension, and [`render`] (called by the node's response layer,
//! `response_shape`, inside the trace and request-id layers and outside
//! CORS, which knows the request id) writes the JSON body. The same layer renders errors
//! produced outside handlers (unknown routes, wrong methods, body limits,
//! timeouts, panics) so no response ever leaves in another shape.

use std::borrow::Cow;

use axum::{
    body::Body,
    extract::rejection::{JsonRejection, PathRejection, QueryRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;
use validator::ValidationErrors;

use super::error_code::ErrorCode;
use crate::{
    app::AppError,
    auth::TokenError,
    domain::DomainError,
    store::{Dependency, StoreError},
};

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: u32 = 1;

/// An error on its way to the client: status, stable code, safe message.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: Cow<'static, str>,
    /// Seconds for `Retry-After` (429 and 503 always carry one).
    retry_after_secs: Option<u64>,
    /// A 401 for a token that was sent but refused (RFC 6750 `invalid_token`),
    /// rather than for a missing one.
    token_refused: bool,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: e.g. `VALIDATION_FAILED`, `SOLD_OUT`, `UNAVAILABLE`.
    pub code: ErrorCode,
    /// For humans; says what to change or when to retry.
    pub message: String,
    /// The `x-request-id` of the request, to quote when reporting a problem.
    pub request_id: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status: code.status(),
            code,
            message: message.into(),
            retry_after_secs: None,
            token_refused: false,
        }
    }

    /// 429 for a caller over their per-user limit, with how long to wait.
    pub fn rate_limited(wait: std::time::Duration) -> Self {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        Self {
            retry_after_secs: Some(secs),
            ..Self::new(
                ErrorCode::RateLimited,
                format!("too many purchase attempts; retry in {secs} s"),
            )
        }
    }

    pub fn validation(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::ValidationFailed, message)
    }

    /// 401 for a request without a token.
    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// 401 for a token that was sent and refused.
    pub fn invalid_token(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            token_refused: true,
            ..Self::unauthorized(message)
        }
    }

    pub fn forbidden() -> Self {
        Self::new(
            ErrorCode::Forbidden,
            "this endpoint needs the admin role: an operator token (flashsale-api token --admin) \
             or, in oidc mode, the admin claim from the shop's identity provider",
        )
    }

    pub fn unavailable(dependency: Dependency) -> Self {
        Self::new(
            ErrorCode::Unavailable,
            format!(
                "{dependency} is temporarily unavailable; retry in {RETRY_AFTER_SECS} s \
                 (idempotent requests are safe to repeat)"
            ),
        )
    }

    pub fn internal() -> Self {
        Self::new(
            ErrorCode::Internal,
            "an unexpected error occurred; it was logged under this request id",
        )
    }

    /// The error for a status alone: a non-JSON error response made outside
    /// our handlers, and the router's fallback (404).
    pub(super) fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => {
                Self::new(ErrorCode::NotFound, "no such endpoint; see /api/docs")
            }
            StatusCode::METHOD_NOT_ALLOWED => Self::new(
                ErrorCode::MethodNotAllowed,
                "this endpoint does not accept that method; see /api/docs",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                ErrorCode::PayloadTooLarge,
                "the request body is larger than this API accepts",
            ),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => Self::new(
                ErrorCode::Unavailable,
                format!("the request took too long; retry in {RETRY_AFTER_SECS} s"),
            ),
            status if status.is_server_error() => Self::internal(),
            // A 4xx without a code of its own keeps its status.
            status => Self {
                status,
                ..Self::new(
                    ErrorCode::BadRequest,
                    status
                        .canonical_reason()
                        .unwrap_or("the request was refused"),
                )
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// Writes the JSON error body (with the request id) for a 4xx/5xx response,
/// and `Retry-After` on every 503; any other response passes unchanged.
pub(super) fn render(mut response: Response, request_id: Option<HeaderValue>) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let request_id = request_id
        .as_ref()
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let error = match response.extensions_mut().remove::<ApiError>() {
        Some(error) => error,
        None if is_json(&response) => return response,
        None => ApiError::for_status(status),
    };
    let body = ErrorBody {
        error: ErrorDetail {
            code: error.code,
            message: error.message.into_owned(),
            request_id,
        },
    };
    let bytes = serde_json::to_vec(&body).expect("an error body always serialises");
    *response.status_mut() = error.status;
    *response.body_mut() = Body::from(bytes);
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let retry_after = match error.status {
        StatusCode::SERVICE_UNAVAILABLE => {
            Some(error.retry_after_secs.unwrap_or(RETRY_AFTER_SECS.into()))
        }
        _ => error.retry_after_secs,
    };
    if let Some(secs) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if error.status == StatusCode::UNAUTHORIZED {
        let challenge = if error.token_refused {
            r#"Bearer error="invalid_token""#
        } else {
            "Bearer"
        };
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"))
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        let code = match &error {
            DomainError::SaleNotFound(_) => ErrorCode::SaleNotFound,
            DomainError::NoCurrentSale => ErrorCode::NoCurrentSale,
            DomainError::ProductNotFound(_) => ErrorCode::ProductNotFound,
            DomainError::UserNotFound(_) => ErrorCode::UserNotFound,
            DomainError::SkuTaken(_) => ErrorCode::SkuTaken,
            DomainError::InsufficientStock { .. } => ErrorCode::InsufficientStock,
            DomainError::InvalidTransition { .. } | DomainError::StockChangeNotAllowed { .. } => {
                ErrorCode::InvalidStateTransition
            }
            DomainError::SaleNotActive { .. } => ErrorCode::SaleNotActive,
            DomainError::SoldOut { .. } => ErrorCode::SoldOut,
            DomainError::AlreadyPurchased { .. } => ErrorCode::AlreadyPurchased,
            DomainError::QuantityAboveLimit { .. } => ErrorCode::QuantityAboveLimit,
            DomainError::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            DomainError::PurchaseNotFound => ErrorCode::PurchaseNotFound,
            DomainError::OrderNotFound(_) => ErrorCode::OrderNotFound,
            DomainError::OrderNotAwaitingPayment { .. } => ErrorCode::OrderNotAwaitingPayment,
            DomainError::NoWaitlist => ErrorCode::NoWaitlist,
            DomainError::UnitsOnSale { .. } => ErrorCode::UnitsOnSale,
            DomainError::HoldAwaitingPayment => ErrorCode::HoldAwaitingPayment,
            DomainError::NotOnWaitlist => ErrorCode::NotOnWaitlist,
            DomainError::SaleWindowOver { .. } | DomainError::HoldOutOfBounds { .. } => {
                ErrorCode::ValidationFailed
            }
        };
        Self::new(code, error.to_string())
    }
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Store(store) => store.into(),
            AppError::RateLimited(wait) => Self::rate_limited(wait),
            AppError::Invalid(message) => Self::validation(message),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Domain(domain) => domain.into(),
            StoreError::Unavailable { dependency, detail } => {
                tracing::warn!(%dependency, %detail, "dependency unavailable");
                metrics::counter!("dependency_unavailable_total", "dependency" => dependency.to_string())
                    .increment(1);
                Self::unavailable(dependency)
            }
            StoreError::Unexpected { dependency, detail } => {
                tracing::error!(%dependency, %detail, "unexpected store error");
                Self::internal()
            }
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::Suspended => Self::new(
                ErrorCode::AccountSuspended,
                "this account is suspended by the shop; contact the shop's support",
            ),
            // Logged once per failed fetch by the key cache, not per request.
            TokenError::KeysUnavailable | TokenError::NotReady => {
                metrics::counter!("flashsale_tokens_uncheckable_total").increment(1);
                Self::new(
                    ErrorCode::Unavailable,
                    format!(
                        "tokens cannot be checked on this node right now; retry in {RETRY_AFTER_SECS} s"
                    ),
                )
            }
            TokenError::Store(store) => store.into(),
            refused => Self::invalid_token(refused.to_string()),
        }
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        let mut problems: Vec<String> = errors
            .field_errors()
            .into_iter()
            .flat_map(|(field, errors)| {
                errors.iter().map(move |error| match &error.message {
                    Some(message) => format!("{field}: {message}"),
                    None => format!("{field}: invalid ({})", error.code),
                })
            })
            .collect();
        problems.sort();
        Self::validation(problems.join("; "))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with `Content-Type: application/json`",
            ),
            JsonRejection::JsonSyntaxError(error) => Self::new(
                ErrorCode::MalformedJson,
                format!("the body is not valid JSON: {}", error.body_text()),
            ),
            JsonRejection::JsonDataError(error) => Self::validation(error.body_text()),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::for_status(StatusCode::PAYLOAD_TOO_LARGE)
            }
            other => Self::new(ErrorCode::BadRequest, other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::validation(format!("path: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::validation(format!("query: {}", rejection.body_text()))
    }
}
