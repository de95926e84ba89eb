//! Webhooks ([`WebhookStore`]): webhooks per org, the outbox of events and their
//! deliveries, claiming in order per task and webhook, retries, giving up, history.

use super::*;
use runops_proto::webhook::{DeliveryStatus, Webhook, WebhookDelivery, WebhookFormat};
use runops_server::store::webhooks::{AttemptOutcome, ClaimedDelivery, NewEvent, NewWebhook};
use runops_server::webhook::schedule::after_failure;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::Barrier;

const REQUESTED: &str = "review.requested";
const APPROVED: &str = "review.approved";
const FINISHED: &str = "task.finished";

/// How long a claimed delivery is leased to its attempt in the suite.
const LEASE_MS: i64 = 60_000;

async fn webhook(store: &dyn Store, org: &Org, url: &str, events: &[&str]) -> Webhook {
    store
        .create_webhook(
            &NewWebhook {
                org_id: org.id,
                url: url.into(),
                format: WebhookFormat::Generic,
                events: events.iter().map(|e| e.to_string()).collect(),
                secret_sealed: format!("sealed {url}").into_bytes(),
                created_by: org.admin.email.clone(),
            },
            T0,
        )
        .await
        .expect("create webhook")
}

fn payload(task_id: i64, kind: &str) -> serde_json::Value {
    serde_json::json!({"task": {"id": task_id}, "event": kind})
}

/// Records `kind` for `task_id` of `org` at `now_ms`; how many deliveries were queued.
async fn event(store: &dyn Store, org: &Org, task_id: i64, kind: &'static str, now_ms: i64) -> u64 {
    store
        .record_event(
            &NewEvent {
                org_id: org.id,
                task_id,
                kind,
                payload: payload(task_id, kind),
            },
            now_ms,
        )
        .await
        .expect("record event")
}

/// A task of `org` for events to be about.
async fn some_task(store: &dyn Store, org: &Org, script: &str) -> i64 {
    let t = match store.get_target(org.id, "hooked").await.unwrap() {
        Some(t) => t,
        None => create_target(store, org, "hooked", None).await,
    };
    ready_task(store, org, &t, script, T0).await.task.id
}

async fn deliveries(store: &dyn Store, org: &Org, hook: &Webhook) -> Vec<WebhookDelivery> {
    store
        .list_webhook_deliveries(org.id, hook.id, 100)
        .await
        .expect("list deliveries")
        .unwrap_or_else(|| panic!("webhook {} exists", hook.id))
}

async fn claim_due(store: &dyn Store, now_ms: i64, limit: u32) -> Vec<ClaimedDelivery> {
    store
        .claim_due_deliveries(now_ms, now_ms + LEASE_MS, limit)
        .await
        .expect("claim deliveries")
}

/// `(webhook, kind, task)` of claimed deliveries, in claim order.
fn claimed(c: &[ClaimedDelivery]) -> Vec<(i64, &str, i64)> {
    c.iter()
        .map(|d| (d.webhook_id, d.kind.as_str(), d.task_id))
        .collect()
}

async fn record(store: &dyn Store, d: &ClaimedDelivery, outcome: AttemptOutcome, now_ms: i64) {
    store
        .record_attempt(d.id, &outcome, now_ms)
        .await
        .expect("record attempt");
}

fn delivered() -> AttemptOutcome {
    AttemptOutcome::Delivered { status: 200 }
}

/// `(pending, failed)` of each webhook of `org`.
async fn counts(store: &dyn Store, org: &Org) -> Vec<(u64, u64)> {
    store
        .list_webhooks(org.id)
        .await
        .unwrap()
        .iter()
        .map(|w| (w.pending, w.failed))
        .collect()
}

