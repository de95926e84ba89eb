//! `runops tasks repl -t TARGET`: a prompt (`demo-db> `) that sends each statement typed
//! as an ordinary task (audited, reviewed when the target asks for it) and streams its
//! output as `tasks create` does.
//!
//! On a terminal the prompt has line editing and a history per context and target
//! (`history.rs`); a statement spanning lines gets a continuation prompt (`   ...> `).
//! How input is cut into statements depends on the target's type (`statements.rs`).
//! Ctrl-C kills the running task (a task waiting for review is withdrawn) and the prompt
//! comes back; Ctrl-C at the prompt clears the line; Ctrl-D leaves (exit 0).
//!
//! With stdin not a terminal, statements are read from it without editing or prompts,
//! run one after the other, and the first one that fails ends the REPL with its exit code.

mod history;
mod statements;

use crate::error::{CliError, CliResult};
use crate::output;
use crate::tasks::{EXIT_INTERRUPTED, OnInterrupt};
use runops_client::Client;
use runops_proto::api::TaskCreate;
use runops_proto::limits::MAX_SCRIPT_BYTES;
use runops_proto::{ReviewMode, TargetType, TaskStatus};
use rustyline::error::ReadlineError;
use rustyline::history::MemHistory;
use statements::{Fed, StatementRule, Statements};
use std::io::IsTerminal;
use std::path::PathBuf;
use tokio::io::AsyncBufReadExt;

/// How statements end, for `--help`.
const STATEMENTS_HELP: &str = "\
How a statement ends depends on the target's type:
  postgres, postgres-csv, mysql, mysql-csv, sql-server:
    a statement runs when a line ends it with `;` (a `;` inside quotes, comments or
    parentheses does not count); until then the prompt is `...>`.
  every other type (bash, python, node, mongodb, k8s, ...):
    each line runs as a task. A line ending with `\\`, `{`, `(`, `[`, `:`, `|`, `&&`,
    `||`, `->`, `do` or `then`, or starting a here-document (`<<EOF`), opens a block:
    its lines run together as one task at the next empty line.

Every statement is an ordinary task: audited, and on a reviewed target it waits for
its approvals (the REPL says so and waits). Ctrl-C kills the running task (a second
one stops waiting for it); at the prompt it clears the line. Ctrl-D leaves.
History: ~/.config/runops/history/<context>-<target> (0600).
With stdin not a terminal the statements are read from it (no prompt); the first
failing one stops the REPL with its exit code.";

#[derive(clap::Args, Debug)]
#[command(after_long_help = STATEMENTS_HELP)]
pub struct ReplArgs {
    /// The target every statement runs on (`runops targets list`).
    #[arg(short = 't', long = "target", value_name = "TARGET")]
    pub target: String,
    /// Run as this type instead of the target's (it also decides how statements end).
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// Why you run them (kept with each task, shown to reviewers).
    #[arg(short = 'm', long, value_name = "MESSAGE")]
    pub message: Option<String>,
}

/// What every statement of this REPL is sent with.
struct Session {
    client: Client,
    target: String,
    kind: Option<String>,
    message: Option<String>,
    rule: StatementRule,
}

impl Session {
    /// Runs `script` as a task and follows it to its end; the task's exit code.
    async fn run(&self, script: String) -> CliResult<u8> {
        let req = TaskCreate {
            target: self.target.clone(),
            script,
            message: self.message.clone(),
            kind: self.kind.clone(),
        };
        let task = crate::tasks::submit(&self.client, &req).await?;
        if task.status == TaskStatus::PendingReview {
            let id = task.id;
            output::note(&format!(
                "task {id} is {} — ask a reviewer: `runops tasks approve {id}`",
                crate::reviews::waiting_line(&task)
            ));
        }
        crate::tasks::follow_to_end(&self.client, &req, task, false, OnInterrupt::Kill).await
    }
}

/// `runops tasks repl`.
pub(crate) async fn run(args: ReplArgs) -> CliResult<u8> {
    let creds = crate::config::load_credentials()?;
    let client = crate::client_for(&creds)?;
    let target = client.get_target(&args.target).await?;
    let kind_name = args.kind.as_deref().unwrap_or(&target.kind);
    let kind: TargetType = kind_name.parse().map_err(|e: runops_proto::UnknownName| {
        CliError::new(e.to_string()).with_hint("pick a type with `--type`, or leave it out")
    })?;
    let session = Session {
        client,
        target: target.name.clone(),
        kind: args.kind.clone(),
        message: args.message.clone(),
        rule: StatementRule::for_type(kind),
    };
    if !std::io::stdin().is_terminal() {
        return piped(&session).await;
    }
    let context = creds
        .context
        .clone()
        .unwrap_or_else(|| server_word(&creds.url));
    let history = crate::config::config_path()
        .ok()
        .map(|config| history::history_path(&config, &context, &target.name));
    output::note(&format!(
        "runops repl on `{}` ({kind}): {}. Ctrl-C kills a running task, Ctrl-D leaves.",
        target.name,
        session.rule.describe()
    ));
    if ReviewMode::parse(&target.review).is_some_and(|m| m != ReviewMode::None) {
        output::note(&format!(
            "tasks on `{}` wait for review before they run",
            target.name
        ));
    }
    interactive(&session, history).await
}

