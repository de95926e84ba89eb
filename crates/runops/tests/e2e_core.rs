//! End-to-end: the real `runops` binary as server, agents and CLI, as in the docs.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

const DOCS_SECRET: &str = "\"MYSQL_DB\": \"demo\",\n\"MYSQL_PASS\": \"GtK23d<ejkLy0ST2\",\n\"MYSQL_USER\": \"demo-user\",\n";
const DOCS_PASSWORD: &str = "GtK23d<ejkLy0ST2";

#[test]
fn docs_walkthrough_runs_a_task_with_env_var_secrets_and_hides_the_password() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    // Only TOKEN (which carries the server URL) and MY_TARGET, as in `docker run --env TOKEN --env MY_TARGET`.
    let _agent = Agent::start(&sb, "a", &token, None, &[("MY_TARGET", DOCS_SECRET)]);

    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "demo",
        "--type",
        "bash",
        "--secret_path",
        "MY_TARGET",
    ]);
    let out = server.cli_ok(&["tasks", "create", "-t", "demo", "-s", "echo \"$MYSQL_DB\""]);
    assert_eq!(out.trim(), "demo");

    let out = server.cli(&[
        "tasks",
        "create",
        "-t",
        "demo",
        "-s",
        "echo \"pass=$MYSQL_PASS\"",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(printed.contains("pass="), "{printed}");
    let chars: Vec<char> = DOCS_PASSWORD.chars().collect();
    for w in chars.windows(4) {
        let part: String = w.iter().collect();
        assert!(
            !printed.contains(&part),
            "password fragment {part:?} leaked: {printed}"
        );
    }
    // Nor in the stored log.
    let tasks: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["tasks", "list", "--json"])).unwrap();
    for t in tasks.as_array().unwrap() {
        let log = server.logs(t["id"].as_i64().unwrap());
        assert!(!log.contains(DOCS_PASSWORD), "{log}");
    }
}

