//! The API's store-read pool: a fixed number of threads' worth of
//! [`tokio::task::spawn_blocking`] work, and a bounded queue in front.
//!
//! Two semaphores: `admit` (threads + queue permits) is taken without
//! waiting, so a request beyond the queue is answered at once with 503
//! `busy`; `run` (threads permits) is awaited, so at most `threads` reads
//! run at any time whatever the load. Both permits move into the blocking
//! closure, so a request that is dropped (timeout, closed connection) while
//! its read runs keeps the slot until the read is done: the bound holds.
//! A panic inside a read becomes a generic `500 internal` (the panic text is
//! logged, never answered).

use std::sync::Arc;

use axum::http::StatusCode;
use tokio::sync::{Semaphore, TryAcquireError};

use super::ApiError;

/// The bounded pool of store reads.
#[derive(Debug, Clone)]
pub struct ReadPool {
    run: Arc<Semaphore>,
    admit: Arc<Semaphore>,
    threads: usize,
}

impl ReadPool {
    /// At most `threads` reads at once, and at most `queue` more waiting.
    pub fn new(threads: usize, queue: usize) -> Self {
        let threads = threads.max(1);
        ReadPool {
            run: Arc::new(Semaphore::new(threads)),
            admit: Arc::new(Semaphore::new(threads.saturating_add(queue))),
            threads,
        }
    }

    /// The reads running now.
    pub fn running(&self) -> usize {
        self.threads - self.run.available_permits().min(self.threads)
    }

    /// Refuses every read from now on (503 `shutting_down`); reads running
    /// finish.
    pub fn close(&self) {
        self.admit.close();
        self.run.close();
    }

    /// Runs `f` on one of the pool's threads.
    pub async fn run<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    {
        let admit = self
            .admit
            .clone()
            .try_acquire_owned()
            .map_err(|e| match e {
                TryAcquireError::NoPermits => busy(),
                TryAcquireError::Closed => shutting_down(),
            })?;
        let run = self
            .run
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| shutting_down())?;
        let joined = tokio::task::spawn_blocking(move || {
            let _permits = (admit, run);
            f()
        })
        .await;
        match joined {
            Ok(r) => r,
            Err(e) => {
                if e.is_panic() {
                    let text = panic_text(e.into_panic().as_ref());
                    tracing::error!(panic = %text, "API store read panicked");
                } else {
                    tracing::error!("API store read was cancelled: {e}");
                }
                Err(ApiError::internal_generic())
            }
        }
    }
}

/// 503 `busy`: the store-read queue is full.
fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "the API is busy (too many store reads waiting): retry later",
    )
}

fn shutting_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the gateway is stopping",
    )
}

/// The text of a panic payload (for the log only).
pub(crate) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}
