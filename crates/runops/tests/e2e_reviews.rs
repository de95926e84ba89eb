//! End-to-end: reviews with the real binary. A task on a reviewed target waits in
//! `pending-review` (no agent is offered it) until the reviews its target asks for are
//! in; then it waits in `approved` until its creator runs it: the waiting `tasks
//! create` does so by itself, a detached creator with `runops tasks run ID`, sending
//! their current credentials (a fresh identity token for agents with `JWK_URL`).

mod common;

use common::*;
use runops_jwt::testing::{JwksServer, TestKey, claims_for};
use serde_json::{Value, json};
use std::process::{Output, Stdio};

fn user(server: &Server, name: &str, groups: &str) -> String {
    server.create_user(name, groups)
}

fn cli_as(server: &Server, token: &str, args: &[&str]) -> Output {
    server.cli_as(token, args)
}

fn ok_as(server: &Server, token: &str, args: &[&str]) -> String {
    server.cli_ok_as(token, args)
}

/// Asserts the command failed and its error says `want`.
fn refused_as(server: &Server, token: &str, args: &[&str], want: &str) {
    let out = cli_as(server, token, args);
    assert!(
        !out.status.success(),
        "`runops {}` should fail",
        args.join(" ")
    );
    assert!(
        stderr(&out).contains(want),
        "`runops {}`: {want:?} not in {}",
        args.join(" "),
        stderr(&out)
    );
}

fn submit_as(server: &Server, token: &str, target: &str, script: &str) -> i64 {
    ok_as(
        server,
        token,
        &["tasks", "create", "-t", target, "-s", script, "--no-wait"],
    )
    .trim()
    .parse()
    .expect("--no-wait prints the id")
}

/// The one task waiting for review on `target` (a waiting `tasks create` made it).
fn pending_on(server: &Server, target: &str) -> i64 {
    wait_for("the task to wait for review", || {
        let out = server.cli_ok(&[
            "tasks",
            "list",
            "--status",
            "pending-review",
            "-t",
            target,
            "--json",
        ]);
        let list: Vec<Value> = serde_json::from_str(&out).unwrap();
        list.first().and_then(|t| t["id"].as_i64())
    })
}

fn untagged_agent(sb: &Sandbox, server: &Server, env: &[(&str, &str)]) -> Agent {
    let token = server.create_agent_token();
    let agent = Agent::start(sb, "a", &token, None, env);
    wait_for("the agent to connect", || {
        (server
            .cli_ok(&["agents", "list", "--json"])
            .contains("\"hostname\""))
        .then_some(())
    });
    agent
}

fn bash_target(server: &Server, name: &str, extra: &[&str]) {
    let mut args = vec!["targets", "create", "--name", name, "--type", "bash"];
    args.extend_from_slice(extra);
    server.cli_ok(&args);
}

