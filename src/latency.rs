//! The purchase endpoint's latency as a histogram every node keeps and
//! shares: each node counts its own answers to `POST /api/purchase/attempt`
//! in fixed buckets, publishes the cumulative counts to Redis every
//! [`PUBLISH_EVERY`], and the operators' stats add up every node's, take
//! the difference with what they added up about 10 s before, and read the
//! percentiles off it (as Prometheus's `histogram_quantile` does). One
//! atomic add per purchase; nothing per request reaches Redis.

use std::{
    collections::VecDeque,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use serde::Serialize;
use utoipa::ToSchema;

/// How often a node publishes its counts.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(2);
/// The window the stats' percentiles cover, when they have reads that old.
const WINDOW: Duration = Duration::from_secs(10);

/// Upper bounds of the buckets, in milliseconds; one more bucket counts
/// everything slower. Fine below 50 ms, where a purchase should answer.
pub const BUCKET_UPPER_MS: [f64; 20] = [
    0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 75.0, 100.0, 250.0,
    500.0, 1000.0, 2500.0, 5000.0,
];
const BUCKETS: usize = BUCKET_UPPER_MS.len() + 1;

/// One node's counts per bucket since it started.
pub struct LatencyHistogram {
    counts: [AtomicU64; BUCKETS],
}

impl LatencyHistogram {
    pub const fn new() -> Self {
        Self {
            counts: [const { AtomicU64::new(0) }; BUCKETS],
        }
    }

    pub fn record(&self, elapsed: Duration) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        let bucket = BUCKET_UPPER_MS
            .iter()
            .position(|&upper| ms <= upper)
            .unwrap_or(BUCKETS - 1);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect()
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts as one node publishes them: comma-separated, one per bucket.
pub fn encode(counts: &[u64]) -> String {
    counts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The counts of [`encode`]; `None` for a foreign shape (another build's
/// buckets), which is left out rather than added wrongly.
pub fn decode(text: &str) -> Option<Vec<u64>> {
    let counts: Vec<u64> = text
        .split(',')
        .map(|count| count.parse().ok())
        .collect::<Option<_>>()?;
    (counts.len() == BUCKETS).then_some(counts)
}

/// The purchase latency of every node that published recently, added up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct ClusterLatency {
    /// Nodes whose counts are in (published within the last 30 s).
    pub nodes: usize,
    /// Seconds the figures cover (about the last 10); null: everything
    /// since each node started (no earlier read to compare with yet, or a
    /// node joined, left or restarted since).
    pub window_seconds: Option<f64>,
    /// Purchase answers counted.
    pub requests: u64,
    /// Percentiles, in milliseconds (interpolated within a bucket; null
    /// without answers; anything slower than the last bucket reads 5000).
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl ClusterLatency {
    fn of_counts(nodes: usize, window_seconds: Option<f64>, counts: &[u64]) -> Self {
        Self {
            nodes,
            window_seconds,
            requests: counts.iter().sum(),
            p50_ms: quantile(counts, 0.50),
            p95_ms: quantile(counts, 0.95),
            p99_ms: quantile(counts, 0.99),
        }
    }
}

/// The cluster's counts as the stats read them lately, to take the
/// difference of two reads about [`WINDOW`] apart.
#[derive(Default)]
pub struct LatencyWindow {
    /// (when, how many nodes, their summed counts), oldest first.
    reads: Mutex<VecDeque<(Instant, usize, Vec<u64>)>>,
}

impl LatencyWindow {
    /// Adds up the nodes' counts read now and answers the percentiles of
    /// the last ~10 s (or since the nodes started, see
    /// [`ClusterLatency::window_seconds`]).
    pub fn observe(&self, nodes: &[Vec<u64>]) -> ClusterLatency {
        let mut total = vec![0u64; BUCKETS];
        for node in nodes {
            for (sum, count) in total.iter_mut().zip(node) {
                *sum += count;
            }
        }
        let now = Instant::now();
        let mut reads = self.reads.lock();
        reads.retain(|(at, _, _)| now.duration_since(*at) <= 3 * WINDOW);
        // The newest read at least WINDOW old, else the oldest at least
        // one publication old.
        let baseline = reads
            .iter()
            .rev()
            .find(|(at, _, _)| now.duration_since(*at) >= WINDOW)
            .or_else(|| {
                reads
                    .front()
                    .filter(|(at, _, _)| now.duration_since(*at) >= PUBLISH_EVERY)
            });
        let recent = baseline.and_then(|(at, node_count, counts)| {
            let same_nodes = *node_count == nodes.len();
            let difference: Option<Vec<u64>> = total
                .iter()
                .zip(counts)
                .map(|(now, then)| now.checked_sub(*then))
                .collect();
            same_nodes
                .then_some(difference)
                .flatten()
                .map(|difference| (now.duration_since(*at).as_secs_f64(), difference))
        });
        reads.push_back((now, nodes.len(), total.clone()));
        match recent {
            Some((seconds, difference)) => {
                ClusterLatency::of_counts(nodes.len(), Some(seconds), &difference)
            }
            None => ClusterLatency::of_counts(nodes.len(), None, &total),
        }
    }
}

/// The `q` quantile (0..1) of per-bucket counts, interpolated linearly
/// inside the bucket it falls in.
fn quantile(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (bucket, &count) in counts.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let lower = if bucket == 0 {
                0.0
            } else {
                BUCKET_UPPER_MS[bucket - 1]
            };
            let Some(&upper) = BUCKET_UPPER_MS.get(bucket) else {
                return Some(lower);
            };
            let within = (rank - below as f64) / count as f64;
            return Some(lower + (upper - lower) * within);
        }
        below += count;
    }
    Some(BUCKET_UPPER_MS[BUCKET_UPPER_MS.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_land_in_their_bucket_and_percentiles_interpolate() {
        let histogram = LatencyHistogram::new();
        for _ in 0..98 {
            histogram.record(Duration::from_micros(1_500)); // (1, 2] ms
        }
        histogram.record(Duration::from_millis(45)); // (40, 50]
        histogram.record(Duration::from_secs(9)); // slower than every bound
        let counts = histogram.snapshot();
        assert_eq!(counts[2], 98);
        assert_eq!(counts[12], 1);
        assert_eq!(counts[BUCKETS - 1], 1);

        let latency = LatencyWindow::default().observe(&[counts.clone(), counts]);
        assert_eq!(latency.nodes, 2);
        assert_eq!(latency.window_seconds, None, "no earlier read");
        assert_eq!(latency.requests, 200);
        // Rank 100 of 196 in (1, 2]: about halfway.
        let p50 = latency.p50_ms.unwrap();
        assert!((1.5..1.52).contains(&p50), "{p50}");
        assert!(latency.p95_ms.unwrap() <= 2.0);
        // Rank 198 is the 45 ms answers' bucket, (40, 50].
        let p99 = latency.p99_ms.unwrap();
        assert!((40.0..=50.0).contains(&p99), "{p99}");
    }

    #[test]
    fn a_later_read_covers_what_came_since_the_earlier_one() {
        let window = LatencyWindow::default();
        let mut counts = vec![0u64; BUCKETS];
        counts[BUCKETS - 1] = 1_000; // slow answers long ago
        let earlier = Instant::now() - WINDOW;
        window.reads.lock().push_back((earlier, 1, counts.clone()));
        counts[0] += 10; // then ten fast ones
        let latency = window.observe(&[counts]);
        assert!(latency.window_seconds.unwrap() >= WINDOW.as_secs_f64());
        assert_eq!(latency.requests, 10);
        assert!(latency.p99_ms.unwrap() <= 0.5, "{latency:?}");

        // A node restarted (its counts went back): since start instead.
        let latency = window.observe(&[vec![1; BUCKETS]]);
        assert_eq!(latency.window_seconds, None);
        assert_eq!(latency.requests, BUCKETS as u64);
    }

    #[test]
    fn no_answers_no_percentiles_and_foreign_shapes_are_refused() {
        assert_eq!(quantile(&[0; BUCKETS], 0.5), None);
        let counts: Vec<u64> = (0..BUCKETS as u64).collect();
        assert_eq!(decode(&encode(&counts)), Some(counts));
        assert_eq!(decode("1,2,3"), None, "another build's buckets");
        assert_eq!(decode("x"), None);
    }
}
