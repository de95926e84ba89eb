//! Unit tests of each lifecycle rule, and property tests over random event sequences.

use super::*;
use TaskStatus::*;
use proptest::prelude::*;

const S1: &str = "session-1";
const S2: &str = "session-2";

fn state(status: TaskStatus) -> TaskState {
    TaskState::new(status, false, 1_000)
}

fn offered(session: &str, deadline_ms: i64) -> TaskState {
    let mut s = state(Dispatched);
    s.session_id = Some(session.into());
    s.offer_deadline_ms = Some(deadline_ms);
    s
}

fn running(session: &str) -> TaskState {
    let mut s = state(Running);
    s.session_id = Some(session.into());
    s
}

fn finish(session: &str, status: TaskStatus, reason: Option<FailureReason>) -> Event<'_> {
    Event::Finish {
        session_id: session,
        status,
        failure_reason: reason,
        log_size: 0,
        log_elsewhere: false,
    }
}

#[test]
fn new_tasks_start_ready_unless_they_wait_for_a_review_or_a_proof() {
    assert_eq!(
        initial_status(false, false),
        (Ready, vec![Effect::WakeWork])
    );
    assert_eq!(initial_status(false, true), (Created, vec![]));
    assert_eq!(
        initial_status(true, true),
        (
            PendingReview,
            vec![Effect::Notify(EventKind::ReviewRequested)]
        )
    );
}

#[test]
fn a_proof_makes_a_created_task_ready_and_wakes_agents() {
    let s = TaskState::new(Created, true, 0);
    let d = decide(&s, &Event::Proven).unwrap();
    assert_eq!(d.next.status, Ready);
    assert_eq!(d.write, Write::Status(Ready));
    assert_eq!(d.effects, vec![Effect::WakeWork]);
    // Without a JWT there is nothing to prove; a ready task needs no proof.
    assert_eq!(
        decide(&state(Created), &Event::Proven),
        Err(Refusal::WrongStatus(Created))
    );
    assert_eq!(
        decide(&state(Ready), &Event::Proven),
        Err(Refusal::WrongStatus(Ready))
    );
}

#[test]
fn only_ready_tasks_are_offered() {
    let d = decide(
        &state(Ready),
        &Event::Offer {
            session_id: S1,
            deadline_ms: 5,
        },
    )
    .unwrap();
    assert_eq!(d.next, offered(S1, 5));
    for st in [Created, PendingReview, Approved, Dispatched, Running] {
        let e = Event::Offer {
            session_id: S1,
            deadline_ms: 5,
        };
        assert_eq!(decide(&state(st), &e), Err(Refusal::WrongStatus(st)));
    }
}

#[test]
fn an_offer_not_started_by_its_deadline_goes_back_to_ready() {
    let d = decide(&offered(S1, 10), &Event::OfferExpired { now_ms: 11 }).unwrap();
    assert_eq!(d.next, state(Ready));
    assert_eq!(d.write, Write::Requeue);
    assert_eq!(d.effects, vec![Effect::WakeWork]);
    assert!(decide(&offered(S1, 10), &Event::OfferExpired { now_ms: 10 }).is_err());
}

#[test]
fn start_runs_the_offer_once_and_a_resent_start_changes_nothing() {
    let d = decide(
        &offered(S1, 10_000),
        &Event::Start {
            session_id: S1,
            now_ms: 4_000,
        },
    )
    .unwrap();
    assert_eq!(d.next, running(S1));
    assert_eq!(d.write, Write::Start);
    assert_eq!(
        d.effects,
        vec![
            Effect::ReleaseToken,
            Effect::CountStarted { waited_ms: 3_000 },
            Effect::WakeLog
        ]
    );
    let again = decide(
        &running(S1),
        &Event::Start {
            session_id: S1,
            now_ms: 5,
        },
    )
    .unwrap();
    assert_eq!((again.write, again.effects), (Write::Nothing, vec![]));
}

