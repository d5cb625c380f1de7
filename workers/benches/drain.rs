//! Drain rate of one worker: N reservations queued, then one
//! `flashsale-worker` (release build) started; the figure is orders
//! committed per second from the first order to the last, per batch size
//! and per job size (purchases per queued job: 1 is one job per purchase,
//! as before the API's outbox; a stampede's outbox jobs carry tens).
//! Needs the project's PostgreSQL and Redis (`scripts/test` or `scripts/up`
//! start them) and `DATABASE_URL` pointing at that PostgreSQL.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:55432/flashsale \
//!   DRAIN_COUNTS=10000,100000 DRAIN_BATCH_SIZES=64,256,1024 DRAIN_JOB_SIZES=1,64 \
//!   cargo bench -p flashsale-workers --bench drain
//! ```

use std::time::{Duration, Instant};

use flashsale_testkit::worker::{Harness, drop_database, fresh_database};

const WORKER: &str = env!("CARGO_BIN_EXE_flashsale-worker");

fn list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|value| {
            value
                .trim()
                .parse()
                .expect("a comma-separated list of numbers")
        })
        .collect()
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let admin_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:55432/flashsale".into());
    let counts = list("DRAIN_COUNTS", "10000,100000");
    let batch_sizes = list("DRAIN_BATCH_SIZES", "64,256,1024");
    let job_sizes = list("DRAIN_JOB_SIZES", "1,64");
    println!(
        "| queued | purchases per job | batch size | drain (first → last order) | orders/s | worker start → last order |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut runs = Vec::new();
    for &count in &counts {
        for &job_size in &job_sizes {
            for &batch in &batch_sizes {
                runs.push((count, job_size, batch));
            }
        }
    }
    for (count, job_size, batch) in runs {
        let (pool, name) = fresh_database(&admin_url).await;
        let harness = Harness::new(WORKER, pool.clone(), count as i64, 1).await;
        let users = harness.users(count).await;
        let jobs = harness.reserve(&users).await;
        assert_eq!(jobs.len(), count);
        harness.enqueue_in_jobs_of(&jobs, job_size).await;

        let concurrency = (batch * 4).max(4096).to_string();
        let log_level = std::env::var("DRAIN_LOG").unwrap_or_else(|_| "warn".into());
        let started = Instant::now();
        let _worker = harness.spawn_worker(&[
            ("FLASHSALE_WORKER_BATCH_SIZE", &batch.to_string()),
            ("FLASHSALE_WORKER_CONCURRENCY", &concurrency),
            ("FLASHSALE_PG_MAX_CONNECTIONS", "8"),
            ("FLASHSALE_LOG", &log_level),
            ("FLASHSALE_WORKER_REPORT_SECS", "1"),
        ]);
        let mut first_order = None;
        loop {
            // One row, not count(*) over a growing table: the poll must
            // not be what the bench measures.
            let orders = harness.confirmed_units().await;
            if orders > 0 && first_order.is_none() {
                first_order = Some(Instant::now());
            }
            if orders == count as i64 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "drain stalled at {orders}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let done = Instant::now();
        let drain = done - first_order.unwrap_or(started);
        println!(
            "| {count} | {job_size} | {batch} | {:.2} s | {:.0} | {:.2} s |",
            drain.as_secs_f64(),
            count as f64 / drain.as_secs_f64(),
            (done - started).as_secs_f64()
        );
        drop(_worker);
        pool.close().await;
        drop_database(&admin_url, &name).await;
    }
}