#[test]
fn a_team_review_holds_the_task_until_each_group_approved_then_the_waiting_cli_runs_it() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let agent = untagged_agent(&sb, &server, &[]);
    let carol = user(&server, "carol", "dev");
    let dan = user(&server, "dan", "dba");
    let sam = user(&server, "sam", "security");
    let out = user(&server, "out", "dev");
    bash_target(
        &server,
        "prod",
        &["--review", "team", "--reviewers", "dba,security"],
    );

    let mut waiting = server.cli_cmd(&[
        "tasks",
        "create",
        "-t",
        "prod",
        "-s",
        "echo reviewed-output; exit 3",
    ]);
    waiting
        .env("RUNOPS_TOKEN", &carol)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let waiting = waiting.spawn().expect("spawn tasks create");
    let id = pending_on(&server, "prod");
    let ids = id.to_string();

    // Refused: the creator, and a user in neither group. Nothing changes.
    refused_as(
        &server,
        &carol,
        &["tasks", "approve", &ids],
        "the creator of a task cannot review it",
    );
    refused_as(
        &server,
        &out,
        &["tasks", "approve", &ids],
        "needs a review from the group(s) dba, security, and you are in none of them",
    );
    // The inbox of a reviewer shows it; the creator's does not.
    let inbox = ok_as(&server, &dan, &["reviews"]);
    assert!(inbox.contains("carol@example.com"), "{inbox}");
    assert!(inbox.contains("echo reviewed-output"), "{inbox}");
    assert!(
        ok_as(&server, &carol, &["reviews", "--json"]).trim() == "[]",
        "the creator reviews nothing"
    );

    let said = ok_as(
        &server,
        &dan,
        &["tasks", "approve", &ids, "--comment", "checked the query"],
    );
    assert!(said.contains("1 of 2"), "{said}");
    // One group is not enough: still pending, and no agent was offered it.
    let t = server.task(id);
    assert_eq!(t["status"], "pending-review", "{t}");
    assert!(t["agent"].is_null(), "the task reached an agent: {t}");
    assert!(
        !agent.log().contains("task started"),
        "the agent started something: {}",
        agent.log()
    );
    let shown = server.cli_ok(&["tasks", "show", &ids]);
    assert!(
        shown.contains("group dba: approved by dan@example.com at"),
        "{shown}"
    );
    assert!(shown.contains("group security: waiting"), "{shown}");

    ok_as(&server, &sam, &["tasks", "approve", &ids]);
    let out = waiting.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "reviewed-output");
    let err = stderr(&out);
    assert!(
        err.contains("waiting for review: 0 of 2 (groups dba, security)"),
        "{err}"
    );
    assert!(
        err.contains("approved by dan@example.com, sam@example.com"),
        "{err}"
    );
    let t = server.task(id);
    assert_eq!(t["status"], "failure");
    assert_eq!(t["exit_code"], 3);
    assert_eq!(server.logs(id).matches("reviewed-output").count(), 1);
    assert_eq!(agent.log().matches("task started").count(), 1, "ran once");
    let shown = server.cli_ok(&["tasks", "show", &ids]);
    assert!(
        shown.contains("group security: approved by sam@example.com"),
        "{shown}"
    );
}

#[test]
fn a_rejection_needs_a_reason_ends_the_task_and_the_script_never_runs() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let _agent = untagged_agent(&sb, &server, &[]);
    let carol = user(&server, "carol", "");
    let bob = user(&server, "bob", "");
    bash_target(&server, "prod", &["--review", "anyone"]);
    let marker = sb.path("ran");
    let script = format!("touch '{}'", marker.display());
    let mut waiting = server.cli_cmd(&["tasks", "create", "-t", "prod", "-s", &script]);
    waiting
        .env("RUNOPS_TOKEN", &carol)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let waiting = waiting.spawn().expect("spawn tasks create");
    let id = pending_on(&server, "prod");
    let ids = id.to_string();

    refused_as(
        &server,
        &bob,
        &["tasks", "reject", &ids, "--comment", " "],
        "a rejection needs a reason",
    );
    assert_eq!(server.task(id)["status"], "pending-review");
    ok_as(
        &server,
        &bob,
        &[
            "tasks",
            "reject",
            &ids,
            "--comment",
            "not during the freeze",
        ],
    );
    let out = waiting.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("rejected by bob@example.com: not during the freeze"),
        "{}",
        stderr(&out)
    );
    let t = server.task(id);
    assert_eq!(t["status"], "rejected", "{t}");
    assert!(t["started_at"].is_null(), "{t}");
    assert!(!marker.exists(), "a rejected task's script ran");
    // A finished task is not reviewed any more.
    let other = user(&server, "other", "");
    refused_as(
        &server,
        &other,
        &["tasks", "approve", &ids],
        "already ended (rejected)",
    );
}

