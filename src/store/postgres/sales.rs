//! Flash sales: creation against the product's free stock, admin actions,
//! added stock, and the reads the API and arming need.
//!
//! Every change of a product's allotments takes the product's advisory lock
//! first — the same lock the worker takes to commit orders — so allotments
//! and commits never interleave and never deadlock on row-lock order.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{Postgres, Transaction, types::Json};
use uuid::Uuid;

use super::{Db, audit::AdminAct, holds::cancel_sale_holds};
use crate::{
    domain::{
        Currency, DomainError, HoldTerms, Money, Quantity, SaleAction, SaleState, SaleWindow,
    },
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
    pub async fn create_sale(
        &self,
        new: &NewSale,
        now: DateTime<Utc>,
        act: &AdminAct,
    ) -> Result<SaleRow, StoreError> {
        self.bounded(async {
            let mut tx = self.pool().begin().await?;
            lock_product(&mut tx, new.product_id).await?;
            let asked = json!({
                "product_id": new.product_id,
                "price": new.price.minor(),
                "starts_at": new.window.starts_at(),
                "ends_at": new.window.ends_at(),
                "per_user_limit": new.per_user_limit,
                "stock": new.stock,
                "hold_seconds": new.hold_seconds,
                "offer_seconds": new.offer_seconds,
            });
            let request = json!({ "action": "sale.create", "sale": asked });
            if let Some(id) = act.done_before(&mut tx, &request).await? {
                return Ok(select_sale(&mut tx, id, false)
                    .await?
                    .ok_or(DomainError::SaleNotFound(id))?);
            }
            let free = free_stock(&mut tx, new.product_id)
                .await?
                .ok_or(DomainError::ProductNotFound(new.product_id))?;
            if new.stock > free {
                return Err(DomainError::InsufficientStock {
                    requested: new.stock,
                    available: free,
                }
                .into());
            }
            let id = Uuid::now_v7();
            sqlx::query(
                "insert into flash_sales
                   (id, product_id, sale_price, starts_at, ends_at, state, per_user_limit,
                    allotted_quantity, hold_seconds, offer_seconds)
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(id)
            .bind(new.product_id)
            .bind(new.price.minor())
            .bind(new.window.starts_at())
            .bind(new.window.ends_at())
            .bind(new.window.opening_state(now).as_str())
            .bind(new.per_user_limit)
            .bind(new.stock)
            .bind(new.hold_seconds)
            .bind(new.offer_seconds)
            .execute(&mut *tx)
            .await?;
            let sale = select_sale(&mut tx, id, false)
                .await?
                .ok_or(DomainError::SaleNotFound(id))?;
            act.record(&mut tx, "sale.create", "sale", id, asked, request)
                .await?;
            tx.commit().await?;
            Ok::<_, StoreError>(sale)
        })
        .await
    }

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

    /// Applies an admin action (pause, resume, cancel, end) and returns the sale.
    pub async fn apply_sale_action(
        &self,
        id: Uuid,
        action: SaleAction,
        now: DateTime<Utc>,
        act: &AdminAct,
    ) -> Result<SaleRow, StoreError> {
        self.bounded(async {
            let mut tx = self.pool().begin().await?;
            // The settlement lock: a batch in flight commits before the
            // change, and every later batch reads it. An admin answered
            // "cancelled" never sees an order committed after.
            let product_id = lock_sale_product(&mut tx, id).await?;
            let sale = select_sale(&mut tx, id, true)
                .await?
                .ok_or(DomainError::SaleNotFound(id))?;
            // A keyed action sent again is not applied again: a "pause"
            // retried after a later "resume" would pause the sale anew.
            let request = json!({ "action": action.audit_name(), "sale": id });
            if act.done_before(&mut tx, &request).await?.is_some() {
                return Ok(sale);
            }
            let next = sale.window().apply(sale.state, action, now)?;
            let details = json!({ "from": sale.state.as_str(), "to": next.as_str() });
            act.record(&mut tx, action.audit_name(), "sale", id, details, request)
                .await?;
            if next == sale.state {
                tx.commit().await?;
                return Ok(sale);
            }
            // A cancelled sale commits nothing more (settlement fails every
            // reservation of it under this lock), so its unsold units are
            // free at once; an ended one keeps them until its backlog
            // settles (`crate::store::closing`).
            sqlx::query(
                "update flash_sales set state = $2, version = version + 1, updated_at = now(),
                        allotment_released_at = case when $2 = 'cancelled' then now() end
                 where id = $1",
            )
            .bind(id)
            .bind(next.as_str())
            .execute(&mut *tx)
            .await?;
            if next == SaleState::Cancelled {
                let holds = cancel_sale_holds(&mut tx, product_id, id).await?;
                if holds > 0 {
                    tracing::info!(sale_id = %id, holds, "the cancelled sale's unpaid holds are cancelled");
                }
            }
            let sale = select_sale(&mut tx, id, false)
                .await?
                .ok_or(DomainError::SaleNotFound(id))?;
            tx.commit().await?;
            Ok::<_, StoreError>(sale)
        })
        .await
    }

    /// Allots `quantity` more units of the product to the sale.
    pub async fn add_sale_stock(
        &self,
        id: Uuid,
        quantity: i64,
        now: DateTime<Utc>,
        act: &AdminAct,
    ) -> Result<SaleRow, StoreError> {
        self.bounded(async {
            let mut tx = self.pool().begin().await?;
            let product_id = lock_sale_product(&mut tx, id).await?;
            let sale = select_sale(&mut tx, id, true).await?.ok_or(DomainError::SaleNotFound(id))?;
            let request = json!({ "action": "sale.add_stock", "sale": id, "quantity": quantity });
            if act.done_before(&mut tx, &request).await?.is_some() {
                return Ok(sale);
            }
            sale.window().can_add_stock(sale.state, now)?;
            let free = free_stock(&mut tx, product_id)
                .await?
                .ok_or(DomainError::ProductNotFound(product_id))?;
            if quantity > free {
                return Err(DomainError::InsufficientStock {
                    requested: quantity,
                    available: free,
                }
                .into());
            }
            sqlx::query(
                "update flash_sales
                 set allotted_quantity = allotted_quantity + $2, version = version + 1, updated_at = now()
                 where id = $1",
            )
            .bind(id)
            .bind(quantity)
            .execute(&mut *tx)
            .await?;
            let details = json!({ "quantity": quantity, "allotted_before": sale.allotted_quantity });
            act.record(&mut tx, "sale.add_stock", "sale", id, details, request)
                .await?;
            let sale = select_sale(&mut tx, id, false).await?.ok_or(DomainError::SaleNotFound(id))?;
            tx.commit().await?;
            Ok::<_, StoreError>(sale)
        })
        .await
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
async fn free_stock(
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
