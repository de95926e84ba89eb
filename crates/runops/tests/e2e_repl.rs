//! End-to-end: `runops tasks repl` with the real binary (server, agent, CLI), typed at
//! in a real pseudo-terminal: tmux runs the REPL, `send-keys` types (Enter, Up, Ctrl-C,
//! Ctrl-D) and `capture-pane` reads the screen. Every wait polls the screen or the
//! server until what a user would see is there.
//!
//! PostgreSQL on 127.0.0.1:5432 (user `postgres`, trust; `scripts/test.sh` starts it)
//! and `tmux` are needed: under CI a missing one fails the test, locally it is skipped.

mod common;

use common::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn tmux_available() -> bool {
    require(
        "tmux",
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success()),
    )
}

fn postgres_up() -> bool {
    require(
        "PostgreSQL on 127.0.0.1:5432 with `psql`",
        psql(&["-Atc", "select 1"]).is_some_and(|o| o.status.success()),
    )
}

fn psql(args: &[&str]) -> Option<Output> {
    Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-U", "postgres", "-d", "test"])
        .args(args)
        .output()
        .ok()
}

/// A tmux server of the test's own (its socket in the sandbox), one session per REPL;
/// killed with everything in it when dropped.
struct Tmux {
    socket: PathBuf,
    dir: PathBuf,
}

impl Tmux {
    fn new(sb: &Sandbox) -> Tmux {
        Tmux {
            socket: sb.path("tmux.sock"),
            dir: sb.path(""),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("-f")
            .arg("/dev/null")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            stderr(&out)
        );
        out
    }

    /// Starts `runops tasks repl -t TARGET` in session `name`, with only the variables
    /// given (as `runops` sees them in a shell). When the REPL ends, the pane says
    /// `[repl exited N]` and stays open to be read.
    fn start_repl(&self, name: &str, home: &Path, server: &Server, token: &str, target: &str) {
        let script = self.dir.join(format!("repl-{name}.sh"));
        let text = format!(
            "#!/bin/bash\n\
             export HOME='{home}' PATH='{path}' LANG=C.UTF-8 TERM=screen \
             RUNOPS_URL='{url}' RUNOPS_TOKEN='{token}'\n\
             '{bin}' tasks repl -t '{target}'\n\
             echo \"[repl exited $?]\"\n\
             exec sleep 3600\n",
            home = home.display(),
            path = std::env::var("PATH").unwrap_or_default(),
            url = server.url(),
            bin = runops_bin(),
        );
        std::fs::write(&script, text).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
        self.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "200",
            "-y",
            "50",
            &script.display().to_string(),
        ]);
    }

    /// Types `text` and presses Enter.
    fn type_line(&self, name: &str, text: &str) {
        // tmux reads an argument ending in `;` as the end of its command: the final
        // semicolon goes as a key code instead.
        let (body, semicolon) = match text.strip_suffix(';') {
            Some(body) => (body, true),
            None => (text, false),
        };
        if !body.is_empty() {
            self.run(&["send-keys", "-t", name, "-l", body]);
        }
        if semicolon {
            self.run(&["send-keys", "-t", name, "-H", "3b"]);
        }
        self.run(&["send-keys", "-t", name, "Enter"]);
    }

    /// Presses keys by tmux name (`Up`, `C-c`, `C-d`).
    fn keys(&self, name: &str, keys: &str) {
        self.run(&["send-keys", "-t", name, keys]);
    }

    /// The pane's text, scrollback included, wrapped lines joined.
    fn screen(&self, name: &str) -> String {
        stdout(&self.run(&["capture-pane", "-p", "-J", "-S", "-2000", "-t", name]))
    }

    /// Waits until the screen satisfies `pred`; returns it.
    fn wait_screen(&self, name: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(what, || {
                last = self.screen(name);
                pred(&last).then(|| last.clone())
            })
        }));
        match found {
            Ok(s) => s,
            Err(_) => panic!("timed out waiting for {what}; the screen:\n{last}"),
        }
    }

    /// Waits until the screen shows `text`.
    fn wait_text(&self, name: &str, text: &str) -> String {
        self.wait_screen(name, &format!("{text:?} on the screen"), |s| {
            s.contains(text)
        })
    }

    /// Waits until the last line that is not empty is the prompt `prompt` alone (the
    /// REPL is idle again); returns the screen.
    fn wait_prompt(&self, name: &str, prompt: &str) -> String {
        self.wait_screen(name, &format!("the prompt `{prompt}`"), |s| {
            last_line(s) == prompt.trim_end()
        })
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .stdin(Stdio::null())
            .output();
    }
}

