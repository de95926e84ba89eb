//! The task lifecycle: create, list, claim, start, finish, kill, offer expiry, proofs.

use super::*;
use runops_proto::FailureReason;
use runops_proto::api::TaskListQuery;

pub async fn a_task_snapshots_its_target_and_is_found_in_its_org_only(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let mut t = target("orders", Some("prod"));
    t.kind = "postgres".into();
    t.secret_provider = Some("env-var".into());
    t.secret_path = Some("ORDERS".into());
    t.secret_mapping = Some(
        serde_json::json!({"PG_PASSWORD": "pw"})
            .as_object()
            .unwrap()
            .clone(),
    );
    t.redact = "none".into();
    t.custom_command = Some("psql -X".into());
    t.timeout = 77;
    t.redact_keys = vec!["PG_HOST".into()];
    t.public_keys = vec!["PG_DATABASE".into()];
    store.create_target(acme.id, &t).await.unwrap();
    let mut new = new_task(&t, &acme.admin, "select 1", TaskStatus::Ready);
    new.message = Some("check the orders".into());
    let rec = store.create_task(acme.id, &new, T0 + 10).await.unwrap();
    let task = &rec.task;
    assert_eq!(task.target, "orders");
    assert_eq!(task.kind, "postgres");
    assert_eq!(task.script, "select 1");
    assert_eq!(task.message.as_deref(), Some("check the orders"));
    assert_eq!(task.status, TaskStatus::Ready);
    assert_eq!(task.user, acme.admin.email);
    assert_eq!(task.created_at, at(T0 + 10));
    assert_eq!(task.exit_code, None);
    assert_eq!(task.failure_reason, None);
    assert_eq!(task.agent, None);
    assert_eq!(task.started_at, None);
    assert_eq!(task.finished_at, None);
    assert_eq!(task.log_size, 0);
    assert_eq!(task.task_logs, format!("/v1/tasks/{}/logs", task.id));
    assert_eq!(rec.org_id, acme.id);
    assert_eq!(rec.tags.as_deref(), Some("prod"));
    assert_eq!(rec.session_id, None);
    assert!(!rec.cancel_requested);
    assert_eq!((rec.log_received, rec.log_kept), (0, 0));

    assert_eq!(task_of(store, &acme, task.id).await, rec.task);
    assert!(store.get_task(other.id, task.id).await.unwrap().is_none());
    assert!(
        store
            .get_task(acme.id, task.id + 1000)
            .await
            .unwrap()
            .is_none()
    );

    // Editing or deleting the target later does not change what the task runs.
    let mut edited = target("orders", Some("prod"));
    edited.custom_command = Some("rm -rf /".into());
    edited.updated_at = at(T0 + 20);
    store.update_target(acme.id, &edited).await.unwrap();
    store.delete_target(acme.id, "orders").await.unwrap();
    let s = session(store, &acme, Some("prod"), "s1").await;
    let offers = claim(store, &s, 10, T0 + 30).await;
    assert_eq!(offers.len(), 1);
    let o = &offers[0];
    assert_eq!(o.task_id, task.id);
    assert_eq!(o.target, "orders");
    assert_eq!(o.kind, "postgres");
    assert_eq!(o.script, "select 1");
    assert_eq!(o.message.as_deref(), Some("check the orders"));
    assert_eq!(o.secret_provider.as_deref(), Some("env-var"));
    assert_eq!(o.secret_path.as_deref(), Some("ORDERS"));
    let mapping: serde_json::Value =
        serde_json::from_str(o.secret_mapping.as_deref().expect("mapping")).unwrap();
    assert_eq!(mapping, serde_json::json!({"PG_PASSWORD": "pw"}));
    assert_eq!(o.redact, "none");
    assert_eq!(o.custom_command.as_deref(), Some("psql -X"));
    assert_eq!(o.timeout_secs, 77);
    assert_eq!(o.redact_keys, vec!["PG_HOST"]);
    assert_eq!(o.public_keys, vec!["PG_DATABASE"]);
    assert_eq!(o.user_email, acme.admin.email);
    assert_eq!(o.user_groups, acme.admin.groups);
    assert_eq!(o.created_at_ms, Some(T0 + 10));
    assert_eq!(o.start_deadline_ms, OFFER_MS as u64);
    assert_eq!(o.user_jwt, None);
    assert_eq!(o.config, None);
}

async fn task_of(store: &dyn Store, org: &Org, id: i64) -> runops_proto::api::Task {
    task(store, org, id).await.task
}

fn ids(tasks: &[runops_proto::api::Task]) -> Vec<i64> {
    tasks.iter().map(|t| t.id).collect()
}

