//! In-memory wake-ups between requests of this process.
//!
//! The store holds the truth; the hub only tells waiting requests that the truth may
//! have changed, so that they look again at once instead of sleeping and retrying:
//! - a created or requeued task wakes the poll waiting for its (org, tags);
//! - a kill or an ended session wakes that session's poll;
//! - an appended log chunk or a finished task wakes the followers of its log;
//! - a session that ends wakes a standby agent waiting for its tags.
//!
//! It also tracks which sessions have a poll open right now (such a session is not
//! lost even if its lease elapsed while the server held the poll), and which cancels
//! were already delivered (so that a cancel answers a poll at once only once).
//!
//! With several replicas on one PostgreSQL database, every wake-up is also published
//! ([`Hub::publish_to`]) and the other replicas apply it to their own waiters
//! ([`Hub::apply_remote`], fed by `LISTEN`; see `pg_listen.rs`).
//!
//! Waiters use the `Notified::enable` pattern: register first, then read the store,
//! then wait; a notification between the read and the wait is never lost.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::Notify;

/// (org id, tag key) — the unit of dispatch.
type TagsKey = (i64, String);

#[derive(Default)]
struct TagsChannel {
    /// New work for the agent holding these tags.
    work: Arc<Notify>,
    /// The tags became free (standby agents wait on this).
    freed: Arc<Notify>,
}

#[derive(Default)]
struct SessionLive {
    wake: Arc<Notify>,
    open_polls: u32,
    /// Last time a poll of this session started or ended, in ms (newer than the DB's
    /// `last_seen` when the DB write is still pending).
    last_seen_ms: i64,
    delivered_cancels: HashSet<i64>,
}

#[derive(Default)]
struct HubState {
    tags: HashMap<TagsKey, TagsChannel>,
    sessions: HashMap<String, SessionLive>,
    logs: HashMap<i64, Arc<Notify>>,
}

/// A wake-up that other replicas must see too.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "w", rename_all = "snake_case")]
pub enum Wake {
    Work { org: i64, tags: Option<String> },
    TagsFreed { org: i64, tags: Option<String> },
    Session { id: String },
    ForgetSession { id: String },
    Log { task: i64 },
}

/// Shared by every request of one server process.
#[derive(Default)]
pub struct Hub {
    state: Mutex<HubState>,
    /// Fires on shutdown so long polls and log followers answer at once.
    pub shutdown: Notify,
    stopping: AtomicBool,
    /// Where wake-ups go to reach the other replicas (set on PostgreSQL only).
    remote: OnceLock<tokio::sync::mpsc::Sender<Wake>>,
}

fn key(org_id: i64, tags: Option<&str>) -> TagsKey {
    (org_id, crate::store::tag_key(tags).to_string())
}

impl Hub {
    /// Tells every waiting request to answer now: the server is stopping.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.shutdown.notify_waiters();
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// From now on every wake-up is also sent to `tx` (for the other replicas).
    pub fn publish_to(&self, tx: tokio::sync::mpsc::Sender<Wake>) {
        let _ = self.remote.set(tx);
    }

    fn publish(&self, wake: Wake) {
        if let Some(tx) = self.remote.get() {
            // A hint: when the queue is full (the database is down), waiters still
            // look again at the end of their hold.
            let _ = tx.try_send(wake);
        }
    }

    /// A wake-up another replica published: wakes this process's waiters only.
    pub fn apply_remote(&self, wake: &Wake) {
        match wake {
            Wake::Work { org, tags } => self.local_wake_work(*org, tags.as_deref()),
            Wake::TagsFreed { org, tags } => self.local_wake_tags_freed(*org, tags.as_deref()),
            Wake::Session { id } => self.local_wake_session(id),
            Wake::ForgetSession { id } => self.local_forget_session(id),
            Wake::Log { task } => self.local_wake_log(*task),
        }
    }

