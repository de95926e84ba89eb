//! The task pipeline with real processes: secrets, rendering, environment, output
//! capture, exit codes, timeouts, cancels, redaction of the spool, failures.

#[path = "../../runops/tests/common/guard.rs"]
mod guard;
use runops_agent::env::BaseEnv;
use runops_agent::failure::TaskFailure;
use runops_agent::logs::spool::{Spool, TaskResult};
use runops_agent::pipeline::{PipelineContext, StopHandle, run_task};
use runops_agent::runners::script::ScriptRunner;
use runops_agent::runners::{RunContext, RunOutcome, Runner, RunnerRegistry};
use runops_agent::secrets::SecretsRegistry;
use runops_agent::secrets::env_var::EnvVarProvider;
use runops_proto::agent::TaskOffer;
use runops_proto::{FailureReason, TaskStatus};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const DOCS_SECRET: &str = "\"MYSQL_DB\": \"demo\",\n\"MYSQL_PASS\": \"GtK23d<ejkLy0ST2\",\n\"MYSQL_USER\": \"demo-user\",\n";

struct Harness {
    dir: tempfile::TempDir,
    spool: Spool,
    ctx: PipelineContext,
}

fn harness(runners: RunnerRegistry) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let tmp_root = dir.path().join("tmp");
    std::fs::create_dir(&tmp_root).unwrap();
    let mut secrets = SecretsRegistry::default();
    secrets.register(Arc::new(EnvVarProvider::from_vars([
        ("MY_TARGET".to_string(), DOCS_SECRET.to_string()),
        (
            "BROKEN".to_string(),
            "\"A\": \"b\",\n\"C\" \"d\"".to_string(),
        ),
    ])));
    Harness {
        ctx: PipelineContext {
            runners,
            secrets,
            base_env: BaseEnv::from_process_env(),
            tmp_root,
            kill_grace: Duration::from_millis(500),
            authenticator: None,
            log_store: None,
            redact_info_types: None,
            redact_phone_regions: None,
        },
        spool,
        dir,
    }
}

fn offer(task_id: i64, kind: &str, script: &str) -> TaskOffer {
    TaskOffer {
        task_id,
        target: "demo".into(),
        kind: kind.into(),
        script: script.into(),
        message: Some("nightly check".into()),
        secret_provider: None,
        secret_path: None,
        secret_mapping: None,
        redact: "none".into(),
        redact_keys: Vec::new(),
        public_keys: Vec::new(),
        custom_command: None,
        timeout_secs: 60,
        user_email: "ana@example.com".into(),
        user_groups: vec!["dba".into(), "ops".into()],
        user_jwt: None,
        user_jwt_proof: None,
        created_at_ms: None,
        config: None,
        start_deadline_ms: 5000,
    }
}

impl Harness {
    async fn run(&self, offer: &TaskOffer) -> (TaskResult, String) {
        self.run_with_stop(offer, &StopHandle::new()).await
    }