pub async fn task_list_filters_and_pages_newest_first(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let bob = store
        .create_user(
            acme.id,
            &NewUser {
                name: "Bob".into(),
                email: "bob@acme.example".into(),
                groups: Vec::new(),
                role: runops_proto::Role::User,
            },
            T0,
        )
        .await
        .unwrap();
    let a = create_target(store, &acme, "a", None).await;
    let b = create_target(store, &acme, "b", None).await;
    let oa = create_target(store, &other, "a", None).await;
    let t1 = ready_task(store, &acme, &a, "1", T0 + 1).await.task.id;
    let t2 = store
        .create_task(acme.id, &new_task(&b, &bob, "2", TaskStatus::Ready), T0 + 2)
        .await
        .unwrap()
        .task
        .id;
    let t3 = ready_task(store, &acme, &a, "3", T0 + 3).await.task.id;
    let t4 = store
        .create_task(
            acme.id,
            &new_task(&a, &bob, "4", TaskStatus::Created),
            T0 + 4,
        )
        .await
        .unwrap()
        .task
        .id;
    ready_task(store, &other, &oa, "other", T0 + 5).await;

    let list = |q: TaskListQuery| async move { ids(&store.list_tasks(acme.id, &q).await.unwrap()) };
    assert_eq!(list(TaskListQuery::default()).await, vec![t4, t3, t2, t1]);
    assert_eq!(
        list(TaskListQuery {
            status: Some(TaskStatus::Ready),
            ..Default::default()
        })
        .await,
        vec![t3, t2, t1]
    );
    assert_eq!(
        list(TaskListQuery {
            target: Some("a".into()),
            ..Default::default()
        })
        .await,
        vec![t4, t3, t1]
    );
    assert_eq!(
        list(TaskListQuery {
            user: Some("bob@acme.example".into()),
            ..Default::default()
        })
        .await,
        vec![t4, t2]
    );
    assert_eq!(
        list(TaskListQuery {
            since: Some(at(T0 + 3)),
            ..Default::default()
        })
        .await,
        vec![t4, t3],
        "since is inclusive"
    );
    assert_eq!(
        list(TaskListQuery {
            limit: Some(2),
            ..Default::default()
        })
        .await,
        vec![t4, t3]
    );
    assert_eq!(
        list(TaskListQuery {
            limit: Some(2),
            before: Some(t3),
            ..Default::default()
        })
        .await,
        vec![t2, t1],
        "the next page"
    );
    assert_eq!(
        list(TaskListQuery {
            limit: Some(0),
            ..Default::default()
        })
        .await,
        vec![t4],
        "a limit below 1 lists one"
    );
    assert_eq!(
        list(TaskListQuery {
            status: Some(TaskStatus::Ready),
            target: Some("a".into()),
            user: Some(acme.admin.email.clone()),
            ..Default::default()
        })
        .await,
        vec![t3, t1],
        "filters combine"
    );
    assert_eq!(
        list(TaskListQuery {
            target: Some("missing".into()),
            ..Default::default()
        })
        .await,
        Vec::<i64>::new()
    );
    assert_eq!(
        store
            .list_tasks(other.id, &TaskListQuery::default())
            .await
            .unwrap()
            .len(),
        1,
        "each org sees its own tasks"
    );
}

pub async fn claim_offers_the_oldest_ready_tasks_of_the_sessions_org_and_tags(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let prod = create_target(store, &acme, "prod", Some("prod")).await;
    let untagged = create_target(store, &acme, "plain", None).await;
    let other_prod = create_target(store, &other, "prod", Some("prod")).await;
    let p1 = ready_task(store, &acme, &prod, "p1", T0).await.task.id;
    let u1 = ready_task(store, &acme, &untagged, "u1", T0).await.task.id;
    let p2 = ready_task(store, &acme, &prod, "p2", T0).await.task.id;
    store
        .create_task(
            acme.id,
            &new_task(&prod, &acme.admin, "waits", TaskStatus::Created),
            T0,
        )
        .await
        .unwrap();
    let p3 = ready_task(store, &acme, &prod, "p3", T0).await.task.id;
    let o1 = ready_task(store, &other, &other_prod, "o1", T0)
        .await
        .task
        .id;

    let s = session(store, &acme, Some("prod"), "s-prod").await;
    assert!(
        claim(store, &s, 0, T0 + 1).await.is_empty(),
        "limit 0 claims nothing"
    );
    assert_eq!(task_ids(&claim(store, &s, 2, T0 + 1).await), vec![p1, p2]);
    let rec = task(store, &acme, p1).await;
    assert_eq!(rec.task.status, TaskStatus::Dispatched);
    assert_eq!(rec.session_id.as_deref(), Some("s-prod"));
    assert_eq!(rec.task.agent.as_deref(), Some("host-s-prod"));
    assert_eq!(task_ids(&claim(store, &s, 10, T0 + 2).await), vec![p3]);
    assert!(
        claim(store, &s, 10, T0 + 3).await.is_empty(),
        "nothing else is ready"
    );

    let su = session(store, &acme, None, "s-untagged").await;
    assert_eq!(task_ids(&claim(store, &su, 10, T0 + 4).await), vec![u1]);
    let so = session(store, &other, Some("prod"), "s-other").await;
    assert_eq!(task_ids(&claim(store, &so, 10, T0 + 4).await), vec![o1]);
}

