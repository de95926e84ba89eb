//! End-to-end: the CLI as a new user meets it: contexts, whoami, login from standard
//! input, completion, `tasks list` paging and filters, quiet output without a
//! terminal, and failures said once and clearly.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

const DOCS_SECRET: &str = "\"MYSQL_DB\": \"demo\",\n\"MYSQL_PASS\": \"GtK23d<ejkLy0ST2\",\n\"MYSQL_USER\": \"demo-user\",\n";

/// The CLI with only a config file: no RUNOPS_URL / RUNOPS_TOKEN.
fn cli_with_config(home: &Path, config: &Path, args: &[&str]) -> Command {
    let mut c = base_command(home);
    c.args(args)
        .env("RUNOPS_CONFIG", config)
        .stdin(Stdio::null());
    c
}

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
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
fn contexts_switch_between_two_servers_and_up_adds_its_own_context() {
    let sb_a = Sandbox::new();
    let sb_b = Sandbox::new();
    let a = Server::start(&sb_a, 10);
    let b = Server::start(&sb_b, 10);
    a.cli_ok(&["targets", "create", "--name", "only-on-a", "--type", "bash"]);
    let home = sb_a.home();
    let config = sb_a.path("cli/config.json");
    // A config file of the single-server kind older versions wrote keeps working.
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        format!(r#"{{"url": "{}", "token": "{ADMIN_TOKEN}"}}"#, a.url()),
    )
    .unwrap();
    let run = |args: &[&str]| {
        ok(
            cli_with_config(&home, &config, args).output().unwrap(),
            &args.join(" "),
        )
    };
    assert!(run(&["targets", "list"]).contains("only-on-a"));
    assert!(run(&["whoami"]).contains("context: default"));

    // The token comes from standard input, never from the command line.
    let login_b = run_with_stdin(
        cli_with_config(
            &home,
            &config,
            &["login", "--context", "b", "--url", &b.url(), "--with-token"],
        ),
        &format!("{ADMIN_TOKEN}\n"),
    );
    assert!(ok(login_b, "login b").contains("(context `b`)"));
    let listed = run(&["config", "get-contexts"]);
    assert!(
        listed.contains("default") && listed.contains(&b.url()),
        "{listed}"
    );
    assert!(
        !listed.contains(ADMIN_TOKEN),
        "tokens are never printed: {listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with('*') && l.contains(" b ")),
        "b is current after logging in to it: {listed}"
    );
    assert!(!run(&["targets", "list", "--json"]).contains("only-on-a"));
    // --context picks another context for one command; use-context switches.
    assert!(run(&["targets", "list", "--context", "default"]).contains("only-on-a"));
    run(&["config", "use-context", "default"]);
    assert!(run(&["targets", "list"]).contains("only-on-a"));
    assert_eq!(run(&["config", "current-context"]).trim(), "default");
    let unknown = cli_with_config(&home, &config, &["targets", "list", "--context", "nope"])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("context `nope` not found"),
        "{}",
        stderr(&unknown)
    );

    // `runops up` adds its own context (and makes it current) next to the others.
    let work = sb_b.path("work");
    std::fs::create_dir_all(&work).unwrap();
    let port = free_port();
    let mut up = base_command(&home)
        .arg("up")
        .current_dir(&work)
        .env("RUNOPS_CONFIG", &config)
        .env("RUNOPS_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(up.id() as i32);
    let stderr_pipe = up.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = std::io::Read::read_to_end(&mut BufReader::new(stderr_pipe), &mut all);
        all
    });
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    let mut printed: Vec<String> = Vec::new();
    wait_for("runops up to print that it is ready", || {
        let l = lines.next()?.ok()?;
        printed.push(l.clone());
        l.starts_with("ready").then_some(())
    });
    let integrations: Vec<&String> = printed
        .iter()
        .filter(|l| l.contains("integration types ready; runops agent --check lists them"))
        .collect();
    assert_eq!(integrations.len(), 1, "one integrations line: {printed:?}");
    assert!(printed.iter().all(|l| !l.contains('\x1b')), "{printed:?}");

    let listed = run(&["config", "get-contexts"]);
    for name in ["default", "b", "local"] {
        assert!(listed.contains(name), "{name} missing: {listed}");
    }
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with('*') && l.contains(" local ")),
        "{listed}"
    );
    let hello = run(&["tasks", "create", "-t", "local", "-s", "echo hello"]);
    assert_eq!(hello, "hello\n");
    assert!(run(&["targets", "list", "--context", "default"]).contains("only-on-a"));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    wait_for("runops up to exit after SIGINT", || up.try_wait().unwrap());
    let err = stderr_reader.join().unwrap();
    assert!(
        !err.contains(&0x1b),
        "no escape bytes without a terminal: {}",
        String::from_utf8_lossy(&err)
    );
}

