//! The agent's health and metrics endpoint, served on `--health-addr`
//! (`RUNOPS_HEALTH_ADDR`, off by default) for liveness probes and Prometheus.
//!
//! - `GET /healthz` answers 200 as long as the process works, also while it drains or
//!   cannot reach the server (a control-plane outage must not get agents restarted), with
//!   a small JSON body saying how the connection stands.
//! - `GET /metrics` is the Prometheus text format: running tasks, task counts and
//!   durations by type and outcome, reconnects, and the bytes held in the spool.
//!
//! [`AgentHealth`] is what the rest of the agent updates (the poll loop the connection
//! state, the task handler the task counters); [`serve`] answers from it. Neither
//! endpoint needs a token, so neither shows a task's contents, a target or a token.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use runops_metrics::{CONTENT_TYPE, Exposition, Histogram, MetricType, TASK_SECONDS_BUCKETS};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The `type` label of a task whose type this agent has no runner for (bounds the
/// labels to the agent's own list of types, whatever a server sends).
pub const OTHER_TYPE: &str = "other";

/// Where the agent stands with its server, as `/healthz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionState {
    /// Opening the first session (retrying while the server cannot be reached).
    Connecting,
    /// Polling normally.
    Connected,
    /// The last poll failed (no answer, or an error answer); retrying with backoff.
    Unreachable,
    /// The session ended on the server; opening a new one.
    Reconnecting,
    /// Stopped polling (the agent is exiting).
    Disconnected,
}

#[derive(Debug)]
struct TaskSeries {
    total: u64,
    duration: Histogram,
}

#[derive(Debug)]
struct HealthState {
    connection: ConnectionState,
    since: chrono::DateTime<chrono::Utc>,
    draining: bool,
    /// (type, outcome) → count and durations.
    tasks: BTreeMap<(String, String), TaskSeries>,
}

/// The agent's live health and counters, shared by the poll loop, the task handlers
/// and the endpoint.
#[derive(Debug)]
pub struct AgentHealth {
    state: Mutex<HealthState>,
    running: AtomicU64,
    reconnects: AtomicU64,
    spool_root: PathBuf,
}

/// Held while a task executes; dropping it lowers `runops_agent_running_tasks`.
#[must_use = "the task counts as running only while this is held"]
pub struct RunningTask {
    health: Arc<AgentHealth>,
}

impl Drop for RunningTask {
    fn drop(&mut self) {
        self.health.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `/healthz`'s body.
#[derive(Debug, Serialize)]
struct HealthBody {
    status: &'static str,
    version: &'static str,
    connection: ConnectionState,
    /// When `connection` last changed (RFC 3339).
    since: String,
    draining: bool,
    running_tasks: u64,
}

impl AgentHealth {
    /// `spool_root`: the directory whose size `runops_agent_spool_bytes` reports.
    pub fn new(spool_root: &Path) -> AgentHealth {
        AgentHealth {
            state: Mutex::new(HealthState {
                connection: ConnectionState::Connecting,
                since: chrono::Utc::now(),
                draining: false,
                tasks: BTreeMap::new(),
            }),
            running: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            spool_root: spool_root.to_path_buf(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HealthState> {
        // Every update is a single step, so a panicking holder leaves the state usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_connection(&self, to: ConnectionState) -> ConnectionState {
        let mut s = self.lock();
        let from = s.connection;
        if from != to {
            s.connection = to;
            s.since = chrono::Utc::now();
        }
        from
    }

    pub fn connection(&self) -> ConnectionState {
        self.lock().connection
    }

    /// A poll or a connect succeeded. Coming back from `unreachable` or `reconnecting`
    /// counts one reconnect.
    pub fn connected(&self) {
        let from = self.set_connection(ConnectionState::Connected);
        if matches!(
            from,
            ConnectionState::Unreachable | ConnectionState::Reconnecting
        ) {
            self.reconnects.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A poll failed; the loop retries.
    pub fn unreachable(&self) {
        let mut s = self.lock();
        // Still opening the first session: that is `connecting`, not a lost connection.
        if s.connection == ConnectionState::Connected {
            s.connection = ConnectionState::Unreachable;
            s.since = chrono::Utc::now();
        }
    }

    /// The session is gone; a new connect is under way.
    pub fn reconnecting(&self) {
        self.set_connection(ConnectionState::Reconnecting);
    }

    /// The poll loop ended.
    pub fn disconnected(&self) {
        self.set_connection(ConnectionState::Disconnected);
    }

    /// The agent stopped taking work (first SIGTERM).
    pub fn draining(&self) {
        self.lock().draining = true;
    }

    /// A task starts executing.
    pub fn task_started(self: &Arc<Self>) -> RunningTask {
        self.running.fetch_add(1, Ordering::SeqCst);
        RunningTask {
            health: self.clone(),
        }
    }

    /// A task finished executing. `kind` must come from a bounded set (see
    /// [`OTHER_TYPE`]); `outcome` is `success` or the failure reason.
    pub fn task_finished(&self, kind: &str, outcome: &str, took: Duration) {
        let mut s = self.lock();
        let series = s
            .tasks
            .entry((kind.to_string(), outcome.to_string()))
            .or_insert_with(|| TaskSeries {
                total: 0,
                duration: Histogram::new(TASK_SECONDS_BUCKETS),
            });
        series.total += 1;
        series.duration.observe(took.as_secs_f64());
    }

    fn health_body(&self) -> HealthBody {
        let s = self.lock();
        HealthBody {
            status: "ok",
            version: runops_proto::VERSION,
            connection: s.connection,
            since: s.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            draining: s.draining,
            running_tasks: self.running.load(Ordering::SeqCst),
        }
    }

    /// The Prometheus exposition; `spool_bytes` is measured by the caller (disk I/O).
    pub fn render(&self, spool_bytes: u64) -> String {
        let mut e = Exposition::new();
        e.family(
            "runops_agent_running_tasks",
            "Tasks executing now.",
            MetricType::Gauge,
        );
        e.sample(
            "runops_agent_running_tasks",
            &[],
            self.running.load(Ordering::SeqCst) as f64,
        );
        e.family(
            "runops_agent_reconnects_total",
            "Times the agent got its connection back after losing it.",
            MetricType::Counter,
        );
        e.sample(
            "runops_agent_reconnects_total",
            &[],
            self.reconnects.load(Ordering::SeqCst) as f64,
        );
        e.family(
            "runops_agent_spool_bytes",
            "Bytes of logs and results the spool holds until the server acknowledges them.",
            MetricType::Gauge,
        );
        e.sample("runops_agent_spool_bytes", &[], spool_bytes as f64);
        let s = self.lock();
        e.family(
            "runops_agent_tasks_total",
            "Tasks this agent ran, by type and outcome (success or the failure reason).",
            MetricType::Counter,
        );
        for ((kind, outcome), series) in &s.tasks {
            e.sample(
                "runops_agent_tasks_total",
                &[("type", kind), ("outcome", outcome)],
                series.total as f64,
            );
        }
        e.family(
            "runops_agent_task_duration_seconds",
            "Time from a task's start on this agent to its end (secrets, run, kill), by type and outcome.",
            MetricType::Histogram,
        );
        for ((kind, outcome), series) in &s.tasks {
            e.histogram(
                "runops_agent_task_duration_seconds",
                &[("type", kind), ("outcome", outcome)],
                &series.duration,
            );
        }
        e.finish()
    }
}

/// Bytes of every file under `dir` (0 when it does not exist). Blocking: call it
/// from `spawn_blocking`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0u64;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.is_dir() {
            total = total.saturating_add(dir_bytes(&entry.path()));
        } else {
            total = total.saturating_add(meta.len());
        }
    }
    total
}

/// Binds the health address; failing here stops the agent at start with a clear error.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr} for the health endpoint (RUNOPS_HEALTH_ADDR / --health-addr): {e}"
        )
    })
}