pub async fn start_runs_an_offer_once_for_its_session(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let t = create_target(store, &acme, "t", None).await;
    let id = ready_task(store, &acme, &t, "true", T0).await.task.id;
    let s = session(store, &acme, None, "s1").await;
    let thief = session(store, &acme, Some("x"), "s2").await;
    claim(store, &s, 1, T0 + 1).await;

    let r = store
        .start_task(acme.id, id, &thief.id, T0 + 2)
        .await
        .unwrap()
        .outcome;
    assert!(
        matches!(r, StartOutcome::OfferExpired),
        "another session's offer: {r:?}"
    );
    let r = store
        .start_task(other.id, id, &s.id, T0 + 2)
        .await
        .unwrap()
        .outcome;
    assert!(matches!(r, StartOutcome::NotFound), "another org: {r:?}");
    let r = store
        .start_task(acme.id, id + 99, &s.id, T0 + 2)
        .await
        .unwrap()
        .outcome;
    assert!(matches!(r, StartOutcome::NotFound), "{r:?}");

    let StartOutcome::Started(rec) = store
        .start_task(acme.id, id, &s.id, T0 + 3)
        .await
        .unwrap()
        .outcome
    else {
        panic!("the offered session starts it");
    };
    assert_eq!(rec.task.status, TaskStatus::Running);
    assert_eq!(rec.task.started_at, Some(at(T0 + 3)));
    assert_eq!(rec.session_id.as_deref(), Some("s1"));
    // A resent start (the first answer was lost) reports the same run.
    let StartOutcome::Started(again) = store
        .start_task(acme.id, id, &s.id, T0 + 9)
        .await
        .unwrap()
        .outcome
    else {
        panic!("a resent start is answered as started");
    };
    assert_eq!(
        again.task.started_at,
        Some(at(T0 + 3)),
        "the task runs once"
    );
    let r = store
        .start_task(acme.id, id, &thief.id, T0 + 9)
        .await
        .unwrap()
        .outcome;
    assert!(matches!(r, StartOutcome::OfferExpired), "{r:?}");
    // The offer deadline no longer matters once it runs.
    let StartOutcome::Started(_) = store
        .start_task(acme.id, id, &s.id, T0 + 10 * OFFER_MS)
        .await
        .unwrap()
        .outcome
    else {
        panic!("still running");
    };
    assert!(
        store
            .requeue_expired_offers(T0 + 10 * OFFER_MS)
            .await
            .unwrap()
            .is_empty()
    );

    store
        .finish_task(acme.id, id, &success(&s, 0), T0 + 20)
        .await
        .unwrap();
    let r = store
        .start_task(acme.id, id, &s.id, T0 + 21)
        .await
        .unwrap()
        .outcome;
    assert!(
        matches!(r, StartOutcome::Ended(TaskStatus::Success)),
        "{r:?}"
    );
}

pub async fn start_after_the_offer_deadline_requeues_the_task(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let t = create_target(store, &acme, "t", None).await;
    let id = ready_task(store, &acme, &t, "true", T0).await.task.id;
    let s = session(store, &acme, None, "s1").await;
    claim(store, &s, 1, T0).await;
    // At the deadline it may still start...
    let exactly = store
        .start_task(acme.id, id, &s.id, T0 + OFFER_MS)
        .await
        .unwrap()
        .outcome;
    assert!(matches!(exactly, StartOutcome::Started(_)), "{exactly:?}");

    let id2 = ready_task(store, &acme, &t, "true", T0).await.task.id;
    claim(store, &s, 1, T0).await;
    // ...one millisecond later it goes back to the queue.
    let late = store
        .start_task(acme.id, id2, &s.id, T0 + OFFER_MS + 1)
        .await
        .unwrap()
        .outcome;
    assert!(matches!(late, StartOutcome::OfferExpired), "{late:?}");
    let rec = task(store, &acme, id2).await;
    assert_eq!(rec.task.status, TaskStatus::Ready);
    assert_eq!(rec.session_id, None);
    assert_eq!(rec.task.agent, None);
    // And it is offered again, once.
    assert_eq!(
        task_ids(&claim(store, &s, 10, T0 + OFFER_MS + 2).await),
        vec![id2]
    );
}

pub async fn expired_offers_go_back_to_ready(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let t = create_target(store, &acme, "t", Some("prod")).await;
    let ot = create_target(store, &other, "t", None).await;
    let early = ready_task(store, &acme, &t, "early", T0).await.task.id;
    let s = session(store, &acme, Some("prod"), "s1").await;
    claim(store, &s, 10, T0).await;
    let late = ready_task(store, &acme, &t, "late", T0).await.task.id;
    claim(store, &s, 10, T0 + 1000).await;
    let o = ready_task(store, &other, &ot, "other", T0).await.task.id;
    let so = session(store, &other, None, "s-other").await;
    claim(store, &so, 10, T0).await;

    assert!(
        store
            .requeue_expired_offers(T0 + OFFER_MS)
            .await
            .unwrap()
            .is_empty(),
        "a deadline that is now has not passed"
    );
    let mut requeued = store
        .requeue_expired_offers(T0 + OFFER_MS + 1)
        .await
        .unwrap();
    requeued.sort_by_key(|r| r.task_id);
    assert_eq!(
        requeued
            .iter()
            .map(|r| (r.task_id, r.org_id, r.tags.clone()))
            .collect::<Vec<_>>(),
        vec![
            (early, acme.id, Some("prod".to_string())),
            (o, other.id, None)
        ]
    );
    assert_eq!(
        task(store, &acme, early).await.task.status,
        TaskStatus::Ready
    );
    assert_eq!(task(store, &acme, early).await.session_id, None);
    assert_eq!(
        task(store, &acme, late).await.task.status,
        TaskStatus::Dispatched
    );
    assert!(
        store
            .requeue_expired_offers(T0 + OFFER_MS + 1)
            .await
            .unwrap()
            .is_empty(),
        "each expiry is reported once"
    );
}

