//! Running one child process for a task: its own process group, output captured from
//! both pipes into the task's log in arrival order, and a kill that leaves nothing
//! behind (SIGTERM to the group, a grace period, SIGKILL to the group).

use crate::env::ChildEnv;
use crate::failure::TaskFailure;
use crate::isolation;
use crate::limits::{GROUP_CHECK_INTERVAL, GROUP_EXIT_WAIT, PIPE_DRAIN_TIMEOUT, PIPE_READ_BYTES};
use crate::logs::output::{Source, TaskLog};
use crate::spawn::{self, TaskCommand};
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What to start.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Looked up on the child's PATH.
    pub program: String,
    pub args: Vec<String>,
    /// Written to the child's stdin (then closed); `None` gives it an empty stdin.
    pub stdin: Option<Vec<u8>>,
    /// Working directory (the task's private temp dir).
    pub cwd: PathBuf,
    /// For the "not found" message: what the program is needed for (`python` tasks).
    pub needed_for: String,
    /// File to which the child's process group id is appended, so that an agent
    /// restarted after a crash can kill what this run left behind.
    pub group_record: Option<PathBuf>,
}

/// Finds `program` on the child's PATH, the way `execvp` would.
///
/// The lookup uses the child's PATH, not the agent's, and an absolute path removes one
/// of the reasons the standard library gives up its `posix_spawn` path for a full
/// `fork` (a program to look up on a PATH of the child's own). A name not found is
/// returned as is, so the spawn fails with the usual "not found" error.
fn resolve_program(program: &str, path: Option<&str>) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return PathBuf::from(program);
    }
    path.unwrap_or_default()
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| PathBuf::from(program))
}

/// Runs `spec` with exactly `env` and returns its exit code (128 + signal when a
/// signal killed it). When `stop` fires the whole group is killed and the code is
/// returned all the same; the caller knows why it stopped. When the main process exits,
/// whatever it left running in its group is killed too.
pub async fn run_process(
    spec: &ProcessSpec,
    env: &ChildEnv,
    output: &TaskLog,
    stop: &CancellationToken,
    grace: Duration,
) -> Result<i32, TaskFailure> {
    let program = resolve_program(&spec.program, env.get("PATH"));
    // Confinement first: joining the cgroup needs the privileges the user switch drops.
    let mut guard = match env.isolation() {
        Some(iso) => Some(prepare_isolation(iso.clone(), env).await?),
        None => None,
    };
    env.prepare_spawn().await.map_err(|e| {
        TaskFailure::agent_error(format!(
            "cannot give the task's temp dir to the user tasks run as: {e}"
        ))
    })?;
    let mut child = if spawn::supported() {
        let cmd = TaskCommand {
            program: &program,
            args: &spec.args,
            env: env.iter().collect(),
            cwd: &spec.cwd,
            stdin_piped: spec.stdin.is_some(),
            cgroup: guard.as_ref().and_then(|g| g.cgroup_fds()),
            landlock: guard.as_ref().and_then(|g| g.landlock_fd()),
            no_new_privs: guard.as_ref().is_some_and(|g| g.need_no_new_privs()),
            user: env.run_as(),
        };
        isolation::spawn_registered(|| spawn::spawn(&cmd).map(TaskProcess::Cloned), |c| c.id())
    } else {
        let mut cmd = std_command(&program, spec, env, guard.as_ref());
        isolation::spawn_registered(|| cmd.spawn().map(TaskProcess::Std), |c| c.id())
    }
    .map_err(|e| spawn_failure(spec, &e))?;
    if let Some(g) = &mut guard {
        g.started();
    }
    let Some(pgid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
        return Err(TaskFailure::agent_error(format!(
            "`{}` exited before it could be watched",
            spec.program
        )));
    };
    let pgid = Pid::from_raw(pgid);
    if let Some(record) = &spec.group_record {
        record_group(record, pgid).await;
    }

    // Feed stdin from its own task: a script bigger than the pipe buffer must not
    // block us while the child is busy writing output.
    if let (Some(input), Some(mut stdin)) = (spec.stdin.clone(), child.take_stdin()) {
        tokio::spawn(async move {
            // The child may exit without reading everything: a broken pipe is fine.
            let _ = stdin.write_all(&input).await;
        });
    }
    let (stdout, stderr) = child.take_output();
    let pumps = async {
        tokio::join!(
            pump(stdout, output, Source::Stdout),
            pump(stderr, output, Source::Stderr)
        );
    };
    let supervise = async {
        let exited = tokio::select! {
            status = child.wait() => status.ok(),
            _ = stop.cancelled() => None,
        };
        // Stopped, or the main process is gone: either way nothing of the group may stay,
        // nor anything the task started outside it (its cgroup, or its escapees).
        let status = kill_group(&mut child, pgid, grace).await;
        isolation::unregister_child(pgid.as_raw());
        if let Some(g) = guard.take() {
            g.finish().await;
        }
        exited.or(status)
    };
    tokio::pin!(pumps, supervise);
    let mut pumps_done = false;
    let status = loop {
        tokio::select! {
            status = &mut supervise => break status,
            _ = &mut pumps, if !pumps_done => pumps_done = true,
        }
    };
    if !pumps_done {
        // A process that left the group may still hold the pipes: don't wait forever.
        let _ = tokio::time::timeout(PIPE_DRAIN_TIMEOUT, &mut pumps).await;
    }
    match status {
        Some(s) => Ok(exit_code(s)),
        None => Err(TaskFailure::agent_error(format!(
            "lost track of `{}`: its exit status could not be read",
            spec.program
        ))),
    }
}

