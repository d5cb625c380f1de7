//! A shop with checkout holds for the holds and waitlist tests: a sale
//! with a hold, a real API node taking signed payments, the real worker
//! sweeping every 100 ms, and a fake payment provider.

use std::time::Duration;

use chrono::{DateTime, Utc};
use flashsale::domain::Role;
use flashsale_testkit::{
    node::ApiNode,
    payments::{FakeProvider, NEXT_SECRET, SECRET},
    worker::{Harness, WorkerProcess},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::WORKER;

/// A sale with a checkout hold, a node that takes payments signed with
/// either of two secrets, and a worker sweeping every 100 ms.
pub struct Shop {
    pub harness: Harness,
    pub node: ApiNode,
    pub provider: FakeProvider,
    _worker: WorkerProcess,
}

impl Shop {
    pub async fn open(pg: PgPool, stock: i64, hold_seconds: i32) -> Self {
        let harness = Harness::with_hold(WORKER, pg, stock, 1, Some(hold_seconds)).await;
        let secrets = format!("--webhook-secrets={SECRET},{NEXT_SECRET}");
        let node = ApiNode::start(&harness, &[&secrets, "--hold-min-secs=1"]).await;
        let provider = FakeProvider::new(&node.base, SECRET);
        let worker = harness.spawn_worker(&[("FLASHSALE_HOLD_SWEEP_MS", "100")]);
        Self {
            harness,
            node,
            provider,
            _worker: worker,
        }
    }

    pub async fn shopper(&self) -> (Uuid, String) {
        let user_id = self.harness.users(1).await[0];
        (user_id, self.node.token(user_id, Role::Shopper))
    }

    /// Sends a request as `token`; a body also gets the idempotency key
    /// `buy-once` (what a purchase needs; other endpoints ignore it).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .node
            .client
            .request(method, format!("{}{path}", self.node.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.header("idempotency-key", "buy-once").json(&body);
        }
        let reply = request.send().await.unwrap();
        let status = reply.status();
        (status, reply.json().await.unwrap_or(Value::Null))
    }

    /// Buys one unit: the 202's body.
    pub async fn buy(&self, token: &str) -> Value {
        let body = json!({ "sale_id": self.harness.sale.id });
        let (status, accepted) = self
            .request(
                reqwest::Method::POST,
                "/api/purchase/attempt",
                token,
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        accepted
    }

    /// The purchase's order once the worker has written it.
    pub async fn order_of(&self, token: &str, accepted: &Value) -> Value {
        let path = format!(
            "/api/purchase/status?reservation_id={}",
            accepted["reservation_id"].as_str().unwrap()
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let (_, status) = self.request(reqwest::Method::GET, &path, token, None).await;
            if status["order"].is_object() {
                return status["order"].clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the order was not written: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Changes the sale as its operator (`ApiNode::change_sale`), which must
    /// succeed; returns the sale.
    pub async fn change_sale(&self, change: Value) -> Value {
        let (status, sale) = self.node.change_sale(&self.harness, change).await;
        assert_eq!(status, StatusCode::OK, "{sale}");
        sale
    }

    pub async fn order(&self, token: &str, order_id: &str) -> (StatusCode, Value) {
        let path = format!("/api/orders/{order_id}");
        self.request(reqwest::Method::GET, &path, token, None).await
    }

    pub async fn cancel(&self, token: &str, order_id: &str) -> (StatusCode, Value) {
        let path = format!("/api/orders/{order_id}/cancel");
        self.request(reqwest::Method::POST, &path, token, None)
            .await
    }

    pub async fn pay(&self, event_id: &str, order: &Value) -> (StatusCode, Value) {
        let answer = self
            .provider
            .pay(
                event_id,
                order_id(order),
                order["amount"].as_i64().unwrap(),
                order["currency"].as_str().unwrap(),
            )
            .await;
        (answer.status, answer.body)
    }

    /// The shopper's live event stream of the sale.
    pub async fn events(&self, token: &str) -> flashsale_testkit::sse::EventReader {
        let stream = self
            .node
            .client
            .get(format!(
                "{}/api/flash-sale/events?sale_id={}",
                self.node.base, self.harness.sale.id
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        flashsale_testkit::sse::EventReader::new(stream)
    }

    pub async fn invariants(&self) -> Value {
        self.harness.sale_invariants().await
    }

    pub async fn payment_events(&self) -> i64 {
        sqlx::query_scalar("select count(*) from payment_events")
            .fetch_one(&self.harness.pg)
            .await
            .unwrap()
    }
}

pub fn order_id(order: &Value) -> Uuid {
    order["id"].as_str().unwrap().parse().unwrap()
}

pub fn pay_by(order: &Value) -> DateTime<Utc> {
    order["pay_by"].as_str().unwrap().parse().unwrap()
}
