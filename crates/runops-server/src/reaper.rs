//! The lease reaper: once a second it ends the sessions whose lease expired (their
//! running tasks fail `agent-lost`, never re-run) and puts offers that were not
//! started in time back to `ready`. It also fails the tasks whose creator's proof did not
//! come in time (key-bound identity tokens, see `identity`), and ends the tasks whose
//! review wait or approval ran out (`failure`/`review-expired`, see `review`).

use std::time::Duration;

use crate::http::AppState;
use crate::http::agent::end_session;
use crate::store::SessionEnd;
use crate::{effects, lifecycle, now_ms};
use runops_proto::FailureReason;

/// How often leases and offer deadlines are checked; bounds how late a lost agent
/// or an expired offer is noticed beyond its deadline.
pub const REAPER_INTERVAL: Duration = Duration::from_secs(1);

pub async fn run(st: AppState) {
    let mut tick = tokio::time::interval(REAPER_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the last completed sweep started: what the reaper saw of the leases is as
    // old as that. The server's start gave every open session a fresh lease.
    let mut seen_at = std::time::Instant::now();
    loop {
        tick.tick().await;
        let started = std::time::Instant::now();
        let result = async {
            if let Some(blind) = blind_for(started.duration_since(seen_at)) {
                resume_leases(&st, blind).await?;
            }
            sweep(&st).await
        }
        .await;
        match result {
            Ok(()) => seen_at = started,
            Err(e) => tracing::warn!(error = %e, "lease reaper failed; retrying"),
        }
    }
}

/// A gap between the starts of two completed sweeps longer than this means the reaper
/// could not watch the leases meanwhile (its database unreachable or so slow that a
/// sweep waited for it, the process paused).
pub const BLIND_AFTER: Duration = Duration::from_secs(2 * REAPER_INTERVAL.as_secs());

/// `Some(gap)` when the time since the start of the last completed sweep shows the
/// reaper was blind.
pub fn blind_for(since_last_sweep: Duration) -> Option<Duration> {
    (since_last_sweep > BLIND_AFTER).then_some(since_last_sweep)
}

/// After the reaper was blind (the database unreachable: a PostgreSQL restart or
/// failover, or this replica paused), every open session gets a fresh lease before
/// any is judged, as at a server's start: meanwhile the agents' polls, which are their
/// heartbeats, could not be recorded (they were refused with 503 or never reached the
/// database), so an old `last_seen` says nothing about the agent. Without it the first
/// sweep after the database came back ended every session whose lease ran out during
/// the outage and failed their running tasks `agent-lost` (found by the PostgreSQL
/// chaos soak). A session really lost meanwhile is still ended one lease later.
pub async fn resume_leases(st: &AppState, blind: Duration) -> anyhow::Result<()> {
    let resumed = st.store.extend_live_sessions(now_ms()).await?;
    tracing::info!(
        sessions = resumed,
        blind_secs = blind.as_secs_f64(),
        "the lease reaper could not run for a while (database unreachable?): open agent sessions get a fresh lease"
    );
    Ok(())
}

/// One pass; public for tests.
pub async fn sweep(st: &AppState) -> anyhow::Result<()> {
    let now = now_ms();
    let cutoff = now - st.settings.lease_ms();
    for s in st.store.stale_sessions(cutoff).await? {
        if st.hub.session_seen_since(&s.id, cutoff) {
            // A poll is open (or just ended) but the DB has not heard yet.
            continue;
        }
        end_session(
            st,
            &s.id,
            &SessionEnd::Lost {
                lease_secs: st.settings.lease_secs,
            },
            &crate::audit::Actor::system(),
        )
        .await?;
    }
    let system = crate::audit::Actor::system();
    for r in st.store.requeue_expired_offers(now).await? {
        tracing::info!(
            task = r.task_id,
            status = "ready",
            "offer expired before start; back in the queue"
        );
        let rule = &lifecycle::OFFER_EXPIRED;
        effects::apply_rule(st, &system, rule, r.org_id, r.tags.as_deref(), &[r.task_id]).await;
    }
    for e in st.store.expire_reviews(now).await? {
        tracing::info!(
            task = e.task_id,
            status = "failure",
            reason = "review-expired",
            was = %e.was,
            "task expired waiting for {}",
            if e.was == runops_proto::TaskStatus::Approved { "its creator to run it" } else { "its reviews" }
        );
        crate::audit::record(
            st,
            e.org_id,
            &crate::audit::Actor::system(),
            "task.review_expired",
            "task",
            e.task_id,
            serde_json::json!({ "was": e.was }),
        )
        .await;
        effects::apply(st, &system, e.effects.as_ref()).await;
    }
    let overdue = st.jwts.overdue_proofs(now).await;
    if !overdue.is_empty() {
        let message = crate::identity::proof_missing_message();
        for (org_id, id) in overdue {
            let failed = st
                .store
                .fail_unstarted_task(org_id, id, FailureReason::Unauthenticated, &message, now)
                .await?;
            if failed.outcome {
                tracing::warn!(
                    task = id,
                    status = "failure",
                    reason = "unauthenticated",
                    "no proof came for a task created with a key-bound identity token"
                );
            }
            effects::apply(st, &system, failed.effects.as_ref()).await;
        }
    }
    Ok(())
}

/// How often the log retention job looks for logs past their retention.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// Tasks purged per transaction: keeps each write short so the log and dispatch paths
/// never wait long for the single writer.
const PURGE_BATCH: usize = 500;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// Log retention: at start-up and then every [`RETENTION_INTERVAL`], replaces the logs of
/// tasks that ended more than `days` days ago with a note. `days == 0` keeps logs forever.
pub async fn run_retention(st: AppState, days: u64) {
    if days == 0 {
        return;
    }
    let mut tick = tokio::time::interval(RETENTION_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = purge_expired_logs(&st, days, now_ms()).await {
            tracing::warn!(error = %e, "log retention job failed; retrying in an hour");
        }
    }
}

/// One retention pass as of `now_ms`; returns how many task logs were purged. Each
/// organisation's purge is audited (`log.purge` by the system). Public for tests.
pub async fn purge_expired_logs(st: &AppState, days: u64, now_ms: i64) -> anyhow::Result<u64> {
    let days_i = i64::try_from(days).unwrap_or(i64::MAX / DAY_MS);
    let cutoff = now_ms.saturating_sub(days_i.saturating_mul(DAY_MS));
    let date = chrono::DateTime::from_timestamp_millis(now_ms)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    let note = format!(
        "[runops: log purged on {date}: logs are kept {days} days after their task ends (--log-retention-days)]\n"
    );
    let mut by_org: std::collections::BTreeMap<i64, (u64, u64)> = Default::default();
    loop {
        let (seen, purged) = st
            .store
            .purge_logs(cutoff, now_ms, &note, PURGE_BATCH)
            .await?;
        for p in purged {
            let e = by_org.entry(p.org_id).or_default();
            e.0 += p.tasks;
            e.1 += p.bytes;
        }
        if seen < PURGE_BATCH {
            break;
        }
    }
    let mut total = 0;
    for (org_id, (tasks, bytes)) in by_org {
        total += tasks;
        tracing::info!(
            org_id,
            tasks,
            bytes,
            retention_days = days,
            "purged task logs past their retention"
        );
        crate::audit::record(
            st,
            org_id,
            &crate::audit::Actor::system(),
            "log.purge",
            "logs",
            format!("finished before {}", cutoff_date(cutoff)),
            serde_json::json!({ "tasks": tasks, "bytes": bytes, "retention_days": days }),
        )
        .await;
    }
    Ok(total)
}

fn cutoff_date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}
