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
    config::AuthMode,
    domain::Role,
    http::error_code::error_responses,
    http::{
        ApiError, AppState, ErrorCode,
        extract::{Caller, PathParams},
    },
    payments::{PaymentEvent, SignatureError, SignedDelivery},
    store::postgres::OrderRow,
};

pub fn router(mode: AuthMode) -> OpenApiRouter<AppState> {
    let router = OpenApiRouter::new()
        .routes(routes!(payment_webhook))
        .routes(routes!(get_order))
        .routes(routes!(cancel_order));
    match mode {
        AuthMode::Dev => router.routes(routes!(dev_pay_order)),
        AuthMode::Oidc => router,
    }
}

error_responses!(WebhookErrors: [] WebhookMalformed, WebhookTimestampStale, WebhookSignatureInvalid, PaymentsNotConfigured, PayloadTooLarge, Unavailable);

/// The payment provider's webhook, signed as Standard Webhooks sign
/// (`webhook-id`, `webhook-timestamp`, `webhook-signature`: `v1,` and the
/// base64 HMAC-SHA256 of `<id>.<timestamp>.<raw body>` with a secret of
/// `FLASHSALE_WEBHOOK_SECRETS`). A `payment.succeeded` event pays its order
/// if it awaits payment, before `pay_by`, in a sale not cancelled, for
/// exactly its amount and currency; otherwise it is recorded as `refund_required`,
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
    state
        .payments
        .receive(delivery, &body)
        .await
        .map(Json)
        .map_err(webhook_error)
}

fn webhook_error(error: WebhookError) -> ApiError {
    match error {
        WebhookError::NotConfigured => ApiError::new(
            ErrorCode::PaymentsNotConfigured,
            WebhookError::NotConfigured.to_string(),
        ),
        WebhookError::Signature(error) => {
            let code = match error {
                SignatureError::Malformed(_) => ErrorCode::WebhookMalformed,
                SignatureError::Stale { .. } => ErrorCode::WebhookTimestampStale,
                SignatureError::Mismatch => ErrorCode::WebhookSignatureInvalid,
            };
            ApiError::new(code, error.to_string())
        }
        WebhookError::Body(message) => ApiError::new(ErrorCode::WebhookMalformed, message),
        WebhookError::App(error) => error.into(),
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

error_responses!(DevPayErrors: [SIGNED_IN] OrderNotFound, PaymentsNotConfigured);

/// Development only (`dev` mode; absent otherwise): pay one of your own
/// orders as a payment provider would. The node signs a real
/// `payment.succeeded` webhook for the order's amount and currency with
/// its first webhook secret and takes it through the same checks as `POST
/// /api/payments/webhook`, so a demo can pay without a provider. Needs
/// `FLASHSALE_WEBHOOK_SECRETS` like the webhook.
#[utoipa::path(post, path = "/api/dev/orders/{id}/pay", tag = "payments",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "One of the caller's orders")),
    responses(
        (status = 200, description = "The signed delivery was received (see `outcome`)", body = WebhookReceipt),
        DevPayErrors,
    ))]
async fn dev_pay_order(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<Uuid>,
) -> Result<Json<WebhookReceipt>, ApiError> {
    state
        .payments
        .pay_as_provider(id, caller.user_id)
        .await
        .map(Json)
        .map_err(webhook_error)
}
