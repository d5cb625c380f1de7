//! Admin: create products with their stock.

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;
use validator::{Validate, ValidationError};

use crate::{
    domain::{Currency, Money},
    http::error_code::error_responses,
    http::{
        ApiError, AppState,
        extract::{Admin, ValidJson},
    },
    store::postgres::{NewProduct, ProductRow},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_product))
}

/// Largest stock accepted for one product or sale: a billion units.
pub const MAX_STOCK: i64 = 1_000_000_000;

#[derive(Debug, Deserialize, Validate, ToSchema)]
pub struct CreateProductRequest {
    /// Unique stock-keeping unit: letters, digits, `-`, `_`, `.`.
    #[validate(length(min = 1, max = 64), custom(function = "sku_charset"))]
    #[schema(example = "SNEAKER-42")]
    pub sku: String,
    #[validate(length(min = 1, max = 200, message = "must be 1-200 characters"))]
    pub name: String,
    #[validate(length(max = 2000, message = "must be at most 2000 characters"))]
    pub description: Option<String>,
    /// Regular price in minor units (cents).
    #[validate(range(min = 0, max = Money::MAX, message = "must be 0 to 10^12 minor units"))]
    pub price: i64,
    /// ISO 4217 code, e.g. `EUR`.
    #[validate(custom(function = "currency_code"))]
    #[schema(example = "EUR")]
    pub currency: String,
    /// Units in the warehouse.
    #[validate(range(min = 0, max = MAX_STOCK, message = "must be 0 to 1000000000 units"))]
    pub stock: i64,
}

fn sku_charset(sku: &str) -> Result<(), ValidationError> {
    if sku
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Ok(())
    } else {
        Err(ValidationError::new("sku")
            .with_message("use only letters, digits, '-', '_' and '.'".into()))
    }
}

fn currency_code(code: &str) -> Result<(), ValidationError> {
    match Currency::parse(code) {
        Some(_) => Ok(()),
        None => Err(ValidationError::new("currency")
            .with_message("must be an ISO 4217 code of three upper-case letters, e.g. EUR".into())),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductResponse {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price: Money,
    pub currency: Currency,
    pub stock: StockResponse,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StockResponse {
    pub total: i64,
    /// Units not yet sold.
    pub available: i64,
}

impl From<ProductRow> for ProductResponse {
    fn from(row: ProductRow) -> Self {
        Self {
            id: row.id,
            sku: row.sku,
            name: row.name,
            description: row.description,
            price: row.price,
            currency: row.currency,
            stock: StockResponse {
                total: row.total_quantity,
                available: row.available_quantity,
            },
            created_at: row.created_at,
        }
    }
}

error_responses!(CreateProductErrors: [ADMIN, JSON_BODY] SkuTaken);

/// Create a product and its stock (admin).
#[utoipa::path(post, path = "/api/admin/products", tag = "admin",
    security(("bearer" = [])),
    request_body = CreateProductRequest,
    responses(
        (status = 201, description = "Created", body = ProductResponse),
        CreateProductErrors,
    ))]
async fn create_product(
    State(state): State<AppState>,
    admin: Admin,
    ValidJson(request): ValidJson<CreateProductRequest>,
) -> Result<(StatusCode, Json<ProductResponse>), ApiError> {
    let new = NewProduct {
        sku: request.sku,
        name: request.name,
        description: request.description.unwrap_or_default(),
        price: Money::from_minor(request.price)
            .ok_or_else(|| ApiError::validation("price: out of range"))?,
        currency: Currency::parse(&request.currency)
            .ok_or_else(|| ApiError::validation("currency: not an ISO 4217 code"))?,
        stock: request.stock,
    };
    let product = state.db.create_product(&new, &admin.act()).await?;
    tracing::info!(admin = %admin.caller.user_id, product_id = %product.id, sku = %product.sku, "product created");
    Ok((StatusCode::CREATED, Json(product.into())))
}