#[test]
fn start_after_the_deadline_or_by_another_session_is_refused() {
    let late = decide(
        &offered(S1, 10),
        &Event::Start {
            session_id: S1,
            now_ms: 11,
        },
    )
    .unwrap();
    assert_eq!(late.write, Write::Requeue);
    assert_eq!(late.next.status, Ready);
    let other = Event::Start {
        session_id: S2,
        now_ms: 1,
    };
    assert_eq!(decide(&offered(S1, 10), &other), Err(Refusal::OfferExpired));
    assert_eq!(decide(&running(S1), &other), Err(Refusal::OfferExpired));
    assert_eq!(decide(&state(Ready), &other), Err(Refusal::OfferExpired));
    assert_eq!(
        decide(&state(Failure), &other),
        Err(Refusal::Ended(Failure))
    );
}

#[test]
fn log_chunks_append_skip_resent_bytes_and_refuse_gaps() {
    let mut s = running(S1);
    s.log_received = 10;
    let chunk = |offset, len| Event::LogChunk {
        session_id: S1,
        offset,
        len,
    };
    let d = decide(&s, &chunk(5, 10)).unwrap();
    assert_eq!(d.write, Write::AppendLog { skip: 5 });
    assert_eq!(d.next.log_received, 15);
    assert_eq!(d.effects, vec![Effect::CountLogBytes(10), Effect::WakeLog]);
    assert_eq!(decide(&s, &chunk(0, 10)).unwrap().write, Write::Nothing);
    assert_eq!(
        decide(&s, &chunk(11, 1)),
        Err(Refusal::LogGap { stored: 10 })
    );
    let other = Event::LogChunk {
        session_id: S2,
        offset: 10,
        len: 1,
    };
    assert_eq!(decide(&s, &other), Err(Refusal::NotYours(Running)));
    s.status = Success;
    assert_eq!(decide(&s, &chunk(0, 10)).unwrap().write, Write::Nothing);
    assert_eq!(decide(&s, &chunk(5, 10)), Err(Refusal::Ended(Success)));
}

#[test]
fn finish_needs_the_whole_log_unless_it_is_stored_elsewhere() {
    let mut s = running(S1);
    s.log_received = 3;
    let mut e = Event::Finish {
        session_id: S1,
        status: Success,
        failure_reason: None,
        log_size: 4,
        log_elsewhere: false,
    };
    assert_eq!(decide(&s, &e), Err(Refusal::LogIncomplete { stored: 3 }));
    if let Event::Finish { log_elsewhere, .. } = &mut e {
        *log_elsewhere = true;
    }
    let d = decide(&s, &e).unwrap();
    assert_eq!(d.next.status, Success);
    assert!(d.effects.contains(&Effect::Notify(EventKind::TaskFinished)));
}

#[test]
fn a_failure_without_a_reason_is_an_agent_error() {
    let d = decide(&running(S1), &finish(S1, Failure, None)).unwrap();
    assert_eq!(d.next.failure_reason, Some(FailureReason::AgentError));
    assert_eq!(
        d.write,
        Write::Finish {
            status: Failure,
            reason: Some(FailureReason::AgentError)
        }
    );
}

#[test]
fn a_resent_finish_is_accepted_and_a_different_one_refused() {
    let d = decide(
        &running(S1),
        &finish(S1, Failure, Some(FailureReason::ExitCode)),
    )
    .unwrap();
    let ended = d.next;
    let again = decide(&ended, &finish(S1, Failure, Some(FailureReason::ExitCode))).unwrap();
    assert_eq!((again.write, again.effects), (Write::Nothing, vec![]));
    assert_eq!(
        decide(&ended, &finish(S1, Success, None)),
        Err(Refusal::Ended(Failure))
    );
    assert_eq!(
        decide(&ended, &finish(S2, Failure, Some(FailureReason::ExitCode))),
        Err(Refusal::Ended(Failure))
    );
    assert_eq!(
        decide(&state(Ready), &finish(S1, Success, None)),
        Err(Refusal::NotYours(Ready))
    );
}

