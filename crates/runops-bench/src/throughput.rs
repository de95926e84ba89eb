//! 3. Throughput: trivial tasks (`true`) per second through one server and one agent
//! (default CONCURRENCY 30), with 1 and 30 tasks in flight. Each in-flight slot is a
//! client that creates a task and follows it to its end, so a task counts only once its
//! result and log are stored. Baseline: the bench spawning `bash -c true` itself with
//! the same number of threads.

use crate::drive::{raw_spawn_rate, run_tasks};
use crate::procs::{LOCAL_TARGET, Stack};
use crate::report::{Goal, Row, Section};
use std::path::Path;

/// Tasks run and discarded before measuring.
const WARMUP: usize = 30;
/// The two concurrencies of the brief: one at a time, and the agent's default.
const CONCURRENCIES: [usize; 2] = [1, 30];

pub async fn run(bin: &Path, n: usize) -> anyhow::Result<Section> {
    let mut sec = Section::new("throughput", "3. Throughput (trivial tasks through one server and one agent)");
    let stack = Stack::start(bin, &[], true).await?;
    run_tasks(&stack.admin, LOCAL_TARGET, "true", WARMUP, 30).await?;
    for c in CONCURRENCIES {
        let took = run_tasks(&stack.admin, LOCAL_TARGET, "true", n, c).await?;
        let rate = n as f64 / took.as_secs_f64();
        let raw = tokio::task::spawn_blocking(move || raw_spawn_rate(n, c)).await??;
        let mut row = Row::new(format!("concurrency {c}"), rate, "tasks/s").vs(format!("`bash -c true` spawned by {c} thread(s)"), raw);
        if c == 30 {
            row = row.goal(Goal::AtLeast(300.0));
        }
        sec.row(row);
        sec.row(Row::new(format!("concurrency {c}: share of the raw spawn rate"), rate / raw * 100.0, "%").goal(Goal::AtLeast(50.0)));
        sec.detail(&format!("concurrency_{c}"), serde_json::json!({"tasks": n, "seconds": took.as_secs_f64(), "tasks_per_s": rate, "raw_spawns_per_s": raw}));
    }
    sec.note(format!(
        "{n} tasks per concurrency after {WARMUP} warm-up tasks; each counts when the client has followed it to its stored end \
         (create, dispatch, spawn, log upload, finish, follow). Raw spawn rate measured right after each runops run."
    ));
    Ok(sec)
}
