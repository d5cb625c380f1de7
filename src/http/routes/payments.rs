//! Checkout holds: the payment provider's signed webhook, and a shopper's
//! own order (read it, cancel it while it awaits payment).

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    app::payments::{WebhookError, WebhookReceipt},
    domain::Role,
    http::error_code::error_responses,
    http::{
        ApiError, AppState, ErrorCode,
        extract::{Caller, PathParams},
    },
    payments::{PaymentEvent, SignatureError, SignedDelivery},
    store::postgres::OrderRow,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(payment_webhook))
        .routes(routes!(get_order))
        .routes(routes!(cancel_order))
}

error_responses!(WebhookErrors: [] WebhookMalformed, WebhookTimestampStale, WebhookSignatureInvalid, PaymentsNotConfigured, PayloadTooLarge, Unavailable);

/// The payment provider's webhook, signed as Standard Webhooks sign
/// (`webhook-id`, `webhook-timestamp`, `webhook-signature`: `v1,` and the
/// base64 HMAC-SHA256 of `<id>.<timestamp>.<raw body>` with a secret of
/// `FLASHSALE_WEBHOOK_SECRETS`). A `payment.succeeded` event pays its order
/// if it awaits payment, before `pay_by`, for exactly its amount and
/// currency; otherwise it is recorded as `refund_required`,
/// `amount_mismatch` or `unknown_order` and answered 200, so the provider
/// stops retrying. A replayed event id answers 200 and changes nothing.
#[utoipa::path(post, path = "/api/payments/webhook", tag = "payments",
    params(
        ("webhook-id" = String, Header, description = "The event's id (1-200 characters); deliveries of one event share it"),
        ("webhook-timestamp" = i64, Header, description = "Unix seconds; within FLASHSALE_WEBHOOK_TOLERANCE_SECS (300) of the server's clock"),
        ("webhook-signature" = String, Header, description = "Space-separated `v1,<base64 signature>` entries"),
    ),
    request_body = PaymentEvent,
    responses(
        (status = 200, description = "Authentic; recorded once (see `outcome` and `duplicate`)", body = WebhookReceipt),
        WebhookErrors,
    ))]
async fn payment_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookReceipt>, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let delivery = SignedDelivery {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
    };
    match state.payments.receive(delivery, &body).await {
        Ok(receipt) => Ok(Json(receipt)),
        Err(WebhookError::NotConfigured) => Err(ApiError::new(
            ErrorCode::PaymentsNotConfigured,
            WebhookError::NotConfigured.to_string(),
        )),
        Err(WebhookError::Signature(error)) => {
            let code = match error {
                SignatureError::Malformed(_) => ErrorCode::WebhookMalformed,
                SignatureError::Stale { .. } => ErrorCode::WebhookTimestampStale,
                SignatureError::Mismatch => ErrorCode::WebhookSignatureInvalid,
            };
            Err(ApiError::new(code, error.to_string()))
        }
        Err(WebhookError::Body(message)) => {
            Err(ApiError::new(ErrorCode::WebhookMalformed, message))
        }
        Err(WebhookError::App(error)) => Err(error.into()),
    }
}

error_responses!(OrderErrors: [SIGNED_IN] OrderNotFound);

/// One order: its status (`confirmed`; or, in a sale with a checkout hold,
/// `awaiting_payment` until `pay_by`, then `paid`, `expired` or
/// `cancelled`), amount and currency. Only its owner or an admin sees it;
/// for anyone else it does not exist.
#[utoipa::path(get, path = "/api/orders/{id}", tag = "purchase",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order")),
    responses(
        (status = 200, description = "The order", body = OrderRow),
        OrderErrors,
    ))]
async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<Uuid>,
) -> Result<Json<OrderRow>, ApiError> {
    let order = state
        .payments
        .order(id, caller.user_id, caller.role == Role::Admin)
        .await?;
    Ok(Json(order))
}

error_responses!(CancelErrors: [SIGNED_IN] OrderNotFound, OrderNotAwaitingPayment);

/// Cancel one of your orders while it awaits payment: it ends
/// `cancelled`, its units go back on sale at once and you may buy again.
/// An order already paid, expired or cancelled answers 409 and is not
/// changed.
#[utoipa::path(post, path = "/api/orders/{id}/cancel", tag = "purchase",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The order")),
    responses(
        (status = 200, description = "The order, cancelled", body = OrderRow),
        CancelErrors,
    ))]
async fn cancel_order(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<Uuid>,
) -> Result<(StatusCode, Json<OrderRow>), ApiError> {
    let order = state.payments.cancel(id, caller.user_id).await?;
    Ok((StatusCode::OK, Json(order)))
}
