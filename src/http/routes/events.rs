//! Public: a sale's live events as Server-Sent Events (DESIGN.md §6).
//!
//! Every connection starts with the present (the sale, and for a shopper
//! their latest purchase in it), so a client that reconnects needs no event
//! ids to catch up. Then: `sale` when the state or remaining stock changes
//! (coalesced to at most four a second), `purchase` when the shopper's
//! purchase is committed or released, `order` when one of the shopper's
//! checkout holds ends (paid, expired, cancelled) or the waitlist offers
//! them a unit (awaiting payment), and a comment line every 15 s so
//! proxies keep an idle stream open. The stream ends when the node shuts
//! down or when its client stopped reading; browsers reconnect by
//! themselves.

use std::{collections::VecDeque, convert::Infallible, time::Duration};

use axum::{
    extract::State,
    http::{HeaderName, HeaderValue},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use chrono::Utc;
use futures::Stream;
use serde::Deserialize;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    http::error_code::error_responses,
    http::{
        ApiError, AppState,
        extract::{Caller, QueryParams},
    },
    live::{Delivery, Following, OrderEvent, PurchaseEvent, SaleEvent, SaleUpdate},
    store::redis::{RedisStore, ReservationRecord},
};

/// Keeps proxies and load balancers from closing a quiet stream.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// The fastest a stream repeats `sale` events; changes in between coalesce.
const SALE_EVENT_SPACING: Duration = Duration::from_millis(250);
/// How soon a browser should reconnect after the stream ends.
const RECONNECT_AFTER_MS: u64 = 2_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(sale_events))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SaleEventsQuery {
    /// A sale id; without it, the current sale.
    pub sale_id: Option<Uuid>,
}

error_responses!(SaleEventsErrors: [SIGNED_IN] SaleNotFound, NoCurrentSale);

/// Server-Sent Events for a sale: `sale` events (a `SaleEvent`: state,
/// remaining stock, window, server time) first and on every change, at most
/// four a second; with a bearer token, `purchase` events (a
/// `PurchaseEvent`) with the caller's latest purchase first and then each
/// outcome the moment it is committed or released, and `order` events (an
/// `OrderEvent`) when one of the caller's checkout holds ends or the
/// waitlist offers them a unit (`awaiting_payment`). Heartbeat
/// comments every 15 s. Reconnect to get the present again.
#[utoipa::path(get, path = "/api/flash-sale/events", tag = "sale",
    params(SaleEventsQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "An endless text/event-stream of `sale`, `purchase` and `order` events", content_type = "text/event-stream", body = String),
        SaleEventsErrors,
    ))]
