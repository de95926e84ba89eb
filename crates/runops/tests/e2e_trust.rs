//! The trust model of the agent protocol, tried as an attacker would, against the real
//! binary: an agent session is usable only with the token that opened it, agent tokens
//! are made by admins for one tag set, and only admins change where a target's tasks
//! run.

mod common;

use common::*;
use runops_client::Client;
use runops_proto::TaskStatus;
use runops_proto::agent::{FinishRequest, PollRequest};
use std::time::Duration;

const CONFIG_SECRET: &str = "cfg-value-5f1d2c9b7e";

fn user_token(server: &Server, email: &str) -> String {
    let out = server.cli_ok(&[
        "users", "create", "--name", "mallory", "--email", email, "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("users create --json");
    v["token"].as_str().expect("a token").to_string()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_stolen_session_id_gets_no_task_no_config_and_cannot_forge_a_result() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 30);
    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "db",
        "--type",
        "bash",
        "--tags",
        "prod",
        "--secret-provider",
        "runops",
        "--config",
        &format!(r#"{{"DB_PASSWORD": "{CONFIG_SECRET}"}}"#),
    ]);
    let prod_token = server.create_agent_token_for("prod");
    let agent = Agent::start(&sb, "prod", &prod_token, Some("prod"), &[]);
    // Any user sees the live session's id.
    let mallory = user_token(&server, "mallory@example.com");
    let session = wait_for("the prod agent to be listed", || {
        let out = server
            .cli_cmd(&["agents", "list", "--json"])
            .env("RUNOPS_TOKEN", &mallory)
            .output()
            .unwrap();
        let agents: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        agents.as_array()?.first()?["id"].as_str().map(String::from)
    });

    // Mallory cannot mint an agent token herself; an admin made one for elsewhere
    // (untagged), and another one for prod, which she got hold of.
    let out = server
        .cli_cmd(&["agents", "create-token"])
        .env("RUNOPS_TOKEN", &mallory)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("only admins can create agent tokens"),
        "{}",
        stderr(&out)
    );
    let stolen_tokens = [
        server.create_agent_token(),
        server.create_agent_token_for("prod"),
    ];

    // Freeze the real agent so that only the thief polls while the task waits.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid()),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let id = server.submit("db", "echo \"pw=$DB_PASSWORD\"");
    let rt = runtime();
    for token in &stolen_tokens {
        let thief = Client::new(&server.url(), token).unwrap();
        let poll = PollRequest {
            session_id: session.clone(),
            running: vec![],
            free_slots: 10,
        };
        let err = rt
            .block_on(thief.agent_poll(&poll, Duration::from_secs(2)))
            .expect_err("a poll on another token's session must be refused");
        assert_eq!(err.status(), Some(404), "{err}");
        assert!(
            err.to_string().contains("not found for this agent token"),
            "{err}"
        );
        let err = rt
            .block_on(thief.agent_start(id, &session))
            .expect_err("start on another token's session must be refused");
        assert_eq!(err.status(), Some(404), "{err}");
        let forged = FinishRequest {
            session_id: session.clone(),
            result: runops_proto::agent::TaskResult {
                status: TaskStatus::Success,
                exit_code: Some(0),
                failure_reason: None,
                failure_message: None,
                redacted: true,
                log_size: 0,
                log_location: None,
                elapsed_ms: 1,
            },
            log_tail: None,
        };
        let err = rt
            .block_on(thief.agent_finish(id, &forged))
            .expect_err("finish on another token's session must be refused");
        assert_eq!(err.status(), Some(404), "{err}");
        let err = rt
            .block_on(thief.agent_disconnect(&session))
            .expect_err("disconnect of another token's session must be refused");
        assert_eq!(err.status(), Some(404), "{err}");
    }
    // Still waiting (or offered to the frozen agent's own poll), never taken over.
    let status = server.task(id)["status"].clone();
    assert!(status == "ready" || status == "dispatched", "{status}");

    // The real agent wakes up and runs the task; its result stands.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid()),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    let t = server.wait_final(id);
    assert_eq!(t["status"], "success", "{t}\n{}", agent.log());
    let log = server.logs(id);
    assert!(log.contains("pw=[REDACTED:DB_PASSWORD]"), "{log}");

    // Every refusal is in the audit log.
    let audit = server.cli_ok(&[
        "audit",
        "list",
        "--action",
        "agent.session-refused",
        "--json",
    ]);
    let events: serde_json::Value = serde_json::from_str(&audit).unwrap();
    assert!(
        events.as_array().map(|a| a.len()).unwrap_or(0) >= 8,
        "{audit}"
    );
    drop(agent);
}

#[test]
fn an_agent_whose_tags_differ_from_its_token_is_refused_at_connect() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 30);
    let prod_token = server.create_agent_token_for("prod");
    let mut agent = Agent::start(&sb, "dev", &prod_token, Some("dev"), &[]);
    let status = wait_for("the mismatched agent to exit", || {
        agent.child.try_wait().unwrap()
    });
    assert!(!status.success());
    let log = agent.log();
    assert!(
        log.contains("is for agents with TAGS=`prod`; this agent has TAGS=`dev`"),
        "{log}"
    );
    // And a token made for untagged agents (every token made before tag scoping).
    let plain = server.create_agent_token();
    let mut agent = Agent::start(&sb, "prod", &plain, Some("prod"), &[]);
    let status = wait_for("the agent with an untagged token to exit", || {
        agent.child.try_wait().unwrap()
    });
    assert!(!status.success());
    assert!(
        agent.log().contains("is for untagged agents"),
        "{}",
        agent.log()
    );

    // Tokens are listed and revoked per tag set.
    let listed = server.cli_ok(&["agents", "tokens", "--tags", "prod", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["tags"], "prod");
    let out = server.cli_ok(&["agents", "revoke-token", "--tags", "prod"]);
    assert!(out.contains("revoked"), "{out}");
    let listed = server.cli_ok(&["agents", "tokens", "--tags", "prod", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert!(!listed[0]["revoked_at"].is_null(), "{listed}");
}

#[test]
fn a_user_cannot_redirect_a_target_to_an_agent_they_run() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 30);
    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "db",
        "--type",
        "bash",
        "--tags",
        "prod",
        "--secret-path",
        "PROD_SECRETS",
    ]);
    let mallory = user_token(&server, "mallory@example.com");
    for args in [
        &["targets", "update", "--name", "db", "--tags", "mallory"][..],
        &[
            "targets",
            "update",
            "--name",
            "db",
            "--secret-path",
            "OTHER",
        ][..],
        &[
            "targets",
            "create",
            "--name",
            "mine",
            "--type",
            "bash",
            "--tags",
            "prod",
            "--secret-path",
            "PROD_SECRETS",
        ][..],
    ] {
        let out = server
            .cli_cmd(args)
            .env("RUNOPS_TOKEN", &mallory)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("only admins can"), "{}", stderr(&out));
    }
    let t: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["targets", "show", "db", "--json"])).unwrap();
    assert_eq!(t["tags"], "prod");
    assert_eq!(t["secret_path"], "PROD_SECRETS");
}

#[test]
fn a_case_variant_of_an_existing_e_mail_is_refused() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 30);
    user_token(&server, "bob@example.com");
    let out = server.cli(&[
        "users",
        "create",
        "--name",
        "bob2",
        "--email",
        "Bob@Example.COM",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("already"), "{}", stderr(&out));
}