#[test]
fn kill_cancels_an_unstarted_task_and_asks_the_agent_to_stop_a_running_one() {
    for st in UNSTARTED {
        let d = decide(&state(st), &Event::Kill { by: "ann@x" }).unwrap();
        assert_eq!(d.next.status, Failure);
        assert_eq!(d.next.failure_reason, Some(FailureReason::Cancelled));
        assert!(d.effects.contains(&Effect::Audit {
            action: "task.kill",
            outcome: "cancelled-before-start"
        }));
    }
    let d = decide(&state(PendingReview), &Event::Kill { by: "ann@x" }).unwrap();
    assert!(
        matches!(d.write, Write::End { ref message, .. } if message.contains("withdrawn by ann@x"))
    );
    let d = decide(&running(S1), &Event::Kill { by: "ann@x" }).unwrap();
    assert_eq!(d.write, Write::RequestCancel);
    assert!(d.next.cancel_requested);
    assert!(d.effects.contains(&Effect::WakeAgent));
    assert_eq!(
        decide(&state(Success), &Event::Kill { by: "ann@x" }),
        Err(Refusal::Ended(Success))
    );
}

#[test]
fn a_session_end_fails_its_running_tasks_and_requeues_its_offers() {
    let e = Event::SessionEnded {
        session_id: S1,
        message: "lost",
    };
    let d = decide(&running(S1), &e).unwrap();
    assert_eq!(d.next.status, Failure);
    assert_eq!(d.next.failure_reason, Some(FailureReason::AgentLost));
    assert_eq!(decide(&offered(S1, 9), &e).unwrap().next, state(Ready));
    assert_eq!(decide(&running(S2), &e), Err(Refusal::NotYours(Running)));
}

#[test]
fn fail_unstarted_never_touches_a_started_task() {
    let e = Event::FailUnstarted {
        reason: FailureReason::Unauthenticated,
        message: "no token",
    };
    assert_eq!(decide(&offered(S1, 9), &e).unwrap().next.status, Failure);
    assert_eq!(decide(&running(S1), &e), Err(Refusal::WrongStatus(Running)));
}

#[test]
fn reviews_approve_reject_expire_and_run() {
    let pending = state(PendingReview);
    let approved = decide(&pending, &Event::ReviewApproved { forced: false })
        .unwrap()
        .next;
    assert_eq!(approved.status, Approved);
    let d = decide(&pending, &Event::ReviewRejected { reason: "no" }).unwrap();
    assert_eq!(d.next.status, Rejected);
    assert!(
        d.effects
            .contains(&Effect::Notify(EventKind::ReviewRejected))
    );
    let d = decide(&pending, &Event::ReviewExpired { ttl_secs: 60 }).unwrap();
    assert_eq!(
        (d.next.status, d.next.failure_reason),
        (Failure, Some(FailureReason::ReviewExpired))
    );
    let d = decide(&approved, &Event::ApprovalExpired { ttl_secs: 60 }).unwrap();
    assert!(
        matches!(d.write, Write::End { ref message, .. } if message.contains("approval expired"))
    );
    let run = decide(
        &approved,
        &Event::RunApproved {
            awaits_proof: false,
        },
    )
    .unwrap();
    assert_eq!(
        (run.next.status, run.effects),
        (Ready, vec![Effect::WakeWork])
    );
    let run = decide(&approved, &Event::RunApproved { awaits_proof: true }).unwrap();
    assert_eq!(run.next.status, Created);
    // A pending task cannot run, an approved one is not approved again.
    assert_eq!(
        decide(
            &pending,
            &Event::RunApproved {
                awaits_proof: false
            }
        ),
        Err(Refusal::WrongStatus(PendingReview))
    );
    assert_eq!(
        decide(&approved, &Event::ReviewApproved { forced: true }),
        Err(Refusal::WrongStatus(Approved))
    );
    assert_eq!(
        decide(&state(Ready), &Event::ReviewExpired { ttl_secs: 60 }),
        Err(Refusal::WrongStatus(Ready))
    );
}

