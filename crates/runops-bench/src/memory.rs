//! Measurements 4 (memory) and 5 (log throughput), on one stack whose server keeps logs above 1 GiB.
//!
//! Idle resident memory (`VmRSS`) of the agent and the server right after start and
//! again after some work; then one task prints 1 GiB of lines (`yes … | head -c 1G`)
//! while the bench samples both processes' memory. The same task gives the log
//! throughput: bytes / (create → task ended, i.e. the whole log stored on the server
//! and the result acknowledged), with redaction on (the target's default `all`) and,
//! for comparison, `none` (secrets only). Baseline: the same pipeline into /dev/null.

use crate::drive::{ms, new_task, poll_done, run_tasks, time_command};
use crate::procs::{LOCAL_TARGET, Mem, Stack, mem_of};
use crate::report::{Row, Section};
use anyhow::{Context, bail};
use runops_proto::TaskStatus;
use runops_proto::api::TargetCreate;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Time left for start-up work (connections, first allocations) to settle before reading idle memory.
const IDLE_SETTLE: Duration = Duration::from_secs(3);
/// How often memory is sampled while the big task runs.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// How often the bench asks whether the big task ended (bounds the error on its duration).
const DONE_POLL: Duration = Duration::from_millis(20);
/// One line of the big task's output: plain words, nothing a redactor would change.
const LINE: &str =
    "runops log throughput benchmark line, plain words that no detector should change";
/// Never set the server's log cap below its default (256 MiB), even for a small run.
const MIN_LOG_CAP_BYTES: u64 = 256 * 1024 * 1024;
/// The target with `redact: none`, for comparison.
pub const NO_PII_TARGET: &str = "local-secrets-only";

/// Peak resident memory of one run of `cmd`, KiB, as GNU time reports it (`%M`): the
/// floor of a process of that binary. (Reading ru_maxrss of a child spawned by the bench
/// itself would count the bench's own pages, shared until the child's exec.)
pub fn child_max_rss_kib(bin: &Path, args: &[&str]) -> anyhow::Result<u64> {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(bin)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot run /usr/bin/time (install the `time` package)")?;
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("/usr/bin/time printed no peak memory: {err}"))
}

pub struct BigRun {
    pub took: Duration,
    agent_peak: Mem,
    server_peak_rss_kib: u64,
    agent_max_sampled_kib: u64,
}

/// Runs the 1 GiB task on `target` while sampling memory.
pub async fn big_task(stack: &Stack, target: &str, bytes: u64) -> anyhow::Result<BigRun> {
    let (agent_pid, server_pid) = (stack.agent_pid()?, stack.server.pid);
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(async move {
        let (mut agent_max, mut server_max) = (0u64, 0u64);
        loop {
            if let Ok(m) = mem_of(agent_pid) {
                agent_max = agent_max.max(m.rss_kib);
            }
            if let Ok(m) = mem_of(server_pid) {
                server_max = server_max.max(m.rss_kib);
            }
            tokio::select! {
                _ = tokio::time::sleep(SAMPLE_EVERY) => {}
                _ = stop_rx.changed() => break,
            }
        }
        (agent_max, server_max)
    });
    let script = format!("yes '{LINE}' | head -c {bytes}");
    let t0 = Instant::now();
    let task = stack.admin.create_task(&new_task(target, &script)).await?;
    let task = poll_done(&stack.admin, task.id, DONE_POLL).await?;
    let took = t0.elapsed();
    let _ = stop.send(true);
    let (agent_max, server_max) = sampler.await?;
    if task.status != TaskStatus::Success || task.log_size != bytes {
        bail!(
            "the {bytes}-byte task ended {} with a {}-byte log: {}",
            task.status,
            task.log_size,
            task.failure_message.as_deref().unwrap_or("-")
        );
    }
    Ok(BigRun {
        took,
        agent_peak: mem_of(agent_pid)?,
        server_peak_rss_kib: server_max,
        agent_max_sampled_kib: agent_max,
    })
}

/// The server's log cap for a big task of `bytes`.
fn log_cap(bytes: u64) -> u64 {
    (2 * bytes).max(MIN_LOG_CAP_BYTES)
}

/// A stack whose server keeps a log of `bytes`, with the secrets-only target.
pub async fn log_stack(bin: &Path, bytes: u64) -> anyhow::Result<Stack> {
    let cap = log_cap(bytes);
    let stack = Stack::start(bin, &["--log-cap-bytes".into(), cap.to_string()], true).await?;
    stack
        .admin
        .create_target(&TargetCreate {
            name: NO_PII_TARGET.into(),
            kind: "bash".into(),
            redact: Some("none".into()),
            ..Default::default()
        })
        .await?;
    Ok(stack)
}

/// The big task's pipeline into /dev/null, timed (blocking).
pub fn pipeline_to_null(bytes: u64) -> anyhow::Result<Duration> {
    let script = format!("yes '{LINE}' | head -c {bytes} > /dev/null");
    time_command(Command::new("bash").args(["-c", &script]))
}

