//! Measurement 3: Throughput: trivial tasks (`true`) per second through one server and one agent
//! (default CONCURRENCY 30), with 1 and 30 tasks in flight. Each in-flight slot is a
//! client that creates a task and follows it to its end, so a task counts only once its
//! result and log are stored. Baseline: the bench spawning `bash -c true` itself with
//! the same number of threads.

use crate::drive::{raw_spawn_rate, run_tasks};
use crate::procs::{LOCAL_TARGET, Stack, cpu_ms};
use crate::report::{Row, Section};
use std::path::Path;

/// Tasks run and discarded before measuring.
const WARMUP: usize = 30;
/// The two concurrencies of the brief: one at a time, and the agent's default.
const CONCURRENCIES: [usize; 2] = [1, 30];
/// The concurrency capacity is judged at (the agent's default CONCURRENCY).
const GOAL_CONCURRENCY: usize = 30;

pub async fn run(bin: &Path, n: usize) -> anyhow::Result<Section> {
    let mut sec = Section::new(
        "throughput",
        "3. Throughput (trivial tasks through one server and one agent)",
    );
    let stack = Stack::start(bin, &[], true).await?;
    run_tasks(&stack.admin, LOCAL_TARGET, "true", WARMUP, 30).await?;
    let pids = [
        ("agent and its bash children", stack.agent_pid()?),
        ("server", stack.server.pid),
        ("bench client", std::process::id()),
    ];
    for c in CONCURRENCIES {
        let before: Vec<(f64, f64)> = pids
            .iter()
            .map(|(_, p)| cpu_ms(*p))
            .collect::<anyhow::Result<_>>()?;
        let took = run_tasks(&stack.admin, LOCAL_TARGET, "true", n, c).await?;
        let after: Vec<(f64, f64)> = pids
            .iter()
            .map(|(_, p)| cpu_ms(*p))
            .collect::<anyhow::Result<_>>()?;
        let mut total = 0.0;
        for (((what, _), b), a) in pids.iter().zip(&before).zip(&after) {
            let per_task = ((a.0 + a.1) - (b.0 + b.1)) / n as f64;
            total += per_task;
            sec.row(Row::new(
                format!("concurrency {c}: CPU per task, {what}"),
                per_task,
                "ms",
            ));
        }
        let cores = std::thread::available_parallelism().map_or(1, |x| x.get()) as f64;
        sec.row(Row::new(
            format!("concurrency {c}: ceiling from CPU alone ({cores} cores / CPU per task)"),
            cores * 1e3 / total,
            "tasks/s",
        ));
        let rate = n as f64 / took.as_secs_f64();
        let raw = tokio::task::spawn_blocking(move || raw_spawn_rate(n, c)).await??;
        let row = Row::new(format!("concurrency {c}"), rate, "tasks/s")
            .vs(format!("`bash -c true` spawned by {c} thread(s)"), raw);
        let share = Row::new(
            format!("concurrency {c}: share of the raw spawn rate"),
            rate / raw * 100.0,
            "%",
        );
        sec.row(row);
        sec.row(share);
        sec.detail(&format!("concurrency_{c}"), serde_json::json!({"tasks": n, "seconds": took.as_secs_f64(), "tasks_per_s": rate, "raw_spawns_per_s": raw}));
    }
    sec.note(format!(
        "{n} tasks per concurrency after {WARMUP} warm-up tasks; each counts when the client has followed it to its stored end \
         (create, dispatch, spawn, log upload, finish, follow). Raw spawn rate measured right after each runops run. \
         At concurrency 1 every task pays a full round trip (create, long-poll wake-up, start, spawn, finish, follow), so \
         capacity is read at concurrency {GOAL_CONCURRENCY} (issue 20's goals: the `goals` measurement). CPU per task is user + system time from /proc/PID/stat \
         (100 Hz ticks) over the run divided by the tasks; the agent's figure includes the bash processes it reaped."
    ));
    Ok(sec)
}
