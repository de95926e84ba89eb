//! `runops-bench`: the benchmark suite of Runops.
//!
//! It starts the real `runops` binary as users do (`runops server`, `runops agent` with a
//! token, the CLI for `tasks create`), each stack in a temporary directory on a free
//! loopback port, and measures dispatch latency, end-to-end overhead, throughput, memory,
//! log throughput and control-plane capacity. Every figure is measured next to a baseline
//! in the same run (bash spawned directly, psql, the HTTP floor of the server...), because
//! shared machines are noisy: read the medians and the ratios. Results are printed as
//! markdown as they come and written as JSON and markdown at the end.
//! `scripts/bench.sh` builds the release binaries and runs everything; BENCHMARKS.md
//! holds the figures. One module per measurement; `figures` holds issue 20's goals
//! (each figure on its own stacks) and `compare` runs them alternately on two binaries
//! (`--compare OLD`); `procs` starts processes, `drive` pushes work through them,
//! `stats` and `report` turn samples into tables.

mod compare;
mod control;
mod dispatch;
mod drive;
mod figures;
mod memory;
mod overhead;
mod postgres;
mod procs;
mod report;
mod stats;
mod throughput;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use report::{Machine, Report, Section};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum Measurement {
    /// issue 20's goals table: every figure once (see --figures)
    Goals,
    /// 1. task created → running on the agent, with 1 and with 200+1 agents
    Dispatch,
    /// 2. `runops tasks create` vs `bash -c true`; postgres task vs psql
    Overhead,
    /// 3. trivial tasks per second at concurrency 1 and 30
    Throughput,
    /// 4. + 5. idle and peak memory, and log throughput of a 1 GiB task
    Memory,
    /// 6. the redaction engine's table (from --redact-table)
    Redaction,
    /// 7. creations and claims per second with simulated agents
    Control,
    /// 8. the same on PostgreSQL (--database-url) with 1 and 3 server replicas
    ControlPostgres,
    /// 9. dispatch latency (1 agent) on PostgreSQL with 1 and 3 replicas, next to SQLite
    DispatchPostgres,
}

/// Run the Runops benchmarks against a built `runops` binary.
#[derive(Parser, Debug)]
#[command(name = "runops-bench", version)]
struct Args {
    /// Measurements to run (default: all, in the order listed): goals, dispatch,
    /// overhead, throughput, memory, redaction, control, control-postgres,
    /// dispatch-postgres. With --compare: the figures to compare instead (default: all
    /// of cli, dispatch, cpu, throughput, logs, agent-memory, follow-memory).
    only: Vec<String>,
    /// Compare this (old) `runops` binary with --runops (new): each figure of issue 20
    /// runs alternately on both, --rounds times each; prints old, new and new / old.
    #[arg(long, value_name = "OLD_RUNOPS")]
    compare: Option<PathBuf>,
    /// Rounds per binary and figure with --compare (default 3; 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=100))]
    rounds: Option<u16>,
    /// The figures of the `goals` measurement (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    figures: Vec<figures::Figure>,
    /// Live logs followed by the follow-memory figure (default 1000; 50 with --quick).
    #[arg(long)]
    follows: Option<usize>,
    /// The `runops` binary to drive.
    #[arg(long, default_value = "target/release/runops")]
    runops: PathBuf,
    /// Small sample sizes, to check the harness (debug builds); the figures mean little.
    #[arg(long)]
    quick: bool,
    /// Write the full results (raw summaries included) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the results as markdown here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Output of `cargo run --release -p runops-redact --example redact_bench`, quoted
    /// as measurement 6.
    #[arg(long)]
    redact_table: Option<PathBuf>,
    /// Tasks per dispatch case (default 1000; 50 with --quick).
    #[arg(long)]
    dispatch_tasks: Option<usize>,
    /// Idle simulated agents in the second dispatch case.
    #[arg(long, default_value_t = 200)]
    idle_agents: usize,
    /// Bytes the big task prints (default 1 GiB; 16 MiB with --quick).
    #[arg(long)]
    log_bytes: Option<u64>,
    /// The PostgreSQL server of measurements 8 and 9 (needs `psql`): each run creates a
    /// fresh database on it (`runops_bench_<pid>_...`) and drops it afterwards.
    #[arg(long, env = "RUNOPS_BENCH_DATABASE_URL", default_value = postgres::DEFAULT_URL)]
    database_url: String,
    /// Replica counts of the PostgreSQL measurements, each run in turn.
    #[arg(long, value_delimiter = ',', default_value = "1,3", value_parser = clap::value_parser!(u16).range(1..=16))]
    replicas: Vec<u16>,
}