#[test]
fn whoami_after_login_with_token_from_stdin_names_server_org_user_role_and_token() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let home = sb.home();
    let config = sb.path("cli.json");
    let login = run_with_stdin(
        cli_with_config(
            &home,
            &config,
            &["login", "--url", &server.url(), "--with-token"],
        ),
        &format!("\n{ADMIN_TOKEN}\n"),
    );
    let said = ok(login, "login --with-token");
    assert!(
        said.contains("as admin@localhost (context `default`)"),
        "{said}"
    );
    let who = ok(
        cli_with_config(&home, &config, &["whoami"])
            .output()
            .unwrap(),
        "whoami",
    );
    for line in [
        format!("server:  {}", server.url()),
        "context: default".to_string(),
        "role:    admin".to_string(),
        "groups:  admin".to_string(),
    ] {
        assert!(who.contains(&line), "{line:?} missing from:\n{who}");
    }
    assert!(who.contains("<admin@localhost>"), "{who}");
    assert!(
        who.lines().any(|l| l.starts_with("org:") && l.len() > 9),
        "{who}"
    );
    assert!(who.contains("token:   API token "), "{who}");
    assert!(who.contains("does not expire"), "{who}");

    let empty = run_with_stdin(
        cli_with_config(
            &home,
            &config,
            &["login", "--url", &server.url(), "--with-token"],
        ),
        "\n",
    );
    assert!(!empty.status.success());
    assert!(
        stderr(&empty).contains("read no token"),
        "{}",
        stderr(&empty)
    );
}

#[test]
fn completion_scripts_complete_subcommands_and_flags() {
    let sb = Sandbox::new();
    let bash = base_command(&sb.home())
        .args(["completion", "bash"])
        .output()
        .unwrap();
    let script = ok(bash, "completion bash");
    for word in [
        "tasks",
        "targets",
        "whoami",
        "config",
        "use-context",
        "--context",
        "--with-token",
    ] {
        assert!(
            script.contains(word),
            "{word} missing from the bash completion"
        );
    }
    for shell in ["zsh", "fish", "powershell"] {
        let out = base_command(&sb.home())
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(ok(out, shell).contains("whoami"), "{shell}");
    }
}

