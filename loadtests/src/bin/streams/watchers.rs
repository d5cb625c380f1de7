//! `streams watchers`: shoppers who watch their purchase live while the
//! stampede runs (`scripts/bench --watchers`; the bench's side is
//! `open_watchers` and `settle_watchers` in scripts/lib/bench/steps.sh, the
//! report is read by scripts/lib/bench/watchers.jq).
//!
//! The first N shoppers of the tokens file (one JWT per line) each hold one
//! authenticated stream, as the shop page does. Once every stream has its
//! first `sale` event, the shoppers' ids go to `--ready`, one per line. On
//! SIGUSR1 the number of outcomes to wait for is read from `--expect`; once
//! that many shoppers have a final `purchase` event (or `--settle-secs`
//! pass) one JSON document goes to `--out`: per shopper the final status,
//! reservation and arrival time, and how many `sale` events came.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use base64::Engine;
use futures::StreamExt;
use serde_json::{Map, Value, json};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
    time::Instant,
};

use crate::{hundredths, open, unix_seconds};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of the cluster (nginx).
    #[arg(long)]
    url: String,
    /// The sale to watch.
    #[arg(long)]
    sale: String,
    /// One shopper's JWT per line; the first N watch.
    #[arg(long)]
    tokens: PathBuf,
    /// How many shoppers watch.
    #[arg(short = 'n')]
    count: usize,
    /// Written once every stream is open: the watchers' user ids.
    #[arg(long)]
    ready: PathBuf,
    /// Read on SIGUSR1: how many outcomes to wait for.
    #[arg(long)]
    expect: PathBuf,
    /// The report, as one JSON document.
    #[arg(long)]
    out: PathBuf,
    /// Longest wait for the outcomes after SIGUSR1.
    #[arg(long, default_value_t = 30)]
    settle_secs: u64,
}

/// What one shopper's stream said.
struct Watcher {
    token: String,
    user_id: String,
    sale_events: u64,
    /// The first final `purchase` event: status, reservation, arrival.
    outcome: Option<Value>,
    /// The stream ended (or failed) before it was let go.
    ended_early: bool,
    error: Option<String>,
}

impl Watcher {
    fn new(token: &str) -> Result<Self, String> {
        Ok(Self {
            token: token.to_owned(),
            user_id: shopper_id(token)?,
            sale_events: 0,
            outcome: None,
            ended_early: false,
            error: None,
        })
    }
}

/// The JWT's subject: the shopper's id, as `purchase_endings.user_id`.
fn shopper_id(token: &str) -> Result<String, String> {
    let payload = token.split('.').nth(1).unwrap_or_default();
    let claims: Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or_else(|| format!("not a JWT: {token:.20}..."))?;
    claims["sub"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "a token without a subject".to_owned())
}

