//! Measurement 1: Dispatch latency: from "create this task" to the task's script running on the
//! agent, one task at a time (nothing queued), with one agent and then with 200 more
//! idle agents (other tags) long-polling the same server.
//!
//! The script is `echo $EPOCHREALTIME`: bash prints the wall clock (µs) when it runs its
//! first command, and the bench subtracts the wall clock it read just before sending
//! `POST /v1/tasks`. Client and agent share the machine's clock, so this is the real
//! create → running time, including the agent's spawn of bash. The baseline is the same
//! measurement for `bash -c 'echo $EPOCHREALTIME'` spawned directly by the bench. The
//! server's own `started_at - created_at` (millisecond resolution) is reported too.

use crate::control::start_replicas;
use crate::drive::{
    IdleAgents, expect_success, ms, new_task, parse_epoch_realtime, realtime_us, wait_done,
};
use crate::postgres::PgServer;
use crate::procs::{AgentProc, LOCAL_TARGET, Stack};
use crate::report::{Row, Section};
use crate::stats::Summary;
use anyhow::Context;
use runops_client::Client;
use runops_proto::api::TargetCreate;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The script whose first command reports when it started.
pub const SCRIPT: &str = "echo $EPOCHREALTIME";
/// Tasks run and discarded before measuring (connections, caches, page faults).
pub const WARMUP: usize = 20;
/// Lets the idle agents' long polls all be open before measuring.
const IDLE_SETTLE: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Samples {
    /// Client's create → script running, ms.
    pub create_to_running: Vec<f64>,
    /// Server's started_at - created_at, ms (millisecond resolution).
    server: Vec<f64>,
    /// Create → final task and log in the client's hands, ms.
    round_trip: Vec<f64>,
    /// The `POST /v1/tasks` call alone, ms.
    create_call: Vec<f64>,
}

/// Task `i` is created through `clients[i % len]` (one replica each, round-robin) and
/// followed through the same client.
pub async fn measure(clients: &[Client], n: usize) -> anyhow::Result<Samples> {
    let mut s = Samples::default();
    let req = new_task(LOCAL_TARGET, SCRIPT);
    for i in 0..WARMUP + n {
        let client = &clients[i % clients.len()];
        let sent_us = realtime_us();
        let t0 = Instant::now();
        let task = client.create_task(&req).await?;
        let create_call = ms(t0.elapsed());
        let (task, log) = wait_done(client, task.id).await?;
        let round_trip = ms(t0.elapsed());
        expect_success(&task, &log)?;
        let ran_us = parse_epoch_realtime(&String::from_utf8_lossy(&log)).with_context(|| {
            format!(
                "task {} printed no time: {:?}",
                task.id,
                String::from_utf8_lossy(&log)
            )
        })?;
        if i < WARMUP {
            continue;
        }
        s.create_to_running.push((ran_us - sent_us) / 1e3);
        s.round_trip.push(round_trip);
        s.create_call.push(create_call);
        if let Some(started) = task.started_at {
            s.server
                .push((started - task.created_at).num_microseconds().unwrap_or(0) as f64 / 1e3);
        }
    }
    Ok(s)
}

/// The baseline: the bench spawns bash itself, `n` times.
pub fn bash_baseline(n: usize) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let sent_us = realtime_us();
        let o = Command::new("bash").args(["-c", SCRIPT]).output()?;
        let ran_us = parse_epoch_realtime(&String::from_utf8_lossy(&o.stdout))
            .context("bash printed no time")?;
        out.push((ran_us - sent_us) / 1e3);
    }
    Ok(out)
}

pub async fn run(bin: &Path, n: usize, idle_agents: usize) -> anyhow::Result<Section> {
    let mut sec = Section::new(
        "dispatch",
        "1. Dispatch latency (task created → script running on the agent)",
    );
    let stack = Stack::start(bin, &[], true).await?;
    let base = tokio::task::spawn_blocking(move || bash_baseline(n)).await??;
    let base = Summary::of(&base).context("no baseline samples")?;

    let one = measure(std::slice::from_ref(&stack.admin), n).await?;
    let idle = IdleAgents::start(&stack.server.url, &stack.admin, idle_agents, "idle").await?;
    tokio::time::sleep(IDLE_SETTLE).await;
    let listed = stack.admin.list_agents().await?.len();
    let busy = measure(std::slice::from_ref(&stack.admin), n).await?;
    let polls = idle.stop().await?;

    let busy_label = format!("1 agent + {idle_agents} idle agents");
    for (label, s) in [("1 agent", &one), (busy_label.as_str(), &busy)] {
        let c = Summary::of(&s.create_to_running).context("no samples")?;
        let srv = Summary::of(&s.server).context("no server samples")?;
        let rt = Summary::of(&s.round_trip).context("no samples")?;
        let cc = Summary::of(&s.create_call).context("no samples")?;
        sec.row(
            Row::new(format!("{label}: p50"), c.p50, "ms")
                .vs("bash spawned directly, p50", base.p50),
        );
        sec.row(
            Row::new(format!("{label}: p95"), c.p95, "ms")
                .vs("bash spawned directly, p95", base.p95),
        );
        sec.row(
            Row::new(format!("{label}: p99"), c.p99, "ms")
                .vs("bash spawned directly, p99", base.p99),
        );
        sec.row(Row::new(
            format!("{label}: server started_at − created_at, p50"),
            srv.p50,
            "ms",
        ));
        sec.row(Row::new(
            format!("{label}: server started_at − created_at, p99"),
            srv.p99,
            "ms",
        ));
        sec.row(Row::new(
            format!("{label}: `POST /v1/tasks` call, p50"),
            cc.p50,
            "ms",
        ));
        sec.row(Row::new(
            format!("{label}: create → result and log in hand, p50"),
            rt.p50,
            "ms",
        ));
        sec.detail(label, serde_json::json!({"create_to_running_ms": c, "server_ms": srv, "round_trip_ms": rt, "create_call_ms": cc}));
    }
    sec.detail("baseline_bash_spawn_ms", base);
    sec.detail("agents_listed_during_idle_run", listed);
    sec.detail("idle_polls_answered", polls);
    sec.note(format!(
        "{n} tasks per case, one at a time, after {WARMUP} warm-up tasks; script `{SCRIPT}`. \
         Latency = bash's `$EPOCHREALTIME` at its first command − the bench's wall clock just before `POST /v1/tasks` \
         (same machine, same clock): it covers the create request, the wake-up of the agent's long poll, `start`, \
         the agent's pipeline (secrets, environment, spool) and the spawn of bash. The baseline column is the bench spawning \
         the same bash itself, so latency − baseline is what Runops adds."
    ));
    sec.note(format!(
        "The idle agents are {idle_agents} `runops-client` sessions in the bench process (tags `idle-0`…), each keeping a \
         real HTTP long poll open; the server listed {listed} live agents during that run."
    ));
    sec.note("The server's `started_at − created_at` has millisecond resolution (SQLite stores ms) and ends when the agent calls `start`, before bash is spawned.");
    Ok(sec)
}