/// The standard library's spawn, for kernels without pidfds: a full `fork`, the
/// confinement and the user switch in `pre_exec` hooks (in that order).
fn std_command(
    program: &Path,
    spec: &ProcessSpec,
    env: &ChildEnv,
    guard: Option<&isolation::SpawnGuard>,
) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(&spec.args)
        .current_dir(&spec.cwd)
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(g) = guard {
        g.apply(&mut cmd);
    }
    env.apply(&mut cmd);
    cmd
}

/// A task's main process, started by [`spawn`] or, on older kernels, by tokio.
enum TaskProcess {
    Cloned(spawn::TaskChild),
    Std(Child),
}

impl TaskProcess {
    fn id(&self) -> Option<u32> {
        match self {
            TaskProcess::Cloned(c) => Some(c.id()),
            TaskProcess::Std(c) => c.id(),
        }
    }

    fn take_stdin(&mut self) -> Option<ChildStdin> {
        match self {
            TaskProcess::Cloned(c) => c.stdin.take(),
            TaskProcess::Std(c) => c.stdin.take(),
        }
    }

    fn take_output(&mut self) -> (Option<ChildStdout>, Option<ChildStderr>) {
        match self {
            TaskProcess::Cloned(c) => (c.stdout.take(), c.stderr.take()),
            TaskProcess::Std(c) => (c.stdout.take(), c.stderr.take()),
        }
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            TaskProcess::Cloned(c) => c.wait().await,
            TaskProcess::Std(c) => c.wait().await,
        }
    }

    fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        match self {
            TaskProcess::Cloned(c) => c.try_wait(),
            TaskProcess::Std(c) => c.try_wait(),
        }
    }
}

/// The task's Landlock ruleset and cgroup, made off the async threads (it lists
/// directories). Failing to confine a task refuses it: it would run with less
/// protection than the start-up log promised.
async fn prepare_isolation(
    iso: isolation::SharedIsolation,
    env: &ChildEnv,
) -> Result<isolation::SpawnGuard, TaskFailure> {
    let task_id = env
        .get("RUNOPS_TASK_ID")
        .and_then(|v| v.parse::<i64>().ok());
    let tmp = env.get("TMPDIR").map(PathBuf::from);
    tokio::task::spawn_blocking(move || iso.prepare(task_id, tmp.as_deref()))
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(|e| {
            TaskFailure::agent_error(format!(
                "cannot confine the task (Landlock rules or its cgroup): {e}"
            ))
        })
}

async fn record_group(record: &Path, pgid: Pid) {
    let line = format!("{}\n", pgid.as_raw());
    let written = async {
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(record)
            .await?;
        f.write_all(line.as_bytes()).await?;
        f.flush().await
    };
    if let Err(e) = written.await {
        tracing::warn!(
            "cannot record a task's process group in {}: {e}",
            record.display()
        );
    }
}

