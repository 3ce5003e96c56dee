//! The bounded pool that CPU-heavy work of requests and rules runs on: template renders and
//! compiles, workflow dry runs and replays. Never on the async executor (a render that loops
//! would stall every request on that worker thread), and never more at once than the pool has
//! workers, so a burst of previews cannot take every core from the rest of the server.
//!
//! A job holds its worker until it has finished, also when the request that asked for it is
//! gone: a thread cannot be stopped from outside, which is why every job is bounded on its own
//! (the template budget, the workflow engine's limits).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config;
use crate::error::{Error, Result};

/// The workers and how long a request waits for one.
pub struct Compute {
    workers: Arc<Semaphore>,
    count: usize,
    queue: Duration,
    replay: Duration,
}

impl Compute {
    /// A pool with `compute.workers` workers (default: the machine's cores).
    pub fn new(cfg: &config::Compute) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let count = cfg.workers.unwrap_or(cores).max(1);
        Compute {
            workers: Arc::new(Semaphore::new(count)),
            count,
            queue: Duration::from_millis(cfg.queue_ms),
            replay: Duration::from_millis(cfg.replay_ms),
        }
    }

    /// How many jobs run at once at most.
    pub fn workers(&self) -> usize {
        self.count
    }

    /// The wall-clock budget of one workflow replay.
    pub fn replay_budget(&self) -> Duration {
        self.replay
    }

    /// Runs `job` for a request once a worker is free, waiting at most `compute.queue_ms`.
    ///
    /// # Errors
    /// [`Error::Busy`] (503) when no worker came free in time; [`Error::Internal`] if the job
    /// panicked.
    pub async fn run<T, F>(&self, job: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = tokio::time::timeout(self.queue, self.workers.clone().acquire_owned())
            .await
            .map_err(|_| {
                Error::Busy(format!(
                    "all {} workers for previews, dry runs and replays are busy; try again in a moment",
                    self.count
                ))
            })?
            .map_err(internal)?;
        spawn(permit, job).await
    }

    /// Runs `job` for background work (the dispatcher's renders) once a worker is free, however
    /// long that takes: the work must happen, and the event waits in the log meanwhile.
    ///
    /// # Errors
    /// [`Error::Internal`] if the job panicked.
    pub async fn run_queued<T, F>(&self, job: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = self.workers.clone().acquire_owned().await.map_err(internal)?;
        spawn(permit, job).await
    }
}

/// Runs `job` on a blocking thread; the permit goes with it and is released when the job ends.
async fn spawn<T, F>(permit: OwnedSemaphorePermit, job: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        job()
    })
    .await
    .map_err(internal)
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("a compute job failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request that finds every worker busy gets a 503 after the queue time, and a worker that
    /// comes free serves the next one; background jobs wait for their turn.
    #[tokio::test]
    async fn a_full_pool_answers_busy_and_frees_its_workers() {
        let pool = Arc::new(Compute::new(&config::Compute { workers: Some(1), queue_ms: 50, replay_ms: 1000 }));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let busy = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(move || {
                    let _ = started.send(());
                    let _ = hold.recv();
                    1
                })
                .await
            })
        };
        running.await.ok();
        match pool.run(|| 2).await {
            Err(Error::Busy(message)) => assert!(message.contains("all 1 workers"), "{message}"),
            other => panic!("{:?}", other.map_err(|e| e.to_string())),
        }
        let queued = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run_queued(|| 3).await })
        };
        release.send(()).ok();
        assert_eq!(busy.await.ok().and_then(|r| r.ok()), Some(1));
        assert_eq!(queued.await.ok().and_then(|r| r.ok()), Some(3));
        assert_eq!(pool.run(|| 4).await.ok(), Some(4));
    }
}
