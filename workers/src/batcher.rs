//! Group commit: jobs are gathered per sale into batches that flush when
//! they reach the batch size or when their oldest job has waited the batch
//! wait, whichever comes first. Each sale has one lane (a task and a
//! channel); commits of one sale are serialised by the product lock anyway,
//! so one lane per sale loses nothing; the next batch fills while the
//! current one settles, and commits while the previous one tells Redis.
//! Idle lanes close themselves.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

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

/// What settles one sale's batch: the [`Settler`] (PostgreSQL, then
/// Redis), or a recording stand-in in this module's tests.
pub trait SettleBatch: Clone + Send + Sync + 'static {
    /// One outcome per job, in order; each reservation at most once in `jobs`.
    fn settle(
        &self,
        sale_id: Uuid,
        jobs: &[PurchaseJob],
    ) -> impl Future<Output = Result<Vec<JobOutcome>, StoreError>> + Send;
}

impl SettleBatch for Settler {
    fn settle(
        &self,
        sale_id: Uuid,
        jobs: &[PurchaseJob],
    ) -> impl Future<Output = Result<Vec<JobOutcome>, StoreError>> + Send {
        Settler::settle(self, sale_id, jobs)
    }
}

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
pub struct Batcher<S = Settler> {
    /// Each sale's open lane. A lane that closed shows as a closed sender.
    lanes: Arc<Mutex<HashMap<Uuid, mpsc::Sender<Entry>>>>,
    settler: S,
    limits: BatchLimits,
}

impl<S: SettleBatch> Batcher<S> {
    pub fn new(settler: S, limits: BatchLimits) -> Self {
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

async fn run_lane<S: SettleBatch>(
    batcher: Batcher<S>,
    sale_id: Uuid,
    mut receiver: mpsc::Receiver<Entry>,
) {
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
async fn flush<S: SettleBatch>(settler: &S, sale_id: Uuid, batch: Vec<Entry>) {
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

#[cfg(test)]
mod tests {
    use flashsale::domain::{FailureReason, Quantity};

    use super::*;

    /// Records each batch it is given; confirms every job, or fails the
    /// whole batch when told to.
    #[derive(Clone, Default)]
    struct Recorder {
        batches: Arc<Mutex<Vec<Vec<Uuid>>>>,
        fail: bool,
    }

    impl SettleBatch for Recorder {
        async fn settle(
            &self,
            _sale_id: Uuid,
            jobs: &[PurchaseJob],
        ) -> Result<Vec<JobOutcome>, StoreError> {
            self.batches
                .lock()
                .push(jobs.iter().map(|job| job.reservation_id).collect());
            if self.fail {
                return Err(StoreError::unavailable(
                    flashsale::store::Dependency::Postgres,
                    "down",
                ));
            }
            Ok(jobs
                .iter()
                .map(|job| match job.quantity.units() {
                    1 => JobOutcome::Confirmed,
                    _ => JobOutcome::Failed(FailureReason::LimitReached),
                })
                .collect())
        }
    }

    fn job(sale_id: Uuid) -> PurchaseJob {
        PurchaseJob {
            reservation_id: Uuid::now_v7(),
            sale_id,
            user_id: Uuid::now_v7(),
            quantity: Quantity::ONE,
            idempotency_key: "k".into(),
            reserved_at_ms: 0,
        }
    }

    fn batcher(recorder: &Recorder, max_size: usize) -> Batcher<Recorder> {
        Batcher::new(
            recorder.clone(),
            BatchLimits {
                max_size,
                max_wait: Duration::from_millis(5),
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_reservation_delivered_twice_in_one_batch_settles_once_and_both_hear() {
        let recorder = Recorder::default();
        let batcher = batcher(&recorder, 10);
        let sale = Uuid::now_v7();
        let first = job(sale);
        let again = first.clone();
        let mut other = job(sale);
        other.quantity = Quantity::new(2).unwrap();
        let (a, b, c) = tokio::join!(
            batcher.submit(first.clone()),
            batcher.submit(again),
            batcher.submit(other.clone())
        );
        assert!(matches!(a, Ok(JobOutcome::Confirmed)));
        assert!(matches!(b, Ok(JobOutcome::Confirmed)));
        assert!(matches!(
            c,
            Ok(JobOutcome::Failed(FailureReason::LimitReached))
        ));
        let batches = recorder.batches.lock().clone();
        assert_eq!(
            batches,
            vec![vec![first.reservation_id, other.reservation_id]]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn batches_hold_at_most_the_batch_size_and_one_sale_each() {
        let recorder = Recorder::default();
        let batcher = batcher(&recorder, 2);
        let (sale, other_sale) = (Uuid::now_v7(), Uuid::now_v7());
        let jobs = [job(sale), job(sale), job(sale), job(other_sale)];
        let answers =
            futures::future::join_all(jobs.iter().cloned().map(|job| batcher.submit(job))).await;
        assert!(
            answers
                .iter()
                .all(|answer| matches!(answer, Ok(JobOutcome::Confirmed)))
        );
        let mut sizes: Vec<usize> = recorder.batches.lock().iter().map(Vec::len).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, vec![1, 1, 2], "batches of at most 2, one sale each");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_batch_answers_every_job_with_the_failure() {
        let recorder = Recorder {
            fail: true,
            ..Recorder::default()
        };
        let batcher = batcher(&recorder, 10);
        let sale = Uuid::now_v7();
        let (a, b) = tokio::join!(batcher.submit(job(sale)), batcher.submit(job(sale)));
        assert!(a.is_err() && b.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_sent_after_its_lane_closed_for_idleness_opens_a_new_lane() {
        let recorder = Recorder::default();
        let batcher = batcher(&recorder, 10);
        let sale = Uuid::now_v7();
        assert!(batcher.submit(job(sale)).await.is_ok());
        // The lane idles out and retires itself from the map.
        tokio::time::sleep(LANE_IDLE + Duration::from_secs(1)).await;
        assert!(
            batcher.lanes.lock().get(&sale).is_none(),
            "the idle lane retired"
        );
        assert!(batcher.submit(job(sale)).await.is_ok());
        assert_eq!(recorder.batches.lock().len(), 2);
        assert!(!batcher.lanes.lock()[&sale].is_closed(), "a new, open lane");
    }
}
