//! The agent's link to the server.
//!
//! [`connect`] opens (or resumes) a session: same `instance_id` for the whole process,
//! so a reconnect after a network cut or a server restart resumes the session instead of
//! being refused as a second agent. [`poll`] is the main loop: the long-poll that is also
//! the heartbeat, hands offers to the pipeline and cancels to running tasks.
//! [`ServerLink`] is what the per-task uploaders share: the client and the current
//! session id, with a way to say "this session expired".

pub mod connect;
pub mod poll;

use crate::limits::{SESSION_WAIT, UPLOAD_BUFFER_BYTES};
use runops_client::Client;
use runops_proto::agent::ConnectResponse;
use runops_proto::limits::{BASE_LOG_CHUNK_BYTES, MAX_LOG_CHUNK_BYTES};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

/// The client and the current session, shared by everything that calls the server.
#[derive(Clone)]
pub struct ServerLink {
    pub client: Client,
    session: watch::Receiver<Option<String>>,
    expired: Arc<Notify>,
    log_chunk_bytes: Arc<AtomicUsize>,
    upload_budget: UploadBudget,
}

/// Bytes of log chunks that uploads may hold at once ([`UPLOAD_BUFFER_BYTES`]).
#[derive(Clone)]
pub struct UploadBudget {
    /// A permit per [`BUDGET_UNIT`] bytes.
    units: Arc<Semaphore>,
    total: usize,
}

/// The grain of the upload budget (a permit per 64 KiB).
const BUDGET_UNIT: usize = 64 * 1024;

impl UploadBudget {
    pub fn new(bytes: usize) -> UploadBudget {
        let total = bytes.div_ceil(BUDGET_UNIT).max(1);
        UploadBudget {
            units: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Waits until `bytes` fit beside what the other holders hold (a chunk bigger than
    /// the whole budget waits for all of it); released when the permit is dropped.
    pub async fn take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let units = bytes.div_ceil(BUDGET_UNIT).clamp(1, self.total);
        // The semaphore is never closed, so this cannot fail.
        self.units
            .clone()
            .acquire_many_owned(u32::try_from(units).unwrap_or(u32::MAX))
            .await
            .ok()
    }
}

/// The main loop's side of a [`ServerLink`]: publishes the session id.
pub struct SessionPublisher {
    session: watch::Sender<Option<String>>,
    expired: Arc<Notify>,
    log_chunk_bytes: Arc<AtomicUsize>,
}

/// The smallest log chunk the agent sends when a server or proxy asks for smaller ones
/// (a chunk is a request: tiny ones would crawl).
pub const MIN_LOG_CHUNK_BYTES: usize = 4096;

/// The log chunk size to use with a server: what it advertises, within what this agent
/// sends; [`BASE_LOG_CHUNK_BYTES`] when it does not say (it predates the field).
pub fn log_chunk_bytes(session: &ConnectResponse) -> usize {
    let advertised = session
        .max_log_chunk_bytes
        .map_or(BASE_LOG_CHUNK_BYTES, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        });
    advertised.clamp(MIN_LOG_CHUNK_BYTES, MAX_LOG_CHUNK_BYTES)
}

impl ServerLink {
    pub fn new(client: Client) -> (SessionPublisher, ServerLink) {
        let (tx, rx) = watch::channel(None);
        let expired = Arc::new(Notify::new());
        let log_chunk_bytes = Arc::new(AtomicUsize::new(BASE_LOG_CHUNK_BYTES));
        (
            SessionPublisher {
                session: tx,
                expired: expired.clone(),
                log_chunk_bytes: log_chunk_bytes.clone(),
            },
            ServerLink {
                client,
                session: rx,
                expired,
                log_chunk_bytes,
                upload_budget: UploadBudget::new(UPLOAD_BUFFER_BYTES),
            },
        )
    }

    /// The largest log chunk to upload to the current server ([`log_chunk_bytes`]).
    pub fn log_chunk_bytes(&self) -> usize {
        self.log_chunk_bytes.load(Ordering::Relaxed)
    }

    /// Waits until a log chunk of `bytes` fits in [`UPLOAD_BUFFER_BYTES`] beside the
    /// chunks other uploads hold; its share is released when the permit is dropped.
    pub async fn upload_buffer(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        self.upload_budget.take(bytes).await
    }

    /// A chunk of `refused` bytes was answered `413`: halves the chunk size below it
    /// (not below [`MIN_LOG_CHUNK_BYTES`]) until the next connect. Returns the new size.
    pub fn shrink_log_chunk(&self, refused: usize) -> usize {
        let smaller = (refused / 2).max(MIN_LOG_CHUNK_BYTES);
        self.log_chunk_bytes.fetch_min(smaller, Ordering::Relaxed);
        self.log_chunk_bytes()
    }

    /// The current session id, waiting for one if the agent is (re)connecting.
    /// `None` when the agent is stopping and there will be no session any more.
    pub async fn session_id(&self) -> Option<String> {
        let mut rx = self.session.clone();
        rx.wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|id| id.clone())
    }

    /// The server answered `410 session_expired` to a call made with `stale`: asks the
    /// main loop to reconnect and waits (a bounded time) for a new session.
    pub async fn session_expired(&self, stale: &str) {
        self.expired.notify_one();
        let mut rx = self.session.clone();
        let _ = tokio::time::timeout(
            SESSION_WAIT,
            rx.wait_for(|s| s.as_deref().is_some_and(|id| id != stale)),
        )
        .await;
    }
}

impl SessionPublisher {
    /// Publishes a new session (`None`: none until the agent reconnects).
    pub fn publish(&self, session: Option<&ConnectResponse>) {
        if let Some(s) = session {
            // Before the id, so that an uploader woken by the id sees the server's size.
            self.log_chunk_bytes
                .store(log_chunk_bytes(s), Ordering::Relaxed);
        }
        self.session
            .send_replace(session.map(|s| s.session_id.clone()));
    }

    /// Resolves when someone saw the session expire.
    pub async fn expired(&self) {
        self.expired.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: usize = 1024 * 1024;

    #[tokio::test]
    async fn uploads_hold_at_most_the_budget_and_wait_for_their_turn() {
        let budget = UploadBudget::new(16 * MIB);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(budget.take(4 * MIB).await.unwrap());
        }
        // Full: the next chunk, even a small one, waits until one is answered.
        let next = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(100).await }
        });
        tokio::task::yield_now().await;
        assert!(
            !next.is_finished(),
            "a chunk beyond the budget did not wait"
        );
        held.pop();
        let permit = tokio::time::timeout(Duration::from_secs(10), next)
            .await
            .expect("the waiting chunk got its turn")
            .unwrap();
        assert!(permit.is_some());
        drop(held);
        drop(permit);
        // Bigger than the whole budget: waits for all of it rather than forever.
        let whole = tokio::time::timeout(Duration::from_secs(10), budget.take(64 * MIB)).await;
        assert!(
            whole
                .expect("an oversized chunk went through alone")
                .is_some()
        );
    }
}
