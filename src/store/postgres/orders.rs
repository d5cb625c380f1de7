//! Orders as shoppers read them. Orders are written by the worker.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Db;
use crate::store::StoreError;

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct OrderRow {
    pub id: Uuid,
    pub reservation_id: Uuid,
    pub flash_sale_id: Uuid,
    pub quantity: i32,
    pub unit_price: i64,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

impl Db {
    /// One page of the user's orders, newest first, and their total count.
    pub async fn user_orders(
        &self,
        user_id: Uuid,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<OrderRow>, i64), StoreError> {
        self.bounded(async {
            let orders = sqlx::query_as::<_, OrderRow>(
                "select id, reservation_id, flash_sale_id, quantity, unit_price, status, created_at
                 from orders where user_id = $1
                 order by created_at desc, id desc
                 limit $2 offset $3",
            )
            .bind(user_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(self.pool())
            .await?;
            let total: i64 = sqlx::query_scalar("select count(*) from orders where user_id = $1")
                .bind(user_id)
                .fetch_one(self.pool())
                .await?;
            Ok::<_, sqlx::Error>((orders, total))
        })
        .await
    }

    /// The order a reservation became, with its owner.
    pub async fn order_for_reservation(
        &self,
        reservation_id: Uuid,
    ) -> Result<Option<(OrderRow, Uuid)>, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Owned {
            #[sqlx(flatten)]
            order: OrderRow,
            user_id: Uuid,
        }
        let owned: Option<Owned> = self
            .bounded(
                sqlx::query_as(
                    "select id, reservation_id, flash_sale_id, quantity, unit_price, status, created_at, user_id
                     from orders where reservation_id = $1",
                )
                .bind(reservation_id)
                .fetch_optional(self.pool()),
            )
            .await?;
        Ok(owned.map(|owned| (owned.order, owned.user_id)))
    }
}
