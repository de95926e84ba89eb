//! End-to-end: what a task can reach of the agent and of other tasks, and that no
//! process a task started outlives it. The agent runs as an unprivileged user (like the
//! shipped image, manifest and unit) with tasks under its own uid, and, for the process
//! tests, also as root (where a cgroup per task is used when cgroup v2 is writable).

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// The unprivileged user the agent runs as (exists on every Debian-like system).
const AGENT_UID: u32 = 65534;
const AGENT_GID: u32 = 65534;

/// A secret value that lives only in the agent's own environment.
const AGENT_ENV_SECRET: &str = "agent-env-secret-4711";

fn need_root() -> bool {
    require(
        "root (this test starts the agent as another user)",
        nix::unistd::geteuid().is_root(),
    )
}

/// A sandbox the unprivileged agent can use: its root passable, a data dir it owns, and
/// a world-writable `shared` dir where tasks leave what the test (and other tasks) read.
fn sandbox_for_unprivileged_agent(name: &str) -> (Sandbox, PathBuf, PathBuf) {
    let sb = Sandbox::new();
    std::fs::set_permissions(sb.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = sb.path(&format!("agent-{name}"));
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(AGENT_UID), Some(AGENT_GID)).unwrap();
    let shared = sb.path("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::set_permissions(sb.home(), std::fs::Permissions::from_mode(0o755)).unwrap();
    (sb, data, shared)
}

fn start_unprivileged_agent(sb: &Sandbox, name: &str, token: &str) -> Agent {
    let secret = format!("\"DB_PASS\": \"{AGENT_ENV_SECRET}\",");
    Agent::start_with(sb, name, token, &[("MY_TARGET", &secret)], |c| {
        c.uid(AGENT_UID).gid(AGENT_GID);
    })
}

fn create_bash_target(server: &Server, name: &str, extra: &[&str]) {
    let mut args = vec![
        "targets",
        "create",
        "--name",
        name,
        "--type",
        "bash",
        "--secret_path",
        "MY_TARGET",
    ];
    args.extend_from_slice(extra);
    server.cli_ok(&args);
}

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[test]
fn a_task_under_the_agents_uid_cannot_read_the_agent_nor_other_tasks() {
    if !need_root() {
        return;
    }
    let (sb, data, shared) = sandbox_for_unprivileged_agent("iso");
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let agent = start_unprivileged_agent(&sb, "iso", &token);
    create_bash_target(&server, "t", &[]);

    // A task that keeps running, leaving in a private file of its temp dir a note, and
    // telling the test where that is and who it is.
    let first = server.submit(
        "t",
        &format!(
            "echo private-note > \"$TMPDIR/note\"; echo \"$TMPDIR\" > {s}/first-tmp; echo $$ > {s}/first-pid; echo first-running; sleep 1000",
            s = shared.display()
        ),
    );
    let first_tmp = wait_for("the first task to start", || {
        read_trimmed(&shared.join("first-tmp"))
    });
    let first_pid = wait_for("the first task's pid", || {
        read_trimmed(&shared.join("first-pid"))
    });
    let first_log = data.join("spool").join(first.to_string()).join("log");
    wait_for("the first task's spooled log", || {
        std::fs::metadata(&first_log).ok()
    });

    let probes = [
        (
            "AGENT-ENVIRON",
            format!("cat /proc/{}/environ", agent.pid()),
        ),
        ("AGENT-MEM", format!("exec 3</proc/{}/mem", agent.pid())),
        ("DATA-DIR-LISTED", format!("ls {}", data.display())),
        ("SPOOL-LISTED", format!("ls {}/spool", data.display())),
        ("LOG-READ", format!("cat {}", first_log.display())),
        (
            "LOG-APPENDED",
            format!("echo forged >> {}", first_log.display()),
        ),
        ("LOCK-READ", format!("cat {}/agent.lock", data.display())),
        ("TMP-LISTED", format!("ls {first_tmp}")),
        ("TMP-READ", format!("cat {first_tmp}/note")),
        ("TMP-APPENDED", format!("echo forged >> {first_tmp}/note")),
        ("TASK-ENVIRON", format!("cat /proc/{first_pid}/environ")),
        ("TASK-CWD", format!("ls /proc/{first_pid}/cwd/")),
    ];
    let mut script = String::from("id -u; ");
    for (name, cmd) in &probes {
        script.push_str(&format!(
            "if ( {cmd} ) >/dev/null 2>&1; then echo LEAK-{name}; else echo denied-{name}; fi; "
        ));
    }
    // What a task needs keeps working: its own temp dir, the rest of the machine.
    script.push_str(
        "echo mine > \"$TMPDIR/x\" && cat \"$TMPDIR/x\"; head -c1 /etc/passwd >/dev/null && echo etc-readable; ",
    );
    script.push_str(&format!(
        "echo ok > {}/second-wrote && echo shared-writable",
        shared.display()
    ));
    let out = server.cli_ok(&["tasks", "create", "-t", "t", "-s", &script]);
    assert_eq!(
        out.lines().next(),
        Some(AGENT_UID.to_string().as_str()),
        "the task runs as the agent's own user: {out}"
    );
    for (name, _) in &probes {
        assert!(
            out.contains(&format!("denied-{name}")) && !out.contains(&format!("LEAK-{name}")),
            "{name}: a task could reach it:\n{out}\nagent log:\n{}",
            agent.log()
        );
    }
    for works in ["mine", "etc-readable", "shared-writable"] {
        assert!(out.contains(works), "{works}: {out}");
    }
    assert!(
        agent.log().contains("task isolation:"),
        "the agent says at start-up what holds: {}",
        agent.log()
    );
    // Nothing was planted in the first task's log nor its note.
    server.cli_ok(&["tasks", "kill", &first.to_string()]);
    server.wait_final(first);
    let first_out = server.logs(first);
    assert!(!first_out.contains("forged"), "{first_out}");
    assert!(
        !server.logs(first).contains(AGENT_ENV_SECRET),
        "the secret never shows in a log"
    );
}

/// Whether the process `pid` is gone: no `/proc/<pid>`, or it is another program now
/// (the pid was reused). A zombie `sleep` (killed, not reaped) is not gone.
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => !stat.contains("(sleep)"),
    }
}

