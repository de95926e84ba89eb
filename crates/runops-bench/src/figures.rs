//! Issue 20's goals, one figure at a time: each [`Figure`] starts its own stack(s), so
//! it can run alone, twice in a row, or alternately on two binaries (`--compare`), and
//! puts its value next to a baseline measured in the same run.
//!
//! The `goals` measurement runs them all once and prints the "Goals (issue 20)" table.
//! Unless a figure says otherwise, the agent runs with its default settings, i.e. as
//! the bench's user: as root that means tasks run as the `runops` user when it exists
//! (the least-privilege path), exactly as a user's agent would.

use crate::dispatch;
use crate::drive::{ms, raw_spawn_rate, run_tasks};
use crate::memory::{self, NO_PII_TARGET};
use crate::overhead;
use crate::procs::{LOCAL_TARGET, Stack, cpu_total_ms, mem_of, run_with_cpu};
use crate::report::{GOALS_ID, Goal, Row, Section};
use crate::stats::Summary;
use anyhow::{Context, bail};
use clap::ValueEnum;
use futures_util::StreamExt;
use runops_proto::TaskStatus;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The figures of issue 20's goals table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Figure {
    /// `runops tasks create -t local -s true` minus `bash -c true`, medians
    Cli,
    /// dispatch latency (create → script running), p50 and p99, one agent
    Dispatch,
    /// CPU per trivial task (`tasks create` CLI), summed over CLI, server, agent and task
    Cpu,
    /// throughput at concurrency 30, own user and another user, share of the raw spawn rate
    Throughput,
    /// log streaming of a 1 GiB task, every info type on and secrets only
    Logs,
    /// agent idle RSS, fresh and after 300 tasks
    AgentMemory,
    /// server RSS while 1,000 live logs are followed
    FollowMemory,
}

pub const ALL: [Figure; 7] = [
    Figure::Cli,
    Figure::Dispatch,
    Figure::Cpu,
    Figure::Throughput,
    Figure::Logs,
    Figure::AgentMemory,
    Figure::FollowMemory,
];

