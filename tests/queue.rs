//! The purchase queue against the real test Redis: the API node's outbox
//! (`src/jobs/outbox.rs`), and the worker's upkeep of apalis's keys
//! (`src/jobs/upkeep.rs`), pinned to the apalis-redis version it was
//! written for: the scripts write apalis-redis's private layout, so an
//! upgrade must fail here until they are checked against the new one.

mod common;

use std::{collections::HashMap, time::Duration};

use flashsale::jobs::{PurchaseJob, PurchaseQueue, SettlementJob, outbox::Outbox, upkeep};
use redis::AsyncCommands;
use uuid::Uuid;

#[test]
fn the_upkeep_scripts_match_the_apalis_redis_in_cargo_lock() {
    let lock = include_str!("../Cargo.lock");
    let locked = lock
        .split("[[package]]")
        .find(|package| package.contains("name = \"apalis-redis\""))
        .and_then(|package| package.lines().find(|line| line.starts_with("version = ")))
        .expect("apalis-redis is in Cargo.lock");
    assert_eq!(
        locked,
        format!("version = \"{}\"", upkeep::APALIS_REDIS_VERSION),
        "apalis-redis changed: check src/jobs/scripts/*.lua against its key layout, then update APALIS_REDIS_VERSION"
    );
}

fn job() -> SettlementJob {
    SettlementJob::single(PurchaseJob {
        reservation_id: Uuid::now_v7(),
        sale_id: Uuid::now_v7(),
        user_id: Uuid::now_v7(),
        quantity: flashsale::domain::Quantity::ONE,
        idempotency_key: "k".into(),
        reserved_at_ms: 0,
    })
}

/// A queue under a prefix of its own; returns the prefix too.
fn fresh_queue() -> (String, PurchaseQueue) {
    flashsale::tls::install_provider();
    let prefix = format!("queue-{}", Uuid::now_v7().simple());
    let queue = PurchaseQueue::connect_lazy(
        &common::redis_url(),
        &prefix,
        Duration::from_secs(60),
        Duration::from_secs(5),
    )
    .unwrap();
    (prefix, queue)
}

#[tokio::test]
async fn due_jobs_are_promoted_one_bounded_chunk_per_call() {
    let (prefix, queue) = fresh_queue();
    let backlog = upkeep::CHUNK * 2 + 500;
    for _ in 0..backlog {
        queue.enqueue(job()).await.unwrap();
    }
    // apalis parks every pushed job in its scheduled set; they are due now.
    let mut raw = common::redis_connection().await;
    let scheduled = format!("{prefix}:{{purchases}}:scheduled");
    let active = format!("{prefix}:{{purchases}}:active");
    let parked: usize = raw.zcard(&scheduled).await.unwrap();
    assert_eq!(
        parked, backlog,
        "apalis's layout changed: jobs not in {scheduled}"
    );
    assert_eq!(queue.depth().await.unwrap().waiting, backlog as u64);

    // One call moves one chunk; the rest stays for the next calls.
    assert_eq!(queue.promote_due(1).await.unwrap(), upkeep::CHUNK as u64);
    let moved: usize = raw.llen(&active).await.unwrap();
    assert_eq!(moved, upkeep::CHUNK);
    assert_eq!(
        queue.promote_due(usize::MAX).await.unwrap(),
        (backlog - upkeep::CHUNK) as u64
    );
    let moved: usize = raw.llen(&active).await.unwrap();
    let left: usize = raw.zcard(&scheduled).await.unwrap();
    assert_eq!((moved, left), (backlog, 0));
    assert_eq!(queue.depth().await.unwrap().waiting, backlog as u64);
}

#[tokio::test]
async fn the_outbox_queues_each_posted_purchase_once_in_jobs_of_one_sale_even_when_closed_at_once()
{
    let (prefix, queue) = fresh_queue();
    let outbox = Outbox::start(queue);
    let sales = [Uuid::now_v7(), Uuid::now_v7()];
    let mut posted: Vec<PurchaseJob> = Vec::new();
    for index in 0..3_000 {
        let purchase = PurchaseJob {
            reservation_id: Uuid::now_v7(),
            sale_id: sales[index % 2],
            user_id: Uuid::now_v7(),
            quantity: flashsale::domain::Quantity::ONE,
            idempotency_key: format!("k{index}"),
            reserved_at_ms: 0,
        };
        posted.push(purchase.clone());
        outbox.post(purchase);
    }
    // Closing at once: what was posted is pushed before the outbox stops.
    outbox.close(Duration::from_secs(10)).await;

    let mut raw = common::redis_connection().await;
    let stored: Vec<Vec<u8>> = raw
        .hvals(format!("{prefix}:{{purchases}}:data"))
        .await
        .unwrap();
    let jobs: Vec<SettlementJob> = stored
        .iter()
        .map(|job| serde_json::from_slice(job).expect("a settlement job"))
        .collect();
    assert!(
        jobs.len() < posted.len() / 5,
        "{} jobs for {} purchases: the outbox did not gather them",
        jobs.len(),
        posted.len()
    );
    let mut queued: HashMap<Uuid, PurchaseJob> = HashMap::new();
    for job in &jobs {
        assert!(!job.purchases.is_empty() && job.purchases.len() <= 512);
        for purchase in &job.purchases {
            assert_eq!(purchase.sale_id, job.sale_id, "one sale per job");
            assert!(
                queued
                    .insert(purchase.reservation_id, purchase.clone())
                    .is_none(),
                "{} queued twice",
                purchase.reservation_id
            );
        }
    }
    assert_eq!(
        queued.len(),
        posted.len(),
        "every posted purchase is queued"
    );
    for purchase in &posted {
        assert_eq!(queued.get(&purchase.reservation_id), Some(purchase));
    }
    // Posting after the close queues nothing (the reconciler's case).
    outbox.post(posted[0].clone());
    let after: usize = raw
        .hlen(format!("{prefix}:{{purchases}}:data"))
        .await
        .unwrap();
    assert_eq!(after, jobs.len());
}
