//! Measurements 7 and 8: Control-plane capacity on SQLite (and on PostgreSQL with 1 and 3
//! replicas): how many task creations and claims per second
//! one `runops server` sustains, with no process spawned anywhere. Agents are simulated
//! in the bench process: each is a real session (`connect`) whose loop long-polls for up
//! to 30 offers, then calls `start` and `finish` (empty log, success) for each, as a
//! real agent does for a task that prints nothing. Baseline: authenticated `GET /v1/me`
//! requests per second at the same concurrency (the HTTP + auth floor of this server).

use crate::postgres::PgServer;
use crate::procs::ServerProc;
use crate::report::{Row, Section};
use anyhow::Context;
use futures_util::future::join_all;
use runops_client::Client;
use runops_proto::TaskStatus;
use runops_proto::agent::{ConnectRequest, ConnectResponse, FinishRequest, PollRequest};
use runops_proto::api::{TargetCreate, TaskCreate};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Simulated agents, each with its own tags and target.
const AGENTS: usize = 10;
/// Concurrent API users creating tasks.
const CREATORS: usize = 16;
/// Offers a simulated agent asks for per poll (a real agent's default CONCURRENCY).
const SLOTS: u32 = 30;

fn target(i: usize) -> String {
    format!("cp-{}", i % AGENTS)
}

/// Runs `f(client, i)` for i in 0..n with `workers` concurrent callers (worker `w`
/// calls through `clients[w % len]`: one replica each, round-robin); the wall time.
async fn concurrently<F, Fut>(
    clients: &[Client],
    n: usize,
    workers: usize,
    f: F,
) -> anyhow::Result<Duration>
where
    F: Fn(Client, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let (client, next, f) = (clients[w % clients.len()].clone(), next.clone(), f.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return anyhow::Ok(());
                    }
                    f(client.clone(), i).await?;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.context("a bench worker panicked")??;
    }
    Ok(start.elapsed())
}

/// One simulated agent: claims, starts and finishes tasks until `stop` fires.
async fn sim_agent(
    client: Client,
    session: ConnectResponse,
    done: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
    all_done: Arc<watch::Sender<bool>>,
    total: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let hold = Duration::from_secs(session.poll_hold_secs);
    let sid = session.session_id.clone();
    let req = PollRequest {
        session_id: sid.clone(),
        running: Vec::new(),
        free_slots: SLOTS,
    };
    loop {
        let offers = tokio::select! {
            r = client.agent_poll(&req, hold) => r?.offers,
            _ = stop.changed() => break,
        };
        let runs = offers.into_iter().map(|offer| {
            let (client, sid) = (&client, &sid);
            async move {
                client.agent_start(offer.task_id, sid).await?;
                let fin = FinishRequest {
                    session_id: sid.clone(),
                    result: runops_proto::agent::TaskResult {
                        status: TaskStatus::Success,
                        exit_code: Some(0),
                        failure_reason: None,
                        failure_message: None,
                        redacted: true,
                        log_size: 0,
                        log_location: None,
                        elapsed_ms: 0,
                    },
                    log_tail: None,
                };
                client.agent_finish(offer.task_id, &fin).await?;
                anyhow::Ok(())
            }
        });
        for r in join_all(runs).await {
            r?;
            if done.fetch_add(1, Ordering::Relaxed) + 1 >= total.load(Ordering::Relaxed) {
                let _ = all_done.send(true);
            }
        }
    }
    client.agent_disconnect(&sid).await?;
    Ok(())
}

pub async fn run(bin: &Path, n: usize) -> anyhow::Result<Section> {
    let mut sec = Section::new(
        "control",
        "7. Control-plane capacity (SQLite, simulated agents, no processes)",
    );
    let dir = tempfile::Builder::new().prefix("runops-bench-").tempdir()?;
    let server = ServerProc::start(bin, dir.path(), &[]).await?;
    measure(&mut sec, &[server], n).await?;
    sec.note(format!(
        "{n} tasks per phase on a fresh server (default settings, SQLite in WAL mode on the machine's disk). Creations: {CREATORS} \
         concurrent `POST /v1/tasks` over {AGENTS} targets while no agent is connected. Claims: {AGENTS} simulated agents (tags \
         `cp-0`…) drain those tasks; each poll asks for up to {SLOTS} offers, and each offer is started and finished (3 writes \
         per task: claim, start, finish). The bench process (clients) shares the machine's cores with the server."
    ));
    Ok(sec)
}

/// The key every replica of the PostgreSQL runs shares.
pub const BENCH_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Starts `replicas` servers on the database `url`, each in a directory of its own
/// under `dir`.
pub async fn start_replicas(
    bin: &Path,
    dir: &Path,
    url: &str,
    replicas: usize,
) -> anyhow::Result<Vec<ServerProc>> {
    let mut servers = Vec::with_capacity(replicas);
    for r in 0..replicas {
        let sub = dir.join(format!("replica-{r}"));
        std::fs::create_dir_all(&sub)?;
        servers.push(
            ServerProc::start_env(
                bin,
                &sub,
                &[],
                &[
                    ("RUNOPS_DATABASE_URL", url),
                    ("RUNOPS_SECRET_KEY", BENCH_KEY),
                ],
            )
            .await?,
        );
    }
    Ok(servers)
}

