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
use std::sync::Arc;
use tokio::sync::{Notify, watch};

/// The client and the current session, shared by everything that calls the server.
#[derive(Clone)]
pub struct ServerLink {
    pub client: Client,
    session: watch::Receiver<Option<String>>,
    expired: Arc<Notify>,
}

/// The main loop's side of a [`ServerLink`]: publishes the session id.
pub struct SessionPublisher {
    session: watch::Sender<Option<String>>,
    expired: Arc<Notify>,
}

impl ServerLink {
    pub fn new(client: Client) -> (SessionPublisher, ServerLink) {
        let (tx, rx) = watch::channel(None);
        let expired = Arc::new(Notify::new());
        (
            SessionPublisher {
                session: tx,
                expired: expired.clone(),
            },
            ServerLink {
                client,
                session: rx,
                expired,
            },
        )
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
    pub fn publish(&self, session_id: Option<String>) {
        self.session.send_replace(session_id);
    }

    /// Resolves when someone saw the session expire.
    pub async fn expired(&self) {
        self.expired.notified().await;
    }
}