fn last_line(screen: &str) -> &str {
    screen
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim_end()
}

/// A server, one untagged agent (holding the PostgreSQL secret as `PG_T`) and a HOME.
struct Env {
    sb: Sandbox,
    server: Server,
    _agent: Agent,
}

fn start() -> Env {
    let sb = Sandbox::new();
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let secret = r#"{"PG_HOST": "127.0.0.1", "PG_USER": "postgres", "PG_PASS": "trust-auth-ignores-it", "PG_DB": "test", "PGSSLMODE": "disable"}"#;
    let agent = Agent::start(&sb, "a", &token, None, &[("PG_T", secret)]);
    wait_for("the agent to connect", || {
        server
            .cli_ok(&["agents", "list", "--json"])
            .contains("\"hostname\"")
            .then_some(())
    });
    Env {
        sb,
        server,
        _agent: agent,
    }
}

/// The one task of `target` in `status`, once there is one.
fn task_in(server: &Server, target: &str, status: &str) -> Value {
    wait_for(&format!("a task of {target} to be {status}"), || {
        let out = server.cli_ok(&["tasks", "list", "--status", status, "-t", target, "--json"]);
        let list: Vec<Value> = serde_json::from_str(&out).unwrap();
        list.into_iter().next()
    })
}

/// A label no other test (or run) uses, to find our query on the shared server.
fn unique(prefix: &str) -> String {
    let mut b = [0u8; 5];
    getrandom::fill(&mut b).unwrap();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}_{hex}")
}