pub async fn webhooks_are_created_listed_and_deleted_per_org(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    assert!(!store.has_webhooks(acme.id).await.unwrap());
    assert!(store.list_webhooks(acme.id).await.unwrap().is_empty());
    let a = webhook(
        store,
        &acme,
        "https://a.example/hook",
        &[REQUESTED, FINISHED],
    )
    .await;
    assert_eq!(a.url, "https://a.example/hook");
    assert_eq!(a.format, WebhookFormat::Generic);
    assert_eq!(a.events, vec![REQUESTED, FINISHED]);
    assert_eq!(a.created_by, acme.admin.email);
    assert_eq!(a.created_at, at(T0));
    assert_eq!((a.pending, a.failed), (0, 0));
    let slack = store
        .create_webhook(
            &NewWebhook {
                org_id: acme.id,
                url: "https://hooks.slack.example/x".into(),
                format: WebhookFormat::Slack,
                events: vec![FINISHED.into()],
                secret_sealed: b"s".to_vec(),
                created_by: "ann@acme.example".into(),
            },
            T0 + 1,
        )
        .await
        .unwrap();
    let theirs = webhook(store, &other, "https://other.example/", &[FINISHED]).await;
    assert_eq!(
        store.list_webhooks(acme.id).await.unwrap(),
        vec![a.clone(), slack.clone()]
    );
    assert_eq!(
        store.list_webhooks(other.id).await.unwrap(),
        vec![theirs.clone()]
    );
    assert!(store.has_webhooks(acme.id).await.unwrap());

    // Another org neither sees, lists the deliveries of, nor deletes a webhook.
    assert!(!store.delete_webhook(other.id, a.id).await.unwrap());
    assert!(
        store
            .list_webhook_deliveries(other.id, a.id, 10)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .list_webhook_deliveries(acme.id, a.id, 10)
            .await
            .unwrap()
            .unwrap()
            .is_empty()
    );

    // Deleting a webhook drops its queue, even a delivery in flight.
    let id = some_task(store, &acme, "1").await;
    assert_eq!(event(store, &acme, id, REQUESTED, T0 + 2).await, 1);
    let in_flight = claim_due(store, T0 + 3, 10).await;
    assert_eq!(claimed(&in_flight), vec![(a.id, REQUESTED, id)]);
    assert_eq!(event(store, &acme, id, FINISHED, T0 + 4).await, 2);
    assert!(store.delete_webhook(acme.id, a.id).await.unwrap());
    assert!(!store.delete_webhook(acme.id, a.id).await.unwrap());
    assert!(
        store
            .list_webhook_deliveries(acme.id, a.id, 10)
            .await
            .unwrap()
            .is_none()
    );
    record(store, &in_flight[0], delivered(), T0 + 5).await;
    let rest = claim_due(store, T0 + LEASE_MS * 2, 10).await;
    assert_eq!(
        claimed(&rest),
        vec![(slack.id, FINISHED, id)],
        "only the Slack one is left"
    );
    record(store, &rest[0], delivered(), T0 + LEASE_MS * 2).await;
    assert_eq!(store.next_delivery_due().await.unwrap(), None);
    assert_eq!(store.list_webhooks(acme.id).await.unwrap().len(), 1);
    assert!(store.delete_webhook(acme.id, slack.id).await.unwrap());
    assert!(!store.has_webhooks(acme.id).await.unwrap());
    assert!(store.has_webhooks(other.id).await.unwrap());
}

pub async fn an_event_is_queued_for_each_webhook_that_subscribes_to_it(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let other = org(store, "other").await;
    let quiet = org(store, "quiet").await;
    let a = webhook(store, &acme, "https://a.example/", &[REQUESTED, FINISHED]).await;
    let b = webhook(store, &acme, "https://b.example/", &[FINISHED]).await;
    let c = webhook(store, &other, "https://c.example/", &[REQUESTED, FINISHED]).await;
    let t1 = some_task(store, &acme, "1").await;
    let t2 = some_task(store, &other, "2").await;
    let t3 = some_task(store, &quiet, "3").await;

    assert_eq!(event(store, &acme, t1, REQUESTED, T0 + 1).await, 1);
    assert_eq!(
        event(store, &acme, t1, "review.rejected", T0 + 2).await,
        0,
        "nobody subscribes"
    );
    assert_eq!(event(store, &acme, t1, FINISHED, T0 + 3).await, 2);
    // A task finishes once: a second `task.finished` queues nothing.
    assert_eq!(event(store, &acme, t1, FINISHED, T0 + 4).await, 0);
    assert_eq!(event(store, &other, t2, REQUESTED, T0 + 5).await, 1);
    assert_eq!(event(store, &quiet, t3, FINISHED, T0 + 6).await, 0);

    let of_a = deliveries(store, &acme, &a).await;
    let got: Vec<(&str, i64)> = of_a.iter().map(|d| (d.event.as_str(), d.task_id)).collect();
    assert_eq!(got, vec![(FINISHED, t1), (REQUESTED, t1)], "newest first");
    let d = &of_a[1];
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.attempts, 0);
    assert_eq!(d.created_at, at(T0 + 1));
    assert_eq!(d.next_attempt_at, Some(at(T0 + 1)), "due at once");
    assert_eq!(
        (
            d.last_attempt_at,
            d.last_status,
            d.last_error.as_deref(),
            d.delivered_at
        ),
        (None, None, None, None)
    );
    let of_b = deliveries(store, &acme, &b).await;
    assert_eq!(of_b.len(), 1);
    assert_eq!(
        (of_b[0].event.as_str(), of_b[0].event_id),
        (FINISHED, of_a[0].event_id)
    );
    assert_ne!(of_b[0].id, of_a[0].id, "one delivery per webhook");
    let of_c = deliveries(store, &other, &c).await;
    let got: Vec<(&str, i64)> = of_c.iter().map(|d| (d.event.as_str(), d.task_id)).collect();
    assert_eq!(got, vec![(REQUESTED, t2)]);
    let newest = store
        .list_webhook_deliveries(acme.id, a.id, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        newest.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![of_a[0].id]
    );
    assert_eq!(counts(store, &acme).await, vec![(2, 0), (1, 0)]);
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(T0 + 1));
}