pub async fn finish_checks_the_log_and_is_idempotent(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let t = create_target(store, &acme, "t", None).await;
    let id = ready_task(store, &acme, &t, "echo hi", T0).await.task.id;
    let s = session(store, &acme, None, "s1").await;
    let thief = session(store, &acme, Some("x"), "s2").await;
    run_task(store, &s, id, T0 + 1).await;
    store
        .append_log(acme.id, id, &s.id, 0, b"hello", NO_CAP)
        .await
        .unwrap();

    let r = store
        .finish_task(acme.id, id, &success(&s, 8), T0 + 2)
        .await
        .unwrap()
        .outcome;
    assert!(
        matches!(r, FinishOutcome::LogIncomplete { stored: 5 }),
        "the agent must resend from 5: {r:?}"
    );
    assert_eq!(
        task(store, &acme, id).await.task.status,
        TaskStatus::Running
    );
    let r = store
        .finish_task(acme.id, id, &success(&thief, 5), T0 + 2)
        .await
        .unwrap()
        .outcome;
    assert!(matches!(r, FinishOutcome::NotYours), "{r:?}");
    let r = store
        .finish_task(other.id, id, &success(&s, 5), T0 + 2)
        .await
        .unwrap()
        .outcome;
    assert!(matches!(r, FinishOutcome::NotFound), "{r:?}");

    store
        .append_log(acme.id, id, &s.id, 5, b"!!!", NO_CAP)
        .await
        .unwrap();
    let FinishOutcome::Finished(rec) = store
        .finish_task(acme.id, id, &success(&s, 8), T0 + 3)
        .await
        .unwrap()
        .outcome
    else {
        panic!("a complete log finishes");
    };
    assert_eq!(rec.task.status, TaskStatus::Success);
    assert_eq!(rec.task.exit_code, Some(0));
    assert_eq!(rec.task.failure_reason, None);
    assert_eq!(rec.task.finished_at, Some(at(T0 + 3)));
    assert_eq!(rec.task.elapsed_ms, Some(1234), "the agent's measure");
    assert_eq!(rec.task.log_size, 8);
    assert_eq!(rec.task.log_location.as_deref(), Some("server"));
    assert!(rec.task.redacted);
    assert_eq!(task_of(store, &acme, id).await, rec.task);

    // A resent finish (the first answer was lost) is answered the same.
    let FinishOutcome::AlreadyFinished(again) = store
        .finish_task(acme.id, id, &success(&s, 8), T0 + 9)
        .await
        .unwrap()
        .outcome
    else {
        panic!("a resent finish is idempotent");
    };
    assert_eq!(again.task.finished_at, Some(at(T0 + 3)), "recorded once");
    let mut failed = success(&s, 8);
    failed.result.status = TaskStatus::Failure;
    failed.result.failure_reason = Some(FailureReason::ExitCode);
    let r = store
        .finish_task(acme.id, id, &failed, T0 + 9)
        .await
        .unwrap()
        .outcome;
    assert!(
        matches!(r, FinishOutcome::Ended(TaskStatus::Success)),
        "a different result cannot overwrite the first: {r:?}"
    );
    let r = store
        .finish_task(acme.id, id, &success(&thief, 8), T0 + 9)
        .await
        .unwrap()
        .outcome;
    assert!(
        matches!(r, FinishOutcome::Ended(TaskStatus::Success)),
        "{r:?}"
    );
    assert_eq!(
        task(store, &acme, id).await.task.status,
        TaskStatus::Success
    );
}

