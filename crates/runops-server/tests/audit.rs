//! The audit log over real HTTP: every audited action leaves one event naming its
//! actor, object and peer address (127.0.0.1 here), no secret value ever reaches it,
//! only admins read it, and each organisation sees only its own.

use runops_client::{Client, ClientError};
use runops_jwt::testing::{JwksServer, TestKey, claims_for};
use runops_proto::agent::ConnectRequest;
use runops_proto::api::{
    AuditEvent, AuditQuery, TargetCreate, TargetUpdate, TaskCreate, UserCreate,
};
use runops_proto::token::TokenKind;
use runops_server::identity::UnknownUsers;
use runops_server::store::NewUser;
use runops_server::{Server, ServerArgs};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const ADMIN: &str = "rou_audit-test-admin-token";
const OTHER_ADMIN: &str = "rou_audit-other-org-admin-token-0123456789";
const SECRET_VALUE: &str = "hunter2-do-not-log-me";
const NEW_SECRET_VALUE: &str = "correct-horse-battery-staple";

/// Bound on anything a test waits for; far above what a healthy server needs.
const PATIENCE: Duration = Duration::from_secs(15);

async fn start(dir: &Path, lease: u64, jwks: Option<&JwksServer>) -> Server {
    let mut args = ServerArgs::new("127.0.0.1:0".parse().unwrap(), dir.to_path_buf());
    args.agent_lease_secs = lease;
    if let Some(jwks) = jwks {
        args.auth.auth_jwk_url = Some(jwks.url.clone());
        args.auth.auth_unknown_users = UnknownUsers::Create;
    }
    Server::start(args, Some(ADMIN.to_string())).await.unwrap()
}

fn connect_req(instance: &str, tags: Option<&str>) -> ConnectRequest {
    ConnectRequest {
        tags: tags.map(String::from),
        hostname: format!("host-{instance}"),
        version: "test".into(),
        instance_id: instance.into(),
        concurrency: 1,
        standby: false,
        restarted: false,
        spooled: Vec::new(),
        verifies_identity: false,
    }
}

async fn all_events(admin: &Client) -> Vec<AuditEvent> {
    admin
        .list_audit(&AuditQuery {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap()
}

/// The one event of `action` on `object_id` (panics, listing the log, otherwise).
fn the<'a>(events: &'a [AuditEvent], action: &str, object_id: &str) -> &'a AuditEvent {
    let found: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.action == action && e.object_id.as_deref() == Some(object_id))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one `{action}` on `{object_id}` in {events:#?}"
    );
    found[0]
}

fn by_user(e: &AuditEvent, email: &str) {
    assert_eq!(e.actor.as_deref(), Some(email), "{e:?}");
    assert_eq!(e.actor_kind, "user", "{e:?}");
    assert_eq!(e.remote_addr.as_deref(), Some("127.0.0.1"), "{e:?}");
}