/// Measurement 9: dispatch latency with one agent on PostgreSQL (`--database-url`, a
/// fresh database per run) with each count of `replicas`, next to the same case on
/// SQLite measured in the same run. Tasks are created round-robin on the replicas while
/// the agent polls the first one, so with several replicas most wake-ups cross replicas
/// (`NOTIFY`).
pub async fn run_postgres(
    bin: &Path,
    n: usize,
    pg: &PgServer,
    replicas: &[usize],
) -> anyhow::Result<Section> {
    let mut sec = Section::new(
        "dispatch-postgres",
        "9. Dispatch latency on PostgreSQL (task created → script running on the agent, 1 agent)",
    );
    let sqlite = {
        let stack = Stack::start(bin, &[], true).await?;
        measure(std::slice::from_ref(&stack.admin), n).await?
    };
    let sqlite_c = Summary::of(&sqlite.create_to_running).context("no SQLite samples")?;
    let sqlite_rt = Summary::of(&sqlite.round_trip).context("no SQLite samples")?;
    for &replicas in replicas {
        let db = pg.fresh_database(&format!("dispatch_{replicas}"))?;
        let dir = tempfile::Builder::new().prefix("runops-bench-").tempdir()?;
        let servers = start_replicas(bin, dir.path(), &db.url, replicas).await?;
        let admins: Vec<Client> = servers
            .iter()
            .map(|s| s.admin())
            .collect::<anyhow::Result<_>>()?;
        admins[0]
            .create_target(&TargetCreate {
                name: LOCAL_TARGET.into(),
                kind: "bash".into(),
                ..Default::default()
            })
            .await?;
        let token = admins[0]
            .create_agent_token(Some("bench".into()), None)
            .await?
            .token;
        let agent = AgentProc::start(
            bin,
            dir.path(),
            &admins[0],
            &token,
            None,
            &[("API_URL", servers[0].url.as_str())],
        )
        .await?;
        let s = measure(&admins, n).await?;
        // The processes stop before their database is dropped.
        drop(agent);
        drop(servers);
        drop(db);
        let c = Summary::of(&s.create_to_running).context("no samples")?;
        let rt = Summary::of(&s.round_trip).context("no samples")?;
        let label = format!(
            "PostgreSQL, {replicas} replica{}",
            if replicas == 1 { "" } else { "s" }
        );
        sec.row(Row::new(format!("{label}: p50"), c.p50, "ms").vs("SQLite, p50", sqlite_c.p50));
        sec.row(Row::new(format!("{label}: p99"), c.p99, "ms").vs("SQLite, p99", sqlite_c.p99));
        sec.row(
            Row::new(
                format!("{label}: create → result and log in hand, p50"),
                rt.p50,
                "ms",
            )
            .vs("SQLite, p50", sqlite_rt.p50),
        );
        sec.detail(
            &label,
            serde_json::json!({"create_to_running_ms": c, "round_trip_ms": rt}),
        );
    }
    sec.detail(
        "sqlite",
        serde_json::json!({"create_to_running_ms": sqlite_c, "round_trip_ms": sqlite_rt}),
    );
    sec.note(format!(
        "{n} tasks per case, one at a time, after {WARMUP} warm-up tasks; script `{SCRIPT}`; latency measured as in \
         measurement 1. One untagged agent (default settings) long-polls the first replica; tasks are created through \
         the replicas in turn, so with 3 replicas two tasks in three are created on a replica the agent does not talk to \
         and reach it through LISTEN/NOTIFY. PostgreSQL: {} (default settings, a fresh database per case). The SQLite \
         column is the same case on a default `runops server` (SQLite, WAL) measured at the start of this section.",
        pg.describe()
    ));
    Ok(sec)
}
