//! Admin: look at an account, stop it mid-sale (ban) or let it back
//! (unban), and read the audit trail of every admin action.
//!
//! A ban commits in PostgreSQL (with its audit record), then is applied to
//! this node at once and published to every other node, which apply it on
//! arrival: from then on every token of the user is refused everywhere.
//! The worker releases the user's pending reservations (reason: the account
//! was suspended) and their stock goes back on sale; confirmed orders are
//! kept and listed in the answer.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    domain::DomainError,
    http::error_code::error_responses,
    http::{
        ApiError, AppState, ErrorCode,
        extract::{Admin, PathParams, QueryParams},
    },
    store::postgres::{AuditRow, OrderRow, UserRow},
};

/// Orders listed with an account, newest first.
const ORDERS_LISTED: i64 = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_user))
        .routes(routes!(ban_user))
        .routes(routes!(unban_user))
        .routes(routes!(list_audit))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountResponse {
    pub id: Uuid,
    /// `local` (development login, operator tokens) or the provider's issuer.
    pub issuer: String,
    /// The email for local users, the provider's `sub` otherwise.
    pub subject: String,
    pub email: Option<String>,
    /// Set while the account is suspended.
    pub banned_at: Option<DateTime<Utc>>,
    /// Tokens issued before this instant are refused.
    pub tokens_valid_after: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// The account's orders (up to 100, newest first): a ban keeps them.
    pub orders: Vec<OrderRow>,
    pub orders_total: i64,
}

impl AccountResponse {
    async fn of(state: &AppState, user: UserRow) -> Result<Self, ApiError> {
        let (orders, orders_total) = state.db.user_orders(user.id, ORDERS_LISTED, 0).await?;
        Ok(Self {
            id: user.id,
            issuer: user.issuer,
            subject: user.subject,
            email: user.email,
            banned_at: user.banned_at,
            tokens_valid_after: user.tokens_valid_after,
            created_at: user.created_at,
            orders,
            orders_total,
        })
    }
}

error_responses!(UserErrors: [ADMIN] UserNotFound);

/// An account with its ban state and orders (admin).
#[utoipa::path(get, path = "/api/admin/users/{id}", tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "The account", body = AccountResponse),
        UserErrors,
    ))]
async fn get_user(
    State(state): State<AppState>,
    _admin: Admin,
    PathParams(id): PathParams<Uuid>,
) -> Result<Json<AccountResponse>, ApiError> {
    let user = state
        .db
        .find_user(id)
        .await?
        .ok_or(DomainError::UserNotFound(id))?;
    Ok(Json(AccountResponse::of(&state, user).await?))
}

error_responses!(BanErrors: [ADMIN] UserNotFound, CannotBanYourself);

/// Suspend an account (admin): every token of the user stops working on
/// every node within a second, the worker releases the user's pending
/// reservations, confirmed orders are kept. Banning again voids tokens
/// issued since.
#[utoipa::path(post, path = "/api/admin/users/{id}/ban", tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "Suspended; the orders it keeps", body = AccountResponse),
        BanErrors,
    ))]
async fn ban_user(
    State(state): State<AppState>,
    admin: Admin,
    PathParams(id): PathParams<Uuid>,
) -> Result<Json<AccountResponse>, ApiError> {
    // An operator locking themselves out (and, with a shared operator
    // account, every script that mints its tokens) is never what they meant.
    if id == admin.caller.user_id {
        return Err(ApiError::new(
            ErrorCode::CannotBanYourself,
            "an operator cannot suspend their own account; ask another operator",
        ));
    }
    let user = state.db.ban_user(id, &admin.act()).await?;
    tracing::info!(admin = %admin.caller.user_id, user_id = %id, "account suspended");
    announce(&state, &user).await;
    Ok(Json(AccountResponse::of(&state, user).await?))
}

/// Lift a suspension (admin). Tokens issued before the ban stay void: the
/// shopper signs in again.
#[utoipa::path(post, path = "/api/admin/users/{id}/unban", tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "No longer suspended", body = AccountResponse),
        UserErrors,
    ))]
async fn unban_user(
    State(state): State<AppState>,
    admin: Admin,
    PathParams(id): PathParams<Uuid>,
) -> Result<Json<AccountResponse>, ApiError> {
    let user = state.db.unban_user(id, &admin.act()).await?;
    tracing::info!(admin = %admin.caller.user_id, user_id = %id, "account suspension lifted");
    announce(&state, &user).await;
    Ok(Json(AccountResponse::of(&state, user).await?))
}

/// Applies a committed account change on this node and tells the others.
/// If Redis cannot carry it, the other nodes still load it from PostgreSQL
/// within `auth::revocations::RELOAD_EVERY`.
async fn announce(state: &AppState, user: &UserRow) {
    let change = user.account_change();
    state.auth.revocations().apply(&change);
    if let Err(error) = state.redis.publish_account_change(&change).await {
        tracing::warn!(user_id = %user.id, %error, "account change not published; nodes reload it shortly");
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Records per page, 1-200 (default 50).
    pub limit: Option<i64>,
    /// The id of the last record of the previous page.
    pub before: Option<Uuid>,
    /// Only records about this sale, product or user.
    pub target_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditRow>,
    /// Pass as `before` for the next page; null on the last one.
    pub next_before: Option<Uuid>,
}

error_responses!(AuditErrors: [ADMIN]);

/// Every admin action, newest first: who, what, when, the request id (admin).
#[utoipa::path(get, path = "/api/admin/audit", tag = "admin",
    security(("bearer" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "One page of the audit trail", body = AuditPage),
        AuditErrors,
    ))]
async fn list_audit(
    State(state): State<AppState>,
    _admin: Admin,
    QueryParams(query): QueryParams<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::validation("query: limit must be 1-200"));
    }
    let rows = state
        .db
        .list_audit(limit, query.before, query.target_id)
        .await?;
    let next_before = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|row| row.id))
        .flatten();
    Ok(Json(AuditPage {
        entries: rows,
        next_before,
    }))
}
