//! Wake-ups across replicas on PostgreSQL: what one replica's [`Hub`] wakes locally
//! (new work, a cancel, a log chunk, a finished task, an ended session) is sent with
//! `NOTIFY` on [`NOTIFY_CHANNEL`], and every replica `LISTEN`s and wakes its own
//! waiters. So a long-poll on replica A takes a task created on replica B at once, and
//! `tasks logs -f` on A follows a task whose agent uploads to B.
//!
//! Notifications are hints, never the truth: a waiter that is woken reads the database.
//! One that is lost (the listening connection broke) costs at most the rest of a poll
//! hold; after a reconnect every local waiter is woken to look again.

use crate::hub::{Hub, Wake};
use crate::store::postgres::NOTIFY_CHANNEL;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Wake-ups waiting to be sent; beyond this (the database is unreachable) new ones are
/// dropped.
const QUEUE: usize = 4096;

/// Notifications sent in one statement at most.
const BATCH: usize = 256;

/// Pause before reconnecting a broken link.
const RETRY: Duration = Duration::from_secs(1);

/// What goes over the channel: the sending replica (to skip its own) and the wake-up.
#[derive(serde::Serialize, serde::Deserialize)]
struct Message {
    r: u64,
    #[serde(flatten)]
    wake: Wake,
}

/// Connects `hub` to the other replicas on `pool`'s database; returns the sender and
/// the listener tasks (aborted at shutdown).
pub async fn start(pool: PgPool, hub: Arc<Hub>) -> anyhow::Result<[JoinHandle<()>; 2]> {
    let mut replica = [0u8; 8];
    getrandom::fill(&mut replica)
        .map_err(|e| anyhow::anyhow!("no randomness for the replica id: {e}"))?;
    let replica = u64::from_le_bytes(replica);
    let mut listener = PgListener::connect_with(&pool)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the LISTEN connection to PostgreSQL: {e}"))?;
    listener
        .listen(NOTIFY_CHANNEL)
        .await
        .map_err(|e| anyhow::anyhow!("cannot LISTEN on {NOTIFY_CHANNEL}: {e}"))?;
    let (tx, rx) = mpsc::channel(QUEUE);
    hub.publish_to(tx);
    let send = tokio::spawn(send_loop(pool, rx, replica));
    let listen = tokio::spawn(listen_loop(listener, hub, replica));
    Ok([send, listen])
}

async fn send_loop(pool: PgPool, mut rx: mpsc::Receiver<Wake>, replica: u64) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // The same wake-up twice in a batch wakes nobody more.
        batch.dedup();
        let payloads: Vec<String> = batch
            .drain(..)
            .filter_map(|wake| serde_json::to_string(&Message { r: replica, wake }).ok())
            .collect();
        if let Err(e) = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
            .bind(NOTIFY_CHANNEL)
            .bind(&payloads)
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "cannot send wake-ups to the other replicas; they find the work at the end of their poll hold");
        }
    }
}

async fn listen_loop(mut listener: PgListener, hub: Arc<Hub>, replica: u64) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => match serde_json::from_str::<Message>(n.payload()) {
                Ok(m) if m.r == replica => {}
                Ok(m) => hub.apply_remote(&m.wake),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a malformed wake-up on {NOTIFY_CHANNEL}")
                }
            },
            // The connection was lost and sqlx reconnected: what was sent meanwhile
            // is unknown.
            Ok(None) => {
                tracing::info!("LISTEN connection re-established; waking every waiter");
                hub.wake_everyone();
            }
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection to PostgreSQL failed; retrying");
                tokio::time::sleep(RETRY).await;
                hub.wake_everyone();
            }
        }
    }
}