/// Kills (SIGKILL) what is left of process group `pgid` started for task `task_id` by an
/// earlier run of the agent. Only a group that still holds a process of that task
/// (`RUNOPS_TASK_ID=<id>` in its environment) is killed: the id may have been reused.
pub fn kill_leftover_group(pgid: i32, task_id: i64) -> bool {
    let marker = format!("RUNOPS_TASK_ID={task_id}");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    let ours = procs.flatten().any(|entry| {
        let dir = entry.path();
        let in_group = std::fs::read_to_string(dir.join("stat")).is_ok_and(|stat| {
            // Fields after the command name: state, ppid, pgrp, ...
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(2))
                .and_then(|g| g.parse::<i32>().ok())
                == Some(pgid)
        });
        in_group
            && std::fs::read(dir.join("environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
    });
    ours && killpg(Pid::from_raw(pgid), Signal::SIGKILL).is_ok()
}

fn spawn_failure(spec: &ProcessSpec, e: &std::io::Error) -> TaskFailure {
    let program = &spec.program;
    match e.kind() {
        std::io::ErrorKind::NotFound => TaskFailure::agent_error(format!(
            "`{program}` was not found on the agent's PATH; install it on the agent's machine (or image) to run {}",
            spec.needed_for
        )),
        std::io::ErrorKind::PermissionDenied => TaskFailure::agent_error(format!(
            "`{program}` on the agent's PATH cannot be executed: permission denied"
        )),
        _ => TaskFailure::agent_error(format!("cannot start `{program}`: {e}")),
    }
}

/// The shell convention: the exit code, or 128 + the signal that killed the process.
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => -1,
    }
}

async fn pump(pipe: Option<impl AsyncRead + Unpin>, output: &TaskLog, source: Source) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = vec![0u8; PIPE_READ_BYTES];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => output.write_from(source, &buf[..n]).await,
        }
    }
}

/// Makes sure no process of the group is left: SIGTERM, up to `grace` for everything
/// to exit, then SIGKILL. Returns the main process's status once it is reaped.
async fn kill_group(child: &mut TaskProcess, pgid: Pid, grace: Duration) -> Option<ExitStatus> {
    if !group_gone(child, pgid) {
        let _ = killpg(pgid, Signal::SIGTERM);
        if !wait_group_gone(child, pgid, Instant::now() + grace).await {
            let _ = killpg(pgid, Signal::SIGKILL);
            if !wait_group_gone(child, pgid, Instant::now() + GROUP_EXIT_WAIT).await {
                tracing::warn!(pgid = pgid.as_raw(), "processes of a task survived SIGKILL");
            }
        }
    }
    child.wait().await.ok()
}

async fn wait_group_gone(child: &mut TaskProcess, pgid: Pid, deadline: Instant) -> bool {
    loop {
        if group_gone(child, pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(GROUP_CHECK_INTERVAL).await;
    }
}

/// True when the main process is reaped and no other process is in the group.
fn group_gone(child: &mut TaskProcess, pgid: Pid) -> bool {
    if !matches!(child.try_wait(), Ok(Some(_))) {
        return false;
    }
    // Orphans of the group that were re-parented to us (the agent is PID 1 in a
    // container) stay zombies until we reap them; the main process is already reaped,
    // so this only collects those.
    loop {
        match waitpid(Pid::from_raw(-pgid.as_raw()), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    matches!(killpg(pgid, None), Err(Errno::ESRCH))
}

#[cfg(test)]
mod tests {
    #[test]
    fn programs_are_found_on_the_childs_path_like_execvp() {
        assert_eq!(
            super::resolve_program("sh", Some("/nonexistent:/bin:/usr/bin")),
            std::path::PathBuf::from("/bin/sh")
        );
        assert_eq!(
            super::resolve_program("no-such-tool-xyz", Some("/bin")),
            std::path::PathBuf::from("no-such-tool-xyz")
        );
        assert_eq!(
            super::resolve_program("./run.sh", Some("/bin")),
            std::path::PathBuf::from("./run.sh")
        );
    }
}
