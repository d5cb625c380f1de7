//! A sold-out sale's waitlist as shoppers reach it: join, see where they
//! stand (or the unit they were offered), leave. Offers themselves are made
//! by whatever ends a hold (`store::postgres::waitlist`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{AppError, Sales};
use crate::{
    domain::{DomainError, SaleState},
    store::{
        StoreError,
        postgres::{OrderRow, WaitlistPlace},
    },
};

/// Where the shopper stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitlistState {
    /// On the waitlist at `position`.
    Waiting,
    /// Off the waitlist: a unit was offered (`offer`, an order with its
    /// own status: awaiting payment until `pay_by`, then paid or expired).
    Offered,
    /// Still listed, but the sale has ended or was cancelled: no unit will
    /// be offered.
    Closed,
}

/// The shopper's place on a sale's waitlist, or the offer it became.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WaitlistView {
    pub sale_id: Uuid,
    pub state: WaitlistState,
    /// 1 for the next shopper offered a unit; null once offered.
    pub position: Option<i64>,
    /// Shoppers waiting in all; null once offered.
    pub length: Option<i64>,
    pub joined_at: Option<DateTime<Utc>>,
    /// The latest unit offered to the shopper in this sale.
    pub offer: Option<OrderRow>,
}

impl WaitlistView {
    fn waiting(sale_id: Uuid, place: WaitlistPlace) -> Self {
        Self {
            sale_id,
            state: WaitlistState::Waiting,
            position: Some(place.position),
            length: Some(place.length),
            joined_at: Some(place.joined_at),
            offer: None,
        }
    }
}

#[derive(Clone)]
pub struct Waitlist {
    sales: Sales,
}

impl Waitlist {
    pub fn new(sales: Sales) -> Self {
        Self { sales }
    }

    /// Puts the shopper on the waitlist of an active, sold-out sale with
    /// checkout holds; joining again keeps their place. The flag says
    /// whether they joined now.
    pub async fn join(
        &self,
        sale_id: Uuid,
        shopper: Uuid,
    ) -> Result<(WaitlistView, bool), AppError> {
        let view = self.sales.view(Some(sale_id)).await?;
        if view.sale.hold_seconds.is_none() {
            return Err(DomainError::NoWaitlist.into());
        }
        let state = view.state(Utc::now());
        if state != SaleState::Active {
            return Err(DomainError::SaleNotActive { state }.into());
        }
        // Redis's stock, read now: the snapshot's may be a moment old.
        let remaining = self
            .sales
            .redis
            .remaining(sale_id)
            .await?
            .or(view.remaining);
        if let Some(remaining) = remaining.filter(|remaining| *remaining > 0) {
            return Err(DomainError::UnitsOnSale { remaining }.into());
        }
        match self.sales.db.join_waitlist(sale_id, shopper).await {
            Ok((place, joined_now)) => {
                if joined_now {
                    metrics::counter!("waitlist_joined_total").increment(1);
                }
                Ok((WaitlistView::waiting(sale_id, place), joined_now))
            }
            // Already waiting, and offered a unit between the insert and
            // the read of the place: the offer is the answer.
            Err(StoreError::Domain(DomainError::NotOnWaitlist)) => {
                Ok((self.view(sale_id, shopper).await?, false))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The shopper's place, or the unit they were last offered.
    pub async fn view(&self, sale_id: Uuid, shopper: Uuid) -> Result<WaitlistView, AppError> {
        if let Some(place) = self.sales.db.waitlist_place(sale_id, shopper).await? {
            let mut view = WaitlistView::waiting(sale_id, place);
            let sale = self.sales.view(Some(sale_id)).await?;
            if sale.state(Utc::now()).is_terminal() {
                view.state = WaitlistState::Closed;
            }
            return Ok(view);
        }
        let offer = self
            .sales
            .db
            .latest_offer(sale_id, shopper)
            .await?
            .ok_or(DomainError::NotOnWaitlist)?;
        Ok(WaitlistView {
            sale_id,
            state: WaitlistState::Offered,
            position: None,
            length: None,
            joined_at: None,
            offer: Some(offer),
        })
    }

    /// Takes the shopper off the waitlist.
    pub async fn leave(&self, sale_id: Uuid, shopper: Uuid) -> Result<(), AppError> {
        if self.sales.db.leave_waitlist(sale_id, shopper).await? {
            metrics::counter!("waitlist_left_total").increment(1);
            Ok(())
        } else {
            Err(DomainError::NotOnWaitlist.into())
        }
    }
}
