//! The task lifecycle: every status change of a task, decided in one place.
//!
//! [`decide`] takes what the store read of a task ([`TaskState`]) and what happened
//! ([`Event`]: an agent started it, a log chunk came, a user killed it, a review was
//! approved...) and returns a [`Decision`] (the task's next state, the row change the
//! store writes, and the [`Effect`]s the handler then carries out: wake-ups, metrics,
//! audit, notifications) or a [`Refusal`] the handler turns into its HTTP error. No I/O
//! happens here; the store reads and writes rows, the handlers apply effects
//! (see `crate::effects`).
//!
//! Some rules apply to many rows at once (a poll claims the oldest ready tasks, the
//! reaper requeues expired offers, a lost agent's tasks fail): the store runs them as one
//! statement, and their set-based form is a [`BulkRule`] here, tested to agree with
//! [`decide`].
//!
//! ```text
//! created ──proven──▶ ready ──offer──▶ dispatched ──start──▶ running ──finish──▶ success | failure
//! pending-review ──approved──▶ approved ──run──▶ ready (or created, awaiting a proof)
//! pending-review ──rejected──▶ rejected
//! ```
//! [`LEGAL`] lists every allowed status change; docs/architecture.md draws it.

use crate::notify::EventKind;
use runops_proto::{FailureReason, TaskStatus};

/// What the lifecycle reads of a task row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    pub status: TaskStatus,
    /// The agent session the task is offered to or runs on.
    pub session_id: Option<String>,
    /// When an offer that was not started goes back to `ready`.
    pub offer_deadline_ms: Option<i64>,
    /// A user asked to kill the running task; its agent is told with the next poll.
    pub cancel_requested: bool,
    pub failure_reason: Option<FailureReason>,
    /// Log bytes acknowledged to the agent so far.
    pub log_received: u64,
    /// Created with an identity-provider JWT (a key-bound one waits in `created` for
    /// its creator's proof).
    pub created_with_jwt: bool,
    pub created_at_ms: i64,
}

impl TaskState {
    /// A task as [`initial_status`] creates it.
    pub fn new(status: TaskStatus, created_with_jwt: bool, created_at_ms: i64) -> TaskState {
        TaskState {
            status,
            session_id: None,
            offer_deadline_ms: None,
            cancel_requested: false,
            failure_reason: None,
            log_received: 0,
            created_with_jwt,
            created_at_ms,
        }
    }

    fn held_by(&self, session_id: &str) -> bool {
        self.session_id.as_deref() == Some(session_id)
    }
}

/// Something that happens to a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// The creator proved a task created with a key-bound identity token.
    Proven,
    /// A poll of `session_id` claims the task; it must start by `deadline_ms`.
    Offer {
        session_id: &'a str,
        deadline_ms: i64,
    },
    /// The reaper found the offer deadline passed.
    OfferExpired { now_ms: i64 },
    /// The agent accepts the offer.
    Start { session_id: &'a str, now_ms: i64 },
    /// `len` log bytes starting at byte `offset`.
    LogChunk {
        session_id: &'a str,
        offset: u64,
        len: u64,
    },
    /// The agent reports the result. `log_elsewhere`: the log is in the user's S3.
    Finish {
        session_id: &'a str,
        status: TaskStatus,
        failure_reason: Option<FailureReason>,
        log_size: u64,
        log_elsewhere: bool,
    },
    /// A user kills (or withdraws) the task.
    Kill { by: &'a str },
    /// The task's session ended (disconnect, lease lost, token revoked) or its agent
    /// restarted without a record of the task; `message` says which.
    SessionEnded {
        session_id: &'a str,
        message: &'a str,
    },
    /// The task cannot run at all (its creator's token or proof is gone).
    FailUnstarted {
        reason: FailureReason,
        message: &'a str,
    },
    /// The review rule is met (`forced`: an admin's force-approval).
    ReviewApproved { forced: bool },
    /// A reviewer rejected the task, saying why.
    ReviewRejected { reason: &'a str },
    /// No review decision came within the review TTL (`ttl_secs`).
    ReviewExpired { ttl_secs: u64 },
    /// The approved task was not run within the approval TTL (`ttl_secs`).
    ApprovalExpired { ttl_secs: u64 },
    /// The creator runs the approved task (`awaits_proof`: with a key-bound token).
    RunApproved { awaits_proof: bool },
}

/// The row change the store writes for a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Nothing changes (a resent start, finish or log chunk).
    Nothing,
    /// Only the status changes.
    Status(TaskStatus),
    /// `ready` → `dispatched` for the session, with its start deadline.
    Offer,
    /// Back to `ready`: the offer was never started, so running it elsewhere is safe.
    Requeue,
    /// `running` from now on.
    Start,
    /// Store the chunk's bytes beyond the first `skip` (already stored).
    AppendLog { skip: u64 },
    /// Store the agent's result (status, exit code, log size and location...).
    Finish {
        status: TaskStatus,
        reason: Option<FailureReason>,
    },
    /// Ends `failure` (or `rejected`) with a reason and a message, as of now.
    End {
        status: TaskStatus,
        reason: Option<FailureReason>,
        message: String,
    },
    /// Record the kill; the agent running the task stops it.
    RequestCancel,
}

/// What a handler does after the store wrote a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Polls of the task's (org, tags) may find work.
    WakeWork,
    /// Followers of the task's log re-read it (new bytes or a new status).
    WakeLog,
    /// The poll of the session running the task answers now (it carries the cancel).
    WakeAgent,
    /// The creator's identity token held in memory is no longer needed.
    ReleaseToken,
    /// Observe the time from creation to start.
    CountStarted { waited_ms: i64 },
    /// Count a task that reached a final status.
    CountFinished {
        status: TaskStatus,
        reason: Option<FailureReason>,
    },
    /// Count log bytes received (resends count again).
    CountLogBytes(u64),
    /// Append `action` to the audit log, with `outcome` in its detail.
    Audit {
        action: &'static str,
        outcome: &'static str,
    },
    /// Emit a notification (see `crate::notify::emit`).
    Notify(EventKind),
}

