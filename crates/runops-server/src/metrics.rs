//! `GET /metrics`: the control plane's Prometheus metrics.
//!
//! Counters and histograms live in memory ([`Metrics`], one per process, reset by a
//! restart as Prometheus expects); the gauges that describe stored state (tasks by
//! status, connected agents) are read from the store on scrape, at most once per
//! [`GAUGE_REFRESH`], so the endpoint stays cheap however often it is hit. Like
//! `/healthz` it needs no token, so it carries counts only: no task contents, no
//! target names, no tokens, and every label comes from a fixed set (statuses, failure
//! reasons, route templates) so the number of series stays bounded.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use runops_metrics::{
    CONTENT_TYPE, Exposition, HTTP_SECONDS_BUCKETS, Histogram, MetricType, TASK_SECONDS_BUCKETS,
};
use runops_proto::{FailureReason, TaskStatus};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::ApiError;
use crate::http::AppState;
use crate::store::{Store, StoreGauges, StoreResult};

/// Stored-state gauges are re-read at most this often: counting tasks scans the table
/// and the endpoint needs no token; still fresher than the usual 15 s scrape interval.
pub const GAUGE_REFRESH: Duration = Duration::from_secs(5);

/// The `route` label of requests that matched no route (bounded: never the raw path).
const UNMATCHED_ROUTE: &str = "unmatched";

/// The `reason` label of tasks that succeeded.
const NO_REASON: &str = "none";

#[derive(Debug)]
struct Counters {
    /// (status, reason) → tasks that reached that end.
    finished: BTreeMap<(&'static str, &'static str), u64>,
    dispatch_latency: Histogram,
    /// (method, route template, status code) → durations.
    http: BTreeMap<(&'static str, String, u16), Histogram>,
    log_bytes: u64,
}

/// The in-memory metrics of one server process.
#[derive(Debug)]
pub struct Metrics {
    counters: Mutex<Counters>,
    gauges: tokio::sync::Mutex<Option<(Instant, StoreGauges)>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut finished = BTreeMap::new();
        // Every end a task can reach is present from the start, so `rate()` and
        // `increase()` see the first one.
        finished.insert((TaskStatus::Success.as_str(), NO_REASON), 0);
        for r in FailureReason::ALL {
            finished.insert((TaskStatus::Failure.as_str(), r.as_str()), 0);
        }
        Metrics {
            counters: Mutex::new(Counters {
                finished,
                dispatch_latency: Histogram::new(TASK_SECONDS_BUCKETS),
                http: BTreeMap::new(),
                log_bytes: 0,
            }),
            gauges: tokio::sync::Mutex::new(None),
        }
    }
}

/// Bounded `method` label: the standard methods by name, anything else `OTHER`.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

impl Metrics {
    fn lock(&self) -> MutexGuard<'_, Counters> {
        // Every update is a single step, so a panicking holder leaves them consistent.
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A task reached a final status (finish, kill before start, agent lost).
    pub fn task_finished(&self, status: TaskStatus, reason: Option<FailureReason>) {
        let reason = match (status, reason) {
            (TaskStatus::Success, _) | (_, None) => NO_REASON,
            (_, Some(r)) => r.as_str(),
        };
        *self
            .lock()
            .finished
            .entry((status.as_str(), reason))
            .or_default() += 1;
    }

    /// A task started on its agent `waited_ms` after it was created.
    pub fn task_started(&self, waited_ms: i64) {
        let secs = waited_ms.max(0) as f64 / 1000.0;
        self.lock().dispatch_latency.observe(secs);
    }

    /// Log bytes an agent uploaded and the server accepted (resends count again).
    pub fn log_bytes_received(&self, bytes: u64) {
        let mut c = self.lock();
        c.log_bytes = c.log_bytes.saturating_add(bytes);
    }

    /// One answered HTTP request; `route` is the matched template (`/v1/tasks/{id}`).
    pub fn http_request(&self, method: &Method, route: &str, status: u16, took: Duration) {
        let mut c = self.lock();
        c.http
            .entry((method_label(method), route.to_string(), status))
            .or_insert_with(|| Histogram::new(HTTP_SECONDS_BUCKETS))
            .observe(took.as_secs_f64());
    }