    async fn run_with_stop(&self, offer: &TaskOffer, stop: &StopHandle) -> (TaskResult, String) {
        let task = self.spool.task(offer.task_id);
        let result = run_task(&self.ctx, offer, stop, &task, |_| {})
            .await
            .expect("the spool works");
        assert_eq!(task.result().await.unwrap().as_ref(), Some(&result));
        let log = std::fs::read(task.log_path()).unwrap();
        assert_eq!(result.log_size, log.len() as u64);
        (result, String::from_utf8_lossy(&log).into_owned())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// True while `pid` is a live process (a zombie is dead: it only waits to be reaped).
fn is_alive(pid: i32) -> bool {
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

async fn read_pid(path: &Path) -> i32 {
    for _ in 0..500 {
        if let Ok(s) = std::fs::read_to_string(path)
            && let Ok(pid) = s.trim().parse()
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{} never appeared", path.display());
}

fn defaults() -> Harness {
    harness(RunnerRegistry::with_defaults())
}

#[tokio::test]
async fn docs_walkthrough_secret_reaches_the_script_and_the_password_is_redacted() {
    let h = defaults();
    let mut o = offer(
        1,
        "bash",
        "echo \"$MYSQL_DB\"\necho \"pass=$MYSQL_PASS\" >&2\necho 'rendered {{MYSQL_PASS}}'",
    );
    o.secret_path = Some("MY_TARGET".into());
    let (result, log) = h.run(&o).await;
    assert_eq!(result.status, TaskStatus::Success, "{log}");
    // Two pipes: which of stdout and stderr is read first is up to the scheduler.
    assert!(log.lines().any(|l| l == "demo"), "{log}");
    assert!(
        !log.contains("GtK23d"),
        "a part of the password leaked: {log}"
    );
    assert!(
        !log.contains("ejkLy0ST2"),
        "a part of the password leaked: {log}"
    );
    assert!(log.contains("[REDACTED:MYSQL_PASS]"), "{log}");
    // Nothing in the spool holds the secret: raw output never touches disk.
    for entry in walk(h.dir.path()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("GtK23d<ejkLy0ST2"),
            "secret found in {}",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn stdout_and_stderr_are_both_kept_each_in_its_order() {
    let h = defaults();
    let script = "echo one; echo two >&2; echo three; echo four >&2; exit 3";
    let (result, log) = h.run(&offer(2, "bash", script)).await;
    // The order between the two pipes depends on which one is read first; within each
    // stream it is kept, and no line is lost or cut.
    let lines: Vec<&str> = log.lines().collect();
    let at = |l: &str| {
        lines
            .iter()
            .position(|x| *x == l)
            .unwrap_or_else(|| panic!("{l} missing: {log}"))
    };
    assert_eq!(lines.len(), 4, "{log}");
    assert!(at("one") < at("three"), "{log}");
    assert!(at("two") < at("four"), "{log}");
    assert_eq!(result.status, TaskStatus::Failure);
    assert_eq!(result.failure_reason, Some(FailureReason::ExitCode));
    assert_eq!(result.exit_code, Some(3));
    assert_eq!(
        result.failure_message.as_deref(),
        Some("the task exited with code 3")
    );
}

#[tokio::test]
async fn signal_killed_script_exits_128_plus_signal() {
    let h = defaults();
    let (result, _) = h.run(&offer(3, "bash", "kill -KILL $$")).await;
    assert_eq!(result.exit_code, Some(137));
    assert_eq!(result.failure_reason, Some(FailureReason::ExitCode));
}

#[tokio::test]
async fn metadata_env_and_placeholders_are_set() {
    let h = defaults();
    let script = "echo \"$RUNOPS_TASK_ID|$RUNOPS_TASK_TARGET|$RUNOPS_TASK_DESCRIPTION|$RUNOPS_TASK_USER_EMAIL|$RUNOPS_USER_GROUPS\"\necho '{{RUNOPS_TASK_ID}} {{UNKNOWN}} <&>'";
    let (result, log) = h.run(&offer(4, "bash", script)).await;
    assert_eq!(result.status, TaskStatus::Success);
    assert_eq!(
        log,
        "4|demo|nightly check|ana@example.com|dba,ops\n4 {{UNKNOWN}} <&>\n"
    );
}

#[tokio::test]
async fn task_tmpdir_is_private_and_removed_afterwards() {
    let h = defaults();
    let script = format!(
        "stat -c %a \"$TMPDIR\"; echo \"$TMPDIR\" > {}; pwd",
        h.path("tmpdir").display()
    );
    let (result, log) = h.run(&offer(5, "bash", &script)).await;
    assert_eq!(result.status, TaskStatus::Success, "{log}");
    let tmpdir = std::fs::read_to_string(h.path("tmpdir")).unwrap();
    let tmpdir = tmpdir.trim();
    assert_eq!(log, format!("700\n{tmpdir}\n"));
    assert!(tmpdir.starts_with(h.dir.path().join("tmp").to_str().unwrap()));
    assert!(!Path::new(tmpdir).exists(), "temp dir left behind");
}

#[tokio::test]
async fn timeout_kills_the_whole_group_including_background_children() {
    let h = defaults();
    let pidfile = h.path("bg.pid");
    let script = format!("sleep 600 &\necho $! > {}\nsleep 600\n", pidfile.display());
    let mut o = offer(6, "bash", &script);
    o.timeout_secs = 1;
    let (result, log) = h.run(&o).await;
    assert_eq!(result.status, TaskStatus::Failure);
    assert_eq!(result.failure_reason, Some(FailureReason::Timeout));
    assert!(
        log.contains("runops: the task ran longer than its timeout of 1 s"),
        "{log}"
    );
    let bg = read_pid(&pidfile).await;
    assert!(
        !is_alive(bg),
        "background `sleep 600` (pid {bg}) survived the timeout"
    );
}

#[tokio::test]
async fn background_child_holding_the_pipes_is_killed_when_the_script_exits() {
    let h = defaults();
    let pidfile = h.path("bg.pid");
    let script = format!("sleep 600 &\necho $! > {}\necho done\n", pidfile.display());
    let (result, log) = h.run(&offer(7, "bash", &script)).await;
    assert_eq!(result.status, TaskStatus::Success);
    assert_eq!(log, "done\n");
    let bg = read_pid(&pidfile).await;
    assert!(
        !is_alive(bg),
        "background `sleep 600` (pid {bg}) outlived its task"
    );
}

#[tokio::test]
async fn cancel_kills_a_running_task_and_its_group() {
    let h = defaults();
    let pidfile = h.path("main.pid");
    let bgfile = h.path("bg.pid");
    let script = format!(
        "trap '' TERM\nsleep 600 &\necho $! > {}\necho $$ > {}\nsleep 600\n",
        bgfile.display(),
        pidfile.display()
    );
    let o = offer(8, "bash", &script);
    let stop = StopHandle::new();
    let cancel = async {
        let pid = read_pid(&pidfile).await;
        stop.stop(TaskFailure::new(FailureReason::Cancelled, "killed by ana"));
        pid
    };
    let ((result, log), main_pid) = tokio::join!(h.run_with_stop(&o, &stop), cancel);
    assert_eq!(result.failure_reason, Some(FailureReason::Cancelled));
    assert_eq!(result.failure_message.as_deref(), Some("killed by ana"));
    assert!(log.ends_with("runops: killed by ana\n"), "{log}");
    // The script ignored SIGTERM: only the SIGKILL after the grace period got it.
    assert_eq!(result.exit_code, Some(137));
    assert!(!is_alive(main_pid));
    assert!(!is_alive(read_pid(&bgfile).await));
}

#[tokio::test]
async fn huge_script_on_stdin_does_not_deadlock() {
    let h = defaults();
    let mut script = String::new();
    while script.len() < 900 * 1024 {
        script.push_str("# padding padding padding padding padding padding padding\n");
    }
    script.push_str("head -c 300000 /dev/zero | tr '\\0' x\necho\necho end\n");
    let (result, log) = h.run(&offer(9, "bash", &script)).await;
    assert_eq!(result.status, TaskStatus::Success);
    assert!(log.ends_with("\nend\n"));
    assert_eq!(log.len(), 300000 + "\nend\n".len());
}

#[tokio::test]
async fn python_and_node_read_the_script_on_stdin() {
    let h = defaults();
    let mut o = offer(
        10,
        "python",
        "import os\nprint(os.environ['MYSQL_DB'], os.environ['RUNOPS_TASK_ID'])",
    );
    o.secret_path = Some("MY_TARGET".into());
    let (result, log) = h.run(&o).await;
    assert_eq!(result.status, TaskStatus::Success, "{log}");
    assert_eq!(log, "demo 10\n");
    if guard::require("node (the `node` runner)", which("node")) {
        let (result, log) = h
            .run(&offer(
                11,
                "node",
                "console.log(process.env.RUNOPS_TASK_TARGET)",
            ))
            .await;
        assert_eq!(result.status, TaskStatus::Success, "{log}");
        assert_eq!(log, "demo\n");
    }
}

fn which(program: &str) -> bool {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .any(|d| Path::new(d).join(program).is_file())
}

#[tokio::test]
async fn missing_interpreter_is_an_agent_error_with_advice() {
    let mut reg = RunnerRegistry::default();
    reg.register(
        "python",
        Arc::new(ScriptRunner {
            program: "python3-not-installed-here",
            args: &["-"],
        }),
    );
    let h = harness(reg);
    let (result, log) = h.run(&offer(12, "python", "print(1)")).await;
    assert_eq!(result.failure_reason, Some(FailureReason::AgentError));
    let msg = result.failure_message.unwrap();
    assert!(
        msg.starts_with(
            "`python3-not-installed-here` was not found on the agent's PATH; install it"
        ),
        "{msg}"
    );
    assert_eq!(log, format!("runops: {msg}\n"));
}

#[tokio::test]
async fn configuration_failures_end_fast_with_reason_and_log_line() {
    let h = defaults();
    let cases: Vec<(TaskOffer, FailureReason, &str)> = vec![
        (
            offer(20, "cobol", "x"),
            FailureReason::InvalidConfig,
            "type `cobol` is not supported by this agent (supported: bash, ",
        ),
        (
            TaskOffer {
                secret_path: Some("NOT_SET".into()),
                ..offer(21, "bash", "true")
            },
            FailureReason::Secrets,
            "environment variable `NOT_SET` is not set on the agent",
        ),
        (
            TaskOffer {
                secret_path: Some("BROKEN".into()),
                ..offer(22, "bash", "true")
            },
            FailureReason::Secrets,
            "secret `BROKEN` (environment variable of the agent) is not a JSON object: expected `:` at line 2 column 5",
        ),
        (
            TaskOffer {
                secret_path: Some("MY_TARGET".into()),
                secret_mapping: Some("{\"A\": ".into()),
                ..offer(23, "bash", "true")
            },
            FailureReason::InvalidConfig,
            "secret_mapping of the target is not valid JSON",
        ),
        (
            TaskOffer {
                secret_provider: Some("aws".into()),
                secret_path: Some("x".into()),
                ..offer(24, "bash", "true")
            },
            FailureReason::InvalidConfig,
            "secret provider `aws` is not available in this agent yet",
        ),
    ];
    for (o, reason, message) in cases {
        let (result, log) = h.run(&o).await;
        assert_eq!(result.status, TaskStatus::Failure);
        assert_eq!(result.failure_reason, Some(reason), "task {}", o.task_id);
        let msg = result.failure_message.clone().unwrap();
        assert!(msg.starts_with(message), "task {}: {msg}", o.task_id);
        assert_eq!(log, format!("runops: {msg}\n"));
    }
}

/// A runner that needs keys, as the SQL integrations will.
struct NeedsKeys;

#[async_trait::async_trait]
impl Runner for NeedsKeys {
    fn required_keys(&self) -> &'static [&'static str] {
        &["MYSQL_HOST", "MYSQL_USER", "MYSQL_PASS", "MYSQL_DB"]
    }
    async fn run(&self, ctx: RunContext<'_>) -> Result<RunOutcome, TaskFailure> {
        ctx.output.write(ctx.secrets["MYSQL_HOST"].as_bytes()).await;
        Ok(RunOutcome { exit_code: 0 })
    }
}

#[tokio::test]
async fn required_keys_are_checked_after_mapping() {
    let mut reg = RunnerRegistry::default();
    reg.register("mysql", Arc::new(NeedsKeys));
    let h = harness(reg);
    let mut o = offer(30, "mysql", "select 1");
    o.secret_path = Some("MY_TARGET".into());
    let (result, log) = h.run(&o).await;
    assert_eq!(result.failure_reason, Some(FailureReason::Secrets));
    let msg = result.failure_message.unwrap();
    assert!(msg.contains("type `mysql` needs: MYSQL_HOST"), "{msg}");
    assert_eq!(log, format!("runops: {msg}\n"));
    // Mapping an existing key provides it.
    o.task_id = 31;
    o.secret_mapping = Some(r#"{"MYSQL_HOST": "MYSQL_DB"}"#.into());
    let (result, log) = h.run(&o).await;
    assert_eq!(result.status, TaskStatus::Success, "{log}");
    assert_eq!(log, "demo");
}

#[tokio::test]
async fn restart_kills_what_an_interrupted_task_left_running_and_nothing_else() {
    use std::os::unix::process::CommandExt;
    let h = defaults();
    let spawn = |task_id: &str| {
        std::process::Command::new("sleep")
            .arg("600")
            .env("RUNOPS_TASK_ID", task_id)
            .process_group(0)
            .spawn()
            .unwrap()
    };
    // Task 40 was running when the agent died; another group merely reuses an id.
    let mut left = spawn("40");
    let mut stranger = spawn("41");
    let task = h.spool.task(40);
    task.create().await.unwrap();
    std::fs::write(
        task.groups_path(),
        format!("{}\n{}\n", left.id(), stranger.id()),
    )
    .unwrap();
    let result = h.spool.recover(40).await.unwrap();
    assert_eq!(result.failure_reason, Some(FailureReason::AgentError));
    let status = left.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "a process of another task was killed"
    );
    stranger.kill().unwrap();
    stranger.wait().unwrap();
}

#[tokio::test]
async fn running_task_records_its_process_group() {
    let h = defaults();
    let o = offer(42, "bash", "echo $$");
    let (result, log) = h.run(&o).await;
    assert_eq!(result.status, TaskStatus::Success);
    let groups = h.spool.task(42).groups().await;
    assert_eq!(groups, vec![log.trim().parse::<i32>().unwrap()]);
}
