//! Reviews ([`ReviewStore`]): recording approvals and rejections under a task's rule,
//! running an approved task, expiring waits, the inbox, and racing reviewers.

use super::*;
use runops_proto::FailureReason;
use runops_server::lifecycle::Effect;
use runops_server::notify::EventKind;
use runops_server::review::{self, Refusal, ReviewMode, ReviewRule};
use runops_server::store::reviews::{NewReview, ReviewOutcome, RunOutcome, TaskReviewRow};
use tokio::sync::Barrier;

/// Review and approval waits of the suite's reviewed targets (seconds).
const REVIEW_TTL_SECS: u64 = 3600;
const APPROVAL_TTL_SECS: u64 = 60;

/// A target of `org` that requires reviews under `mode` from `groups`.
async fn reviewed_target(
    store: &dyn Store,
    org: &Org,
    name: &str,
    mode: ReviewMode,
    groups: &[&str],
    min_approvals: Option<u32>,
) -> Target {
    let mut t = target(name, None);
    t.review = mode.as_str().into();
    t.reviewers = groups.iter().map(|g| g.to_string()).collect();
    t.min_approvals = min_approvals;
    t.review_ttl = REVIEW_TTL_SECS;
    t.approval_ttl = APPROVAL_TTL_SECS;
    store
        .create_target(org.id, &t)
        .await
        .expect("create target")
}

