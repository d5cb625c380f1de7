//! Shoppers: attempt a purchase, follow its status, list their orders.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;
use validator::Validate;

use crate::{
    domain::{DomainError, FailureReason, PurchaseStatus, ReservationStatus, Role},
    http::error_code::error_responses,
    http::{
        ApiError, AppState,
        extract::{Caller, IdempotencyKey, PathParams, QueryParams, ValidJson},
    },
    jobs::PurchaseJob,
    store::{
        postgres::OrderRow,
        redis::{CachedOrders, ReservationRecord, ReserveOutcome, ReserveRequest, UserRate},
    },
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
    #[validate(range(min = 1, max = 1000, message = "must be a whole number from 1 to 1000"))]
    pub quantity: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurchaseAccepted {
    pub reservation_id: Uuid,
    pub sale_id: Uuid,
    /// `pending` on first acceptance; a replay reports the current status.
    pub status: PurchaseStatus,
    /// Where to follow the purchase.
    pub status_url: String,
}

error_responses!(AttemptErrors: [SIGNED_IN, JSON_BODY] QuantityAboveLimit, SaleNotFound, NoCurrentSale, AlreadyPurchased, SaleNotActive, SoldOut, IdempotencyKeyReused, RateLimited);

/// Reserve stock and queue the order. Send the same `Idempotency-Key` when
/// retrying: the answer is the first reservation, never a second purchase.
#[utoipa::path(post, path = "/api/purchase/attempt", tag = "purchase",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "1-128 characters of letters, digits, '.', '_', ':' or '-'; one per purchase intent")),
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
    let sale_id = state.sale_id_or_current(request.sale_id).await?;
    let reserve = ReserveRequest {
        sale_id,
        user_id: caller.user_id,
        quantity: request.quantity.unwrap_or(1) as u32,
        idempotency_key: &key,
        reservation_id: Uuid::now_v7(),
        rate: UserRate {
            per_second: state.purchase.user_rate_per_sec,
            burst: state.purchase.user_burst,
        },
    };
    let mut outcome = state.redis.reserve(&reserve).await?;
    if outcome == ReserveOutcome::NotArmed {
        outcome = arm_and_retry(&state, &reserve).await?;
    }
    metrics::counter!("purchase_attempts_total", "outcome" => outcome_label(&outcome)).increment(1);
    let quantity = reserve.quantity;
    let (reservation_id, status) = match outcome {
        ReserveOutcome::Accepted {
            reservation_id,
            reserved_at_ms,
            ..
        } => {
            let job = PurchaseJob {
                reservation_id,
                sale_id,
                user_id: caller.user_id,
                quantity,
                idempotency_key: key,
                reserved_at_ms,
            };
            enqueue_or_leave_pending(&state, job).await;
            (reservation_id, PurchaseStatus::Pending)
        }
        ReserveOutcome::Replayed {
            reservation_id,
            status,
        } => (reservation_id, status.for_shopper()),
        refused => return Err(refusal(refused)),
    };
    let status_url =
        format!("/api/purchase/status?sale_id={sale_id}&reservation_id={reservation_id}");
    let accepted = PurchaseAccepted {
        reservation_id,
        sale_id,
        status,
        status_url,
    };
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Redis does not know the sale: unknown, over, or Redis lost its data.
/// Arm it from PostgreSQL if it is open (once per node, however many
/// purchases missed it together), then decide again.
async fn arm_and_retry(
    state: &AppState,
    reserve: &ReserveRequest<'_>,
) -> Result<ReserveOutcome, ApiError> {
    let sale_id = reserve.sale_id;
    state
        .arming
        .arm_if_missing(&state.db, &state.redis, sale_id, || async {
            let sale = state
                .db
                .find_sale(sale_id)
                .await?
                .ok_or(DomainError::SaleNotFound(sale_id))?;
            let sale_state = sale.effective_state(Utc::now());
            if sale_state.is_terminal() {
                return Err(ApiError::from(DomainError::SaleNotActive {
                    state: sale_state,
                }));
            }
            Ok(sale)
        })
        .await?;
    Ok(state.redis.reserve(reserve).await?)
}

/// A failed push is not a failed purchase: the reservation is in Redis's
/// pending set, and the reconciler enqueues pending reservations that have
/// no order (DESIGN.md §5 step 3).
async fn enqueue_or_leave_pending(state: &AppState, job: PurchaseJob) {
    let reservation_id = job.reservation_id;
    if let Err(error) = state.queue.enqueue(job).await {
        metrics::counter!("purchase_enqueue_failures_total").increment(1);
        tracing::warn!(%reservation_id, %error, "purchase job not queued; left pending for the reconciler");
    }
}

fn refusal(outcome: ReserveOutcome) -> ApiError {
    let domain = match outcome {
        ReserveOutcome::RateLimited { wait_ms } => {
            return ApiError::rate_limited(std::time::Duration::from_millis(wait_ms));
        }
        ReserveOutcome::KeyReused => DomainError::IdempotencyKeyReused,
        ReserveOutcome::NotActive { state } => DomainError::SaleNotActive { state },
        ReserveOutcome::AboveLimit { limit } => DomainError::QuantityAboveLimit { limit },
        ReserveOutcome::LimitReached { held, limit } => {
            DomainError::AlreadyPurchased { held, limit }
        }
        ReserveOutcome::SoldOut { remaining } => DomainError::SoldOut { remaining },
        ReserveOutcome::NotArmed
        | ReserveOutcome::Accepted { .. }
        | ReserveOutcome::Replayed { .. } => {
            return ApiError::unavailable(crate::store::Dependency::Redis);
        }
    };
    domain.into()
}

fn outcome_label(outcome: &ReserveOutcome) -> &'static str {
    match outcome {
        ReserveOutcome::Accepted { .. } => "accepted",
        ReserveOutcome::Replayed { .. } => "replayed",
        ReserveOutcome::KeyReused => "key_reused",
        ReserveOutcome::NotArmed => "not_armed",
        ReserveOutcome::RateLimited { .. } => "rate_limited",
        ReserveOutcome::NotActive { .. } => "not_active",
        ReserveOutcome::AboveLimit { .. } => "above_limit",
        ReserveOutcome::LimitReached { .. } => "already_purchased",
        ReserveOutcome::SoldOut { .. } => "sold_out",
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PurchaseStatusQuery {
    /// The sale: alone, it means "my latest purchase in this sale".
    pub sale_id: Option<Uuid>,
    /// A reservation id from `POST /api/purchase/attempt`.
    pub reservation_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurchaseStatusResponse {
    pub reservation_id: Uuid,
    pub sale_id: Uuid,
    pub status: PurchaseStatus,
    pub quantity: i64,
    /// Why a purchase failed, in words for the shopper.
    pub reason: Option<String>,
    /// The same as a stable code for programs: `sale_cancelled`,
    /// `user_gone`, `banned`, `limit_reached` or `no_stock`.
    pub reason_code: Option<String>,
    /// The order, once confirmed.
    pub order_id: Option<Uuid>,
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
    let record = match (query.reservation_id, query.sale_id) {
        (Some(reservation), Some(sale)) => state.redis.reservation(sale, reservation).await?,
        (Some(reservation), None) => find_in_open_sales(&state, reservation).await?,
        (None, Some(sale)) => state.redis.latest_reservation(sale, caller.user_id).await?,
        (None, None) => {
            return Err(ApiError::validation(
                "query: give sale_id, reservation_id or both",
            ));
        }
    };
    if let Some(record) = record.filter(|record| record.user_id == caller.user_id) {
        return Ok(Json(status_of(&state, record).await?));
    }
    // Redis no longer holds it (the sale was archived, or Redis lost its
    // data): PostgreSQL has every purchase that settled.
    let settled = match (query.reservation_id, query.sale_id) {
        (Some(reservation), _) => state.db.settled_purchase(reservation).await?,
        (None, Some(sale)) => {
            state
                .db
                .latest_settled_purchase(sale, caller.user_id)
                .await?
        }
        (None, None) => None,
    };
    match settled.filter(|settled| {
        settled.user_id == caller.user_id
            && query
                .sale_id
                .is_none_or(|sale| sale == settled.flash_sale_id)
    }) {
        Some(settled) => {
            let reason = settled.reason.as_deref().and_then(FailureReason::from_code);
            Ok(Json(PurchaseStatusResponse {
                reservation_id: settled.reservation_id,
                sale_id: settled.flash_sale_id,
                status: settled.status.for_shopper(),
                quantity: settled.quantity.into(),
                reason: reason.map(|reason| reason.message().to_string()),
                reason_code: reason.map(|reason| reason.code().to_string()),
                order_id: settled.order_id,
            }))
        }
        None => Err(DomainError::PurchaseNotFound.into()),
    }
}

/// Searches the open sales this node knows, then any it has not seen yet
/// (a sale created a moment ago on another node).
async fn find_in_open_sales(
    state: &AppState,
    reservation_id: Uuid,
) -> Result<Option<ReservationRecord>, ApiError> {
    let known = state.snapshot.open_sale_ids();
    if let Some(record) = state.redis.find_reservation(&known, reservation_id).await? {
        return Ok(Some(record));
    }
    let unseen: Vec<Uuid> = state
        .db
        .sales_to_arm()
        .await?
        .into_iter()
        .map(|sale| sale.id)
        .filter(|id| !known.contains(id))
        .collect();
    Ok(state
        .redis
        .find_reservation(&unseen, reservation_id)
        .await?)
}

async fn status_of(
    state: &AppState,
    record: ReservationRecord,
) -> Result<PurchaseStatusResponse, ApiError> {
    let order_id = if record.status == ReservationStatus::Confirmed {
        state
            .db
            .order_for_reservation(record.reservation_id)
            .await?
            .map(|(order, _)| order.id)
    } else {
        None
    };
    Ok(PurchaseStatusResponse {
        reservation_id: record.reservation_id,
        sale_id: record.sale_id,
        status: record.status.for_shopper(),
        quantity: record.quantity,
        reason: record.reason.map(|reason| reason.message().to_string()),
        reason_code: record.reason.map(|reason| reason.code().to_string()),
        order_id,
    })
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct OrdersQuery {
    /// 1-based page (default 1).
    pub page: Option<u32>,
    /// Orders per page, 1-100 (default 20).
    pub per_page: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrdersPage {
    pub orders: Vec<OrderRow>,
    pub page: u32,
    pub per_page: u32,
    pub total: i64,
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
            crate::http::ErrorCode::NotFound,
            "no orders to show for this user",
        ));
    }
    let page = query.page.unwrap_or(1);
    let per_page = query.per_page.unwrap_or(20);
    if !(1..=10_000).contains(&page) || !(1..=100).contains(&per_page) {
        return Err(ApiError::validation(
            "query: page must be 1-10000 and per_page 1-100",
        ));
    }
    let cache_field = format!("{page}:{per_page}");
    // Redis down: the page comes from PostgreSQL and is not cached.
    let generation = match state.redis.cached_orders(user_id, &cache_field).await {
        Ok(CachedOrders::Hit(cached)) => return Ok(json_text(cached)),
        Ok(CachedOrders::Miss { generation }) => Some(generation),
        Err(_) => None,
    };
    let offset = i64::from(page - 1) * i64::from(per_page);
    let (orders, total) = state
        .db
        .user_orders(user_id, per_page.into(), offset)
        .await?;
    let body = serde_json::to_string(&OrdersPage {
        orders,
        page,
        per_page,
        total,
    })
    .map_err(|error| {
        tracing::error!(%error, "orders page did not serialise");
        ApiError::internal()
    })?;
    if let Some(generation) = generation
        && let Err(error) = state
            .redis
            .cache_orders(
                user_id,
                &cache_field,
                &body,
                state.purchase.orders_cache_ttl_secs,
                generation,
            )
            .await
    {
        tracing::debug!(%error, "orders page not cached");
    }
    Ok(json_text(body))
}

fn json_text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
