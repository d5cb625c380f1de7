//! The readiness verdict of one node, reused for a short while: a flood of
//! probes (load balancers, or anyone on the internet) costs one check per
//! period, and the probes that arrive while a check runs wait for it and
//! share its answer.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::ApiError;

pub struct ReadinessCache {
    reuse_for: Duration,
    last: Mutex<Option<(Instant, Result<(), ApiError>)>>,
}

impl ReadinessCache {
    pub fn new(reuse_for: Duration) -> Self {
        Self {
            reuse_for,
            last: Mutex::new(None),
        }
    }

    /// The cached verdict if fresh, else `check`'s (then cached).
    pub async fn verdict<F>(&self, check: F) -> Result<(), ApiError>
    where
        F: Future<Output = Result<(), ApiError>>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, verdict)) = last.as_ref()
            && at.elapsed() < self.reuse_for
        {
            return verdict.clone();
        }
        let verdict = check.await;
        *last = Some((Instant::now(), verdict.clone()));
        verdict
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_flood_of_probes_costs_one_check_per_period() {
        let cache = ReadinessCache::new(Duration::from_secs(60));
        let checks = AtomicUsize::new(0);
        let probes = (0..100).map(|_| {
            cache.verdict(async {
                checks.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        });
        let verdicts = futures::future::join_all(probes).await;
        assert!(verdicts.iter().all(|verdict| verdict.is_ok()));
        assert_eq!(checks.load(Ordering::SeqCst), 1);
    }
}
