//! Webhooks over real HTTP: a receiver on loopback gets each event of an organisation's
//! tasks and reviews (emitted here as the review handlers do, through
//! `notify::emit`), signed, once each, in order per task, also after it failed for a
//! while; the Slack format carries the redacted preview and the review commands; the
//! API is admins-only, validated and audited.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use runops_client::{Client, ClientError};
use runops_proto::api::{AuditQuery, TargetCreate, TaskCreate, UserCreate};
use runops_proto::webhook::{
    DeliveryStatus, WebhookCreate, WebhookCreated, WebhookDelivery, WebhookFormat,
};
use runops_server::notify::{self, EventKind};
use runops_server::{Server, ServerArgs};
use serde_json::{Value, json};
use sha2::Sha256;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

const ADMIN: &str = "rou_webhooks-test-admin-token";

/// Bound on anything a test waits for; far above what a healthy server needs.
const PATIENCE: Duration = Duration::from_secs(20);

async fn start(dir: &Path) -> Server {
    let mut args = ServerArgs::new("127.0.0.1:0".parse().unwrap(), dir.to_path_buf());
    // Retries every second at most, so a receiver that recovers is served quickly.
    args.webhook_retry_max_secs = 1;
    Server::start(args, Some(ADMIN.to_string())).await.unwrap()
}

/// One request the receiver got, and what it answered.
#[derive(Debug)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
    answered: u16,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

#[derive(Clone)]
struct ReceiverState {
    tx: mpsc::UnboundedSender<Received>,
    failing: Arc<AtomicBool>,
}

/// A webhook receiver on loopback; answers 503 while `failing`, 200 otherwise.
struct Receiver {
    url: String,
    rx: mpsc::UnboundedReceiver<Received>,
    failing: Arc<AtomicBool>,
}

impl Receiver {
    async fn start() -> Receiver {
        Receiver::start_on("127.0.0.1:0").await
    }

    async fn start_on(addr: &str) -> Receiver {
        let (tx, rx) = mpsc::unbounded_channel();
        let failing = Arc::new(AtomicBool::new(false));
        let state = ReceiverState {
            tx,
            failing: failing.clone(),
        };
        let app = Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, rx, failing }
    }

    async fn next(&mut self) -> Received {
        tokio::time::timeout(PATIENCE, self.rx.recv())
            .await
            .expect("a webhook delivery in time")
            .expect("the receiver runs")
    }

    /// Requests until `n` were answered 2xx (every request, failed ones included).
    async fn until_delivered(&mut self, n: usize) -> Vec<Received> {
        let mut all = Vec::new();
        while all.iter().filter(|r: &&Received| r.answered == 200).count() < n {
            all.push(self.next().await);
        }
        all
    }
}

async fn receive(State(s): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let code = if s.failing.load(Ordering::SeqCst) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let _ = s.tx.send(Received {
        headers,
        body,
        answered: code.as_u16(),
    });
    code
}

/// Checks `X-Runops-Signature: t=<unix>,v1=<hex>` the way docs/webhooks.md tells
/// receivers to: HMAC-SHA256 under the secret of `<t>.<body>`.
fn assert_signed(r: &Received, secret: &str) {
    let sig = r.header("x-runops-signature");
    let (t, v1) = sig
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("bad signature header {sig:?}"));
    let t: i64 = t.parse().expect("t is a unix time");
    assert!(
        (chrono::Utc::now().timestamp() - t).abs() < 600,
        "timestamp {t} is not recent"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&r.body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        v1,
        want,
        "signature of {:?}",
        String::from_utf8_lossy(&r.body)
    );
}

async fn webhook(
    admin: &Client,
    url: &str,
    format: WebhookFormat,
    events: &[&str],
) -> WebhookCreated {
    admin
        .create_webhook(&WebhookCreate {
            url: url.into(),
            format,
            events: events.iter().map(|e| e.to_string()).collect(),
        })
        .await
        .unwrap()
}