/// A user of `org` with `groups`.
async fn user(store: &dyn Store, org: &Org, email: &str, groups: &[&str]) -> User {
    store
        .create_user(
            org.id,
            &NewUser {
                name: email.into(),
                email: email.into(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                role: runops_proto::Role::User,
            },
            T0,
        )
        .await
        .expect("create user")
}

/// The digest the API computes for a task of `target` running `script`.
fn digest_of(target: &Target, script: &str) -> String {
    review::digest(&review::ReviewedTask {
        target,
        kind: &target.kind,
        script,
    })
}

/// Creates a `pending-review` task of `creator` on `target`, as the API does.
async fn pending_task(
    store: &dyn Store,
    org: &Org,
    target: &Target,
    creator: &User,
    script: &str,
    now_ms: i64,
) -> TaskRecord {
    let mut new = new_task(target, creator, script, TaskStatus::PendingReview);
    new.review_sha256 = Some(digest_of(target, script));
    store
        .create_task(org.id, &new, now_ms)
        .await
        .expect("create a task waiting for reviews")
}

fn approval(user: &User) -> NewReview {
    NewReview {
        user: user.clone(),
        approved: true,
        comment: None,
        forced: false,
        sha256_seen: None,
    }
}

fn rejection(user: &User, reason: &str) -> NewReview {
    NewReview {
        user: user.clone(),
        approved: false,
        comment: Some(reason.into()),
        forced: false,
        sha256_seen: None,
    }
}

async fn review_as(
    store: &dyn Store,
    org: &Org,
    id: i64,
    review: &NewReview,
    now_ms: i64,
) -> (ReviewOutcome, Vec<Effect>) {
    let d = store
        .record_review(org.id, id, review, now_ms)
        .await
        .expect("record review");
    if let Some(fx) = &d.effects {
        assert_eq!(
            (fx.task.id, fx.task.org_id),
            (id, org.id),
            "effects name the task"
        );
    }
    (d.outcome, d.effects.map(|e| e.effects).unwrap_or_default())
}

/// `(status, approved_now)` of an approval that was recorded.
fn approved(outcome: &ReviewOutcome) -> (TaskStatus, bool) {
    match outcome {
        ReviewOutcome::Approved {
            task, approved_now, ..
        } => (task.task.status, *approved_now),
        other => panic!("the approval was not recorded: {other:?}"),
    }
}

async fn review_row(store: &dyn Store, org: &Org, id: i64) -> TaskReviewRow {
    store
        .task_review(org.id, id)
        .await
        .expect("task review")
        .unwrap_or_else(|| panic!("task {id} has a review"))
}

fn reviewers_of(row: &TaskReviewRow) -> Vec<(&str, &str)> {
    row.entries
        .iter()
        .map(|e| (e.user.as_str(), e.verdict.as_str()))
        .collect()
}

pub async fn a_reviewed_task_waits_with_the_rule_and_digest_it_was_created_with(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let t = reviewed_target(store, &acme, "db", ReviewMode::Team, &["dba", "sec"], None).await;
    let rec = pending_task(store, &acme, &t, &acme.admin, "drop table x", T0 + 5).await;
    let id = rec.task.id;
    assert_eq!(rec.task.status, TaskStatus::PendingReview);
    let row = review_row(store, &acme, id).await;
    assert_eq!(
        row.rule,
        ReviewRule {
            mode: ReviewMode::Team,
            groups: vec!["dba".into(), "sec".into()],
            min_approvals: None,
        }
    );
    assert_eq!(row.sha256, digest_of(&t, "drop table x"));
    assert_eq!(
        (row.review_ttl_secs, row.approval_ttl_secs),
        (REVIEW_TTL_SECS, APPROVAL_TTL_SECS)
    );
    assert_eq!(row.approved_at_ms, None);
    assert!(row.entries.is_empty());
    // A task waiting for reviews is never offered to an agent.
    let s = session(store, &acme, None, "s1").await;
    assert!(claim(store, &s, 10, T0 + 6).await.is_empty());

    // Changing the target later changes neither the rule, the waits nor the digest
    // the task is reviewed under (a task's content is fixed at creation).
    let mut edited = target("db", None);
    edited.review = "anyone".into();
    edited.min_approvals = Some(3);
    edited.review_ttl = 5;
    edited.approval_ttl = 5;
    edited.custom_command = Some("sh -x".into());
    store.update_target(acme.id, &edited).await.unwrap();
    assert_eq!(review_row(store, &acme, id).await.rule, row.rule);
    assert_eq!(review_row(store, &acme, id).await.sha256, row.sha256);
    let dba = user(store, &acme, "dba@acme.example", &["dba"]).await;
    let sec = user(store, &acme, "sec@acme.example", &["sec"]).await;
    review_as(store, &acme, id, &approval(&dba), T0 + 7).await;
    let (outcome, _) = review_as(store, &acme, id, &approval(&sec), T0 + 8).await;
    assert_eq!(approved(&outcome), (TaskStatus::Approved, true));
    let after = task(store, &acme, id).await.task;
    assert_eq!(
        (
            after.script.as_str(),
            after.target.as_str(),
            after.kind.as_str()
        ),
        ("drop table x", "db", "bash")
    );
    assert_eq!(review_row(store, &acme, id).await.sha256, row.sha256);
    assert_eq!(store.expire_reviews(T0 + 8 + 5_000).await.unwrap().len(), 0);

    // Another org sees nothing; an unreviewed task has no review.
    assert!(store.task_review(other.id, id).await.unwrap().is_none());
    let plain = create_target(store, &acme, "plain", None).await;
    let ready = ready_task(store, &acme, &plain, "true", T0).await.task.id;
    assert!(store.task_review(acme.id, ready).await.unwrap().is_none());
    assert!(
        store
            .task_review(acme.id, id + 1000)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn team_approvals_count_one_group_per_approver(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let both = user(store, &acme, "both@acme.example", &["dba", "sec", "dev"]).await;
    let dba = user(store, &acme, "dba@acme.example", &["dba"]).await;
    let t = reviewed_target(store, &acme, "db", ReviewMode::Team, &["dba", "sec"], None).await;
    let id = pending_task(store, &acme, &t, &acme.admin, "1", T0)
        .await
        .task
        .id;
    // Someone in both groups counts for one of them only.
    let mut first = approval(&both);
    first.comment = Some("looks fine".into());
    let (outcome, effects) = review_as(store, &acme, id, &first, T0 + 1).await;
    assert_eq!(approved(&outcome), (TaskStatus::PendingReview, false));
    assert!(effects.is_empty(), "no status change: {effects:?}");
    let row = review_row(store, &acme, id).await;
    assert_eq!(row.entries.len(), 1);
    let e = &row.entries[0];
    assert_eq!(e.user, both.email);
    assert_eq!(
        e.groups,
        vec!["dba", "sec"],
        "the rule's groups of the reviewer"
    );
    assert_eq!(e.verdict, review::VERDICT_APPROVED);
    assert_eq!(e.comment.as_deref(), Some("looks fine"));
    assert!(!e.forced);
    assert_eq!(e.sha256, row.sha256);
    assert_eq!(e.at, at(T0 + 1));
    assert_eq!(
        task(store, &acme, id).await.task.status,
        TaskStatus::PendingReview
    );

    // A second person of the same group completes it: `both` counts for `sec`.
    let (outcome, effects) = review_as(store, &acme, id, &approval(&dba), T0 + 2).await;
    assert_eq!(approved(&outcome), (TaskStatus::Approved, true));
    assert!(
        effects.contains(&Effect::Notify(EventKind::ReviewApproved)),
        "{effects:?}"
    );
    let row = review_row(store, &acme, id).await;
    assert_eq!(row.approved_at_ms, Some(T0 + 2));
    assert_eq!(
        reviewers_of(&row),
        vec![
            (both.email.as_str(), "approved"),
            (dba.email.as_str(), "approved")
        ]
    );
    assert_eq!(
        task(store, &acme, id).await.task.status,
        TaskStatus::Approved
    );

    // `min_approvals` 1 of two groups: one approver is enough.
    let one_of = reviewed_target(
        store,
        &acme,
        "one",
        ReviewMode::Team,
        &["dba", "sec"],
        Some(1),
    )
    .await;
    let id = pending_task(store, &acme, &one_of, &acme.admin, "2", T0)
        .await
        .task
        .id;
    let (outcome, _) = review_as(store, &acme, id, &approval(&dba), T0 + 3).await;
    assert_eq!(approved(&outcome), (TaskStatus::Approved, true));
}

pub async fn anyone_approvals_count_distinct_users(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let ann = user(store, &acme, "ann@acme.example", &[]).await;
    let bob = user(store, &acme, "bob@acme.example", &["dev"]).await;
    let t = reviewed_target(store, &acme, "any", ReviewMode::Anyone, &[], Some(2)).await;
    let id = pending_task(store, &acme, &t, &acme.admin, "1", T0)
        .await
        .task
        .id;
    let (outcome, _) = review_as(store, &acme, id, &approval(&ann), T0 + 1).await;
    assert_eq!(approved(&outcome), (TaskStatus::PendingReview, false));
    let (outcome, _) = review_as(store, &acme, id, &approval(&bob), T0 + 2).await;
    assert_eq!(approved(&outcome), (TaskStatus::Approved, true));
    let row = review_row(store, &acme, id).await;
    assert_eq!(
        row.entries[1].groups,
        vec!["dev"],
        "all of the reviewer's groups"
    );

    // Default: one approval by anyone but the creator.
    let t = reviewed_target(store, &acme, "any1", ReviewMode::Anyone, &[], None).await;
    let id = pending_task(store, &acme, &t, &ann, "2", T0).await.task.id;
    let (outcome, _) = review_as(store, &acme, id, &approval(&acme.admin), T0 + 3).await;
    assert_eq!(approved(&outcome), (TaskStatus::Approved, true));
}

pub async fn creators_outsiders_and_second_reviews_are_refused(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let ann = user(store, &acme, "ann@acme.example", &["dba"]).await;
    let out = user(store, &acme, "out@acme.example", &["dev"]).await;
    let dba = user(store, &acme, "dba@acme.example", &["dba"]).await;
    let t = reviewed_target(store, &acme, "db", ReviewMode::Team, &["dba"], None).await;
    let id = pending_task(store, &acme, &t, &ann, "1", T0).await.task.id;

    // The creator, whatever the case of their e-mail, even approving as an admin.
    let mut creator = ann.clone();
    creator.email = "ANN@acme.example".into();
    let (outcome, _) = review_as(store, &acme, id, &approval(&creator), T0 + 1).await;
    assert!(
        matches!(outcome, ReviewOutcome::Refused(Refusal::OwnTask)),
        "{outcome:?}"
    );
    let mut forced = approval(&ann);
    forced.forced = true;
    let (outcome, _) = review_as(store, &acme, id, &forced, T0 + 1).await;
    assert!(
        matches!(outcome, ReviewOutcome::Refused(Refusal::OwnTask)),
        "{outcome:?}"
    );
    let (outcome, _) = review_as(store, &acme, id, &rejection(&ann, "no"), T0 + 1).await;
    assert!(
        matches!(outcome, ReviewOutcome::Refused(Refusal::OwnTask)),
        "{outcome:?}"
    );

    // Someone in none of the groups, approving or rejecting.
    let (outcome, _) = review_as(store, &acme, id, &approval(&out), T0 + 2).await;
    match outcome {
        ReviewOutcome::Refused(Refusal::NotInGroups { groups }) => {
            assert_eq!(groups, vec!["dba"])
        }
        other => panic!("an outsider's approval: {other:?}"),
    }
    let (outcome, _) = review_as(store, &acme, id, &rejection(&out, "no"), T0 + 2).await;
    assert!(
        matches!(outcome, ReviewOutcome::Refused(Refusal::NotInGroups { .. })),
        "{outcome:?}"
    );
    assert!(
        review_row(store, &acme, id).await.entries.is_empty(),
        "nothing recorded"
    );
    assert_eq!(
        task(store, &acme, id).await.task.status,
        TaskStatus::PendingReview
    );

    // A second review by the same user (any case), before the rule is met.
    let t2 = reviewed_target(store, &acme, "two", ReviewMode::Anyone, &[], Some(2)).await;
    let id2 = pending_task(store, &acme, &t2, &ann, "2", T0).await.task.id;
    review_as(store, &acme, id2, &approval(&dba), T0 + 3).await;
    let mut again = dba.clone();
    again.email = "DBA@ACME.example".into();
    for second in [approval(&again), rejection(&dba, "changed my mind")] {
        let (outcome, _) = review_as(store, &acme, id2, &second, T0 + 4).await;
        assert!(
            matches!(outcome, ReviewOutcome::Refused(Refusal::AlreadyReviewed)),
            "{outcome:?}"
        );
    }
    assert_eq!(
        reviewers_of(&review_row(store, &acme, id2).await),
        vec![(dba.email.as_str(), "approved")]
    );

    // An admin outside the groups may force an approval; it meets the rule at once.
    let mut forced = approval(&acme.admin);
    forced.forced = true;
    forced.comment = Some("incident 42".into());
    let (outcome, effects) = review_as(store, &acme, id, &forced, T0 + 5).await;
    assert_eq!(approved(&outcome), (TaskStatus::Approved, true));
    assert!(effects.contains(&Effect::Notify(EventKind::ReviewApproved)));
    let row = review_row(store, &acme, id).await;
    assert!(row.entries[0].forced);
    assert_eq!(row.entries[0].comment.as_deref(), Some("incident 42"));
}

pub async fn a_review_of_another_version_or_another_status_is_not_recorded(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let ann = user(store, &acme, "ann@acme.example", &[]).await;
    let t = reviewed_target(store, &acme, "any", ReviewMode::Anyone, &[], None).await;
    let id = pending_task(store, &acme, &t, &acme.admin, "1", T0)
        .await
        .task
        .id;
    let stored = review_row(store, &acme, id).await.sha256;

    // The reviewer looked at another version of the task.
    let mut stale = approval(&ann);
    stale.sha256_seen = Some(digest_of(&t, "2"));
    let (outcome, _) = review_as(store, &acme, id, &stale, T0 + 1).await;
    match outcome {
        ReviewOutcome::DigestMismatch { stored: s } => assert_eq!(s, stored),
        other => panic!("a review of another version: {other:?}"),
    }
    assert!(review_row(store, &acme, id).await.entries.is_empty());
    // The digest they saw, in any case, is accepted.
    let mut seen = approval(&ann);
    seen.sha256_seen = Some(stored.to_uppercase());
    let (outcome, _) = review_as(store, &acme, id, &seen, T0 + 2).await;
    assert_eq!(approved(&outcome), (TaskStatus::Approved, true));

    // Approved already, another org's task, an unknown task, a task without review.
    let bob = user(store, &acme, "bob@acme.example", &[]).await;
    let (outcome, _) = review_as(store, &acme, id, &approval(&bob), T0 + 3).await;
    assert!(
        matches!(outcome, ReviewOutcome::NotPending(TaskStatus::Approved)),
        "{outcome:?}"
    );
    let (outcome, _) = review_as(store, &other, id, &approval(&bob), T0 + 3).await;
    assert!(matches!(outcome, ReviewOutcome::NotFound), "{outcome:?}");
    let (outcome, _) = review_as(store, &acme, id + 1000, &approval(&bob), T0 + 3).await;
    assert!(matches!(outcome, ReviewOutcome::NotFound), "{outcome:?}");
    let plain = create_target(store, &acme, "plain", None).await;
    let ready = ready_task(store, &acme, &plain, "true", T0).await.task.id;
    let (outcome, _) = review_as(store, &acme, ready, &approval(&bob), T0 + 3).await;
    assert!(matches!(outcome, ReviewOutcome::NotReviewed), "{outcome:?}");
    assert_eq!(review_row(store, &acme, id).await.entries.len(), 1);
}

pub async fn a_rejection_ends_the_task_rejected_with_its_reason(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let ann = user(store, &acme, "ann@acme.example", &["dba"]).await;
    let bob = user(store, &acme, "bob@acme.example", &["dba"]).await;
    let t = reviewed_target(store, &acme, "db", ReviewMode::Team, &["dba"], Some(1)).await;
    let id = pending_task(store, &acme, &t, &acme.admin, "1", T0)
        .await
        .task
        .id;
    let (outcome, effects) =
        review_as(store, &acme, id, &rejection(&ann, "wrong database"), T0 + 9).await;
    let ReviewOutcome::Rejected { task: rec, review } = outcome else {
        panic!("the rejection was not recorded: {outcome:?}");
    };
    assert_eq!(rec.task.status, TaskStatus::Rejected);
    assert_eq!(rec.task.finished_at, Some(at(T0 + 9)));
    assert_eq!(rec.task.started_at, None);
    let message = rec.task.failure_message.clone().unwrap_or_default();
    assert!(
        message.contains("wrong database") && message.contains(&ann.email),
        "{message}"
    );
    assert_eq!(
        reviewers_of(&review),
        vec![(ann.email.as_str(), "rejected")]
    );
    assert_eq!(review.entries[0].comment.as_deref(), Some("wrong database"));
    assert!(
        effects.contains(&Effect::Notify(EventKind::ReviewRejected)),
        "{effects:?}"
    );
    assert_eq!(task(store, &acme, id).await.task, rec.task);

    // It is over: no more reviews, no run, no expiry.
    let (outcome, _) = review_as(store, &acme, id, &approval(&bob), T0 + 10).await;
    assert!(
        matches!(outcome, ReviewOutcome::NotPending(TaskStatus::Rejected)),
        "{outcome:?}"
    );
    let run = store
        .run_approved_task(acme.id, id, false, T0 + 10)
        .await
        .unwrap();
    assert!(matches!(
        run.outcome,
        RunOutcome::NotApproved(TaskStatus::Rejected)
    ));
    let far = T0 + 1000 * REVIEW_TTL_SECS as i64 * 10;
    assert!(store.expire_reviews(far).await.unwrap().is_empty());
    assert_eq!(
        task(store, &acme, id).await.task.status,
        TaskStatus::Rejected
    );
}

pub async fn an_approved_task_runs_once_when_its_creator_runs_it(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let ann = user(store, &acme, "ann@acme.example", &[]).await;
    let t = reviewed_target(store, &acme, "any", ReviewMode::Anyone, &[], None).await;
    let id = pending_task(store, &acme, &t, &acme.admin, "echo hi", T0)
        .await
        .task
        .id;
    // Not approved yet.
    let run = store
        .run_approved_task(acme.id, id, false, T0 + 1)
        .await
        .unwrap();
    assert!(
        matches!(
            run.outcome,
            RunOutcome::NotApproved(TaskStatus::PendingReview)
        ),
        "{:?}",
        run.outcome
    );
    assert!(run.effects.is_none());
    review_as(store, &acme, id, &approval(&ann), T0 + 2).await;
    let s = session(store, &acme, None, "s1").await;
    assert!(
        claim(store, &s, 10, T0 + 3).await.is_empty(),
        "approved is not ready"
    );

    // Another org's run finds nothing.
    let run = store
        .run_approved_task(other.id, id, false, T0 + 4)
        .await
        .unwrap();
    assert!(matches!(run.outcome, RunOutcome::NotFound));
    let run = store
        .run_approved_task(acme.id, id, false, T0 + 5)
        .await
        .unwrap();
    let RunOutcome::Ready(rec) = run.outcome else {
        panic!("the approved task did not become ready: {:?}", run.outcome);
    };
    assert_eq!(rec.task.status, TaskStatus::Ready);
    let effects = run.effects.expect("effects").effects;
    assert!(effects.contains(&Effect::WakeWork), "{effects:?}");
    // Run twice: it is already ready.
    let again = store
        .run_approved_task(acme.id, id, false, T0 + 6)
        .await
        .unwrap();
    assert!(matches!(
        again.outcome,
        RunOutcome::NotApproved(TaskStatus::Ready)
    ));

    // Claimable now, and it runs what was approved.
    let offers = claim(store, &s, 10, T0 + 7).await;
    assert_eq!(task_ids(&offers), vec![id]);
    assert_eq!(offers[0].script, "echo hi");
    assert_eq!(
        offers[0].created_at_ms,
        Some(T0 + 5),
        "the agent checks the creator's identity token against the run, not the creation"
    );
    assert!(
        store
            .tasks_created_with_jwt(acme.id, &[id])
            .await
            .unwrap()
            .is_empty(),
        "run without an identity token"
    );
    let started = run_started(store, &s, id, T0 + 8).await;
    assert_eq!(started.task.status, TaskStatus::Running);
    // A task that ran is never expired by its approval's wait.
    let far = T0 + 1000 * (APPROVAL_TTL_SECS + REVIEW_TTL_SECS) as i64 * 10;
    assert!(store.expire_reviews(far).await.unwrap().is_empty());

    // A task of an unreviewed target is not "approved".
    let plain = create_target(store, &acme, "plain", Some("x")).await;
    let ready = ready_task(store, &acme, &plain, "true", T0).await.task.id;
    let run = store
        .run_approved_task(acme.id, ready, false, T0 + 9)
        .await
        .unwrap();
    assert!(matches!(
        run.outcome,
        RunOutcome::NotApproved(TaskStatus::Ready)
    ));
    // Run with an identity token: the store remembers it came with one.
    let with_jwt = pending_task(store, &acme, &t, &acme.admin, "echo jwt", T0)
        .await
        .task
        .id;
    review_as(store, &acme, with_jwt, &approval(&ann), T0 + 10).await;
    let run = store
        .run_approved_task(acme.id, with_jwt, true, T0 + 11)
        .await
        .unwrap();
    assert!(
        matches!(run.outcome, RunOutcome::Ready(_)),
        "{:?}",
        run.outcome
    );
    assert_eq!(
        store
            .tasks_created_with_jwt(acme.id, &[id, with_jwt])
            .await
            .unwrap(),
        vec![with_jwt]
    );
    let run = store
        .run_approved_task(acme.id, id + 1000, false, T0 + 9)
        .await
        .unwrap();
    assert!(matches!(run.outcome, RunOutcome::NotFound));
}

/// Starts task `id`, already offered to `session`.
async fn run_started(
    store: &dyn Store,
    session: &SessionRecord,
    id: i64,
    now_ms: i64,
) -> TaskRecord {
    match store
        .start_task(session.org_id, id, &session.id, now_ms)
        .await
        .expect("start")
        .outcome
    {
        StartOutcome::Started(rec) => *rec,
        other => panic!("task {id} did not start: {other:?}"),
    }
}

pub async fn waits_expire_at_exactly_their_ttl(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let ann = user(store, &acme, "ann@acme.example", &[]).await;
    let t = reviewed_target(store, &acme, "any", ReviewMode::Anyone, &[], None).await;
    let ot = reviewed_target(store, &other, "any", ReviewMode::Anyone, &[], None).await;
    let review_ms = 1000 * REVIEW_TTL_SECS as i64;
    let approval_ms = 1000 * APPROVAL_TTL_SECS as i64;
    let pending = pending_task(store, &acme, &t, &acme.admin, "1", T0)
        .await
        .task
        .id;
    let theirs = pending_task(store, &other, &ot, &other.admin, "1", T0 + 1)
        .await
        .task
        .id;
    let approved_id = pending_task(store, &acme, &t, &acme.admin, "2", T0)
        .await
        .task
        .id;
    review_as(store, &acme, approved_id, &approval(&ann), T0 + 500).await;
    let plain = create_target(store, &acme, "plain", None).await;
    let ready = ready_task(store, &acme, &plain, "true", T0).await.task.id;

    // The approval's wait counts from the approval, not from the creation.
    let approved_due = T0 + 500 + approval_ms;
    assert!(
        store
            .expire_reviews(approved_due - 1)
            .await
            .unwrap()
            .is_empty()
    );
    let expired = store.expire_reviews(approved_due).await.unwrap();
    assert_eq!(expired.len(), 1, "{expired:?}");
    let e = &expired[0];
    assert_eq!(
        (e.org_id, e.task_id, e.was),
        (acme.id, approved_id, TaskStatus::Approved)
    );
    let fx = e.effects.as_ref().expect("effects");
    assert_eq!(fx.task.id, approved_id);
    assert!(
        fx.effects
            .contains(&Effect::Notify(EventKind::TaskFinished))
    );
    let ended = task(store, &acme, approved_id).await.task;
    assert_eq!(
        (ended.status, ended.failure_reason),
        (TaskStatus::Failure, Some(FailureReason::ReviewExpired))
    );
    assert_eq!(ended.finished_at, Some(at(approved_due)));
    assert_eq!(
        ended.failure_message.as_deref(),
        Some(review::expiry_message(TaskStatus::Approved, APPROVAL_TTL_SECS).as_str())
    );
    let run = store
        .run_approved_task(acme.id, approved_id, false, approved_due)
        .await
        .unwrap();
    assert!(matches!(
        run.outcome,
        RunOutcome::NotApproved(TaskStatus::Failure)
    ));

    // A pending review: one ms before its TTL it still waits, at the TTL it ends, in
    // every org, once.
    assert!(
        store
            .expire_reviews(T0 + review_ms - 1)
            .await
            .unwrap()
            .is_empty()
    );
    let expired = store.expire_reviews(T0 + review_ms).await.unwrap();
    let got: Vec<(i64, i64, TaskStatus)> = expired
        .iter()
        .map(|e| (e.org_id, e.task_id, e.was))
        .collect();
    assert_eq!(got, vec![(acme.id, pending, TaskStatus::PendingReview)]);
    let expired = store.expire_reviews(T0 + 1 + review_ms).await.unwrap();
    let got: Vec<(i64, i64, TaskStatus)> = expired
        .iter()
        .map(|e| (e.org_id, e.task_id, e.was))
        .collect();
    assert_eq!(got, vec![(other.id, theirs, TaskStatus::PendingReview)]);
    assert!(
        store
            .expire_reviews(T0 + 10 * review_ms)
            .await
            .unwrap()
            .is_empty()
    );
    let ended = task(store, &acme, pending).await.task;
    assert_eq!(
        (ended.status, ended.failure_reason),
        (TaskStatus::Failure, Some(FailureReason::ReviewExpired))
    );
    assert_eq!(
        ended.failure_message.as_deref(),
        Some(review::expiry_message(TaskStatus::PendingReview, REVIEW_TTL_SECS).as_str())
    );
    let (outcome, _) = review_as(store, &acme, pending, &approval(&ann), T0 + review_ms).await;
    assert!(
        matches!(outcome, ReviewOutcome::NotPending(TaskStatus::Failure)),
        "{outcome:?}"
    );
    // Tasks without reviews never expire this way.
    assert_eq!(
        task(store, &acme, ready).await.task.status,
        TaskStatus::Ready
    );
}

pub async fn the_review_inbox_lists_the_orgs_waiting_tasks_oldest_first(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let ann = user(store, &acme, "ann@acme.example", &["dba"]).await;
    let team = reviewed_target(store, &acme, "db", ReviewMode::Team, &["dba", "sec"], None).await;
    let any = reviewed_target(store, &acme, "any", ReviewMode::Anyone, &[], None).await;
    let ot = reviewed_target(store, &other, "any", ReviewMode::Anyone, &[], None).await;
    assert!(store.tasks_in_review(acme.id).await.unwrap().is_empty());
    let first = pending_task(store, &acme, &team, &acme.admin, "1", T0 + 3)
        .await
        .task
        .id;
    let second = pending_task(store, &acme, &any, &acme.admin, "2", T0 + 1)
        .await
        .task
        .id;
    let third = pending_task(store, &acme, &team, &acme.admin, "3", T0 + 2)
        .await
        .task
        .id;
    let approved_id = pending_task(store, &acme, &any, &acme.admin, "4", T0)
        .await
        .task
        .id;
    let rejected_id = pending_task(store, &acme, &any, &acme.admin, "5", T0)
        .await
        .task
        .id;
    pending_task(store, &other, &ot, &other.admin, "6", T0).await;
    let plain = create_target(store, &acme, "plain", None).await;
    ready_task(store, &acme, &plain, "7", T0).await;
    review_as(store, &acme, third, &approval(&ann), T0 + 4).await;
    review_as(store, &acme, approved_id, &approval(&ann), T0 + 4).await;
    review_as(store, &acme, rejected_id, &rejection(&ann, "no"), T0 + 4).await;

    let inbox = store.tasks_in_review(acme.id).await.unwrap();
    let ids: Vec<i64> = inbox.iter().map(|(rec, _)| rec.task.id).collect();
    assert_eq!(
        ids,
        vec![first, second, third],
        "created first, listed first"
    );
    for (rec, row) in &inbox {
        assert_eq!(rec.task.status, TaskStatus::PendingReview);
        assert_eq!(rec.org_id, acme.id);
        let target = if rec.task.target == "db" { &team } else { &any };
        assert_eq!(row.sha256, digest_of(target, &rec.task.script));
    }
    assert_eq!(inbox[0].1.rule.mode, ReviewMode::Team);
    assert_eq!(inbox[1].1.rule.mode, ReviewMode::Anyone);
    assert!(inbox[0].1.entries.is_empty());
    assert_eq!(
        reviewers_of(&inbox[2].1),
        vec![(ann.email.as_str(), "approved")]
    );
    assert_eq!(store.tasks_in_review(other.id).await.unwrap().len(), 1);
}

/// Tasks each raced by reviewers (more rounds, more interleavings).
const RACED_TASKS: usize = 12;

/// Reviewers of one task at once; the outcomes and the stored task must agree.
async fn race(
    store: &Arc<dyn Store>,
    org_id: i64,
    id: i64,
    reviews: Vec<NewReview>,
) -> Vec<ReviewOutcome> {
    let barrier = Arc::new(Barrier::new(reviews.len()));
    let mut handles = Vec::new();
    for r in reviews {
        let (store, barrier) = (Arc::clone(store), Arc::clone(&barrier));
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .record_review(org_id, id, &r, T0 + 10)
                .await
                .expect("record review")
                .outcome
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("reviewer"));
    }
    out
}

pub async fn concurrent_reviews_make_exactly_one_transition(store: &Arc<dyn Store>) {
    let acme = org(&**store, "acme").await;
    let dba = user(&**store, &acme, "dba@acme.example", &["dba"]).await;
    let sec = user(&**store, &acme, "sec@acme.example", &["sec"]).await;
    let team = reviewed_target(
        &**store,
        &acme,
        "db",
        ReviewMode::Team,
        &["dba", "sec"],
        None,
    )
    .await;
    let any = reviewed_target(&**store, &acme, "any", ReviewMode::Anyone, &[], None).await;
    for n in 0..RACED_TASKS {
        // Two approvals that together meet the rule: both are kept, one moves the task.
        let id = pending_task(&**store, &acme, &team, &acme.admin, &n.to_string(), T0)
            .await
            .task
            .id;
        let out = race(store, acme.id, id, vec![approval(&dba), approval(&sec)]).await;
        let now: Vec<bool> = out.iter().map(|o| approved(o).1).collect();
        assert_eq!(
            now.iter().filter(|b| **b).count(),
            1,
            "one approval met the rule: {out:?}"
        );
        let row = review_row(&**store, &acme, id).await;
        assert_eq!(row.entries.len(), 2, "no approval lost");
        assert_eq!(row.approved_at_ms, Some(T0 + 10));
        assert_eq!(
            task(&**store, &acme, id).await.task.status,
            TaskStatus::Approved
        );

        // Two approvals where either is enough: one moves the task, the other finds it
        // approved and is not recorded.
        let id = pending_task(&**store, &acme, &any, &acme.admin, &n.to_string(), T0)
            .await
            .task
            .id;
        let out = race(store, acme.id, id, vec![approval(&dba), approval(&sec)]).await;
        let winners = out
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    ReviewOutcome::Approved {
                        approved_now: true,
                        ..
                    }
                )
            })
            .count();
        let late = out
            .iter()
            .filter(|o| matches!(o, ReviewOutcome::NotPending(TaskStatus::Approved)))
            .count();
        assert_eq!((winners, late), (1, 1), "{out:?}");
        assert_eq!(review_row(&**store, &acme, id).await.entries.len(), 1);

        // An approval and a rejection: the first decides, the stored task agrees.
        let id = pending_task(&**store, &acme, &any, &acme.admin, &n.to_string(), T0)
            .await
            .task
            .id;
        let out = race(
            store,
            acme.id,
            id,
            vec![approval(&dba), rejection(&sec, "no")],
        )
        .await;
        let status = task(&**store, &acme, id).await.task.status;
        match (&out[0], &out[1]) {
            (
                ReviewOutcome::Approved {
                    approved_now: true, ..
                },
                ReviewOutcome::NotPending(s),
            ) => {
                assert_eq!((*s, status), (TaskStatus::Approved, TaskStatus::Approved))
            }
            (ReviewOutcome::NotPending(s), ReviewOutcome::Rejected { .. }) => {
                assert_eq!((*s, status), (TaskStatus::Rejected, TaskStatus::Rejected))
            }
            other => panic!("approve and reject at once: {other:?}"),
        }
        assert_eq!(review_row(&**store, &acme, id).await.entries.len(), 1);

        // The same reviewer twice at once is recorded once.
        let two = reviewed_target(
            &**store,
            &acme,
            &format!("two{n}"),
            ReviewMode::Anyone,
            &[],
            Some(2),
        )
        .await;
        let id = pending_task(&**store, &acme, &two, &acme.admin, "x", T0)
            .await
            .task
            .id;
        let out = race(store, acme.id, id, vec![approval(&dba), approval(&dba)]).await;
        let refused = out
            .iter()
            .filter(|o| matches!(o, ReviewOutcome::Refused(Refusal::AlreadyReviewed)))
            .count();
        assert_eq!(refused, 1, "{out:?}");
        assert_eq!(review_row(&**store, &acme, id).await.entries.len(), 1);
        assert_eq!(
            task(&**store, &acme, id).await.task.status,
            TaskStatus::PendingReview
        );
    }
}