/// A decided transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub next: TaskState,
    pub write: Write,
    pub effects: Vec<Effect>,
}

/// Why an event does not apply to the task; the handler maps it to an HTTP error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The task already ended.
    Ended(TaskStatus),
    /// The offer's deadline passed or it went to another session: do not run it.
    OfferExpired,
    /// The task is not offered to or run by this session.
    NotYours(TaskStatus),
    /// A log chunk starts beyond the stored bytes: resend from `stored`.
    LogGap { stored: u64 },
    /// A finish reports more log than stored: resend from `stored`, then finish.
    LogIncomplete { stored: u64 },
    /// The event does not apply in the task's status (a proof for a task that does
    /// not wait for one, an approval of a task not pending review...).
    WrongStatus(TaskStatus),
}

/// The status a new task starts in: a reviewed target's tasks wait for reviews, a task
/// created with a key-bound identity token waits for its creator's proof, any other is
/// ready at once. Returns the effects of the creation.
pub fn initial_status(needs_review: bool, awaits_proof: bool) -> (TaskStatus, Vec<Effect>) {
    if needs_review {
        (
            TaskStatus::PendingReview,
            vec![Effect::Notify(EventKind::ReviewRequested)],
        )
    } else if awaits_proof {
        (TaskStatus::Created, Vec::new())
    } else {
        (TaskStatus::Ready, vec![Effect::WakeWork])
    }
}

/// Every allowed status change (`from`, `to`); a status never changes to itself
/// through this table, and a final status has no way out.
pub const LEGAL: &[(TaskStatus, TaskStatus)] = {
    use TaskStatus::*;
    &[
        (Created, Ready),
        (Created, Failure),
        (PendingReview, Approved),
        (PendingReview, Rejected),
        (PendingReview, Failure),
        (Approved, Ready),
        (Approved, Created),
        (Approved, Failure),
        (Ready, Dispatched),
        (Ready, Failure),
        (Dispatched, Ready),
        (Dispatched, Running),
        // An agent may report a result without starting (secrets missing...).
        (Dispatched, Success),
        (Dispatched, Failure),
        (Running, Success),
        (Running, Failure),
    ]
};

pub fn is_legal(from: TaskStatus, to: TaskStatus) -> bool {
    LEGAL.contains(&(from, to))
}

/// Statuses in which the task has not started: it never ran, so ending or requeueing it
/// is always safe.
pub const UNSTARTED: [TaskStatus; 5] = [
    TaskStatus::Created,
    TaskStatus::PendingReview,
    TaskStatus::Approved,
    TaskStatus::Ready,
    TaskStatus::Dispatched,
];

/// The final statuses.
pub const FINAL: [TaskStatus; 3] = [
    TaskStatus::Success,
    TaskStatus::Failure,
    TaskStatus::Rejected,
];

/// A rule the store applies to every row in `from` that its statement selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkRule {
    pub from: TaskStatus,
    pub to: TaskStatus,
    pub reason: Option<FailureReason>,
    /// Effects per changed task.
    pub effects: &'static [Effect],
}

