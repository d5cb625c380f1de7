//! Group commit: jobs are gathered per sale into batches that flush when
//! they reach the batch size or when their oldest job has waited the batch
//! wait, whichever comes first. Each sale has one lane (a task and a
//! channel); commits of one sale are serialised by the product lock anyway,
//! so one lane per sale loses nothing; the next batch fills while the
//! current one settles, and commits while the previous one tells Redis.
//! Idle lanes close themselves.

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::Mutex;

use flashsale::{jobs::PurchaseJob, store::StoreError};
use tokio::{
    sync::{Semaphore, mpsc, oneshot},
    time::Instant,
};
use uuid::Uuid;

use crate::settle::{JobOutcome, Settler};

/// A lane with no job for this long closes.
const LANE_IDLE: Duration = Duration::from_secs(30);

/// Batches of one lane settling at once. Their PostgreSQL transactions
/// still run one after another (the product lock), but while one batch
/// tells Redis, the next one commits.
const FLUSHES_IN_FLIGHT: usize = 2;

/// Why a job's batch did not settle; the job goes back to the queue.
pub type SettleFailure = Arc<StoreError>;

type Reply = oneshot::Sender<Result<JobOutcome, SettleFailure>>;

struct Entry {
    job: PurchaseJob,
    reply: Reply,
}

#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_size: usize,
    pub max_wait: Duration,
}

#[derive(Clone)]
pub struct Batcher {
    /// Each sale's open lane. A lane that closed shows as a closed sender.
    lanes: Arc<Mutex<HashMap<Uuid, mpsc::Sender<Entry>>>>,
    settler: Settler,
    limits: BatchLimits,
}

impl Batcher {
    pub fn new(settler: Settler, limits: BatchLimits) -> Self {
        Self {
            lanes: Arc::default(),
            settler,
            limits,
        }
    }

    /// Adds the job to its sale's next batch and waits for that batch.
    pub async fn submit(&self, job: PurchaseJob) -> Result<JobOutcome, SettleFailure> {
        let (reply, outcome) = oneshot::channel();
        let mut entry = Entry { job, reply };
        loop {
            let lane = self.lane(entry.job.sale_id);
            match lane.send(entry).await {
                Ok(()) => break,
                // The lane closed for idleness between lookup and send.
                Err(mpsc::error::SendError(returned)) => entry = returned,
            }
        }
        outcome.await.map_err(|_| {
            Arc::new(StoreError::unexpected(
                flashsale::store::Dependency::Postgres,
                "the batch was dropped before it settled",
            ))
        })?
    }

    fn lane(&self, sale_id: Uuid) -> mpsc::Sender<Entry> {
        let mut lanes = self.lanes.lock();
        if let Some(lane) = lanes.get(&sale_id).filter(|lane| !lane.is_closed()) {
            return lane.clone();
        }
        let (sender, receiver) = mpsc::channel(self.limits.max_size * 4);
        lanes.insert(sale_id, sender.clone());
        tokio::spawn(run_lane(self.clone(), sale_id, receiver));
        sender
    }

    /// Forgets closed lanes; a lane that replaced one stays.
    fn retire_closed(&self) {
        let mut lanes = self.lanes.lock();
        lanes.retain(|_, lane| !lane.is_closed());
    }
}

async fn run_lane(batcher: Batcher, sale_id: Uuid, mut receiver: mpsc::Receiver<Entry>) {
    let limits = batcher.limits;
    let in_flight = Arc::new(Semaphore::new(FLUSHES_IN_FLIGHT));
    let mut batch = Vec::with_capacity(limits.max_size);
    loop {
        match tokio::time::timeout(LANE_IDLE, receiver.recv()).await {
            Ok(Some(entry)) => batch.push(entry),
            Ok(None) | Err(_) => break,
        }
        let deadline = Instant::now() + limits.max_wait;
        while batch.len() < limits.max_size {
            let room = limits.max_size - batch.len();
            tokio::select! {
                received = receiver.recv_many(&mut batch, room) => if received == 0 { break },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the lane never closes its semaphore");
        let (settler, full) = (batcher.settler.clone(), std::mem::take(&mut batch));
        tokio::spawn(async move {
            flush(&settler, sale_id, full).await;
            drop(permit);
        });
    }
    // Close for good: new jobs open a new lane; what arrived meanwhile is
    // settled here.
    receiver.close();
    batcher.retire_closed();
    while let Ok(entry) = receiver.try_recv() {
        batch.push(entry);
    }
    if !batch.is_empty() {
        flush(&batcher.settler, sale_id, batch).await;
    }
}

/// Settles one batch and answers every job in it. A reservation delivered
/// twice into one batch is settled once and both deliveries get its outcome.
async fn flush(settler: &Settler, sale_id: Uuid, batch: Vec<Entry>) {
    let mut unique: Vec<PurchaseJob> = Vec::with_capacity(batch.len());
    let mut replies: HashMap<Uuid, Vec<Reply>> = HashMap::with_capacity(batch.len());
    for Entry { job, reply } in batch {
        let waiting = replies.entry(job.reservation_id).or_default();
        if waiting.is_empty() {
            unique.push(job);
        }
        waiting.push(reply);
    }
    let result = settler.settle(sale_id, &unique).await.map_err(Arc::new);
    for (index, job) in unique.iter().enumerate() {
        let answer = match &result {
            Ok(outcomes) => Ok(outcomes[index].clone()),
            Err(error) => Err(error.clone()),
        };
        for reply in replies.remove(&job.reservation_id).unwrap_or_default() {
            // The job's handler may be gone (its worker stopped); the
            // outcome is durable either way.
            let _ = reply.send(answer.clone());
        }
    }
}