    /// The stored-state gauges, from the store at most once per [`GAUGE_REFRESH`].
    async fn gauges(&self, store: &dyn Store) -> StoreResult<StoreGauges> {
        let mut cached = self.gauges.lock().await;
        if let Some((at, g)) = cached.as_ref()
            && at.elapsed() < GAUGE_REFRESH
        {
            return Ok(g.clone());
        }
        let g = store.metrics_gauges().await?;
        *cached = Some((Instant::now(), g.clone()));
        Ok(g)
    }

    /// The whole exposition.
    pub async fn render(&self, store: &dyn Store) -> StoreResult<String> {
        let gauges = self.gauges(store).await?;
        let mut e = Exposition::new();

        e.family(
            "runops_tasks",
            "Tasks currently in each status.",
            MetricType::Gauge,
        );
        for status in TaskStatus::ALL {
            let n = gauges
                .tasks_by_status
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| *n);
            e.sample("runops_tasks", &[("status", status.as_str())], n as f64);
        }
        e.family(
            "runops_agents_connected",
            "Agents with a live session.",
            MetricType::Gauge,
        );
        e.sample("runops_agents_connected", &[], gauges.live_agents as f64);

        let c = self.lock();
        e.family(
            "runops_tasks_finished_total",
            "Tasks that reached a final status, by status and failure reason.",
            MetricType::Counter,
        );
        for ((status, reason), n) in &c.finished {
            e.sample(
                "runops_tasks_finished_total",
                &[("status", status), ("reason", reason)],
                *n as f64,
            );
        }
        e.family(
            "runops_dispatch_latency_seconds",
            "Time from a task's creation to its start on an agent.",
            MetricType::Histogram,
        );
        e.histogram("runops_dispatch_latency_seconds", &[], &c.dispatch_latency);
        e.family(
            "runops_http_request_duration_seconds",
            "Time to answer HTTP requests (until the headers; long polls included), by route template.",
            MetricType::Histogram,
        );
        for ((method, route, status), h) in &c.http {
            let status = status.to_string();
            e.histogram(
                "runops_http_request_duration_seconds",
                &[("method", method), ("route", route), ("status", &status)],
                h,
            );
        }
        e.family(
            "runops_log_bytes_total",
            "Task log bytes received from agents.",
            MetricType::Counter,
        );
        e.sample("runops_log_bytes_total", &[], c.log_bytes as f64);
        Ok(e.finish())
    }
}

/// `GET /metrics`.
pub async fn metrics(State(st): State<AppState>) -> Response {
    match st.metrics.render(st.store.as_ref()).await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the metrics' gauges from the store");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the store does not answer; metrics are unavailable",
            )
            .into_response()
        }
    }
}

/// Middleware timing every request under its matched route template.
pub async fn track_http(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    m.http_request(&method, &route, resp.status().as_u16(), started.elapsed());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_has_no_reason_and_every_end_starts_at_zero() {
        let m = Metrics::default();
        m.task_finished(TaskStatus::Success, Some(FailureReason::Timeout));
        m.task_finished(TaskStatus::Failure, Some(FailureReason::Timeout));
        m.task_finished(TaskStatus::Failure, Some(FailureReason::Timeout));
        let c = m.lock();
        assert_eq!(c.finished[&("success", "none")], 1);
        assert_eq!(c.finished[&("failure", "timeout")], 2);
        assert_eq!(c.finished[&("failure", "agent-lost")], 0);
        assert_eq!(c.finished.len(), 1 + FailureReason::ALL.len());
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let m = Metrics::default();
        let odd = Method::from_bytes(b"BREW").unwrap();
        m.http_request(&odd, "unmatched", 404, Duration::from_millis(1));
        m.http_request(
            &Method::GET,
            "/v1/tasks/{id}",
            200,
            Duration::from_millis(1),
        );
        let c = m.lock();
        assert!(
            c.http
                .contains_key(&("OTHER", "unmatched".to_string(), 404))
        );
        assert!(
            c.http
                .contains_key(&("GET", "/v1/tasks/{id}".to_string(), 200))
        );
    }
}
