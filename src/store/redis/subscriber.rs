//! The API node's one pub/sub connection (DESIGN.md §6): it subscribes to a
//! sale's event channel while some client of this node follows the sale,
//! and hands what arrives to the live-event hub as [`Published`] messages.
//!
//! A RESP3 `ConnectionManager` with automatic resubscription: when Redis
//! comes back after a restart, the manager reconnects and subscribes again
//! by itself. Messages published while it was away are gone (pub/sub keeps
//! nothing), so every (re)subscription is reported as
//! [`Published::Subscribed`] and followers re-read their state.

use std::time::Duration;

use redis::{
    IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value,
    aio::{AsyncPushSender, ConnectionManager, ConnectionManagerConfig, SendError},
};
use serde::Deserialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::SaleKeys;
use crate::{
    config::RedisSettings,
    domain::{FailureReason, OrderStatus, Quantity, ReservationStatus},
    store::{Dependency, StoreError, bounded},
};

/// Messages waiting for the hub. Past this, new ones are dropped (and
/// counted) instead of queued: the hub is far faster than Redis can
/// publish, so only a stalled node would fill it, and followers resync.
const INBOX_CAPACITY: usize = 65_536;

/// What the sale's channel carried, as the hub needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// A reservation ended (`confirm.lua`, `release.lua`).
    PurchaseSettled {
        sale_id: Uuid,
        reservation_id: Uuid,
        user_id: Uuid,
        status: ReservationStatus,
        reason: Option<FailureReason>,
        /// The order a confirmed reservation became, when `confirm.lua`
        /// knew it.
        order: Option<SettledOrder>,
    },
    /// A checkout hold changed: it ended (`return_held.lua`: expired,
    /// cancelled; the payment webhook: paid), or a waitlist offer made it
    /// (`return_held.lua`: awaiting payment).
    OrderChanged {
        sale_id: Uuid,
        reservation_id: Uuid,
        order_id: Uuid,
        user_id: Uuid,
        status: OrderStatus,
        /// A waitlist offer's terms (pay by, amount, currency).
        terms: Option<OfferedTerms>,
    },
    /// The channel is (again) subscribed: anything published before may
    /// have been missed.
    Subscribed { sale_id: Uuid },
    /// The connection dropped; the manager reconnects and resubscribes.
    Disconnected,
}

/// A confirmed reservation's order, and what its hold's terms are worked
/// out from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettledOrder {
    pub order_id: Uuid,
    pub quantity: Quantity,
    pub reserved_at_ms: i64,
}

/// An order's terms as `return_held.lua` publishes them with an offer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OfferedTerms {
    pub pay_by_ms: i64,
    pub amount: i64,
    pub currency: String,
}

/// The JSON the Lua scripts publish.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Message {
    Purchase {
        sale_id: Uuid,
        reservation_id: Uuid,
        user_id: Uuid,
        status: String,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        order_id: Option<Uuid>,
        #[serde(default)]
        quantity: Option<i64>,
        #[serde(default)]
        reserved_ms: Option<i64>,
    },
    Order {
        sale_id: Uuid,
        reservation_id: Uuid,
        order_id: Uuid,
        user_id: Uuid,
        status: String,
        #[serde(default, flatten)]
        terms: Option<OfferedTerms>,
    },
    #[serde(other)]
    Other,
}

/// Hands pushes to the hub without ever blocking the connection's task.
struct Inbox(mpsc::Sender<PushInfo>);

impl AsyncPushSender for Inbox {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        self.0.try_send(info).map_err(|_| {
            metrics::counter!("flashsale_live_messages_dropped_total").increment(1);
            SendError
        })
    }
}

#[derive(Clone)]
pub struct EventSubscriber {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
}

impl EventSubscriber {
    /// Opens the pub/sub connection lazily; the receiver gets every push.
    /// Call it inside a Tokio runtime.
    pub fn connect_lazy(
        settings: &RedisSettings,
        timeout: Duration,
    ) -> anyhow::Result<(Self, mpsc::Receiver<PushInfo>)> {
        let info = settings
            .redis_url
            .expose()
            .into_connection_info()
            .map_err(|error| {
                anyhow::anyhow!("invalid configuration: FLASHSALE_REDIS_URL: {error}")
            })?;
        // Pushes (subscribed messages) need RESP3 on this connection only.
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(resp3)).map_err(|error| {
            anyhow::anyhow!("cannot open the Redis pub/sub connection: {error}")
        })?;
        let (sender, inbox) = mpsc::channel(INBOX_CAPACITY);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_push_sender(Inbox(sender))
            .set_automatic_resubscription();
        let connection =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|error| {
                anyhow::anyhow!("cannot open the Redis pub/sub connection: {error}")
            })?;
        let subscriber = Self {
            connection,
            prefix: settings.redis_prefix.clone(),
            timeout,
        };
        Ok((subscriber, inbox))
    }

    fn channel(&self, sale_id: Uuid) -> String {
        SaleKeys::new(&self.prefix, sale_id).events
    }

    pub async fn subscribe(&self, sale_id: Uuid) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let channel = self.channel(sale_id);
        bounded(
            Dependency::Redis,
            self.timeout,
            connection.subscribe(channel),
        )
        .await
    }

    /// Subscribes the accounts channel (bans and unbans).
    pub async fn subscribe_accounts(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let channel = super::accounts_channel(&self.prefix);
        bounded(
            Dependency::Redis,
            self.timeout,
            connection.subscribe(channel),
        )
        .await
    }

    pub async fn unsubscribe(&self, sale_id: Uuid) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let channel = self.channel(sale_id);
        bounded(
            Dependency::Redis,
            self.timeout,
            connection.unsubscribe(channel),
        )
        .await
    }
}

