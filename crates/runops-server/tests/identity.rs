//! Identity and trust over real HTTP: organisation isolation on every endpoint, user API
//! tokens, identity-provider login (a JWKS served on loopback, keys made by openssl) and
//! the hand-off of the creator's JWT to the agent (memory only, lost on restart).

use reqwest::Method;
use runops_client::Client;
use runops_jwt::testing::{JwksServer, TestKey, claims_for};
use runops_proto::agent::{ConnectRequest, PollRequest};
use runops_proto::api::{TargetCreate, TaskCreate};
use runops_proto::token::{TOKEN_SECRET_BYTES, TokenKind};
use runops_proto::{FailureReason, TaskStatus};
use runops_server::identity::{LOST_TOKEN_MESSAGE, UnknownUsers};
use runops_server::store::NewUser;
use runops_server::{Server, ServerArgs};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const ADMIN: &str = "rou_identity-test-admin-token";
const OTHER_ADMIN: &str = "rou_other-org-admin-token-0123456789";
const OTHER_AGENT: &str = "roa_b3RoZXI.other-org-agent-token-0123456789";

/// Bound on anything a test waits for; far above what a healthy server needs.
const PATIENCE: Duration = Duration::from_secs(15);

async fn start(dir: &Path, jwks: Option<(&JwksServer, UnknownUsers)>) -> Server {
    let mut args = ServerArgs::new("127.0.0.1:0".parse().unwrap(), dir.to_path_buf());
    args.offer_timeout_secs = 5;
    // Short lease: an idle poll is held only a few seconds.
    args.agent_lease_secs = 5;
    if let Some((jwks, unknown)) = jwks {
        args.auth.auth_jwk_url = Some(jwks.url.clone());
        args.auth.auth_unknown_users = unknown;
    }
    Server::start(args, Some(ADMIN.to_string())).await.unwrap()
}

