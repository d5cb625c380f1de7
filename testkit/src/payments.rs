//! A payment provider for tests: it signs its webhooks the way a real one
//! does (Standard Webhooks, with the engine's own signer) and delivers them
//! to an API node's `POST /api/payments/webhook`.

use std::time::Duration;

use chrono::Utc;
use flashsale::payments::WebhookSecret;
use rand_core::{OsRng, RngCore};
use serde_json::{Value, json};
use uuid::Uuid;

/// Two secrets a deployment accepts during a rotation, and one it does not.
pub const SECRET: &str = "whsec_Zmxhc2hzYWxlLXRlc3Qtd2ViaG9vay1zZWNyZXQtMDE=";
pub const NEXT_SECRET: &str = "whsec_Zmxhc2hzYWxlLXRlc3Qtd2ViaG9vay1zZWNyZXQtMDI=";
pub const FOREIGN_SECRET: &str = "whsec_bm90LXRoZS1zaG9wcy13ZWJob29rLXNlY3JldC05OTk=";

/// One delivery as sent.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event_id: String,
    pub timestamp: i64,
    pub body: String,
    pub signature: String,
}

/// What the webhook answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: reqwest::StatusCode,
    pub body: Value,
}

pub struct FakeProvider {
    client: reqwest::Client,
    webhook_url: String,
    secret: WebhookSecret,
}

impl FakeProvider {
    /// A provider signing with `secret` (`whsec_...`) for the node at `base`.
    pub fn new(base: &str, secret: &str) -> Self {
        Self {
            client: reqwest::Client::new(),
            webhook_url: format!("{base}/api/payments/webhook"),
            secret: WebhookSecret::parse(secret).expect("a whsec_ secret"),
        }
    }

    /// The body of a `payment.succeeded` event.
    pub fn payment_body(order_id: Uuid, amount: i64, currency: &str) -> String {
        json!({
            "type": "payment.succeeded",
            "data": { "order_id": order_id, "amount": amount, "currency": currency }
        })
        .to_string()
    }

    /// A delivery of `body` as event `event_id`, signed now.
    pub fn signed(&self, event_id: &str, body: String) -> Delivery {
        let timestamp = Utc::now().timestamp();
        Delivery {
            signature: self.secret.sign(event_id, timestamp, body.as_bytes()),
            event_id: event_id.to_owned(),
            timestamp,
            body,
        }
    }

    /// The same delivery, signed at `timestamp` (a stale one, say).
    pub fn signed_at(&self, event_id: &str, timestamp: i64, body: String) -> Delivery {
        Delivery {
            signature: self.secret.sign(event_id, timestamp, body.as_bytes()),
            event_id: event_id.to_owned(),
            timestamp,
            body,
        }
    }

    /// Sends one delivery as it is (tests tamper with it first).
    pub async fn send(&self, delivery: &Delivery) -> Answer {
        let reply = self
            .client
            .post(&self.webhook_url)
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.event_id)
            .header("webhook-timestamp", delivery.timestamp.to_string())
            .header("webhook-signature", &delivery.signature)
            .body(delivery.body.clone())
            .send()
            .await
            .expect("the webhook answers");
        let status = reply.status();
        let body = reply.json().await.unwrap_or(Value::Null);
        Answer { status, body }
    }

    /// Pays `amount` `currency` for the order, as event `event_id`.
    pub async fn pay(&self, event_id: &str, order_id: Uuid, amount: i64, currency: &str) -> Answer {
        let delivery = self.signed(event_id, Self::payment_body(order_id, amount, currency));
        self.send(&delivery).await
    }

    /// Pays as [`Self::pay`], and delivers the same event again after each
    /// 503 the way real providers do: later and later (from 250 ms,
    /// doubling to 4 s, each wait jittered down by up to half), until
    /// `patience` has passed. It does not read `Retry-After`: a burst's
    /// retries spread by the backoff alone (retries at one fixed short
    /// interval would arrive in lockstep, as a burst again).
    pub async fn pay_until_answered(
        &self,
        event_id: &str,
        order_id: Uuid,
        amount: i64,
        currency: &str,
        patience: Duration,
    ) -> Answer {
        let give_up_at = tokio::time::Instant::now() + patience;
        let mut wait = Duration::from_millis(250);
        loop {
            let answer = self.pay(event_id, order_id, amount, currency).await;
            let left = give_up_at.saturating_duration_since(tokio::time::Instant::now());
            if answer.status != reqwest::StatusCode::SERVICE_UNAVAILABLE || left.is_zero() {
                return answer;
            }
            let jitter = f64::from(OsRng.next_u32()) / f64::from(u32::MAX) / 2.0;
            tokio::time::sleep(wait.mul_f64(1.0 - jitter).min(left)).await;
            wait = (wait * 2).min(Duration::from_secs(4));
        }
    }
}