/// A poll claims the oldest `ready` tasks of its (org, tags): [`Event::Offer`].
pub const CLAIM: BulkRule = BulkRule {
    from: TaskStatus::Ready,
    to: TaskStatus::Dispatched,
    reason: None,
    effects: &[],
};

/// Offers whose deadline passed: [`Event::OfferExpired`].
pub const OFFER_EXPIRED: BulkRule = BulkRule {
    from: TaskStatus::Dispatched,
    to: TaskStatus::Ready,
    reason: None,
    effects: &[Effect::WakeWork],
};

/// A session ended: its running tasks fail, [`Event::SessionEnded`]. A task that
/// started is never run a second time.
pub const SESSION_ENDED_RUNNING: BulkRule = BulkRule {
    from: TaskStatus::Running,
    to: TaskStatus::Failure,
    reason: Some(FailureReason::AgentLost),
    effects: &[
        Effect::CountFinished {
            status: TaskStatus::Failure,
            reason: Some(FailureReason::AgentLost),
        },
        Effect::WakeLog,
        Effect::Notify(EventKind::TaskFinished),
    ],
};

/// A session ended: its offers that never started go back to the queue.
pub const SESSION_ENDED_OFFERED: BulkRule = BulkRule {
    from: TaskStatus::Dispatched,
    to: TaskStatus::Ready,
    reason: None,
    effects: &[Effect::WakeWork],
};

/// Server start: tasks waiting for their creator's proof lost the token (memory only):
/// [`Event::FailUnstarted`] with `unauthenticated`.
pub const PROOF_LOST: BulkRule = BulkRule {
    from: TaskStatus::Created,
    to: TaskStatus::Failure,
    reason: Some(FailureReason::Unauthenticated),
    effects: &[
        Effect::CountFinished {
            status: TaskStatus::Failure,
            reason: Some(FailureReason::Unauthenticated),
        },
        Effect::WakeLog,
        Effect::Notify(EventKind::TaskFinished),
    ],
};

/// Effects of a task ending with `status`/`reason` before it started.
fn ended_effects(status: TaskStatus, reason: Option<FailureReason>) -> Vec<Effect> {
    vec![
        Effect::ReleaseToken,
        Effect::CountFinished { status, reason },
        Effect::WakeLog,
        Effect::Notify(EventKind::TaskFinished),
    ]
}

/// The message of a task killed before it started.
pub fn kill_message(by: &str, status: TaskStatus) -> String {
    match status {
        TaskStatus::PendingReview => format!("withdrawn by {by} while it waited for review"),
        _ => format!("killed by {by} before it started"),
    }
}