impl Figure {
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// Sample sizes of the figures.
#[derive(Debug, Clone)]
pub struct FigSizes {
    /// CLI runs (each side) for `cli`.
    pub cli: usize,
    /// CLI runs for `cpu`.
    pub cpu: usize,
    /// Tasks for `dispatch`.
    pub dispatch: usize,
    /// Tasks per user for `throughput`.
    pub throughput: usize,
    /// Bytes of the big task of `logs`.
    pub log_bytes: u64,
    /// Tasks run before the second agent-memory reading.
    pub warm_tasks: usize,
    /// Live logs followed for `follow-memory`.
    pub follows: usize,
}

/// The concurrency of the throughput goals (the agent's default CONCURRENCY).
const CONCURRENCY: usize = 30;
/// Tasks run and discarded before a throughput or CPU measurement.
const WARMUP: usize = 30;
/// Time for start-up work to settle before reading idle memory.
const IDLE_SETTLE: Duration = Duration::from_secs(3);
/// The live tasks of `follow-memory` print a line this often (seconds), without forking:
/// `read -t` on a pipe nobody writes to is bash's fork-free sleep.
const TICK_SECS: u64 = 5;
/// How long the live tasks may take to all be running and followed.
const FOLLOW_ATTACH_WAIT: Duration = Duration::from_secs(600);
/// Server memory samples once every follow is attached and streaming.
const FOLLOW_SAMPLES: usize = 10;
/// Creations / kills in flight at once in `follow-memory`.
const FOLLOW_CALLERS: usize = 16;

/// Runs one figure; a section holding its rows (with issue 20's goals), notes and raw
/// numbers.
pub async fn measure(f: Figure, bin: &Path, z: &FigSizes) -> anyhow::Result<Section> {
    let mut sec = Section::new(&f.name(), &f.name());
    match f {
        Figure::Cli => cli(&mut sec, bin, z.cli).await?,
        Figure::Dispatch => dispatch_fig(&mut sec, bin, z.dispatch).await?,
        Figure::Cpu => cpu(&mut sec, bin, z.cpu).await?,
        Figure::Throughput => throughput(&mut sec, bin, z.throughput).await?,
        Figure::Logs => logs(&mut sec, bin, z.log_bytes).await?,
        Figure::AgentMemory => agent_memory(&mut sec, bin, z.warm_tasks).await?,
        Figure::FollowMemory => follow_memory(&mut sec, bin, z.follows).await?,
    }
    Ok(sec)
}

/// The `goals` measurement: every figure once, in one table.
pub async fn goals(bin: &Path, z: &FigSizes, which: &[Figure]) -> Section {
    let mut out = Section::new(GOALS_ID, "Goals (issue 20)");
    for &f in which {
        eprintln!("runops-bench: goals: {}…", f.name());
        let t0 = Instant::now();
        match measure(f, bin, z).await {
            Ok(s) => {
                out.rows.extend(s.rows);
                for n in s.notes {
                    out.note(format!("`{}`: {n}", f.name()));
                }
                out.detail(&f.name(), s.details);
            }
            Err(e) => out.note(format!("failed: `{}`: {e:#}", f.name())),
        }
        out.detail(&format!("{}_seconds", f.name()), t0.elapsed().as_secs_f64());
    }
    out.note(
        "Each figure runs on a fresh stack (server + agent from the same binary, default settings unless the figure says \
         otherwise; as root the agent runs tasks as `runops` when that user exists). The baseline column is measured in the \
         same run on the same machine; the ratio is figure / baseline. Rerun one figure with \
         `target/release/runops-bench --figures FIGURE goals`, or compare two binaries with `scripts/bench.sh --compare OLD`.",
    );
    out
}

/// `runops tasks create -t local -s true` against `bash -c true`, alternating.
async fn cli(sec: &mut Section, bin: &Path, n: usize) -> anyhow::Result<()> {
    let stack = Arc::new(Stack::start(bin, &[], true).await?);
    let (cli, bash) = overhead::cli_against_bash(&stack, n).await?;
    sec.row(
        Row::new(
            "`runops tasks create -t local -s true` − `bash -c true`, medians",
            cli.p50 - bash.p50,
            "ms",
        )
        .vs("`bash -c true`, median", bash.p50)
        .no_ratio()
        .goal(Goal::AtMost(6.0)),
    );
    sec.row(
        Row::new(
            "`runops tasks create -t local -s true`, median",
            cli.p50,
            "ms",
        )
        .vs("`bash -c true`, median", bash.p50),
    );
    sec.detail("cli_ms", cli);
    sec.detail("bash_ms", bash);
    sec.note(format!(
        "{n} runs of each after 5 warm-up runs, alternating; the CLI reads RUNOPS_URL/RUNOPS_TOKEN, creates the task, \
         follows its log and exits with its code."
    ));
    Ok(())
}

/// Create → script running, one task at a time, one agent.
async fn dispatch_fig(sec: &mut Section, bin: &Path, n: usize) -> anyhow::Result<()> {
    let stack = Stack::start(bin, &[], true).await?;
    let base = tokio::task::spawn_blocking(move || dispatch::bash_baseline(n)).await??;
    let base = Summary::of(&base).context("no baseline samples")?;
    let s = dispatch::measure(std::slice::from_ref(&stack.admin), n).await?;
    let c = Summary::of(&s.create_to_running).context("no samples")?;
    sec.row(
        Row::new("dispatch (create → running), p50", c.p50, "ms")
            .vs("bash spawned directly, p50", base.p50)
            .goal(Goal::AtMost(2.0)),
    );
    sec.row(
        Row::new("dispatch (create → running), p99", c.p99, "ms")
            .vs("bash spawned directly, p99", base.p99)
            .goal(Goal::AtMost(8.0)),
    );
    sec.detail("create_to_running_ms", c);
    sec.detail("baseline_bash_ms", base);
    sec.note(format!(
        "{n} tasks one at a time after {} warm-up tasks, script `{}`: bash's `$EPOCHREALTIME` at its first command − the \
         bench's clock just before `POST /v1/tasks` (as measurement 1); baseline: the bench spawning the same bash itself.",
        dispatch::WARMUP,
        dispatch::SCRIPT
    ));
    Ok(())
}

/// CPU per `runops tasks create -t local -s true`, over every process involved.
async fn cpu(sec: &mut Section, bin: &Path, n: usize) -> anyhow::Result<()> {
    let stack = Arc::new(Stack::start(bin, &[], true).await?);
    let (server_pid, agent_pid) = (stack.server.pid, stack.agent_pid()?);
    let s = stack.clone();
    let (cli_cpu, server, agent, bash_cpu) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let task = || s.cli(&["tasks", "create", "-t", LOCAL_TARGET, "-s", "true"]);
            for _ in 0..WARMUP.min(n) {
                run_with_cpu(&mut task())?;
            }
            let (s0, a0) = (cpu_total_ms(server_pid)?, cpu_total_ms(agent_pid)?);
            let mut cli = 0.0;
            for _ in 0..n {
                cli += run_with_cpu(&mut task())?.1;
            }
            let (s1, a1) = (cpu_total_ms(server_pid)?, cpu_total_ms(agent_pid)?);
            let mut bash = 0.0;
            for _ in 0..n {
                bash += run_with_cpu(Command::new("bash").args(["-c", "true"]))?.1;
            }
            let per = |x: f64| x / n as f64;
            Ok((per(cli), per(s1 - s0), per(a1 - a0), per(bash)))
        })
        .await??;
    let total = cli_cpu + server + agent;
    sec.row(
        Row::new(
            "CPU per trivial task (`tasks create -t local -s true`), all processes",
            total,
            "ms",
        )
        .vs("`bash -c true`", bash_cpu)
        .goal(Goal::AtMost(2.5)),
    );
    sec.row(Row::new("… of which the CLI process", cli_cpu, "ms"));
    sec.row(Row::new("… of which the server", server, "ms"));
    sec.row(Row::new(
        "… of which the agent and the task's processes",
        agent,
        "ms",
    ));
    sec.detail("tasks", n);
    sec.detail(
        "per_task_ms",
        serde_json::json!({"cli": cli_cpu, "server": server, "agent_and_tasks": agent, "total": total, "bash_c_true": bash_cpu}),
    );
    sec.note(format!(
        "{n} `runops tasks create -t local -s true` one after the other (after {} warm-up runs). Included: each CLI process \
         (user + system time from `wait4`'s rusage, so exact), the server and the agent (user + system from /proc/PID/stat, \
         100 Hz ticks, over the whole loop, so ±{:.2} ms per task), and the tasks' processes (bash, reaped by the agent, \
         in its cutime/cstime). Not included: the kernel's work outside these processes (loopback softirqs charged \
         elsewhere). Baseline: the CPU of `bash -c true` itself, the floor any way of running the task pays.",
        WARMUP.min(n),
        20.0 / n as f64
    ));
    Ok(())
}

