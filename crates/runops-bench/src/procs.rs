//! The processes a benchmark drives, started from the real `runops` binary exactly as a
//! user would start them (`runops server`, `runops agent` with `TOKEN`), each stack in a
//! private temporary directory on a free loopback port, and killed when dropped.
//! Also the memory probe (`/proc/PID/status`).

use anyhow::{Context, bail};
use runops_client::Client;
use runops_proto::api::TargetCreate;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The admin token every bench server is started with (loopback only, throwaway data).
pub const ADMIN_TOKEN: &str = "rou_bench-admin-token-0123456789abcdefghijklmnopqrstu";

/// How long a server or agent may take to become ready before the bench gives up;
/// generous because the machine is shared.
const READY_WAIT: Duration = Duration::from_secs(60);
/// Pause between two readiness checks.
const READY_POLL: Duration = Duration::from_millis(20);

/// The bash target every stack has (untagged, like `runops up`'s `local`).
pub const LOCAL_TARGET: &str = "local";
/// The postgres target every stack has; its secret is [`PG_SECRET_VAR`] in the agent.
pub const PG_TARGET: &str = "pg";
/// The agent variable holding the postgres target's secret (env-var provider).
pub const PG_SECRET_VAR: &str = "RUNOPS_BENCH_PG";
/// The bench's database: the local server of the test machine, trust authentication.
pub const PG_SECRET: &str = r#"{"PG_HOST":"127.0.0.1","PG_PORT":"5432","PG_USER":"postgres","PG_PASS":"bench","PG_DB":"test","PGSSLMODE":"disable"}"#;

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A command of the `runops` binary with a clean environment: PATH, HOME, LANG only.
pub fn runops_command(bin: &Path, home: &Path) -> Command {
    let mut c = Command::new(bin);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

fn log_file(path: &Path) -> anyhow::Result<(Stdio, Stdio)> {
    let f = std::fs::File::create(path)
        .with_context(|| format!("cannot create the log file {}", path.display()))?;
    Ok((Stdio::from(f.try_clone()?), Stdio::from(f)))
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running `runops server`.
pub struct ServerProc {
    pub url: String,
    pub pid: u32,
    log: PathBuf,
    child: Child,
}

impl ServerProc {
    /// Starts `runops server` on a free port with its data in `dir`; `extra_args` are
    /// passed on (`--log-cap-bytes ...`). Returns once the API answers.
    pub async fn start(bin: &Path, dir: &Path, extra_args: &[String]) -> anyhow::Result<Self> {
        Self::start_env(bin, dir, extra_args, &[]).await
    }

    /// [`ServerProc::start`] with extra environment (a database URL, a secret key).
    pub async fn start_env(
        bin: &Path,
        dir: &Path,
        extra_args: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let home = dir.join("home");
        std::fs::create_dir_all(&home)?;
        let log = dir.join("server.log");
        let (out, err) = log_file(&log)?;
        let child = runops_command(bin, &home)
            .arg("server")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.join("server-data"))
            .args(extra_args)
            .envs(env.iter().copied())
            .env("RUNOPS_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start `{} server`", bin.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let mut server = ServerProc {
            url: format!("http://127.0.0.1:{port}"),
            pid,
            log,
            child,
        };
        let admin = server.admin()?;
        let start = Instant::now();
        while admin.me().await.is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "the server exited ({status}) before answering; its log ends with:\n{}",
                    last_lines(&server.log, 20)
                );
            }
            if start.elapsed() > READY_WAIT {
                bail!("the server did not answer within {READY_WAIT:?}");
            }
            tokio::time::sleep(READY_POLL).await;
        }
        Ok(server)
    }

    /// A client with the admin token.
    pub fn admin(&self) -> anyhow::Result<Client> {
        Ok(Client::new(&self.url, ADMIN_TOKEN)?)
    }
}

/// A running `runops agent`.
pub struct AgentProc {
    pub pid: u32,
    log: PathBuf,
    child: Child,
}

