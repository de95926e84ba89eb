//! How the agent is told to stop.
//!
//! A [`ShutdownSignal`] counts stop requests: the first one drains (no new work, running
//! tasks finish and are reported, then disconnect), the second cancels running tasks
//! (killed, reported `failure`/`cancelled`), the third stops at once (unreported results
//! stay in the spool and are reported at the next start).

use tokio::sync::watch;

/// Number of stop requests received so far; see the module doc for what each means.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    rx: watch::Receiver<u8>,
}

/// Stop requests from which the agent drains.
pub const DRAIN: u8 = 1;
/// Stop requests from which running tasks are cancelled.
pub const CANCEL_TASKS: u8 = 2;
/// Stop requests from which the agent exits without waiting for reports.
pub const ABANDON: u8 = 3;

impl ShutdownSignal {
    /// Driven by a counter the caller increments (`runops up`, tests).
    pub fn from_watch(rx: watch::Receiver<u8>) -> ShutdownSignal {
        ShutdownSignal { rx }
    }

    /// A new counter at 0 and the signal that follows it.
    pub fn channel() -> (watch::Sender<u8>, ShutdownSignal) {
        let (tx, rx) = watch::channel(0);
        (tx, ShutdownSignal { rx })
    }

    /// Counts SIGTERM and SIGINT (Ctrl-C). Must be called inside a tokio runtime.
    pub fn from_os_signals() -> ShutdownSignal {
        let (tx, signal) = ShutdownSignal::channel();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (mut term, mut int) = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(t), Ok(i)) => (t, i),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!("cannot listen for SIGTERM/SIGINT: {e}");
                    return;
                }
            };
            loop {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                let mut level = 0;
                tx.send_modify(|n| {
                    *n = n.saturating_add(1);
                    level = *n;
                });
                match level {
                    DRAIN => tracing::info!(
                        "{name}: finishing running tasks, then stopping (send it again to cancel them)"
                    ),
                    CANCEL_TASKS => tracing::info!(
                        "{name} again: cancelling running tasks (a third one stops without reporting)"
                    ),
                    _ => tracing::info!("{name} again: stopping now"),
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        signal
    }

    /// How many stop requests were received (and marks them seen for
    /// [`ShutdownSignal::changed`]).
    pub fn level(&mut self) -> u8 {
        *self.rx.borrow_and_update()
    }

    /// Resolves when a stop request arrives that [`ShutdownSignal::level`] has not seen.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once at least `level` stop requests were received. If the sending side
    /// is gone, it never resolves (nobody can ask us to stop any more).
    pub async fn reached(&mut self, level: u8) {
        if self.rx.wait_for(|n| *n >= level).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