/// Sample sizes of one run.
struct Sizes {
    dispatch: usize,
    idle_agents: usize,
    overhead: usize,
    throughput: usize,
    warm_tasks: usize,
    log_bytes: u64,
    control: usize,
    redact_table: Option<PathBuf>,
    database_url: String,
    replicas: Vec<usize>,
    figures: figures::FigSizes,
    goal_figures: Vec<figures::Figure>,
}

impl Sizes {
    fn of(a: &Args) -> Sizes {
        let (d, o, t, w, l, c, idle) = if a.quick {
            (50, 10, 60, 30, 16 << 20, 300, a.idle_agents.min(20))
        } else {
            (1000, 100, 1000, 300, 1 << 30, 5000, a.idle_agents)
        };
        let (cli, cpu, follows) = if a.quick {
            (10, 20, 50)
        } else {
            (100, 300, 1000)
        };
        Sizes {
            figures: figures::FigSizes {
                cli,
                cpu,
                dispatch: a.dispatch_tasks.unwrap_or(d),
                throughput: t,
                log_bytes: a.log_bytes.unwrap_or(l),
                warm_tasks: w,
                follows: a.follows.unwrap_or(follows),
            },
            goal_figures: if a.figures.is_empty() {
                figures::ALL.to_vec()
            } else {
                a.figures.clone()
            },
            dispatch: a.dispatch_tasks.unwrap_or(d),
            idle_agents: idle,
            overhead: o,
            throughput: t,
            warm_tasks: w,
            log_bytes: a.log_bytes.unwrap_or(l),
            control: c,
            redact_table: a.redact_table.clone(),
            database_url: a.database_url.clone(),
            replicas: a.replicas.iter().map(|&r| usize::from(r)).collect(),
        }
    }
}

fn failed(id: &str, title: &str, e: &anyhow::Error) -> Section {
    let mut s = Section::new(id, title);
    s.note(format!("failed: {e:#}"));
    s
}

async fn measure(m: Measurement, bin: &Path, z: &Sizes) -> Vec<Section> {
    let r = match m {
        Measurement::Goals => Ok(vec![figures::goals(bin, &z.figures, &z.goal_figures).await]),
        Measurement::Dispatch => dispatch::run(bin, z.dispatch, z.idle_agents)
            .await
            .map(|s| vec![s]),
        Measurement::Overhead => overhead::run(bin, z.overhead).await.map(|s| vec![s]),
        Measurement::Throughput => throughput::run(bin, z.throughput).await.map(|s| vec![s]),
        Measurement::Memory => memory::run(bin, z.warm_tasks, z.log_bytes)
            .await
            .map(|(a, b)| vec![a, b]),
        Measurement::Control => control::run(bin, z.control).await.map(|s| vec![s]),
        Measurement::ControlPostgres => match postgres::PgServer::new(&z.database_url) {
            Ok(pg) => control::run_postgres(bin, z.control, &pg, &z.replicas).await,
            Err(e) => Err(e),
        },
        Measurement::DispatchPostgres => match postgres::PgServer::new(&z.database_url) {
            Ok(pg) => dispatch::run_postgres(bin, z.dispatch, &pg, &z.replicas)
                .await
                .map(|s| vec![s]),
            Err(e) => Err(e),
        },
        Measurement::Redaction => match &z.redact_table {
            Some(path) => redaction_section(path).map(|s| vec![s]),
            None => Err(anyhow::anyhow!(
                "no --redact-table given; run `cargo run --release -p runops-redact --example redact_bench > FILE` and pass FILE"
            )),
        },
    };
    r.unwrap_or_else(|e| {
        vec![failed(
            &format!("{m:?}").to_lowercase(),
            &format!("{m:?}"),
            &e,
        )]
    })
}

fn redaction_section(path: &Path) -> anyhow::Result<Section> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the redaction bench output {}", path.display()))?;
    let mut s = Section::new(
        "redaction",
        "6. Redaction engine (runops-redact's redact_bench, one core)",
    );
    s.text = Some(text);
    s.note("Output of `cargo run --release -p runops-redact --example redact_bench`, quoted as printed; MB = 10^6 bytes.");
    Ok(s)
}