/// Serves `/healthz` and `/metrics` on `listener` until the returned task is aborted.
pub fn serve(listener: TcpListener, health: Arc<AgentHealth>) -> JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "health endpoint listening (/healthz, /metrics)");
    }
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(health);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("the health endpoint stopped: {e}");
        }
    })
}

async fn healthz(State(h): State<Arc<AgentHealth>>) -> Response {
    axum::Json(h.health_body()).into_response()
}

async fn metrics(State(h): State<Arc<AgentHealth>>) -> Response {
    let root = h.spool_root.clone();
    let spool_bytes = tokio::task::spawn_blocking(move || dir_bytes(&root))
        .await
        .unwrap_or(0);
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        h.render(spool_bytes),
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "no such endpoint; the agent serves /healthz and /metrics here\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_count_only_connections_that_came_back() {
        let dir = tempfile::tempdir().unwrap();
        let h = AgentHealth::new(dir.path());
        h.unreachable();
        assert_eq!(h.connection(), ConnectionState::Connecting);
        h.connected();
        h.connected();
        assert_eq!(h.reconnects.load(Ordering::SeqCst), 0);
        h.unreachable();
        h.unreachable();
        assert_eq!(h.connection(), ConnectionState::Unreachable);
        h.connected();
        h.reconnecting();
        h.connected();
        assert_eq!(h.reconnects.load(Ordering::SeqCst), 2);
        assert!(h.render(0).contains("\nrunops_agent_reconnects_total 2\n"));
    }

    #[test]
    fn running_tasks_follow_the_guards_and_finished_tasks_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let h = Arc::new(AgentHealth::new(dir.path()));
        let a = h.task_started();
        let b = h.task_started();
        assert!(h.render(0).contains("runops_agent_running_tasks 2\n"));
        drop(a);
        drop(b);
        h.task_finished("bash", "success", Duration::from_millis(20));
        h.task_finished("bash", "exit-code", Duration::from_secs(2));
        h.task_finished("bash", "success", Duration::from_millis(30));
        let text = h.render(7);
        assert!(text.contains("runops_agent_running_tasks 0\n"), "{text}");
        assert!(text.contains("runops_agent_spool_bytes 7\n"), "{text}");
        assert!(
            text.contains("runops_agent_tasks_total{type=\"bash\",outcome=\"success\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "runops_agent_task_duration_seconds_count{type=\"bash\",outcome=\"exit-code\"} 1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn dir_bytes_adds_nested_files_and_a_missing_dir_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/log"), b"12345").unwrap();
        std::fs::write(dir.path().join("a/b/result.json"), b"123").unwrap();
        assert_eq!(dir_bytes(dir.path()), 8);
        assert_eq!(dir_bytes(&dir.path().join("missing")), 0);
    }
}
