//! Flash sales: the rows, and the reads the API, arming and the workers'
//! reconcilers need (operators' changes: `sale_changes`).
//!
//! Every change of a product's allotments takes the product's advisory lock
//! first — the same lock the worker takes to commit orders — so allotments
//! and commits never interleave and never deadlock on row-lock order.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction, types::Json};
use uuid::Uuid;

use super::Db;
use crate::{
    domain::{Currency, DomainError, HoldTerms, Money, Quantity, SaleState, SaleWindow},
    store::StoreError,
};

/// A sale to create, already validated.
#[derive(Debug, Clone)]
pub struct NewSale {
    pub product_id: Uuid,
    pub price: Money,
    pub window: SaleWindow,
    pub per_user_limit: i32,
    pub stock: i64,
    /// Seconds a buyer has to pay; `None`: orders are sold when written.
    pub hold_seconds: Option<i32>,
    /// Seconds a waitlist offer gives its shopper; `None`: the hold's.
    pub offer_seconds: Option<i32>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SaleRow {
    pub id: Uuid,
    pub product_id: Uuid,
    /// What is for sale: the product's name and description.
    pub product_name: String,
    pub product_description: String,
    pub sale_price: Money,
    pub currency: Currency,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    #[sqlx(try_from = "String")]
    pub state: SaleState,
    pub per_user_limit: i32,
    pub allotted_quantity: i64,
    /// Units sold or held for a buyer who has yet to pay.
    pub confirmed_quantity: i64,
    /// Seconds a buyer has to pay; `None`: orders are sold when written.
    pub hold_seconds: Option<i32>,
    /// Seconds a waitlist offer gives its shopper; `None`: the hold's.
    pub offer_seconds: Option<i32>,
    /// One more on every admin change; arming never lets an older version
    /// of the sale overwrite a newer one in Redis.
    pub version: i64,
    /// The sale's Redis counters, kept when its keys left Redis (retention).
    pub archived_counters: Option<Json<HashMap<String, i64>>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SaleRow {
    pub fn window(&self) -> SaleWindow {
        SaleWindow::new(self.starts_at, self.ends_at)
            .expect("flash_sales_window_valid guarantees starts_at < ends_at")
    }

    /// What `quantity` units reserved at `reserved_at_ms` (Unix ms) cost and
    /// must be paid by; none without a checkout hold.
    pub fn hold_terms(&self, quantity: Quantity, reserved_at_ms: i64) -> Option<HoldTerms> {
        HoldTerms::new(
            self.hold_seconds,
            self.sale_price,
            &self.currency,
            quantity,
            reserved_at_ms,
        )
    }

    /// Seconds a waitlist offer gives its shopper: the sale's offer time,
    /// else its hold; `None` for a sale without holds (it keeps no
    /// waitlist: its units never come back).
    pub fn offer_window(&self) -> Option<i32> {
        self.hold_seconds
            .map(|hold| self.offer_seconds.unwrap_or(hold))
    }

    pub fn effective_state(&self, now: DateTime<Utc>) -> SaleState {
        self.window().effective_state(self.state, now)
    }
}

/// `select <every SaleRow column> from flash_sales s join products p ...`
/// followed by the given clauses, as one `&'static str`.
macro_rules! select_sales {
    ($($clause:literal),*) => {
        concat!(
            "select s.id, s.product_id, p.name as product_name, p.description as product_description,
                    s.sale_price, p.currency, s.starts_at, s.ends_at,
                    s.state, s.per_user_limit, s.allotted_quantity, s.confirmed_quantity,
                    s.hold_seconds, s.offer_seconds, s.version, s.archived_counters, s.created_at, s.updated_at
             from flash_sales s join products p on p.id = s.product_id ",
            $($clause),*
        )
    };
}

// Open states, whose unsold allotment is still promised to shoppers, are
// `('scheduled', 'active', 'paused')` in the queries below.

impl Db {
    pub async fn find_sale(&self, id: Uuid) -> Result<Option<SaleRow>, StoreError> {
        self.bounded(
            sqlx::query_as::<_, SaleRow>(select_sales!("where s.id = $1"))
                .bind(id)
                .fetch_optional(self.pool()),
        )
        .await
    }

    /// The sale shoppers mean when they name none: the open sale selling now
    /// (earliest started first), else the next one to start.
    pub async fn current_sale(&self) -> Result<Option<SaleRow>, StoreError> {
        self.bounded(
            sqlx::query_as::<_, SaleRow>(select_sales!(
                "where s.state in ('scheduled', 'active', 'paused') and s.ends_at > now()
                 order by (s.starts_at <= now()) desc, s.starts_at, s.id
                 limit 1"
            ))
            .fetch_optional(self.pool()),
        )
        .await
    }

    /// Open sales whose window has not passed: the ones Redis must hold.
    pub async fn sales_to_arm(&self) -> Result<Vec<SaleRow>, StoreError> {
        self.bounded(
            sqlx::query_as::<_, SaleRow>(select_sales!(
                "where s.state in ('scheduled', 'active', 'paused') and s.ends_at > now()"
            ))
            .fetch_all(self.pool()),
        )
        .await
    }

    /// Sales whose reservations may still need settling: every sale not
    /// archived yet (a sale is archived only once nothing of it is pending).
    pub async fn sales_to_reconcile(&self) -> Result<Vec<SaleRow>, StoreError> {
        self.bounded(
            sqlx::query_as::<_, SaleRow>(select_sales!("where s.archived_at is null"))
                .fetch_all(self.pool()),
        )
        .await
    }

    /// Ends, under the product lock, every open sale whose window has
    /// passed (the clock closed it; PostgreSQL records it so that its
    /// allotment can be released and its keys archived like any ended
    /// sale's); returns the sales ended.
    pub async fn end_expired_sales(&self) -> Result<Vec<SaleRow>, StoreError> {
        let expired: Vec<Uuid> = self
            .bounded(
                sqlx::query_scalar(
                    "select id from flash_sales
                     where state in ('scheduled', 'active', 'paused') and ends_at <= now()",
                )
                .fetch_all(self.pool()),
            )
            .await?;
        let mut ended = Vec::with_capacity(expired.len());
        for id in expired {
            let sale = self
                .bounded(async {
                    let mut tx = self.pool().begin().await?;
                    lock_sale_product(&mut tx, id).await?;
                    let changed = sqlx::query(
                        "update flash_sales set state = 'ended', version = version + 1, updated_at = now()
                         where id = $1 and state in ('scheduled', 'active', 'paused') and ends_at <= now()",
                    )
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    let sale = select_sale(&mut tx, id, false).await?;
                    tx.commit().await?;
                    Ok::<_, StoreError>(sale.filter(|_| changed == 1))
                })
                .await?;
            ended.extend(sale);
        }
        Ok(ended)
    }

    /// Closed sales not archived yet.
    pub async fn closed_sales(&self) -> Result<Vec<SaleRow>, StoreError> {
        self.bounded(
            sqlx::query_as::<_, SaleRow>(select_sales!(
                "where s.state in ('ended', 'cancelled') and s.archived_at is null"
            ))
            .fetch_all(self.pool()),
        )
        .await
    }

    /// Closed sales whose unsold allotment is still promised.
    pub async fn closed_sales_holding_allotment(&self) -> Result<Vec<SaleRow>, StoreError> {
        self.bounded(
            sqlx::query_as::<_, SaleRow>(select_sales!(
                "where s.state in ('ended', 'cancelled') and s.allotment_released_at is null"
            ))
            .fetch_all(self.pool()),
        )
        .await
    }

    /// Frees a closed sale's unsold allotment for other sales, under the
    /// product lock. The caller has seen that none of its reservations can
    /// still commit; from now on settlement commits nothing more for it.
    /// Returns whether this call released it.
    pub async fn release_allotment(&self, id: Uuid) -> Result<bool, StoreError> {
        self.bounded(async {
            let mut tx = self.pool().begin().await?;
            lock_sale_product(&mut tx, id).await?;
            let released = sqlx::query(
                "update flash_sales set allotment_released_at = now()
                 where id = $1 and state in ('ended', 'cancelled') and allotment_released_at is null",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok::<_, StoreError>(released == 1)
        })
        .await
    }

    /// Closed sales settled for longer than `retention` whose keys are
    /// still in Redis, and whose checkout holds have all ended and given
    /// Redis their units back (a later return would write the sale's keys
    /// again after the archive removed them).
    pub async fn sales_to_archive(&self, retention: Duration) -> Result<Vec<SaleRow>, StoreError> {
        self.bounded(
            sqlx::query_as::<_, SaleRow>(select_sales!(
                "where s.state in ('ended', 'cancelled') and s.archived_at is null
                   and s.allotment_released_at < now() - make_interval(secs => $1)
                   and not exists (
                       select 1 from orders o
                       where o.flash_sale_id = s.id and o.pay_by is not null
                         and (o.status = 'awaiting_payment'
                              or (o.status in ('expired', 'cancelled')
                                  and o.units_returned_at is null)))"
            ))
            .bind(retention.as_secs_f64())
            .fetch_all(self.pool()),
        )
        .await
    }

    /// Keeps a closed sale's Redis counters (the first copy wins: a second
    /// archiving after a crash must not replace them with an empty set).
    pub async fn keep_archived_counters(
        &self,
        id: Uuid,
        counters: &HashMap<String, i64>,
    ) -> Result<(), StoreError> {
        self.bounded(
            sqlx::query(
                "update flash_sales set archived_counters = coalesce(archived_counters, $2)
                 where id = $1",
            )
            .bind(id)
            .bind(Json(counters))
            .execute(self.pool()),
        )
        .await
        .map(drop)
    }

    /// Records that the sale's keys are gone from Redis.
    pub async fn mark_archived(&self, id: Uuid) -> Result<(), StoreError> {
        self.bounded(
            sqlx::query("update flash_sales set archived_at = now() where id = $1")
                .bind(id)
                .execute(self.pool()),
        )
        .await
        .map(drop)
    }
}

/// Takes the product lock of a sale's product; returns the product.
pub(super) async fn lock_sale_product(
    tx: &mut Transaction<'_, Postgres>,
    sale_id: Uuid,
) -> Result<Uuid, StoreError> {
    let product_id: Uuid = sqlx::query_scalar("select product_id from flash_sales where id = $1")
        .bind(sale_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(DomainError::SaleNotFound(sale_id))?;
    lock_product(tx, product_id).await?;
    Ok(product_id)
}

/// Serialises every change of one product's stock and allotments (admin and
/// worker alike) for the rest of the transaction.
pub(super) async fn lock_product(
    tx: &mut Transaction<'_, Postgres>,
    product_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1::text, 0))")
        .bind(product_id)
        .execute(&mut **tx)
        .await
        .map(drop)
}

/// Units of the product not yet sold and not promised to a sale (open, or
/// closed with reservations that may still commit), or `None` when the
/// product does not exist.
pub(super) async fn free_stock(
    tx: &mut Transaction<'_, Postgres>,
    product_id: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "select st.available_quantity - coalesce((
             select sum(s.allotted_quantity - s.confirmed_quantity)
             from flash_sales s
             where s.product_id = st.product_id and s.allotment_released_at is null
         ), 0)::bigint
         from stocks st where st.product_id = $1",
    )
    .bind(product_id)
    .fetch_optional(&mut **tx)
    .await
}

pub(super) async fn select_sale(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    for_update: bool,
) -> Result<Option<SaleRow>, sqlx::Error> {
    let query = if for_update {
        select_sales!("where s.id = $1 for update of s")
    } else {
        select_sales!("where s.id = $1")
    };
    sqlx::query_as::<_, SaleRow>(query)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
}
