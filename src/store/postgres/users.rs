//! Users: identities of an issuer (the development login and operator
//! tokens: 'local'; the shop's provider: its issuer URL), created on first
//! sight; bans and voided tokens.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::{Db, audit::AdminAct};
use crate::{
    domain::{DomainError, Email, Identity, Role},
    store::{StoreError, redis::AccountChange},
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub banned_at: Option<DateTime<Utc>>,
    pub tokens_valid_after: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl UserRow {
    /// What every node must know of this user after a ban or unban.
    pub fn account_change(&self) -> AccountChange {
        AccountChange {
            user_id: self.id,
            banned: self.banned_at.is_some(),
            tokens_valid_after_ms: self.tokens_valid_after.map(|at| at.timestamp_millis()),
            version: self.updated_at.timestamp_micros(),
        }
    }
}

const USER_COLUMNS: &str =
    "id, issuer, subject, email, role, banned_at, tokens_valid_after, created_at, updated_at";

impl Db {
    /// The local user of this email (development login, operator tokens),
    /// created on first use. `role` is recorded as the role last granted to
    /// it; authorization reads the token, never this column.
    pub async fn upsert_local_user(
        &self,
        email: &Email,
        role: Role,
    ) -> Result<UserRow, StoreError> {
        let identity = Identity::local(email);
        self.bounded(
            sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(format!(
                "insert into users (id, issuer, subject, email, role) values ($1, $2, $3, $4, $5)
                 on conflict on constraint users_identity_key
                 do update set role = excluded.role,
                               updated_at = case when users.role = excluded.role
                                                 then users.updated_at else now() end
                 returning {USER_COLUMNS}"
            )))
            .bind(identity.user_id())
            .bind(&identity.issuer)
            .bind(&identity.subject)
            .bind(email.as_str())
            .bind(role.as_str())
            .fetch_one(self.pool()),
        )
        .await
    }

    /// Records the provider's user the first time a node sees it (the id is
    /// derived from the identity); its email label follows the token.
    pub async fn upsert_identity(
        &self,
        id: Uuid,
        identity: &Identity,
        email: Option<&str>,
    ) -> Result<(), StoreError> {
        self.bounded(
            sqlx::query(
                "insert into users (id, issuer, subject, email) values ($1, $2, $3, $4)
                 on conflict on constraint users_identity_key
                 do update set email = excluded.email, updated_at = now()
                 where users.email is distinct from excluded.email",
            )
            .bind(id)
            .bind(&identity.issuer)
            .bind(&identity.subject)
            .bind(email)
            .execute(self.pool()),
        )
        .await
        .map(drop)
    }

    pub async fn find_user(&self, id: Uuid) -> Result<Option<UserRow>, StoreError> {
        self.bounded(
            sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(format!(
                "select {USER_COLUMNS} from users where id = $1"
            )))
            .bind(id)
            .fetch_optional(self.pool()),
        )
        .await
    }

    /// Suspends the user and voids every token issued so far. The row is
    /// locked first (`for update`), the lock that settling a batch holds on
    /// its users (`for key share`): a ban waits for batches in flight, and
    /// every batch after it sees the ban, so no order of the user commits
    /// after the ban was answered.
    pub async fn ban_user(&self, id: Uuid, act: &AdminAct) -> Result<UserRow, StoreError> {
        self.change_account(
            id,
            act,
            "user.ban",
            "banned_at = coalesce(banned_at, now()), tokens_valid_after = now()",
        )
        .await
    }

    /// Lifts the suspension; tokens issued before the ban stay void.
    pub async fn unban_user(&self, id: Uuid, act: &AdminAct) -> Result<UserRow, StoreError> {
        self.change_account(id, act, "user.unban", "banned_at = null")
            .await
    }

    async fn change_account(
        &self,
        id: Uuid,
        act: &AdminAct,
        action: &'static str,
        assignments: &'static str,
    ) -> Result<UserRow, StoreError> {
        self.bounded(async {
            let mut tx = self.pool().begin().await?;
            let found: Option<Uuid> =
                sqlx::query_scalar("select id from users where id = $1 for update")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            found.ok_or(DomainError::UserNotFound(id))?;
            let user = sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(format!(
                "update users set {assignments}, updated_at = clock_timestamp() where id = $1
                 returning {USER_COLUMNS}"
            )))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            act.record(&mut tx, action, "user", id, json!({}), None)
                .await?;
            tx.commit().await?;
            Ok::<_, StoreError>(user)
        })
        .await
    }

    /// Every user with a ban or voided tokens: what each node keeps in memory.
    pub async fn revoked_users(&self) -> Result<Vec<AccountChange>, StoreError> {
        let rows = self
            .bounded(
                sqlx::query_as::<_, (Uuid, bool, Option<DateTime<Utc>>, DateTime<Utc>)>(
                    "select id, banned_at is not null, tokens_valid_after, updated_at from users
                     where tokens_valid_after is not null",
                )
                .fetch_all(self.pool()),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(user_id, banned, valid_after, updated_at)| AccountChange {
                user_id,
                banned,
                tokens_valid_after_ms: valid_after.map(|at| at.timestamp_millis()),
                version: updated_at.timestamp_micros(),
            })
            .collect())
    }
}
