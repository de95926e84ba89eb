//! Measurement 2: End-to-end overhead: what a user waits for with `runops tasks create -t local -s
//! true` (a CLI process that creates the task, follows it and prints its result) against
//! running `bash -c true` directly; and a `select 1` postgres task against `psql -c
//! 'select 1'`. The runs of each pair alternate, so drift in the machine's load hits
//! both sides alike. Two floors help read the figures: starting the binary at all
//! (`runops --version`) and the same create → result through the client library in the
//! bench process (no CLI process).

use crate::drive::{check_command, expect_success, ms, new_task, time_command, wait_done};
use crate::procs::{LOCAL_TARGET, PG_TARGET, Stack};
use crate::report::{Row, Section};
use crate::stats::Summary;
use anyhow::Context;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs of each command made and discarded first (page cache, connections).
const WARMUP: usize = 5;
/// The psql command of the brief (the machine's PostgreSQL, trust authentication).
const PSQL: [&str; 7] = [
    "-h",
    "127.0.0.1",
    "-U",
    "postgres",
    "test",
    "-c",
    "select 1",
];

/// Times `a` and `b` alternately, `n` times each after a warm-up; medians in ms.
pub fn alternate(
    n: usize,
    mut a: impl FnMut() -> Command,
    mut b: impl FnMut() -> Command,
) -> anyhow::Result<(Summary, Summary)> {
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for i in 0..WARMUP + n {
        let da = time_command(&mut a())?;
        let db = time_command(&mut b())?;
        if i >= WARMUP {
            ta.push(ms(da));
            tb.push(ms(db));
        }
    }
    Ok((
        Summary::of(&ta).context("no samples")?,
        Summary::of(&tb).context("no samples")?,
    ))
}

/// `runops tasks create -t local -s true` against `bash -c true` on `stack`, `n` times
/// each, alternating; medians in ms.
pub async fn cli_against_bash(
    stack: &std::sync::Arc<Stack>,
    n: usize,
) -> anyhow::Result<(Summary, Summary)> {
    let s = stack.clone();
    tokio::task::spawn_blocking(move || {
        alternate(
            n,
            || s.cli(&["tasks", "create", "-t", LOCAL_TARGET, "-s", "true"]),
            || {
                let mut c = Command::new("bash");
                c.args(["-c", "true"]);
                c
            },
        )
    })
    .await?
}

fn pair_rows(sec: &mut Section, what: &str, runops: Summary, base: Summary, base_label: &str) {
    sec.row(Row::new(format!("{what}: median"), runops.p50, "ms").vs(base_label, base.p50));
    sec.row(Row::new(
        format!("{what}: median added"),
        runops.p50 - base.p50,
        "ms",
    ));
    sec.row(
        Row::new(format!("{what}: p95"), runops.p95, "ms")
            .vs(format!("{base_label}, p95"), base.p95),
    );
}

pub async fn run(bin: &Path, n: usize) -> anyhow::Result<Section> {
    let mut sec = Section::new(
        "overhead",
        "2. End-to-end overhead (CLI → server → agent → result back)",
    );
    let stack = Stack::start(bin, &[], true).await?;

    // Floors: the binary starting, and the same work without a CLI process.
    let version = {
        let bin = bin.to_path_buf();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<f64>> {
            (0..n)
                .map(|_| Ok(ms(time_command(Command::new(&bin).arg("--version"))?)))
                .collect()
        })
        .await??
    };
    let version = Summary::of(&version).context("no samples")?;
    let mut in_process = Vec::new();
    for i in 0..WARMUP + n {
        let t0 = Instant::now();
        let task = stack
            .admin
            .create_task(&new_task(LOCAL_TARGET, "true"))
            .await?;
        let (task, log) = wait_done(&stack.admin, task.id).await?;
        expect_success(&task, &log)?;
        if i >= WARMUP {
            in_process.push(ms(t0.elapsed()));
        }
    }
    let in_process = Summary::of(&in_process).context("no samples")?;

    let stack = std::sync::Arc::new(stack);
    let (cli, bash) = cli_against_bash(&stack, n).await?;
    pair_rows(
        &mut sec,
        "`runops tasks create -t local -s true`",
        cli,
        bash,
        "`bash -c true`",
    );
    sec.row(Row::new(
        "floor: `runops --version`, median",
        version.p50,
        "ms",
    ));
    sec.row(
        Row::new(
            "floor: create → result via runops-client in process, median",
            in_process.p50,
            "ms",
        )
        .vs("`bash -c true`", bash.p50),
    );
    sec.detail("cli_true_ms", cli);
    sec.detail("bash_true_ms", bash);
    sec.detail("runops_version_ms", version);
    sec.detail("client_in_process_ms", in_process);

    // Postgres, when both the machine's server and the agent's runner are there.
    match postgres_ready(&stack).await {
        Ok(()) => {
            let (s, s2) = (stack.clone(), stack.clone());
            let (task, psql) = tokio::task::spawn_blocking(move || {
                alternate(
                    n,
                    || s.cli(&["tasks", "create", "-t", PG_TARGET, "-s", "select 1"]),
                    || {
                        let mut c = Command::new("psql");
                        c.args(PSQL);
                        c
                    },
                )
            })
            .await??;
            pair_rows(
                &mut sec,
                "`runops tasks create -t pg -s 'select 1'`",
                task,
                psql,
                "`psql -c 'select 1'`",
            );
            // psql's defaults try GSSAPI and TLS first; the bench's target uses neither.
            let (task2, plain) = tokio::task::spawn_blocking(move || {
                alternate(
                    n,
                    || s2.cli(&["tasks", "create", "-t", PG_TARGET, "-s", "select 1"]),
                    || {
                        let mut c = Command::new("psql");
                        c.args(PSQL)
                            .env("PGSSLMODE", "disable")
                            .env("PGGSSENCMODE", "disable");
                        c
                    },
                )
            })
            .await??;
            pair_rows(
                &mut sec,
                "same, second pair",
                task2,
                plain,
                "`PGSSLMODE=disable PGGSSENCMODE=disable psql -c 'select 1'`",
            );
            sec.detail("cli_pg_ms", task);
            sec.detail("psql_ms", psql);
            sec.detail("cli_pg_second_pair_ms", task2);
            sec.detail("psql_plain_ms", plain);
        }
        Err(e) => {
            sec.row(Row::pending(
                "`runops tasks create -t pg -s 'select 1'`: median added",
                "ms",
            ));
            sec.note(format!("postgres pending: {e:#}"));
        }
    }
    sec.note(format!(
        "{n} runs of each command after {WARMUP} warm-up runs, the runops and baseline runs alternating. \
         The CLI gets its server and token from RUNOPS_URL/RUNOPS_TOKEN; it creates the task, follows its log, prints it and exits \
         with the task's code."
    ));
    Ok(sec)
}

/// Checks that psql reaches the machine's PostgreSQL and that a `select 1` task succeeds.
async fn postgres_ready(stack: &Stack) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(|| check_command(Command::new("psql").args(PSQL)))
        .await?
        .context("`psql -h 127.0.0.1 -U postgres test` does not work here")?;
    let task = stack
        .admin
        .create_task(&new_task(PG_TARGET, "select 1"))
        .await?;
    let (task, log) =
        tokio::time::timeout(Duration::from_secs(60), wait_done(&stack.admin, task.id))
            .await
            .context("the postgres task did not end within a minute")??;
    expect_success(&task, &log).context("the agent's postgres runner cannot run `select 1`")?;
    Ok(())
}