/// Who "another user" is: `RUN_AS_USER` from the bench's environment when it names a
/// user other than root, else `runops` (the agent's default) or, failing that, `nobody`;
/// an error saying why when the agent cannot switch users.
fn other_user() -> Result<String, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "the bench does not run as root, so its agents cannot run tasks as another user".into(),
        );
    }
    let exists = |name: &str| match std::ffi::CString::new(name) {
        // SAFETY: `c` is a valid C string; the result is only checked for NULL.
        Ok(c) => !unsafe { libc::getpwnam(c.as_ptr()) }.is_null(),
        Err(_) => false,
    };
    let wanted = std::env::var("RUN_AS_USER")
        .ok()
        .filter(|u| !u.is_empty() && u != "root");
    match wanted {
        Some(name) if exists(&name) => Ok(name),
        Some(name) => Err(format!(
            "RUN_AS_USER names `{name}`, which does not exist here"
        )),
        None => ["runops", "nobody"]
            .into_iter()
            .find(|n| exists(n))
            .map(str::to_string)
            .ok_or_else(|| "neither `runops` nor `nobody` exists on this machine".into()),
    }
}

/// Tasks per second at concurrency 30 through a fresh stack whose agent has `env`.
async fn rate(bin: &Path, n: usize, env: &[(&str, &str)]) -> anyhow::Result<f64> {
    let stack = Stack::start_env(bin, &[], true, env).await?;
    run_tasks(&stack.admin, LOCAL_TARGET, "true", WARMUP, CONCURRENCY).await?;
    let took = run_tasks(&stack.admin, LOCAL_TARGET, "true", n, CONCURRENCY).await?;
    Ok(n as f64 / took.as_secs_f64())
}

