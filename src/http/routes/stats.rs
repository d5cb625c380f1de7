//! Operators: a sale's numbers ([`crate::app::Stats`]).

use axum::{Json, extract::State};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    app::stats::SaleStats,
    http::error_code::error_responses,
    http::{
        ApiError, AppState,
        extract::{Admin, PathParams, QueryParams},
    },
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_current_sale_stats))
        .routes(routes!(get_sale_stats))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct StatsQuery {
    /// The sale; without it, the current sale.
    pub sale_id: Option<Uuid>,
}

error_responses!(CurrentStatsErrors: [ADMIN] SaleNotFound, NoCurrentSale);

/// Stats of the current (or a given) sale (admin).
#[utoipa::path(get, path = "/api/flash-sale/stats", tag = "admin",
    security(("bearer" = [])),
    params(StatsQuery),
    responses(
        (status = 200, description = "The sale's numbers", body = SaleStats),
        CurrentStatsErrors,
    ))]
async fn get_current_sale_stats(
    State(state): State<AppState>,
    _admin: Admin,
    QueryParams(query): QueryParams<StatsQuery>,
) -> Result<Json<SaleStats>, ApiError> {
    let sale_id = state.sales.id_or_current(query.sale_id).await?;
    Ok(Json(state.stats.of_sale(sale_id).await?))
}

error_responses!(SaleStatsErrors: [ADMIN] SaleNotFound);

/// Stats of one sale (admin).
#[utoipa::path(get, path = "/api/admin/flash-sales/{id}/stats", tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Flash sale id")),
    responses(
        (status = 200, description = "The sale's numbers", body = SaleStats),
        SaleStatsErrors,
    ))]
async fn get_sale_stats(
    State(state): State<AppState>,
    _admin: Admin,
    PathParams(id): PathParams<Uuid>,
) -> Result<Json<SaleStats>, ApiError> {
    Ok(Json(state.stats.of_sale(id).await?))
}
