//! Agent sessions: one live per (org, tags), resume, lease, end and restart.

use super::*;
use runops_proto::FailureReason;

pub async fn one_live_session_per_org_and_tags(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let s = session(store, &acme, Some("prod"), "s1").await;
    assert_eq!(s.id, "s1");
    assert_eq!(s.org_id, acme.id);
    assert_eq!(s.org, "acme");
    assert_eq!(s.tags.as_deref(), Some("prod"));
    assert_eq!(s.hostname, "host-s1");
    assert_eq!(s.version, "test");
    assert_eq!(s.instance_id, "instance-s1");
    assert_eq!(s.concurrency, 4);
    assert_eq!(
        (s.connected_at_ms, s.last_seen_ms, s.ended_at_ms),
        (T0, T0, None)
    );

    let dup = NewSession {
        id: "s1-again".into(),
        org_id: acme.id,
        token_id: s.token_id,
        tags: Some("prod".into()),
        hostname: "other-host".into(),
        version: "test".into(),
        instance_id: "i2".into(),
        concurrency: 1,
        verifies_identity: true,
    };
    match store.create_session(&dup, T0 + 1).await {
        Err(StoreError::Conflict(_)) => {}
        r => panic!("a second live agent on `prod` must conflict: {r:?}"),
    }
    assert!(store.get_session("s1-again").await.unwrap().is_none());
    // Untagged is a tag set of its own; another org has its own `prod`.
    session(store, &acme, None, "s-untagged").await;
    session(store, &other, Some("prod"), "s-other").await;

    let live = store
        .find_live_session(acme.id, Some("prod"))
        .await
        .unwrap();
    assert_eq!(live.map(|l| l.id), Some("s1".to_string()));
    let live = store.find_live_session(acme.id, None).await.unwrap();
    assert_eq!(live.map(|l| l.id), Some("s-untagged".to_string()));
    assert!(
        store
            .find_live_session(acme.id, Some("dev"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.get_session("s1").await.unwrap().unwrap().id, "s1");
    assert!(store.get_session("missing").await.unwrap().is_none());

    // Once it ended, the tags are free again.
    store
        .end_session("s1", &SessionEnd::Disconnected, T0 + 2)
        .await
        .unwrap();
    assert!(
        store
            .find_live_session(acme.id, Some("prod"))
            .await
            .unwrap()
            .is_none()
    );
    let ended = store.get_session("s1").await.unwrap().unwrap();
    assert_eq!(ended.ended_at_ms, Some(T0 + 2));
    let again = store.create_session(&dup, T0 + 3).await.unwrap();
    assert_eq!(again.hostname, "other-host");
    assert_eq!(
        store
            .find_live_session(acme.id, Some("prod"))
            .await
            .unwrap()
            .map(|l| l.id),
        Some("s1-again".to_string())
    );
    let same_id = NewSession {
        id: "s1".into(),
        tags: Some("fresh".into()),
        ..dup
    };
    assert!(
        store.create_session(&same_id, T0 + 4).await.is_err(),
        "a session id is never reused"
    );
}

pub async fn sessions_resume_touch_and_go_stale(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let a = session(store, &acme, Some("a"), "sa").await;
    let b = session(store, &acme, Some("b"), "sb").await;
    store
        .resume_session(&a.id, "new-host", "2.0", 8, true, T0 + 100)
        .await
        .unwrap();
    let got = store.get_session(&a.id).await.unwrap().unwrap();
    assert_eq!(
        (
            got.hostname.as_str(),
            got.version.as_str(),
            got.concurrency,
            got.last_seen_ms
        ),
        ("new-host", "2.0", 8, T0 + 100)
    );
    assert_eq!(got.connected_at_ms, T0, "still the same session");
    assert!(
        got.verifies_identity,
        "a resumed agent that now enforces JWK_URL says so"
    );

    store.touch_session(&b.id, T0 + 50).await.unwrap();
    store.touch_session(&b.id, T0 + 40).await.unwrap();
    assert_eq!(
        store
            .get_session(&b.id)
            .await
            .unwrap()
            .unwrap()
            .last_seen_ms,
        T0 + 50,
        "last_seen never goes back"
    );

    let stale = |cutoff: i64| async move {
        let mut ids: Vec<String> = store
            .stale_sessions(cutoff)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        ids.sort();
        ids
    };
    assert!(
        stale(T0 + 50).await.is_empty(),
        "seen at the cutoff is not stale"
    );
    assert_eq!(stale(T0 + 51).await, vec!["sb"]);
    assert_eq!(stale(T0 + 101).await, vec!["sa", "sb"]);

    // Server start gives every live agent a full lease again, never less.
    let c = session(store, &acme, Some("c"), "sc").await;
    store
        .end_session(&c.id, &SessionEnd::Disconnected, T0 + 1)
        .await
        .unwrap();
    assert_eq!(store.extend_live_sessions(T0 + 80).await.unwrap(), 2);
    assert_eq!(
        store.get_session("sa").await.unwrap().unwrap().last_seen_ms,
        T0 + 100
    );
    assert_eq!(
        store.get_session("sb").await.unwrap().unwrap().last_seen_ms,
        T0 + 80
    );
    assert!(
        stale(T0 + 1000).await.iter().all(|id| id != "sc"),
        "ended is not stale"
    );

    // An ended session is not touched.
    store.touch_session(&c.id, T0 + 500).await.unwrap();
    assert_eq!(
        store.get_session("sc").await.unwrap().unwrap().last_seen_ms,
        T0
    );
}

pub async fn ending_a_session_fails_running_tasks_and_requeues_offers(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let t = create_target(store, &acme, "t", Some("prod")).await;
    let s = session(store, &acme, Some("prod"), "s1").await;
    let running = ready_task(store, &acme, &t, "run", T0).await.task.id;
    run_task(store, &s, running, T0 + 10).await;
    let finished = ready_task(store, &acme, &t, "done", T0).await.task.id;
    run_task(store, &s, finished, T0).await;
    store
        .finish_task(acme.id, finished, &success(&s, 0), T0 + 1)
        .await
        .unwrap();
    let offered = ready_task(store, &acme, &t, "offer", T0).await.task.id;
    claim(store, &s, 10, T0).await;
    let waiting = ready_task(store, &acme, &t, "queued", T0).await.task.id;

    let ended = store
        .end_session(&s.id, &SessionEnd::Lost { lease_secs: 30 }, T0 + 1000)
        .await
        .unwrap();
    assert!(ended.ended_now);
    assert_eq!(ended.org_id, acme.id);
    assert_eq!(ended.tags.as_deref(), Some("prod"));
    assert_eq!(ended.hostname, "host-s1");
    assert_eq!(ended.failed, vec![running]);
    assert_eq!(ended.requeued, vec![offered]);

    let rec = task(store, &acme, running).await;
    assert_eq!(rec.task.status, TaskStatus::Failure);
    assert_eq!(rec.task.failure_reason, Some(FailureReason::AgentLost));
    assert_eq!(
        rec.task.failure_message,
        Some(SessionEnd::Lost { lease_secs: 30 }.running_task_message("host-s1"))
    );
    assert_eq!(rec.task.finished_at, Some(at(T0 + 1000)));
    assert_eq!(rec.task.elapsed_ms, Some(990), "from its start to the loss");
    let rec = task(store, &acme, offered).await;
    assert_eq!(
        rec.task.status,
        TaskStatus::Ready,
        "an offer never ran: it runs later"
    );
    assert_eq!(rec.session_id, None);
    assert_eq!(rec.task.agent, None);
    assert_eq!(
        task(store, &acme, finished).await.task.status,
        TaskStatus::Success
    );
    assert_eq!(
        task(store, &acme, waiting).await.task.status,
        TaskStatus::Ready
    );

    // The next agent on these tags gets the requeued offer and the queued task.
    let next = session(store, &acme, Some("prod"), "s2").await;
    assert_eq!(
        task_ids(&claim(store, &next, 10, T0 + 1001).await),
        vec![offered, waiting]
    );
    // The ended session's late messages find its tasks over.
    let r = store
        .start_task(acme.id, offered, &s.id, T0 + 1002)
        .await
        .unwrap()
        .outcome;
    assert!(matches!(r, StartOutcome::OfferExpired), "{r:?}");
    let r = store
        .finish_task(acme.id, running, &success(&s, 0), T0 + 1002)
        .await
        .unwrap()
        .outcome;
    assert!(
        matches!(r, FinishOutcome::Ended(TaskStatus::Failure)),
        "{r:?}"
    );
    assert_eq!(
        store.cancels_for(&s.id, acme.id, &[running]).await.unwrap(),
        vec![running]
    );
    assert!(
        store
            .end_session("missing", &SessionEnd::Disconnected, T0)
            .await
            .unwrap()
            .failed
            .is_empty()
    );
}

pub async fn ending_a_session_twice_does_nothing_the_second_time(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let t = create_target(store, &acme, "t", None).await;
    let s = session(store, &acme, None, "s1").await;
    let id = ready_task(store, &acme, &t, "run", T0).await.task.id;
    run_task(store, &s, id, T0).await;
    let first = store
        .end_session(&s.id, &SessionEnd::TokenRevoked, T0 + 1)
        .await
        .unwrap();
    assert!(first.ended_now);
    assert_eq!(first.failed, vec![id]);
    let second = store
        .end_session(&s.id, &SessionEnd::Disconnected, T0 + 2)
        .await
        .unwrap();
    assert!(!second.ended_now);
    assert!(second.failed.is_empty() && second.requeued.is_empty());
    let ended = store.get_session(&s.id).await.unwrap().unwrap();
    assert_eq!(ended.ended_at_ms, Some(T0 + 1), "the first end stands");
    assert_eq!(
        task(store, &acme, id).await.task.failure_message,
        Some(SessionEnd::TokenRevoked.running_task_message("host-s1"))
    );
    let missing = store
        .end_session("missing", &SessionEnd::Disconnected, T0)
        .await
        .unwrap();
    assert!(!missing.ended_now);
}

pub async fn a_restarted_agent_keeps_only_the_tasks_it_spooled(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let t = create_target(store, &acme, "t", None).await;
    let s = session(store, &acme, None, "s1").await;
    let spooled = ready_task(store, &acme, &t, "spooled", T0).await.task.id;
    run_task(store, &s, spooled, T0).await;
    let lost = ready_task(store, &acme, &t, "lost", T0).await.task.id;
    run_task(store, &s, lost, T0).await;
    let offered = ready_task(store, &acme, &t, "offered", T0).await.task.id;
    claim(store, &s, 10, T0).await;

    let r = store
        .recover_restarted_session(&s.id, &[spooled], T0 + 5)
        .await
        .unwrap();
    assert_eq!(r.failed, vec![lost]);
    assert_eq!(r.requeued, vec![offered]);
    assert_eq!(r.hostname, "host-s1");
    assert_eq!(r.org_id, acme.id);
    let rec = task(store, &acme, lost).await;
    assert_eq!(rec.task.failure_reason, Some(FailureReason::AgentLost));
    assert_eq!(
        rec.task.failure_message,
        Some(SessionEnd::Restarted.running_task_message("host-s1"))
    );
    assert_eq!(
        task(store, &acme, spooled).await.task.status,
        TaskStatus::Running
    );
    assert_eq!(
        task(store, &acme, offered).await.task.status,
        TaskStatus::Ready
    );
    let live = store.get_session(&s.id).await.unwrap().unwrap();
    assert_eq!(live.ended_at_ms, None, "the session lives on");
    // The spooled task still finishes normally.
    let r = store
        .finish_task(acme.id, spooled, &success(&s, 0), T0 + 6)
        .await
        .unwrap()
        .outcome;
    assert!(matches!(r, FinishOutcome::Finished(_)), "{r:?}");
    let none = store
        .recover_restarted_session("missing", &[], T0)
        .await
        .unwrap();
    assert!(none.failed.is_empty() && none.requeued.is_empty());
}

pub async fn live_agents_list_their_running_tasks(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let t = create_target(store, &acme, "t", Some("b")).await;
    let sb = session(store, &acme, Some("b"), "sb").await;
    session(store, &acme, Some("a"), "sa").await;
    let gone = session(store, &acme, Some("c"), "sc").await;
    store
        .end_session(&gone.id, &SessionEnd::Disconnected, T0)
        .await
        .unwrap();
    session(store, &other, None, "so").await;
    let r1 = ready_task(store, &acme, &t, "1", T0).await.task.id;
    run_task(store, &sb, r1, T0).await;
    let r2 = ready_task(store, &acme, &t, "2", T0).await.task.id;
    run_task(store, &sb, r2, T0).await;
    ready_task(store, &acme, &t, "offered", T0).await;
    claim(store, &sb, 10, T0).await;

    let agents = store.list_live_agents(acme.id).await.unwrap();
    assert_eq!(
        agents.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        vec!["sa", "sb"],
        "live agents of the org, by tags"
    );
    let b = &agents[1];
    assert_eq!(b.tags.as_deref(), Some("b"));
    assert_eq!(b.hostname, "host-sb");
    assert_eq!(b.version, "test");
    assert_eq!(b.concurrency, 4);
    assert_eq!(b.connected_at, at(T0));
    assert_eq!(b.running_tasks, vec![r1, r2], "running only, not offers");
    assert!(agents[0].running_tasks.is_empty());
}