/// Decides what `event` does to a task in `state`.
pub fn decide(state: &TaskState, event: &Event<'_>) -> Result<Decision, Refusal> {
    use TaskStatus::*;
    let status = state.status;
    let mut next = state.clone();
    let done = |next: TaskState, write: Write, effects: Vec<Effect>| {
        Ok(Decision {
            next,
            write,
            effects,
        })
    };
    let end = |mut next: TaskState, status: TaskStatus, reason, message: String, effects| {
        next.status = status;
        next.failure_reason = reason;
        next.offer_deadline_ms = None;
        Ok(Decision {
            next,
            write: Write::End {
                status,
                reason,
                message,
            },
            effects,
        })
    };
    // Every event but a resend reaching a finished task is refused there.
    let resend = matches!(event, Event::LogChunk { .. } | Event::Finish { .. });
    if status.is_final() && !resend {
        return Err(Refusal::Ended(status));
    }
    match *event {
        Event::Proven => {
            if status != Created || !state.created_with_jwt {
                return Err(Refusal::WrongStatus(status));
            }
            next.status = Ready;
            done(next, Write::Status(Ready), vec![Effect::WakeWork])
        }
        Event::Offer {
            session_id,
            deadline_ms,
        } => {
            if status != CLAIM.from {
                return Err(Refusal::WrongStatus(status));
            }
            next.status = CLAIM.to;
            next.session_id = Some(session_id.to_string());
            next.offer_deadline_ms = Some(deadline_ms);
            done(next, Write::Offer, CLAIM.effects.to_vec())
        }
        Event::OfferExpired { now_ms } => {
            let passed = state.offer_deadline_ms.is_some_and(|d| d < now_ms);
            if status != OFFER_EXPIRED.from || !passed {
                return Err(Refusal::WrongStatus(status));
            }
            done(
                requeued(next),
                Write::Requeue,
                OFFER_EXPIRED.effects.to_vec(),
            )
        }
        Event::Start { session_id, now_ms } => {
            let mine = state.held_by(session_id);
            if status == Running && mine {
                // A resent start (the first answer was lost): the task runs once.
                return done(next, Write::Nothing, Vec::new());
            }
            if status != Dispatched || !mine {
                return Err(Refusal::OfferExpired);
            }
            if state.offer_deadline_ms.is_some_and(|d| now_ms > d) {
                // Too late: it goes back to the queue, and this agent must not run it.
                return done(requeued(next), Write::Requeue, vec![Effect::WakeWork]);
            }
            next.status = Running;
            next.offer_deadline_ms = None;
            let waited_ms = now_ms.saturating_sub(state.created_at_ms);
            done(
                next,
                Write::Start,
                vec![
                    Effect::ReleaseToken,
                    Effect::CountStarted { waited_ms },
                    Effect::WakeLog,
                ],
            )
        }
        Event::LogChunk {
            session_id,
            offset,
            len,
        } => {
            let received = state.log_received;
            let stored = vec![Effect::CountLogBytes(len), Effect::WakeLog];
            if !state.held_by(session_id) {
                return Err(Refusal::NotYours(status));
            }
            if status.is_final() {
                // A resend of bytes we already have is fine; anything new is too late.
                if offset.saturating_add(len) <= received {
                    return done(next, Write::Nothing, stored);
                }
                return Err(Refusal::Ended(status));
            }
            if !matches!(status, Running | Dispatched) {
                return Err(Refusal::NotYours(status));
            }
            if offset > received {
                return Err(Refusal::LogGap { stored: received });
            }
            let skip = received - offset;
            if skip >= len {
                return done(next, Write::Nothing, stored);
            }
            next.log_received = offset + len;
            done(next, Write::AppendLog { skip }, stored)
        }
        Event::Finish {
            session_id,
            status: reported,
            failure_reason,
            log_size,
            log_elsewhere,
        } => {
            let mine = state.held_by(session_id);
            if status.is_final() {
                // The first result is kept; the same result again is a resend.
                let same = mine
                    && status == reported
                    && (status == Success || state.failure_reason == failure_reason);
                if same {
                    return done(next, Write::Nothing, Vec::new());
                }
                return Err(Refusal::Ended(status));
            }
            if !mine || !matches!(status, Running | Dispatched) {
                return Err(Refusal::NotYours(status));
            }
            if !matches!(reported, Success | Failure) {
                return Err(Refusal::WrongStatus(reported));
            }
            if !log_elsewhere && state.log_received < log_size {
                return Err(Refusal::LogIncomplete {
                    stored: state.log_received,
                });
            }
            let reason = match reported {
                Success => None,
                _ => Some(failure_reason.unwrap_or(FailureReason::AgentError)),
            };
            next.status = reported;
            next.failure_reason = reason;
            next.offer_deadline_ms = None;
            done(
                next,
                Write::Finish {
                    status: reported,
                    reason,
                },
                vec![
                    Effect::ReleaseToken,
                    Effect::CountFinished {
                        status: reported,
                        reason,
                    },
                    Effect::WakeLog,
                    Effect::Notify(EventKind::TaskFinished),
                ],
            )
        }
        Event::Kill { by } => {
            if status == Running {
                next.cancel_requested = true;
                return done(
                    next,
                    Write::RequestCancel,
                    vec![
                        Effect::Audit {
                            action: "task.kill",
                            outcome: "cancel-requested",
                        },
                        Effect::WakeAgent,
                    ],
                );
            }
            let reason = Some(FailureReason::Cancelled);
            let mut effects = ended_effects(Failure, reason);
            effects.push(Effect::Audit {
                action: "task.kill",
                outcome: "cancelled-before-start",
            });
            end(next, Failure, reason, kill_message(by, status), effects)
        }
        Event::SessionEnded {
            session_id,
            message,
        } => {
            if !state.held_by(session_id) {
                return Err(Refusal::NotYours(status));
            }
            match status {
                s if s == SESSION_ENDED_RUNNING.from => {
                    let rule = SESSION_ENDED_RUNNING;
                    end(
                        next,
                        rule.to,
                        rule.reason,
                        message.to_string(),
                        rule.effects.to_vec(),
                    )
                }
                s if s == SESSION_ENDED_OFFERED.from => done(
                    requeued(next),
                    Write::Requeue,
                    SESSION_ENDED_OFFERED.effects.to_vec(),
                ),
                _ => Err(Refusal::WrongStatus(status)),
            }
        }
        Event::FailUnstarted { reason, message } => {
            if !UNSTARTED.contains(&status) {
                return Err(Refusal::WrongStatus(status));
            }
            let effects = ended_effects(Failure, Some(reason));
            end(next, Failure, Some(reason), message.to_string(), effects)
        }
        Event::ReviewApproved { forced: _ } => {
            if status != PendingReview {
                return Err(Refusal::WrongStatus(status));
            }
            next.status = Approved;
            done(
                next,
                Write::Status(Approved),
                vec![Effect::WakeLog, Effect::Notify(EventKind::ReviewApproved)],
            )
        }
        Event::ReviewRejected { reason } => {
            if status != PendingReview {
                return Err(Refusal::WrongStatus(status));
            }
            let effects = vec![
                Effect::ReleaseToken,
                Effect::CountFinished {
                    status: Rejected,
                    reason: None,
                },
                Effect::WakeLog,
                Effect::Notify(EventKind::ReviewRejected),
            ];
            end(next, Rejected, None, reason.to_string(), effects)
        }
        Event::ReviewExpired { ttl_secs } => {
            if status != PendingReview {
                return Err(Refusal::WrongStatus(status));
            }
            let reason = Some(FailureReason::ReviewExpired);
            let effects = ended_effects(Failure, reason);
            let message = crate::review::expiry_message(status, ttl_secs);
            end(next, Failure, reason, message, effects)
        }
        Event::ApprovalExpired { ttl_secs } => {
            if status != Approved {
                return Err(Refusal::WrongStatus(status));
            }
            let reason = Some(FailureReason::ReviewExpired);
            let effects = ended_effects(Failure, reason);
            let message = crate::review::expiry_message(status, ttl_secs);
            end(next, Failure, reason, message, effects)
        }
        Event::RunApproved { awaits_proof } => {
            if status != Approved {
                return Err(Refusal::WrongStatus(status));
            }
            let (to, effects) = initial_status(false, awaits_proof);
            next.status = to;
            done(next, Write::Status(to), effects)
        }
    }
}

