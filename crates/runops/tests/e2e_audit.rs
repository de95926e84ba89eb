//! End-to-end: `runops audit list` on the real binary shows who created a target and a
//! task, from where; a non-admin is refused.

mod common;

use common::*;

#[test]
fn audit_list_shows_target_and_task_creation() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 30);
    server.cli_ok(&["targets", "create", "--name", "sh", "--type", "bash"]);
    let task = server.submit("sh", "echo audited");

    let out = server.cli_ok(&["audit", "list", "--json"]);
    let events: serde_json::Value = serde_json::from_str(&out).expect("audit list --json is JSON");
    let events = events.as_array().expect("a JSON array");
    // Newest first: the task, then the target.
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default())
        .collect();
    let t = actions.iter().position(|a| *a == "task.create");
    let g = actions.iter().position(|a| *a == "target.create");
    assert!(
        matches!((t, g), (Some(t), Some(g)) if t < g),
        "task.create then target.create expected in {actions:?}"
    );
    let ev = &events[t.unwrap_or_default()];
    assert_eq!(ev["object_id"], task.to_string());
    assert_eq!(ev["actor"], "admin@localhost");
    assert_eq!(ev["remote_addr"], "127.0.0.1");
    assert_eq!(events[g.unwrap_or_default()]["object_id"], "sh");

    // Filters and the table.
    let out = server.cli_ok(&["audit", "list", "--action", "target.create", "--limit", "1"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "header and one row: {out}");
    assert!(lines[0].starts_with("ID"), "{out}");
    assert!(
        lines[1].contains("admin@localhost") && lines[1].contains("target sh"),
        "{out}"
    );

    // A non-admin is refused with a clear message.
    let created = server.cli_ok(&[
        "users",
        "create",
        "--name",
        "ana",
        "--email",
        "ana@example.com",
        "--json",
    ]);
    let created: serde_json::Value = serde_json::from_str(&created).expect("JSON");
    let token = created["token"].as_str().expect("a token").to_string();
    let out = server
        .cli_cmd(&["audit", "list"])
        .env("RUNOPS_TOKEN", &token)
        .output()
        .expect("run runops");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("only admins can read the audit log"),
        "{}",
        stderr(&out)
    );
}
