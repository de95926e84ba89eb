//! End-to-end: every failure ends with a clear message and the right reason, and
//! nothing is left running or lost.

mod common;

use common::*;

fn setup(lease_secs: u64, agent_env: &[(&str, &str)]) -> (Sandbox, Server, Agent, String) {
    let sb = Sandbox::new();
    let server = Server::start(&sb, lease_secs);
    let token = server.create_agent_token();
    let agent = Agent::start(&sb, "a", &token, None, agent_env);
    (sb, server, agent, token)
}

fn assert_failed(t: &serde_json::Value, reason: &str, message_part: &str) {
    assert_eq!(t["status"], "failure", "{t}");
    assert_eq!(t["failure_reason"], reason, "{t}");
    let msg = t["failure_message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(message_part),
        "failure_message {msg:?} should mention {message_part:?}"
    );
}

fn process_running(pattern: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn unknown_target_is_a_clear_error() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let out = server.cli(&["tasks", "create", "-t", "nope", "-s", "echo hi"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("target `nope` not found"), "{err}");
    assert!(err.contains("runops targets list"), "hint missing: {err}");
}

#[test]
fn secret_problems_fail_fast_with_reason_secrets() {
    let (_sb, server, _agent, _) = setup(10, &[("BAD_JSON", "\"A\": \"b\"\n\"C\" \"d\"")]);
    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "missing",
        "--type",
        "bash",
        "--secret_path",
        "NOT_SET_ANYWHERE",
    ]);
    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "bad",
        "--type",
        "bash",
        "--secret_path",
        "BAD_JSON",
    ]);

    let out = server.cli(&["tasks", "create", "-t", "missing", "-s", "echo hi"]);
    assert!(!out.status.success());
    // Said once: in the followed log (the agent's note), not repeated on stderr.
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains("NOT_SET_ANYWHERE"), "{all}");
    assert!(stderr(&out).contains("failed (secrets)"), "{all}");
    let id = last_task_id(&server);
    assert_failed(&server.task(id), "secrets", "NOT_SET_ANYWHERE");

    let id = server.submit("bad", "echo hi");
    let t = server.wait_final(id);
    assert_failed(&t, "secrets", "BAD_JSON");
    assert!(
        t["failure_message"].as_str().unwrap().contains("line 2"),
        "{t}"
    );
}

