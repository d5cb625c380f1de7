//! Every code an error response can carry (DESIGN.md §4), with its status
//! and what it tells the client. The OpenAPI responses of each endpoint are
//! built from this one list; the code table in docs/api.md is checked
//! against it (codes and statuses) by workers/tests/reference_docs.rs.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde::Serialize;
use utoipa::{
    ToSchema,
    openapi::{Content, Ref, RefOr, ResponseBuilder, response::Response},
};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema, strum::EnumIter, strum::IntoStaticStr,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ValidationFailed,
    MalformedJson,
    BadRequest,
    QuantityAboveLimit,
    Unauthorized,
    Forbidden,
    AccountSuspended,
    NotFound,
    SaleNotFound,
    NoCurrentSale,
    ProductNotFound,
    UserNotFound,
    PurchaseNotFound,
    OrderNotFound,
    PaymentsNotConfigured,
    MethodNotAllowed,
    SkuTaken,
    InsufficientStock,
    InvalidStateTransition,
    SaleNotActive,
    AlreadyPurchased,
    CannotBanYourself,
    OrderNotAwaitingPayment,
    NoWaitlist,
    UnitsOnSale,
    HoldAwaitingPayment,
    NotOnWaitlist,
    SoldOut,
    PayloadTooLarge,
    UnsupportedMediaType,
    IdempotencyKeyReused,
    WebhookMalformed,
    WebhookTimestampStale,
    WebhookSignatureInvalid,
    RateLimited,
    Internal,
    Unavailable,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub fn all() -> impl Iterator<Item = Self> {
        <Self as strum::IntoEnumIterator>::iter()
    }

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            ValidationFailed
            | MalformedJson
            | BadRequest
            | QuantityAboveLimit
            | WebhookMalformed
            | WebhookTimestampStale => StatusCode::BAD_REQUEST,
            Unauthorized | WebhookSignatureInvalid => StatusCode::UNAUTHORIZED,
            Forbidden | AccountSuspended => StatusCode::FORBIDDEN,
            NotFound
            | SaleNotFound
            | NoCurrentSale
            | ProductNotFound
            | UserNotFound
            | PurchaseNotFound
            | OrderNotFound
            | NotOnWaitlist
            | PaymentsNotConfigured => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            SkuTaken
            | InsufficientStock
            | InvalidStateTransition
            | SaleNotActive
            | AlreadyPurchased
            | CannotBanYourself
            | OrderNotAwaitingPayment
            | NoWaitlist
            | UnitsOnSale
            | HoldAwaitingPayment => StatusCode::CONFLICT,
            SoldOut => StatusCode::GONE,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// When a client meets it and what to do, for the API reference.
    pub fn meaning(self) -> &'static str {
        use ErrorCode::*;
        match self {
            ValidationFailed => "a field, path or query value is invalid; the message names it",
            MalformedJson => "the body is not valid JSON",
            BadRequest => "the request is malformed in another way (the message says how)",
            QuantityAboveLimit => "more units than the sale allows one shopper",
            Unauthorized => "no token, or a token that is invalid, expired or revoked",
            Forbidden => "the endpoint needs the admin role",
            AccountSuspended => "the caller's account is banned",
            NotFound => "no such endpoint, or nothing of the caller's to show",
            SaleNotFound => "no flash sale with that id",
            NoCurrentSale => "no sale is scheduled or running; name one with sale_id",
            ProductNotFound => "no product with that id",
            UserNotFound => "no user with that id",
            PurchaseNotFound => "no purchase of the caller's matches",
            OrderNotFound => "no order of the caller's with that id",
            PaymentsNotConfigured => {
                "this deployment takes no payments (FLASHSALE_WEBHOOK_SECRETS is empty)"
            }
            MethodNotAllowed => "the endpoint does not accept that method",
            SkuTaken => "a product with that sku exists",
            InsufficientStock => "the product has fewer free units than asked for",
            InvalidStateTransition => "the sale's state does not allow that action or stock change",
            SaleNotActive => "the sale is not active (scheduled, paused, ended or cancelled)",
            AlreadyPurchased => "the shopper holds their limit in this sale",
            CannotBanYourself => "an operator cannot suspend their own account",
            OrderNotAwaitingPayment => {
                "the order is not awaiting payment (paid, expired or cancelled already)"
            }
            NoWaitlist => "the sale has no checkout hold, so it keeps no waitlist",
            UnitsOnSale => "the sale has units on sale: buy instead of joining its waitlist",
            HoldAwaitingPayment => {
                "the shopper holds a unit awaiting payment: pay or cancel before joining the waitlist"
            }
            NotOnWaitlist => "the caller is not on the sale's waitlist",
            SoldOut => "no unit left to reserve",
            PayloadTooLarge => "the body is above FLASHSALE_MAX_BODY_BYTES",
            UnsupportedMediaType => "the body is not sent as application/json",
            IdempotencyKeyReused => {
                "the Idempotency-Key was used with another request (body, sale or action)"
            }
            WebhookMalformed => {
                "a webhook header or the body is missing or unreadable; the message names it"
            }
            WebhookTimestampStale => {
                "webhook-timestamp is further than FLASHSALE_WEBHOOK_TOLERANCE_SECS from now"
            }
            WebhookSignatureInvalid => "no webhook-signature matches a configured secret",
            RateLimited => "over the per-user attempt limit; Retry-After says when to retry",
            Internal => "a bug; logged under the request id",
            Unavailable => "a dependency is unavailable or slow; Retry-After is set, retry",
        }
    }
}