/// The script part that starts a `setsid` daemon and a double-forked one, each writing
/// its pid to `pids`, and waits until both did.
fn start_daemons(pids: &Path) -> String {
    let p = pids.display();
    format!(
        "setsid sh -c 'echo $$ >> {p}; exec sleep 1000' </dev/null >/dev/null 2>&1 & \
         ( sh -c 'echo $$ >> {p}; exec sleep 1000' </dev/null >/dev/null 2>&1 & ) & \
         while [ \"$(wc -l < {p} 2>/dev/null || echo 0)\" -lt 2 ]; do sleep 0.1; done; echo daemons-started; "
    )
}

fn pids_in(file: &Path) -> Vec<i32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Runs the three ways a task can end, each starting two detached daemons, and checks
/// that after each end none of them is left.
fn no_process_outlives_its_task(server: &Server, shared: &Path, agent: &Agent) {
    create_bash_target(server, "fast", &[]);
    create_bash_target(server, "slow", &["--timeout", "3"]);

    // 1. The task ends by itself.
    let normal = shared.join("normal-pids");
    let id = server.submit("fast", &start_daemons(&normal));
    let t = server.wait_final(id);
    assert_eq!(t["status"], "success", "{t}");
    // 2. `tasks kill`.
    let killed = shared.join("killed-pids");
    let id_killed = server.submit("fast", &format!("{}sleep 1000", start_daemons(&killed)));
    wait_for("the killed task's daemons", || {
        (pids_in(&killed).len() == 2).then_some(())
    });
    server.cli_ok(&["tasks", "kill", &id_killed.to_string()]);
    server.wait_final(id_killed);
    // 3. The timeout.
    let timed = shared.join("timeout-pids");
    let id_timed = server.submit("slow", &format!("{}sleep 1000", start_daemons(&timed)));
    let t = server.wait_final(id_timed);
    assert_eq!(t["failure_reason"], "timeout", "{t}");

    for (how, file) in [
        ("ended", &normal),
        ("killed", &killed),
        ("timed out", &timed),
    ] {
        let pids = pids_in(file);
        assert_eq!(
            pids.len(),
            2,
            "{how}: both daemons wrote their pid: {pids:?}"
        );
        for pid in pids {
            wait_for(
                &format!(
                    "daemon {pid} of the task that {how} to be gone; agent log:\n{}",
                    agent.log()
                ),
                || gone(pid).then_some(()),
            );
        }
    }
}

