//! `streams hold`: N anonymous streams held open on one API node, and what
//! they cost it. Reads the node's resident memory (`/proc/PID/status`
//! VmRSS) before opening them and again after every stream had its first
//! `sale` event and `--hold` seconds passed (reading every event
//! meanwhile); prints one JSON line.

use std::{
    fs,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;

use crate::{hundredths, open};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of one API node (not nginx: the cost is the node's).
    #[arg(long)]
    url: String,
    /// The sale whose stream to hold.
    #[arg(long)]
    sale: String,
    /// The node's process id, for its resident memory.
    #[arg(long)]
    pid: u32,
    /// How many streams.
    #[arg(short = 'n', default_value_t = 2000)]
    count: usize,
    /// Seconds to hold them once all are open.
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
}

pub async fn run(args: Args) -> Result<(), String> {
    let before = rss_kib(args.pid)?;
    let client = crate::client()?;
    let sale_events = Arc::new(AtomicU64::new(0));
    let (opened_tx, mut opened) = mpsc::unbounded_channel();
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.count)
        .map(|_| {
            let (client, url, sale) = (client.clone(), args.url.clone(), args.sale.clone());
            let (sale_events, opened) = (sale_events.clone(), opened_tx.clone());
            tokio::spawn(async move {
                let mut opened = Some(opened);
                let ended = follow(&client, &url, &sale, &sale_events, &mut opened).await;
                if let Some(opened) = opened {
                    let _ = opened.send(Some(ended));
                }
            })
        })
        .collect();
    let mut refused = Vec::new();
    for _ in 0..args.count {
        if let Some(error) = opened.recv().await.flatten() {
            refused.push(error);
        }
    }
    if let Some(first) = refused.first() {
        return Err(format!(
            "{} of {} streams did not open, e.g. {first}",
            refused.len(),
            args.count
        ));
    }
    let open_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    let after = rss_kib(args.pid)?;
    for task in &tasks {
        task.abort();
    }
    println!(
        "{}",
        json!({
            "streams": args.count,
            "open_seconds": hundredths(open_seconds),
            "rss_before_mib": (before as f64 / 1024.0 * 10.0).round() / 10.0,
            "rss_after_mib": (after as f64 / 1024.0 * 10.0).round() / 10.0,
            "kib_per_stream": ((after as f64 - before as f64) / args.count as f64 * 10.0).round() / 10.0,
            "sale_events_received": sale_events.load(Ordering::Relaxed),
        })
    );
    Ok(())
}

/// Reads one anonymous stream until it ends (or the task is aborted),
/// counting its `sale` events; reports on `opened` at the first. Returns
/// why the stream ended.
async fn follow(
    client: &reqwest::Client,
    url: &str,
    sale: &str,
    sale_events: &AtomicU64,
    opened: &mut Option<mpsc::UnboundedSender<Option<String>>>,
) -> String {
    let mut events = match open(client, url, sale, None).await {
        Ok(events) => events,
        Err(error) => return error,
    };
    while let Some(event) = events.next().await {
        match event {
            Ok(event) if event.event == "sale" => {
                sale_events.fetch_add(1, Ordering::Relaxed);
                if let Some(opened) = opened.take() {
                    let _ = opened.send(None);
                }
            }
            Ok(_) => {}
            Err(error) => return error,
        }
    }
    "the stream ended".to_owned()
}

fn rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).map_err(|error| format!("{path}: {error}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| format!("no VmRSS in {path}"))
}
