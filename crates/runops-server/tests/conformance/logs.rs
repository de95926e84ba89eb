//! Task logs: appends at offsets, the per-task cap, quotas and retention.

use super::*;
use std::future::Future;

async fn append(
    store: &dyn Store,
    s: &SessionRecord,
    id: i64,
    offset: u64,
    bytes: &[u8],
    cap: u64,
) -> AppendOutcome {
    store
        .append_log(s.org_id, id, &s.id, offset, bytes, cap)
        .await
        .expect("append")
        .outcome
}

fn stored(outcome: AppendOutcome) -> u64 {
    match outcome {
        AppendOutcome::Stored(n) => n,
        other => panic!("expected Stored, got {other:?}"),
    }
}

pub async fn log_appends_at_offsets_accept_resends_and_report_gaps(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let t = create_target(store, &acme, "t", None).await;
    let s = session(store, &acme, None, "s1").await;
    let id = ready_task(store, &acme, &t, "echo", T0).await.task.id;
    // An offer may send output before its start is answered.
    claim(store, &s, 1, T0).await;
    assert_eq!(stored(append(store, &s, id, 0, b"hello ", NO_CAP).await), 6);
    store.start_task(acme.id, id, &s.id, T0 + 1).await.unwrap();
    assert_eq!(stored(append(store, &s, id, 6, b"world", NO_CAP).await), 11);
    // A resend overlapping what is stored adds only what is new.
    assert_eq!(
        stored(append(store, &s, id, 3, b"lo world!\n", NO_CAP).await),
        13
    );
    // A resend of stored bytes only is acknowledged with the size so far.
    assert_eq!(stored(append(store, &s, id, 0, b"hello", NO_CAP).await), 13);
    assert_eq!(stored(append(store, &s, id, 13, b"", NO_CAP).await), 13);
    // A chunk beyond the end leaves a gap: the agent must resend from the end.
    let r = append(store, &s, id, 20, b"later", NO_CAP).await;
    assert!(matches!(r, AppendOutcome::Gap(13)), "{r:?}");
    assert_eq!(whole_log(store, id).await, b"hello world!\n");
    let rec = task(store, &acme, id).await;
    assert_eq!((rec.log_received, rec.log_kept), (13, 13));
    assert_eq!(
        rec.task.log_size, 13,
        "a running task's size is what arrived"
    );

    let r = store
        .append_log(acme.id, id + 99, &s.id, 0, b"x", NO_CAP)
        .await
        .unwrap()
        .outcome;
    assert!(matches!(r, AppendOutcome::NotFound), "{r:?}");
    let other = org(store, "other").await;
    let r = store
        .append_log(other.id, id, &s.id, 13, b"x", NO_CAP)
        .await
        .unwrap()
        .outcome;
    assert!(matches!(r, AppendOutcome::NotFound), "another org: {r:?}");
}

pub async fn log_of_another_session_or_an_ended_task_is_refused(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let t = create_target(store, &acme, "t", None).await;
    let s = session(store, &acme, None, "s1").await;
    let thief = session(store, &acme, Some("x"), "s2").await;
    let id = ready_task(store, &acme, &t, "echo", T0).await.task.id;
    run_task(store, &s, id, T0).await;
    append(store, &s, id, 0, b"abc", NO_CAP).await;
    let r = append(store, &thief, id, 3, b"def", NO_CAP).await;
    assert!(
        matches!(r, AppendOutcome::Ended(TaskStatus::Running)),
        "another session's task: {r:?}"
    );
    let ready = ready_task(store, &acme, &t, "waits", T0).await.task.id;
    let r = append(store, &s, ready, 0, b"x", NO_CAP).await;
    assert!(
        matches!(r, AppendOutcome::Ended(TaskStatus::Ready)),
        "a task not offered to it: {r:?}"
    );

    store
        .finish_task(acme.id, id, &success(&s, 3), T0 + 1)
        .await
        .unwrap();
    // After the finish, a resend of what is stored is still acknowledged...
    assert_eq!(stored(append(store, &s, id, 0, b"abc", NO_CAP).await), 3);
    // ...but new bytes are too late.
    let r = append(store, &s, id, 3, b"def", NO_CAP).await;
    assert!(
        matches!(r, AppendOutcome::Ended(TaskStatus::Success)),
        "{r:?}"
    );
    assert_eq!(whole_log(store, id).await, b"abc");

    // A killed offer takes no output either.
    let killed = ready_task(store, &acme, &t, "k", T0).await.task.id;
    claim(store, &s, 10, T0).await;
    store
        .kill_task(acme.id, killed, "ann@acme.example", T0)
        .await
        .unwrap();
    let r = append(store, &s, killed, 0, b"x", NO_CAP).await;
    assert!(
        matches!(r, AppendOutcome::Ended(TaskStatus::Failure)),
        "{r:?}"
    );
    assert!(whole_log(store, killed).await.is_empty());
}