#[test]
fn agents_run_only_targets_with_their_tags_and_a_second_agent_with_taken_tags_exits() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let prod_token = server.create_agent_token_for("prod");
    let dev_token = server.create_agent_token_for("dev");
    // Values shorter than 6 characters of a plain key are not secret-redacted.
    let _prod = Agent::start(
        &sb,
        "prod",
        &prod_token,
        Some("prod"),
        &[("WHO", r#"{"NAME": "prod"}"#)],
    );
    let _dev = Agent::start(
        &sb,
        "dev",
        &dev_token,
        Some("dev"),
        &[("WHO", r#"{"NAME": "dev"}"#)],
    );
    let _none = Agent::start(&sb, "none", &token, None, &[("WHO", r#"{"NAME": "none"}"#)]);

    for (name, tags) in [
        ("t-prod", Some("prod")),
        ("t-dev", Some("dev")),
        ("t-none", None),
    ] {
        let mut args = vec![
            "targets",
            "create",
            "--name",
            name,
            "--type",
            "bash",
            "--secret_path",
            "WHO",
        ];
        if let Some(t) = tags {
            args.extend(["--tags", t]);
        }
        server.cli_ok(&args);
    }
    for _ in 0..3 {
        assert_eq!(
            server
                .cli_ok(&["tasks", "create", "-t", "t-prod", "-s", "echo $NAME"])
                .trim(),
            "prod"
        );
        assert_eq!(
            server
                .cli_ok(&["tasks", "create", "-t", "t-dev", "-s", "echo $NAME"])
                .trim(),
            "dev"
        );
        assert_eq!(
            server
                .cli_ok(&["tasks", "create", "-t", "t-none", "-s", "echo $NAME"])
                .trim(),
            "none"
        );
    }

    // A second agent with TAGS=prod is refused and exits non-zero, naming the tag.
    let mut second = Agent::start(&sb, "prod2", &prod_token, Some("prod"), &[]);
    let status = wait_for("the second prod agent to exit", || {
        second.child.try_wait().unwrap()
    });
    assert!(
        !status.success(),
        "second agent with taken tags must exit non-zero"
    );
    let log = second.log();
    assert!(log.contains("prod"), "the error should name the tag: {log}");
}

#[test]
fn logs_follow_shows_lines_while_the_task_runs() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let _agent = Agent::start(&sb, "a", &token, None, &[]);
    server.cli_ok(&["targets", "create", "--name", "sh", "--type", "bash"]);

    let gate = sb.path("gate");
    let script = format!(
        "echo first-line; while [ ! -e {g} ]; do sleep 0.05; done; echo second-line",
        g = gate.display()
    );
    let id = server.submit("sh", &script);
    server.wait_status(id, "running");

    let mut follow = server
        .cli_cmd(&["tasks", "logs", &id.to_string(), "-f"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "first-line");
    // The task is still running (blocked on the gate) while its first line is shown.
    assert_eq!(server.task(id)["status"], "running");
    std::fs::write(&gate, "").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "second-line");
    assert!(lines.next().is_none());
    assert!(follow.wait().unwrap().success());
    assert_eq!(server.wait_final(id)["status"], "success");
}

#[test]
fn two_hundred_tasks_all_succeed_and_never_exceed_concurrency() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let _agent = Agent::start(&sb, "a", &token, None, &[("CONCURRENCY", "5")]);
    server.cli_ok(&["targets", "create", "--name", "sh", "--type", "bash"]);

    let dir = sb.path("running");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    // Each task marks itself running, records how many are running, then unmarks.
    let script = format!(
        "touch {d}/r.$RUNOPS_TASK_ID; ls {d} | grep -c '^r\\.' >> {d}/../counts; sleep 0.05; rm {d}/r.$RUNOPS_TASK_ID"
    );
    let ids: Vec<i64> = (0..200).map(|_| server.submit("sh", &script)).collect();
    for id in &ids {
        let t = server.wait_final(*id);
        assert_eq!(t["status"], "success", "task {id}: {t}");
    }
    let counts = std::fs::read_to_string(sb.path("counts")).unwrap();
    let max = counts
        .lines()
        .map(|l| l.trim().parse::<u32>().unwrap())
        .max()
        .unwrap();
    assert_eq!(counts.lines().count(), 200);
    assert!(
        max <= 5,
        "saw {max} tasks running at once with CONCURRENCY=5"
    );
}

#[test]
fn child_processes_see_none_of_the_agents_own_environment() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let _agent = Agent::start(
        &sb,
        "a",
        &token,
        None,
        &[
            ("API_URL", &server.url()),
            ("AWS_SECRET_ACCESS_KEY", "agent-own-aws-secret-key"),
            ("AWS_ACCESS_KEY_ID", "AKIAAGENTOWNKEY00000"),
            ("VAULT_TOKEN", "agent-own-vault-token"),
        ],
    );
    server.cli_ok(&["targets", "create", "--name", "sh", "--type", "bash"]);
    let out = server.cli_ok(&["tasks", "create", "-t", "sh", "-s", "env"]);
    for name in [
        "TOKEN=",
        "API_URL",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "VAULT_TOKEN",
        "RUNOPS_AGENT_DATA_DIR",
    ] {
        assert!(
            !out.lines().any(|l| l.starts_with(name)),
            "child environment has {name}:\n{out}"
        );
    }
    assert!(
        out.contains("RUNOPS_TASK_ID="),
        "metadata env missing:\n{out}"
    );
    assert!(out.contains("PATH="), "{out}");
}

#[test]
fn runops_up_serves_a_ready_local_target_and_a_second_up_reuses_the_data() {
    let sb = Sandbox::new();
    let port = free_port();
    let work = sb.path("work");
    std::fs::create_dir_all(&work).unwrap();
    let run_task = |script: &str| {
        base_command(&sb.home())
            .args(["tasks", "create", "-t", "local", "-s", script])
            .current_dir(&work)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    for round in ["first", "second"] {
        let mut up = base_command(&sb.home())
            .arg("up")
            .current_dir(&work)
            .env("RUNOPS_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let _guard = KillOnDrop(up.id() as i32);
        let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
        // `runops up` prints its URL and token, then a ready line.
        wait_for("runops up to print that it is ready", || {
            let l = lines.next()?.ok()?;
            l.contains("ready").then_some(())
        });
        // The CLI was logged in by `runops up` (config in HOME): no URL or token needed.
        let out = run_task(&format!("echo hello {round}"));
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), format!("hello {round}\n"));

        // Ctrl-C stops it cleanly.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(up.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let st = wait_for("runops up to exit after SIGINT", || up.try_wait().unwrap());
        assert!(st.success(), "runops up exited with {st}");
        assert!(work.join(".runops").is_dir(), "data lives in ./.runops");
    }

    // The second `runops up` kept the first one's tasks: same store, same token.
    let db = work.join(".runops").join("runops.db");
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT count(*) FROM tasks;")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
}

struct KillOnDrop(i32);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn agent_check_reports_which_integrations_can_run_without_a_token() {
    let sb = Sandbox::new();
    // A PATH without kubectl: k8s must be reported as unavailable, with the reason.
    let out = base_command(&sb.home())
        .args(["agent", "--check"])
        .env("PATH", "/usr/bin:/bin")
        .env("KUBECTL", "/nonexistent/kubectl")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout(&out);
    let line = |kind: &str| {
        report
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(kind))
            .unwrap_or_else(|| panic!("no line for {kind} in:\n{report}"))
            .to_string()
    };
    assert!(line("bash").starts_with("ok"), "{report}");
    assert!(line("postgres").starts_with("ok"), "{report}");
    let k8s = line("k8s");
    assert!(k8s.starts_with("no") && k8s.contains("kubectl"), "{report}");
}
