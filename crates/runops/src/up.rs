//! `runops up`: the all-in-one local mode.
//!
//! One process runs the control plane on SQLite in `./.runops/` and an untagged
//! agent, makes sure a `local` bash target exists, and logs the CLI in: it adds (or
//! refreshes) its own context, `local` unless `--context NAME`, and makes it current;
//! other contexts stay as they were. The admin and agent tokens are kept in the data
//! dir (0600) so that a second `runops up` reuses the same data and the CLI stays
//! logged in. Its output is a few lines, the integrations in one, `ready` last.

use anyhow::Context;
use runops_client::Client;
use runops_proto::api::TargetCreate;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The target `runops up` creates for trying things out.
const LOCAL_TARGET: &str = "local";
/// The CLI context `runops up` adds when `--context` does not name one.
const UP_CONTEXT: &str = "local";

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    server: runops_server::ServerArgs,
    /// Tasks the local agent runs at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 30)]
    concurrency: u32,
    /// The local agent's JWK_URL enforcement and RUN_AS_USER, as for `runops agent`.
    #[command(flatten)]
    identity: runops_agent::config::IdentityArgs,
}

pub async fn run(args: UpArgs, context: Option<String>) -> anyhow::Result<()> {
    let context = context.unwrap_or_else(|| UP_CONTEXT.to_string());
    // The same probes the agent runs, for the start-up line; they run meanwhile.
    let integrations = tokio::spawn(async {
        let path = std::env::var("PATH").unwrap_or_default();
        let registry = runops_agent::runners::RunnerRegistry::with_defaults();
        let checks = runops_agent::runners::check::check_integrations(&registry, &path).await;
        runops_agent::runners::check::checks_summary(&checks)
    });
    let mut args = args;
    std::fs::create_dir_all(&args.server.data_dir).with_context(|| {
        format!(
            "cannot create the data dir {}",
            args.server.data_dir.display()
        )
    })?;
    // Absolute from here on, for the server and the agent alike: the agent hands paths
    // under it to tools that run in the task's temp dir.
    args.server.data_dir = std::fs::canonicalize(&args.server.data_dir).with_context(|| {
        format!(
            "cannot resolve the data dir {}",
            args.server.data_dir.display()
        )
    })?;
    let data_dir = args.server.data_dir.clone();

    let admin_token = match read_secret_file(&data_dir.join("admin-token"))? {
        Some(t) => t,
        None => {
            let t = std::env::var("RUNOPS_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
                .unwrap_or_else(new_user_token);
            write_secret_file(&data_dir.join("admin-token"), &t)?;
            t
        }
    };

    let server = runops_server::Server::start(args.server, Some(admin_token.clone())).await?;
    let url = server.url();
    let client = Client::new(&url, &admin_token)?;

    if let Err(e) = client.get_target(LOCAL_TARGET).await {
        if e.status() != Some(404) {
            return Err(e).context("cannot read the `local` target");
        }
        client
            .create_target(&TargetCreate {
                name: LOCAL_TARGET.into(),
                kind: "bash".into(),
                description: Some("bash on this machine, created by `runops up`".into()),
                ..Default::default()
            })
            .await
            .context("cannot create the `local` target")?;
    }

    let agent_token_file = data_dir.join("agent-token");
    let agent_token = match read_secret_file(&agent_token_file)? {
        Some(t) => t,
        None => {
            let created = client
                .create_agent_token(Some("runops up".into()), None)
                .await
                .context("cannot create the local agent's token")?;
            write_secret_file(&agent_token_file, &created.token)?;
            created.token
        }
    };

    let config = runops_cli::save_context(&context, &url, &admin_token)?;

    let (signals_tx, signals_rx) = tokio::sync::watch::channel(0u8);
    let agent_args = runops_agent::AgentArgs {
        token: agent_token,
        api_url: Some(url.clone()),
        tags: None,
        concurrency: args.concurrency,
        data_dir: data_dir.join("agent"),
        standby: false,
        check: false,
        kill_grace_secs: 10,
        health_addr: None,
        identity: args.identity,
        redact_info_types: std::env::var("REDACT_INFO_TYPES").ok(),
        redact_phone_regions: std::env::var("REDACT_PHONE_REGIONS").ok(),
    };
    let agent = tokio::spawn(runops_agent::run(
        agent_args,
        runops_agent::ShutdownSignal::from_watch(signals_rx),
    ));

    let integrations = integrations
        .await
        .unwrap_or_else(|_| "the integration check failed; runops agent --check".to_string());
    println!("runops is up at {url}");
    println!("  data:   {}", data_dir.display());
    println!("  token:  {admin_token}");
    println!("  web:    {url}/ (sign in with the token above)");
    println!(
        "  CLI:    context `{context}` is current ({}); others are kept: runops config get-contexts",
        config.display()
    );
    println!("  {integrations}");
    println!("ready: try `runops tasks create -t local -s 'echo hello'` (Ctrl-C stops)");
    let _ = std::io::stdout().flush();

    // First Ctrl-C: let running tasks finish; a second one cancels them.
    let mut agent = agent;
    let mut signals = 0u8;
    let agent_result = loop {
        tokio::select! {
            r = &mut agent => break r,
            _ = crate::wait_for_stop_signal() => {
                signals = signals.saturating_add(1);
                if signals == 1 {
                    eprintln!("stopping: waiting for running tasks (Ctrl-C again cancels them)");
                }
                let _ = signals_tx.send(signals);
            }
        }
    };
    server.shutdown().await;
    match agent_result {
        Ok(r) => r,
        Err(e) => Err(anyhow::anyhow!("the local agent crashed: {e}")),
    }
}

fn new_user_token() -> String {
    let mut secret = [0u8; runops_proto::token::TOKEN_SECRET_BYTES];
    getrandom::fill(&mut secret).expect("the operating system's random source is unavailable");
    runops_proto::token::format_user_token(&secret)
}

fn read_secret_file(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_secret_file(path: &Path, value: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{value}").with_context(|| format!("cannot write {}", path.display()))
}