#[test]
fn an_approved_task_of_a_detached_creator_runs_only_when_they_run_it_and_never_once_expired() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let _agent = untagged_agent(&sb, &server, &[]);
    let carol = user(&server, "carol", "");
    let bob = user(&server, "bob", "");
    bash_target(&server, "prod", &["--review", "anyone"]);
    bash_target(
        &server,
        "brief",
        &["--review", "anyone", "--approval_ttl", "2s"],
    );
    let marker = sb.path("ran");
    let script = format!("touch '{}'; echo ran-once", marker.display());

    // `anyone`: one other user's approval is enough.
    let id = submit_as(&server, &carol, "prod", &script);
    let ids = id.to_string();
    let said = ok_as(&server, &bob, &["tasks", "approve", &ids]);
    assert!(said.contains("it runs when its creator"), "{said}");
    // Approved is not running: the agent is idle and the script has not run.
    let t = server.task(id);
    assert_eq!(t["status"], "approved", "{t}");
    assert!(t["agent"].is_null(), "{t}");
    assert!(!marker.exists());
    refused_as(
        &server,
        &bob,
        &["tasks", "run", &ids],
        "only its creator runs it",
    );
    let out = cli_as(&server, &carol, &["tasks", "run", &ids]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "ran-once");
    assert!(marker.exists());
    assert_eq!(server.task(id)["status"], "success");
    std::fs::remove_file(&marker).unwrap();

    // An approval that ran out: the task ends with a clear reason and never runs.
    let id = submit_as(&server, &carol, "brief", &script);
    let ids = id.to_string();
    ok_as(&server, &bob, &["tasks", "approve", &ids]);
    let t = server.wait_final(id);
    assert_eq!(t["failure_reason"], "review-expired", "{t}");
    assert!(
        t["failure_message"]
            .as_str()
            .unwrap()
            .contains("the approval expired"),
        "{t}"
    );
    refused_as(&server, &carol, &["tasks", "run", &ids], "already ended");
    assert!(!marker.exists(), "an expired approval ran the script");
}

#[test]
fn an_admin_force_approval_runs_and_is_marked_in_show_and_audit() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let _agent = untagged_agent(&sb, &server, &[]);
    let carol = user(&server, "carol", "");
    let dan = user(&server, "dan", "dba");
    bash_target(&server, "prod", &["--review", "team", "--reviewers", "dba"]);
    let id = submit_as(&server, &carol, "prod", "echo forced-run");
    let ids = id.to_string();
    refused_as(
        &server,
        &dan,
        &["tasks", "approve", &ids, "--force", "--reason", "x"],
        "admin",
    );
    let out = server.cli(&["tasks", "approve", &ids, "--force"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--reason"), "{}", stderr(&out));
    server.cli_ok(&[
        "tasks",
        "approve",
        &ids,
        "--force",
        "--reason",
        "outage, the dba is asleep",
    ]);
    let out = cli_as(&server, &carol, &["tasks", "run", &ids]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "forced-run");
    let shown = server.cli_ok(&["tasks", "show", &ids]);
    assert!(
        shown.contains("admin@localhost approved (FORCED by an admin)"),
        "{shown}"
    );
    assert!(shown.contains("outage, the dba is asleep"), "{shown}");
    let audit = server.cli_ok(&["audit", "list", "--action", "task.force_approve", "--json"]);
    let events: Vec<Value> = serde_json::from_str(&audit).unwrap();
    assert_eq!(events.len(), 1, "{audit}");
    assert_eq!(events[0]["detail"]["forced"], true);
    assert_eq!(events[0]["object_id"], ids.as_str());
}

#[test]
fn bad_review_settings_and_reviews_are_refused_and_nothing_changes() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    user(&server, "dan", "dba");
    user(&server, "sam", "security");
    for (extra, want) in [
        (
            vec!["--review", "team", "--reviewers", "dba,dbas"],
            "unknown reviewer group `dbas`",
        ),
        (
            vec![
                "--review",
                "team",
                "--reviewers",
                "dba,security",
                "--min_approvals",
                "3",
            ],
            "min_approvals is 3",
        ),
        (vec!["--review", "team"], "needs reviewer groups"),
        (
            vec!["--review", "anyone", "--review_ttl", "soon"],
            "not a duration",
        ),
    ] {
        let mut args = vec!["targets", "create", "--name", "prod", "--type", "bash"];
        args.extend_from_slice(&extra);
        let out = server.cli(&args);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(
            stderr(&out).contains(want),
            "{want:?} not in {}",
            stderr(&out)
        );
    }
    assert_eq!(server.cli_ok(&["targets", "list", "--json"]).trim(), "[]");
    // The defaults a reviewed target shows.
    bash_target(
        &server,
        "prod",
        &[
            "--review",
            "team",
            "--reviewers",
            "dba,security",
            "--min_approvals",
            "1",
        ],
    );
    let shown = server.cli_ok(&["targets", "show", "prod"]);
    assert!(shown.contains("review ttl:"), "{shown}");
    let t: Value =
        serde_json::from_str(&server.cli_ok(&["targets", "show", "prod", "--json"])).unwrap();
    assert_eq!(t["approval_ttl"], 86_400);
    assert_eq!(t["review_ttl"], 604_800);
    assert_eq!(t["min_approvals"], 1);
}