#[test]
fn postgres_repl_runs_statements_recalls_history_and_ctrl_c_kills_a_long_query() {
    if !tmux_available() || !postgres_up() {
        return;
    }
    let env = start();
    let server = &env.server;
    server.cli_ok(&[
        "targets",
        "create",
        "--name",
        "pg",
        "--type",
        "postgres",
        "--secret_path",
        "PG_T",
    ]);
    let tmux = Tmux::new(&env.sb);
    let home = env.sb.home();
    tmux.start_repl("a", &home, server, ADMIN_TOKEN, "pg");

    // The prompt, then a statement's output as psql prints it.
    tmux.wait_prompt("a", "pg> ");
    tmux.type_line("a", "select 1 as one;");
    tmux.wait_text("a", "pg> select 1 as one;\none\n1\n(1 row)\n");
    tmux.wait_prompt("a", "pg> ");

    // A statement over three lines runs at its `;`, after continuation prompts.
    tmux.type_line("a", "select");
    tmux.wait_prompt("a", "...> ");
    tmux.type_line("a", "  2 as two");
    tmux.type_line("a", ";");
    let screen = tmux.wait_text("a", "two\n2\n(1 row)\n");
    assert!(
        screen.contains("pg> select\n...>   2 as two\n...> ;\n"),
        "{screen}"
    );
    tmux.wait_prompt("a", "pg> ");

    // Ctrl-C during a long query kills its task, on the database too; the prompt returns.
    let label = unique("repl_sleep");
    let long = format!("select pg_sleep(60) as {label};");
    tmux.type_line("a", &long);
    let running = task_in(server, "pg", "running");
    let id = running["id"].as_i64().unwrap();
    let active = format!(
        "select count(*) from pg_stat_activity where query like '%{label}%' and pid <> pg_backend_pid()"
    );
    wait_for("the query to run on PostgreSQL", || {
        let o = psql(&["-Atc", &active])?;
        (stdout(&o).trim() == "1").then_some(())
    });
    tmux.keys("a", "C-c");
    tmux.wait_text("a", &format!("killing task {id}"));
    let screen = tmux.wait_text("a", &format!("task {id} failed (cancelled)"));
    assert!(!screen.contains("[repl exited"), "{screen}");
    tmux.wait_prompt("a", "pg> ");
    let t = server.task(id);
    assert_eq!(t["status"], "failure", "{t}");
    assert_eq!(t["failure_reason"], "cancelled", "{t}");
    wait_for("the query to be cancelled on PostgreSQL", || {
        let o = psql(&["-Atc", &active])?;
        (stdout(&o).trim() == "0").then_some(())
    });

    // Each statement was an ordinary task of the user.
    let listed = server.cli_ok(&["tasks", "list", "-t", "pg", "--json"]);
    let tasks: Vec<Value> = serde_json::from_str(&listed).unwrap();
    let scripts: Vec<&str> = tasks.iter().filter_map(|t| t["script"].as_str()).collect();
    assert_eq!(
        scripts,
        [long.as_str(), "select\n  2 as two\n;", "select 1 as one;"]
    );

    // Ctrl-D leaves with 0.
    tmux.keys("a", "C-d");
    tmux.wait_text("a", "[repl exited 0]");

    // The history survives: a new REPL recalls the last statement with Up; Ctrl-C
    // clears the line, Ctrl-D leaves.
    let dir = home.join(".config/runops/history");
    let file = wait_for("the history file", || {
        std::fs::read_dir(&dir)
            .ok()?
            .flatten()
            .next()
            .map(|e| e.path())
    });
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(name, format!("127.0.0.1_{}-pg", server.port));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the history is private");
    tmux.start_repl("b", &home, server, ADMIN_TOKEN, "pg");
    tmux.wait_prompt("b", "pg> ");
    tmux.keys("b", "Up");
    tmux.wait_prompt("b", &format!("pg> {long}"));
    tmux.keys("b", "C-c");
    tmux.wait_prompt("b", "pg> ");
    tmux.keys("b", "C-d");
    tmux.wait_text("b", "[repl exited 0]");
    assert_eq!(
        server.cli_ok(&["tasks", "list", "-t", "pg", "--json"]),
        listed,
        "recalling and clearing ran nothing"
    );
}

#[test]
fn bash_repl_runs_each_line_and_a_block_at_the_empty_line() {
    if !tmux_available() {
        return;
    }
    let env = start();
    let server = &env.server;
    server.cli_ok(&["targets", "create", "--name", "sh", "--type", "bash"]);
    let tmux = Tmux::new(&env.sb);
    tmux.start_repl("a", &env.sb.home(), server, ADMIN_TOKEN, "sh");
    tmux.wait_prompt("a", "sh> ");
    tmux.type_line("a", "echo hi-from-repl");
    tmux.wait_text("a", "sh> echo hi-from-repl\nhi-from-repl\n");
    tmux.wait_prompt("a", "sh> ");

    tmux.type_line("a", "for i in 1 2; do");
    tmux.wait_prompt("a", "...> ");
    tmux.type_line("a", "  echo n$i");
    tmux.type_line("a", "done");
    tmux.wait_prompt("a", "...> ");
    tmux.type_line("a", "");
    tmux.wait_text("a", "n1\nn2\n");
    tmux.wait_prompt("a", "sh> ");

    // A failing line says why, and the REPL goes on.
    tmux.type_line("a", "exit 4");
    tmux.wait_text("a", "failed (exit-code)");
    tmux.wait_prompt("a", "sh> ");
    tmux.keys("a", "C-d");
    tmux.wait_text("a", "[repl exited 0]");
}