#[test]
fn tasks_list_says_when_it_cut_the_list_and_filters_by_status_user_age_and_target() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    // No agent: the tasks stay `ready`.
    server.cli_ok(&["targets", "create", "--name", "sh", "--type", "bash"]);
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(server.submit("sh", &format!("echo {i}")));
    }
    ids.push(server.submit("sh", "echo first\necho second"));
    let newest = *ids.last().unwrap();

    let out = server.cli(&["tasks", "list", "--limit", "3"]);
    let table = ok(out.clone(), "list --limit 3");
    assert_eq!(table.lines().count(), 4, "header and 3 rows: {table}");
    assert!(
        table.contains("echo first…"),
        "multi-line scripts are marked: {table}"
    );
    let oldest_shown = ids[2];
    assert!(
        stderr(&out).contains(&format!(
            "see older ones with `runops tasks list --before {oldest_shown}`"
        )),
        "{}",
        stderr(&out)
    );
    let rest = server.cli(&["tasks", "list", "--before", &oldest_shown.to_string()]);
    assert_eq!(ok(rest.clone(), "list --before").lines().count(), 3);
    assert!(stderr(&rest).is_empty(), "not cut: {}", stderr(&rest));

    let count = |args: &[&str]| -> usize {
        let mut full = vec!["tasks", "list", "--json"];
        full.extend_from_slice(args);
        let v: serde_json::Value = serde_json::from_str(&server.cli_ok(&full)).unwrap();
        v.as_array().unwrap().len()
    };
    assert_eq!(count(&["--status", "ready"]), 5);
    assert_eq!(count(&["--status", "success"]), 0);
    assert_eq!(count(&["--mine"]), 5);
    assert_eq!(count(&["--user", "admin@localhost"]), 5);
    assert_eq!(count(&["--user", "nobody@example.com"]), 0);
    assert_eq!(count(&["--since", "1h"]), 5);
    assert_eq!(count(&["--since", "2999-01-01T00:00:00Z"]), 0);
    assert_eq!(count(&["-t", "sh", "--before", &newest.to_string()]), 4);

    let typo = server.cli(&["tasks", "list", "--status", "redy"]);
    assert!(!typo.status.success());
    assert!(
        stderr(&typo).contains("did you mean `ready`?"),
        "{}",
        stderr(&typo)
    );
    let (status, body) =
        http_get_with_token(server.port, "/v1/tasks?status=failed", ADMIN_TOKEN).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("did you mean `failure`?") && body.contains("pending-review"),
        "{body}"
    );
    let unknown = server.cli(&["tasks", "list", "-t", "nope"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("target `nope` not found"),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn malformed_token_is_reported_as_malformed_not_as_an_unreachable_server() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let out = base_command(&sb.home())
        .args(["targets", "list"])
        .env("RUNOPS_URL", server.url())
        .env("RUNOPS_TOKEN", "rou_abc\u{a0}def")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("the API token in RUNOPS_TOKEN is malformed"),
        "{err}"
    );
    assert!(!err.contains("cannot reach"), "{err}");
}

#[test]
fn failure_message_is_printed_once_and_braced_secret_with_trailing_comma_works() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let braced = format!("{{\n{DOCS_SECRET}}}\n");
    let _agent = Agent::start(&sb, "a", &token, None, &[("MY_TARGET", braced.as_str())]);
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

    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "nosecret",
        "--type",
        "bash",
        "--secret_path",
        "NOPE",
    ]);
    let failed = server.cli(&["tasks", "create", "-t", "nosecret", "-s", "true"]);
    assert_eq!(failed.status.code(), Some(1));
    let all = format!("{}{}", stdout(&failed), stderr(&failed));
    assert_eq!(
        all.matches("environment variable `NOPE` is not set")
            .count(),
        1,
        "the failure message once:\n{all}"
    );
    assert!(stderr(&failed).contains("failed (secrets)"), "{all}");
}

#[test]
fn without_a_terminal_a_waiting_task_says_once_why_and_targets_warn_and_delete() {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "tagged",
        "--type",
        "bash",
        "--tags",
        "nobody-here",
    ]);
    let mut waiting = server
        .cli_cmd(&["tasks", "create", "-t", "tagged", "-s", "echo hi"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(waiting.id() as i32);
    let mut err_lines = BufReader::new(waiting.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    wait_for("the reason for the wait on stderr", || {
        let l = err_lines.next()?.ok()?;
        seen.push(l.clone());
        l.contains("no agent with tags `nobody-here` is connected")
            .then_some(())
    });
    // Several refreshes later the reason has not been repeated.
    let id = server.cli_ok(&["tasks", "list", "--json", "-t", "tagged"]);
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let id = id[0]["id"].as_i64().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(5));
    server.cli_ok(&["tasks", "kill", &id.to_string()]);
    let st = wait_for("tasks create to end", || waiting.try_wait().unwrap());
    assert!(!st.success());
    seen.extend(err_lines.map_while(Result::ok));
    let said = seen
        .iter()
        .filter(|l| l.contains("nobody-here` is connected"))
        .count();
    assert_eq!(said, 1, "{seen:?}");
    assert!(seen.iter().all(|l| !l.contains('\x1b')), "{seen:?}");

    let created = server.cli(&["targets", "create", "--name", "db", "--type", "mysql"]);
    assert!(
        stderr(&created).contains("warning: target db of type mysql has no secret source"),
        "{}",
        stderr(&created)
    );
    // Without a terminal nothing is asked; --yes is accepted anyway.
    server.cli_ok(&["targets", "delete", "db", "--yes"]);
    server.cli_ok(&["targets", "delete", "tagged"]);
}