/// An identity provider's JWTs: the server accepts them (`--auth-jwk-url`) and the agent
/// enforces them (`JWK_URL`).
#[test]
fn an_approved_task_runs_with_the_creators_fresh_identity_token() {
    let sb = Sandbox::new();
    let rsa = TestKey::rsa("idp");
    let jwks = JwksServer::start(&[&rsa]);
    let server = Server::start_with(&sb, 10, |c| {
        c.args(["--auth-jwk-url", &jwks.url]);
    });
    let _agent = untagged_agent(&sb, &server, &[("JWK_URL", &jwks.url)]);
    let bob = user(&server, "bob", "");
    bash_target(&server, "prod", &["--review", "anyone"]);
    let carol = "carol@example.com";
    let now = chrono_now();
    // Tokens issued two hours ago: what the creator held when the task was created,
    // two hours (simulated) before the approval.
    let issued_two_hours_ago = |valid: i64| {
        let mut c = claims_for(carol, valid);
        c["iat"] = json!(now - 7200);
        rsa.sign(&c)
    };
    let old = issued_two_hours_ago(3600);
    let fresh = rsa.sign(&claims_for(carol, 600));
    let script = "echo \"user=$RUNOPS_TASK_USER_EMAIL\"";

    let id = submit_as(&server, &old, "prod", script);
    let with_old = submit_as(&server, &old, "prod", script);
    for task in [id, with_old] {
        ok_as(&server, &bob, &["tasks", "approve", &task.to_string()]);
    }
    // Run with the token of two hours ago: the agent refuses it, nothing runs.
    let out = cli_as(&server, &old, &["tasks", "run", &with_old.to_string()]);
    assert!(!out.status.success());
    let t = server.task(with_old);
    assert_eq!(t["failure_reason"], "unauthenticated", "{t}");
    assert!(
        t["failure_message"]
            .as_str()
            .unwrap()
            .contains("more than JWT_MAX_AGE_SECS"),
        "{t}"
    );
    // Run with the creator's current token: it runs.
    let out = cli_as(&server, &fresh, &["tasks", "run", &id.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "user=[EMAIL_ADDRESS]");
    assert_eq!(server.task(id)["status"], "success");

    // A token bound to the key on the creator's laptop (`cnf.jkt`): the waiting `tasks
    // create` signs a proof with that key when it runs the approved task.
    let laptop = TestKey::ec("laptop");
    let key_file = sb.path("laptop.pem");
    std::fs::write(&key_file, &laptop.private_pem).unwrap();
    let mut claims = claims_for(carol, 600);
    claims["cnf"] = json!({"jkt": laptop.thumbprint()});
    let bound = rsa.sign(&claims);
    let mut waiting = server.cli_cmd(&["tasks", "create", "-t", "prod", "-s", "echo proven"]);
    waiting
        .env("RUNOPS_TOKEN", &bound)
        .env("RUNOPS_DPOP_KEY", &key_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let waiting = waiting.spawn().expect("spawn tasks create");
    let bound_id = pending_on(&server, "prod");
    ok_as(&server, &bob, &["tasks", "approve", &bound_id.to_string()]);
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "proven");
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