pub async fn run(args: Args) -> Result<(), String> {
    // First: SIGUSR1's default action would end the process.
    let mut settle = signal(SignalKind::user_defined1()).map_err(|error| error.to_string())?;
    let tokens = read(&args.tokens)?;
    let watchers = tokens
        .lines()
        .take(args.count)
        .map(|line| Watcher::new(line.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    if watchers.len() < args.count {
        return Err(format!(
            "only {} tokens in {}, {} watchers asked for",
            watchers.len(),
            args.tokens.display(),
            args.count
        ));
    }
    let user_ids: Vec<String> = watchers.iter().map(|w| w.user_id.clone()).collect();

    let client = crate::client()?;
    let (opened_tx, mut opened) = mpsc::unbounded_channel();
    let (settled_tx, mut settled) = mpsc::unbounded_channel();
    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let tasks: Vec<_> = watchers
        .into_iter()
        .map(|watcher| {
            tokio::spawn(watch_stream(
                client.clone(),
                args.url.clone(),
                args.sale.clone(),
                watcher,
                opened_tx.clone(),
                settled_tx.clone(),
                stopped.clone(),
            ))
        })
        .collect();
    let mut refused = Vec::new();
    for _ in 0..args.count {
        if let Some(error) = opened.recv().await.flatten() {
            refused.push(error);
        }
    }
    let open_seconds = started.elapsed().as_secs_f64();
    if let Some(first) = refused.first() {
        return Err(format!(
            "{} of {} streams did not open, e.g. {first}",
            refused.len(),
            args.count
        ));
    }
    write(&args.ready, &(user_ids.join("\n") + "\n"))?;

    settle.recv().await;
    let expected: usize = read(&args.expect)?
        .trim()
        .parse()
        .map_err(|error| format!("{}: {error}", args.expect.display()))?;
    let deadline = Instant::now() + Duration::from_secs(args.settle_secs);
    let mut arrived = 0;
    while arrived < expected {
        match tokio::time::timeout_at(deadline, settled.recv()).await {
            Ok(Some(())) => arrived += 1,
            _ => break,
        }
    }
    let _ = stop.send(true);
    let held_seconds = started.elapsed().as_secs_f64() - open_seconds;

    let mut watchers = Vec::with_capacity(tasks.len());
    for task in tasks {
        watchers.push(task.await.map_err(|error| error.to_string())?);
    }
    let outcomes: Map<String, Value> = watchers
        .iter()
        .map(|w| (w.user_id.clone(), w.outcome.clone().unwrap_or(Value::Null)))
        .collect();
    let report = json!({
        "streams": watchers.len(),
        "open_seconds": hundredths(open_seconds),
        "held_seconds": hundredths(held_seconds),
        "streams_ended_early": watchers.iter().filter(|w| w.ended_early).count(),
        "stream_errors": watchers.iter().filter_map(|w| w.error.clone()).take(5).collect::<Vec<_>>(),
        "sale_events": watchers.iter().map(|w| w.sale_events).sum::<u64>(),
        "outcomes": outcomes,
    });
    write(&args.out, &report.to_string())
}

/// Follows one shopper's stream until told to stop (then the stream did
/// not end early) or it ends. Reports on `opened` once: with the error when
/// the stream ended before its first `sale` event, else without.
async fn watch_stream(
    client: reqwest::Client,
    base: String,
    sale: String,
    mut watcher: Watcher,
    opened: mpsc::UnboundedSender<Option<String>>,
    settled: mpsc::UnboundedSender<()>,
    mut stop: watch::Receiver<bool>,
) -> Watcher {
    let mut opened = Some(opened);
    let ended = tokio::select! {
        _ = stop.wait_for(|stop| *stop) => None,
        result = follow(&client, &base, &sale, &mut watcher, &mut opened, &settled) => Some(result),
    };
    if let Some(result) = ended {
        watcher.ended_early = true;
        watcher.error = result.err();
        if let Some(opened) = opened {
            let _ = opened.send(watcher.error.clone());
        }
    }
    watcher
}

async fn follow(
    client: &reqwest::Client,
    base: &str,
    sale: &str,
    watcher: &mut Watcher,
    opened: &mut Option<mpsc::UnboundedSender<Option<String>>>,
    settled: &mpsc::UnboundedSender<()>,
) -> Result<(), String> {
    let mut events = open(client, base, sale, Some(&watcher.token)).await?;
    while let Some(event) = events.next().await {
        let event = event?;
        match event.event.as_str() {
            "sale" => {
                watcher.sale_events += 1;
                if let Some(opened) = opened.take() {
                    let _ = opened.send(None);
                }
            }
            "purchase" if watcher.outcome.is_none() => {
                let purchase: Value = serde_json::from_str(&event.data)
                    .map_err(|error| format!("a purchase event that is not JSON: {error}"))?;
                if matches!(purchase["status"].as_str(), Some("confirmed" | "failed")) {
                    watcher.outcome = Some(json!({
                        "status": purchase["status"],
                        "reservation_id": purchase["reservation_id"],
                        "at": unix_seconds(),
                    }));
                    let _ = settled.send(());
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))
}

/// Whole or not at all: the bench polls for the file.
fn write(path: &Path, contents: &str) -> Result<(), String> {
    let partial = path.with_extension("partial");
    fs::write(&partial, contents)
        .and_then(|()| fs::rename(&partial, path))
        .map_err(|error| format!("{}: {error}", path.display()))
}