/// The binary at `path` and its `--version`.
fn binary(path: &Path) -> anyhow::Result<(PathBuf, String)> {
    let bin = std::fs::canonicalize(path).with_context(|| {
        format!(
            "the runops binary {} does not exist; build it with `cargo build --release -p runops` or pass --runops",
            path.display()
        )
    })?;
    let version = drive::check_command(std::process::Command::new(&bin).arg("--version"))?;
    Ok((bin, version.trim().to_string()))
}

/// Parses the positional names as `T` (a measurement or a figure).
fn parse_names<T: ValueEnum>(names: &[String], what: &str) -> anyhow::Result<Vec<T>> {
    names
        .iter()
        .map(|n| {
            T::from_str(n, true).map_err(|_| {
                let all: Vec<String> = T::value_variants()
                    .iter()
                    .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
                    .collect();
                anyhow::anyhow!("unknown {what} `{n}`; one of: {}", all.join(" "))
            })
        })
        .collect()
}

async fn run_compare(args: &Args, old: &Path) -> anyhow::Result<bool> {
    let (new_bin, new_version) = binary(&args.runops)?;
    let (old_bin, old_version) = binary(old)?;
    let figs: Vec<figures::Figure> = if args.only.is_empty() {
        figures::ALL.to_vec()
    } else {
        parse_names(&args.only, "figure")?
    };
    let sizes = Sizes::of(args);
    let rounds = args
        .rounds
        .map_or(if args.quick { 1 } else { 3 }, usize::from);
    let load_before = report::load_average();
    eprintln!(
        "runops-bench: compare old {} ({old_version}) with new {} ({new_version}), {rounds} round(s), load {load_before}",
        old_bin.display(),
        new_bin.display()
    );
    let started = Instant::now();
    let c = compare::run(
        (&old_bin, old_version),
        (&new_bin, new_version),
        &figs,
        &sizes.figures,
        rounds,
    )
    .await;
    let mut md = c.markdown();
    let machine = Machine::probe();
    md.push_str(&format!(
        "
Machine: {} cores ({}); load average {load_before} at the start, {} at the end; {:.0} s.
",
        machine.nproc,
        machine.cpu_model,
        machine.load_before,
        started.elapsed().as_secs_f64()
    ));
    println!("{md}");
    if let Some(path) = &args.json {
        let v = serde_json::json!({"comparison": c, "machine": machine, "load_before": load_before, "seconds": started.elapsed().as_secs_f64()});
        std::fs::write(path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, &md).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(c.failures.is_empty())
}

async fn run(args: Args) -> anyhow::Result<bool> {
    if let Some(old) = &args.compare {
        return run_compare(&args, old).await;
    }
    let (bin, version) = binary(&args.runops)?;
    let sizes = Sizes::of(&args);
    let order = if args.only.is_empty() {
        vec![
            Measurement::Goals,
            Measurement::Dispatch,
            Measurement::Overhead,
            Measurement::Throughput,
            Measurement::Memory,
            Measurement::Redaction,
            Measurement::Control,
            Measurement::ControlPostgres,
            Measurement::DispatchPostgres,
        ]
        .into_iter()
        .filter(|m| *m != Measurement::Redaction || args.redact_table.is_some())
        .collect()
    } else {
        parse_names(&args.only, "measurement")?
    };
    let started = Instant::now();
    let mut report = Report {
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        machine: Machine::probe(),
        runops_bin: bin.display().to_string(),
        runops_version: version,
        sections: Vec::new(),
        seconds: 0.0,
    };
    eprintln!(
        "runops-bench: {} on {} cores ({}), load {}",
        report.runops_version,
        report.machine.nproc,
        report.machine.cpu_model,
        report.machine.load_before
    );
    for m in order {
        let t0 = Instant::now();
        eprintln!("runops-bench: {m:?}…");
        for mut s in measure(m, &bin, &sizes).await {
            s.seconds = t0.elapsed().as_secs_f64();
            println!("{}", s.markdown());
            report.sections.push(s);
        }
    }
    report.machine.load_after = report::load_average();
    report.seconds = started.elapsed().as_secs_f64();
    println!("{}", report.goals_markdown());
    // The goals table comes first in the markdown file: the summary of the run.
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        std::fs::write(path, report.markdown())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(report
        .sections
        .iter()
        .all(|s| !s.notes.iter().any(|n| n.starts_with("failed:"))))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: some measurements failed; see their `failed:` notes above");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