/// One raw call: (status, JSON body or null).
async fn call(
    url: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let http = reqwest::Client::new();
    let mut rb = http
        .request(method, format!("{url}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = tokio::time::timeout(PATIENCE, rb.send())
        .await
        .expect("answered")
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn connect_req(instance: &str) -> ConnectRequest {
    ConnectRequest {
        tags: None,
        hostname: "host".into(),
        version: "test".into(),
        instance_id: instance.into(),
        concurrency: 4,
        standby: false,
        restarted: false,
        spooled: Vec::new(),
        verifies_identity: false,
    }
}

#[tokio::test]
async fn another_organisation_sees_none_of_this_ones_objects_on_any_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), None).await;
    let url = server.url();
    let admin = Client::new(&url, ADMIN).unwrap();

    // Org A (the first one): a target, an agent that ran a task with a log, tokens, users.
    admin
        .create_target(&TargetCreate {
            name: "secret-db".into(),
            kind: "bash".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let ana = admin
        .create_user(&runops_proto::api::UserCreate {
            name: "ana".into(),
            email: "ana@a.example".into(),
            groups: vec![],
            role: None,
        })
        .await
        .unwrap();
    let agent_tok = admin
        .create_agent_token(Some("a".into()), None)
        .await
        .unwrap();
    let agent = Client::new(&url, &agent_tok.token).unwrap();
    let session = agent
        .agent_connect(&connect_req("a-1"))
        .await
        .unwrap()
        .session_id;
    let done = admin
        .create_task(&TaskCreate {
            target: "secret-db".into(),
            script: "echo hi".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let poll = PollRequest {
        session_id: session.clone(),
        running: vec![],
        free_slots: 1,
    };
    let offers = agent
        .agent_poll(&poll, Duration::from_secs(10))
        .await
        .unwrap()
        .offers;
    assert_eq!(offers.len(), 1);
    agent.agent_start(done.id, &session).await.unwrap();
    agent
        .agent_upload_log(done.id, &session, 0, b"org A's output\n".to_vec())
        .await
        .unwrap();
    let waiting = admin
        .create_task(&TaskCreate {
            target: "secret-db".into(),
            script: "sleep 1".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // Org B, made below the API (there is no org-creation endpoint).
    let store = server.store();
    let now = chrono::Utc::now().timestamp_millis();
    let org_b = store.create_org("other", now).await.unwrap();
    let bob = store
        .create_user(
            org_b,
            &NewUser {
                name: "bob".into(),
                email: "bob@b.example".into(),
                groups: vec![],
                role: runops_proto::Role::Admin,
            },
            now,
        )
        .await
        .unwrap();
    let hash = |t: &str| runops_server::auth::hash_token(t);
    store
        .create_token(
            org_b,
            TokenKind::User,
            Some(bob.id),
            None,
            &hash(OTHER_ADMIN),
            now,
        )
        .await
        .unwrap();
    store
        .create_token(org_b, TokenKind::Agent, None, None, &hash(OTHER_AGENT), now)
        .await
        .unwrap();
    let a_user_tokens = admin.list_tokens(true).await.unwrap();
    let ana_token = a_user_tokens
        .iter()
        .find(|t| t.user == ana.user.email)
        .unwrap()
        .id;

    // Every user endpoint of runops_proto::api that names an object: 404 for org B.
    let d = done.id;
    let named: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/v1/targets/secret-db".into(), None),
        (
            Method::PUT,
            "/v1/targets/secret-db".into(),
            Some(json!({"description": "mine now"})),
        ),
        (Method::DELETE, "/v1/targets/secret-db".into(), None),
        (
            Method::POST,
            "/v1/tasks".into(),
            Some(json!({"target": "secret-db", "script": "id"})),
        ),
        (Method::GET, format!("/v1/tasks/{d}"), None),
        (Method::GET, format!("/v1/tasks/{d}/logs"), None),
        (Method::GET, format!("/v1/tasks/{d}/logs?follow=true"), None),
        (
            Method::POST,
            format!("/v1/tasks/{}/kill", waiting.id),
            Some(json!({})),
        ),
        (
            Method::DELETE,
            format!("/v1/agent-tokens/{}", agent_tok.id),
            None,
        ),
        (Method::DELETE, format!("/v1/tokens/{ana_token}"), None),
    ];
    for (method, path, body) in named {
        let (status, answer) = call(&url, OTHER_ADMIN, method.clone(), &path, body).await;
        assert_eq!(
            status, 404,
            "{method} {path} answered {status} to another org: {answer}"
        );
        assert_eq!(answer["code"], "not_found", "{method} {path}: {answer}");
    }
    // Every listing: none of org A's objects.
    let listings = [
        "/v1/targets",
        "/v1/tasks",
        "/v1/agents",
        "/v1/agent-tokens",
        "/v1/users",
        "/v1/tokens",
        "/v1/tokens?all=true",
    ];
    // Filtering by another org's target answers exactly like a target that exists nowhere.
    for target in ["secret-db", "no-such-target-anywhere"] {
        let path = format!("/v1/tasks?target={target}");
        let (status, answer) = call(&url, OTHER_ADMIN, Method::GET, &path, None).await;
        assert_eq!(status, 404, "{path}: {answer}");
        assert_eq!(
            answer["error"],
            format!("target `{target}` not found"),
            "{path}: {answer}"
        );
    }
    for path in listings {
        let (status, answer) = call(&url, OTHER_ADMIN, Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {answer}");
        let text = answer.to_string();
        for leak in [
            "secret-db",
            "ana@a.example",
            "admin@localhost",
            "host",
            &session,
        ] {
            assert!(
                !text.contains(leak),
                "{path} shows org A's `{leak}` to org B: {text}"
            );
        }
    }
    let (_, me) = call(&url, OTHER_ADMIN, Method::GET, "/v1/me", None).await;
    assert_eq!(me["org"], "other");

    // Every agent endpoint of runops_proto::agent, with org B's agent token on org A's
    // session and tasks: the session is not found for that token.
    let agent_calls: Vec<(Method, String, Option<Value>, u16)> = vec![
        (
            Method::POST,
            "/v1/agent/poll".into(),
            Some(json!({"session_id": session, "running": [d], "free_slots": 1})),
            404,
        ),
        (
            Method::POST,
            format!("/v1/agent/tasks/{}/start", waiting.id),
            Some(json!({"session_id": session})),
            404,
        ),
        (
            Method::POST,
            format!("/v1/agent/tasks/{d}/finish"),
            Some(
                json!({"session_id": session, "status": "success", "exit_code": 0, "failure_reason": null, "failure_message": null, "redacted": true, "log_size": 15, "log_location": null, "elapsed_ms": 1}),
            ),
            404,
        ),
        (
            Method::POST,
            "/v1/agent/disconnect".into(),
            Some(json!({"session_id": session})),
            404,
        ),
    ];
    for (method, path, body, want) in agent_calls {
        let (status, answer) = call(&url, OTHER_AGENT, method.clone(), &path, body).await;
        assert_eq!(
            status, want,
            "{method} {path} with another org's agent token: {answer}"
        );
    }
    let http = reqwest::Client::new();
    let status = http
        .post(format!(
            "{url}/v1/agent/tasks/{d}/logs?session_id={session}&offset=15"
        ))
        .bearer_auth(OTHER_AGENT)
        .body("forged\n")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 404, "log upload into another org's task");
    // Org B's own agent connects fine and is offered none of org A's work.
    let (status, connected) = call(
        &url,
        OTHER_AGENT,
        Method::POST,
        "/v1/agent/connect",
        Some(serde_json::to_value(connect_req("b-1")).unwrap()),
    )
    .await;
    assert_eq!(status, 200, "{connected}");
    let b_session = connected["session_id"].as_str().unwrap().to_string();
    let (_, polled) = call(
        &url,
        OTHER_AGENT,
        Method::POST,
        "/v1/agent/poll",
        Some(json!({"session_id": b_session, "running": [], "free_slots": 5})),
    )
    .await;
    assert_eq!(
        polled["offers"],
        json!([]),
        "org B's agent was offered org A's task"
    );
    let (status, _) = call(
        &url,
        OTHER_AGENT,
        Method::POST,
        &format!("/v1/agent/tasks/{}/start", waiting.id),
        Some(json!({"session_id": b_session})),
    )
    .await;
    assert_eq!(status, 404, "org B's agent started org A's task");

    // Org B may use the same names in its own org; org A sees none of it.
    let (status, _) = call(
        &url,
        OTHER_ADMIN,
        Method::POST,
        "/v1/targets",
        Some(json!({"name": "secret-db", "type": "python"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = call(
        &url,
        OTHER_ADMIN,
        Method::POST,
        "/v1/tasks",
        Some(json!({"target": "secret-db", "script": "print(1)"})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(admin.get_target("secret-db").await.unwrap().kind, "bash");
    assert!(
        admin
            .list_users()
            .await
            .unwrap()
            .iter()
            .all(|u| u.email != "bob@b.example")
    );
    assert_eq!(
        admin.list_tasks(&Default::default()).await.unwrap().len(),
        2
    );

    // Org A's objects are untouched.
    assert_eq!(
        admin.get_target("secret-db").await.unwrap().description,
        None
    );
    assert_eq!(
        admin.get_task(waiting.id).await.unwrap().status,
        TaskStatus::Ready
    );
    assert_eq!(
        &admin.task_logs(d, 0).await.unwrap()[..],
        b"org A's output\n"
    );
    assert!(
        admin.list_agent_tokens(&Default::default()).await.unwrap()[0]
            .revoked_at
            .is_none()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn api_tokens_are_random_shown_once_hashed_revocable_and_kept_to_their_side() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), None).await;
    let url = server.url();
    let admin = Client::new(&url, ADMIN).unwrap();
    let ana = admin
        .create_user(&runops_proto::api::UserCreate {
            name: "ana".into(),
            email: "ana@example.com".into(),
            groups: vec![],
            role: None,
        })
        .await
        .unwrap();
    let ana_client = Client::new(&url, &ana.token).unwrap();
    let second = ana_client
        .create_token(Some("laptop".into()))
        .await
        .unwrap();
    let third = ana_client.create_token(None).await.unwrap();
    for t in [&ana.token, &second.token, &third.token] {
        let secret = t.strip_prefix("rou_").expect("user token prefix");
        assert!(
            secret.len() * 6 >= TOKEN_SECRET_BYTES * 8,
            "at least 256 random bits: {t}"
        );
    }
    assert_ne!(second.token, third.token);
    let mine = ana_client.list_tokens(false).await.unwrap();
    assert_eq!(mine.len(), 3);
    assert!(mine.iter().all(|t| t.user == "ana@example.com"));
    assert_eq!(mine.iter().filter(|t| t.current).count(), 1);
    // Not shown again, not stored in clear.
    let listed = serde_json::to_string(&mine).unwrap();
    assert!(!listed.contains(&second.token[4..]));
    let mut db = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
        db.extend(std::fs::read(entry.path()).unwrap_or_default());
    }
    for t in [&ana.token, &second.token, &third.token] {
        assert!(
            !db.windows(t.len()).any(|w| w == t.as_bytes()),
            "a token is stored in clear"
        );
    }

    // Admin-only: everyone's tokens, and other users' tokens.
    let err = ana_client.list_tokens(true).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let admin_tokens = admin.list_tokens(false).await.unwrap();
    let err = ana_client
        .revoke_token(admin_tokens[0].id)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let err = ana_client
        .create_user(&runops_proto::api::UserCreate {
            name: "eve".into(),
            email: "eve@example.com".into(),
            groups: vec![],
            role: Some("admin".into()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");

    // Revoking: the token stops working at once; the others keep working.
    ana_client.revoke_token(second.id).await.unwrap();
    let revoked = Client::new(&url, &second.token).unwrap();
    let err = revoked.me().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(err.to_string().contains("revoked"), "{err}");
    Client::new(&url, &third.token).unwrap().me().await.unwrap();
    admin.revoke_token(third.id).await.unwrap();
    assert_eq!(
        Client::new(&url, &third.token)
            .unwrap()
            .me()
            .await
            .unwrap_err()
            .status(),
        Some(401)
    );

    // User tokens never reach the agent protocol; agent tokens never the user API.
    let (status, answer) = call(
        &url,
        &ana.token,
        Method::POST,
        "/v1/agent/connect",
        Some(serde_json::to_value(connect_req("x")).unwrap()),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    let agent_tok = admin.create_agent_token(None, None).await.unwrap();
    for path in ["/v1/me", "/v1/tokens", "/v1/targets", "/v1/users"] {
        let (status, answer) = call(&url, &agent_tok.token, Method::GET, path, None).await;
        assert_eq!(status, 403, "agent token on {path}: {answer}");
    }
    let (status, _) = call(
        &url,
        &agent_tok.token,
        Method::POST,
        "/v1/tokens",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 403);
    server.shutdown().await;
}

#[tokio::test]
async fn identity_provider_users_sign_in_with_jwts_and_their_tasks_carry_them() {
    let key = TestKey::rsa("idp-1");
    let ec = TestKey::ec("idp-2");
    let jwks = JwksServer::start(&[&key, &ec]);
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some((&jwks, UnknownUsers::Create))).await;
    let url = server.url();
    let admin = Client::new(&url, ADMIN).unwrap();
    admin
        .create_target(&TargetCreate {
            name: "db".into(),
            kind: "bash".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let mut claims = claims_for("carol@example.com", 600);
    claims["groups"] = json!(["dba", "ops"]);
    claims["name"] = json!("Carol");
    let jwt = key.sign(&claims);
    let carol = Client::new(&url, &jwt).unwrap();
    let me = carol.me().await.unwrap();
    assert_eq!(
        (me.email.as_str(), me.name.as_str(), me.role.as_str()),
        ("carol@example.com", "Carol", "user")
    );
    assert_eq!(me.groups, ["dba", "ops"]);
    assert_eq!(me.org, "default");
    // Later sign-ins refresh the groups from the claim.
    claims["groups"] = json!("dba");
    let me = Client::new(&url, &ec.sign(&claims))
        .unwrap()
        .me()
        .await
        .unwrap();
    assert_eq!(me.groups, ["dba"]);
    assert_eq!(
        admin
            .list_users()
            .await
            .unwrap()
            .iter()
            .filter(|u| u.email == "carol@example.com")
            .count(),
        1
    );

    // Refused tokens: 401 with the reason.
    let expired = key.sign(&claims_for("carol@example.com", -600));
    let err = Client::new(&url, &expired).unwrap().me().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(err.to_string().contains("the token expired at"), "{err}");
    let forged = TestKey::rsa("idp-1").sign(&claims);
    let err = Client::new(&url, &forged).unwrap().me().await.unwrap_err();
    assert!(
        err.to_string().contains("signature does not match"),
        "{err}"
    );
    let none = runops_jwt::testing::unsigned_token("idp-1", &claims);
    let err = Client::new(&url, &none).unwrap().me().await.unwrap_err();
    assert!(err.to_string().contains("algorithm `none`"), "{err}");
    // A JWT never reaches the agent protocol.
    let (status, _) = call(
        &url,
        &jwt,
        Method::POST,
        "/v1/agent/connect",
        Some(serde_json::to_value(connect_req("j")).unwrap()),
    )
    .await;
    assert_eq!(status, 403);

    // A task created with the JWT carries it in its offer; one created with an API token
    // carries none. Nothing of the JWT is in the database.
    let with_jwt = carol
        .create_task(&TaskCreate {
            target: "db".into(),
            script: "id".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(with_jwt.user, "carol@example.com");
    let with_api_token = admin
        .create_task(&TaskCreate {
            target: "db".into(),
            script: "id".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let agent_tok = admin.create_agent_token(None, None).await.unwrap();
    let agent = Client::new(&url, &agent_tok.token).unwrap();
    let session = agent
        .agent_connect(&connect_req("i-1"))
        .await
        .unwrap()
        .session_id;
    let offers = agent
        .agent_poll(
            &PollRequest {
                session_id: session.clone(),
                running: vec![],
                free_slots: 5,
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap()
        .offers;
    let offer = |id| offers.iter().find(|o| o.task_id == id).expect("offered");
    assert_eq!(offer(with_jwt.id).user_jwt.as_deref(), Some(jwt.as_str()));
    assert_eq!(offer(with_api_token.id).user_jwt, None);
    let signature = jwt.rsplit('.').next().unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        assert!(
            !bytes
                .windows(signature.len())
                .any(|w| w == signature.as_bytes()),
            "the JWT is in {}",
            entry.path().display()
        );
    }
    agent.agent_start(with_jwt.id, &session).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_users_can_be_rejected() {
    let key = TestKey::ec("k");
    let jwks = JwksServer::start(&[&key]);
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some((&jwks, UnknownUsers::Reject))).await;
    let err = Client::new(
        &server.url(),
        &key.sign(&claims_for("dave@example.com", 600)),
    )
    .unwrap()
    .me()
    .await
    .unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(
        err.to_string()
            .contains("is not a user of this organisation"),
        "{err}"
    );
    let admin = Client::new(&server.url(), ADMIN).unwrap();
    admin
        .create_user(&runops_proto::api::UserCreate {
            name: "dave".into(),
            email: "Dave@Example.com".into(),
            groups: vec!["ops".into()],
            role: None,
        })
        .await
        .unwrap();
    let me = Client::new(
        &server.url(),
        &key.sign(&claims_for("dave@example.com", 600)),
    )
    .unwrap()
    .me()
    .await
    .unwrap();
    assert_eq!(me.groups, ["ops"], "no groups claim: the groups stay");
    server.shutdown().await;
}

#[tokio::test]
async fn a_task_whose_jwt_was_lost_in_a_restart_fails_instead_of_running_unauthenticated() {
    let key = TestKey::rsa("k");
    let jwks = JwksServer::start(&[&key]);
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some((&jwks, UnknownUsers::Create))).await;
    let admin = Client::new(&server.url(), ADMIN).unwrap();
    admin
        .create_target(&TargetCreate {
            name: "db".into(),
            kind: "bash".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let agent_tok = admin.create_agent_token(None, None).await.unwrap().token;
    let jwt = key.sign(&claims_for("erin@example.com", 600));
    let task = Client::new(&server.url(), &jwt)
        .unwrap()
        .create_task(&TaskCreate {
            target: "db".into(),
            script: "id".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    server.shutdown().await;

    let server = start(dir.path(), Some((&jwks, UnknownUsers::Create))).await;
    let admin = Client::new(&server.url(), ADMIN).unwrap();
    let agent = Client::new(&server.url(), &agent_tok).unwrap();
    let session = agent
        .agent_connect(&connect_req("r-1"))
        .await
        .unwrap()
        .session_id;
    let offers = agent
        .agent_poll(
            &PollRequest {
                session_id: session,
                running: vec![],
                free_slots: 5,
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap()
        .offers;
    assert!(
        offers.is_empty(),
        "a task without its token reached the agent: {offers:?}"
    );
    let t = admin.get_task(task.id).await.unwrap();
    assert_eq!(t.status, TaskStatus::Failure);
    assert_eq!(t.failure_reason, Some(FailureReason::Unauthenticated));
    assert_eq!(t.failure_message.as_deref(), Some(LOST_TOKEN_MESSAGE));
    server.shutdown().await;
}

#[tokio::test]
async fn a_task_of_a_key_bound_jwt_waits_for_its_creators_proof_which_goes_to_the_agent() {
    use runops_jwt::proof::TaskBinding;
    let idp = TestKey::rsa("k");
    let jwks = JwksServer::start(&[&idp]);
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some((&jwks, UnknownUsers::Create))).await;
    let admin = Client::new(&server.url(), ADMIN).unwrap();
    admin
        .create_target(&TargetCreate {
            name: "db".into(),
            kind: "bash".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let agent_tok = admin.create_agent_token(None, None).await.unwrap().token;
    let laptop = TestKey::ec("laptop");
    let mut claims = claims_for("erin@example.com", 600);
    claims["cnf"] = json!({"jkt": laptop.thumbprint()});
    let jwt = idp.sign(&claims);
    let erin = Client::new(&server.url(), &jwt).unwrap();
    let req = TaskCreate {
        target: "db".into(),
        script: "id".into(),
        ..Default::default()
    };
    let create = || erin.create_task(&req);
    let proven = create().await.unwrap();
    assert_eq!(proven.status, TaskStatus::Created);
    let binding = TaskBinding {
        task_id: proven.id,
        target: "db",
        kind: "bash",
        script: "id",
    };
    let forged = TestKey::ec("attacker")
        .proof_key()
        .sign(&jwt, &binding)
        .unwrap();
    let err = erin.prove_task(proven.id, &forged).await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().contains("bound to key"), "{err}");
    // Another user (the admin) cannot prove it either.
    let proof = laptop.proof_key().sign(&jwt, &binding).unwrap();
    let err = admin.prove_task(proven.id, &proof).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let unproven = create().await.unwrap();

    let t = erin.prove_task(proven.id, &proof).await.unwrap();
    assert_eq!(t.status, TaskStatus::Ready);
    let err = erin.prove_task(proven.id, &proof).await.unwrap_err();
    assert_eq!(err.code(), Some("not_awaiting_proof"), "{err}");

    let agent = Client::new(&server.url(), &agent_tok).unwrap();
    let session = agent
        .agent_connect(&connect_req("p-1"))
        .await
        .unwrap()
        .session_id;
    let offers = agent
        .agent_poll(
            &PollRequest {
                session_id: session,
                running: vec![],
                free_slots: 5,
            },
            PATIENCE,
        )
        .await
        .unwrap()
        .offers;
    let ids: Vec<i64> = offers.iter().map(|o| o.task_id).collect();
    assert_eq!(ids, vec![proven.id], "only the proven task is offered");
    assert_eq!(offers[0].user_jwt.as_deref(), Some(jwt.as_str()));
    assert_eq!(offers[0].user_jwt_proof.as_deref(), Some(proof.as_str()));
    assert_eq!(
        offers[0].created_at_ms,
        Some(proven.created_at.timestamp_millis())
    );
    server.shutdown().await;

    // The proof never came, and the restart took the token: the task fails.
    let server = start(dir.path(), Some((&jwks, UnknownUsers::Create))).await;
    let admin = Client::new(&server.url(), ADMIN).unwrap();
    let t = admin.get_task(unproven.id).await.unwrap();
    assert_eq!(t.status, TaskStatus::Failure);
    assert_eq!(t.failure_reason, Some(FailureReason::Unauthenticated));
    assert_eq!(t.failure_message.as_deref(), Some(LOST_TOKEN_MESSAGE));
    server.shutdown().await;
}