pub async fn finish_of_a_failure_keeps_its_reason_or_says_agent_error(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let t = create_target(store, &acme, "t", None).await;
    let s = session(store, &acme, None, "s1").await;

    let id = ready_task(store, &acme, &t, "exit 3", T0).await.task.id;
    run_task(store, &s, id, T0).await;
    let mut req = success(&s, 0);
    req.result.status = TaskStatus::Failure;
    req.result.exit_code = Some(3);
    req.result.failure_reason = Some(FailureReason::ExitCode);
    req.result.failure_message = Some("exited with 3".into());
    let FinishOutcome::Finished(rec) = store
        .finish_task(acme.id, id, &req, T0 + 1)
        .await
        .unwrap()
        .outcome
    else {
        panic!("finished");
    };
    assert_eq!(rec.task.status, TaskStatus::Failure);
    assert_eq!(rec.task.exit_code, Some(3));
    assert_eq!(rec.task.failure_reason, Some(FailureReason::ExitCode));
    assert_eq!(rec.task.failure_message.as_deref(), Some("exited with 3"));
    let r = store
        .finish_task(acme.id, id, &req, T0 + 2)
        .await
        .unwrap()
        .outcome;
    assert!(matches!(r, FinishOutcome::AlreadyFinished(_)), "{r:?}");
    let mut timeout = req.clone();
    timeout.result.failure_reason = Some(FailureReason::Timeout);
    let r = store
        .finish_task(acme.id, id, &timeout, T0 + 2)
        .await
        .unwrap()
        .outcome;
    assert!(
        matches!(r, FinishOutcome::Ended(TaskStatus::Failure)),
        "another reason is another result: {r:?}"
    );

    let id = ready_task(store, &acme, &t, "?", T0).await.task.id;
    run_task(store, &s, id, T0).await;
    let mut req = success(&s, 0);
    req.result.status = TaskStatus::Failure;
    req.result.exit_code = None;
    let FinishOutcome::Finished(rec) = store
        .finish_task(acme.id, id, &req, T0 + 1)
        .await
        .unwrap()
        .outcome
    else {
        panic!("finished");
    };
    assert_eq!(rec.task.failure_reason, Some(FailureReason::AgentError));

    // A success carries no failure reason or message, whatever the agent sent.
    let id = ready_task(store, &acme, &t, "true", T0).await.task.id;
    run_task(store, &s, id, T0).await;
    let mut req = success(&s, 0);
    req.result.failure_reason = Some(FailureReason::Timeout);
    req.result.failure_message = Some("noise".into());
    let FinishOutcome::Finished(rec) = store
        .finish_task(acme.id, id, &req, T0 + 1)
        .await
        .unwrap()
        .outcome
    else {
        panic!("finished");
    };
    assert_eq!(rec.task.failure_reason, None);
    assert_eq!(rec.task.failure_message, None);
}

pub async fn finish_with_the_log_elsewhere_skips_the_log_check(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let t = create_target(store, &acme, "t", None).await;
    let s = session(store, &acme, None, "s1").await;
    let id = ready_task(store, &acme, &t, "true", T0).await.task.id;
    run_task(store, &s, id, T0).await;
    let mut req = success(&s, 1_000_000);
    req.result.log_location = Some("s3://bucket/task.log".into());
    let FinishOutcome::Finished(rec) = store
        .finish_task(acme.id, id, &req, T0 + 1)
        .await
        .unwrap()
        .outcome
    else {
        panic!("a log in the user's bucket is not checked");
    };
    assert_eq!(rec.task.log_size, 1_000_000);
    assert_eq!(
        rec.task.log_location.as_deref(),
        Some("s3://bucket/task.log")
    );

    // An offer may finish without a start (the agent refused it: bad config...).
    let id = ready_task(store, &acme, &t, "true", T0).await.task.id;
    claim(store, &s, 10, T0).await;
    let mut req = success(&s, 0);
    req.result.status = TaskStatus::Failure;
    req.result.failure_reason = Some(FailureReason::InvalidConfig);
    let FinishOutcome::Finished(rec) = store
        .finish_task(acme.id, id, &req, T0 + 1)
        .await
        .unwrap()
        .outcome
    else {
        panic!("a dispatched task may finish");
    };
    assert_eq!(rec.task.failure_reason, Some(FailureReason::InvalidConfig));
    assert!(
        store
            .requeue_expired_offers(T0 + 10 * OFFER_MS)
            .await
            .unwrap()
            .is_empty(),
        "a finished offer never expires"
    );

    // A task that is only ready was never offered to anyone.
    let id = ready_task(store, &acme, &t, "true", T0).await.task.id;
    let r = store
        .finish_task(acme.id, id, &success(&s, 0), T0)
        .await
        .unwrap()
        .outcome;
    assert!(matches!(r, FinishOutcome::NotYours), "{r:?}");
}

