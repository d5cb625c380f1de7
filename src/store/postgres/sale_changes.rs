//! Operators' changes of sales: creation against the product's free stock,
//! actions (pause, resume, cancel, end) and added stock. Each takes the
//! product's advisory lock first (`sales::lock_product`), records itself in
//! the audit trail in its own transaction, and happens once per
//! Idempotency-Key when the operator sent one ([`AdminAct::done_before`]).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{
    Db,
    audit::AdminAct,
    sales::{NewSale, SaleRow, free_stock, lock_product, lock_sale_product, select_sale},
};
use crate::{
    domain::{DomainError, OpeningRules, SaleAction},
    store::StoreError,
};

impl Db {
    pub async fn create_sale(
        &self,
        new: &NewSale,
        rules: OpeningRules,
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
            // Judged after the key's lookup: a creation whose answer was
            // lost is answered again even once its sale has ended, or on a
            // node whose shortest hold was raised since.
            rules.admit(&new.window, new.hold_seconds, new.offer_seconds)?;
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
            .bind(new.window.opening_state(rules.now).as_str())
            .bind(new.per_user_limit)
            .bind(new.stock)
            .bind(new.hold_seconds)
            .bind(new.offer_seconds)
            .execute(&mut *tx)
            .await?;
            let sale = select_sale(&mut tx, id, false)
                .await?
                .ok_or(DomainError::SaleNotFound(id))?;
            act.record(&mut tx, "sale.create", "sale", id, asked, Some(request))
                .await?;
            tx.commit().await?;
            tracing::info!(admin = %act.actor_id, sale_id = %id, stock = new.stock, "flash sale created");
            Ok::<_, StoreError>(sale)
        })
        .await
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
            // A keyed action sent again is not applied again: a "pause"
            // retried after a later "resume" would pause the sale anew.
            let request = json!({ "action": action.audit_name(), "sale": id });
            let sale = match begin_change(&mut tx, id, act, &request).await? {
                Begun::Replayed(sale) => return Ok(sale),
                Begun::New { sale, .. } => sale,
            };
            let next = sale.window().apply(sale.state, action, now)?;
            let details = json!({ "from": sale.state.as_str(), "to": next.as_str() });
            act.record(&mut tx, action.audit_name(), "sale", id, details, Some(request))
                .await?;
            if next == sale.state {
                tx.commit().await?;
                tracing::info!(admin = %act.actor_id, sale_id = %id, %action, state = %sale.state, "sale action applied (the sale was already so)");
                return Ok(sale);
            }
            // A cancelled sale commits nothing more (settlement fails every
            // reservation of it under this lock), so its unsold units are
            // free at once; an ended one keeps them until its backlog
            // settles (`crate::store::closing`). Its unpaid holds are not
            // ended here: a stampede's worth of them would outlast the
            // bound and the cancel could never commit. Payments refuse
            // them from now on, and the hold sweep cancels them in batches
            // (`holds::end_due_holds`) while `holds_to_cancel` says so.
            sqlx::query(
                "update flash_sales set state = $2, version = version + 1, updated_at = now(),
                        allotment_released_at = case when $2 = 'cancelled' then now() end,
                        holds_to_cancel = $2 = 'cancelled' and hold_seconds is not null
                 where id = $1",
            )
            .bind(id)
            .bind(next.as_str())
            .execute(&mut *tx)
            .await?;
            let sale = select_sale(&mut tx, id, false)
                .await?
                .ok_or(DomainError::SaleNotFound(id))?;
            tx.commit().await?;
            tracing::info!(admin = %act.actor_id, sale_id = %id, %action, state = %sale.state, "sale action applied");
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
            let request = json!({ "action": "sale.add_stock", "sale": id, "quantity": quantity });
            let (product_id, sale) = match begin_change(&mut tx, id, act, &request).await? {
                Begun::Replayed(sale) => return Ok(sale),
                Begun::New { product_id, sale } => (product_id, sale),
            };
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
            act.record(&mut tx, "sale.add_stock", "sale", id, details, Some(request))
                .await?;
            let sale = select_sale(&mut tx, id, false).await?.ok_or(DomainError::SaleNotFound(id))?;
            tx.commit().await?;
            tracing::info!(admin = %act.actor_id, sale_id = %id, units = quantity, "stock added to sale");
            Ok::<_, StoreError>(sale)
        })
        .await
    }
}

/// How a change of an existing sale starts.
enum Begun {
    /// Its Idempotency-Key named this same change before: the sale as it is.
    Replayed(SaleRow),
    /// A change to make: the sale (locked for update) and its product.
    New { product_id: Uuid, sale: SaleRow },
}

/// What every change of an existing sale does first: the product's lock
/// (the settlement lock: a batch in flight commits before the change and
/// every later batch reads it, so an admin answered "cancelled" never sees
/// an order committed after), the sale read for update, and the verdict on
/// the act's Idempotency-Key for `request`.
async fn begin_change(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    act: &AdminAct,
    request: &Value,
) -> Result<Begun, StoreError> {
    let product_id = lock_sale_product(tx, id).await?;
    let sale = select_sale(tx, id, true)
        .await?
        .ok_or(DomainError::SaleNotFound(id))?;
    Ok(if act.done_before(tx, request).await?.is_some() {
        Begun::Replayed(sale)
    } else {
        Begun::New { product_id, sale }
    })
}
