//! Shutdown protocol, held by every task that must react to SIGTERM.
//!
//! 1. `drain()` (on SIGTERM): `/heartbeat` answers 503 so the ELB stops
//!    sending work, and workers stop claiming new exports.
//! 2. In-flight exports may finish within `DRAIN_TIMEOUT_SECS`.
//! 3. `hand_back()` when the timeout passes: running exports abort their
//!    uploads and return to PENDING (the attempt is not counted) so another
//!    instance resumes them.
//! 4. The process exits 0.

use tokio_util::sync::CancellationToken;

#[derive(Clone, Default, Debug)]
pub struct Shutdown {
    draining: CancellationToken,
    hand_back: CancellationToken,
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