pub async fn kill_cancels_an_unstarted_task_and_flags_a_running_one(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let t = create_target(store, &acme, "t", None).await;
    let s = session(store, &acme, None, "s1").await;

    let ready = ready_task(store, &acme, &t, "ready", T0).await.task.id;
    let r = store
        .kill_task(other.id, ready, "x@other.example", T0)
        .await
        .unwrap()
        .outcome;
    assert!(matches!(r, KillOutcome::NotFound), "another org: {r:?}");
    let KillOutcome::CancelledBeforeStart(rec) = store
        .kill_task(acme.id, ready, "ann@acme.example", T0 + 1)
        .await
        .unwrap()
        .outcome
    else {
        panic!("a ready task is cancelled at once");
    };
    assert_eq!(rec.task.status, TaskStatus::Failure);
    assert_eq!(rec.task.failure_reason, Some(FailureReason::Cancelled));
    assert!(
        rec.task
            .failure_message
            .as_deref()
            .is_some_and(|m| m.contains("ann@acme.example")),
        "{:?}",
        rec.task.failure_message
    );
    assert_eq!(rec.task.finished_at, Some(at(T0 + 1)));
    assert!(
        claim(store, &s, 10, T0 + 2).await.is_empty(),
        "never offered"
    );
    let r = store
        .kill_task(acme.id, ready, "ann@acme.example", T0 + 3)
        .await
        .unwrap()
        .outcome;
    assert!(
        matches!(r, KillOutcome::AlreadyEnded(TaskStatus::Failure)),
        "{r:?}"
    );

    // An offer not yet started is cancelled too; its start then finds it ended.
    let offered = ready_task(store, &acme, &t, "offered", T0).await.task.id;
    claim(store, &s, 10, T0).await;
    let r = store
        .kill_task(acme.id, offered, "ann@acme.example", T0 + 1)
        .await
        .unwrap()
        .outcome;
    assert!(matches!(r, KillOutcome::CancelledBeforeStart(_)), "{r:?}");
    let r = store
        .start_task(acme.id, offered, &s.id, T0 + 2)
        .await
        .unwrap()
        .outcome;
    assert!(
        matches!(r, StartOutcome::Ended(TaskStatus::Failure)),
        "{r:?}"
    );

    let running = ready_task(store, &acme, &t, "sleep", T0).await.task.id;
    run_task(store, &s, running, T0).await;
    let KillOutcome::CancelRequested { task, session_id } = store
        .kill_task(acme.id, running, "ann@acme.example", T0 + 1)
        .await
        .unwrap()
        .outcome
    else {
        panic!("a running task is asked to stop");
    };
    assert_eq!(session_id.as_deref(), Some("s1"));
    assert_eq!(
        task.task.status,
        TaskStatus::Running,
        "it runs until its agent stops it"
    );
    assert!(task.cancel_requested);
    let r = store
        .kill_task(acme.id, running, "ann@acme.example", T0 + 2)
        .await
        .unwrap()
        .outcome;
    assert!(matches!(r, KillOutcome::CancelRequested { .. }), "{r:?}");
    // The agent reports how it ended.
    let mut req = success(&s, 0);
    req.result.status = TaskStatus::Failure;
    req.result.failure_reason = Some(FailureReason::Cancelled);
    let r = store
        .finish_task(acme.id, running, &req, T0 + 3)
        .await
        .unwrap()
        .outcome;
    assert!(matches!(r, FinishOutcome::Finished(_)), "{r:?}");
    let r = store
        .kill_task(acme.id, running + 99, "ann@acme.example", T0)
        .await
        .unwrap()
        .outcome;
    assert!(matches!(r, KillOutcome::NotFound), "{r:?}");
}

pub async fn cancels_for_names_cancelled_and_ended_tasks(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let t = create_target(store, &acme, "t", None).await;
    let ot = create_target(store, &other, "t", None).await;
    let s = session(store, &acme, None, "s1").await;
    let so = session(store, &other, None, "s-other").await;
    let a = ready_task(store, &acme, &t, "a", T0).await.task.id;
    run_task(store, &s, a, T0).await;
    let b = ready_task(store, &acme, &t, "b", T0).await.task.id;
    run_task(store, &s, b, T0).await;
    let c = ready_task(store, &acme, &t, "c", T0).await.task.id;
    run_task(store, &s, c, T0).await;
    let o = ready_task(store, &other, &ot, "o", T0).await.task.id;
    run_task(store, &so, o, T0).await;

    assert!(
        store
            .cancels_for(&s.id, acme.id, &[a, b, c])
            .await
            .unwrap()
            .is_empty()
    );
    store
        .kill_task(acme.id, b, "ann@acme.example", T0 + 1)
        .await
        .unwrap();
    store
        .kill_task(other.id, o, "x@other.example", T0 + 1)
        .await
        .unwrap();
    assert_eq!(
        store.cancels_for(&s.id, acme.id, &[a, b, c]).await.unwrap(),
        vec![b]
    );
    assert_eq!(
        store.cancels_for(&s.id, acme.id, &[]).await.unwrap(),
        vec![b],
        "a cancel is named even when the agent does not list the task"
    );
    // A task the agent still runs but that ended on the server (a lost session's
    // task, a finish the agent did not see answered) must stop too.
    store
        .finish_task(acme.id, c, &success(&s, 0), T0 + 2)
        .await
        .unwrap();
    assert_eq!(
        store.cancels_for(&s.id, acme.id, &[a, b, c]).await.unwrap(),
        vec![b, c]
    );
    assert_eq!(
        store
            .cancels_for(&s.id, acme.id, &[a, b, c, o])
            .await
            .unwrap(),
        vec![b, c],
        "another org's task is not named"
    );
    assert_eq!(
        store.cancels_for(&so.id, other.id, &[]).await.unwrap(),
        vec![o]
    );
}