pub async fn log_beyond_the_cap_is_acknowledged_not_kept_with_one_note(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let t = create_target(store, &acme, "t", None).await;
    let s = session(store, &acme, None, "s1").await;
    let id = ready_task(store, &acme, &t, "yes", T0).await.task.id;
    run_task(store, &s, id, T0).await;
    let cap = 10;
    assert_eq!(stored(append(store, &s, id, 0, b"0123456", cap).await), 7);
    assert_eq!(
        stored(append(store, &s, id, 7, b"789abcdef", cap).await),
        16
    );
    assert_eq!(stored(append(store, &s, id, 16, b"ghij", cap).await), 20);
    let log = whole_log(store, id).await;
    assert!(
        log.starts_with(b"0123456789"),
        "{}",
        String::from_utf8_lossy(&log)
    );
    let note = String::from_utf8_lossy(&log[10..]).to_string();
    assert!(note.contains("log truncated"), "{note}");
    assert!(note.contains("10 bytes"), "the note names the cap: {note}");
    assert_eq!(note.matches("log truncated").count(), 1, "one note: {note}");
    assert!(!log.windows(3).any(|w| w == b"abc" || w == b"ghi"));
    let rec = task(store, &acme, id).await;
    assert_eq!(rec.log_received, 20, "every byte is acknowledged");
    assert_eq!(rec.log_kept, log.len() as u64);
    // The finish is checked against what arrived, not what was kept.
    let FinishOutcome::Finished(rec) = store
        .finish_task(acme.id, id, &success(&s, 20), T0 + 1)
        .await
        .unwrap()
        .outcome
    else {
        panic!("finished");
    };
    assert_eq!(rec.task.log_size, 20);
}

pub async fn read_log_returns_kept_bytes_from_an_offset(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let t = create_target(store, &acme, "t", None).await;
    let s = session(store, &acme, None, "s1").await;
    let id = ready_task(store, &acme, &t, "cat", T0).await.task.id;
    run_task(store, &s, id, T0).await;
    assert!(whole_log(store, id).await.is_empty());
    let mut all = Vec::new();
    for (i, chunk) in [&b"first "[..], b"second ", b"third"]
        .into_iter()
        .enumerate()
    {
        append(store, &s, id, all.len() as u64, chunk, NO_CAP).await;
        all.extend_from_slice(chunk);
        assert_eq!(whole_log(store, id).await, all, "after chunk {i}");
    }
    for offset in 0..=all.len() {
        let got = store.read_log(id, offset as u64, usize::MAX).await.unwrap();
        assert_eq!(got, &all[offset..], "from {offset}");
    }
    assert!(store.read_log(id, 1000, 10).await.unwrap().is_empty());
    // `max` bounds the answer in whole chunks: at least `max` bytes (when there are),
    // never fewer than the one chunk that starts the read.
    let some = store.read_log(id, 2, 1).await.unwrap();
    assert!(!some.is_empty() && all[2..].starts_with(&some), "{some:?}");
    assert!(store.read_log(id + 99, 0, 10).await.unwrap().is_empty());
}