async fn throughput(sec: &mut Section, bin: &Path, n: usize) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let own_env: &[(&str, &str)] = if root {
        &[("RUN_AS_USER", "root")]
    } else {
        &[]
    };
    let own = rate(bin, n, own_env).await?;
    let raw = tokio::task::spawn_blocking(move || raw_spawn_rate(n, CONCURRENCY)).await??;
    let raw_label = format!("`bash -c true` spawned by {CONCURRENCY} threads");
    sec.row(
        Row::new(
            format!("throughput, concurrency {CONCURRENCY}, own user"),
            own,
            "tasks/s",
        )
        .vs(raw_label.clone(), raw)
        .goal(Goal::AtLeast(700.0)),
    );
    sec.row(
        Row::new(
            "own user: share of the raw spawn rate",
            own / raw * 100.0,
            "%",
        )
        .goal(Goal::AtLeast(45.0)),
    );
    match other_user() {
        Ok(user) => {
            let other = rate(bin, n, &[("RUN_AS_USER", user.as_str())]).await?;
            sec.row(
                Row::new(
                    format!(
                        "throughput, concurrency {CONCURRENCY}, tasks as `{user}` (`RUN_AS_USER`)"
                    ),
                    other,
                    "tasks/s",
                )
                .vs("own user, same run", own),
            );
            sec.row(
                Row::new("another user / own user", other / own * 100.0, "%")
                    .goal(Goal::AtLeast(90.0)),
            );
            sec.detail("other_user", user);
            sec.detail("other_user_tasks_per_s", other);
        }
        Err(why) => {
            sec.row(Row::pending("another user / own user", "%").goal(Goal::AtLeast(90.0)));
            sec.note(format!("another user pending: {why}"));
        }
    }
    sec.detail("own_user_tasks_per_s", own);
    sec.detail("raw_spawns_per_s", raw);
    sec.note(format!(
        "{n} tasks `true` per case after {WARMUP} warm-up tasks, {CONCURRENCY} clients each creating a task and following it \
         to its stored end; a fresh stack per case. Own user: {}; another user: the agent as root with `RUN_AS_USER` set (the bench's \
         `RUN_AS_USER`, else `runops`, else `nobody`; uid/gid/groups switched between fork and exec). The raw spawn rate is measured between the two runs.",
        if root {
            "the agent as root with `RUN_AS_USER=root` (tasks as root, spawned with posix_spawn)"
        } else {
            "the agent as the bench's user"
        }
    ));
    Ok(())
}

async fn logs(sec: &mut Section, bin: &Path, bytes: u64) -> anyhow::Result<()> {
    let stack = memory::log_stack(bin, bytes).await?;
    let base = tokio::task::spawn_blocking(move || memory::pipeline_to_null(bytes)).await??;
    let all = memory::big_task(&stack, LOCAL_TARGET, bytes).await?;
    let none = memory::big_task(&stack, NO_PII_TARGET, bytes).await?;
    let mb = bytes as f64 / 1e6;
    let base_rate = mb / base.as_secs_f64();
    sec.row(
        Row::new(
            format!("log streaming, {} MiB, every info type on", bytes >> 20),
            mb / all.took.as_secs_f64(),
            "MB/s",
        )
        .vs("same pipeline > /dev/null", base_rate)
        .goal(Goal::AtLeast(250.0)),
    );
    sec.row(
        Row::new(
            format!("log streaming, {} MiB, secrets only", bytes >> 20),
            mb / none.took.as_secs_f64(),
            "MB/s",
        )
        .vs("same pipeline > /dev/null", base_rate)
        .goal(Goal::AtLeast(600.0)),
    );
    sec.detail("bytes", bytes);
    sec.detail("all_ms", ms(all.took));
    sec.detail("secrets_only_ms", ms(none.took));
    sec.detail("baseline_ms", ms(base));
    sec.note(format!(
        "One task printing {bytes} bytes of plain lines (`yes '…' | head -c {bytes}`), MB = 10^6 bytes, timed from \
         `POST /v1/tasks` until the server reports the task ended (whole log stored). Every info type: the target's \
         default (`redact: all`); secrets only: a target with `redact: none`."
    ));
    Ok(())
}

