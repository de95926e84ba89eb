//! Carries out what the task lifecycle ([`crate::lifecycle`]) decided, once the store
//! wrote the change: wake-ups, metrics, audit events and notifications. Handlers call
//! [`apply`] with what a store call returned; they decide none of it themselves.

use serde_json::json;

use crate::audit::{self, Actor};
use crate::http::AppState;
use crate::lifecycle::{BulkRule, Effect};
use crate::notify;
use crate::store::{TaskEffects, TaskRef};

/// Applies the effects decided for one task; `actor` is who caused the change (for
/// the audit log).
pub async fn apply(st: &AppState, actor: &Actor, fx: Option<&TaskEffects>) {
    apply_detailed(st, actor, fx, None).await;
}

/// [`apply`], with what a notification adds to the task (who reviewed, `forced`, the
/// rejection's reason...): the handler that caused the change knows it.
pub async fn apply_detailed(
    st: &AppState,
    actor: &Actor,
    fx: Option<&TaskEffects>,
    notify_detail: Option<serde_json::Value>,
) {
    let Some(fx) = fx else { return };
    let t = &fx.task;
    for effect in &fx.effects {
        match *effect {
            Effect::WakeWork => st.hub.wake_work(t.org_id, t.tags.as_deref()),
            Effect::WakeLog => st.hub.wake_log(t.id),
            Effect::WakeAgent => {
                if let Some(session) = &t.session_id {
                    st.hub.wake_session(session);
                }
            }
            Effect::ReleaseToken => st.jwts.release(t.id).await,
            Effect::CountStarted { waited_ms } => st.metrics.task_started(waited_ms),
            Effect::CountFinished { status, reason } => st.metrics.task_finished(status, reason),
            Effect::CountLogBytes(bytes) => st.metrics.log_bytes_received(bytes),
            Effect::Audit { action, outcome } => {
                let detail = json!({"target": t.target, "outcome": outcome});
                audit::record(st, t.org_id, actor, action, "task", t.id, detail).await;
            }
            Effect::Notify(kind) => {
                let detail = notify_detail
                    .clone()
                    .unwrap_or_else(|| json!({"target": t.target}));
                notify::emit(st, t.org_id, t.id, kind, detail).await;
            }
        }
    }
}

/// Applies a bulk rule's effects to each task a store statement changed with it.
pub async fn apply_rule(
    st: &AppState,
    actor: &Actor,
    rule: &BulkRule,
    org_id: i64,
    tags: Option<&str>,
    ids: &[i64],
) {
    for &id in ids {
        let fx = TaskEffects {
            task: TaskRef {
                id,
                org_id,
                tags: tags.map(str::to_string),
                target: None,
                session_id: None,
            },
            effects: rule.effects.to_vec(),
        };
        apply(st, actor, Some(&fx)).await;
    }
}
