//! Admin: create, read and steer flash sales. Every change is mirrored to
//! Redis (armed) right after it commits in PostgreSQL.

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;
use validator::{Validate, ValidationError};

use super::products::MAX_STOCK;
use crate::{
    app::sales::{SaleChange, SaleReport},
    domain::{Currency, Money, SaleAction, SaleState, SaleWindow},
    http::error_code::error_responses,
    http::{
        ApiError, AppState,
        extract::{Admin, IdempotencyKey, PathParams, ValidJson},
    },
    store::postgres::NewSale,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_flash_sale))
        .routes(routes!(get_flash_sale, update_flash_sale))
}

/// Most units one shopper may buy in one sale.
const MAX_PER_USER_LIMIT: i32 = 1000;

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[validate(schema(function = "window_is_valid"))]
pub struct CreateFlashSaleRequest {
    pub product_id: Uuid,
    /// Sale price in minor units (cents).
    #[validate(range(min = 0, max = Money::MAX, message = "must be 0 to 10^12 minor units"))]
    pub price: i64,
    /// RFC 3339, e.g. `2026-11-22T10:00:00Z`.
    pub starts_at: DateTime<Utc>,
    /// RFC 3339; after `starts_at` and in the future (a keyed retry of a
    /// creation already made is answered even after).
    pub ends_at: DateTime<Utc>,
    /// Units one shopper may buy in this sale (default 1).
    #[validate(range(min = 1, max = MAX_PER_USER_LIMIT, message = "must be 1 to 1000"))]
    pub per_user_limit: Option<i32>,
    /// Units of the product allotted to this sale; at most the product's
    /// units not already promised to other open sales.
    #[validate(range(min = 1, max = MAX_STOCK, message = "must be 1 to 1000000000 units"))]
    pub stock: i64,
    /// Seconds each buyer has to pay for their order (a checkout hold,
    /// from the node's `FLASHSALE_HOLD_MIN_SECS`, default 60, to 3600).
    /// Without it an order is sold when it is written; with it the order
    /// awaits a payment webhook until `pay_by` and its units go back on
    /// sale if none comes. The bounds are judged with the sale, after a
    /// keyed retry's lookup: a creation already made is answered even if
    /// the node's minimum was raised since.
    pub hold_seconds: Option<i32>,
    /// Seconds a waitlist offer gives its shopper to pay (same bounds as
    /// `hold_seconds`; default: `hold_seconds`). Only with `hold_seconds`:
    /// a sale without holds keeps no waitlist.
    pub offer_seconds: Option<i32>,
}

/// That `ends_at` is still ahead, and the holds' bounds, are the domain's
/// rules (`OpeningRules::admit`), applied in the store's transaction after
/// a retry's `Idempotency-Key` is looked up: a sale created before its
/// answer was lost is answered again after it ended.
fn window_is_valid(request: &CreateFlashSaleRequest) -> Result<(), ValidationError> {
    if request.ends_at <= request.starts_at {
        return Err(
            ValidationError::new("window").with_message("ends_at must be after starts_at".into())
        );
    }
    Ok(())
}

/// Exactly one of `action` or `add_stock`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
#[validate(schema(function = "one_change"))]
pub struct UpdateFlashSaleRequest {
    pub action: Option<SaleAction>,
    /// Units to add to the sale's allotment.
    #[validate(range(min = 1, max = MAX_STOCK, message = "must be 1 to 1000000000 units"))]
    pub add_stock: Option<i64>,
}

const ONE_CHANGE: &str = "send exactly one of {\"action\": \"pause\"|\"resume\"|\"cancel\"|\"end\"} or {\"add_stock\": n}";