async fn sale_events(
    State(state): State<AppState>,
    caller: Option<Caller>,
    QueryParams(query): QueryParams<SaleEventsQuery>,
) -> Result<Response, ApiError> {
    let view = state.sales.view(query.sale_id).await?;
    let sale_id = view.sale.id;
    let shopper = caller.map(|caller| caller.user_id);
    let mut following = state.live.follow(view, shopper).await?;
    // Read after following, so an outcome settled in between is sent
    // (twice at worst) rather than missed.
    let latest = match shopper {
        Some(user_id) => state.redis.latest_reservation(sale_id, user_id).await?,
        None => None,
    };
    let sale = following.updates.borrow_and_update().clone();
    let mut stream = LiveStream {
        following,
        redis: state.redis.clone(),
        next_sale_event: Instant::now() + SALE_EVENT_SPACING,
        sent_purchase: None,
        sent_order: None,
        greeting: VecDeque::from([
            sale_event(sale).retry(Duration::from_millis(RECONNECT_AFTER_MS))
        ]),
    };
    if let Some(record) = latest {
        stream.queue_purchase(record);
    }
    let mut response = Sse::new(stream.into_events())
        .keep_alive(KeepAlive::new().interval(HEARTBEAT))
        .into_response();
    // nginx passes the stream through as written (it also has the location
    // unbuffered; this covers any other nginx in front).
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

struct LiveStream {
    following: Following,
    redis: RedisStore,
    next_sale_event: Instant,
    /// The last purchase and order events sent, so a resync repeats nothing.
    sent_purchase: Option<PurchaseEvent>,
    sent_order: Option<OrderEvent>,
    /// Events to send before waiting for more: the present on connect,
    /// and what a resync re-read.
    greeting: VecDeque<Event>,
}

impl LiveStream {
    fn into_events(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut stream| async move {
            let event = stream.next_event().await?;
            Some((Ok(event), stream))
        })
    }

    /// The next event to send; `None` ends the stream.
    async fn next_event(&mut self) -> Option<Event> {
        if let Some(event) = self.greeting.pop_front() {
            return Some(event);
        }
        loop {
            tokio::select! {
                () = self.following.closing.cancelled() => return None,
                changed = sale_changed(&mut self.following.updates, self.next_sale_event) => {
                    changed.ok()?;
                    let sale = self.following.updates.borrow_and_update().clone();
                    self.next_sale_event = Instant::now() + SALE_EVENT_SPACING;
                    return Some(sale_event(sale));
                }
                delivery = next_delivery(&mut self.following.deliveries) => {
                    // The hub dropped this stream: its client stopped reading.
                    match delivery? {
                        Delivery::Settled(purchase) => self.queue_purchase_event(purchase),
                        Delivery::Resync => self.reread_purchase().await,
                        Delivery::OrderChanged(order) => self.queue_order_event(order),
                    }
                    if let Some(event) = self.greeting.pop_front() {
                        return Some(event);
                    }
                }
            }
        }
    }

    /// Re-reads the shopper's latest purchase (and how its hold ended, if
    /// it did) after the channel may have missed messages.
    async fn reread_purchase(&mut self) {
        let Some(user_id) = self.following.shopper() else {
            return;
        };
        let sale_id = self.following.sale_id();
        match self.redis.latest_reservation(sale_id, user_id).await {
            Ok(Some(record)) => self.queue_purchase(record),
            Ok(None) => {}
            Err(error) => tracing::debug!(%error, "event stream: purchase not re-read"),
        }
    }

    /// Queues the record's purchase event, and its `order` event if its
    /// hold ended unpaid.
    fn queue_purchase(&mut self, record: ReservationRecord) {
        let ended = OrderEvent::of_ended_hold(&record);
        let hold = record.order_id.and_then(|_| {
            self.following
                .updates
                .borrow()
                .hold_terms(record.quantity, record.reserved_at_ms)
        });
        let mut purchase = PurchaseEvent::from(record);
        purchase.hold = hold;
        self.queue_purchase_event(purchase);
        if let Some(order) = ended {
            self.queue_order_event(order);
        }
    }

    fn queue_purchase_event(&mut self, purchase: PurchaseEvent) {
        if self.sent_purchase.as_ref() != Some(&purchase) {
            self.greeting.push_back(purchase_event(&purchase));
            self.sent_purchase = Some(purchase);
        }
    }

    fn queue_order_event(&mut self, order: OrderEvent) {
        if self.sent_order.as_ref() != Some(&order) {
            self.greeting.push_back(json_event("order", &order));
            self.sent_order = Some(order);
        }
    }
}

/// The sale's next change, no sooner than `not_before`.
async fn sale_changed(
    updates: &mut watch::Receiver<SaleUpdate>,
    not_before: Instant,
) -> Result<(), watch::error::RecvError> {
    tokio::time::sleep_until(not_before).await;
    updates.changed().await
}

/// The shopper's next delivery; never resolves for an anonymous stream.
async fn next_delivery(deliveries: &mut Option<mpsc::Receiver<Delivery>>) -> Option<Delivery> {
    match deliveries.as_mut() {
        Some(deliveries) => deliveries.recv().await,
        None => std::future::pending().await,
    }
}

fn sale_event(sale: SaleUpdate) -> Event {
    json_event(
        "sale",
        &SaleEvent {
            sale,
            server_time: Utc::now(),
        },
    )
}

fn purchase_event(purchase: &PurchaseEvent) -> Event {
    json_event("purchase", purchase)
}

fn json_event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .expect("event payloads serialise")
}