#[test]
fn malformed_secret_mapping_is_rejected_at_creation_and_fails_fast_at_the_agent() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let out = server.cli(&[
        "targets",
        "create",
        "--name",
        "m",
        "--type",
        "bash",
        "--secret_path",
        "S",
        "--secret_mapping",
        r#"{"B": "A""#,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("secret_mapping"), "{}", stderr(&out));

    // If a malformed mapping reaches the agent anyway (here: written straight into
    // the stored task before any agent is connected), the task fails fast.
    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "m",
        "--type",
        "bash",
        "--secret_path",
        "S",
        "--secret_mapping",
        r#"{"B": "A"}"#,
    ]);
    let id = server.submit("m", "echo $B");
    let db = server.data_dir.join("runops.db");
    let corrupt = format!("UPDATE tasks SET secret_mapping = '{{\"B\": ' WHERE id = {id};");
    // The store refuses to change a task after its creation, whoever asks.
    let refused = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(&corrupt)
        .output()
        .expect("sqlite3 is installed");
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("cannot be changed after its creation"),
        "{}",
        stderr(&refused)
    );
    // Only by removing that guard can the row be corrupted.
    let st = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(format!(
            "DROP TRIGGER tasks_immutable_after_creation; {corrupt}"
        ))
        .status()
        .expect("sqlite3 is installed");
    assert!(st.success());
    let token = server.create_agent_token();
    let _agent = Agent::start(&sb, "a", &token, None, &[("S", r#"{"A": "value-a"}"#)]);
    assert_failed(&server.wait_final(id), "invalid-config", "secret_mapping");
}

#[test]
fn non_zero_exit_keeps_stdout_and_stderr() {
    let (_sb, server, _agent, _) = setup(10, &[]);
    server.cli_ok(&["targets", "create", "--name", "sh", "--type", "bash"]);
    let out = server.cli(&[
        "tasks",
        "create",
        "-t",
        "sh",
        "-s",
        "echo to-stdout; echo to-stderr >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let id = last_task_id(&server);
    let t = server.task(id);
    assert_failed(&t, "exit-code", "");
    assert_eq!(t["exit_code"], 3);
    let log = server.logs(id);
    assert!(
        log.contains("to-stdout") && log.contains("to-stderr"),
        "{log}"
    );
}

#[test]
fn timeout_kills_the_task() {
    let (_sb, server, _agent, _) = setup(10, &[]);
    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "slow",
        "--type",
        "bash",
        "--timeout",
        "2",
    ]);
    let id = server.submit("slow", "echo started; sleep 600.11");
    let t = server.wait_final(id);
    assert_failed(&t, "timeout", "");
    assert!(server.logs(id).contains("started"));
    wait_for("the timed-out sleep to be gone", || {
        (!process_running("sleep 600.11")).then_some(())
    });
}

#[test]
fn kill_stops_a_running_task_and_its_whole_process_group() {
    let (_sb, server, _agent, _) = setup(10, &[]);
    server.cli_ok(&["targets", "create", "--name", "sh", "--type", "bash"]);
    let id = server.submit("sh", "sleep 600.22 & sleep 600.23; echo never");
    server.wait_status(id, "running");
    wait_for("the task's sleeps to start", || {
        process_running("sleep 600.23").then_some(())
    });
    server.cli_ok(&["tasks", "kill", &id.to_string()]);
    assert_failed(&server.wait_final(id), "cancelled", "");
    wait_for("every process of the killed task to be gone", || {
        (!process_running("sleep 600.22") && !process_running("sleep 600.23")).then_some(())
    });
    assert!(!server.logs(id).contains("never"));
}

#[test]
fn agent_killed_mid_task_ends_agent_lost_and_the_task_never_runs_again() {
    let (sb, server, mut agent, token) = setup(3, &[]);
    server.cli_ok(&["targets", "create", "--name", "sh", "--type", "bash"]);
    let marker = sb.path("runs");
    let id = server.submit(
        "sh",
        &format!("echo run >> {}; sleep 600.33", marker.display()),
    );
    server.wait_status(id, "running");
    wait_for("the task to start", || marker.exists().then_some(()));

    agent.child.kill().unwrap(); // SIGKILL
    agent.child.wait().unwrap();
    let t = server.wait_final(id);
    assert_failed(&t, "agent-lost", "");

    // A new agent with the same tags takes over and does not run the task again.
    let _agent2 = Agent::start(&sb, "b", &token, None, &[]);
    server.cli_ok(&["targets", "create", "--name", "probe", "--type", "bash"]);
    assert_eq!(
        server
            .cli_ok(&["tasks", "create", "-t", "probe", "-s", "echo alive"])
            .trim(),
        "alive"
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "run\n");
    assert_eq!(server.task(id)["status"], "failure");
    let _ = std::process::Command::new("pkill")
        .args(["-f", "sleep 600.33"])
        .status();
}

#[test]
fn an_agent_restarted_after_sigkill_takes_its_session_back_at_once() {
    // A lease far longer than the test: the restart must not wait for it to expire.
    let (sb, server, mut agent, token) = setup(600, &[]);
    server.cli_ok(&["targets", "create", "--name", "sh", "--type", "bash"]);
    let marker = sb.path("runs");
    let id = server.submit(
        "sh",
        &format!("echo run >> {}; sleep 600.44", marker.display()),
    );
    server.wait_status(id, "running");
    wait_for("the task to start", || marker.exists().then_some(()));

    agent.child.kill().unwrap(); // SIGKILL
    agent.child.wait().unwrap();
    // The same agent (same data dir, same token) starts again at once.
    let restarted = Agent::start(&sb, "a", &token, None, &[]);
    let t = server.wait_final(id);
    assert_eq!(t["status"], "failure", "{t}\n{}", restarted.log());
    let reason = t["failure_reason"].as_str().unwrap_or_default();
    assert!(reason == "agent-lost" || reason == "agent-error", "{t}");
    server.cli_ok(&["targets", "create", "--name", "probe", "--type", "bash"]);
    assert_eq!(
        server
            .cli_ok(&["tasks", "create", "-t", "probe", "-s", "echo alive"])
            .trim(),
        "alive"
    );
    // The log may be coloured: compare without escape sequences.
    let log: String = restarted
        .log()
        .split('\x1b')
        .map(|part| match part.strip_prefix('[') {
            Some(rest) => rest.split_once('m').map(|(_, t)| t).unwrap_or(rest),
            None => part,
        })
        .collect();
    assert!(!log.contains("already connected"), "{log}");
    assert!(log.contains("resumed=true"), "{log}");
    // Never run twice, and nothing of the killed run is left.
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "run\n");
    wait_for("the killed run's processes to be gone", || {
        (!process_running("sleep 600.44")).then_some(())
    });
}

#[test]
fn server_restart_mid_task_loses_nothing() {
    let (sb, mut server, _agent, _) = setup(10, &[]);
    server.cli_ok(&["targets", "create", "--name", "sh", "--type", "bash"]);
    let gate = sb.path("gate");
    let id = server.submit(
        "sh",
        &format!(
            "echo before; while [ ! -e {} ]; do sleep 0.05; done; echo after",
            gate.display()
        ),
    );
    server.wait_status(id, "running");
    server.restart();
    std::fs::write(&gate, "").unwrap();
    let t = server.wait_final(id);
    assert_eq!(t["status"], "success", "{t}");
    let log = server.logs(id);
    assert_eq!(log, "before\nafter\n");
}

fn last_task_id(server: &Server) -> i64 {
    let tasks: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["tasks", "list", "--json"])).unwrap();
    tasks[0]["id"].as_i64().expect("at least one task")
}