/// Measurement 8: measurement 7 on PostgreSQL (`--database-url`, a fresh database per
/// run), with each count of `replicas` on one database: creators and simulated agents
/// spread over the replicas round-robin.
pub async fn run_postgres(
    bin: &Path,
    n: usize,
    pg: &PgServer,
    replicas: &[usize],
) -> anyhow::Result<Vec<Section>> {
    let mut out = Vec::new();
    for &replicas in replicas {
        let mut sec = Section::new(
            &format!("control-postgres-{replicas}"),
            &format!(
                "8. Control-plane capacity (PostgreSQL, {replicas} replica{}, simulated agents)",
                if replicas == 1 { "" } else { "s" }
            ),
        );
        let db = pg.fresh_database(&format!("control_{replicas}"))?;
        let dir = tempfile::Builder::new().prefix("runops-bench-").tempdir()?;
        let servers = start_replicas(bin, dir.path(), &db.url, replicas).await?;
        measure(&mut sec, &servers, n).await?;
        // The servers stop before their database is dropped.
        drop(servers);
        drop(db);
        sec.note(format!(
            "As measurement 7, on PostgreSQL {} (default settings, a fresh database) with {replicas} \
             `runops server` replica(s) on one database; the {CREATORS} creators and the {AGENTS} simulated agents use the \
             replicas round-robin, so offers, wake-ups (LISTEN/NOTIFY) and claims (FOR UPDATE SKIP LOCKED) cross replicas.",
            pg.describe()
        ));
        out.push(sec);
    }
    Ok(out)
}

/// Creations, claims and both at once on `servers` (one or several replicas).
async fn measure(sec: &mut Section, servers: &[ServerProc], n: usize) -> anyhow::Result<()> {
    let admins: Vec<Client> = servers
        .iter()
        .map(|s| s.admin())
        .collect::<anyhow::Result<_>>()?;
    let admin = &admins[0];
    for i in 0..AGENTS {
        admin
            .create_target(&TargetCreate {
                name: target(i),
                kind: "bash".into(),
                tags: Some(target(i)),
                ..Default::default()
            })
            .await?;
    }
    // Agent tokens are scoped to one tag set: one per simulated agent.
    let mut tokens = Vec::with_capacity(AGENTS);
    for i in 0..AGENTS {
        let created = admin
            .create_agent_token(Some("bench-sim".into()), Some(target(i)))
            .await?;
        tokens.push(created.token);
    }

    // Warm-up, then the floor.
    concurrently(&admins, 200, CREATORS, |c, _| async move {
        c.me().await.map(drop).map_err(Into::into)
    })
    .await?;
    let floor = concurrently(&admins, n, CREATORS, |c, _| async move {
        c.me().await.map(drop).map_err(Into::into)
    })
    .await?;
    let floor_rate = n as f64 / floor.as_secs_f64();

    let create = |c: Client, i: usize| async move {
        c.create_task(&TaskCreate {
            target: target(i),
            script: "true".into(),
            ..Default::default()
        })
        .await
        .map(drop)
        .map_err(Into::into)
    };
    // Creations with no agent connected: the tasks wait as `ready`.
    let created = concurrently(&admins, n, CREATORS, create).await?;
    let create_rate = n as f64 / created.as_secs_f64();

    // The simulated agents drain those n tasks.
    let done = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(n));
    let (stop, stop_rx) = watch::channel(false);
    let (all_done, mut all_done_rx) = watch::channel(false);
    let all_done = Arc::new(all_done);
    let mut sessions = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let client = Client::new(&servers[i % servers.len()].url, token)?;
        let session = client
            .agent_connect(&ConnectRequest {
                tags: Some(target(i)),
                hostname: format!("bench-sim-{i}"),
                version: runops_proto::VERSION.into(),
                instance_id: format!("bench-sim-{}-{i}", std::process::id()),
                concurrency: SLOTS,
                standby: false,
                restarted: false,
                spooled: Vec::new(),
                verifies_identity: false,
            })
            .await?;
        sessions.push((client, session));
    }
    let drain_start = Instant::now();
    let loops: Vec<_> = sessions
        .into_iter()
        .map(|(client, session)| {
            tokio::spawn(sim_agent(
                client,
                session,
                done.clone(),
                stop_rx.clone(),
                all_done.clone(),
                total.clone(),
            ))
        })
        .collect();
    all_done_rx.wait_for(|d| *d).await?;
    let drained = drain_start.elapsed();
    let claim_rate = n as f64 / drained.as_secs_f64();

    // Both at once: creators and agents, n more tasks.
    let _ = all_done.send(false);
    total.fetch_add(n, Ordering::Relaxed);
    let mixed_start = Instant::now();
    concurrently(&admins, n, CREATORS, create).await?;
    all_done_rx.wait_for(|d| *d).await?;
    let mixed = mixed_start.elapsed();
    let mixed_rate = n as f64 / mixed.as_secs_f64();
    let _ = stop.send(true);
    for l in loops {
        l.await.context("a simulated agent panicked")??;
    }

    let floor_label = format!("`GET /v1/me`, {CREATORS} callers");
    sec.row(
        Row::new(
            format!("task creations, {CREATORS} concurrent callers"),
            create_rate,
            "/s",
        )
        .vs(floor_label.clone(), floor_rate),
    );
    sec.row(
        Row::new(
            format!("claims (poll → start → finish), {AGENTS} agents × {SLOTS} slots"),
            claim_rate,
            "/s",
        )
        .vs(floor_label.clone(), floor_rate),
    );
    sec.row(
        Row::new(
            "create + claim + finish at once, tasks end to end",
            mixed_rate,
            "/s",
        )
        .vs(floor_label, floor_rate),
    );
    sec.detail("tasks_per_phase", n);
    sec.detail("create_s", created.as_secs_f64());
    sec.detail("drain_s", drained.as_secs_f64());
    sec.detail("mixed_s", mixed.as_secs_f64());
    sec.detail("floor_s", floor.as_secs_f64());
    Ok(())
}