pub async fn purge_replaces_old_finished_logs_once_and_reports_per_org(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let t = create_target(store, &acme, "t", None).await;
    let ot = create_target(store, &other, "t", None).await;
    let s = session(store, &acme, None, "s1").await;
    let so = session(store, &other, None, "s2").await;
    let old1 = finished_task(store, &acme, &t, &s, b"old one", NO_CAP, T0 + 10)
        .await
        .0;
    let old2 = finished_task(store, &acme, &t, &s, b"old two!", NO_CAP, T0 + 20)
        .await
        .0;
    let empty = finished_task(store, &acme, &t, &s, b"", NO_CAP, T0 + 25)
        .await
        .0;
    let old_other = finished_task(store, &other, &ot, &so, b"other", NO_CAP, T0 + 30)
        .await
        .0;
    let recent = finished_task(store, &acme, &t, &s, b"recent", NO_CAP, T0 + 100)
        .await
        .0;
    let running = ready_task(store, &acme, &t, "runs", T0).await.task.id;
    run_task(store, &s, running, T0).await;
    append(store, &s, running, 0, b"still running", NO_CAP).await;

    let note = "[purged]\n";
    // In batches: a full batch says there may be more.
    let (seen, purged) = store.purge_logs(T0 + 50, T0 + 1000, note, 2).await.unwrap();
    assert_eq!(seen, 2);
    assert_eq!(
        purged,
        vec![PurgedLogs {
            org_id: acme.id,
            tasks: 2,
            bytes: 15
        }],
        "the oldest first"
    );
    let (seen, purged) = store
        .purge_logs(T0 + 50, T0 + 1000, note, 10)
        .await
        .unwrap();
    assert_eq!(
        seen, 2,
        "the empty log and the other org's: fewer than the batch"
    );
    assert_eq!(
        purged,
        vec![PurgedLogs {
            org_id: other.id,
            tasks: 1,
            bytes: 5
        }],
        "an empty log is looked at, not reported"
    );
    let (seen, purged) = store
        .purge_logs(T0 + 50, T0 + 1000, note, 10)
        .await
        .unwrap();
    assert_eq!((seen, purged), (0, vec![]), "never twice");

    for id in [old1, old2, old_other] {
        assert_eq!(whole_log(store, id).await, note.as_bytes(), "task {id}");
    }
    assert!(whole_log(store, empty).await.is_empty());
    assert_eq!(whole_log(store, recent).await, b"recent");
    assert_eq!(whole_log(store, running).await, b"still running");
    let rec = task(store, &acme, old2).await;
    assert_eq!(
        rec.task.log_size, 8,
        "the task still says how big its log was"
    );
    assert_eq!(rec.log_kept, note.len() as u64);
}

async fn finished_task(
    store: &dyn Store,
    org: &Org,
    target: &Target,
    s: &SessionRecord,
    log: &[u8],
    cap: u64,
    at_ms: i64,
) -> (i64, AppendOutcome) {
    let id = ready_task(store, org, target, "x", T0).await.task.id;
    run_task(store, s, id, T0).await;
    let r = append(store, s, id, 0, log, cap).await;
    store
        .finish_task(org.id, id, &success(s, log.len() as u64), at_ms)
        .await
        .unwrap();
    (id, r)
}