#[test]
fn no_process_outlives_its_task_with_an_unprivileged_agent() {
    if !need_root() {
        return;
    }
    let (sb, _data, shared) = sandbox_for_unprivileged_agent("procs");
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let agent = start_unprivileged_agent(&sb, "procs", &token);
    no_process_outlives_its_task(&server, &shared, &agent);
}

#[test]
fn no_process_outlives_its_task_with_a_root_agent() {
    let sb = Sandbox::new();
    let shared = sb.path("shared");
    std::fs::create_dir(&shared).unwrap();
    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let agent = Agent::start(&sb, "root", &token, None, &[("MY_TARGET", "\"A\": \"b\",")]);
    no_process_outlives_its_task(&server, &shared, &agent);
}

/// Records its argv (NUL-separated), the content of every argument that is a file, and
/// its working directory into `$DUMP_DIR/<its name>.*`.
const FAKE_TOOL: &str = r#"#!/bin/sh
name=$(basename "$0")
out="$DUMP_DIR/$name"
: > "$out.argv"; : > "$out.file"
for a in "$@"; do printf '%s\0' "$a" >> "$out.argv"; if [ -f "$a" ]; then cat "$a" >> "$out.file"; fi; done
cat > /dev/null
pwd > "$out.cwd"
echo "fake $name ran"
"#;

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Modes of everything under `dir` that is not 0600 (files) or 0700 (directories).
fn not_private(dir: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode != want {
            bad.push(format!("{} is {mode:o}", p.display()));
        }
        if meta.is_dir()
            && let Ok(rd) = std::fs::read_dir(&p)
        {
            stack.extend(rd.flatten().map(|e| e.path()));
        }
    }
    bad
}

