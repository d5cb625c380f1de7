//! The admin audit trail: every admin action is written in the transaction
//! of the change it describes (so an action and its record commit or fail
//! together), with who, what, when and the request id; admins read it back
//! newest first.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{Db, on_violation};
use crate::{domain::DomainError, store::StoreError};

/// Who is acting, as every admin store call receives it.
#[derive(Debug, Clone)]
pub struct AdminAct {
    pub actor_id: Uuid,
    /// The `x-request-id` of the HTTP request.
    pub request_id: Option<String>,
    /// The request's `Idempotency-Key`: the change it names happens once
    /// however often it is sent ([`AdminAct::done_before`]).
    pub idempotency_key: Option<String>,
}

/// One audit record, as admins read it (`GET /api/admin/audit`).
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor_id: Uuid,
    /// `local` (operator tokens, dev logins) or the provider's issuer.
    pub actor_issuer: String,
    /// The email for local users, the provider's `sub` otherwise.
    pub actor_subject: String,
    /// e.g. `sale.create`, `sale.pause`, `sale.add_stock`, `user.ban`.
    pub action: String,
    /// `product`, `sale` or `user`.
    pub target_type: String,
    pub target_id: Uuid,
    /// What the action changed, e.g. `{"from": "active", "to": "paused"}`.
    #[schema(value_type = Object)]
    pub details: Value,
    /// The `x-request-id` of the admin's request.
    pub request_id: Option<String>,
    /// The `Idempotency-Key` the change was sent with, if any.
    pub idempotency_key: Option<String>,
}

impl AdminAct {
    /// What became of this act's Idempotency-Key before: the target of the
    /// change it named when that was `request` (the caller answers with the
    /// target as it is now and changes nothing), `None` when the act has no
    /// key or the key is new. A key that named another request is refused
    /// (`IdempotencyKeyReused`). Called under the lock that serialises the
    /// change, so two requests with one key cannot both find it new; two
    /// under different locks meet at the key's unique index ([`Self::record`]).
    pub(super) async fn done_before(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        request: &Value,
    ) -> Result<Option<Uuid>, StoreError> {
        let Some(key) = &self.idempotency_key else {
            return Ok(None);
        };
        let earlier: Option<(Uuid, Option<Value>)> = sqlx::query_as(
            "select target_id, idempotency_request from admin_audit
             where actor_id = $1 and idempotency_key = $2",
        )
        .bind(self.actor_id)
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?;
        match earlier {
            None => Ok(None),
            Some((target, Some(named))) if named == *request => {
                tracing::info!(admin = %self.actor_id, idempotency_key = %key, target_id = %target,
                    "an operator's change sent again under its Idempotency-Key: answered, nothing changed");
                Ok(Some(target))
            }
            Some(_) => Err(DomainError::IdempotencyKeyReused.into()),
        }
    }

    /// Writes the record of `action` on `target` inside `tx`; a change that
    /// honours this act's Idempotency-Key passes the `request` the key
    /// names (see [`Self::done_before`]), and the key is kept with it.
    pub(super) async fn record(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        action: &'static str,
        target_type: &'static str,
        target_id: Uuid,
        details: Value,
        request: Option<Value>,
    ) -> Result<(), StoreError> {
        let key = request.as_ref().and(self.idempotency_key.as_ref());
        sqlx::query(
            "insert into admin_audit
               (id, actor_id, action, target_type, target_id, details, request_id,
                idempotency_key, idempotency_request)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(Uuid::now_v7())
        .bind(self.actor_id)
        .bind(action)
        .bind(target_type)
        .bind(target_id)
        .bind(details)
        .bind(&self.request_id)
        .bind(key)
        .bind(key.and(request))
        .execute(&mut **tx)
        .await
        .map(drop)
        .map_err(on_violation(
            "admin_audit_idempotency_key",
            DomainError::IdempotencyKeyReused,
        ))
    }
}

impl Db {
    /// Audit records newest first, `limit` of them, older than `before`
    /// (a record id, for the next page) when given, about `target` when given.
    pub async fn list_audit(
        &self,
        limit: i64,
        before: Option<Uuid>,
        target: Option<Uuid>,
    ) -> Result<Vec<AuditRow>, StoreError> {
        self.bounded(
            sqlx::query_as::<_, AuditRow>(
                "select a.id, a.at, a.actor_id, u.issuer as actor_issuer, u.subject as actor_subject,
                        a.action, a.target_type, a.target_id, a.details, a.request_id,
                        a.idempotency_key
                 from admin_audit a join users u on u.id = a.actor_id
                 where ($2::uuid is null or (a.at, a.id) < (select at, id from admin_audit where id = $2))
                   and ($3::uuid is null or a.target_id = $3)
                 order by a.at desc, a.id desc
                 limit $1",
            )
            .bind(limit)
            .bind(before)
            .bind(target)
            .fetch_all(self.pool()),
        )
        .await
    }
}
