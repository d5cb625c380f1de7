//! Live events for the event streams (DESIGN.md §6): one hub per API node.
//!
//! - The sale's state and remaining stock come from the node's snapshot,
//!   which reads Redis every ~100 ms: after each refresh the hub updates one
//!   `watch` value per followed sale. A `watch` keeps only the latest
//!   value, so a slow stream skips to the present instead of queueing.
//! - A shopper's purchase outcome comes from the sale's Redis pub/sub
//!   channel, which this node subscribes to once, while at least one of its
//!   clients follows the sale; each outcome goes to that shopper's streams
//!   only, through a short queue. A stream that lets its queue fill is
//!   dropped, never buffered for.

mod events;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use parking_lot::Mutex;

use chrono::{DateTime, Utc};
use redis::PushInfo;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use events::{OrderEvent, PurchaseEvent, SaleEvent, SaleUpdate};

use crate::{
    domain::{Currency, HoldTerms, Quantity},
    snapshot::{SaleSnapshot, SaleView},
    store::{
        StoreError,
        redis::{EventSubscriber, Published, parse_push},
    },
};

/// Outcomes a shopper's stream may have unsent before it counts as too slow.
/// One shopper's outcomes are a handful per sale (the per-user limit).
const SHOPPER_BACKLOG: usize = 8;
/// How often channels no client follows any more are unsubscribed.
const UNSUBSCRIBE_EVERY: Duration = Duration::from_secs(30);
/// After the pub/sub connection dropped, how often the hub subscribes its
/// channels again until Redis answers.
const RESUBSCRIBE_EVERY: Duration = Duration::from_secs(1);

/// What the hub hands a shopper's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Settled(PurchaseEvent),
    /// One of the shopper's checkout holds ended, or the waitlist offered
    /// them a unit.
    OrderChanged(OrderEvent),
    /// The channel was (re)subscribed and may have missed outcomes: read
    /// the shopper's purchase again.
    Resync,
}

pub struct LiveEvents {
    subscriber: EventSubscriber,
    inbox: Mutex<Option<mpsc::Receiver<PushInfo>>>,
    followers: Mutex<HashMap<Uuid, SaleFollowers>>,
    /// Channels subscribed on the pub/sub connection. Subscribing and
    /// unsubscribing happen under this lock, so a sweep cannot unsubscribe
    /// a channel a new stream is about to rely on.
    subscribed: tokio::sync::Mutex<HashSet<Uuid>>,
    next_stream: AtomicU64,
    closing: CancellationToken,
}

struct SaleFollowers {
    /// The sale as last seen, for when the snapshot no longer holds it
    /// (an ended sale): its state still follows the clock.
    view: SaleView,
    updates: watch::Sender<SaleUpdate>,
    streams: usize,
    shoppers: HashMap<Uuid, Vec<ShopperStream>>,
}

struct ShopperStream {
    id: u64,
    outbox: mpsc::Sender<Delivery>,
}

/// One stream's registration; dropping it unregisters the stream.
pub struct Following {
    hub: Arc<LiveEvents>,
    sale_id: Uuid,
    stream: u64,
    shopper: Option<Uuid>,
    /// The sale as it stands; marked changed on every change.
    pub updates: watch::Receiver<SaleUpdate>,
    /// The shopper's outcomes; ends when the hub dropped the stream as too
    /// slow. `None` for an anonymous stream.
    pub deliveries: Option<mpsc::Receiver<Delivery>>,
    /// Cancelled when the node shuts down: the stream should end so that
    /// its client reconnects to another node.
    pub closing: CancellationToken,
}

impl Following {
    pub fn sale_id(&self) -> Uuid {
        self.sale_id
    }

    /// The shopper this stream carries outcomes for; `None` if anonymous.
    pub fn shopper(&self) -> Option<Uuid> {
        self.shopper
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.hub.leave(self.sale_id, self.stream, self.shopper);
        metrics::gauge!("flashsale_event_streams").decrement(1);
    }
}

impl LiveEvents {
    pub fn new(subscriber: EventSubscriber, inbox: mpsc::Receiver<PushInfo>) -> Self {
        Self {
            subscriber,
            inbox: Mutex::new(Some(inbox)),
            followers: Mutex::default(),
            subscribed: tokio::sync::Mutex::default(),
            next_stream: AtomicU64::new(0),
            closing: CancellationToken::new(),
        }
    }