/// `host:port` of a server URL, naming the history of a server given by RUNOPS_URL.
fn server_word(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// The REPL on a terminal: rustyline reads lines (on a blocking thread: it waits for
/// keys), tasks run on the runtime.
async fn interactive(session: &Session, history_path: Option<PathBuf>) -> CliResult<u8> {
    let config = rustyline::Config::builder()
        .auto_add_history(false)
        .max_history_size(history::MAX_ENTRIES)
        .and_then(|c| c.history_ignore_dups(true))
        .map(|c| c.build())
        .map_err(|e| CliError::new(format!("cannot set up line editing: {e}")))?;
    let mut editor: rustyline::Editor<(), MemHistory> =
        rustyline::Editor::with_history(config, MemHistory::new())
            .map_err(|e| CliError::new(format!("cannot set up line editing: {e}")))?;
    if let Some(path) = &history_path {
        match history::load(path) {
            Ok(entries) => {
                for e in entries {
                    let _ = editor.add_history_entry(e);
                }
            }
            Err(e) => output::note(&format!(
                "warning: cannot read the history {}: {e}",
                path.display()
            )),
        }
    }
    let primary = format!("{}> ", session.target);
    let continuation = format!("{:>w$}> ", "...", w = session.target.chars().count());
    let mut statements = Statements::new(session.rule);
    let mut history_warned = false;
    loop {
        let prompt = if statements.is_empty() {
            primary.clone()
        } else {
            continuation.clone()
        };
        let (ed, line) = tokio::task::spawn_blocking(move || {
            let line = editor.readline(&prompt);
            (editor, line)
        })
        .await
        .map_err(|e| CliError::new(format!("the line editor stopped: {e}")))?;
        editor = ed;
        let line = match line {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                statements.clear();
                continue;
            }
            Err(ReadlineError::Eof) => {
                output::note("");
                return Ok(0);
            }
            Err(e) => return Err(CliError::new(format!("cannot read the terminal: {e}"))),
        };
        let script = match statements.feed(&line) {
            Fed::Statement(s) => s,
            Fed::Nothing => continue,
            Fed::More => {
                if statements.len() > MAX_SCRIPT_BYTES {
                    statements.clear();
                    output::note(&too_big().render());
                }
                continue;
            }
        };
        let _ = editor.add_history_entry(script.as_str());
        if let Some(path) = &history_path
            && let Err(e) = history::append(path, &script)
            && !history_warned
        {
            history_warned = true;
            output::note(&format!(
                "warning: cannot save the history {}: {e}",
                path.display()
            ));
        }
        if let Err(e) = session.run(script).await {
            if let Some(code) = e.quiet_exit {
                return Ok(code);
            }
            output::note(&e.render());
        }
    }
}

/// The REPL on piped input: statements from stdin, run in turn; the first failing one
/// ends it with its exit code.
async fn piped(session: &Session) -> CliResult<u8> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut statements = Statements::new(session.rule);
    loop {
        let line = tokio::select! {
            l = lines.next_line() => l.map_err(|e| {
                CliError::new(format!("cannot read the statements from stdin: {e}"))
            })?,
            _ = tokio::signal::ctrl_c() => return Ok(EXIT_INTERRUPTED),
        };
        let (script, last) = match line {
            Some(line) => match statements.feed(&line) {
                Fed::Statement(s) => (s, false),
                Fed::Nothing => continue,
                Fed::More if statements.len() > MAX_SCRIPT_BYTES => return Err(too_big()),
                Fed::More => continue,
            },
            None => match statements.finish() {
                Some(s) => (s, true),
                None => return Ok(0),
            },
        };
        let code = session.run(script).await?;
        if code != 0 || last {
            return Ok(code);
        }
    }
}

fn too_big() -> CliError {
    CliError::new(format!(
        "the statement is larger than {} MiB",
        MAX_SCRIPT_BYTES / (1024 * 1024)
    ))
    .with_hint("run a big script with `runops tasks create -t TARGET -f FILE`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_from_the_environment_names_its_history_by_host_and_port() {
        assert_eq!(server_word("http://127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(
            server_word("https://runops.example.com/base/"),
            "runops.example.com"
        );
    }
}