/// Codes every endpoint that reads a JSON body can answer.
pub const JSON_BODY: &[ErrorCode] = &[
    ErrorCode::ValidationFailed,
    ErrorCode::MalformedJson,
    ErrorCode::PayloadTooLarge,
    ErrorCode::UnsupportedMediaType,
];
/// Codes of an endpoint for signed-in shoppers.
pub const SIGNED_IN: &[ErrorCode] = &[
    ErrorCode::ValidationFailed,
    ErrorCode::Unauthorized,
    ErrorCode::AccountSuspended,
    ErrorCode::Unavailable,
];
/// Codes of an admin endpoint.
pub const ADMIN: &[ErrorCode] = &[
    ErrorCode::ValidationFailed,
    ErrorCode::Unauthorized,
    ErrorCode::Forbidden,
    ErrorCode::AccountSuspended,
    ErrorCode::Unavailable,
];

/// The OpenAPI error responses of an endpoint that can answer `codes`: one
/// response per status, naming each code and its meaning.
pub fn responses(codes: &[&[ErrorCode]]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for &code in codes.iter().flat_map(|group| group.iter()) {
        let listed = by_status.entry(code.status().as_u16()).or_default();
        if !listed.contains(&code) {
            listed.push(code);
        }
    }
    by_status
        .into_iter()
        .map(|(status, codes)| {
            let description = codes
                .iter()
                .map(|code| format!("`{}`: {}", code.as_str(), code.meaning()))
                .collect::<Vec<_>>()
                .join("; ");
            let body = Content::new(Some(Ref::from_schema_name("ErrorBody")));
            let response = ResponseBuilder::new()
                .description(description)
                .content("application/json", body)
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// Declares a type naming an endpoint's error responses for
/// `#[utoipa::path(responses(...))]`: groups of codes, then its own.
/// `error_responses!(AttemptErrors: [SIGNED_IN, JSON_BODY] SoldOut, RateLimited);`
macro_rules! error_responses {
    ($name:ident: [$($group:ident),*] $($code:ident),* $(,)?) => {
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                $crate::http::error_code::responses(&[
                    $($crate::http::error_code::$group,)*
                    &[$($crate::http::ErrorCode::$code),*],
                ])
            }
        }
    };
}
pub(crate) use error_responses;