#[tokio::test]
async fn every_audited_action_is_recorded_without_secrets_for_admins_of_the_org_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), 30, None).await;
    let url = server.url();
    let admin = Client::new(&url, ADMIN).unwrap();

    // login (GET /v1/me), user creation, the new user's login.
    admin.me().await.unwrap();
    let ana = admin
        .create_user(&UserCreate {
            name: "ana".into(),
            email: "ana@example.com".into(),
            groups: vec!["ops".into()],
            role: None,
        })
        .await
        .unwrap();
    let ana_client = Client::new(&url, &ana.token).unwrap();
    ana_client.me().await.unwrap();

    // Tokens: an API token created and revoked, an agent token created.
    let api_tok = admin.create_token(Some("ci".into())).await.unwrap();
    admin.revoke_token(api_tok.id).await.unwrap();
    let agent_tok = admin
        .create_agent_token(Some("edge".into()), None)
        .await
        .unwrap();

    // Targets: one with a write-only config, updated (a field and the config), another deleted.
    let config = |v: &str| {
        let mut m = serde_json::Map::new();
        m.insert("PASSWORD".into(), json!(v));
        Some(m)
    };
    admin
        .create_target(&TargetCreate {
            name: "db".into(),
            kind: "bash".into(),
            secret_provider: Some("runops".into()),
            config: config(SECRET_VALUE),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .update_target(
            "db",
            &TargetUpdate {
                description: Some("the main database".into()),
                config: config(NEW_SECRET_VALUE),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    admin
        .create_target(&TargetCreate {
            name: "scratch".into(),
            kind: "bash".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin.delete_target("scratch").await.unwrap();

    // Tasks: one created then killed before any agent took it.
    let task = admin
        .create_task(&TaskCreate {
            target: "db".into(),
            script: format!("echo {SECRET_VALUE}"),
            ..Default::default()
        })
        .await
        .unwrap();
    admin.kill_task(task.id).await.unwrap();

    // An agent connects and disconnects; a second one is ended by revoking its token.
    let agent = Client::new(&url, &agent_tok.token).unwrap();
    let s1 = agent
        .agent_connect(&connect_req("one", None))
        .await
        .unwrap()
        .session_id;
    agent.agent_disconnect(&s1).await.unwrap();
    let tok2 = admin
        .create_agent_token(None, Some("edge".into()))
        .await
        .unwrap();
    let s2 = Client::new(&url, &tok2.token)
        .unwrap()
        .agent_connect(&connect_req("two", Some("edge")))
        .await
        .unwrap()
        .session_id;
    admin.revoke_agent_token(tok2.id).await.unwrap();

    let events = all_events(&admin).await;
    let admin_email = runops_server::BOOTSTRAP_ADMIN_EMAIL;

    // Newest first, ids strictly decreasing.
    assert!(events.windows(2).all(|w| w[0].id > w[1].id), "{events:#?}");

    let logins: Vec<&AuditEvent> = events.iter().filter(|e| e.action == "login").collect();
    assert_eq!(logins.len(), 2, "{logins:#?}");
    by_user(the(&events, "login", admin_email), admin_email);
    let ana_login = the(&events, "login", "ana@example.com");
    by_user(ana_login, "ana@example.com");
    assert_eq!(ana_login.detail["via"], "api-token");

    let created = the(&events, "user.create", "ana@example.com");
    by_user(created, admin_email);
    assert_eq!(created.object_kind.as_deref(), Some("user"));
    assert_eq!(created.detail["groups"], json!(["ops"]));

    let id = api_tok.id.to_string();
    for action in ["token.create", "token.revoke"] {
        let e = the(&events, action, &id);
        by_user(e, admin_email);
        assert_eq!(e.object_kind.as_deref(), Some("api-token"));
    }
    let e = the(&events, "token.create", &agent_tok.id.to_string());
    by_user(e, admin_email);
    assert_eq!(e.object_kind.as_deref(), Some("agent-token"));
    assert_eq!(e.detail["name"], "edge");
    let e = the(&events, "token.revoke", &tok2.id.to_string());
    assert_eq!(e.object_kind.as_deref(), Some("agent-token"));

    let e = the(&events, "target.create", "db");
    by_user(e, admin_email);
    assert_eq!(e.object_kind.as_deref(), Some("target"));
    assert_eq!(e.detail["config_keys"], json!(["PASSWORD"]));
    let e = the(&events, "target.update", "db");
    by_user(e, admin_email);
    assert_eq!(
        e.detail["changed"],
        json!(["description", "config"]),
        "only the fields that changed: {e:?}"
    );
    assert_eq!(e.detail["config_keys"], json!(["PASSWORD"]));
    by_user(the(&events, "target.delete", "scratch"), admin_email);

    let tid = task.id.to_string();
    let e = the(&events, "task.create", &tid);
    by_user(e, admin_email);
    assert_eq!(e.object_kind.as_deref(), Some("task"));
    assert_eq!(e.detail["target"], "db");
    let e = the(&events, "task.kill", &tid);
    by_user(e, admin_email);
    assert_eq!(e.detail["outcome"], "cancelled-before-start");

    let e = the(&events, "agent.connect", &s1);
    assert_eq!(e.actor, None);
    assert_eq!(e.actor_kind, "agent");
    assert_eq!(e.remote_addr.as_deref(), Some("127.0.0.1"));
    assert_eq!(e.object_kind.as_deref(), Some("agent-session"));
    assert_eq!(e.detail["hostname"], "host-one");
    assert_eq!(e.detail["token_id"], agent_tok.id);
    let e = the(&events, "agent.disconnect", &s1);
    assert_eq!(e.actor_kind, "agent");
    assert_eq!(e.remote_addr.as_deref(), Some("127.0.0.1"));
    // Revoking a token ends its session: the revoking admin is the actor.
    by_user(the(&events, "agent.token-revoked", &s2), admin_email);

    // No secret value, token or script anywhere in the log.
    let text = serde_json::to_string(&events).unwrap();
    for secret in [
        SECRET_VALUE,
        NEW_SECRET_VALUE,
        ADMIN,
        &ana.token,
        &api_tok.token,
        &agent_tok.token,
        &tok2.token,
    ] {
        assert!(!text.contains(secret), "`{secret}` leaked into {text}");
    }

    // Query: limit, action filter, paging with `before`.
    let newest = admin
        .list_audit(&AuditQuery {
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(newest, events[..1]);
    let kills = admin
        .list_audit(&AuditQuery {
            action: Some("task.kill".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(kills.len(), 1);
    assert_eq!(kills[0].object_id.as_deref(), Some(tid.as_str()));
    let older = admin
        .list_audit(&AuditQuery {
            before: Some(events[0].id),
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(older, events[1..3]);

    // Non-admins: 403 (through the raw API too).
    match ana_client.list_audit(&AuditQuery::default()).await {
        Err(ClientError::Api { status, body }) => {
            assert_eq!(status, 403);
            assert_eq!(body.code, "forbidden");
            assert!(body.error.contains("only admins"), "{}", body.error);
        }
        other => panic!("a non-admin read the audit log: {other:?}"),
    }
    let raw = reqwest::Client::new()
        .get(format!("{url}/v1/audit"))
        .bearer_auth(&ana.token)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 403);

    // Another organisation's admin sees none of it (made below the API: there is no
    // org-creation endpoint).
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
    store
        .create_token(
            org_b,
            TokenKind::User,
            Some(bob.id),
            None,
            &runops_server::auth::hash_token(OTHER_ADMIN),
            now,
        )
        .await
        .unwrap();
    let other = Client::new(&url, OTHER_ADMIN).unwrap();
    assert!(all_events(&other).await.is_empty());
    other.me().await.unwrap();
    let theirs = all_events(&other).await;
    assert_eq!(theirs.len(), 1, "only bob's own login: {theirs:#?}");
    assert_eq!(theirs[0].actor.as_deref(), Some("bob@b.example"));
    // ... and org A's log did not get bob's login.
    assert_eq!(all_events(&admin).await.len(), events.len());

    // The log survives a restart (it is in the database).
    server.shutdown().await;
    let server = start(dir.path(), 30, None).await;
    let admin = Client::new(&server.url(), ADMIN).unwrap();
    let after = all_events(&admin).await;
    assert_eq!(after[..], events[..]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_lost_agent_is_recorded_as_a_system_event() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), 1, None).await;
    let admin = Client::new(&server.url(), ADMIN).unwrap();
    let tok = admin.create_agent_token(None, None).await.unwrap();
    let session = Client::new(&server.url(), &tok.token)
        .unwrap()
        .agent_connect(&connect_req("silent", None))
        .await
        .unwrap()
        .session_id;
    // It never polls: the reaper ends it when the lease runs out.
    let give_up = tokio::time::Instant::now() + PATIENCE;
    let lost = loop {
        let q = AuditQuery {
            action: Some("agent.lost".into()),
            ..Default::default()
        };
        if let Some(e) = admin.list_audit(&q).await.unwrap().into_iter().next() {
            break e;
        }
        assert!(tokio::time::Instant::now() < give_up, "never recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(lost.object_id.as_deref(), Some(session.as_str()));
    assert_eq!(lost.actor, None);
    assert_eq!(lost.actor_kind, "system");
    assert_eq!(lost.remote_addr, None);
    assert_eq!(lost.detail["hostname"], "host-silent");
    server.shutdown().await;
}

#[tokio::test]
async fn identity_provider_first_sign_in_records_user_creation_and_login() {
    let key = TestKey::ec("k");
    let jwks = JwksServer::start(&[&key]);
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), 30, Some(&jwks)).await;
    let jwt = key.sign(&claims_for("carol@example.com", 600));
    let carol = Client::new(&server.url(), &jwt).unwrap();
    carol.me().await.unwrap();
    carol.me().await.unwrap();
    let admin = Client::new(&server.url(), ADMIN).unwrap();
    let events = all_events(&admin).await;
    let created = the(&events, "user.create", "carol@example.com");
    by_user(created, "carol@example.com");
    assert_eq!(created.detail["via"], "identity-provider");
    let logins: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.action == "login" && e.actor.as_deref() == Some("carol@example.com"))
        .collect();
    assert_eq!(logins.len(), 2, "one per /v1/me, the user created once");
    assert_eq!(logins[0].detail["via"], "identity-provider");
    assert_eq!(logins[0].remote_addr.as_deref(), Some("127.0.0.1"));
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(&jwt), "the JWT leaked into the audit log");
    server.shutdown().await;
}
