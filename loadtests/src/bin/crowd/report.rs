//! What the crowd saw: every request's answer and latency (as it happens),
//! each shopper's story (at the end), and the summary `scripts/chaos` reads.

use std::{
    collections::BTreeMap,
    io::Write,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use crate::Args;

/// One shopper, in the end.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Story {
    pub user: usize,
    pub user_id: String,
    #[serde(skip)]
    pub token: String,
    pub idempotency_key: String,
    /// Units asked for.
    pub quantity: u32,
    /// Purchase requests sent, retries included.
    pub attempts: u32,
    /// The final answer's status; none when the shopper gave up.
    pub status: Option<u16>,
    /// The final answer's error code, for refusals.
    pub code: Option<String>,
    pub reservation_id: Option<String>,
    /// The 202 replayed with its key named the same reservation.
    pub replay_matched: Option<bool>,
    /// Where the reservation ended: confirmed, failed, not_found (the
    /// status endpoint no longer knows it), suspended (the shopper's
    /// account was banned, so its tokens are refused), pending, or error
    /// (no answer).
    pub outcome: Option<String>,
    pub reason: Option<String>,
    /// When (Unix ms) this shopper's last request was sent, and when its
    /// last 2xx answer arrived: a banned shopper must get none after the ban.
    pub last_request_ms: Option<u64>,
    pub last_success_ms: Option<u64>,
    /// With `--retry-when`: the status and reservation the key's retry got.
    pub retry_status: Option<u16>,
    pub retry_reservation_id: Option<String>,
}

impl Story {
    /// Notes one request of this shopper and its answer.
    pub fn saw(&mut self, sent_ms: u64, answer: Answer) {
        self.last_request_ms = Some(sent_ms);
        if matches!(answer, Answer::Status(200..=299)) {
            self.last_success_ms = Some(unix_ms());
        }
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|now| now.as_millis() as u64)
        .unwrap_or_default()
}

/// How a request ended, as counted: an HTTP status, or no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Answer {
    Status(u16),
    ConnectionError,
    TimedOut,
}

impl Answer {
    fn label(self) -> String {
        match self {
            Answer::Status(status) => status.to_string(),
            Answer::ConnectionError => "connection_error".into(),
            Answer::TimedOut => "timed_out".into(),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    by_answer: BTreeMap<String, u64>,
    max_latency_ms: BTreeMap<String, u64>,
    /// Unix second → answer → count.
    timeline: BTreeMap<u64, BTreeMap<String, u64>>,
}

/// Shared by every task; one short lock per request.
#[derive(Debug, Default)]
pub struct Recorder {
    purchases: Mutex<Counts>,
    others: Mutex<Counts>,
}

/// Which requests a record belongs to.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Purchase,
    Other,
}

impl Recorder {
    pub fn record(&self, kind: Kind, answer: Answer, latency: Duration) {
        let label = answer.label();
        let second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|now| now.as_secs())
            .unwrap_or_default();
        let latency_ms = latency.as_millis() as u64;
        let counts = match kind {
            Kind::Purchase => &self.purchases,
            Kind::Other => &self.others,
        };
        let mut counts = counts.lock().unwrap();
        *counts.by_answer.entry(label.clone()).or_default() += 1;
        let max = counts.max_latency_ms.entry(label.clone()).or_default();
        *max = (*max).max(latency_ms);
        *counts
            .timeline
            .entry(second)
            .or_default()
            .entry(label)
            .or_default() += 1;
    }
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub shoppers: usize,
    pub purchase_requests: u64,
    /// Purchase answers by status (or connection_error / timed_out).
    pub purchase_answers: BTreeMap<String, u64>,
    pub purchase_max_latency_ms: BTreeMap<String, u64>,
    /// Shoppers whose final answer was 202.
    pub accepted: usize,
    /// Final refusals by error code.
    pub refused: BTreeMap<String, usize>,
    /// Shoppers who never got a final answer.
    pub gave_up: usize,
    /// 202s whose replay with the same key named another reservation.
    pub replay_mismatches: usize,
    /// Accepted reservations by how they ended.
    pub outcomes: BTreeMap<String, usize>,
    /// Status reads and logins.
    pub other_answers: BTreeMap<String, u64>,
    pub other_max_latency_ms: BTreeMap<String, u64>,
    /// Unix second → purchase answer → count.
    pub timeline: BTreeMap<u64, BTreeMap<String, u64>>,
}

pub fn summarize(recorder: &Recorder, stories: &[Story]) -> Summary {
    let purchases = recorder.purchases.lock().unwrap();
    let others = recorder.others.lock().unwrap();
    let mut refused = BTreeMap::new();
    let mut outcomes = BTreeMap::new();
    for story in stories {
        if let Some(code) = &story.code {
            *refused.entry(code.clone()).or_default() += 1;
        }
        if let Some(outcome) = &story.outcome {
            *outcomes.entry(outcome.clone()).or_default() += 1;
        }
    }
    Summary {
        shoppers: stories.len(),
        purchase_requests: purchases.by_answer.values().sum(),
        purchase_answers: purchases.by_answer.clone(),
        purchase_max_latency_ms: purchases.max_latency_ms.clone(),
        accepted: stories.iter().filter(|s| s.status == Some(202)).count(),
        refused,
        gave_up: stories.iter().filter(|s| s.status.is_none()).count(),
        replay_mismatches: stories
            .iter()
            .filter(|s| s.replay_matched == Some(false))
            .count(),
        outcomes,
        other_answers: others.by_answer.clone(),
        other_max_latency_ms: others.max_latency_ms.clone(),
        timeline: purchases.timeline.clone(),
    }
}

pub fn write(args: &Args, recorder: &Recorder, stories: &[Story]) -> std::io::Result<()> {
    let mut lines =
        std::io::BufWriter::new(std::fs::File::create(args.out.join("shoppers.jsonl"))?);
    for story in stories {
        serde_json::to_writer(&mut lines, story)?;
        lines.write_all(b"\n")?;
    }
    lines.flush()?;
    let summary = std::fs::File::create(args.out.join("summary.json"))?;
    serde_json::to_writer_pretty(summary, &summarize(recorder, stories))?;
    Ok(())
}