async fn agent_memory(sec: &mut Section, bin: &Path, warm_tasks: usize) -> anyhow::Result<()> {
    let stack = Stack::start(bin, &[], true).await?;
    let pid = stack.agent_pid()?;
    let floor = {
        let bin = bin.to_path_buf();
        tokio::task::spawn_blocking(move || memory::child_max_rss_kib(&bin, &["--version"]))
            .await??
    } as f64
        / 1024.0;
    tokio::time::sleep(IDLE_SETTLE).await;
    let fresh = mem_of(pid)?;
    run_tasks(&stack.admin, LOCAL_TARGET, "true", warm_tasks, CONCURRENCY).await?;
    tokio::time::sleep(IDLE_SETTLE).await;
    let worked = mem_of(pid)?;
    let floor_label = "`runops --version` peak";
    sec.row(
        Row::new("agent idle RSS, fresh", fresh.rss_mib(), "MiB")
            .vs(floor_label, floor)
            .goal(Goal::AtMost(12.0)),
    );
    sec.row(
        Row::new(
            format!("agent idle RSS after {warm_tasks} tasks"),
            worked.rss_mib(),
            "MiB",
        )
        .vs(floor_label, floor)
        .goal(Goal::AtMost(14.0)),
    );
    sec.detail("fresh", fresh);
    sec.detail("after_tasks", worked);
    sec.note(format!(
        "VmRSS of the agent {} s after it connected, and {} s after {warm_tasks} `true` tasks at concurrency {CONCURRENCY}.",
        IDLE_SETTLE.as_secs(),
        IDLE_SETTLE.as_secs()
    ));
    Ok(())
}

/// The script of a live task: prints a line now and then, forever, without forking.
pub fn live_script() -> String {
    format!(
        "exec 3<> <(:); n=0; while :; do n=$((n+1)); echo \"live line $n at $SECONDS s\"; read -t {TICK_SECS} -u 3 || :; done"
    )
}