#[test]
fn the_log_cap_keeps_up_to_the_tightest_limit_and_notes_it_once() {
    let room = LogRoom {
        task: (100, 90),
        org: None,
        server: None,
    };
    assert_eq!(log_keep(10, &room).keep, 10);
    assert_eq!(log_keep(10, &room).note, None);
    let cut = log_keep(11, &room);
    assert_eq!((cut.keep, cut.limit), (10, Some((LogLimit::Task, 100))));
    assert!(cut.note.unwrap().contains("at most 100 bytes per task"));
    let room = LogRoom {
        task: (100, 0),
        org: Some((50, 45)),
        server: Some((1000, 10)),
    };
    let cut = log_keep(20, &room);
    assert_eq!((cut.keep, cut.limit), (5, Some((LogLimit::Org, 50))));
    assert!(cut.note.unwrap().contains("RUNOPS_ORG_LOG_QUOTA_BYTES"));
}

#[test]
fn the_legal_table_has_no_way_out_of_a_final_status() {
    for (from, to) in LEGAL {
        assert!(!from.is_final(), "{from} → {to}");
        assert_ne!(from, to);
    }
    for st in FINAL {
        assert!(st.is_final());
    }
    for st in UNSTARTED {
        assert!(!st.is_final() && st != Running);
    }
}

// --- property tests ------------------------------------------------------------------

/// One event of a random history, owning its data.
#[derive(Debug, Clone)]
enum Ev {
    Proven,
    Offer(usize, i64),
    OfferExpired(i64),
    Start(usize, i64),
    Log(usize, u64, u64),
    Finish(usize, TaskStatus, Option<FailureReason>, u64, bool),
    Kill,
    SessionEnded(usize),
    FailUnstarted(FailureReason),
    Approved(bool),
    Rejected,
    ReviewExpired,
    ApprovalExpired,
    Run(bool),
}

const SESSIONS: [&str; 2] = [S1, S2];

impl Ev {
    fn event(&self) -> Event<'_> {
        match *self {
            Ev::Proven => Event::Proven,
            Ev::Offer(s, d) => Event::Offer {
                session_id: SESSIONS[s],
                deadline_ms: d,
            },
            Ev::OfferExpired(now_ms) => Event::OfferExpired { now_ms },
            Ev::Start(s, now_ms) => Event::Start {
                session_id: SESSIONS[s],
                now_ms,
            },
            Ev::Log(s, offset, len) => Event::LogChunk {
                session_id: SESSIONS[s],
                offset,
                len,
            },
            Ev::Finish(s, status, failure_reason, log_size, log_elsewhere) => Event::Finish {
                session_id: SESSIONS[s],
                status,
                failure_reason,
                log_size,
                log_elsewhere,
            },
            Ev::Kill => Event::Kill {
                by: "ann@example.com",
            },
            Ev::SessionEnded(s) => Event::SessionEnded {
                session_id: SESSIONS[s],
                message: "lost",
            },
            Ev::FailUnstarted(reason) => Event::FailUnstarted {
                reason,
                message: "gone",
            },
            Ev::Approved(forced) => Event::ReviewApproved { forced },
            Ev::Rejected => Event::ReviewRejected { reason: "no" },
            Ev::ReviewExpired => Event::ReviewExpired { ttl_secs: 60 },
            Ev::ApprovalExpired => Event::ApprovalExpired { ttl_secs: 60 },
            Ev::Run(awaits_proof) => Event::RunApproved { awaits_proof },
        }
    }
}

fn reason() -> impl Strategy<Value = FailureReason> {
    proptest::sample::select(FailureReason::ALL.to_vec())
}