#[test]
fn every_type_that_writes_a_file_works_under_a_relative_data_dir_and_the_data_dir_is_private() {
    let sb = Sandbox::new();
    let bin = sb.path("fake-bin");
    let dump = sb.path("dump");
    let app = sb.path("app");
    for d in [&bin, &dump, &app] {
        std::fs::create_dir_all(d).unwrap();
    }
    for tool in ["kubectl", "vault", "elixir", "rails"] {
        let p = bin.join(tool);
        std::fs::write(&p, FAKE_TOOL).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // A data dir left open by an older version (or an operator): made private at start.
    let data = sb.path("rel-agent");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut keys = serde_json::json!({
        "PATH": format!("{}:/usr/bin:/bin", bin.display()),
        "DUMP_DIR": dump.to_str().unwrap(),
        "KUBE_CONFIG_DATA": b64(b"apiVersion: v1\nkind: Config\n"),
        "NAMESPACE": "prod-ns",
        "DEPLOYMENT": "web",
        "VAULT_ADDR": "http://127.0.0.1:1",
        "VAULT_TOKEN": "hvs.fake",
        "RAILS_ROOT": app.to_str().unwrap(),
    });
    let all = keys.to_string();
    keys["K8S_EXEC_RESOURCE"] = "deploy/web".into();
    keys["K8S_EXEC_COMMAND"] = "sh".into();
    let exec = keys.to_string();

    let server = Server::start(&sb, 10);
    let token = server.create_agent_token();
    let sandbox = sb.dir.path().to_path_buf();
    let agent = Agent::start_with(
        &sb,
        "rel",
        &token,
        &[
            ("ALL", &all),
            ("EXEC", &exec),
            ("RUNOPS_AGENT_DATA_DIR", "rel-agent"),
        ],
        |c| {
            c.current_dir(&sandbox);
        },
    );
    let types = [
        ("k8s", "kubectl", true),
        ("k8s-apply", "kubectl", true),
        ("k8s-exec", "kubectl", true),
        ("rails-console-k8s", "kubectl", true),
        ("elixir", "elixir", true),
        ("rails-console", "rails", true),
        ("hashicorp-vault", "vault", false),
    ];
    for (kind, tool, writes_file) in types {
        let var = if kind == "k8s-exec" { "EXEC" } else { "ALL" };
        server.cli_ok(&[
            "targets",
            "create",
            "--name",
            kind,
            "--type",
            kind,
            "--secret_path",
            var,
        ]);
        let id = server.submit(kind, "puts 1");
        let t = server.wait_final(id);
        let log = server.logs(id);
        assert_eq!(
            t["status"],
            "success",
            "{kind}: {t}\n{log}\nagent log:\n{}",
            agent.log()
        );
        let argv = std::fs::read_to_string(dump.join(format!("{tool}.argv"))).unwrap();
        for a in argv.split_terminator('\0').filter(|a| a.contains("task-")) {
            assert!(
                a.starts_with('/'),
                "{kind}: `{tool}` got a relative path: {a}"
            );
        }
        if writes_file {
            let file = std::fs::read_to_string(dump.join(format!("{tool}.file"))).unwrap();
            assert!(
                !file.is_empty(),
                "{kind}: `{tool}` could not read the file the agent wrote for it; argv: {argv:?}"
            );
        }
    }
    assert_eq!(not_private(&data), Vec::<String>::new());
}

/// Makes this test process the subreaper of what a killed agent leaves (PID 1 of a
/// container may never reap), so that a killed leftover can be reaped and seen gone.
fn adopt_orphans() {
    // SAFETY: prctl on this process with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

fn reaped_and_gone(pid: i32) -> bool {
    // SAFETY: a non-blocking wait for one pid; ECHILD when it is not ours.
    unsafe {
        libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
    }
    gone(pid)
}

/// A task's detached daemons survive the agent's SIGKILL (the documented window) and
/// are killed by its next start on the same data dir.
fn the_next_start_kills_what_a_killed_agent_left(
    sb: &Sandbox,
    shared: &Path,
    start: impl Fn(&str, &str) -> Agent,
) {
    adopt_orphans();
    let server = Server::start(sb, 3);
    let token = server.create_agent_token();
    let mut agent = start(&token, "first");
    create_bash_target(&server, "t", &[]);
    let pids_file = shared.join("restart-pids");
    let id = server.submit("t", &format!("{}sleep 1000", start_daemons(&pids_file)));
    wait_for("the task's daemons", || {
        (pids_in(&pids_file).len() == 2).then_some(())
    });
    agent.child.kill().unwrap(); // SIGKILL: no chance to clean up
    agent.child.wait().unwrap();
    server.wait_final(id);
    let again = start(&token, "second");
    for pid in pids_in(&pids_file) {
        wait_for(
            &format!(
                "daemon {pid} to be killed by the agent's next start; its log:\n{}",
                again.log()
            ),
            || reaped_and_gone(pid).then_some(()),
        );
    }
}

#[test]
fn the_next_start_of_a_killed_root_agent_kills_what_its_tasks_left() {
    let sb = Sandbox::new();
    let shared = sb.path("shared");
    std::fs::create_dir(&shared).unwrap();
    let data = sb.path("agent-kept");
    the_next_start_kills_what_a_killed_agent_left(&sb, &shared, |token, name| {
        Agent::start_with(
            &sb,
            name,
            token,
            &[
                ("MY_TARGET", "\"A\": \"b\","),
                ("RUNOPS_AGENT_DATA_DIR", data.to_str().unwrap()),
            ],
            |_| {},
        )
    });
}

#[test]
fn the_next_start_of_a_killed_unprivileged_agent_kills_what_its_tasks_left() {
    if !need_root() {
        return;
    }
    let (sb, data, shared) = sandbox_for_unprivileged_agent("kept");
    the_next_start_kills_what_a_killed_agent_left(&sb, &shared, |token, name| {
        let secret = format!("\"DB_PASS\": \"{AGENT_ENV_SECRET}\",");
        Agent::start_with(
            &sb,
            name,
            token,
            &[
                ("MY_TARGET", &secret),
                ("RUNOPS_AGENT_DATA_DIR", data.to_str().unwrap()),
            ],
            |c| {
                c.uid(AGENT_UID).gid(AGENT_GID);
            },
        )
    });
}
