//! The lease reaper: once a second it ends the sessions whose lease expired (their
//! running tasks fail `agent-lost`, never re-run) and puts offers that were not
//! started in time back to `ready`. It also fails the tasks whose creator's proof did not
//! come in time (key-bound identity tokens, see `identity`).

use std::time::Duration;

use crate::http::AppState;
use crate::http::agent::end_session;
use crate::now_ms;
use crate::store::SessionEnd;
use runops_proto::FailureReason;

/// How often leases and offer deadlines are checked; bounds how late a lost agent
/// or an expired offer is noticed beyond its deadline.
pub const REAPER_INTERVAL: Duration = Duration::from_secs(1);

pub async fn run(st: AppState) {
    let mut tick = tokio::time::interval(REAPER_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep(&st).await {
            tracing::warn!(error = %e, "lease reaper failed; retrying");
        }
    }
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
    for r in st.store.requeue_expired_offers(now).await? {
        tracing::info!(
            task = r.task_id,
            status = "ready",
            "offer expired before start; back in the queue"
        );
        st.hub.wake_work(r.org_id, r.tags.as_deref());
    }
    let overdue = st.jwts.overdue_proofs(now);
    if !overdue.is_empty() {
        let message = crate::identity::proof_missing_message();
        for (org_id, id) in overdue {
            let failed = st
                .store
                .fail_unstarted_task(org_id, id, FailureReason::Unauthenticated, &message, now)
                .await?;
            if failed {
                tracing::warn!(
                    task = id,
                    status = "failure",
                    reason = "unauthenticated",
                    "no proof came for a task created with a key-bound identity token"
                );
                st.hub.wake_log(id);
            }
        }
    }
    Ok(())
}
