//! The commands users type: `runops login`, `whoami`, `config`, `targets`, `tasks`,
//! `reviews`, `templates`, `agents`, `users`, `tokens`, `audit`, `webhooks`.
//!
//! The `runops` binary flattens [`Command`] into its clap root and calls [`run`]. Each
//! group lives in its own module (`targets.rs`, `tasks.rs`, ...) holding its clap
//! arguments and its handlers; handlers talk to the server only through
//! `runops_client::Client`, built from the one config loader in `config.rs`: named
//! contexts (server and token) of which one is current (`runops login` adds one,
//! `runops config use-context` switches, `--context` / `RUNOPS_CONTEXT` pick one for a
//! command; `RUNOPS_URL` / `RUNOPS_TOKEN` override it). Output is an
//! aligned table or a `key: value` block by default and the API's JSON with `--json`
//! (`output.rs`). `tasks create` follows the task's log live (`follow.rs`, with a
//! spinner on a terminal from `spinner.rs`) and exits with the task's exit code;
//! `tasks repl` (`repl/`) sends each statement typed at a prompt as such a task.
//! Every failure is printed cargo-style, `error: ...` then `hint: ...`, and exits 1.
//!
//! The docs' flags use underscores (`--secret_path`); every such flag also accepts the
//! kebab-case spelling (`--secret-path`).

mod agents;
mod audit;
mod config;
mod contexts;
mod error;
mod follow;
mod login;
mod output;
mod proof;
mod repl;
mod reviews;
mod spinner;
mod targets;
mod tasks;
mod templates;
mod tokens;
mod users;
mod webhooks;
mod whoami;

pub use agents::AgentsCmd;
pub use audit::AuditCmd;
pub use config::{DEFAULT_CONTEXT, ENV_CONTEXT, config_path, save_context};
pub use contexts::ConfigCmd;
pub use login::LoginArgs;
pub use reviews::ReviewsArgs;
pub use targets::TargetsCmd;
pub use tasks::{EXIT_INTERRUPTED, EXIT_TIMEOUT, TasksCmd, task_exit_code};
pub use templates::TemplatesCmd;
pub use tokens::TokensCmd;
pub use users::UsersCmd;
pub use webhooks::WebhooksCmd;
pub use whoami::WhoamiArgs;

use error::{CliError, CliResult};
use std::process::ExitCode;

/// Exit code of every CLI error (bad input, server error, not logged in).
pub const EXIT_ERROR: u8 = 1;

/// The user commands; the binary does `#[command(flatten)] User(runops_cli::Command)`.
// Parsed once per process: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Check an API token and save it with the server URL as a context (`--context NAME`).
    Login(LoginArgs),
    /// Show the server, context, organisation, user, role, groups and token in use.
    Whoami(WhoamiArgs),
    /// The contexts (servers) the CLI knows: get-contexts, use-context, current-context.
    Config(ConfigCmd),
    /// Create, list, show, update and delete targets.
    Targets(TargetsCmd),
    /// Run scripts on targets and follow their output; approve, reject and run reviewed tasks.
    Tasks(TasksCmd),
    /// Tasks waiting for your review, oldest first (`--all`: every pending one).
    Reviews(ReviewsArgs),
    /// Vetted scripts from the server's git repository: list, show, run with parameters.
    Templates(TemplatesCmd),
    /// Live agents and agent tokens.
    Agents(AgentsCmd),
    /// Users of the organisation.
    Users(UsersCmd),
    /// API and agent tokens.
    Tokens(TokensCmd),
    /// The organisation's audit log: who did what, when, from where (admins).
    Audit(AuditCmd),
    /// Webhooks that receive review and task events (admins).
    Webhooks(WebhooksCmd),
}

/// Runs one command and returns the process exit code: 0 when it worked; for
/// `tasks create` (waiting), the task's exit code (see [`task_exit_code`]); 1 for
/// every error, after printing `error: <message>` and `hint: <hint>` on stderr.
pub async fn run(cmd: Command) -> ExitCode {
    ExitCode::from(run_code(cmd).await)
}

/// [`run`] for the context given with `--context` (None: `RUNOPS_CONTEXT`, else the
/// config file's current one).
pub async fn run_in_context(cmd: Command, context: Option<String>) -> ExitCode {
    config::set_context_flag(context);
    run(cmd).await
}

/// [`run`] with the code as a number.
pub async fn run_code(cmd: Command) -> u8 {
    let result = match cmd {
        Command::Login(a) => a.run().await,
        Command::Whoami(a) => a.run().await,
        Command::Config(c) => c.run().await,
        Command::Targets(c) => c.run().await,
        Command::Tasks(c) => c.run().await,
        Command::Reviews(a) => a.run().await,
        Command::Templates(c) => c.run().await,
        Command::Agents(c) => c.run().await,
        Command::Users(c) => c.run().await,
        Command::Tokens(c) => c.run().await,
        Command::Audit(c) => c.run().await,
        Command::Webhooks(c) => c.run().await,
    };
    exit_code_of(result)
}

/// Prints an error (unless it asks for a quiet exit) and picks the exit code.
fn exit_code_of(result: CliResult<u8>) -> u8 {
    match result {
        Ok(code) => code,
        Err(e) => match e.quiet_exit {
            Some(code) => code,
            None => {
                output::note(&e.render());
                EXIT_ERROR
            }
        },
    }
}

/// The client every command but `login` uses, from the config file and environment.
pub(crate) fn connect() -> CliResult<runops_client::Client> {
    client_for(&config::load_credentials()?)
}

/// A client for `creds`; a token that cannot be sent is reported as malformed.
pub(crate) fn client_for(creds: &config::Credentials) -> CliResult<runops_client::Client> {
    let token_in_env = std::env::var(config::ENV_TOKEN).is_ok_and(|v| !v.trim().is_empty());
    let source = match (&creds.context, token_in_env) {
        (_, true) => "in RUNOPS_TOKEN".to_string(),
        (Some(c), false) => format!("of context `{c}`"),
        (None, false) => "in the config file".to_string(),
    };
    config::check_token_shape(&creds.token, &source)?;
    runops_client::Client::new(&creds.url, &creds.token)
        .map_err(|e| CliError::from(e).or_hint(config::LOGIN_HINT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// Stands in for the binary's root, which flattens [`Command`] the same way.
    #[derive(Parser, Debug)]
    #[command(name = "runops")]
    pub(crate) struct Root {
        #[command(subcommand)]
        pub cmd: Command,
    }

    pub(crate) fn parse(args: &[&str]) -> Command {
        let mut full = vec!["runops"];
        full.extend_from_slice(args);
        match Root::try_parse_from(full) {
            Ok(r) => r.cmd,
            Err(e) => panic!("`runops {}` did not parse:\n{e}", args.join(" ")),
        }
    }

    pub(crate) fn parse_err(args: &[&str]) -> String {
        let mut full = vec!["runops"];
        full.extend_from_slice(args);
        match Root::try_parse_from(full) {
            Ok(r) => panic!("`runops {}` parsed as {r:?}", args.join(" ")),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Root::command().debug_assert();
    }

    #[test]
    fn errors_exit_1_and_quiet_exits_keep_their_code() {
        assert_eq!(exit_code_of(Ok(0)), 0);
        assert_eq!(exit_code_of(Ok(3)), 3);
        assert_eq!(exit_code_of(Err(CliError::new("boom"))), EXIT_ERROR);
        let quiet = CliError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(exit_code_of(Err(quiet)), 0);
    }
}