    /// Wakes every waiter (after the link to the other replicas was lost for a while:
    /// what they published meanwhile is unknown, so everyone looks again).
    pub fn wake_everyone(&self) {
        let st = self.lock();
        for ch in st.tags.values() {
            ch.work.notify_waiters();
            ch.freed.notify_waiters();
        }
        for s in st.sessions.values() {
            s.wake.notify_waiters();
        }
        for n in st.logs.values() {
            n.notify_waiters();
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panic while holding this lock cannot leave the maps inconsistent in a way
        // that matters (they are hints), so a poisoned lock is simply reused.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn work_notify(&self, org_id: i64, tags: Option<&str>) -> Arc<Notify> {
        self.lock()
            .tags
            .entry(key(org_id, tags))
            .or_default()
            .work
            .clone()
    }

    pub fn freed_notify(&self, org_id: i64, tags: Option<&str>) -> Arc<Notify> {
        self.lock()
            .tags
            .entry(key(org_id, tags))
            .or_default()
            .freed
            .clone()
    }

    /// New or requeued work for (org, tags).
    pub fn wake_work(&self, org_id: i64, tags: Option<&str>) {
        self.local_wake_work(org_id, tags);
        self.publish(Wake::Work {
            org: org_id,
            tags: tags.map(str::to_string),
        });
    }

    fn local_wake_work(&self, org_id: i64, tags: Option<&str>) {
        if let Some(ch) = self.lock().tags.get(&key(org_id, tags)) {
            ch.work.notify_waiters();
        }
    }

    pub fn wake_tags_freed(&self, org_id: i64, tags: Option<&str>) {
        self.local_wake_tags_freed(org_id, tags);
        self.publish(Wake::TagsFreed {
            org: org_id,
            tags: tags.map(str::to_string),
        });
    }

    fn local_wake_tags_freed(&self, org_id: i64, tags: Option<&str>) {
        if let Some(ch) = self.lock().tags.get(&key(org_id, tags)) {
            ch.freed.notify_waiters();
        }
    }

    pub fn session_notify(&self, session_id: &str) -> Arc<Notify> {
        self.lock()
            .sessions
            .entry(session_id.to_string())
            .or_default()
            .wake
            .clone()
    }

    pub fn wake_session(&self, session_id: &str) {
        self.local_wake_session(session_id);
        self.publish(Wake::Session {
            id: session_id.to_string(),
        });
    }

    fn local_wake_session(&self, session_id: &str) {
        if let Some(s) = self.lock().sessions.get(session_id) {
            s.wake.notify_waiters();
        }
    }

    /// Forgets an ended session (after waking its poll so that it answers).
    pub fn forget_session(&self, session_id: &str) {
        self.local_forget_session(session_id);
        self.publish(Wake::ForgetSession {
            id: session_id.to_string(),
        });
    }

    fn local_forget_session(&self, session_id: &str) {
        if let Some(s) = self.lock().sessions.remove(session_id) {
            s.wake.notify_waiters();
        }
    }

    /// Marks a poll open; the returned guard closes it when dropped, even when the
    /// client goes away mid-poll.
    pub fn open_poll(self: &Arc<Self>, session_id: &str, now_ms: i64) -> PollGuard {
        let mut st = self.lock();
        let s = st.sessions.entry(session_id.to_string()).or_default();
        s.open_polls += 1;
        s.last_seen_ms = s.last_seen_ms.max(now_ms);
        PollGuard {
            hub: self.clone(),
            session_id: session_id.to_string(),
        }
    }

    /// True when a poll is open, or when one ended after `cutoff_ms`.
    pub fn session_seen_since(&self, session_id: &str, cutoff_ms: i64) -> bool {
        self.lock()
            .sessions
            .get(session_id)
            .is_some_and(|s| s.open_polls > 0 || s.last_seen_ms >= cutoff_ms)
    }

    /// Of `cancels`, those not yet delivered to the session; marks them all delivered.
    pub fn take_new_cancels(&self, session_id: &str, cancels: &[i64]) -> usize {
        let mut st = self.lock();
        let s = st.sessions.entry(session_id.to_string()).or_default();
        cancels
            .iter()
            .filter(|id| s.delivered_cancels.insert(**id))
            .count()
    }

    pub fn log_notify(&self, task_id: i64) -> Arc<Notify> {
        self.lock().logs.entry(task_id).or_default().clone()
    }

    pub fn wake_log(&self, task_id: i64) {
        self.local_wake_log(task_id);
        self.publish(Wake::Log { task: task_id });
    }

    fn local_wake_log(&self, task_id: i64) {
        if let Some(n) = self.lock().logs.get(&task_id) {
            n.notify_waiters();
        }
    }

    /// Drops the follower entry of a task when nobody else holds it.
    pub fn release_log(&self, task_id: i64, mine: &Arc<Notify>) {
        let mut st = self.lock();
        // Two references: the map's and `mine`.
        if st
            .logs
            .get(&task_id)
            .is_some_and(|n| Arc::ptr_eq(n, mine) && Arc::strong_count(n) <= 2)
        {
            st.logs.remove(&task_id);
        }
    }
}

pub struct PollGuard {
    hub: Arc<Hub>,
    session_id: String,
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        let now = crate::now_ms();
        let mut st = self.hub.lock();
        if let Some(s) = st.sessions.get_mut(&self.session_id) {
            s.open_polls = s.open_polls.saturating_sub(1);
            s.last_seen_ms = s.last_seen_ms.max(now);
        }
    }
}
