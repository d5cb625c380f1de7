//! Users: created on first login, role refreshed from configuration.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Db;
use crate::{
    domain::{Email, Role},
    store::StoreError,
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

impl Db {
    /// Creates the user on first login; on later logins keeps the id and
    /// brings the role in line with the configured admin list.
    pub async fn upsert_user_on_login(
        &self,
        email: &Email,
        role: Role,
    ) -> Result<UserRow, StoreError> {
        self.bounded(
            sqlx::query_as::<_, UserRow>(
                "insert into users (id, email, role) values ($1, $2, $3)
                 on conflict on constraint users_email_key
                 do update set role = excluded.role,
                               updated_at = case when users.role = excluded.role
                                                 then users.updated_at else now() end
                 returning id, email, role, created_at",
            )
            .bind(Uuid::now_v7())
            .bind(email.as_str())
            .bind(role.as_str())
            .fetch_one(self.pool()),
        )
        .await
    }
}
