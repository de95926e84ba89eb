//! `runops`: one binary for every role.
//!
//! - `runops server` runs the control plane (`runops-server`);
//! - `runops agent` runs the agent (`runops-agent`);
//! - `runops up` runs both in one process with a ready `local` target (see [`up`]);
//! - `runops completion SHELL` prints a shell completion script;
//! - every other subcommand is the CLI (`runops-cli`).

mod logging;
mod up;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "runops",
    version = runops_proto::VERSION,
    about = "Run scripts on your infrastructure: a control plane, an agent and a CLI in one binary",
    long_about = "Run scripts on your infrastructure: a control plane, an agent and a CLI in one binary.\n\n\
        Start everything locally with `runops up`, then `runops tasks create -t local -s 'echo hello'`."
)]
struct Cli {
    #[command(subcommand)]
    command: Role,
    /// Use this context of the config file (`runops config get-contexts`) instead of the
    /// current one; for `runops up`, the name of the context it adds (default `local`).
    #[arg(long, global = true, env = runops_cli::ENV_CONTEXT, value_name = "NAME")]
    context: Option<String>,
}

// Parsed once per process; boxing the variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Role {
    /// Run the control plane (HTTP API, dispatch, storage)
    Server(runops_server::ServerArgs),
    /// Run the agent: take tasks for its TAGS, fetch secrets, run, redact, report
    Agent(runops_agent::AgentArgs),
    /// Run server and agent in one process on ./.runops, with a ready `local` bash target
    Up(up::UpArgs),
    /// Print a completion script for SHELL: subcommands and flags (see `--help`)
    #[command(
        long_about = "Print a completion script for SHELL, completing subcommands and flags.\n\n\
        bash:       runops completion bash > ~/.local/share/bash-completion/completions/runops\n\
        zsh:        runops completion zsh > \"${fpath[1]}/_runops\"\n\
        fish:       runops completion fish > ~/.config/fish/completions/runops.fish\n\
        powershell: runops completion powershell | Out-String | Invoke-Expression"
    )]
    Completion {
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    #[command(flatten)]
    User(runops_cli::Command),
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    if matches!(cli.command, Role::Server(_) | Role::Up(_)) {
        keep_log_chunks_on_the_heap();
    }
    if let Role::Completion { shell } = cli.command {
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "runops", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    // `--context` names a context of the CLI's config; the services have none.
    if cli.context.is_some() && matches!(cli.command, Role::Server(_) | Role::Agent(_)) {
        let cli_only = std::env::var_os(runops_cli::ENV_CONTEXT).is_none();
        if cli_only {
            eprintln!(
                "error: --context applies to CLI commands and `runops up`, not to `runops server` or `runops agent`\n\
                 hint: drop --context"
            );
            return ExitCode::FAILURE;
        }
    }
    // A CLI command is one request after another: one thread runs it (its spawned
    // spinner and follow tasks included) without starting and waking worker threads
    // (measured: BENCHMARKS.md, "One thread for the CLI"). The services and `up` serve
    // many connections at once and get a worker per core.
    let mut runtime = match cli.command {
        Role::User(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all();
    if matches!(cli.command, Role::Agent(_)) {
        runtime.thread_keep_alive(AGENT_BLOCKING_KEEP_ALIVE);
    }
    let runtime = match runtime.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Role::Server(args) => {
                logging::init(logging::Mode::Service);
                report(serve(args).await)
            }
            Role::Agent(args) if args.check => {
                print!("{}", runops_agent::check_report().await);
                ExitCode::SUCCESS
            }
            Role::Agent(args) => {
                logging::init(logging::Mode::Service);
                let shutdown = runops_agent::ShutdownSignal::from_os_signals();
                report(runops_agent::run(args, shutdown).await)
            }
            Role::Up(args) => {
                logging::init(logging::Mode::Cli);
                report(up::run(args, cli.context).await)
            }
            Role::User(cmd) => {
                logging::init(logging::Mode::Cli);
                runops_cli::run_in_context(cmd, cli.context).await
            }
            Role::Completion { .. } => ExitCode::SUCCESS,
        }
    })
}

async fn serve(args: runops_server::ServerArgs) -> anyhow::Result<()> {
    if let Some(command) = &args.command {
        println!("{}", runops_server::admin::run(command, &args).await?);
        return Ok(());
    }
    let admin_token = std::env::var("RUNOPS_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let server = runops_server::Server::start(args, admin_token).await?;
    if let Some(token) = server.generated_admin_token() {
        println!("created the admin user admin@localhost; its API token (shown once):\n{token}");
        println!(
            "log the CLI in with: runops login --url {} --token {token}",
            server.url()
        );
    }
    tracing::info!(url = %server.url(), "runops server listening");
    wait_for_stop_signal().await;
    tracing::info!("stopping");
    server.shutdown().await;
    Ok(())
}

/// How long an idle blocking thread of the agent's runtime lives (tokio's default: 10 s).
/// The agent's file I/O and spawn preparation start one per concurrent task in a burst;
/// each keeps its touched stack and allocator cache until it exits, so they go soon after
/// the burst (a steady stream of tasks keeps them busy and alive).
const AGENT_BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(1);

/// glibc gives every thread that allocates its own heap arena (up to 8 per core), each
/// holding on to freed memory; two arenas serve an I/O-bound agent or server as well and
/// keep the idle footprint small. Must run before any thread starts.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: called first thing in `main`, before any other thread exists; mallopt
    // only adjusts allocator tuning.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Buffers of a log chunk (up to 4 MiB: the request body, the bound blob, SQLite's
/// copy) above glibc's mmap threshold come from a fresh `mmap` each time, and every page
/// of each faults in and is zeroed: page faults were the server's largest cost while
/// storing a 1 GiB log (BENCHMARKS.md, issue 20). Served from the heap instead, freed
/// chunks are reused; the heap keeps at most `M_TRIM_THRESHOLD` of free memory per arena
/// before returning it. The server only: the agent's figures did not move with it.
/// Must run before any thread starts.
fn keep_log_chunks_on_the_heap() {
    #[cfg(target_env = "gnu")]
    {
        /// Above the largest log chunk and its request's headroom.
        const MMAP_THRESHOLD_BYTES: libc::c_int = 8 << 20;
        /// Free heap kept for the next chunks before it goes back to the system.
        const TRIM_THRESHOLD_BYTES: libc::c_int = 32 << 20;
        // SAFETY: called in `main` before any other thread exists; mallopt only adjusts
        // allocator tuning.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub(crate) async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Prints an error chain the way cargo does and picks the exit code.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
