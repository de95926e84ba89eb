//! Races: several tokio tasks calling the store at once, as concurrent polls and
//! resends do. Each asserts what must hold whatever the interleaving.

use super::*;
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::Barrier;

/// Ready tasks per tag set in the claim race.
const TASKS_PER_TAGS: usize = 40;
/// Concurrent claimers per session (polls of one agent overlapping).
const CLAIMERS_PER_SESSION: usize = 4;

pub async fn concurrent_claims_offer_each_task_exactly_once(store: &Arc<dyn Store>) {
    let acme = org(&**store, "acme").await;
    let other = org(&**store, "other").await;
    // Several sessions (one per org and tags), each polled by several claimers at once.
    let sets: [(&Org, Option<&str>); 4] = [
        (&acme, None),
        (&acme, Some("a")),
        (&acme, Some("b")),
        (&other, Some("a")),
    ];
    let mut expected: BTreeMap<i64, String> = BTreeMap::new();
    let mut sessions = Vec::new();
    for (i, (org, tags)) in sets.iter().enumerate() {
        let target = create_target(&**store, org, &format!("t{i}"), *tags).await;
        let s = session(&**store, org, *tags, &format!("s{i}")).await;
        for n in 0..TASKS_PER_TAGS {
            let id = ready_task(&**store, org, &target, &format!("echo {n}"), T0)
                .await
                .task
                .id;
            expected.insert(id, s.id.clone());
        }
        sessions.push(s);
    }

    let claimers = sessions.len() * CLAIMERS_PER_SESSION;
    let barrier = Arc::new(Barrier::new(claimers));
    let mut handles = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        for c in 0..CLAIMERS_PER_SESSION {
            let store = Arc::clone(store);
            let s = s.clone();
            let barrier = Arc::clone(&barrier);
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                let mut got = Vec::new();
                let mut round = 0u32;
                loop {
                    // Limits of 1 to 3 so claims interleave in every pattern.
                    let limit = 1 + (i as u32 + c as u32 + round) % 3;
                    round += 1;
                    let offers = store
                        .claim_tasks(&s, limit, T0 + 1, T0 + 1 + OFFER_MS)
                        .await
                        .expect("claim");
                    assert!(offers.len() <= limit as usize, "at most the limit");
                    if offers.is_empty() {
                        break;
                    }
                    for o in offers.into_iter().map(|c| c.offer) {
                        // Each claimed offer starts: it runs once, for this session.
                        let r = store
                            .start_task(s.org_id, o.task_id, &s.id, T0 + 2)
                            .await
                            .expect("start")
                            .outcome;
                        assert!(
                            matches!(r, StartOutcome::Started(_)),
                            "task {} claimed by {} did not start: {r:?}",
                            o.task_id,
                            s.id
                        );
                        got.push(o.task_id);
                    }
                }
                (s.id, got)
            }));
        }
    }
    let mut claimed: BTreeMap<i64, String> = BTreeMap::new();
    for h in handles {
        let (session_id, ids) = h.await.expect("claimer panicked");
        for id in ids {
            if let Some(first) = claimed.insert(id, session_id.clone()) {
                panic!("task {id} was claimed twice (by {first} and {session_id})");
            }
        }
    }
    assert_eq!(
        claimed.keys().collect::<BTreeSet<_>>(),
        expected.keys().collect::<BTreeSet<_>>(),
        "every ready task is claimed"
    );
    assert_eq!(claimed, expected, "each by the session of its org and tags");
    for (org, _) in sets {
        for t in store
            .list_tasks(
                org.id,
                &runops_proto::api::TaskListQuery {
                    limit: Some(1000),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
        {
            assert_eq!(t.status, TaskStatus::Running, "task {}", t.id);
        }
    }
}

/// A deterministic byte stream (no runs, so an offset error shows).
fn stream(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

pub async fn concurrent_log_resends_store_each_byte_once(store: &Arc<dyn Store>) {
    let acme = org(&**store, "acme").await;
    let t = create_target(&**store, &acme, "t", None).await;
    let s = session(&**store, &acme, None, "s1").await;
    let id = ready_task(&**store, &acme, &t, "cat big", T0).await.task.id;
    run_task(&**store, &s, id, T0).await;
    let data = Arc::new(stream(48 * 1024));
    let senders = 6;
    let barrier = Arc::new(Barrier::new(senders));
    let mut handles = Vec::new();
    for n in 0..senders {
        let (store, s, data, barrier) = (
            Arc::clone(store),
            s.clone(),
            Arc::clone(&data),
            Arc::clone(&barrier),
        );
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            // Every sender resends the whole stream in its own chunk size.
            let size = 1000 + 777 * n;
            let mut offset = 0usize;
            while offset < data.len() {
                let end = (offset + size).min(data.len());
                match store
                    .append_log(
                        s.org_id,
                        id,
                        &s.id,
                        offset as u64,
                        &data[offset..end],
                        NO_CAP,
                    )
                    .await
                    .expect("append")
                    .outcome
                {
                    AppendOutcome::Stored(n) => {
                        assert!(
                            n as usize >= end,
                            "acknowledged {n} after sending up to {end}"
                        );
                        offset = n as usize;
                    }
                    AppendOutcome::Gap(n) => {
                        assert!((n as usize) < offset, "a gap starts before the chunk");
                        offset = n as usize;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }));
    }
    for h in handles {
        h.await.expect("sender panicked");
    }
    let log = whole_log(&**store, id).await;
    assert_eq!(log.len(), data.len(), "each byte is stored once");
    assert!(log == *data, "the log is the stream, in order");
    let rec = task(&**store, &acme, id).await;
    assert_eq!(rec.log_received, data.len() as u64);
    assert_eq!(rec.log_kept, data.len() as u64);
}

pub async fn concurrent_start_and_kill_agree_on_one_outcome(store: &Arc<dyn Store>) {
    let acme = org(&**store, "acme").await;
    let t = create_target(&**store, &acme, "t", None).await;
    let s = session(&**store, &acme, None, "s1").await;
    let mut ids = Vec::new();
    for n in 0..30 {
        ids.push(
            ready_task(&**store, &acme, &t, &format!("{n}"), T0)
                .await
                .task
                .id,
        );
    }
    assert_eq!(claim(&**store, &s, 100, T0).await.len(), ids.len());
    let mut handles = Vec::new();
    for &id in &ids {
        let (a, b) = (Arc::clone(store), Arc::clone(store));
        let (s1, org_id) = (s.clone(), acme.id);
        let start = tokio::spawn(async move {
            a.start_task(org_id, id, &s1.id, T0 + 1)
                .await
                .expect("start")
                .outcome
        });
        let kill = tokio::spawn(async move {
            b.kill_task(org_id, id, "ann@acme.example", T0 + 1)
                .await
                .expect("kill")
                .outcome
        });
        handles.push((id, start, kill));
    }
    for (id, start, kill) in handles {
        let (start, kill) = (start.await.unwrap(), kill.await.unwrap());
        let rec = task(&**store, &acme, id).await;
        match (&start, &kill) {
            (StartOutcome::Started(_), KillOutcome::CancelRequested { .. }) => {
                assert_eq!(rec.task.status, TaskStatus::Running, "task {id}");
                assert!(
                    rec.cancel_requested,
                    "task {id}: the kill reaches the agent"
                );
            }
            (StartOutcome::Ended(TaskStatus::Failure), KillOutcome::CancelledBeforeStart(_)) => {
                assert_eq!(rec.task.status, TaskStatus::Failure, "task {id}");
                assert_eq!(
                    rec.task.failure_reason,
                    Some(runops_proto::FailureReason::Cancelled)
                );
                assert_eq!(rec.task.started_at, None, "task {id} never ran");
            }
            other => panic!("task {id}: start and kill disagree: {other:?}"),
        }
    }
}

pub async fn concurrent_resent_finishes_finish_once(store: &Arc<dyn Store>) {
    let acme = org(&**store, "acme").await;
    let t = create_target(&**store, &acme, "t", None).await;
    let s = session(&**store, &acme, None, "s1").await;
    let id = ready_task(&**store, &acme, &t, "true", T0).await.task.id;
    run_task(&**store, &s, id, T0).await;
    let copies = 8;
    let barrier = Arc::new(Barrier::new(copies));
    let mut handles = Vec::new();
    for n in 0..copies {
        let (store, req, barrier) = (Arc::clone(store), success(&s, 0), Arc::clone(&barrier));
        let org_id = acme.id;
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .finish_task(org_id, id, &req, T0 + 1 + n as i64)
                .await
                .expect("finish")
                .outcome
        }));
    }
    let mut finished = Vec::new();
    for h in handles {
        match h.await.unwrap() {
            FinishOutcome::Finished(rec) => finished.push(rec.task.finished_at),
            FinishOutcome::AlreadyFinished(_) => {}
            other => panic!("a resent finish is answered as finished: {other:?}"),
        }
    }
    assert_eq!(finished.len(), 1, "recorded once");
    assert_eq!(
        task(&**store, &acme, id).await.task.finished_at,
        finished[0]
    );
}