pub async fn org_log_quota_stops_keeping_logs_of_that_org_only<F, Fut>(make: F)
where
    F: Fn(StoreSettings) -> Fut,
    Fut: Future<Output = StoreUnderTest>,
{
    let under_test = make(StoreSettings {
        org_log_quota_bytes: 10,
        server_log_quota_bytes: 0,
    })
    .await;
    let store = &*under_test.store;
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let t = create_target(store, &acme, "t", None).await;
    let ot = create_target(store, &other, "t", None).await;
    let s = session(store, &acme, None, "s1").await;
    let so = session(store, &other, None, "s2").await;

    let (a, r) = finished_task(store, &acme, &t, &s, b"123456", NO_CAP, T0).await;
    assert_eq!(stored(r), 6);
    let (b, r) = finished_task(store, &acme, &t, &s, b"abcdefgh", NO_CAP, T0).await;
    assert_eq!(stored(r), 8, "bytes past the quota are acknowledged");
    assert_eq!(whole_log(store, a).await, b"123456");
    let log_b = whole_log(store, b).await;
    assert!(
        log_b.starts_with(b"abcd"),
        "{}",
        String::from_utf8_lossy(&log_b)
    );
    let note = String::from_utf8_lossy(&log_b[4..]).to_string();
    assert!(note.contains("quota"), "{note}");
    assert!(
        note.contains("organisation"),
        "the note says whose quota: {note}"
    );
    assert!(!log_b.windows(4).any(|w| w == b"efgh"));

    let (c, r) = finished_task(store, &acme, &t, &s, b"more", NO_CAP, T0).await;
    assert_eq!(stored(r), 4);
    let log_c = whole_log(store, c).await;
    assert!(
        !log_c.starts_with(b"more"),
        "nothing kept once the quota is used"
    );

    let (o, r) = finished_task(store, &other, &ot, &so, b"other org", NO_CAP, T0).await;
    assert_eq!(stored(r), 9);
    assert_eq!(
        whole_log(store, o).await,
        b"other org",
        "another org has its own quota"
    );
    under_test.store.close().await;
}

pub async fn server_log_quota_counts_every_org<F, Fut>(make: F)
where
    F: Fn(StoreSettings) -> Fut,
    Fut: Future<Output = StoreUnderTest>,
{
    let under_test = make(StoreSettings {
        org_log_quota_bytes: 0,
        server_log_quota_bytes: 10,
    })
    .await;
    let store = &*under_test.store;
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let t = create_target(store, &acme, "t", None).await;
    let ot = create_target(store, &other, "t", None).await;
    let s = session(store, &acme, None, "s1").await;
    let so = session(store, &other, None, "s2").await;

    let (a, _) = finished_task(store, &acme, &t, &s, b"1234567", NO_CAP, T0).await;
    assert_eq!(whole_log(store, a).await, b"1234567");
    let (o, r) = finished_task(store, &other, &ot, &so, b"abcdef", NO_CAP, T0).await;
    assert_eq!(stored(r), 6);
    let log = whole_log(store, o).await;
    assert!(log.starts_with(b"abc"), "{}", String::from_utf8_lossy(&log));
    let note = String::from_utf8_lossy(&log[3..]).to_string();
    assert!(note.contains("server's log quota"), "{note}");
    under_test.store.close().await;
}

pub async fn purged_logs_free_their_quota<F, Fut>(make: F)
where
    F: Fn(StoreSettings) -> Fut,
    Fut: Future<Output = StoreUnderTest>,
{
    let under_test = make(StoreSettings {
        org_log_quota_bytes: 10,
        server_log_quota_bytes: 0,
    })
    .await;
    let store = &*under_test.store;
    let acme = org(store, "acme").await;
    let t = create_target(store, &acme, "t", None).await;
    let s = session(store, &acme, None, "s1").await;
    finished_task(store, &acme, &t, &s, b"0123456789", NO_CAP, T0).await;
    let (full, _) = finished_task(store, &acme, &t, &s, b"x", NO_CAP, T0 + 1).await;
    assert!(
        !whole_log(store, full).await.starts_with(b"x"),
        "quota used up"
    );

    let (_, purged) = store
        .purge_logs(T0 + 10, T0 + 100, "[gone]\n", 100)
        .await
        .unwrap();
    assert_eq!(purged.iter().map(|p| p.tasks).sum::<u64>(), 2);
    // The purge note is the server's own and does not count against the quota.
    let (fresh, _) = finished_task(store, &acme, &t, &s, b"new output", NO_CAP, T0 + 200).await;
    assert_eq!(whole_log(store, fresh).await, b"new output");
    under_test.store.close().await;
}