/// The webhook's deliveries once `n` of them are recorded delivered (the receiver has
/// answered before the server records it).
async fn all_delivered(admin: &Client, webhook_id: i64, n: usize) -> Vec<WebhookDelivery> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let list = admin
            .list_webhook_deliveries(webhook_id, &Default::default())
            .await
            .unwrap();
        let done = list
            .iter()
            .filter(|d| d.status == DeliveryStatus::Delivered)
            .count();
        if done == n {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} deliveries expected delivered: {list:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn bash_target(admin: &Client, name: &str) {
    admin
        .create_target(&TargetCreate {
            name: name.into(),
            kind: "bash".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// A task that waits for an agent (none runs here).
async fn task(admin: &Client, target: &str, script: &str) -> i64 {
    admin
        .create_task(&TaskCreate {
            target: target.into(),
            script: script.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .id
}

#[tokio::test]
async fn review_and_finish_events_arrive_signed_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let admin = Client::new(&server.url(), ADMIN).unwrap();
    let mut rx = Receiver::start().await;
    let created = webhook(&admin, &rx.url, WebhookFormat::Generic, &[]).await;
    assert!(created.secret.starts_with("whsec_"), "{}", created.secret);
    assert_eq!(created.webhook.events.len(), 4, "all events by default");

    bash_target(&admin, "sh").await;
    let id = task(&admin, "sh", "echo hello").await;
    let st = server.state();
    let org = server
        .store()
        .find_org_id(runops_server::DEFAULT_ORG)
        .await
        .unwrap()
        .unwrap();
    notify::emit(&st, org, id, EventKind::ReviewRequested, json!({})).await;
    notify::emit(
        &st,
        org,
        id,
        EventKind::ReviewApproved,
        json!({"by": "admin@localhost", "forced": true, "reason": "outage"}),
    )
    .await;
    notify::emit(
        &st,
        org,
        id,
        EventKind::ReviewRejected,
        json!({"by": "bob@example.com", "reason": "wrong table"}),
    )
    .await;
    // The kill ends the task: the server emits `task.finished` itself.
    admin.kill_task(id).await.unwrap();

    let got = rx.until_delivered(4).await;
    assert_eq!(got.len(), 4, "each event once: {got:?}");
    let events: Vec<String> = got
        .iter()
        .map(|r| r.header("x-runops-event").to_string())
        .collect();
    assert_eq!(
        events,
        [
            "review.requested",
            "review.approved",
            "review.rejected",
            "task.finished"
        ]
    );
    let mut delivery_ids = Vec::new();
    for r in &got {
        assert_signed(r, &created.secret);
        assert_eq!(r.header("content-type"), "application/json");
        delivery_ids.push(r.header("x-runops-delivery").to_string());
        let body = r.json();
        assert_eq!(body["event"], r.header("x-runops-event"));
        assert_eq!(body["task"]["id"], id);
        assert_eq!(body["task"]["target"], "sh");
        assert_eq!(body["task"]["creator"], "admin@localhost");
        assert_eq!(body["task"]["script_preview"], "echo hello");
        assert!(
            body["event_id"].is_i64() && body["time"].is_string(),
            "{body}"
        );
    }
    delivery_ids.dedup();
    assert_eq!(delivery_ids.len(), 4, "one delivery id per event");
    let approved = got[1].json();
    assert_eq!(approved["detail"]["forced"], true);
    assert_eq!(approved["detail"]["reason"], "outage");
    assert_eq!(got[2].json()["detail"]["reason"], "wrong table");
    let finished = got[3].json();
    assert_eq!(finished["task"]["status"], "failure");
    assert_eq!(finished["task"]["failure_reason"], "cancelled");

    // The deliveries API shows them delivered on the first attempt.
    let list = all_delivered(&admin, created.webhook.id, 4).await;
    assert_eq!(list.len(), 4);
    assert!(
        list.iter().all(|d| d.status == DeliveryStatus::Delivered
            && d.attempts == 1
            && d.last_status == Some(200)),
        "{list:#?}"
    );
    // History past its retention goes; nothing pending is touched.
    let purged = server
        .store()
        .purge_webhook_history(runops_server::now_ms() + 1)
        .await
        .unwrap();
    assert_eq!(purged, 4);
    let list = admin
        .list_webhook_deliveries(created.webhook.id, &Default::default())
        .await
        .unwrap();
    assert!(list.is_empty(), "{list:#?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_receiver_that_fails_for_a_while_gets_every_event_once_in_order_per_task() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let admin = Client::new(&server.url(), ADMIN).unwrap();
    let mut rx = Receiver::start().await;
    let created = webhook(&admin, &rx.url, WebhookFormat::Generic, &[]).await;
    bash_target(&admin, "sh").await;
    let (a, b) = (
        task(&admin, "sh", "echo a").await,
        task(&admin, "sh", "echo b").await,
    );
    let st = server.state();
    let org = server
        .store()
        .find_org_id(runops_server::DEFAULT_ORG)
        .await
        .unwrap()
        .unwrap();

    rx.failing.store(true, Ordering::SeqCst);
    for id in [a, b] {
        notify::emit(&st, org, id, EventKind::ReviewRequested, json!({})).await;
        notify::emit(
            &st,
            org,
            id,
            EventKind::ReviewApproved,
            json!({"by": "x@example.com"}),
        )
        .await;
    }
    admin.kill_task(a).await.unwrap();
    admin.kill_task(b).await.unwrap();
    // A few refused attempts (the first retry of each chain's head), then recover.
    let mut got = Vec::new();
    while got.len() < 4 {
        got.push(rx.next().await);
    }
    rx.failing.store(false, Ordering::SeqCst);
    got.extend(rx.until_delivered(6).await);

    for id in [a, b] {
        let mine: Vec<(i64, u16)> = got
            .iter()
            .map(|r| (r.json(), r.answered))
            .filter(|(body, _)| body["task"]["id"] == id)
            .map(|(body, code)| (body["event_id"].as_i64().unwrap(), code))
            .collect();
        // Never a later event of the task before an earlier one was delivered.
        assert!(
            mine.windows(2).all(|w| w[0].0 <= w[1].0),
            "task {id}: {mine:?}"
        );
        let delivered: Vec<i64> = mine
            .iter()
            .filter(|(_, c)| *c == 200)
            .map(|(e, _)| *e)
            .collect();
        assert_eq!(
            delivered.len(),
            3,
            "task {id}: each event delivered once: {mine:?}"
        );
        assert!(
            delivered.windows(2).all(|w| w[0] < w[1]),
            "task {id}: {mine:?}"
        );
    }
    let list = all_delivered(&admin, created.webhook.id, 6).await;
    assert_eq!(list.len(), 6);
    let retried = list.iter().filter(|d| d.attempts > 1).count();
    assert!(retried >= 2, "the heads were tried again: {list:#?}");
    server.shutdown().await;
}

#[tokio::test]
async fn slack_messages_carry_the_redacted_preview_and_only_subscribed_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let admin = Client::new(&server.url(), ADMIN).unwrap();
    let mut rx = Receiver::start().await;
    let created = webhook(&admin, &rx.url, WebhookFormat::Slack, &["review.requested"]).await;
    assert_eq!(created.webhook.events, ["review.requested"]);
    bash_target(&admin, "db").await;
    let script = "psql -c \"delete from users where email = 'carol@example.com'\"\nline2\nline3\nline4\nline5\nline6\nline7";
    let id = task(&admin, "db", script).await;
    let st = server.state();
    let org = server
        .store()
        .find_org_id(runops_server::DEFAULT_ORG)
        .await
        .unwrap()
        .unwrap();
    notify::emit(&st, org, id, EventKind::ReviewRequested, json!({})).await;
    admin.kill_task(id).await.unwrap();

    let r = rx.next().await;
    assert_eq!(r.header("x-runops-event"), "review.requested");
    let body = r.json();
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("Review requested: task {id} on `db`")),
        "{text}"
    );
    let blocks = body["blocks"].to_string();
    assert!(!blocks.contains("carol@example.com"), "{blocks}");
    assert!(blocks.contains("[EMAIL_ADDRESS]"), "{blocks}");
    assert!(
        blocks.contains("(2 more lines)") && !blocks.contains("line6"),
        "{blocks}"
    );
    assert!(
        blocks.contains(&format!("runops tasks approve {id}")),
        "{blocks}"
    );
    assert!(
        blocks.contains(&format!("runops tasks reject {id} --comment")),
        "{blocks}"
    );

    // The kill's `task.finished` is not subscribed: nothing else was queued.
    let list = admin
        .list_webhook_deliveries(created.webhook.id, &Default::default())
        .await
        .unwrap();
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0].event, "review.requested");
    server.shutdown().await;
}

#[tokio::test]
async fn webhook_api_is_for_admins_validates_input_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let url = server.url();
    let admin = Client::new(&url, ADMIN).unwrap();

    let bad = |url: &str, events: &[&str]| WebhookCreate {
        url: url.into(),
        format: WebhookFormat::Generic,
        events: events.iter().map(|e| e.to_string()).collect(),
    };
    for (req, says) in [
        (bad("ftp://example.com/x", &[]), "http:// or https://"),
        (bad("example.com/hook", &[]), "not a valid URL"),
        (bad("https://u:p@example.com/", &[]), "user or password"),
        (
            bad("https://example.com/", &["task.done"]),
            "unknown webhook event `task.done`",
        ),
    ] {
        let e = admin.create_webhook(&req).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "{e}");
        assert!(e.to_string().contains(says), "{e}");
    }
    let e = admin.delete_webhook(999).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert!(e.to_string().contains("webhook 999 not found"), "{e}");

    let ana = admin
        .create_user(&UserCreate {
            name: "ana".into(),
            email: "ana@example.com".into(),
            groups: vec![],
            role: None,
        })
        .await
        .unwrap();
    let ana = Client::new(&url, &ana.token).unwrap();
    let e: ClientError = ana
        .create_webhook(&bad("https://example.com/", &[]))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(
        e.to_string().contains("only admins can manage webhooks"),
        "{e}"
    );
    assert_eq!(ana.list_webhooks().await.unwrap_err().status(), Some(403));

    let created = admin
        .create_webhook(&bad("https://hooks.example.com/services/T0/B0/sekrit", &[]))
        .await
        .unwrap();
    // The secret is shown once: never listed, never stored in clear.
    let listed = admin.list_webhooks().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, created.webhook.id);
    let listed_json = serde_json::to_string(&listed).unwrap();
    assert!(!listed_json.contains(&created.secret));
    server.shutdown().await;
    let db = std::fs::read(dir.path().join("runops.db")).unwrap();
    let wal = std::fs::read(dir.path().join("runops.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes
                .windows(created.secret.len())
                .any(|w| w == created.secret.as_bytes()),
            "the secret is stored in clear"
        );
    }
    let server = start(dir.path()).await;
    let admin = Client::new(&server.url(), ADMIN).unwrap();
    admin.delete_webhook(created.webhook.id).await.unwrap();
    assert!(admin.list_webhooks().await.unwrap().is_empty());

    let events = admin
        .list_audit(&AuditQuery {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    let id = created.webhook.id.to_string();
    let of = |action: &str| {
        events
            .iter()
            .find(|e| e.action == action && e.object_id.as_deref() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("no {action} in {events:#?}"))
    };
    let c = of("webhook.create");
    assert_eq!(c.detail["host"], "hooks.example.com");
    assert!(
        !c.detail.to_string().contains("sekrit"),
        "the URL's path is a credential"
    );
    of("webhook.delete");
    server.shutdown().await;
}

#[tokio::test]
async fn pending_deliveries_survive_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let admin = Client::new(&server.url(), ADMIN).unwrap();
    // A port nothing listens on (yet): every attempt is refused.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let created = webhook(
        &admin,
        &format!("http://{addr}/hook"),
        WebhookFormat::Generic,
        &["task.finished"],
    )
    .await;
    bash_target(&admin, "sh").await;
    let id = task(&admin, "sh", "echo later").await;
    admin.kill_task(id).await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let list = admin
            .list_webhook_deliveries(created.webhook.id, &Default::default())
            .await
            .unwrap();
        if list[0].attempts >= 1 && list[0].last_error.is_some() {
            assert_eq!(list[0].status, DeliveryStatus::Pending);
            assert!(
                list[0]
                    .last_error
                    .as_deref()
                    .unwrap()
                    .contains("cannot connect"),
                "{list:#?}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{list:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;

    let mut rx = Receiver::start_on(&addr.to_string()).await;
    let server = start(dir.path()).await;
    let admin = Client::new(&server.url(), ADMIN).unwrap();
    let r = rx.next().await;
    assert_eq!(r.header("x-runops-event"), "task.finished");
    assert_eq!(r.json()["task"]["id"], id);
    assert_signed(&r, &created.secret);
    all_delivered(&admin, created.webhook.id, 1).await;
    server.shutdown().await;
}
