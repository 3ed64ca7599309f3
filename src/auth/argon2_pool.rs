//! The argon2 threads: a fixed pool at a lower CPU priority, so the proxy's threads win the
//! cores while both want them.

use std::sync::Arc;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads for argon2, started at a lower CPU priority (a higher nice value)
/// so that under contention the proxy's threads get the cores first. Jobs wait in a channel;
/// the threads end when the pool is dropped.
pub(super) struct Argon2Pool {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Argon2Pool {
    pub(super) fn start(threads: usize, nice: i32) -> Self {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("tollgate-argon2-{i}"))
                .spawn(move || {
                    lower_priority(nice);
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(p) => p.into_inner().recv(),
                        };
                        match job {
                            // A panicking job drops its answer (the caller gets `Internal`);
                            // the thread stays, so the pool never shrinks.
                            Ok(job) => {
                                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                                    .is_err()
                                {
                                    tracing::error!("an argon2 verification panicked");
                                }
                            }
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start an argon2 thread");
            }
        }
        Argon2Pool { jobs }
    }

    /// Runs `f` on a pool thread; `None` if it could not run (no thread, or it panicked).
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .ok()?;
        rx.await.ok()
    }
}

/// Lowers the calling thread's CPU priority to `nice` (Linux: `setpriority` on a thread id
/// applies to that thread only). Best effort: a failure leaves the default priority.
fn lower_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    if !crate::sys::set_thread_nice(nice) {
        tracing::debug!(nice, "could not lower the argon2 thread priority");
    }
}