/// Runs `f(i)` for i in 0..n with `callers` at a time.
async fn in_parallel<F, Fut, T>(n: usize, callers: usize, f: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send,
    T: Send + 'static,
{
    let results = futures_util::stream::iter(0..n)
        .map(|i| {
            let f = f.clone();
            async move { f(i).await }
        })
        .buffered(callers.max(1))
        .collect::<Vec<_>>()
        .await;
    results.into_iter().collect()
}

async fn follow_memory(sec: &mut Section, bin: &Path, n: usize) -> anyhow::Result<()> {
    let concurrency = (n + 10).to_string();
    let stack = Stack::start_env(bin, &[], true, &[("CONCURRENCY", concurrency.as_str())]).await?;
    let server_pid = stack.server.pid;
    tokio::time::sleep(IDLE_SETTLE).await;
    let idle = mem_of(server_pid)?;

    // n live tasks.
    let t0 = Instant::now();
    let admin = stack.admin.clone();
    let script = live_script();
    let ids = in_parallel(n, FOLLOW_CALLERS, move |_| {
        let (admin, script) = (admin.clone(), script.clone());
        async move {
            Ok(admin
                .create_task(&crate::drive::new_task(LOCAL_TARGET, &script))
                .await?
                .id)
        }
    })
    .await?;

    // All running (and printing), nobody following yet: what the live tasks alone cost.
    let admin = stack.admin.clone();
    let ids2 = ids.clone();
    in_parallel(n, FOLLOW_CALLERS, move |i| {
        let (admin, id) = (admin.clone(), ids2[i]);
        async move {
            loop {
                let t = admin.get_task(id).await?;
                if t.status == TaskStatus::Running {
                    return Ok(());
                }
                if t.status.is_final() {
                    bail!("live task {id} ended {}: {:?}", t.status, t.failure_message);
                }
                if t0.elapsed() > FOLLOW_ATTACH_WAIT {
                    bail!("live task {id} was not running within {FOLLOW_ATTACH_WAIT:?}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    })
    .await?;
    let running_s = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(TICK_SECS)).await;
    let tasks_only = mem_of(server_pid)?;

    // One follower each, counting the chunks it receives.
    let attached = Arc::new(AtomicUsize::new(0));
    let chunks: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let followers: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            let (client, attached, chunks) =
                (stack.admin.clone(), attached.clone(), chunks.clone());
            tokio::spawn(async move {
                let stream = client.follow_task_logs(id, 0).await?;
                let mut stream = std::pin::pin!(stream);
                let mut bytes = 0u64;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    if chunk.is_empty() {
                        continue;
                    }
                    bytes += chunk.len() as u64;
                    if chunks[i].fetch_add(1, Ordering::Relaxed) == 0 {
                        attached.fetch_add(1, Ordering::Relaxed);
                    }
                }
                anyhow::Ok(bytes)
            })
        })
        .collect();
    while attached.load(Ordering::Relaxed) < n {
        if t0.elapsed() > FOLLOW_ATTACH_WAIT {
            bail!(
                "only {} of {n} followed logs received a line within {FOLLOW_ATTACH_WAIT:?}",
                attached.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let attach_s = t0.elapsed().as_secs_f64();
    // Streaming: every follower receives another line after all are attached.
    let seen: Vec<u64> = chunks.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let t1 = Instant::now();
    while chunks
        .iter()
        .zip(&seen)
        .any(|(c, s)| c.load(Ordering::Relaxed) <= *s)
    {
        if t1.elapsed() > Duration::from_secs(20 * TICK_SECS) {
            bail!("some followed logs stopped streaming");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut rss = Vec::with_capacity(FOLLOW_SAMPLES);
    for _ in 0..FOLLOW_SAMPLES {
        rss.push(mem_of(server_pid)?.rss_kib as f64 / 1024.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let following = mem_of(server_pid)?;
    let agent = mem_of(stack.agent_pid()?)?;
    let rss = Summary::of(&rss).context("no samples")?;

    // End them cleanly: kill every task; each follow then ends on its own.
    let admin = stack.admin.clone();
    let ids2 = ids.clone();
    in_parallel(n, FOLLOW_CALLERS, move |i| {
        let (admin, id) = (admin.clone(), ids2[i]);
        async move {
            admin.kill_task(id).await?;
            Ok(())
        }
    })
    .await?;
    let mut streamed = 0u64;
    for f in followers {
        streamed += tokio::time::timeout(Duration::from_secs(120), f)
            .await
            .context("a follow did not end within 2 minutes of its task's kill")?
            .context("a follower panicked")??;
    }

    sec.row(
        Row::new(
            format!("server RSS following {n} live logs"),
            rss.max,
            "MiB",
        )
        .vs("server idle, fresh", idle.rss_mib())
        .goal(Goal::AtMost(64.0)),
    );
    sec.row(
        Row::new(
            format!("… server RSS with the {n} tasks running, before any follow"),
            tasks_only.rss_mib(),
            "MiB",
        )
        .vs("server idle, fresh", idle.rss_mib()),
    );
    sec.detail("server_idle", idle);
    sec.detail("server_rss_mib_while_following", rss);
    sec.detail("server_after_following", following);
    sec.detail("agent_while_following", agent);
    sec.detail("attach_seconds", attach_s);
    sec.detail("running_seconds", running_s);
    sec.detail("server_tasks_running_no_follow", tasks_only);
    sec.detail("bytes_streamed", streamed);
    sec.note(format!(
        "{n} tasks (agent CONCURRENCY {concurrency}) each printing a line every {TICK_SECS} s without forking \
         (`{}`), each followed by its own `GET /v1/tasks/{{id}}/logs?follow=true` stream from the bench (one connection \
         each). All {n} were running and streaming after {attach_s:.1} s; the figure is the largest of {FOLLOW_SAMPLES} \
         VmRSS samples over 2 s once every follower had received a line after the last one attached (median {:.1} MiB; \
         the server's VmHWM then {:.1} MiB; the agent's VmRSS {:.1} MiB). Then every task is killed (`POST \
         /v1/tasks/{{id}}/kill`) and every follow ends on its own.",
        live_script(),
        rss.p50,
        following.hwm_mib(),
        agent.rss_mib()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_names_are_the_command_line_names() {
        assert_eq!(Figure::FollowMemory.name(), "follow-memory");
        assert_eq!(
            Figure::from_str("agent-memory", true),
            Ok(Figure::AgentMemory)
        );
        assert_eq!(ALL.len(), Figure::value_variants().len());
    }

    #[test]
    fn live_script_prints_and_keeps_running() {
        let out = std::process::Command::new("timeout")
            .args(["1", "bash", "-c", &live_script()])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("live line 1 at"));
        assert_eq!(
            out.status.code(),
            Some(124),
            "it keeps running until killed"
        );
    }
}