impl AgentProc {
    /// Starts `runops agent` with `TOKEN`, optional `TAGS` and `env`; returns once the
    /// server lists its session.
    pub async fn start(
        bin: &Path,
        dir: &Path,
        admin: &Client,
        token: &str,
        tags: Option<&str>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let name = tags.unwrap_or("untagged");
        let home = dir.join("home");
        std::fs::create_dir_all(&home)?;
        let log = dir.join(format!("agent-{name}.log"));
        let (out, err) = log_file(&log)?;
        let mut cmd = runops_command(bin, &home);
        cmd.arg("agent")
            .env("TOKEN", token)
            .env("RUNOPS_AGENT_DATA_DIR", dir.join(format!("agent-{name}")))
            .stdout(out)
            .stderr(err);
        if let Some(t) = tags {
            cmd.env("TAGS", t);
        }
        // Who tasks run as changes how they are spawned (a user switch needs a full
        // fork): let the caller choose with RUN_AS_USER, as for a real agent.
        if let Ok(user) = std::env::var("RUN_AS_USER") {
            cmd.env("RUN_AS_USER", user);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{} agent`", bin.display()))?;
        let pid = child.id().context("the agent exited at once")?;
        let mut agent = AgentProc { pid, log, child };
        let start = Instant::now();
        loop {
            let agents = admin.list_agents().await?;
            if agents.iter().any(|a| a.tags.as_deref() == tags) {
                return Ok(agent);
            }
            if let Some(status) = agent.child.try_wait()? {
                bail!(
                    "the agent exited ({status}) before connecting; its log ends with:\n{}",
                    last_lines(&agent.log, 20)
                );
            }
            if start.elapsed() > READY_WAIT {
                bail!("the agent did not connect within {READY_WAIT:?}");
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }
}

/// A server with one untagged agent and the bench's targets, in its own temp dir.
pub struct Stack {
    pub bin: PathBuf,
    pub server: ServerProc,
    pub agent: Option<AgentProc>,
    pub admin: Client,
    /// HOME for CLI processes (empty: the CLI reads RUNOPS_URL/RUNOPS_TOKEN).
    pub home: PathBuf,
    /// Held for its `Drop` (deletes the directory); last, so after the processes die.
    _dir: tempfile::TempDir,
}

impl Stack {
    /// Starts a server (with `server_args`) and, when `with_agent`, one untagged agent
    /// (default settings, CONCURRENCY 30). The `local` bash target and the `pg` postgres
    /// target are created.
    pub async fn start(
        bin: &Path,
        server_args: &[String],
        with_agent: bool,
    ) -> anyhow::Result<Self> {
        Self::start_env(bin, server_args, with_agent, &[]).await
    }

    /// [`Stack::start`] with extra agent environment (`RUN_AS_USER`, `CONCURRENCY`),
    /// which wins over the bench's own `RUN_AS_USER`.
    pub async fn start_env(
        bin: &Path,
        server_args: &[String],
        with_agent: bool,
        agent_env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut env = vec![(PG_SECRET_VAR, PG_SECRET)];
        env.extend_from_slice(agent_env);
        let dir = tempfile::Builder::new()
            .prefix("runops-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let server = ServerProc::start(bin, dir.path(), server_args).await?;
        let admin = server.admin()?;
        for (name, kind, secret) in [
            (LOCAL_TARGET, "bash", None),
            (PG_TARGET, "postgres", Some(PG_SECRET_VAR)),
        ] {
            admin
                .create_target(&TargetCreate {
                    name: name.into(),
                    kind: kind.into(),
                    secret_provider: secret.map(|_| "env-var".into()),
                    secret_path: secret.map(str::to_string),
                    ..Default::default()
                })
                .await
                .with_context(|| format!("cannot create the `{name}` target"))?;
        }
        let agent_token = admin
            .create_agent_token(Some("bench".into()), None)
            .await?
            .token;
        let agent = if with_agent {
            Some(AgentProc::start(bin, dir.path(), &admin, &agent_token, None, &env).await?)
        } else {
            None
        };
        Ok(Stack {
            bin: bin.to_path_buf(),
            home: dir.path().join("home"),
            server,
            agent,
            admin,
            _dir: dir,
        })
    }

    pub fn agent_pid(&self) -> anyhow::Result<u32> {
        Ok(self.agent.as_ref().context("this stack has no agent")?.pid)
    }

    /// `runops <args>` as the admin user against this stack's server.
    pub fn cli(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(&self.bin);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("LANG", "C.UTF-8")
            .env("RUNOPS_URL", &self.server.url)
            .env("RUNOPS_TOKEN", ADMIN_TOKEN)
            .args(args)
            .stdin(Stdio::null());
        c
    }
}

/// Resident memory of a process, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Mem {
    /// Resident set size now (VmRSS), KiB.
    pub rss_kib: u64,
    /// Peak resident set size since the process started (VmHWM), KiB.
    pub hwm_kib: u64,
}

impl Mem {
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
    pub fn hwm_mib(&self) -> f64 {
        self.hwm_kib as f64 / 1024.0
    }
}

/// CPU time a process used so far, ms: its own (user + system) and that of its reaped
/// children (the agent's tasks), from `/proc/PID/stat`.
pub fn cpu_ms(pid: u32) -> anyhow::Result<(f64, f64)> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // Fields after the command name (which may hold spaces): state is field 3.
    let rest = text.rsplit_once(')').map(|x| x.1).unwrap_or_default();
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0) * 1e3 / ticks;
    // utime, stime, cutime, cstime are fields 14-17, i.e. 11-14 after the name.
    Ok((at(11) + at(12), at(13) + at(14)))
}

/// Runs `cmd` to completion (output discarded) and reaps it with `wait4`, so its CPU
/// time is exactly its own (and its reaped children's), whatever else the bench reaps
/// meanwhile. Returns the wall time and the CPU time (user + system), ms.
pub fn run_with_cpu(cmd: &mut std::process::Command) -> anyhow::Result<(Duration, f64)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("cannot run {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of that plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our unreaped child; `status` and `ru` are valid for writes.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let took = start.elapsed();
    if r != pid {
        bail!("wait4 on {cmd:?}: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{cmd:?} failed: wait status {status}");
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    Ok((took, tv(ru.ru_utime) + tv(ru.ru_stime)))
}

/// CPU time (own + reaped children) of a process, ms, summed.
pub fn cpu_total_ms(pid: u32) -> anyhow::Result<f64> {
    let (own, children) = cpu_ms(pid)?;
    Ok(own + children)
}

pub fn mem_of(pid: u32) -> anyhow::Result<Mem> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    Ok(parse_status(&text))
}

fn parse_status(text: &str) -> Mem {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Mem {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_kib() {
        let m = parse_status("Name:\trunops\nVmHWM:\t   12345 kB\nVmRSS:\t    6789 kB\n");
        assert_eq!((m.rss_kib, m.hwm_kib), (6789, 12345));
    }

    #[test]
    fn own_cpu_time_is_readable() {
        let (own, _) = cpu_ms(std::process::id()).unwrap();
        assert!(own >= 0.0);
    }

    #[test]
    fn a_child_is_timed_and_its_failure_reported() {
        let (_, cpu) = run_with_cpu(std::process::Command::new("true").arg("x")).unwrap();
        assert!(cpu >= 0.0);
        assert!(run_with_cpu(std::process::Command::new("false").arg("x")).is_err());
    }

    #[test]
    fn own_process_memory_is_readable() {
        let m = mem_of(std::process::id()).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
    }
}