pub async fn a_claim_says_which_offers_need_a_token_or_a_config(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let plain = create_target(store, &acme, "plain", None).await;
    let sealed = create_target(store, &acme, "sealed", None).await;
    let keys = vec!["VAULT_TOKEN".to_string()];
    assert!(
        store
            .set_target_config(acme.id, "sealed", Some((b"sealed bytes", &keys)))
            .await
            .unwrap()
    );
    let s = session(store, &acme, None, "s1").await;
    let a = ready_task(store, &acme, &plain, "a", T0).await.task.id;
    let b = ready_task(store, &acme, &sealed, "b", T0).await.task.id;
    let mut new = new_task(&plain, &acme.admin, "c", TaskStatus::Ready);
    new.created_with_jwt = true;
    let c = store.create_task(acme.id, &new, T0).await.unwrap().task.id;

    let claimed = store
        .claim_tasks(&s, 10, T0 + 1, T0 + 1 + OFFER_MS)
        .await
        .expect("claim");
    let flags: Vec<(i64, bool, bool)> = claimed
        .iter()
        .map(|c| (c.offer.task_id, c.created_with_jwt, c.target_has_config))
        .collect();
    assert_eq!(
        flags,
        vec![(a, false, false), (b, false, true), (c, true, false)],
        "in id order, each with its own flags"
    );

    // A config removed before the claim is not announced.
    assert!(
        store
            .set_target_config(acme.id, "sealed", None)
            .await
            .unwrap()
    );
    let d = ready_task(store, &acme, &sealed, "d", T0).await.task.id;
    let claimed = store
        .claim_tasks(&s, 10, T0 + 2, T0 + 2 + OFFER_MS)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].offer.task_id, d);
    assert!(!claimed[0].target_has_config && !claimed[0].created_with_jwt);
}

pub async fn jwt_tasks_wait_for_their_proof(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let t = create_target(store, &acme, "t", None).await;
    let s = session(store, &acme, None, "s1").await;
    let mut new = new_task(&t, &acme.admin, "whoami", TaskStatus::Created);
    new.created_with_jwt = true;
    let proven = store.create_task(acme.id, &new, T0).await.unwrap().task.id;
    let waiting = store.create_task(acme.id, &new, T0).await.unwrap().task.id;
    let plain = ready_task(store, &acme, &t, "plain", T0).await.task.id;
    let plain_created = store
        .create_task(
            acme.id,
            &new_task(&t, &acme.admin, "x", TaskStatus::Created),
            T0,
        )
        .await
        .unwrap()
        .task
        .id;

    assert_eq!(
        store
            .tasks_created_with_jwt(acme.id, &[plain, proven, waiting, 9999])
            .await
            .unwrap()
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>(),
        [proven, waiting].into()
    );
    assert!(
        store
            .tasks_created_with_jwt(other.id, &[proven])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .tasks_created_with_jwt(acme.id, &[])
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        task_ids(&claim(store, &s, 10, T0).await),
        vec![plain],
        "created is not ready"
    );
    assert!(
        !store
            .ready_proven_task(other.id, proven)
            .await
            .unwrap()
            .outcome
    );
    assert!(
        !store
            .ready_proven_task(acme.id, plain_created)
            .await
            .unwrap()
            .outcome,
        "only a JWT task waits for a proof"
    );
    assert!(
        store
            .ready_proven_task(acme.id, proven)
            .await
            .unwrap()
            .outcome
    );
    assert!(
        !store
            .ready_proven_task(acme.id, proven)
            .await
            .unwrap()
            .outcome,
        "once"
    );
    assert_eq!(
        task(store, &acme, proven).await.task.status,
        TaskStatus::Ready
    );
    assert_eq!(task_ids(&claim(store, &s, 10, T0).await), vec![proven]);

    // Server start: the JWT was in memory only, so a waiting task can never get it.
    assert_eq!(
        store
            .fail_tasks_awaiting_proof("restarted", T0 + 5)
            .await
            .unwrap(),
        1
    );
    let rec = task(store, &acme, waiting).await;
    assert_eq!(rec.task.status, TaskStatus::Failure);
    assert_eq!(
        rec.task.failure_reason,
        Some(FailureReason::Unauthenticated)
    );
    assert_eq!(rec.task.failure_message.as_deref(), Some("restarted"));
    assert_eq!(rec.task.finished_at, Some(at(T0 + 5)));
    assert_eq!(
        task(store, &acme, plain_created).await.task.status,
        TaskStatus::Created,
        "a task without a JWT is not touched"
    );
    assert_eq!(
        task(store, &acme, proven).await.task.status,
        TaskStatus::Dispatched
    );
    assert_eq!(
        store
            .fail_tasks_awaiting_proof("again", T0 + 6)
            .await
            .unwrap(),
        0
    );
    assert!(
        !store
            .ready_proven_task(acme.id, waiting)
            .await
            .unwrap()
            .outcome
    );

    // A task waiting for its proof can be killed; the proof then finds it over.
    let killed = store.create_task(acme.id, &new, T0).await.unwrap().task.id;
    let r = store
        .kill_task(acme.id, killed, "ann@acme.example", T0 + 7)
        .await
        .unwrap()
        .outcome;
    assert!(matches!(r, KillOutcome::CancelledBeforeStart(_)), "{r:?}");
    assert!(
        !store
            .ready_proven_task(acme.id, killed)
            .await
            .unwrap()
            .outcome
    );
    assert_eq!(
        task(store, &acme, killed).await.task.failure_reason,
        Some(FailureReason::Cancelled)
    );
}

