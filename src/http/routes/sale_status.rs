//! Public: the state of the current (or a given) flash sale, from
//! [`crate::app::Sales::view`]: a read stampede costs no store round trip.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    domain::{Currency, Money, SaleState},
    http::error_code::error_responses,
    http::{
        ApiError, AppState,
        extract::{Caller, QueryParams},
    },
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_sale_status))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SaleStatusQuery {
    /// A sale id; without it, the current sale.
    pub sale_id: Option<Uuid>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SaleStatusResponse {
    pub sale_id: Uuid,
    pub product_id: Uuid,
    /// What is for sale: the product's name and description.
    pub product_name: String,
    pub product_description: String,
    pub state: SaleState,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub price: Money,
    pub currency: Currency,
    pub per_user_limit: i32,
    /// Seconds a buyer has to pay for their order; null: sold when ordered.
    pub hold_seconds: Option<i32>,
    /// Seconds a waitlist offer gives its shopper to pay; null: the sale
    /// keeps no waitlist (it has no checkout hold).
    pub offer_seconds: Option<i32>,
    /// Units allotted to the sale.
    pub stock: i64,
    /// Units left to reserve; null while the sale is not armed.
    pub remaining: Option<i64>,
    /// The node's clock, to count down against.
    pub server_time: DateTime<Utc>,
    /// For an authenticated caller: what they hold and whether they may buy.
    pub you: Option<CallerStanding>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CallerStanding {
    /// Units the caller holds in this sale (pending and confirmed).
    pub units_held: i64,
    /// The sale is active, has stock, and the caller is under the limit
    /// ([`crate::domain::may_buy`]).
    pub can_purchase: bool,
}

error_responses!(SaleStatusErrors: [SIGNED_IN] SaleNotFound, NoCurrentSale);

/// The current sale (or `sale_id`): state, window, price and remaining
/// stock; with a bearer token, also the caller's standing.
#[utoipa::path(get, path = "/api/flash-sale/status", tag = "sale",
    params(SaleStatusQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The sale", body = SaleStatusResponse),
        SaleStatusErrors,
    ))]
async fn get_sale_status(
    State(state): State<AppState>,
    caller: Option<Caller>,
    QueryParams(query): QueryParams<SaleStatusQuery>,
) -> Result<Json<SaleStatusResponse>, ApiError> {
    let view = state.sales.view(query.sale_id).await?;
    let now = Utc::now();
    let sale_state = view.state(now);
    let you = match caller {
        Some(caller) => {
            let standing = state.sales.standing(&view, caller.user_id, now).await?;
            Some(CallerStanding {
                units_held: standing.units_held,
                can_purchase: standing.may_buy,
            })
        }
        None => None,
    };
    let sale = view.sale;
    Ok(Json(SaleStatusResponse {
        sale_id: sale.id,
        product_id: sale.product_id,
        product_name: sale.product_name.clone(),
        product_description: sale.product_description.clone(),
        hold_seconds: sale.hold_seconds,
        offer_seconds: sale.offer_window(),
        state: sale_state,
        starts_at: sale.starts_at,
        ends_at: sale.ends_at,
        price: sale.sale_price,
        currency: sale.currency,
        per_user_limit: sale.per_user_limit,
        stock: sale.allotted_quantity,
        remaining: view.remaining,
        server_time: now,
        you,
    }))
}
