//! `crowd`: the shoppers of the fault suite (`scripts/chaos`).
//!
//! Logs in `--users` shoppers, then starts them at a steady `--rate`. Each
//! buys once with its own Idempotency-Key and, like a real client, retries
//! through 429, 503 and broken connections with the same key until it gets
//! a final answer (or `--give-up-secs` pass). Every 202 is replayed once with
//! its key: the answer must name the same reservation. Shopper n asks for
//! `1 + n % --max-quantity` units. With `--retry-when`, every shopper with
//! a 202 sends its key once more when the signal file appears (after the
//! fault). Once every shopper
//! is done, each accepted reservation is followed through
//! `GET /api/purchase/status` until it ends (or `--follow-secs` pass).
//!
//! Writes `shoppers.jsonl` (one line per shopper: what it was told, in the
//! end) and `summary.json` (counts, latencies, a per-second timeline) into
//! `--out`; `scripts/chaos` joins them with PostgreSQL.

mod follow;
mod purchase;
mod report;

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::Parser;
use futures::{StreamExt, stream};
use serde_json::json;

use crate::report::{Recorder, Story};

#[derive(Debug, Parser)]
#[command(
    about = "Shoppers that buy once each, retry like real clients, and report what they were told"
)]
pub struct Args {
    /// Base URL of the cluster (nginx).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub host: String,
    /// The sale to buy from.
    #[arg(long)]
    pub sale_id: String,
    /// Names this run's shoppers (`crowd-<run>-<n>@load.local`).
    #[arg(long)]
    pub run_id: String,
    /// How many shoppers.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Shoppers started per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// A shopper stops retrying this long after its first attempt.
    #[arg(long, default_value_t = 60)]
    pub give_up_secs: u64,
    /// How long to follow accepted reservations until they end.
    #[arg(long, default_value_t = 180)]
    pub follow_secs: u64,
    /// Any single request taking longer than this counts as hung.
    #[arg(long, default_value_t = 15)]
    pub request_timeout_secs: u64,
    /// Directory for shoppers.jsonl and summary.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Units per purchase, mixed: shopper n asks for 1 + n % this.
    #[arg(long, default_value_t = 1)]
    pub max_quantity: u32,
    /// Once every shopper has its answer, wait for this file to appear,
    /// then have every shopper with a 202 send its key again (as clients
    /// retrying after an outage would) and note which reservation came back.
    #[arg(long)]
    pub retry_when: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(args.request_timeout_secs))
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let recorder = Arc::new(Recorder::default());

    eprintln!("crowd: logging in {} shoppers", args.users);
    let tokens = purchase::log_in_all(&client, &args, &recorder).await?;

    eprintln!("crowd: {} shoppers buying at {}/s", args.users, args.rate);
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    let started = tokio::time::Instant::now();
    let stories: Vec<Story> = stream::iter(tokens.into_iter().enumerate())
        .map(|(index, (user_id, token))| {
            let client = client.clone();
            let recorder = recorder.clone();
            let args = &args;
            async move {
                tokio::time::sleep_until(started + interval.mul_f64(index as f64)).await;
                purchase::buy_once(&client, args, &recorder, index, user_id, token).await
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;

    let stories = match &args.retry_when {
        Some(signal) => purchase::retry_all(&client, &args, &recorder, stories, signal).await,
        None => stories,
    };

    eprintln!(
        "crowd: following {} accepted reservations",
        stories
            .iter()
            .filter(|story| story.reservation_id.is_some())
            .count()
    );
    let stories = follow::follow_all(&client, &args, &recorder, stories).await;

    report::write(&args, &recorder, &stories)?;
    let summary = report::summarize(&recorder, &stories);
    println!("{}", json!(summary));
    Ok(())
}