pub async fn a_tasks_deliveries_go_out_one_at_a_time_in_order(store: &dyn Store) {
    let acme = org(store, "acme").await;
    assert_eq!(store.next_delivery_due().await.unwrap(), None);
    assert!(claim_due(store, T0, 10).await.is_empty());
    let a = webhook(
        store,
        &acme,
        "https://a.example/",
        &[REQUESTED, APPROVED, FINISHED],
    )
    .await;
    let b = webhook(store, &acme, "https://b.example/", &[FINISHED]).await;
    let t1 = some_task(store, &acme, "1").await;
    let t2 = some_task(store, &acme, "2").await;
    event(store, &acme, t1, REQUESTED, T0).await;
    event(store, &acme, t1, APPROVED, T0 + 1).await;
    event(store, &acme, t1, FINISHED, T0 + 2).await;
    event(store, &acme, t2, REQUESTED, T0 + 3).await;
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(T0));

    // Only what is due, and of each (webhook, task) only the oldest pending one.
    let first = claim_due(store, T0 + 1, 10).await;
    assert_eq!(claimed(&first), vec![(a.id, REQUESTED, t1)]);
    let d = &first[0];
    assert_eq!(d.attempts, 1);
    assert_eq!(
        (d.org_id, d.url.as_str(), d.format),
        (acme.id, "https://a.example/", WebhookFormat::Generic)
    );
    assert_eq!(d.secret_sealed, b"sealed https://a.example/".to_vec());
    assert_eq!(d.payload, payload(t1, REQUESTED));
    assert_eq!(d.created_at_ms, T0);
    // Another webhook's chain and another task's chain do not wait for it; the oldest
    // due goes first.
    let next = claim_due(store, T0 + 10, 10).await;
    assert_eq!(
        claimed(&next),
        vec![(b.id, FINISHED, t1), (a.id, REQUESTED, t2)]
    );
    assert_eq!(
        next[0].event_id,
        deliveries(store, &acme, &a).await[1].event_id
    );
    // In flight: not claimed again before the lease ends.
    assert!(claim_due(store, T0 + 20, 10).await.is_empty());
    assert_eq!(
        store.next_delivery_due().await.unwrap(),
        Some(T0 + 1 + LEASE_MS)
    );
    record(store, &next[0], delivered(), T0 + 20).await;
    record(store, &next[1], delivered(), T0 + 20).await;

    // Delivered: the task's next event is claimable.
    record(store, d, delivered(), T0 + 30).await;
    let approved = claim_due(store, T0 + 40, 10).await;
    assert_eq!(claimed(&approved), vec![(a.id, APPROVED, t1)]);
    // Given up: the next one goes.
    let give_up = AttemptOutcome::GiveUp {
        status: Some(500),
        error: "the receiver answered HTTP 500".into(),
    };
    record(store, &approved[0], give_up, T0 + 50).await;
    let finished = claim_due(store, T0 + 60, 10).await;
    assert_eq!(claimed(&finished), vec![(a.id, FINISHED, t1)]);
    // Retried: due again at its retry time, not before.
    let retry = AttemptOutcome::Retry {
        status: None,
        error: "cannot connect".into(),
        next_attempt_ms: T0 + 5_000,
    };
    record(store, &finished[0], retry, T0 + 70).await;
    assert!(claim_due(store, T0 + 4_999, 10).await.is_empty());
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(T0 + 5_000));
    let again = claim_due(store, T0 + 5_000, 10).await;
    assert_eq!(claimed(&again), vec![(a.id, FINISHED, t1)]);
    assert_eq!((again[0].id, again[0].attempts), (finished[0].id, 2));

    // The history of each attempt, newest delivery first.
    let of_a = deliveries(store, &acme, &a).await;
    let got: Vec<(&str, i64, DeliveryStatus, u32)> = of_a
        .iter()
        .map(|d| (d.event.as_str(), d.task_id, d.status, d.attempts))
        .collect();
    assert_eq!(
        got,
        vec![
            (REQUESTED, t2, DeliveryStatus::Delivered, 1),
            (FINISHED, t1, DeliveryStatus::Pending, 2),
            (APPROVED, t1, DeliveryStatus::Failed, 1),
            (REQUESTED, t1, DeliveryStatus::Delivered, 1),
        ]
    );
    let ok = &of_a[3];
    assert_eq!(
        (ok.last_status, ok.last_error.as_deref()),
        (Some(200), None)
    );
    assert_eq!(
        (ok.delivered_at, ok.next_attempt_at),
        (Some(at(T0 + 30)), None)
    );
    assert_eq!(ok.last_attempt_at, Some(at(T0 + 1)));
    let failed = &of_a[2];
    assert_eq!(
        (failed.last_status, failed.last_error.as_deref()),
        (Some(500), Some("the receiver answered HTTP 500"))
    );
    assert_eq!((failed.delivered_at, failed.next_attempt_at), (None, None));
    let pending = &of_a[1];
    assert_eq!(
        (pending.last_status, pending.last_error.as_deref()),
        (None, Some("cannot connect"))
    );
    assert_eq!(pending.last_attempt_at, Some(at(T0 + 5_000)));
    assert_eq!(
        pending.next_attempt_at,
        Some(at(T0 + 5_000 + LEASE_MS)),
        "leased"
    );
    assert_eq!(counts(store, &acme).await, vec![(1, 1), (0, 0)]);

    // A late outcome of an ended delivery changes nothing.
    let late = AttemptOutcome::Retry {
        status: Some(503),
        error: "late".into(),
        next_attempt_ms: T0 + 6_000,
    };
    record(store, d, late, T0 + 6_000).await;
    let ok_again = &deliveries(store, &acme, &a).await[3];
    assert_eq!(
        (ok_again.status, ok_again.last_error.as_deref()),
        (DeliveryStatus::Delivered, None)
    );
    store
        .record_attempt(i64::MAX, &delivered(), T0)
        .await
        .expect("an unknown delivery (deleted meanwhile) is no error");
}

