//! A sold-out sale's waitlist: join it, see your place (or the unit you
//! were offered), leave it.

use axum::{Json, extract::State, http::StatusCode};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    app::waitlist::WaitlistView,
    http::error_code::error_responses,
    http::{
        ApiError, AppState,
        extract::{Caller, PathParams},
    },
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(join_waitlist, get_waitlist_place, leave_waitlist))
}

error_responses!(JoinErrors: [SIGNED_IN] SaleNotFound, NoWaitlist, SaleNotActive, UnitsOnSale, HoldAwaitingPayment, AlreadyPurchased);

/// Join the waitlist of an active, sold-out sale with checkout holds. A
/// hold that ends unpaid gives its units to the head of the waitlist first,
/// one unit per shopper in join order, each as an order awaiting payment
/// for the sale's `offer_seconds` (announced as an `order` event on your
/// event stream and shown by this resource); only when nobody waits do
/// units go back on sale. Joining again keeps your place (200). Refused
/// while you hold a unit awaiting payment or hold the limit. No offers are
/// made once the sale has ended or while it is paused.
#[utoipa::path(post, path = "/api/flash-sale/{id}/waitlist", tag = "sale",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Flash sale id")),
    responses(
        (status = 201, description = "Joined: your place", body = WaitlistView),
        (status = 200, description = "Already waiting: your place, unchanged", body = WaitlistView),
        JoinErrors,
    ))]
async fn join_waitlist(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<Uuid>,
) -> Result<(StatusCode, Json<WaitlistView>), ApiError> {
    let (view, joined_now) = state.waitlist.join(id, caller.user_id).await?;
    let status = if joined_now {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

error_responses!(PlaceErrors: [SIGNED_IN] NotOnWaitlist);

/// Your place on the sale's waitlist (`waiting`, with your position and
/// the waitlist's length), or, once you were offered a unit, the offer
/// (`offered`, with its order: pay it by `pay_by`).
#[utoipa::path(get, path = "/api/flash-sale/{id}/waitlist", tag = "sale",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Flash sale id")),
    responses(
        (status = 200, description = "Your place or your offer", body = WaitlistView),
        PlaceErrors,
    ))]
async fn get_waitlist_place(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<Uuid>,
) -> Result<Json<WaitlistView>, ApiError> {
    Ok(Json(state.waitlist.view(id, caller.user_id).await?))
}

/// Leave the sale's waitlist.
#[utoipa::path(delete, path = "/api/flash-sale/{id}/waitlist", tag = "sale",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Flash sale id")),
    responses(
        (status = 204, description = "Left"),
        PlaceErrors,
    ))]
async fn leave_waitlist(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.waitlist.leave(id, caller.user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
