//! Server-Sent Events for the tests (eventsource-stream does the parsing):
//! named events with JSON data; comments (heartbeats) never surface.

use std::{pin::Pin, time::Duration};

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use serde_json::Value;

type Events = Pin<Box<dyn Stream<Item = Option<SseEvent>> + Send>>;

pub struct EventReader {
    events: Events,
}

#[derive(Debug, Clone)]
pub struct SseEvent {
    pub name: String,
    pub data: Value,
}

impl EventReader {
    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        // A broken stream reads as its end (`None`), as the stream ending.
        let events = response.bytes_stream().eventsource().map(|event| {
            event.ok().map(|event| SseEvent {
                name: event.event,
                data: serde_json::from_str(&event.data).expect("event data is JSON"),
            })
        });
        Self {
            events: Box::pin(events),
        }
    }

    /// The next event, or `None` when the stream ends; panics after `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<SseEvent> {
        tokio::time::timeout(limit, self.events.next())
            .await
            .unwrap_or_else(|_| panic!("no event within {limit:?}"))
            .flatten()
    }

    /// The next event named `name`, skipping others.
    pub async fn next_named(&mut self, name: &str, limit: Duration) -> SseEvent {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self
                .next(left)
                .await
                .unwrap_or_else(|| panic!("the stream ended before a {name} event"));
            if event.name == name {
                return event;
            }
        }
    }
}
