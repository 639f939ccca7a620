//! CPU/GPU work off the async runtime, on a bounded queue: `workers` run at once,
//! `queue` more wait, and anything beyond is refused at once (503 with Retry-After)
//! rather than piling up memory and latency.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};

#[derive(Clone)]
pub struct WorkQueue {
    what: &'static str,
    /// Running plus waiting.
    admitted: Arc<Semaphore>,
    running: Arc<Semaphore>,
}

impl WorkQueue {
    pub fn new(what: &'static str, workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        Self {
            what,
            admitted: Arc::new(Semaphore::new(workers + queue)),
            running: Arc::new(Semaphore::new(workers)),
        }
    }

    /// A place in the queue, or a 503 when it is full. Holding it, [`Admitted::run`]
    /// waits for a worker.
    pub fn admit(&self) -> ApiResult<Admitted> {
        let place = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::busy(self.what))?;
        Ok(Admitted {
            place,
            running: self.running.clone(),
        })
    }

    /// Runs `f` on a blocking thread once a worker is free. A panic in `f` is a 500,
    /// not a crash.
    pub async fn run<T, F>(&self, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce() -> ApiResult<T> + Send + 'static,
    {
        self.admit()?.run(f).await
    }
}

/// A place in a [`WorkQueue`].
pub struct Admitted {
    place: tokio::sync::OwnedSemaphorePermit,
    running: Arc<Semaphore>,
}

impl Admitted {
    pub async fn run<T, F>(self, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce() -> ApiResult<T> + Send + 'static,
    {
        let worker = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::internal("the service is shutting down"))?;
        let place = self.place;
        // If the client goes away, the work still ends and frees its places.
        let done = tokio::task::spawn_blocking(move || {
            let _held = (place, worker);
            f()
        })
        .await;
        match done {
            Ok(r) => r,
            Err(e) => Err(ApiError::internal(format!(
                "the work failed: {}",
                panic_message(e)
            ))),
        }
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into()),
        Err(e) => e.to_string(),
    }
}