pub async fn an_approval_racing_its_expiry_has_one_outcome(store: &Arc<dyn Store>) {
    let acme = org(&**store, "acme").await;
    let ann = user(&**store, &acme, "ann@acme.example", &[]).await;
    let any = reviewed_target(&**store, &acme, "any", ReviewMode::Anyone, &[], None).await;
    let review_ms = 1000 * REVIEW_TTL_SECS as i64;
    for n in 0..RACED_TASKS as i64 {
        let id = pending_task(&**store, &acme, &any, &acme.admin, "x", T0 + n)
            .await
            .task
            .id;
        let now = T0 + n + review_ms;
        let barrier = Arc::new(Barrier::new(2));
        let expiry = {
            let (store, barrier) = (Arc::clone(store), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                store.expire_reviews(now).await.expect("expire")
            })
        };
        let approval_task = {
            let (store, barrier, ann) = (Arc::clone(store), Arc::clone(&barrier), ann.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .record_review(acme.id, id, &approval(&ann), now)
                    .await
                    .expect("record review")
                    .outcome
            })
        };
        let expired = expiry.await.unwrap();
        let outcome = approval_task.await.unwrap();
        let status = task(&**store, &acme, id).await.task.status;
        let expired_ids: Vec<i64> = expired.iter().map(|e| e.task_id).collect();
        match outcome {
            ReviewOutcome::Approved {
                approved_now: true, ..
            } => {
                assert!(expired_ids.is_empty(), "approved and expired: {expired:?}");
                assert_eq!(status, TaskStatus::Approved);
            }
            ReviewOutcome::NotPending(TaskStatus::Failure) => {
                assert_eq!(expired_ids, vec![id]);
                assert_eq!(status, TaskStatus::Failure);
            }
            other => panic!("an approval at the moment of its expiry: {other:?}"),
        }
    }
}
