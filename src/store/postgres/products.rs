//! Products and their stock rows, created together.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::{Db, audit::AdminAct, on_violation};
use crate::{
    domain::{Currency, DomainError, Money},
    store::StoreError,
};

/// A product to create, already validated.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price: Money,
    pub currency: Currency,
    pub stock: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProductRow {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price: Money,
    pub currency: Currency,
    pub total_quantity: i64,
    pub available_quantity: i64,
    pub created_at: DateTime<Utc>,
}

impl Db {
    /// Inserts the product, its stock row and the audit record in one
    /// transaction; a taken SKU is [`DomainError::SkuTaken`].
    pub async fn create_product(
        &self,
        new: &NewProduct,
        act: &AdminAct,
    ) -> Result<ProductRow, StoreError> {
        self.bounded(async {
            let mut tx = self.pool().begin().await?;
            let product: ProductRow = sqlx::query_as(
                "with product as (
                         insert into products (id, sku, name, description, price, currency)
                         values ($1, $2, $3, $4, $5, $6)
                         returning *
                     ), stock as (
                         insert into stocks (product_id, total_quantity, available_quantity)
                         select id, $7, $7 from product
                         returning *
                     )
                     select product.id, sku, name, description, price, currency,
                            stock.total_quantity, stock.available_quantity, product.created_at
                     from product join stock on stock.product_id = product.id",
            )
            .bind(Uuid::now_v7())
            .bind(&new.sku)
            .bind(&new.name)
            .bind(&new.description)
            .bind(new.price.minor())
            .bind(new.currency.as_str())
            .bind(new.stock)
            .fetch_one(&mut *tx)
            .await
            .map_err(on_violation(
                "products_sku_key",
                DomainError::SkuTaken(new.sku.clone()),
            ))?;
            let details = json!({ "sku": new.sku, "name": new.name, "stock": new.stock });
            act.record(
                &mut tx,
                "product.create",
                "product",
                product.id,
                details,
                None,
            )
            .await?;
            tx.commit().await?;
            Ok::<_, StoreError>(product)
        })
        .await
    }
}