pub async fn failed_attempts_back_off_then_are_given_up(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let a = webhook(store, &acme, "https://a.example/", &[FINISHED]).await;
    let id = some_task(store, &acme, "1").await;
    event(store, &acme, id, FINISHED, T0).await;
    // The worker's rules, with a short horizon: 1 s, 2 s, then the 4 s cap.
    let cap = Duration::from_secs(4);
    let give_up_after = Duration::from_secs(10);
    let mut attempts_at = Vec::new();
    let mut last = None;
    while let Some(due) = store.next_delivery_due().await.unwrap() {
        assert!(attempts_at.len() < 10, "given up in time: {attempts_at:?}");
        assert!(
            claim_due(store, due - 1, 10).await.is_empty(),
            "not before {due}"
        );
        let c = claim_due(store, due, 10).await;
        assert_eq!(c.len(), 1, "due at {due}");
        assert_eq!(c[0].attempts as usize, attempts_at.len() + 1);
        attempts_at.push(due - T0);
        let outcome = after_failure(
            c[0].attempts,
            c[0].created_at_ms,
            due,
            cap,
            give_up_after,
            Some(503),
            "the receiver answered HTTP 503".into(),
        );
        record(store, &c[0], outcome.clone(), due).await;
        last = Some(outcome);
    }
    assert_eq!(attempts_at, vec![0, 1_000, 3_000, 7_000, 11_000]);
    assert!(
        matches!(last, Some(AttemptOutcome::GiveUp { .. })),
        "{last:?}"
    );
    assert!(claim_due(store, T0 + 100_000, 10).await.is_empty());
    let d = &deliveries(store, &acme, &a).await[0];
    assert_eq!(
        (d.status, d.attempts, d.last_status),
        (DeliveryStatus::Failed, 5, Some(503))
    );
    assert_eq!(d.last_attempt_at, Some(at(T0 + 11_000)));
    assert_eq!(counts(store, &acme).await, vec![(0, 1)]);
}