fn one_change(request: &UpdateFlashSaleRequest) -> Result<(), ValidationError> {
    match (&request.action, &request.add_stock) {
        (Some(_), None) | (None, Some(_)) => Ok(()),
        _ => Err(ValidationError::new("body").with_message(ONE_CHANGE.into())),
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FlashSaleResponse {
    pub id: Uuid,
    pub product_id: Uuid,
    pub price: Money,
    pub currency: Currency,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// What shoppers see now: the admin's decision, then the clock.
    pub state: SaleState,
    pub per_user_limit: i32,
    /// Units allotted to the sale.
    pub stock: i64,
    /// Units sold, or held for buyers who have yet to pay, in PostgreSQL.
    pub confirmed: i64,
    /// Seconds each buyer has to pay; null: orders are sold when written.
    pub hold_seconds: Option<i32>,
    /// Seconds a waitlist offer gives its shopper; null: no waitlist.
    pub offer_seconds: Option<i32>,
    /// Units left to reserve in Redis; null when the sale is not armed.
    pub remaining: Option<i64>,
    /// Whether Redis holds the sale's current state; when false, the next
    /// readiness probe (or a retry of this request) arms it.
    pub armed: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<SaleReport> for FlashSaleResponse {
    fn from(report: SaleReport) -> Self {
        let sale = report.sale;
        Self {
            state: sale.effective_state(Utc::now()),
            offer_seconds: sale.offer_window(),
            id: sale.id,
            product_id: sale.product_id,
            price: sale.sale_price,
            currency: sale.currency,
            starts_at: sale.starts_at,
            ends_at: sale.ends_at,
            per_user_limit: sale.per_user_limit,
            stock: sale.allotted_quantity,
            confirmed: sale.confirmed_quantity,
            hold_seconds: sale.hold_seconds,
            remaining: report.remaining,
            armed: report.armed,
            created_at: sale.created_at,
            updated_at: sale.updated_at,
        }
    }
}

error_responses!(CreateSaleErrors: [ADMIN, JSON_BODY] ProductNotFound, InsufficientStock, IdempotencyKeyReused);

/// What the optional `Idempotency-Key` of an operator's change does.
const ADMIN_KEY: &str = "Optional. 1-128 characters of letters, digits, '.', '_', ':' or '-', per admin: the change happens once however often it is sent; a retry answers with the target as it is now, and the key sent with another request is refused (422 IDEMPOTENCY_KEY_REUSED)";

/// Create a flash sale (admin). Its stock is armed in Redis at once. Send
/// an `Idempotency-Key` to retry safely: a retry answers with the sale the
/// first request created, never a second sale.
#[utoipa::path(post, path = "/api/admin/flash-sales", tag = "admin",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = ADMIN_KEY,
            min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._:-]+$")),
    request_body = CreateFlashSaleRequest,
    responses(
        (status = 201, description = "Created (check `armed`)", body = FlashSaleResponse),
        CreateSaleErrors,
    ))]
async fn create_flash_sale(
    State(state): State<AppState>,
    admin: Admin,
    key: Option<IdempotencyKey>,
    ValidJson(request): ValidJson<CreateFlashSaleRequest>,
) -> Result<(StatusCode, Json<FlashSaleResponse>), ApiError> {
    if request.offer_seconds.is_some() && request.hold_seconds.is_none() {
        return Err(ApiError::validation(
            "offer_seconds: only with hold_seconds (a sale without checkout holds keeps no waitlist)",
        ));
    }
    let new = NewSale {
        product_id: request.product_id,
        price: Money::from_minor(request.price)
            .ok_or_else(|| ApiError::validation("price: out of range"))?,
        window: SaleWindow::new(request.starts_at, request.ends_at)
            .ok_or_else(|| ApiError::validation("ends_at must be after starts_at"))?,
        per_user_limit: request.per_user_limit.unwrap_or(1),
        stock: request.stock,
        hold_seconds: request.hold_seconds,
        offer_seconds: request.offer_seconds,
    };
    let report = state.sales.create(&new, &admin.act_once(key)).await?;
    Ok((StatusCode::CREATED, Json(report.into())))
}

error_responses!(SaleErrors: [ADMIN] SaleNotFound);

/// Read a flash sale with its live remaining stock (admin).
#[utoipa::path(get, path = "/api/admin/flash-sales/{id}", tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Flash sale id")),
    responses(
        (status = 200, description = "The sale", body = FlashSaleResponse),
        SaleErrors,
    ))]
async fn get_flash_sale(
    State(state): State<AppState>,
    _admin: Admin,
    PathParams(id): PathParams<Uuid>,
) -> Result<Json<FlashSaleResponse>, ApiError> {
    Ok(Json(state.sales.read(id).await?.into()))
}

error_responses!(UpdateSaleErrors: [ADMIN, JSON_BODY] SaleNotFound, InvalidStateTransition, InsufficientStock, IdempotencyKeyReused);

/// Pause, resume, cancel or end a sale, or add stock to it (admin).
/// Repeating an action is harmless; added stock is added again unless the
/// request carries an `Idempotency-Key` (then once, however often it is
/// sent; a keyed action is not applied again either, so a late retry of a
/// "pause" cannot undo a later "resume"). A change PostgreSQL saved but
/// Redis did not receive answers 503 for actions (retry it) and `armed:
/// false` for added stock (the next readiness probe adds it to Redis
/// exactly once).
#[utoipa::path(patch, path = "/api/admin/flash-sales/{id}", tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Flash sale id"),
        ("Idempotency-Key" = Option<String>, Header, description = ADMIN_KEY,
            min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._:-]+$")),
    request_body = UpdateFlashSaleRequest,
    responses(
        (status = 200, description = "The updated sale", body = FlashSaleResponse),
        UpdateSaleErrors,
    ))]
async fn update_flash_sale(
    State(state): State<AppState>,
    admin: Admin,
    key: Option<IdempotencyKey>,
    PathParams(id): PathParams<Uuid>,
    ValidJson(request): ValidJson<UpdateFlashSaleRequest>,
) -> Result<Json<FlashSaleResponse>, ApiError> {
    let change = match (request.action, request.add_stock) {
        (Some(action), None) => SaleChange::Action(action),
        (None, Some(units)) => SaleChange::AddStock(units),
        // `one_change` refused these while validating the body.
        _ => return Err(ApiError::validation(ONE_CHANGE)),
    };
    let report = state.sales.change(id, change, &admin.act_once(key)).await?;
    Ok(Json(report.into()))
}