fn ev() -> impl Strategy<Value = Ev> {
    let s = 0..2usize;
    let t = 0..100i64;
    prop_oneof![
        Just(Ev::Proven),
        (s.clone(), t.clone()).prop_map(|(s, d)| Ev::Offer(s, d)),
        t.clone().prop_map(Ev::OfferExpired),
        (s.clone(), t).prop_map(|(s, n)| Ev::Start(s, n)),
        (s.clone(), 0..40u64, 0..20u64).prop_map(|(s, o, l)| Ev::Log(s, o, l)),
        (
            s.clone(),
            proptest::sample::select(vec![Success, Failure]),
            proptest::option::of(reason()),
            0..40u64,
            any::<bool>()
        )
            .prop_map(|(s, st, r, size, elsewhere)| Ev::Finish(s, st, r, size, elsewhere)),
        Just(Ev::Kill),
        s.prop_map(Ev::SessionEnded),
        reason().prop_map(Ev::FailUnstarted),
        any::<bool>().prop_map(Ev::Approved),
        Just(Ev::Rejected),
        Just(Ev::ReviewExpired),
        Just(Ev::ApprovalExpired),
        any::<bool>().prop_map(Ev::Run),
    ]
}

fn history() -> impl Strategy<Value = (bool, bool, Vec<Ev>)> {
    (
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(ev(), 0..60),
    )
}

