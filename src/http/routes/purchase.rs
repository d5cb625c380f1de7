//! Shoppers: attempt a purchase, follow its status, list their orders.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;
use validator::Validate;

use crate::{
    app::purchases::{OrdersPage, PurchaseIntent},
    domain::HoldTerms,
    domain::{PurchaseStatus, Quantity, Role},
    http::error_code::error_responses,
    http::{
        ApiError, AppState, ErrorCode,
        extract::{Caller, IdempotencyKey, PathParams, QueryParams, ValidJson},
    },
    store::postgres::OrderRow,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(attempt_purchase))
        .routes(routes!(get_purchase_status))
        .routes(routes!(list_user_orders))
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRequest {
    /// The sale; without it, the current sale.
    pub sale_id: Option<Uuid>,
    /// Units to buy (default 1), at most the sale's per-user limit.
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PurchaseAccepted {
    pub reservation_id: Uuid,
    pub sale_id: Uuid,
    /// `pending` on first acceptance; a replay reports the current status.
    pub status: PurchaseStatus,
    /// Where to follow the purchase.
    pub status_url: String,
    /// In a sale with a checkout hold (on first acceptance, when this node
    /// knows the sale): the amount and currency to pay and the deadline,
    /// `pay_by`. The order's id follows in the status and the event
    /// stream once the worker has written it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldTerms>,
}

error_responses!(AttemptErrors: [SIGNED_IN, JSON_BODY] QuantityAboveLimit, SaleNotFound, NoCurrentSale, AlreadyPurchased, SaleNotActive, SoldOut, IdempotencyKeyReused, RateLimited);

/// Reserve stock and queue the order. Send the same `Idempotency-Key` when
/// retrying: the answer is the first reservation, never a second purchase.
#[utoipa::path(post, path = "/api/purchase/attempt", tag = "purchase",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "1-128 characters of letters, digits, '.', '_', ':' or '-'; one per purchase intent",
        min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._:-]+$")),
    request_body = PurchaseRequest,
    responses(
        (status = 202, description = "Reserved and queued", body = PurchaseAccepted),
        AttemptErrors,
    ))]
async fn attempt_purchase(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    ValidJson(request): ValidJson<PurchaseRequest>,
) -> Result<(StatusCode, Json<PurchaseAccepted>), ApiError> {
    state
        .limiter
        .check(caller.user_id)
        .map_err(ApiError::rate_limited)?;
    let quantity = match request.quantity {
        None => Quantity::ONE,
        Some(units) => Quantity::try_from(units)
            .map_err(|problem| ApiError::validation(format!("quantity: {problem}")))?,
    };
    let intent = PurchaseIntent {
        sale_id: request.sale_id,
        quantity,
        idempotency_key: key,
    };
    let accepted = state.purchases.attempt(caller.user_id, intent).await?;
    let (sale_id, reservation_id) = (accepted.sale_id, accepted.reservation_id);
    Ok((
        StatusCode::ACCEPTED,
        Json(PurchaseAccepted {
            reservation_id,
            sale_id,
            status: accepted.status,
            hold: accepted.hold,
            status_url: format!(
                "/api/purchase/status?sale_id={sale_id}&reservation_id={reservation_id}"
            ),
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PurchaseStatusQuery {
    /// The sale: alone, it means "my latest purchase in this sale".
    pub sale_id: Option<Uuid>,
    /// A reservation id from `POST /api/purchase/attempt`.
    pub reservation_id: Option<Uuid>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PurchaseStatusResponse {
    pub reservation_id: Uuid,
    pub sale_id: Uuid,
    pub status: PurchaseStatus,
    pub quantity: Quantity,
    /// Why a purchase failed, in words for the shopper.
    pub reason: Option<String>,
    /// The same as a stable code for programs: `sale_cancelled`,
    /// `user_gone`, `banned`, `limit_reached` or `no_stock`.
    pub reason_code: Option<String>,
    /// The order, once confirmed.
    pub order_id: Option<Uuid>,
    /// In a sale with a checkout hold: the order with its payment state
    /// (`awaiting_payment` until `pay_by`, then `paid`, `expired` or
    /// `cancelled`), amount and currency. The purchase stays `confirmed`
    /// (it became an order) whatever happens to the order after.
    pub order: Option<OrderRow>,
}

error_responses!(PurchaseStatusErrors: [SIGNED_IN] PurchaseNotFound);

/// The caller's purchase: `pending`, then `confirmed` or `failed` with a
/// reason. Other shoppers' reservations are reported as not found.
#[utoipa::path(get, path = "/api/purchase/status", tag = "purchase",
    security(("bearer" = [])),
    params(PurchaseStatusQuery),
    responses(
        (status = 200, description = "The purchase", body = PurchaseStatusResponse),
        PurchaseStatusErrors,
    ))]
async fn get_purchase_status(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<PurchaseStatusQuery>,
) -> Result<Json<PurchaseStatusResponse>, ApiError> {
    let view = state
        .purchases
        .status(caller.user_id, query.sale_id, query.reservation_id)
        .await?;
    Ok(Json(PurchaseStatusResponse {
        reservation_id: view.reservation_id,
        sale_id: view.sale_id,
        status: view.status,
        quantity: view.quantity,
        reason: view.reason.map(|reason| reason.message().to_string()),
        reason_code: view.reason.map(|reason| reason.code().to_string()),
        order_id: view.order_id,
        order: view.order,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct OrdersQuery {
    /// 1-based page (default 1).
    pub page: Option<u32>,
    /// Orders per page, 1-100 (default 20).
    pub per_page: Option<u32>,
}

error_responses!(OrdersErrors: [SIGNED_IN] NotFound);

/// A user's orders, newest first (that user or an admin). Pages are cached
/// in Redis for a short time and dropped when the worker adds an order.
#[utoipa::path(get, path = "/api/purchase/user/{user_id}", tag = "purchase",
    security(("bearer" = [])),
    params(("user_id" = Uuid, Path, description = "The user"), OrdersQuery),
    responses(
        (status = 200, description = "One page of orders", body = OrdersPage),
        OrdersErrors,
    ))]
async fn list_user_orders(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(user_id): PathParams<Uuid>,
    QueryParams(query): QueryParams<OrdersQuery>,
) -> Result<Response, ApiError> {
    if caller.user_id != user_id && caller.role != Role::Admin {
        // 404, not 403: whether another user exists is not the caller's business.
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "no orders to show for this user",
        ));
    }
    let page = state
        .purchases
        .orders_page(
            user_id,
            query.page.unwrap_or(1),
            query.per_page.unwrap_or(20),
        )
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], page).into_response())
}
