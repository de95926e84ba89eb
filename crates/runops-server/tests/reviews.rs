//! Reviews over real HTTP: a task on a reviewed target waits in `pending-review`, no
//! agent is offered it until the rule is met and its creator runs it; rejections,
//! forced approvals, expiry and bad input.

use runops_client::{Client, ClientError};
use runops_proto::TaskStatus;
use runops_proto::agent::{ConnectRequest, PollRequest};
use runops_proto::api::{
    AuditQuery, TargetCreate, TargetUpdate, Task, TaskApprove, TaskCreate, TaskReject, TaskRun,
    UserCreate,
};
use runops_server::{Server, ServerArgs};
use std::future::Future;
use std::time::Duration;

const ADMIN: &str = "rou_test-admin-token";
const PATIENCE: Duration = Duration::from_secs(15);

struct Env {
    server: Server,
    _dir: tempfile::TempDir,
    admin: Client,
}

impl Env {
    async fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let mut args = ServerArgs::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
        // A short lease makes an empty poll answer in 3 s (see `offered`).
        args.agent_lease_secs = 5;
        let server = Server::start(args, Some(ADMIN.to_string())).await.unwrap();
        let admin = Client::new(&server.url(), ADMIN).unwrap();
        Env {
            server,
            _dir: dir,
            admin,
        }
    }

    async fn user(&self, email: &str, groups: &[&str]) -> Client {
        let created = self
            .admin
            .create_user(&UserCreate {
                name: email.into(),
                email: email.into(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                role: None,
            })
            .await
            .unwrap();
        Client::new(&self.server.url(), &created.token).unwrap()
    }

    async fn reviewed_target(&self, name: &str, review: &str, reviewers: &[&str]) {
        self.admin
            .create_target(&TargetCreate {
                name: name.into(),
                kind: "bash".into(),
                review: Some(review.into()),
                reviewers: (!reviewers.is_empty())
                    .then(|| reviewers.iter().map(|g| g.to_string()).collect()),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

async fn create(c: &Client, target: &str, script: &str) -> Task {
    c.create_task(&TaskCreate {
        target: target.into(),
        script: script.into(),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn api_err(e: ClientError) -> (u16, String, String) {
    match e {
        ClientError::Api { status, body } => (status, body.code, body.error),
        other => panic!("expected an API error, got {other}"),
    }
}

fn approve() -> TaskApprove {
    TaskApprove::default()
}

async fn eventually<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "condition never became true"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An untagged agent session; returns (agent client, session id).
async fn agent(env: &Env) -> (Client, String) {
    let t = env
        .admin
        .create_agent_token(Some("test".into()), None)
        .await
        .unwrap();
    let agent = Client::new(&env.server.url(), &t.token).unwrap();
    let c = agent
        .agent_connect(&ConnectRequest {
            tags: None,
            hostname: "host-a".into(),
            version: "test".into(),
            instance_id: "a".into(),
            concurrency: 4,
            standby: false,
            restarted: false,
            spooled: Vec::new(),
            verifies_identity: false,
        })
        .await
        .unwrap();
    (agent, c.session_id)
}

/// The task ids one poll offers (an empty one is held for 60% of the lease).
async fn offered(agent: &Client, session: &str) -> Vec<i64> {
    let req = PollRequest {
        session_id: session.into(),
        running: vec![],
        free_slots: 4,
    };
    agent
        .agent_poll(&req, Duration::from_secs(10))
        .await
        .unwrap()
        .offers
        .iter()
        .map(|o| o.task_id)
        .collect()
}

#[tokio::test]
async fn a_team_review_needs_each_group_and_the_creator_runs_the_task() {
    let env = Env::new().await;
    let carol = env.user("carol@example.com", &["dev"]).await;
    let dan = env.user("dan@example.com", &["dba"]).await;
    let sam = env.user("sam@example.com", &["security"]).await;
    let out = env.user("out@example.com", &["dev"]).await;
    env.reviewed_target("prod", "team", &["dba", "security"])
        .await;
    let (agent, session) = agent(&env).await;

    let task = create(&carol, "prod", "echo hi").await;
    assert_eq!(task.status, TaskStatus::PendingReview);
    let review = task.review.clone().unwrap();
    assert_eq!((review.approvals, review.required), (0, 2));
    assert_eq!(review.sha256.len(), 64);
    assert!(offered(&agent, &session).await.is_empty());

    // The creator, and a user outside the groups, are refused.
    let (status, _, msg) = api_err(carol.approve_task(task.id, &approve()).await.unwrap_err());
    assert_eq!(status, 403, "{msg}");
    assert!(
        msg.contains("the creator of a task cannot review it"),
        "{msg}"
    );
    let (status, _, msg) = api_err(out.approve_task(task.id, &approve()).await.unwrap_err());
    assert_eq!(status, 403, "{msg}");
    assert!(msg.contains("dba, security"), "{msg}");
    // The inbox shows it to reviewers, not to the creator.
    assert_eq!(dan.list_reviews(false).await.unwrap().len(), 1);
    assert!(carol.list_reviews(false).await.unwrap().is_empty());
    assert_eq!(carol.list_reviews(true).await.unwrap().len(), 1);

    // An approval of another version is refused.
    let stale = TaskApprove {
        sha256: Some("0".repeat(64)),
        ..approve()
    };
    let (status, code, _) = api_err(dan.approve_task(task.id, &stale).await.unwrap_err());
    assert_eq!((status, code.as_str()), (409, "review_mismatch"));

    let seen = TaskApprove {
        comment: Some("looks fine".into()),
        sha256: Some(review.sha256.clone()),
        ..approve()
    };
    let t = dan.approve_task(task.id, &seen).await.unwrap();
    assert_eq!(t.status, TaskStatus::PendingReview);
    let r = t.review.unwrap();
    assert_eq!(r.approvals, 1);
    assert_eq!(r.groups[0].approved_by.as_deref(), Some("dan@example.com"));
    assert_eq!(r.reviews[0].comment.as_deref(), Some("looks fine"));
    let (status, code, _) = api_err(dan.approve_task(task.id, &approve()).await.unwrap_err());
    assert_eq!((status, code.as_str()), (409, "already_reviewed"));
    // Not approved yet: the creator cannot run it.
    let (status, _, msg) = api_err(
        carol
            .run_task(task.id, &TaskRun::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 409, "{msg}");
    assert!(msg.contains("1 of 2"), "{msg}");
    assert!(offered(&agent, &session).await.is_empty());

    let t = sam.approve_task(task.id, &approve()).await.unwrap();
    assert_eq!(t.status, TaskStatus::Approved);
    assert!(t.review.as_ref().unwrap().expires_at.is_some());
    // Approved is not running.
    assert!(offered(&agent, &session).await.is_empty());
    let (status, _, _) = api_err(
        sam.run_task(task.id, &TaskRun::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403);
    let t = carol.run_task(task.id, &TaskRun::default()).await.unwrap();
    assert_eq!(t.status, TaskStatus::Ready);
    assert_eq!(offered(&agent, &session).await, vec![task.id]);
    let (status, code, _) = api_err(
        carol
            .run_task(task.id, &TaskRun::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code.as_str()), (409, "already_running"));

    let audit = env.admin.list_audit(&AuditQuery::default()).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.contains(&"task.approve"), "{actions:?}");
    assert!(actions.contains(&"task.run"), "{actions:?}");
    env.server.shutdown().await;
}

#[tokio::test]
async fn a_rejection_needs_a_reason_and_ends_the_task() {
    let env = Env::new().await;
    let carol = env.user("carol@example.com", &[]).await;
    let bob = env.user("bob@example.com", &[]).await;
    env.reviewed_target("prod", "anyone", &[]).await;
    let task = create(&carol, "prod", "rm -rf /tmp/x").await;

    let (status, _, msg) = api_err(
        bob.reject_task(task.id, &TaskReject::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("needs a reason"), "{msg}");
    assert_eq!(
        env.admin.get_task(task.id).await.unwrap().status,
        TaskStatus::PendingReview
    );
    let t = bob
        .reject_task(
            task.id,
            &TaskReject {
                comment: "not on a friday".into(),
                sha256: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(t.status, TaskStatus::Rejected);
    assert!(
        t.failure_message
            .as_deref()
            .unwrap()
            .contains("not on a friday")
    );
    // A finished task is not reviewed again.
    let other = env.user("other@example.com", &[]).await;
    let (status, code, _) = api_err(other.approve_task(task.id, &approve()).await.unwrap_err());
    assert_eq!((status, code.as_str()), (409, "task_ended"));
    env.server.shutdown().await;
}

#[tokio::test]
async fn an_admin_force_approves_with_a_reason_and_it_is_marked() {
    let env = Env::new().await;
    let carol = env.user("carol@example.com", &[]).await;
    let bob = env.user("bob@example.com", &["dba"]).await;
    env.reviewed_target("prod", "team", &["dba"]).await;
    let task = create(&carol, "prod", "echo x").await;
    let force = TaskApprove {
        force: Some(true),
        ..approve()
    };
    let (status, _, _) = api_err(bob.approve_task(task.id, &force).await.unwrap_err());
    assert_eq!(status, 403);
    let (status, _, msg) = api_err(env.admin.approve_task(task.id, &force).await.unwrap_err());
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("needs a reason"), "{msg}");
    let t = env
        .admin
        .approve_task(
            task.id,
            &TaskApprove {
                reason: Some("outage, dba asleep".into()),
                ..force
            },
        )
        .await
        .unwrap();
    assert_eq!(t.status, TaskStatus::Approved);
    let entry = &t.review.as_ref().unwrap().reviews[0];
    assert!(entry.forced);
    assert_eq!(entry.comment.as_deref(), Some("outage, dba asleep"));
    let shown = env.admin.get_task(task.id).await.unwrap();
    assert!(shown.review.unwrap().reviews[0].forced);
    let audit = env
        .admin
        .list_audit(&AuditQuery {
            action: Some("task.force_approve".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].detail["forced"], true);
    env.server.shutdown().await;
}

#[tokio::test]
async fn approvals_and_reviews_expire_with_a_clear_reason() {
    let env = Env::new().await;
    let carol = env.user("carol@example.com", &[]).await;
    let bob = env.user("bob@example.com", &[]).await;
    env.admin
        .create_target(&TargetCreate {
            name: "prod".into(),
            kind: "bash".into(),
            review: Some("anyone".into()),
            approval_ttl: Some(1),
            review_ttl: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    let approved = create(&carol, "prod", "echo a").await;
    let waiting = create(&carol, "prod", "echo b").await;
    bob.approve_task(approved.id, &approve()).await.unwrap();
    for (id, what) in [
        (approved.id, "approval expired"),
        (waiting.id, "review expired"),
    ] {
        let t = eventually(|| async {
            let t = env.admin.get_task(id).await.unwrap();
            t.status.is_final().then_some(t)
        })
        .await;
        assert_eq!(t.status, TaskStatus::Failure);
        assert_eq!(
            t.failure_reason,
            Some(runops_proto::FailureReason::ReviewExpired)
        );
        let msg = t.failure_message.unwrap();
        assert!(msg.contains(what), "{msg}");
    }
    let (status, code, _) = api_err(
        carol
            .run_task(approved.id, &TaskRun::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code.as_str()), (409, "task_ended"));
    env.server.shutdown().await;
}

#[tokio::test]
async fn review_settings_are_checked_and_nothing_changes_on_bad_input() {
    let env = Env::new().await;
    env.user("dan@example.com", &["dba"]).await;
    let cases: Vec<(TargetCreate, &str)> = vec![
        (
            TargetCreate {
                review: Some("team".into()),
                reviewers: Some(vec!["dba".into(), "nobody-group".into()]),
                ..Default::default()
            },
            "unknown reviewer group `nobody-group`",
        ),
        (
            TargetCreate {
                review: Some("team".into()),
                reviewers: Some(vec!["dba".into()]),
                min_approvals: Some(2),
                ..Default::default()
            },
            "min_approvals is 2",
        ),
        (
            TargetCreate {
                review: Some("team".into()),
                ..Default::default()
            },
            "needs reviewer groups",
        ),
        (
            TargetCreate {
                review: Some("anyone".into()),
                reviewers: Some(vec!["dba".into()]),
                ..Default::default()
            },
            "takes no reviewer groups",
        ),
        (
            TargetCreate {
                reviewers: Some(vec!["dba".into()]),
                ..Default::default()
            },
            "review is `none`",
        ),
        (
            TargetCreate {
                review: Some("anyone".into()),
                approval_ttl: Some(0),
                ..Default::default()
            },
            "approval_ttl must be between",
        ),
    ];
    for (req, want) in cases {
        let req = TargetCreate {
            name: "prod".into(),
            kind: "bash".into(),
            ..req
        };
        let (status, _, msg) = api_err(env.admin.create_target(&req).await.unwrap_err());
        assert_eq!(status, 400, "{msg}");
        assert!(msg.contains(want), "{want:?} not in {msg:?}");
    }
    assert!(env.admin.list_targets().await.unwrap().is_empty());
    env.reviewed_target("prod", "team", &["dba"]).await;
    let (status, _, msg) = api_err(
        env.admin
            .update_target(
                "prod",
                &TargetUpdate {
                    reviewers: Some(vec!["typo".into()]),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 400, "{msg}");
    assert_eq!(
        env.admin.get_target("prod").await.unwrap().reviewers,
        vec!["dba".to_string()]
    );
    env.server.shutdown().await;
}

#[tokio::test]
async fn the_store_refuses_to_change_a_task_after_its_creation() {
    let env = Env::new().await;
    let carol = env.user("carol@example.com", &[]).await;
    env.reviewed_target("prod", "anyone", &[]).await;
    let task = create(&carol, "prod", "echo safe").await;
    let db = env._dir.path().join("runops.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let err = sqlx::query("UPDATE tasks SET script = 'echo evil' WHERE id = ?")
        .bind(task.id)
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("a task cannot be changed after its creation"),
        "{err}"
    );
    pool.close().await;
    assert_eq!(
        env.admin.get_task(task.id).await.unwrap().script,
        "echo safe"
    );
    env.server.shutdown().await;
}

#[tokio::test]
async fn a_task_waiting_for_review_or_to_be_run_can_be_killed() {
    let env = Env::new().await;
    let carol = env.user("carol@example.com", &[]).await;
    let bob = env.user("bob@example.com", &[]).await;
    env.reviewed_target("prod", "anyone", &[]).await;
    let pending = create(&carol, "prod", "echo a").await;
    let approved = create(&carol, "prod", "echo b").await;
    bob.approve_task(approved.id, &approve()).await.unwrap();
    for id in [pending.id, approved.id] {
        let t = carol.kill_task(id).await.unwrap();
        assert_eq!(t.status, TaskStatus::Failure);
        assert_eq!(
            t.failure_reason,
            Some(runops_proto::FailureReason::Cancelled)
        );
    }
    let (status, code, _) = api_err(bob.approve_task(pending.id, &approve()).await.unwrap_err());
    assert_eq!((status, code.as_str()), (409, "task_ended"));
    let (status, code, _) = api_err(
        carol
            .run_task(approved.id, &TaskRun::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code.as_str()), (409, "task_ended"));
    env.server.shutdown().await;
}

#[tokio::test]
async fn a_key_bound_token_runs_an_approved_task_only_with_a_fresh_proof_and_the_agent_gets_both() {
    use runops_jwt::proof::TaskBinding;
    use runops_jwt::testing::{JwksServer, TestKey, claims_for};
    let idp = TestKey::rsa("k");
    let jwks = JwksServer::start(&[&idp]);
    let dir = tempfile::tempdir().unwrap();
    let mut args = ServerArgs::new("127.0.0.1:0".parse().unwrap(), dir.path().to_path_buf());
    args.agent_lease_secs = 5;
    args.auth.auth_jwk_url = Some(jwks.url.clone());
    let server = Server::start(args, Some(ADMIN.to_string())).await.unwrap();
    let env = Env {
        admin: Client::new(&server.url(), ADMIN).unwrap(),
        server,
        _dir: dir,
    };
    let bob = env.user("bob@example.com", &[]).await;
    env.reviewed_target("prod", "anyone", &[]).await;
    let laptop = TestKey::ec("laptop");
    let mut claims = claims_for("erin@example.com", 600);
    claims["cnf"] = serde_json::json!({"jkt": laptop.thumbprint()});
    let jwt = idp.sign(&claims);
    let erin = Client::new(&env.server.url(), &jwt).unwrap();
    // A reviewed task waits for its reviews, not for a proof.
    let task = create(&erin, "prod", "id").await;
    assert_eq!(task.status, TaskStatus::PendingReview);
    bob.approve_task(task.id, &approve()).await.unwrap();
    let (status, _, msg) = api_err(
        erin.run_task(task.id, &TaskRun::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("needs a proof"), "{msg}");
    let binding = TaskBinding {
        task_id: task.id,
        target: "prod",
        kind: "bash",
        script: "id",
    };
    let forged = TestKey::ec("attacker")
        .proof_key()
        .sign(&jwt, &binding)
        .unwrap();
    let (status, _, _) = api_err(
        erin.run_task(
            task.id,
            &TaskRun {
                proof: Some(forged),
            },
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(status, 400);
    assert_eq!(
        env.admin.get_task(task.id).await.unwrap().status,
        TaskStatus::Approved
    );
    let proof = laptop.proof_key().sign(&jwt, &binding).unwrap();
    let before_run = chrono::Utc::now().timestamp_millis();
    let ran = erin
        .run_task(
            task.id,
            &TaskRun {
                proof: Some(proof.clone()),
            },
        )
        .await
        .unwrap();
    assert_eq!(ran.status, TaskStatus::Ready);
    let (agent, session) = agent(&env).await;
    let req = PollRequest {
        session_id: session,
        running: vec![],
        free_slots: 4,
    };
    let offers = agent
        .agent_poll(&req, Duration::from_secs(10))
        .await
        .unwrap()
        .offers;
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].user_jwt.as_deref(), Some(jwt.as_str()));
    assert_eq!(offers[0].user_jwt_proof.as_deref(), Some(proof.as_str()));
    // The agent holds the token against the time of the run, not of the creation.
    assert!(offers[0].created_at_ms.unwrap() >= before_run);
    env.server.shutdown().await;
}
