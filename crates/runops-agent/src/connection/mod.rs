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

use crate::limits::SESSION_WAIT;
use runops_client::Client;
use runops_proto::agent::ConnectResponse;
use runops_proto::limits::{BASE_LOG_CHUNK_BYTES, MAX_LOG_CHUNK_BYTES};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Notify, watch};

/// The client and the current session, shared by everything that calls the server.
#[derive(Clone)]
pub struct ServerLink {
    pub client: Client,
    session: watch::Receiver<Option<String>>,
    expired: Arc<Notify>,
    log_chunk_bytes: Arc<AtomicUsize>,
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
            },
        )
    }

    /// The largest log chunk to upload to the current server ([`log_chunk_bytes`]).
    pub fn log_chunk_bytes(&self) -> usize {
        self.log_chunk_bytes.load(Ordering::Relaxed)
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
