//! Checkout holds as shoppers and payment providers reach them: a signed
//! payment webhook pays an order (once per event), a shopper reads one of
//! their orders or cancels it while it awaits payment.

use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppError;
use crate::{
    config::PaymentSettings,
    domain::{DomainError, Payment, PaymentOutcome},
    payments::{PAYMENT_SUCCEEDED, PaymentEvent, SignatureError, SignedDelivery, WebhookSecret},
    store::{
        holds,
        postgres::{Cancelled, Db, OrderRow},
        redis::RedisStore,
    },
};

/// What the webhook answers a delivery it accepted as authentic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct WebhookReceipt {
    /// The event's `webhook-id`.
    pub event_id: String,
    /// What the event did; null for an event type that pays nothing.
    pub outcome: Option<PaymentOutcome>,
    /// The event was received before: this delivery changed nothing.
    pub duplicate: bool,
}

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("this deployment takes no payments: FLASHSALE_WEBHOOK_SECRETS is empty")]
    NotConfigured,
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// Authentic, but not a payment event this engine can read.
    #[error("{0}")]
    Body(String),
    #[error(transparent)]
    App(#[from] AppError),
}

#[derive(Clone)]
pub struct Payments {
    db: Db,
    redis: RedisStore,
    secrets: Vec<WebhookSecret>,
    tolerance: Duration,
}

impl Payments {
    pub fn new(db: Db, redis: RedisStore, settings: &PaymentSettings) -> Self {
        Self {
            db,
            redis,
            secrets: settings.webhook_secrets.0.clone(),
            tolerance: settings.webhook_tolerance,
        }
    }

    /// Authenticates one delivery and records what it pays. A replayed
    /// event id answers its first outcome and changes nothing.
    pub async fn receive(
        &self,
        delivery: SignedDelivery<'_>,
        body: &[u8],
    ) -> Result<WebhookReceipt, WebhookError> {
        // A payment is in time if it reached this node by the deadline,
        // however long it then waits for PostgreSQL (the sweep leaves it
        // `PAYMENT_GRACE_SECS`).
        let received_at = Utc::now();
        if self.secrets.is_empty() {
            return Err(WebhookError::NotConfigured);
        }
        let tolerance = i64::try_from(self.tolerance.as_secs()).unwrap_or(i64::MAX);
        let event_id = crate::payments::verify(
            &self.secrets,
            delivery,
            body,
            Utc::now(),
            tolerance,
        )
        .inspect_err(|error| {
            metrics::counter!("payment_webhooks_refused_total", "why" => refusal_label(error))
                .increment(1);
        })?
        .to_owned();
        let event: PaymentEvent = serde_json::from_slice(body).map_err(|error| {
            WebhookError::Body(format!(
                "body: not a payment event ({{\"type\", \"data\": {{\"order_id\", \"amount\", \"currency\"}}}}): {error}"
            ))
        })?;
        if event.event_type != PAYMENT_SUCCEEDED {
            tracing::info!(%event_id, event_type = %event.event_type, "payment event of another type ignored");
            return Ok(WebhookReceipt {
                event_id,
                outcome: None,
                duplicate: false,
            });
        }
        let payment = Payment {
            amount: event.data.amount,
            currency: event.data.currency,
        };
        let recorded = self
            .db
            .record_payment(&event_id, event.data.order_id, &payment, received_at)
            .await
            .map_err(AppError::from)?;
        if !recorded.duplicate {
            metrics::counter!("payments_total", "outcome" => recorded.outcome.as_str())
                .increment(1);
            match recorded.outcome {
                PaymentOutcome::Paid => {}
                PaymentOutcome::UnknownOrder => {
                    tracing::warn!(%event_id, order_id = %event.data.order_id, "payment for an unknown order")
                }
                outcome => {
                    tracing::warn!(%event_id, order_id = %event.data.order_id, %outcome, "payment not taken; an operator must act")
                }
            }
        }
        if let Some(paid) = recorded.paid {
            // Both are courtesies: PostgreSQL holds the payment.
            if let Err(error) = self.redis.invalidate_orders(paid.user_id).await {
                tracing::warn!(%error, order_id = %paid.order_id, "paid order's cached pages not dropped; they expire with their TTL");
            }
            if let Err(error) = self.redis.publish_paid(&paid).await {
                tracing::warn!(%error, order_id = %paid.order_id, "paid order not announced on the event stream");
            }
        }
        Ok(WebhookReceipt {
            event_id,
            outcome: Some(recorded.outcome),
            duplicate: recorded.duplicate,
        })
    }

    /// Development only: pays the shopper's own order the way a provider
    /// would, with a real delivery signed by the first webhook secret and
    /// received through [`Self::receive`]'s checks.
    pub async fn pay_as_provider(
        &self,
        order_id: Uuid,
        shopper: Uuid,
    ) -> Result<WebhookReceipt, WebhookError> {
        let secret = self.secrets.first().ok_or(WebhookError::NotConfigured)?;
        let order = self.order(order_id, shopper, false).await?;
        let body = serde_json::json!({
            "type": PAYMENT_SUCCEEDED,
            "data": { "order_id": order.id, "amount": order.amount, "currency": order.currency },
        })
        .to_string();
        let event_id = format!("evt_dev_{}", Uuid::now_v7().simple());
        let timestamp = Utc::now().timestamp();
        let stamp = timestamp.to_string();
        let signature = secret.sign(&event_id, timestamp, body.as_bytes());
        let delivery = SignedDelivery {
            id: Some(&event_id),
            timestamp: Some(&stamp),
            signature: Some(&signature),
        };
        self.receive(delivery, body.as_bytes()).await
    }

    /// One order, for its owner or an admin; anyone else finds nothing.
    pub async fn order(
        &self,
        order_id: Uuid,
        caller: Uuid,
        is_admin: bool,
    ) -> Result<OrderRow, AppError> {
        match self.db.order(order_id).await? {
            Some((order, owner)) if owner == caller || is_admin => Ok(order),
            _ => Err(DomainError::OrderNotFound(order_id).into()),
        }
    }

    /// Cancels the shopper's order while it awaits payment; its units go
    /// back on sale at once (or, if Redis is unavailable, with the
    /// worker's next sweep).
    pub async fn cancel(&self, order_id: Uuid, shopper: Uuid) -> Result<OrderRow, AppError> {
        match self.db.cancel_hold(order_id, shopper).await? {
            Cancelled::Now(hold) => {
                metrics::counter!("holds_ended_total", "how" => "cancelled").increment(1);
                // A failure is logged there; the worker's sweep returns them.
                holds::return_units(&self.db, &self.redis, &[hold]).await;
            }
            Cancelled::NotAwaiting(status) => {
                return Err(DomainError::OrderNotAwaitingPayment { order_id, status }.into());
            }
        }
        self.order(order_id, shopper, false).await
    }
}

fn refusal_label(error: &SignatureError) -> &'static str {
    match error {
        SignatureError::Malformed(_) => "malformed",
        SignatureError::Stale { .. } => "stale",
        SignatureError::Mismatch => "signature",
    }
}