pub async fn fail_unstarted_task_only_ends_tasks_that_did_not_start(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let t = create_target(store, &acme, "t", None).await;
    let s = session(store, &acme, None, "s1").await;
    let fail = |id: i64, org_id: i64| async move {
        store
            .fail_unstarted_task(
                org_id,
                id,
                FailureReason::Unauthenticated,
                "no proof",
                T0 + 7,
            )
            .await
            .unwrap()
            .outcome
    };

    let created = store
        .create_task(
            acme.id,
            &new_task(&t, &acme.admin, "c", TaskStatus::Created),
            T0,
        )
        .await
        .unwrap()
        .task
        .id;
    assert!(!fail(created, other.id).await, "another org's task");
    assert!(fail(created, acme.id).await);
    let rec = task(store, &acme, created).await;
    assert_eq!(rec.task.status, TaskStatus::Failure);
    assert_eq!(
        rec.task.failure_reason,
        Some(FailureReason::Unauthenticated)
    );
    assert_eq!(rec.task.failure_message.as_deref(), Some("no proof"));
    assert_eq!(rec.task.finished_at, Some(at(T0 + 7)));
    assert!(
        !fail(created, acme.id).await,
        "an ended task stays as it ended"
    );

    let dispatched = ready_task(store, &acme, &t, "d", T0).await.task.id;
    claim(store, &s, 10, T0).await;
    assert!(fail(dispatched, acme.id).await);
    let r = store
        .start_task(acme.id, dispatched, &s.id, T0 + 8)
        .await
        .unwrap()
        .outcome;
    assert!(
        matches!(r, StartOutcome::Ended(TaskStatus::Failure)),
        "{r:?}"
    );
    assert!(
        store
            .requeue_expired_offers(T0 + 10 * OFFER_MS)
            .await
            .unwrap()
            .is_empty()
    );

    let running = ready_task(store, &acme, &t, "r", T0).await.task.id;
    run_task(store, &s, running, T0).await;
    assert!(
        !fail(running, acme.id).await,
        "a started task is never failed this way"
    );
    assert_eq!(
        task(store, &acme, running).await.task.status,
        TaskStatus::Running
    );
}

pub async fn metrics_gauges_count_tasks_by_status_and_live_agents(store: &dyn Store) {
    let g = store.metrics_gauges().await.unwrap();
    assert!(g.tasks_by_status.iter().all(|(_, n)| *n == 0));
    assert_eq!(g.live_agents, 0);
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let t = create_target(store, &acme, "t", None).await;
    let ot = create_target(store, &other, "t", None).await;
    let s = session(store, &acme, None, "s1").await;
    let ended = session(store, &acme, Some("x"), "s2").await;
    session(store, &other, None, "s3").await;
    store
        .end_session(&ended.id, &SessionEnd::Disconnected, T0)
        .await
        .unwrap();
    let r = ready_task(store, &acme, &t, "r", T0).await.task.id;
    run_task(store, &s, r, T0).await;
    ready_task(store, &acme, &t, "a", T0).await;
    ready_task(store, &other, &ot, "b", T0).await;

    let g = store.metrics_gauges().await.unwrap();
    let count = |st: TaskStatus| {
        g.tasks_by_status
            .iter()
            .filter(|(s, _)| *s == st)
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    assert_eq!(count(TaskStatus::Ready), 2, "every org counts");
    assert_eq!(count(TaskStatus::Running), 1);
    assert_eq!(count(TaskStatus::Success), 0);
    assert_eq!(g.live_agents, 2);
}

pub async fn a_task_keeps_the_template_it_was_made_from(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let t = create_target(store, &acme, "sh", None).await;
    let plain = store
        .create_task(
            acme.id,
            &new_task(&t, &acme.admin, "echo", TaskStatus::Ready),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(plain.task.template, None, "a typed task has no template");
    let from = runops_proto::templates::TaskTemplate {
        name: "greet".into(),
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        params: [("who", "alice"), ("times", "2")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let mut new = new_task(&t, &acme.admin, "echo hello alice", TaskStatus::Ready);
    new.template = Some(from.clone());
    let rec = store.create_task(acme.id, &new, T0 + 1).await.unwrap();
    assert_eq!(rec.task.template.as_ref(), Some(&from));
    let listed = store
        .list_tasks(acme.id, &TaskListQuery::default())
        .await
        .unwrap();
    assert_eq!(listed[0].template.as_ref(), Some(&from), "listed with it");
    // Running and finishing the task leaves what it was made from as it was.
    let s = session(store, &acme, None, "s1").await;
    let offers = claim(store, &s, 10, T0 + 2).await;
    assert_eq!(task_ids(&offers), vec![plain.task.id, rec.task.id]);
    store
        .start_task(acme.id, rec.task.id, &s.id, T0 + 3)
        .await
        .unwrap();
    store
        .finish_task(acme.id, rec.task.id, &success(&s, 0), T0 + 4)
        .await
        .unwrap();
    let done = task_of(store, &acme, rec.task.id).await;
    assert_eq!(done.status, TaskStatus::Success);
    assert_eq!(done.template, Some(from));
}