    /// Streams open on this node.
    pub fn streams(&self) -> usize {
        self.lock().values().map(|sale| sale.streams).sum()
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<Uuid, SaleFollowers>> {
        self.followers.lock()
    }

    /// Registers a stream on `view`'s sale (and, for a shopper, on their
    /// outcomes), subscribing this node to the sale's channel if nobody
    /// here followed it yet. Fails only when Redis cannot be reached.
    pub async fn follow(
        self: &Arc<Self>,
        view: SaleView,
        shopper: Option<Uuid>,
    ) -> Result<Following, StoreError> {
        let sale_id = view.sale.id;
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        // Only a shopper's stream gets outcomes, so only it has a queue.
        let (outbox, deliveries) = match shopper {
            Some(_) => {
                let (outbox, deliveries) = mpsc::channel(SHOPPER_BACKLOG);
                (Some(outbox), Some(deliveries))
            }
            None => (None, None),
        };
        let updates = {
            let mut followers = self.lock();
            let sale = followers.entry(sale_id).or_insert_with(|| SaleFollowers {
                updates: watch::Sender::new(SaleUpdate::of(&view, Utc::now())),
                view,
                streams: 0,
                shoppers: HashMap::new(),
            });
            sale.streams += 1;
            if let (Some(user_id), Some(outbox)) = (shopper, outbox) {
                let registration = ShopperStream { id: stream, outbox };
                sale.shoppers.entry(user_id).or_default().push(registration);
            }
            sale.updates.subscribe()
        };
        metrics::gauge!("flashsale_event_streams").increment(1);
        let following = Following {
            hub: self.clone(),
            sale_id,
            stream,
            shopper,
            updates,
            deliveries,
            closing: self.closing.clone(),
        };
        // Registered first, so nothing published after the subscription
        // can miss this stream; `following` unregisters if this fails.
        self.ensure_subscribed(sale_id).await?;
        Ok(following)
    }

    async fn ensure_subscribed(&self, sale_id: Uuid) -> Result<(), StoreError> {
        let mut subscribed = self.subscribed.lock().await;
        if !subscribed.contains(&sale_id) {
            self.subscriber.subscribe(sale_id).await?;
            subscribed.insert(sale_id);
        }
        Ok(())
    }

    fn leave(&self, sale_id: Uuid, stream: u64, shopper: Option<Uuid>) {
        let mut followers = self.lock();
        let Some(sale) = followers.get_mut(&sale_id) else {
            return;
        };
        sale.streams -= 1;
        if let Some(user_id) = shopper
            && let Some(streams) = sale.shoppers.get_mut(&user_id)
        {
            streams.retain(|shopper_stream| shopper_stream.id != stream);
            if streams.is_empty() {
                sale.shoppers.remove(&user_id);
            }
        }
        if sale.streams == 0 {
            followers.remove(&sale_id);
        }
    }

    /// Routes pub/sub messages and snapshot refreshes until `shutdown`,
    /// then ends every stream.
    pub async fn run(self: Arc<Self>, snapshot: Arc<SaleSnapshot>, shutdown: CancellationToken) {
        let inbox = self.inbox.lock().take();
        let Some(mut inbox) = inbox else {
            tracing::error!("the live-event hub was started twice");
            return;
        };
        let mut refreshes = snapshot.refreshes();
        let mut sweep = tokio::time::interval(UNSUBSCRIBE_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Set while the pub/sub connection is down. The manager reconnects
        // when a connection drops, but a reconnect that fails (Redis still
        // down) is retried only when a command is sent: subscribing again is
        // that command.
        let mut resubscribe_at: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                push = inbox.recv() => {
                    let Some(push) = push else { break };
                    if let Some(published) = parse_push(&push) {
                        self.deliver(published, &mut resubscribe_at);
                    }
                }
                () = sleep_until_some(resubscribe_at) => {
                    resubscribe_at = match self.resubscribe_all().await {
                        Ok(()) => None,
                        Err(error) => {
                            tracing::debug!(%error, "live events: resubscribing failed; retrying");
                            Some(tokio::time::Instant::now() + RESUBSCRIBE_EVERY)
                        }
                    };
                }
                changed = refreshes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.publish_sales(&snapshot);
                }
                _ = sweep.tick() => self.unsubscribe_unfollowed().await,
            }
        }
        self.closing.cancel();
    }

    /// Acts on one pub/sub message; a lost connection schedules
    /// `resubscribe_at`.
    fn deliver(&self, published: Published, resubscribe_at: &mut Option<tokio::time::Instant>) {
        match published {
            Published::PurchaseSettled {
                sale_id,
                reservation_id,
                user_id,
                status,
                reason,
                order,
            } => {
                let mut event = PurchaseEvent::new(reservation_id, sale_id, status, reason);
                if let Some(order) = order {
                    let hold = self.hold_terms(sale_id, order.quantity, order.reserved_at_ms);
                    event = event.with_order(order.order_id, hold);
                }
                self.send_to_shoppers(sale_id, Some(user_id), Delivery::Settled(event));
            }
            Published::OrderChanged {
                sale_id,
                reservation_id,
                order_id,
                user_id,
                status,
                terms,
            } => {
                let hold = terms.and_then(|terms| {
                    Some(HoldTerms {
                        pay_by: DateTime::from_timestamp_millis(terms.pay_by_ms)?,
                        amount: terms.amount,
                        currency: Currency::parse(&terms.currency)?,
                    })
                });
                let event = OrderEvent {
                    order_id,
                    reservation_id,
                    sale_id,
                    status,
                    hold,
                };
                self.send_to_shoppers(sale_id, Some(user_id), Delivery::OrderChanged(event));
            }
            Published::Subscribed { sale_id } => {
                self.send_to_shoppers(sale_id, None, Delivery::Resync);
            }
            Published::Disconnected => {
                tracing::warn!("live events: Redis pub/sub connection lost; resubscribing");
                *resubscribe_at = Some(tokio::time::Instant::now() + RESUBSCRIBE_EVERY);
            }
        }
    }

    /// Subscribes every channel this node relies on again; each
    /// confirmation resyncs that sale's shopper streams.
    async fn resubscribe_all(&self) -> Result<(), StoreError> {
        let subscribed = self.subscribed.lock().await;
        for sale_id in subscribed.iter() {
            self.subscriber.subscribe(*sale_id).await?;
        }
        Ok(())
    }

    /// The hold terms of `quantity` units reserved at `reserved_at_ms` in a
    /// followed sale; none without a hold.
    fn hold_terms(
        &self,
        sale_id: Uuid,
        quantity: Quantity,
        reserved_at_ms: i64,
    ) -> Option<HoldTerms> {
        self.lock()
            .get(&sale_id)?
            .view
            .sale
            .hold_terms(quantity, reserved_at_ms)
    }

    /// Hands `delivery` to one shopper's streams (or all shoppers'),
    /// dropping the streams that are too far behind.
    fn send_to_shoppers(&self, sale_id: Uuid, user_id: Option<Uuid>, delivery: Delivery) {
        let mut followers = self.lock();
        let Some(sale) = followers.get_mut(&sale_id) else {
            return;
        };
        sale.shoppers.retain(|shopper, streams| {
            if user_id.is_some_and(|user_id| user_id != *shopper) {
                return true;
            }
            streams.retain(|stream| match stream.outbox.try_send(delivery.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics::counter!("flashsale_event_streams_dropped_total", "reason" => "slow")
                        .increment(1);
                    tracing::info!(%sale_id, user_id = %shopper, "event stream dropped: its client stopped reading");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
            !streams.is_empty()
        });
    }

    /// Brings every followed sale's update in line with the snapshot.
    fn publish_sales(&self, snapshot: &SaleSnapshot) {
        let now = Utc::now();
        let mut followers = self.lock();
        for (sale_id, sale) in followers.iter_mut() {
            if let Some(view) = snapshot.lookup(Some(*sale_id)) {
                sale.view = view;
            }
            let update = SaleUpdate::of(&sale.view, now);
            sale.updates.send_if_modified(|current| {
                let changed = *current != update;
                if changed {
                    *current = update;
                }
                changed
            });
        }
    }

    async fn unsubscribe_unfollowed(&self) {
        let mut subscribed = self.subscribed.lock().await;
        let unfollowed: Vec<Uuid> = {
            let followers = self.lock();
            subscribed
                .iter()
                .filter(|sale_id| !followers.contains_key(sale_id))
                .copied()
                .collect()
        };
        for sale_id in unfollowed {
            match self.subscriber.unsubscribe(sale_id).await {
                Ok(()) => {
                    subscribed.remove(&sale_id);
                }
                Err(error) => {
                    tracing::debug!(%sale_id, %error, "unsubscribe failed; retrying later")
                }
            }
        }
    }
}

/// Resolves at `deadline`; never without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