#[test]
fn a_reviewed_target_says_the_statement_waits_runs_it_once_approved_and_ctrl_c_withdraws() {
    if !tmux_available() {
        return;
    }
    let env = start();
    let server = &env.server;
    server.cli_ok(&[
        "targets", "create", "--name", "prod", "--type", "bash", "--review", "anyone",
    ]);
    let carol = server.create_user("carol", "dev");
    let bob = server.create_user("bob", "dba");
    let tmux = Tmux::new(&env.sb);
    tmux.start_repl("a", &env.sb.home(), server, &carol, "prod");
    let banner = tmux.wait_prompt("a", "prod> ");
    assert!(banner.contains("wait for review"), "{banner}");

    tmux.type_line("a", "echo approved-output");
    let pending = task_in(server, "prod", "pending-review");
    let id = pending["id"].as_i64().unwrap();
    tmux.wait_text(
        "a",
        &format!("task {id} is waiting for review: 0 of 1 (any other user)"),
    );
    tmux.wait_text("a", &format!("runops tasks approve {id}"));
    server.cli_ok_as(&bob, &["tasks", "approve", &id.to_string()]);
    tmux.wait_text("a", "\napproved-output\n");
    tmux.wait_prompt("a", "prod> ");
    assert_eq!(server.wait_final(id)["status"], "success");

    // Ctrl-C while a statement waits for review withdraws it.
    tmux.type_line("a", "echo never-run");
    let pending = task_in(server, "prod", "pending-review");
    let id = pending["id"].as_i64().unwrap();
    tmux.wait_text("a", &format!("runops tasks approve {id}"));
    tmux.keys("a", "C-c");
    tmux.wait_text("a", &format!("task {id} failed (cancelled)"));
    tmux.wait_prompt("a", "prod> ");
    let t = server.task(id);
    assert_eq!(t["failure_reason"], "cancelled", "{t}");
    assert!(
        t["failure_message"]
            .as_str()
            .unwrap_or_default()
            .contains("withdrawn"),
        "{t}"
    );
    tmux.keys("a", "C-d");
    tmux.wait_text("a", "[repl exited 0]");
}

#[test]
fn piped_statements_run_in_turn_and_the_first_failure_ends_the_repl() {
    let env = start();
    let server = &env.server;
    server.cli_ok(&["targets", "create", "--name", "sh", "--type", "bash"]);
    let repl = |input: &str| {
        let mut c = server.cli_cmd(&["tasks", "repl", "-t", "sh"]);
        c.stdin(Stdio::piped());
        run_with_stdin(c, input)
    };
    let out = repl("echo one\nif true; then\n  echo two\nfi\n\necho three\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "one\ntwo\nthree\n");
    assert!(!stderr(&out).contains("sh>"), "no prompt when piped");

    let out = repl("echo before\nexit 3\necho never\n");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "before\n");

    let out = server.cli(&["tasks", "repl", "-t", "nope"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
    let out = server.cli(&["tasks", "repl", "-t", "sh", "--json"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("has no --json"), "{}", stderr(&out));

    if postgres_up() {
        server.cli_ok(&[
            "targets",
            "create",
            "--name",
            "pg",
            "--type",
            "postgres",
            "--secret_path",
            "PG_T",
        ]);
        let mut c = server.cli_cmd(&["tasks", "repl", "-t", "pg"]);
        c.stdin(Stdio::piped());
        let out = run_with_stdin(c, "select 'a;b' as x;\nselect\n  2 as y\n;\nselect 3 as z");
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            "x\na;b\n(1 row)\ny\n2\n(1 row)\nz\n3\n(1 row)\n"
        );
    }
}

/// The follow code the REPL shares with `tasks create` keeps the latter's Ctrl-C: it
/// stops waiting (exit 130) and the task goes on.
#[test]
fn ctrl_c_during_tasks_create_detaches_and_the_task_goes_on() {
    let env = start();
    let server = &env.server;
    server.cli_ok(&["targets", "create", "--name", "sh", "--type", "bash"]);
    let mut c = server.cli_cmd(&[
        "tasks",
        "create",
        "-t",
        "sh",
        "-s",
        "echo started; sleep 30",
    ]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().expect("spawn tasks create");
    let id = task_in(server, "sh", "running")["id"].as_i64().unwrap();
    wait_for("the task's first output", || {
        server.logs(id).contains("started").then_some(())
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("task {id} keeps running")),
        "{}",
        stderr(&out)
    );
    assert_eq!(server.task(id)["status"], "running");
    server.cli_ok(&["tasks", "kill", &id.to_string()]);
}
