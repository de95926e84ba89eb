//! Output is live on a target with secrets and personal-data redaction: a complete line
//! reaches `runops tasks logs` while the task still runs, an incomplete line too once
//! output pauses, and only a tail that could begin a secret stays held back (and never
//! leaks). Gate files order the steps; nothing here depends on timing.

mod common;

use common::*;
use std::path::Path;

const API_TOKEN: &str = "tok_live_8f3Kq2Lm9Xw7Vb1N";
/// How much of the token the task prints before it pauses.
const HALF: usize = 12;

fn start(sb: &Sandbox) -> (Server, Agent) {
    let server = Server::start(sb, 10);
    let token = server.create_agent_token();
    let secret = format!(r#"{{"API_TOKEN": "{API_TOKEN}", "DB_PASSWORD": "Zq7#vLm2!pX9 wR4/t"}}"#);
    let agent = Agent::start(sb, "live", &token, None, &[("MY_TARGET", &secret)]);
    // Default `redact=all`: secrets and personal data.
    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "live",
        "--type",
        "bash",
        "--secret_path",
        "MY_TARGET",
    ]);
    (server, agent)
}

fn wait_gate(gate: &Path) -> String {
    format!("while [ ! -e '{}' ]; do sleep 0.05; done", gate.display())
}

#[test]
fn lines_reach_the_logs_while_the_task_waits() {
    let sb = Sandbox::new();
    let (server, _agent) = start(&sb);
    let (gate1, gate2) = (sb.path("gate1"), sb.path("gate2"));
    let script = format!(
        "echo step1\n{}\nprintf 'progress 45%%'\n{}\necho\necho step2\n",
        wait_gate(&gate1),
        wait_gate(&gate2)
    );
    let id = server.submit("live", &script);
    // A complete line, while the task is held on the gate.
    let logs = wait_for("step1 in the logs while the task waits", || {
        let logs = server.logs(id);
        logs.contains("step1").then_some(logs)
    });
    assert!(!logs.contains("step2"), "{logs}");
    assert_eq!(server.task(id)["status"], "running");
    std::fs::write(&gate1, "").unwrap();
    // An incomplete line, once the output paused.
    let logs = wait_for("the incomplete progress line in the logs", || {
        let logs = server.logs(id);
        logs.contains("progress 45%").then_some(logs)
    });
    assert_eq!(server.task(id)["status"], "running", "{logs}");
    std::fs::write(&gate2, "").unwrap();
    let task = server.wait_final(id);
    assert_eq!(task["status"], "success", "{task}");
    assert_eq!(server.logs(id), "step1\nprogress 45%\nstep2\n");
}

#[test]
fn a_secret_split_by_a_pause_never_leaks_its_first_half() {
    let sb = Sandbox::new();
    let (server, _agent) = start(&sb);
    let gate = sb.path("gate");
    let script = format!(
        "echo marker\nprintf 'half=%s' \"${{API_TOKEN:0:{HALF}}}\"\n{}\nprintf '%s done\\n' \"${{API_TOKEN:{HALF}}}\"\n",
        wait_gate(&gate)
    );
    let id = server.submit("live", &script);
    let spool_log = sb
        .path("agent-live")
        .join("spool")
        .join(id.to_string())
        .join("log");
    // The line up to the token's first half is released when the output pauses; the
    // half itself could still become the token, so it stays held.
    let logs = wait_for("the line before the half in the logs", || {
        let logs = server.logs(id);
        logs.contains("half=").then_some(logs)
    });
    assert_eq!(logs, "marker\nhalf=");
    let spooled = std::fs::read(&spool_log).unwrap();
    assert_eq!(String::from_utf8_lossy(&spooled), "marker\nhalf=");
    assert_eq!(server.task(id)["status"], "running");
    std::fs::write(&gate, "").unwrap();
    let task = server.wait_final(id);
    assert_eq!(task["status"], "success", "{task}");
    let logs = server.logs(id);
    assert_eq!(logs, "marker\nhalf=[REDACTED:API_TOKEN] done\n");
    assert!(!logs.contains(&API_TOKEN[..HALF]), "{logs}");
}