pub async fn run(bin: &Path, warm_tasks: usize, bytes: u64) -> anyhow::Result<(Section, Section)> {
    let mut mem = Section::new("memory", "4. Memory (resident set size)");
    let mut logs = Section::new("logs", "5. Log throughput (task output → stored log)");
    let cap = log_cap(bytes);
    let stack = log_stack(bin, bytes).await?;
    let (agent_pid, server_pid) = (stack.agent_pid()?, stack.server.pid);

    let floor = {
        let bin = bin.to_path_buf();
        tokio::task::spawn_blocking(move || child_max_rss_kib(&bin, &["--version"])).await??
    } as f64
        / 1024.0;
    tokio::time::sleep(IDLE_SETTLE).await;
    let (agent_idle, server_idle) = (mem_of(agent_pid)?, mem_of(server_pid)?);
    run_tasks(&stack.admin, LOCAL_TARGET, "true", warm_tasks, 30).await?;
    tokio::time::sleep(IDLE_SETTLE).await;
    let (agent_worked, server_worked) = (mem_of(agent_pid)?, mem_of(server_pid)?);

    let base = tokio::task::spawn_blocking(move || pipeline_to_null(bytes)).await??;
    let big = big_task(&stack, LOCAL_TARGET, bytes).await?;
    let plain = big_task(&stack, NO_PII_TARGET, bytes).await?;

    let floor_label = "`runops --version` peak";
    mem.row(Row::new("agent idle, fresh", agent_idle.rss_mib(), "MiB").vs(floor_label, floor));
    mem.row(
        Row::new(
            format!("agent idle after {warm_tasks} tasks"),
            agent_worked.rss_mib(),
            "MiB",
        )
        .vs(floor_label, floor),
    );
    mem.row(Row::new("server idle, fresh", server_idle.rss_mib(), "MiB").vs(floor_label, floor));
    mem.row(
        Row::new(
            format!("server idle after {warm_tasks} tasks"),
            server_worked.rss_mib(),
            "MiB",
        )
        .vs(floor_label, floor),
    );
    mem.row(
        Row::new(
            format!("agent peak while a task prints {} MiB (VmHWM)", bytes >> 20),
            big.agent_peak.hwm_mib(),
            "MiB",
        )
        .vs("agent idle after work", agent_worked.rss_mib()),
    );
    mem.row(
        Row::new(
            format!(
                "server peak RSS while storing {} MiB (sampled)",
                bytes >> 20
            ),
            big.server_peak_rss_kib as f64 / 1024.0,
            "MiB",
        )
        .vs("server idle after work", server_worked.rss_mib()),
    );
    mem.detail("agent_idle", agent_idle);
    mem.detail("agent_after_work", agent_worked);
    mem.detail("server_idle", server_idle);
    mem.detail("server_after_work", server_worked);
    mem.detail("agent_after_big_task", big.agent_peak);
    mem.detail(
        "agent_max_sampled_kib",
        big.agent_max_sampled_kib.max(plain.agent_max_sampled_kib),
    );
    mem.detail(
        "server_max_sampled_kib",
        big.server_peak_rss_kib.max(plain.server_peak_rss_kib),
    );
    mem.detail("runops_version_max_rss_mib", floor);
    mem.note(format!(
        "VmRSS from /proc/PID/status {} s after start, and again {} s after {warm_tasks} `true` tasks at concurrency 30; \
         the peak is the agent's VmHWM (its peak since it started) after the 1 GiB task, which agrees with sampling every {} ms \
         ({:.1} MiB sampled). The baseline is the peak RSS of `runops --version`: what loading the binary costs.",
        IDLE_SETTLE.as_secs(),
        IDLE_SETTLE.as_secs(),
        SAMPLE_EVERY.as_millis(),
        big.agent_max_sampled_kib as f64 / 1024.0
    ));

    let mb = bytes as f64 / 1e6;
    let base_rate = mb / base.as_secs_f64();
    logs.row(
        Row::new(
            "redaction on (`redact: all`)",
            mb / big.took.as_secs_f64(),
            "MB/s",
        )
        .vs("same pipeline > /dev/null", base_rate),
    );
    logs.row(
        Row::new(
            "secrets only (`redact: none`)",
            mb / plain.took.as_secs_f64(),
            "MB/s",
        )
        .vs("same pipeline > /dev/null", base_rate),
    );
    logs.detail("bytes", bytes);
    logs.detail("redact_all_ms", ms(big.took));
    logs.detail("redact_none_ms", ms(plain.took));
    logs.detail("baseline_ms", ms(base));
    logs.note(format!(
        "One task printing {bytes} bytes in lines of {} bytes (`yes '…' | head -c {bytes}`); MB = 10^6 bytes. Time from `POST /v1/tasks` \
         until the server reports the task ended, which happens only after the agent uploaded the whole log and the server stored \
         it (server started with `--log-cap-bytes {}`). The agent writes the redacted output to its spool on disk and uploads it \
         in chunks of up to 1 MiB while the task runs.",
        LINE.len() + 1,
        cap
    ));
    Ok((mem, logs))
}
