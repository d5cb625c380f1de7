//! `streams`: clients holding the live event stream of a sale
//! (`GET /api/flash-sale/events`), read with an SSE parser
//! (eventsource-stream) over reqwest.
//!
//! - `streams watchers`: shoppers who watch their purchase arrive while
//!   `scripts/bench --watchers` runs, and what their streams told them.
//! - `streams hold`: anonymous visitors on one API node, and the memory they
//!   cost it (BENCHMARKS.md "Live events").

mod hold;
mod watchers;

use std::{
    pin::Pin,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};

#[derive(Debug, Parser)]
#[command(about = "Clients holding a sale's live event stream")]
enum Command {
    /// The first N shoppers of a tokens file each hold their own stream
    /// through nginx; reports each one's final purchase event
    /// (scripts/bench --watchers).
    Watchers(watchers::Args),
    /// N anonymous streams on one API node; prints what they cost its
    /// resident memory, as one JSON line.
    Hold(hold::Args),
}

#[tokio::main]
async fn main() {
    let result = match Command::parse() {
        Command::Watchers(args) => watchers::run(args).await,
        Command::Hold(args) => hold::run(args).await,
    };
    if let Err(error) = result {
        eprintln!("streams: {error}");
        std::process::exit(1);
    }
}

/// A stream's events as they arrive, or why reading stopped.
pub type Events = Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>;

/// One client for every stream: no overall timeout (a stream is endless)
/// and no idle pool to speak of (each stream holds its own connection).
pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|error| format!("no HTTP client: {error}"))
}

/// Opens the event stream of `sale` at `base` (as the shopper `token` when
/// given); fails unless the node answers 200. Heartbeat comments never
/// surface as events.
pub async fn open(
    client: &reqwest::Client,
    base: &str,
    sale: &str,
    token: Option<&str>,
) -> Result<Events, String> {
    let mut request = client.get(format!("{base}/api/flash-sale/events?sale_id={sale}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|error| error.to_string())?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(format!("stream refused: {}", response.status()));
    }
    Ok(response
        .bytes_stream()
        .eventsource()
        .map(|event| event.map_err(|error| error.to_string()))
        .boxed())
}

/// Seconds since the Unix epoch, as PostgreSQL's `extract(epoch from ...)`.
pub fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Rounded to two decimals, for the reports.
pub fn hundredths(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}