/// Reads one push; `None` for what the hub has no use for.
pub fn parse_push(push: &PushInfo) -> Option<Published> {
    match push.kind {
        PushKind::Message => {
            let Some(Value::BulkString(payload)) = push.data.get(1) else {
                return None;
            };
            parse_message(payload)
        }
        PushKind::Subscribe => {
            let Some(Value::BulkString(channel)) = push.data.first() else {
                return None;
            };
            sale_of_channel(std::str::from_utf8(channel).ok()?)
                .map(|sale_id| Published::Subscribed { sale_id })
        }
        PushKind::Disconnection => Some(Published::Disconnected),
        _ => None,
    }
}

fn parse_message(payload: &[u8]) -> Option<Published> {
    match serde_json::from_slice(payload) {
        Ok(Message::Purchase {
            sale_id,
            reservation_id,
            user_id,
            status,
            reason,
            order_id,
            quantity,
            reserved_ms,
        }) => Some(Published::PurchaseSettled {
            sale_id,
            reservation_id,
            user_id,
            status: ReservationStatus::parse(&status)?,
            reason: reason.as_deref().and_then(FailureReason::from_code),
            order: match (order_id, quantity.and_then(Quantity::new), reserved_ms) {
                (Some(order_id), Some(quantity), Some(reserved_at_ms)) => Some(SettledOrder {
                    order_id,
                    quantity,
                    reserved_at_ms,
                }),
                _ => None,
            },
        }),
        Ok(Message::Order {
            sale_id,
            reservation_id,
            order_id,
            user_id,
            status,
            terms,
        }) => Some(Published::OrderChanged {
            sale_id,
            reservation_id,
            order_id,
            user_id,
            status: OrderStatus::parse(&status)?,
            terms,
        }),
        Ok(Message::Other) => None,
        Err(error) => {
            tracing::warn!(%error, "unreadable message on a sale's event channel");
            None
        }
    }
}

/// The sale id inside `<prefix>:{sale:<id>}:events`.
fn sale_of_channel(channel: &str) -> Option<Uuid> {
    let start = channel.find("{sale:")? + "{sale:".len();
    let end = start + channel[start..].find('}')?;
    channel[start..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_name_their_sale() {
        let sale_id = Uuid::now_v7();
        let channel = SaleKeys::new("prod:eu", sale_id).events;
        assert_eq!(sale_of_channel(&channel), Some(sale_id));
        assert_eq!(sale_of_channel("prod:{sale:nope}:events"), None);
    }

    #[test]
    fn settled_purchases_parse_and_empty_reasons_drop() {
        let (sale, reservation, user) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let confirmed = format!(
            r#"{{"type":"purchase","sale_id":"{sale}","reservation_id":"{reservation}","user_id":"{user}","status":"confirmed","reason":""}}"#
        );
        assert_eq!(
            parse_message(confirmed.as_bytes()),
            Some(Published::PurchaseSettled {
                sale_id: sale,
                reservation_id: reservation,
                user_id: user,
                status: ReservationStatus::Confirmed,
                reason: None,
                order: None,
            })
        );
        assert_eq!(parse_message(br#"{"type":"stock","remaining":3}"#), None);
        assert_eq!(parse_message(b"not json"), None);
    }

    #[test]
    fn a_confirmed_purchase_brings_its_order_and_an_offer_its_terms() {
        let (sale, reservation, user, order) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        let confirmed = format!(
            r#"{{"type":"purchase","sale_id":"{sale}","reservation_id":"{reservation}","user_id":"{user}","status":"confirmed","order_id":"{order}","quantity":2,"reserved_ms":1764626400123}}"#
        );
        let Some(Published::PurchaseSettled { order: settled, .. }) =
            parse_message(confirmed.as_bytes())
        else {
            panic!("not a settled purchase")
        };
        assert_eq!(
            settled,
            Some(SettledOrder {
                order_id: order,
                quantity: Quantity::new(2).unwrap(),
                reserved_at_ms: 1_764_626_400_123,
            })
        );

        let offered = format!(
            r#"{{"type":"order","sale_id":"{sale}","reservation_id":"{reservation}","order_id":"{order}","user_id":"{user}","status":"awaiting_payment","pay_by_ms":1764626460123,"amount":4999,"currency":"EUR"}}"#
        );
        let Some(Published::OrderChanged { status, terms, .. }) = parse_message(offered.as_bytes())
        else {
            panic!("not an order change")
        };
        assert_eq!(status, OrderStatus::AwaitingPayment);
        assert_eq!(
            terms,
            Some(OfferedTerms {
                pay_by_ms: 1_764_626_460_123,
                amount: 4999,
                currency: "EUR".into(),
            })
        );
        // An ended hold's message has no terms.
        let expired = offered.replace(r#""status":"awaiting_payment""#, r#""status":"expired""#);
        let expired = expired.split(r#","pay_by_ms""#).next().unwrap().to_string() + "}";
        let Some(Published::OrderChanged { terms, .. }) = parse_message(expired.as_bytes()) else {
            panic!("not an order change")
        };
        assert_eq!(terms, None);
    }
}
