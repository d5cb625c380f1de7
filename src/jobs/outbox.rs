//! The node's settlement outbox: how accepted purchases reach the queue
//! without a queue push on the request path.
//!
//! `reserve.lua` has already made the 202 durable (the reservation and its
//! pending-set entry are in Redis before the answer), so the handler only
//! posts the purchase here and answers. One task per node gathers what was
//! posted for up to [`GATHER`] and pushes one apalis job per sale carrying
//! all of it: one push instead of one per purchase on the API side, and one
//! fetch and one ack per job instead of per purchase on the worker side.
//!
//! A purchase the outbox cannot push (queue down, outbox full, node killed
//! before the push) stays in the pending set; the reconciler pushes pending
//! reservations that outlive `FLASHSALE_RECONCILE_PENDING_AFTER_SECS`
//! (DESIGN.md §5 step 3), exactly as for a failed push before the outbox.

use std::{collections::HashMap, time::Duration};

use parking_lot::Mutex;
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{MAX_PURCHASES_PER_JOB as MAX_PER_JOB, PurchaseJob, PurchaseQueue, SettlementJob};

/// How long the outbox gathers after the first purchase of a job: long
/// enough to carry tens of purchases per job during a stampede, short
/// against the worker's own batch wait.
const GATHER: Duration = Duration::from_millis(2);

/// Purchases waiting for a push at most; beyond it they are left to the
/// reconciler rather than holding the request.
const CAPACITY: usize = 65_536;

/// The sending side, held by the purchase use case.
pub struct Outbox {
    sender: mpsc::Sender<PurchaseJob>,
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Outbox {
    /// Starts the node's outbox task (needs a Tokio runtime).
    pub fn start(queue: PurchaseQueue) -> Self {
        let (sender, receiver) = mpsc::channel(CAPACITY);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(queue, receiver, stop.clone()));
        Self {
            sender,
            stop,
            task: Mutex::new(Some(task)),
        }
    }

    /// Hands an accepted purchase to the next push. Never waits: a full or
    /// closed outbox leaves the reservation pending for the reconciler.
    pub fn post(&self, purchase: PurchaseJob) {
        if let Err(error) = self.sender.try_send(purchase) {
            let reservation_id = match &error {
                mpsc::error::TrySendError::Full(purchase)
                | mpsc::error::TrySendError::Closed(purchase) => purchase.reservation_id,
            };
            metrics::counter!("purchase_enqueue_failures_total").increment(1);
            tracing::warn!(%reservation_id, %error, "purchase not queued (outbox full or closed); left pending for the reconciler");
        }
    }

    /// Pushes what was posted and stops, waiting at most `within`: a node
    /// that stops pushes its last purchases instead of leaving them to the
    /// reconciler.
    pub async fn close(&self, within: Duration) {
        self.stop.cancel();
        let task = self.task.lock().take();
        if let Some(task) = task
            && tokio::time::timeout(within, task).await.is_err()
        {
            tracing::warn!(
                "the outbox did not push everything in time; the reconciler pushes the rest"
            );
        }
    }
}

async fn run(
    queue: PurchaseQueue,
    mut receiver: mpsc::Receiver<PurchaseJob>,
    stop: CancellationToken,
) {
    let mut gathered = Vec::with_capacity(MAX_PER_JOB);
    loop {
        let first = tokio::select! {
            first = receiver.recv() => first,
            () = stop.cancelled() => None,
        };
        let Some(first) = first else { break };
        gathered.push(first);
        let deadline = Instant::now() + GATHER;
        while gathered.len() < MAX_PER_JOB {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(purchase)) => gathered.push(purchase),
                Ok(None) | Err(_) => break,
            }
        }
        push(&queue, std::mem::take(&mut gathered)).await;
    }
    // Stopping: nothing more is accepted; push what is already here.
    receiver.close();
    while let Some(purchase) = receiver.recv().await {
        gathered.push(purchase);
        if gathered.len() == MAX_PER_JOB {
            push(&queue, std::mem::take(&mut gathered)).await;
        }
    }
    if !gathered.is_empty() {
        push(&queue, gathered).await;
    }
}

/// One job per sale. A failed push is not a failed purchase: the
/// reservations stay pending for the reconciler.
async fn push(queue: &PurchaseQueue, purchases: Vec<PurchaseJob>) {
    let mut by_sale: HashMap<Uuid, Vec<PurchaseJob>> = HashMap::new();
    for purchase in purchases {
        by_sale.entry(purchase.sale_id).or_default().push(purchase);
    }
    for (sale_id, purchases) in by_sale {
        let count = purchases.len();
        metrics::histogram!("settlement_job_purchases").record(count as f64);
        if let Err(error) = queue.enqueue(SettlementJob { sale_id, purchases }).await {
            metrics::counter!("purchase_enqueue_failures_total").increment(count as u64);
            tracing::warn!(%sale_id, count, %error, "purchases not queued; left pending for the reconciler");
        }
    }
}
