//! Process lifecycle state shared by the proxy, the admin listener and the application
//! wiring: is the proxy listening, is it still alive, is a shutdown under way, and how many
//! proxy requests are in flight. Waiting is done on a [`Notify`], never by polling.
//!
//! This module imports nothing else of Tollgate, so the proxy and the admin listener can
//! both depend on it without depending on each other.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// How a shutdown was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Stop accepting, let in-flight requests finish (up to the grace period), then exit.
    Graceful,
    /// Stop now.
    Fast,
}

/// Process health beyond the token set.
#[derive(Debug, Default)]
pub struct Health {
    proxy_listening: AtomicBool,
    proxy_stopped: AtomicBool,
    draining: AtomicBool,
    in_flight: AtomicUsize,
    /// Woken when the last in-flight request ends.
    idle: Notify,
}

impl Health {
    /// Liveness (`/healthz`): fails once the proxy has stopped serving.
    pub fn live(&self) -> Result<(), &'static str> {
        if self.proxy_stopped.load(Ordering::Acquire) {
            Err("the proxy has stopped\n")
        } else {
            Ok(())
        }
    }

    /// Readiness (`/readyz`): the token set is loaded, the proxy listens and is alive, and no
    /// shutdown has started.
    pub fn ready(&self, tokens_ready: bool) -> Result<(), &'static str> {
        self.live()?;
        if self.draining.load(Ordering::Acquire) {
            Err("shutting down\n")
        } else if !tokens_ready {
            Err("no token set loaded yet\n")
        } else if !self.proxy_listening.load(Ordering::Acquire) {
            Err("the proxy listener is not up yet\n")
        } else {
            Ok(())
        }
    }

    /// The proxy listener accepts connections.
    pub fn set_listening(&self) {
        self.proxy_listening.store(true, Ordering::Release);
    }

    /// The proxy stopped serving (on purpose or not): liveness fails from now on.
    pub fn set_proxy_stopped(&self) {
        self.proxy_stopped.store(true, Ordering::Release);
    }

    /// A shutdown has started: not ready any more.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether a shutdown has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Proxy requests being handled now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Resolves once no proxy request is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so a wake-up between the two is not lost.
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Counts a proxy request as in flight until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Health>);

impl InFlight {
    /// Starts counting.
    pub fn new(health: &Arc<Health>) -> Self {
        health.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(health.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The process signals as a shutdown request: SIGTERM and SIGQUIT ask for a graceful
/// shutdown, SIGINT for a fast one. The future resolves on the first of them.
///
/// The handlers are installed when this is called, not when the future is first polled: a
/// signal that arrives in between would otherwise meet the default action and end the process
/// without a drain (the proxy serves as soon as its first worker thread runs). Call it inside
/// the runtime, before the proxy starts.
pub fn signals() -> impl std::future::Future<Output = Shutdown> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let installed = (
        signal(SignalKind::terminate()),
        signal(SignalKind::quit()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut quit), Ok(mut int)) = installed else {
            tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => Shutdown::Graceful,
            _ = quit.recv() => Shutdown::Graceful,
            _ = int.recv() => Shutdown::Fast,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn idle_wakes_when_the_last_request_ends() {
        let health = Arc::new(Health::default());
        health.idle().await; // nothing in flight: at once
        let a = InFlight::new(&health);
        let b = InFlight::new(&health);
        let waiter = tokio::spawn({
            let health = health.clone();
            async move { health.idle().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one request is still in flight");
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("idle resolves")
            .unwrap();
    }

    #[test]
    fn a_stopped_proxy_is_neither_live_nor_ready() {
        let h = Health::default();
        h.set_listening();
        assert!(h.live().is_ok());
        assert!(h.ready(true).is_ok());
        h.set_proxy_stopped();
        assert!(h.live().is_err());
        assert!(h.ready(true).is_err());
    }
}