fn requeued(mut next: TaskState) -> TaskState {
    next.status = TaskStatus::Ready;
    next.session_id = None;
    next.offer_deadline_ms = None;
    next
}

/// Which limit stopped a log from being kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLimit {
    /// The control plane's cap per task.
    Task,
    /// The organisation's quota.
    Org,
    /// The server's quota.
    Server,
}

/// How many bytes of a log are kept: the room left under each limit, `None` for a
/// limit that is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRoom {
    /// (cap per task, bytes the task keeps already).
    pub task: (u64, u64),
    /// (quota, bytes used).
    pub org: Option<(u64, u64)>,
    pub server: Option<(u64, u64)>,
}

/// What to keep of new log bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogKeep {
    /// Bytes kept of the new ones (a prefix).
    pub keep: u64,
    /// The note that ends a log cut short (appended once, then the log keeps nothing more).
    pub note: Option<String>,
    /// The limit that cut it, with its size.
    pub limit: Option<(LogLimit, u64)>,
}

/// The log cap: keeps new bytes up to the tightest of the task's cap and the
/// organisation's and server's quotas; beyond it the bytes are acknowledged (the agent
/// must not resend them) but not kept, and one note says so.
pub fn log_keep(new_len: u64, room: &LogRoom) -> LogKeep {
    let (cap, kept) = room.task;
    let mut tightest = (cap.saturating_sub(kept), LogLimit::Task, cap);
    for (quota, limit) in [(room.org, LogLimit::Org), (room.server, LogLimit::Server)] {
        if let Some((quota, used)) = quota {
            let left = quota.saturating_sub(used);
            if left < tightest.0 {
                tightest = (left, limit, quota);
            }
        }
    }
    let (left, limit, size) = tightest;
    if new_len <= left {
        return LogKeep {
            keep: new_len,
            note: None,
            limit: None,
        };
    }
    LogKeep {
        keep: left,
        note: Some(truncation_note(limit, size)),
        limit: Some((limit, size)),
    }
}

/// The note appended (once) to a log that reached a limit.
fn truncation_note(limit: LogLimit, size: u64) -> String {
    let (whose, env) = match limit {
        LogLimit::Task => {
            return format!(
                "\n[runops: log truncated: the control plane keeps at most {size} bytes per task (RUNOPS_LOG_CAP_BYTES); the rest was received but not stored]\n"
            );
        }
        LogLimit::Org => ("this organisation's", "RUNOPS_ORG_LOG_QUOTA_BYTES"),
        LogLimit::Server => ("the server's", "RUNOPS_LOG_QUOTA_BYTES"),
    };
    format!(
        "\n[runops: log truncated: {whose} log quota of {size} bytes is used up ({env}); the rest was received but not stored]\n"
    )
}

#[cfg(test)]
mod tests;
