//! Shutdown protocol, held by every task that must react to SIGTERM.
//!
//! 1. `drain()` (on SIGTERM): `/heartbeat` answers 503 so the ELB stops
//!    sending work, and workers stop claiming new exports. A resumable
//!    export (single CSV) is handed back at its next part boundary, its
//!    upload left open at that checkpoint for the next attempt.
//! 2. Other in-flight exports (ZIP, several objects) may finish within
//!    `DRAIN_TIMEOUT_SECS`.
//! 3. `hand_back()` when the timeout passes: every running export stops
//!    now and returns to PENDING (the attempt is not counted); a resumable
//!    one keeps its last checkpoint, the others abort their uploads.
//! 4. The process exits 0.
//!
//! `terminating()` (the instance is being terminated: the lifecycle hook)
//! is a drain that does not wait for the exports that cannot resume: they
//! are handed back at once, the resumable ones at their next boundary.

use tokio_util::sync::CancellationToken;

#[derive(Clone, Default, Debug)]
pub struct Shutdown {
    draining: CancellationToken,
    hand_back: CancellationToken,
    /// Exports that would restart anyway are handed back now.
    restartable: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }
    /// Begin draining: no new work.
    pub fn drain(&self) {
        self.draining.cancel();
    }
    /// Give running exports back to the queue.
    pub fn hand_back(&self) {
        self.draining.cancel();
        self.hand_back.cancel();
    }
    /// The instance is going away: drain, and hand back at once what
    /// cannot resume (the rest at its next part boundary).
    pub fn terminating(&self) {
        self.draining.cancel();
        self.restartable.cancel();
    }
    /// Resolves when exports that cannot resume must be handed back.
    pub async fn releasing_restartable(&self) {
        tokio::select! {
            _ = self.restartable.cancelled() => {},
            _ = self.hand_back.cancelled() => {},
        }
    }
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }
    pub async fn draining(&self) {
        self.draining.cancelled().await
    }
    /// Cancelled once draining starts: a resumable export stops at its
    /// next part boundary.
    pub fn draining_token(&self) -> CancellationToken {
        self.draining.clone()
    }
    pub async fn handing_back(&self) {
        self.hand_back.cancelled().await
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