/// The row change a decision writes agrees with the next state it announces.
fn write_matches_next(before: &TaskState, d: &Decision) -> bool {
    match &d.write {
        Write::Nothing => d.next == *before || d.next.log_received != before.log_received,
        Write::Status(s) => d.next.status == *s,
        Write::Offer => d.next.status == Dispatched && d.next.session_id.is_some(),
        Write::Requeue => d.next.status == Ready && d.next.session_id.is_none(),
        Write::Start => d.next.status == Running,
        Write::AppendLog { .. } => d.next.status == before.status,
        Write::Finish { status, reason } => {
            d.next.status == *status && d.next.failure_reason == *reason
        }
        Write::End { status, reason, .. } => {
            d.next.status == *status && d.next.failure_reason == *reason
        }
        Write::RequestCancel => d.next.status == Running && d.next.cancel_requested,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Random histories: every status change is in [`LEGAL`], a final status is final
    /// and keeps its first result, a task starts at most once, kill ends what has not
    /// started and asks the agent to stop what runs.
    #[test]
    fn random_histories_follow_the_rules((review, proof, events) in history()) {
        let (status, _) = initial_status(review, proof);
        let mut s = TaskState::new(status, proof, 0);
        let mut starts = 0;
        let mut was_running = false;
        let mut first_end: Option<(TaskStatus, Option<FailureReason>)> = None;
        for e in &events {
            let event = e.event();
            let Ok(d) = decide(&s, &event) else {
                continue;
            };
            prop_assert!(write_matches_next(&s, &d), "{s:?} + {event:?} → {d:?}");
            if d.next.status != s.status {
                prop_assert!(is_legal(s.status, d.next.status), "{} → {} on {event:?}", s.status, d.next.status);
            }
            if s.status.is_final() {
                // Only resends are answered, and they change nothing.
                prop_assert_eq!(&d.write, &Write::Nothing);
                prop_assert_eq!(d.next.status, s.status);
                prop_assert_eq!(d.next.failure_reason, s.failure_reason);
            }
            if d.write == Write::Start {
                starts += 1;
            }
            if d.next.status == Running && s.status != Running {
                prop_assert!(!was_running, "a task ran twice");
                was_running = true;
            }
            if let Event::Kill { .. } = event {
                if s.status == Running {
                    prop_assert!(d.next.cancel_requested && d.effects.contains(&Effect::WakeAgent));
                } else {
                    prop_assert_eq!(d.next.status, Failure);
                    prop_assert_eq!(d.next.failure_reason, Some(FailureReason::Cancelled));
                }
            }
            if d.next.status.is_final() && first_end.is_none() {
                first_end = Some((d.next.status, d.next.failure_reason));
                let counted = d.effects.iter().any(|e| matches!(e, Effect::CountFinished { .. }));
                prop_assert!(counted, "a final status not counted: {:?}", d);
            }
            s = d.next;
        }
        prop_assert!(starts <= 1);
        if let Some(end) = first_end {
            prop_assert_eq!((s.status, s.failure_reason), end);
        }
    }

    /// Kill ends every task that has not ended: at once when it has not started, and
    /// with the agent's next report (or the loss of its session) when it runs.
    #[test]
    fn kill_ends_every_task((review, proof, events) in history()) {
        let (status, _) = initial_status(review, proof);
        let mut s = TaskState::new(status, proof, 0);
        for e in &events {
            if let Ok(d) = decide(&s, &e.event()) {
                s = d.next;
            }
        }
        match decide(&s, &Event::Kill { by: "ann@example.com" }) {
            Err(Refusal::Ended(st)) => prop_assert!(st.is_final() && s.status.is_final()),
            Err(r) => prop_assert!(false, "kill refused: {r:?}"),
            Ok(d) if s.status == Running => {
                let session = s.session_id.clone().unwrap_or_default();
                let lost = Event::SessionEnded { session_id: &session, message: "lost" };
                let ended = decide(&d.next, &lost).unwrap();
                prop_assert!(ended.next.status.is_final());
                let cancelled = finish(&session, Failure, Some(FailureReason::Cancelled));
                prop_assert!(decide(&d.next, &cancelled).unwrap().next.status.is_final());
            }
            Ok(d) => prop_assert!(d.next.status.is_final()),
        }
    }

    /// A repeated identical finish is idempotent; the first result stays.
    #[test]
    fn a_finish_is_never_lost(
        status in proptest::sample::select(vec![Success, Failure]),
        first in proptest::option::of(reason()),
        second in proptest::option::of(reason()),
    ) {
        let d = decide(&running(S1), &finish(S1, status, first)).unwrap();
        let again = decide(&d.next, &finish(S1, status, d.next.failure_reason)).unwrap();
        prop_assert_eq!(again.write, Write::Nothing);
        let other = decide(&d.next, &finish(S1, Failure, second));
        if let Ok(o) = other {
            prop_assert_eq!(o.next, d.next);
        }
    }
}

/// The set-based rules the store runs as one statement agree with [`decide`].
#[test]
fn bulk_rules_agree_with_decide() {
    let check = |rule: BulkRule, from: TaskState, event: Event<'_>| {
        assert_eq!(from.status, rule.from);
        let d = decide(&from, &event).unwrap();
        assert_eq!(d.next.status, rule.to, "{rule:?}");
        assert_eq!(d.next.failure_reason, rule.reason, "{rule:?}");
        assert_eq!(d.effects, rule.effects, "{rule:?}");
        assert!(is_legal(rule.from, rule.to));
    };
    check(
        CLAIM,
        state(Ready),
        Event::Offer {
            session_id: S1,
            deadline_ms: 1,
        },
    );
    check(
        OFFER_EXPIRED,
        offered(S1, 1),
        Event::OfferExpired { now_ms: 2 },
    );
    let ended = Event::SessionEnded {
        session_id: S1,
        message: "lost",
    };
    check(SESSION_ENDED_RUNNING, running(S1), ended.clone());
    check(SESSION_ENDED_OFFERED, offered(S1, 1), ended);
    let lost = Event::FailUnstarted {
        reason: FailureReason::Unauthenticated,
        message: "lost",
    };
    let mut awaiting = TaskState::new(Created, true, 0);
    awaiting.session_id = None;
    let d = decide(&awaiting, &lost).unwrap();
    assert_eq!(
        (d.next.status, d.next.failure_reason),
        (PROOF_LOST.to, PROOF_LOST.reason)
    );
    // Failing an unstarted task also releases the (lost) token.
    assert!(PROOF_LOST.effects.iter().all(|e| d.effects.contains(e)));
}
