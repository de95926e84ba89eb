//! The CLI commands alone, for trying them without the full binary:
//! `cargo run -p runops-cli --example runops-cli -- tasks list`.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "runops",
    about = "The runops user commands (without server, agent and up)"
)]
struct Root {
    #[command(subcommand)]
    cmd: runops_cli::Command,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    runops_cli::run(Root::parse().cmd).await
}
