//! Public: the state of the current (or a given) flash sale.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    domain::{DomainError, SaleState},
    http::{ApiError, AppState, extract::QueryParams},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_sale_status))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SaleStatusQuery {
    /// A sale id; without it, the current sale.
    pub sale_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SaleStatusResponse {
    pub sale_id: Uuid,
    pub product_id: Uuid,
    pub state: SaleState,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub price: i64,
    pub currency: String,
    pub per_user_limit: i32,
    /// Units allotted to the sale.
    pub stock: i64,
    /// Units left to reserve; null while the sale is not armed.
    pub remaining: Option<i64>,
    /// The node's clock, to count down against.
    pub server_time: DateTime<Utc>,
}

/// The current sale (or `sale_id`): state, window, price and remaining stock.
#[utoipa::path(get, path = "/api/flash-sale/status", tag = "sale",
    params(SaleStatusQuery),
    responses(
        (status = 200, description = "The sale", body = SaleStatusResponse),
        (status = 400, description = "sale_id is not a UUID", body = crate::http::ErrorBody),
        (status = 404, description = "SALE_NOT_FOUND or NO_CURRENT_SALE", body = crate::http::ErrorBody),
        (status = 503, description = "A dependency is unavailable", body = crate::http::ErrorBody),
    ))]
async fn get_sale_status(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<SaleStatusQuery>,
) -> Result<Json<SaleStatusResponse>, ApiError> {
    let sale = match query.sale_id {
        Some(id) => state
            .db
            .find_sale(id)
            .await?
            .ok_or(DomainError::SaleNotFound(id))?,
        None => state
            .db
            .current_sale()
            .await?
            .ok_or(DomainError::NoCurrentSale)?,
    };
    let remaining = state.redis.remaining(sale.id).await?;
    let now = Utc::now();
    Ok(Json(SaleStatusResponse {
        state: sale.effective_state(now),
        sale_id: sale.id,
        product_id: sale.product_id,
        starts_at: sale.starts_at,
        ends_at: sale.ends_at,
        price: sale.sale_price,
        currency: sale.currency,
        per_user_limit: sale.per_user_limit,
        stock: sale.allotted_quantity,
        remaining,
        server_time: now,
    }))
}