pub async fn purge_deletes_deliveries_that_ended_before_the_cutoff(store: &dyn Store) {
    let acme = org(store, "acme").await;
    let a = webhook(store, &acme, "https://a.example/", &[REQUESTED, FINISHED]).await;
    let b = webhook(store, &acme, "https://b.example/", &[FINISHED]).await;
    let t1 = some_task(store, &acme, "1").await;
    let t2 = some_task(store, &acme, "2").await;
    let t3 = some_task(store, &acme, "3").await;
    event(store, &acme, t1, REQUESTED, T0).await;
    event(store, &acme, t2, FINISHED, T0).await;
    // Delivered at T0 + 100.
    let d1 = claim_due(store, T0 + 100, 1).await;
    assert_eq!(claimed(&d1), vec![(a.id, REQUESTED, t1)]);
    record(store, &d1[0], delivered(), T0 + 100).await;
    // Given up at T0 + 200.
    let d2 = claim_due(store, T0 + 200, 1).await;
    assert_eq!(claimed(&d2), vec![(a.id, FINISHED, t2)]);
    let give_up = AttemptOutcome::GiveUp {
        status: None,
        error: "cannot connect".into(),
    };
    record(store, &d2[0], give_up, T0 + 200).await;
    // Still pending (a retry), of the same event.
    let d3 = claim_due(store, T0 + 300, 1).await;
    assert_eq!(claimed(&d3), vec![(b.id, FINISHED, t2)]);
    let retry = AttemptOutcome::Retry {
        status: Some(502),
        error: "bad gateway".into(),
        next_attempt_ms: T0 + 100_000,
    };
    record(store, &d3[0], retry, T0 + 300).await;
    // Created and delivered later.
    event(store, &acme, t3, REQUESTED, T0 + 1_000).await;
    let d4 = claim_due(store, T0 + 1_100, 1).await;
    assert_eq!(claimed(&d4), vec![(a.id, REQUESTED, t3)]);
    record(store, &d4[0], delivered(), T0 + 1_100).await;

    assert_eq!(store.purge_webhook_history(T0 + 50).await.unwrap(), 0);
    // Only what ended before the cutoff: the delivery given up at T0 + 200 stays.
    assert_eq!(store.purge_webhook_history(T0 + 150).await.unwrap(), 1);
    assert_eq!(store.purge_webhook_history(T0 + 150).await.unwrap(), 0);
    let left: Vec<i64> = deliveries(store, &acme, &a)
        .await
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(left, vec![d4[0].id, d2[0].id]);
    assert_eq!(store.purge_webhook_history(T0 + 10_000).await.unwrap(), 2);
    assert!(deliveries(store, &acme, &a).await.is_empty());
    // A pending delivery is never purged, nor the event it is of.
    let of_b = deliveries(store, &acme, &b).await;
    assert_eq!(of_b.len(), 1);
    assert_eq!(
        (of_b[0].event.as_str(), of_b[0].status),
        (FINISHED, DeliveryStatus::Pending)
    );
    assert_eq!(counts(store, &acme).await, vec![(0, 0), (1, 0)]);
    let c = claim_due(store, T0 + 100_000, 10).await;
    assert_eq!(claimed(&c), vec![(b.id, FINISHED, t2)]);
    assert_eq!(c[0].payload, payload(t2, FINISHED));
}

/// Tasks with one event each in the claim race, and claimers at once.
const RACED_DELIVERIES: usize = 30;
const DELIVERY_CLAIMERS: usize = 4;

pub async fn concurrent_claims_take_each_delivery_once(store: &Arc<dyn Store>) {
    let acme = org(&**store, "acme").await;
    webhook(&**store, &acme, "https://a.example/", &[FINISHED]).await;
    let mut expected = BTreeSet::new();
    for n in 0..RACED_DELIVERIES {
        let id = some_task(&**store, &acme, &n.to_string()).await;
        event(&**store, &acme, id, FINISHED, T0).await;
        expected.insert(id);
    }
    let barrier = Arc::new(Barrier::new(DELIVERY_CLAIMERS));
    let mut handles = Vec::new();
    for c in 0..DELIVERY_CLAIMERS {
        let (store, barrier) = (Arc::clone(store), Arc::clone(&barrier));
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut got = Vec::new();
            for round in 0u32.. {
                let limit = 1 + (c as u32 + round) % 3;
                let claimed = claim_due(&*store, T0 + 1, limit).await;
                assert!(claimed.len() <= limit as usize, "at most the limit");
                if claimed.is_empty() {
                    break;
                }
                for d in claimed {
                    got.push(d.task_id);
                    record(&*store, &d, delivered(), T0 + 2).await;
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("claimer"));
    }
    let unique: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "a delivery claimed twice: {all:?}");
    assert_eq!(unique, expected);
}
