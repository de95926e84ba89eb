//! `runops tasks create|list|show|logs|kill|approve|reject|run` (and `repl`, in `repl/`).
//!
//! `tasks create` waits by default: it follows the task's log live on stdout and exits
//! with the task's exit code ([`task_exit_code`]), printing why it failed on stderr. On a
//! reviewed target it first waits for the reviews and, once approved, runs the task with
//! the creator's current credentials (`reviews.rs`).

use crate::error::{CliError, CliResult};
use crate::follow::{Followed, follow_task};
use crate::output::{self, cell, or_dash};
use crate::spinner::{self, Spinner};
use chrono::Utc;
use runops_client::Client;
use runops_proto::api::{Task, TaskCreate, TaskListQuery};
use runops_proto::limits::MAX_SCRIPT_BYTES;
use runops_proto::{FailureReason, TaskStatus};
use std::future::Future;
use std::io::IsTerminal;
use std::path::PathBuf;
use tokio::io::AsyncReadExt;

/// Exit code when the task hit its target's timeout, as `timeout(1)` does.
pub const EXIT_TIMEOUT: u8 = 124;
/// Exit code when the user pressed Ctrl-C while waiting (128 + SIGINT, as shells do).
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(clap::Args, Debug)]
pub struct TasksCmd {
    #[command(subcommand)]
    pub cmd: TasksSub,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true, display_order = 900)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum TasksSub {
    /// Run a script on a target; waits and streams its output unless --no-wait (on a
    /// reviewed target it first waits for the reviews, then runs the task).
    Create(TaskCreateArgs),
    /// List tasks, newest first.
    #[command(visible_alias = "ls")]
    List(TaskListArgs),
    /// Show one task.
    Show(TaskId),
    /// Print a task's output (`-f` follows it until the task ends).
    Logs(TaskLogsArgs),
    /// Ask the agent to stop a task (a task waiting for review or to be run is withdrawn).
    Kill(TaskId),
    /// Approve a task waiting for your review (`runops reviews` lists them).
    Approve(TaskApproveArgs),
    /// Reject a task waiting for your review, saying why; it ends `rejected`.
    Reject(TaskRejectArgs),
    /// Run your approved task (with your current credentials); waits and streams its
    /// output unless --no-wait.
    Run(TaskRunArgs),
    /// A prompt on a target: each statement typed runs as a task, its output streams back.
    ///
    /// SQL types: a statement ends with `;`; other types: one line, or a block ended by
    /// an empty line. Ctrl-C kills the running task, Ctrl-D leaves.
    Repl(crate::repl::ReplArgs),
}

#[derive(clap::Args, Debug)]
pub struct TaskApproveArgs {
    /// The task id.
    #[arg(value_name = "ID")]
    pub id: i64,
    /// A note kept with your approval.
    #[arg(short = 'c', long, value_name = "TEXT")]
    pub comment: Option<String>,
    /// Admins: approve whatever the review rule says (marked as forced everywhere).
    #[arg(long, requires = "reason")]
    pub force: bool,
    /// Why you force the approval (required with --force).
    #[arg(long, value_name = "TEXT", requires = "force")]
    pub reason: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct TaskRejectArgs {
    /// The task id.
    #[arg(value_name = "ID")]
    pub id: i64,
    /// Why you reject it (required; the creator sees it).
    #[arg(short = 'c', long, value_name = "TEXT")]
    pub comment: String,
}

#[derive(clap::Args, Debug)]
pub struct TaskRunArgs {
    /// The task id.
    #[arg(value_name = "ID")]
    pub id: i64,
    /// Print the task id and return at once instead of following the task.
    #[arg(long = "no-wait", visible_alias = "no_wait")]
    pub no_wait: bool,
}

#[derive(clap::Args, Debug)]
pub struct TaskCreateArgs {
    /// The target to run on (`runops targets list`).
    #[arg(short = 't', long = "target", value_name = "TARGET")]
    pub target: String,
    /// The script, inline.
    #[arg(
        short = 's',
        long = "script",
        value_name = "SCRIPT",
        conflicts_with = "file"
    )]
    pub script: Option<String>,
    /// Read the script from a file (`-` for stdin). Without -s and -f the script is
    /// read from stdin when it is not a terminal.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Run as this type instead of the target's.
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// Why you run it (kept with the task, shown to reviewers).
    #[arg(short = 'm', long, value_name = "MESSAGE")]
    pub message: Option<String>,
    /// Print the task id and return at once instead of following the task.
    #[arg(long = "no-wait", visible_alias = "no_wait")]
    pub no_wait: bool,
}

/// Tasks `tasks list` shows when --limit is not given (the server's default too).
pub const DEFAULT_LIST_LIMIT: u32 = 100;
/// The most tasks the server returns for one list request.
pub const MAX_LIST_LIMIT: u32 = 1000;

#[derive(clap::Args, Debug)]
pub struct TaskListArgs {
    /// Only tasks in this status (created, pending-review, ready, running, success, failure, ...).
    #[arg(long, value_name = "STATUS")]
    pub status: Option<TaskStatus>,
    /// Only tasks of this target.
    #[arg(long, short = 't', value_name = "TARGET")]
    pub target: Option<String>,
    /// At most this many tasks, newest first (default 100, at most 1000).
    #[arg(long, short = 'n', value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_LIST_LIMIT as i64))]
    pub limit: Option<u32>,
    /// Only tasks older than task ID: the next page after a cut list.
    #[arg(long, value_name = "ID")]
    pub before: Option<i64>,
    /// Only your own tasks.
    #[arg(long, conflicts_with = "user")]
    pub mine: bool,
    /// Only tasks created by this user (e-mail).
    #[arg(long, value_name = "EMAIL")]
    pub user: Option<String>,
    /// Only tasks created in this last span of time: `30m`, `1h`, `2d`, `1w` (or since an
    /// RFC 3339 time such as `2026-01-31T08:00:00Z`).
    #[arg(long, value_name = "AGE", value_parser = parse_since)]
    pub since: Option<chrono::DateTime<Utc>>,
}

/// `--since`: an age (`90s`, `30m`, `1h`, `2d`, `1w`) back from now, or an RFC 3339 time.
fn parse_since(text: &str) -> Result<chrono::DateTime<Utc>, String> {
    let t = text.trim();
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(at.with_timezone(&Utc));
    }
    let bad = || {
        format!(
            "`{t}` is not an age or a time: write e.g. `30m`, `1h`, `2d`, `1w` or `2026-01-31T08:00:00Z`"
        )
    };
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = t.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let secs_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let span = n
        .checked_mul(secs_per)
        .and_then(chrono::Duration::try_seconds)
        .ok_or_else(bad)?;
    Utc::now().checked_sub_signed(span).ok_or_else(bad)
}

#[derive(clap::Args, Debug)]
pub struct TaskId {
    /// The task id.
    #[arg(value_name = "ID")]
    pub id: i64,
}

#[derive(clap::Args, Debug)]
pub struct TaskLogsArgs {
    /// The task id.
    #[arg(value_name = "ID")]
    pub id: i64,
    /// Keep printing new output until the task ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// The exit code `tasks create` ends with: 0 for success; for a failure, 124 when it
/// timed out, else the script's own exit code when it has one in 1..=255, else 1
/// (the task never ran, was killed, lost its agent, was rejected, ...).
pub fn task_exit_code(task: &Task) -> u8 {
    match task.status {
        TaskStatus::Success => 0,
        TaskStatus::Failure => match (task.failure_reason, task.exit_code) {
            (Some(FailureReason::Timeout), _) => EXIT_TIMEOUT,
            (_, Some(code)) if (1..=255).contains(&code) => code as u8,
            _ => 1,
        },
        _ => 1,
    }
}

/// True when the followed log ends with the agent's note of `task`'s failure message
/// (`runops: <message>`), which then needs no repeating.
fn failure_shown_in_log(task: &Task, tail: &[u8]) -> bool {
    /// Enough of the message to recognise it, even if the server shortened it.
    const RECOGNISED_CHARS: usize = 200;
    let Some(message) = task.failure_message.as_deref().map(str::trim) else {
        return false;
    };
    if message.is_empty() {
        return false;
    }
    let head: String = message.chars().take(RECOGNISED_CHARS).collect();
    String::from_utf8_lossy(tail).contains(&format!("runops: {head}"))
}

/// Why a final task did not succeed, as a CLI error (None when it succeeded). With
/// `message_shown`, the failure message is left out: the log just printed it.
pub(crate) fn task_failure(task: &Task, message_shown: bool) -> Option<CliError> {
    let id = task.id;
    match task.status {
        TaskStatus::Success => None,
        TaskStatus::Rejected => Some(match task.failure_message.as_deref() {
            Some(m) if !m.trim().is_empty() => {
                CliError::new(format!("task {id} was {}", output::printable(m.trim())))
            }
            _ => CliError::new(format!("task {id} was rejected in review")),
        }),
        TaskStatus::Failure => {
            let reason = task
                .failure_reason
                .map(|r| r.as_str())
                .unwrap_or("unknown reason");
            let detail = match (&task.failure_message, task.exit_code) {
                (Some(m), _) if !m.trim().is_empty() => output::printable(m.trim()),
                (_, Some(c)) => format!("exit code {c}"),
                _ => "no details were reported".to_string(),
            };
            let err = if message_shown {
                CliError::new(format!("task {id} failed ({reason})"))
            } else {
                CliError::new(format!("task {id} failed ({reason}): {detail}"))
            };
            let target = &task.target;
            Some(match task.failure_reason {
                Some(FailureReason::Timeout) => err.with_hint(format!(
                    "raise the target's timeout with `runops targets update --name {target} --timeout 2h`"
                )),
                Some(FailureReason::Secrets | FailureReason::InvalidConfig) => err.with_hint(
                    format!("check the target's configuration with `runops targets show {target}`"),
                ),
                Some(FailureReason::AgentLost) => err.with_hint(
                    "the agent stopped answering while the task ran; it was not run again. \
                     check the agent, then create the task again",
                ),
                _ => err,
            })
        }
        other => Some(CliError::new(format!(
            "task {id} is still {other}; follow it with `runops tasks logs {id} -f`"
        ))),
    }
}

/// Reads the script from `-s`, `-f FILE` (`-` = stdin) or a piped stdin.
async fn read_script(args: &TaskCreateArgs) -> CliResult<String> {
    let too_big = |from: &str| {
        CliError::new(format!(
            "the script from {from} is larger than {} MiB",
            MAX_SCRIPT_BYTES / (1024 * 1024)
        ))
        .with_hint("run a smaller script, or ship the big data to the target another way")
    };
    if let Some(s) = &args.script {
        if s.len() > MAX_SCRIPT_BYTES {
            return Err(too_big("-s"));
        }
        return Ok(s.clone());
    }
    let (bytes, from) = match &args.file {
        Some(p) if p.as_os_str() != "-" => {
            let meta = tokio::fs::metadata(p).await.map_err(|e| {
                CliError::new(format!("cannot read the script file {}: {e}", p.display()))
            })?;
            if meta.len() > MAX_SCRIPT_BYTES as u64 {
                return Err(too_big(&p.display().to_string()));
            }
            let bytes = tokio::fs::read(p).await.map_err(|e| {
                CliError::new(format!("cannot read the script file {}: {e}", p.display()))
            })?;
            (bytes, p.display().to_string())
        }
        explicit_stdin => {
            if explicit_stdin.is_none() && std::io::stdin().is_terminal() {
                return Err(CliError::new("no script given").with_hint(
                    "pass it with `-s 'SCRIPT'`, read it from a file with `-f FILE`, \
                     or pipe it in: `echo 'select 1' | runops tasks create -t TARGET`",
                ));
            }
            let mut bytes = Vec::new();
            tokio::io::stdin()
                .take(MAX_SCRIPT_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| CliError::new(format!("cannot read the script from stdin: {e}")))?;
            if bytes.len() > MAX_SCRIPT_BYTES {
                return Err(too_big("stdin"));
            }
            (bytes, "stdin".to_string())
        }
    };
    String::from_utf8(bytes).map_err(|e| {
        CliError::new(format!(
            "the script from {from} is not UTF-8 text (invalid byte at position {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Runs `fut` unless the user presses Ctrl-C first; then says how to get back to the
/// task (which keeps running) and exits 130.
async fn until_interrupted(id: i64, fut: impl Future<Output = CliResult<u8>>) -> CliResult<u8> {
    tokio::select! {
        r = fut => r,
        _ = tokio::signal::ctrl_c() => {
            spinner::clear_line();
            output::note(&format!(
                "\ntask {id} keeps running; follow it with `runops tasks logs {id} -f` \
                 or stop it with `runops tasks kill {id}`"
            ));
            Ok(EXIT_INTERRUPTED)
        }
    }
}

impl TasksCmd {
    pub async fn run(self) -> CliResult<u8> {
        let json = self.json;
        match self.cmd {
            TasksSub::Create(args) => create(args, json).await,
            TasksSub::List(args) => list(args, json).await,
            TasksSub::Show(TaskId { id }) => {
                let client = crate::connect()?;
                let task = client.get_task(id).await?;
                if json {
                    output::print_json(&task)?;
                } else {
                    output::print(&task_details(&task, Utc::now()))?;
                }
                Ok(0)
            }
            TasksSub::Logs(args) => logs(args, json).await,
            TasksSub::Approve(a) => {
                crate::reviews::approve(a.id, a.comment, a.force, a.reason, json).await
            }
            TasksSub::Reject(a) => crate::reviews::reject(a.id, a.comment, json).await,
            TasksSub::Run(a) => run(a, json).await,
            TasksSub::Repl(_) if json => Err(CliError::new(
                "`tasks repl` prints each task's output as it comes and has no --json",
            )
            .with_hint("for JSON, run each statement with `runops tasks create --json`")),
            TasksSub::Repl(a) => crate::repl::run(a).await,
            TasksSub::Kill(TaskId { id }) => {
                let client = crate::connect()?;
                let task = client.kill_task(id).await?;
                if json {
                    output::print_json(&task)?;
                } else {
                    output::print(&format!("task {id}: kill requested\n"))?;
                }
                Ok(0)
            }
        }
    }
}

/// `tasks list`: the newest tasks matching the filters; when more match than shown,
/// says so on stderr with the command for the next page.
async fn list(args: TaskListArgs, json: bool) -> CliResult<u8> {
    let client = crate::connect()?;
    let user = if args.mine {
        Some(client.me().await?.email)
    } else {
        args.user.clone()
    };
    let limit = args.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    // One more than shown tells whether the list was cut.
    let q = TaskListQuery {
        status: args.status,
        target: args.target.clone(),
        limit: Some((limit + 1).min(MAX_LIST_LIMIT)),
        before: args.before,
        user,
        since: args.since,
    };
    let mut tasks = client.list_tasks(&q).await?;
    let cut =
        tasks.len() > limit as usize || (limit == MAX_LIST_LIMIT && tasks.len() == limit as usize);
    tasks.truncate(limit as usize);
    if json {
        output::print_json(&tasks)?;
    } else if tasks.is_empty() {
        output::note("no tasks found");
    } else {
        output::print(&tasks_table(&tasks, Utc::now()))?;
    }
    if cut && let Some(oldest) = tasks.last() {
        output::note(&cut_note(&args, limit, oldest.id));
    }
    Ok(0)
}

/// `showing the newest 100 tasks; older ones: runops tasks list --before 57 ...`.
fn cut_note(args: &TaskListArgs, limit: u32, oldest_id: i64) -> String {
    let mut filters = String::new();
    if let Some(s) = args.status {
        filters.push_str(&format!(" --status {s}"));
    }
    if let Some(t) = &args.target {
        filters.push_str(&format!(" -t {}", cell(t)));
    }
    if args.mine {
        filters.push_str(" --mine");
    }
    if let Some(u) = &args.user {
        filters.push_str(&format!(" --user {}", cell(u)));
    }
    if let Some(s) = args.since {
        filters.push_str(&format!(
            " --since {}",
            s.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    let more = if limit < MAX_LIST_LIMIT {
        format!(
            ", or more at once with --limit {}",
            (limit * 5).min(MAX_LIST_LIMIT)
        )
    } else {
        String::new()
    };
    format!(
        "showing the newest {limit} matching tasks; see older ones with \
         `runops tasks list --before {oldest_id}{filters}`{more}"
    )
}

async fn create(args: TaskCreateArgs, json: bool) -> CliResult<u8> {
    let script = read_script(&args).await?;
    let client = crate::connect()?;
    let req = TaskCreate {
        target: args.target.clone(),
        script,
        message: args.message.clone(),
        kind: args.kind.clone(),
    };
    let task = client.create_task(&req).await?;
    follow_created(&client, &req, task, args.no_wait, json).await
}

/// What `tasks create` does once the server made the task from `req` (a typed script,
/// or a template's rendered one): proves it when the token is key-bound, then returns
/// its id (`no_wait`) or waits for its reviews and follows it to its end.
pub(crate) async fn follow_created(
    client: &Client,
    req: &TaskCreate,
    task: Task,
    no_wait: bool,
    json: bool,
) -> CliResult<u8> {
    let task = proved(client, req, task).await?;
    let id = task.id;
    if no_wait {
        if json {
            output::print_json(&task)?;
        } else {
            output::print(&format!("{id}\n"))?;
        }
        if task.status == TaskStatus::PendingReview && !json {
            output::note(&format!(
                "task {id} is {}; once approved, run it with `runops tasks run {id}`",
                crate::reviews::waiting_line(&task)
            ));
        }
        return Ok(0);
    }
    follow_to_end(client, req, task, json, OnInterrupt::Detach).await
}

/// Creates the task `req` asks for, proved (see [`proved`]).
pub(crate) async fn submit(client: &Client, req: &TaskCreate) -> CliResult<Task> {
    let task = client.create_task(req).await?;
    proved(client, req, task).await
}

/// `task` as created from `req`; with a JWT bound to a key, first sends the proof the task
/// waits for before any agent gets it.
async fn proved(client: &Client, req: &TaskCreate, task: Task) -> CliResult<Task> {
    if task.status == TaskStatus::Created {
        crate::proof::prove_created_task(client, req, task).await
    } else {
        Ok(task)
    }
}

/// What Ctrl-C does while a created task is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnInterrupt {
    /// Stop waiting and say how to get back to the task, which goes on (`tasks create`;
    /// exits 130).
    Detach,
    /// Kill the task as `runops tasks kill` does (a task waiting for review is
    /// withdrawn), then follow it to its end; a second Ctrl-C stops waiting (the REPL).
    Kill,
}

/// Follows the task `req` created to its end: waits for its reviews (then runs it with
/// our current credentials), streams its log to stdout (with `json`, prints only the
/// final task) and says why it failed. Returns the exit code of [`task_exit_code`], or
/// 130 when the user stopped waiting.
pub(crate) async fn follow_to_end(
    client: &Client,
    req: &TaskCreate,
    task: Task,
    json: bool,
    on_interrupt: OnInterrupt,
) -> CliResult<u8> {
    let id = task.id;
    if on_interrupt == OnInterrupt::Kill {
        let run = async {
            let task = reviewed_and_run(client, req, task).await?;
            wait_for(client, task, json).await
        };
        return kill_on_interrupt(client, id, run).await;
    }
    let task = if task.status == TaskStatus::PendingReview {
        tokio::select! {
            r = reviewed_and_run(client, req, task) => r?,
            _ = tokio::signal::ctrl_c() => {
                spinner::clear_line();
                output::note(&format!(
                    "\ntask {id} still waits for review; once approved, run it with \
                     `runops tasks run {id}`, or withdraw it with `runops tasks kill {id}`"
                ));
                return Ok(EXIT_INTERRUPTED);
            }
        }
    } else {
        task
    };
    until_interrupted(id, wait_for(client, task, json)).await
}

/// `task` once it no longer waits for review: when approved, run (with our current
/// credentials); otherwise as the review left it (rejected, expired, withdrawn).
async fn reviewed_and_run(client: &Client, req: &TaskCreate, task: Task) -> CliResult<Task> {
    if task.status != TaskStatus::PendingReview {
        return Ok(task);
    }
    let reviewed = crate::reviews::wait_for_review(client, task).await?;
    if reviewed.status == TaskStatus::Approved {
        crate::reviews::run_approved(client, &reviewed, Some(req)).await
    } else {
        Ok(reviewed)
    }
}

/// Runs `fut` (which follows task `id` to its end); the first Ctrl-C kills the task and
/// `fut` goes on to show how it ended, a second one stops waiting (exit 130).
async fn kill_on_interrupt(
    client: &Client,
    id: i64,
    fut: impl Future<Output = CliResult<u8>>,
) -> CliResult<u8> {
    let mut fut = std::pin::pin!(fut);
    let mut kill_sent = false;
    loop {
        tokio::select! {
            r = &mut fut => return r,
            _ = tokio::signal::ctrl_c() => {
                spinner::clear_line();
                if kill_sent {
                    output::note(&format!(
                        "\nstopped waiting for task {id}; see how it ended with `runops tasks show {id}`"
                    ));
                    return Ok(EXIT_INTERRUPTED);
                }
                kill_sent = true;
                match client.kill_task(id).await {
                    Ok(_) => output::note(&format!(
                        "\ninterrupted: killing task {id} (Ctrl-C again stops waiting)"
                    )),
                    // Already ended: following shows how.
                    Err(e) => output::note(&format!(
                        "\ninterrupted: cannot kill task {id}: {}",
                        CliError::from(e).message
                    )),
                }
            }
        }
    }
}

/// `runops tasks run ID`: runs an approved task of ours, then follows it like `create`.
async fn run(args: TaskRunArgs, json: bool) -> CliResult<u8> {
    let client = crate::connect()?;
    let task = client.get_task(args.id).await?;
    let task = crate::reviews::run_approved(&client, &task, None).await?;
    if args.no_wait {
        if json {
            output::print_json(&task)?;
        } else {
            output::print(&format!("{}\n", task.id))?;
        }
        return Ok(0);
    }
    until_interrupted(task.id, wait_for(&client, task.clone(), json)).await
}

/// Follows a created task to its end: its log on stdout (or, with `--json`, only the
/// final task as JSON), then the exit code.
async fn wait_for(client: &Client, task: Task, json: bool) -> CliResult<u8> {
    let spinner = Spinner::start(client, &task);
    let followed: Followed = if json {
        follow_task(client, task.id, &mut tokio::io::sink(), spinner).await?
    } else {
        follow_task(client, task.id, &mut tokio::io::stdout(), spinner).await?
    };
    let task = followed.task;
    if json {
        output::print_json(&task)?;
        return Ok(task_exit_code(&task));
    }
    if let Some(err) = task_failure(&task, failure_shown_in_log(&task, &followed.tail)) {
        if !followed.ended_with_newline && std::io::stdout().is_terminal() {
            // Keep the error off the end of the task's last line.
            output::note("");
        }
        output::note(&err.render());
    }
    Ok(task_exit_code(&task))
}

async fn logs(args: TaskLogsArgs, json: bool) -> CliResult<u8> {
    let client = crate::connect()?;
    let id = args.id;
    if json {
        // The whole log as one JSON document, after the task ended when following.
        let (task, bytes) = if args.follow {
            let mut buf = Vec::new();
            let f = follow_task(&client, id, &mut buf, None).await?;
            (f.task, buf)
        } else {
            let task = client.get_task(id).await?;
            (task, client.task_logs(id, 0).await?.to_vec())
        };
        output::print_json(&serde_json::json!({
            "id": task.id,
            "status": task.status,
            "log": String::from_utf8_lossy(&bytes),
        }))?;
        return Ok(0);
    }
    if args.follow {
        let fut = async {
            // Says why the task waits (a spinner on a terminal, a line otherwise).
            let spinner = match client.get_task(id).await {
                Ok(task) => Spinner::start(&client, &task),
                Err(_) => None,
            };
            follow_task(&client, id, &mut tokio::io::stdout(), spinner).await?;
            Ok(0)
        };
        return until_interrupted(id, fut).await;
    }
    let bytes = client.task_logs(id, 0).await?;
    output::print_bytes(&bytes)?;
    Ok(0)
}

/// `failure (timeout)`, `success`, `running`.
fn status_cell(t: &Task) -> String {
    match t.failure_reason {
        Some(r) if t.status == TaskStatus::Failure => format!("failure ({r})"),
        _ => t.status.to_string(),
    }
}

/// The script's first line; `…` marks a script with more lines.
fn script_cell(script: &str) -> String {
    let mut lines = script.trim().lines();
    let first = cell(lines.next().unwrap_or(""));
    if lines.next().is_some() && !first.ends_with('…') {
        format!("{first}…")
    } else {
        first
    }
}

pub(crate) fn tasks_table(tasks: &[Task], now: chrono::DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                cell(&t.target),
                cell(&t.kind),
                status_cell(t),
                t.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                cell(&t.user),
                output::ago(t.created_at, now),
                t.elapsed_ms
                    .map(output::elapsed)
                    .unwrap_or_else(|| "-".into()),
                script_cell(&t.script),
            ]
        })
        .collect();
    output::table(
        &[
            "ID", "TARGET", "TYPE", "STATUS", "EXIT", "USER", "CREATED", "ELAPSED", "SCRIPT",
        ],
        &rows,
    )
}

pub(crate) fn task_details(t: &Task, now: chrono::DateTime<Utc>) -> String {
    let when = |d: Option<chrono::DateTime<Utc>>| {
        d.map(|d| output::timestamp(d, now))
            .unwrap_or_else(|| "-".into())
    };
    let log = match t.log_location.as_deref() {
        Some(loc) if loc != "server" => format!("{} bytes at {}", t.log_size, cell(loc)),
        _ => format!("{} bytes (`runops tasks logs {}`)", t.log_size, t.id),
    };
    let mut pairs = vec![
        ("id", t.id.to_string()),
        ("target", cell(&t.target)),
        ("type", cell(&t.kind)),
        ("status", t.status.to_string()),
    ];
    if let Some(r) = t.failure_reason {
        pairs.push(("failure reason", r.to_string()));
    }
    if let Some(m) = t.failure_message.as_deref().filter(|m| !m.is_empty()) {
        pairs.push(("failure message", output::printable(m)));
    }
    pairs.extend([
        (
            "exit code",
            t.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        ("user", cell(&t.user)),
        ("agent", or_dash(t.agent.as_deref())),
        ("message", or_dash(t.message.as_deref())),
        (
            "redacted",
            if t.redacted { "yes" } else { "no" }.to_string(),
        ),
        ("log", log),
        ("created", when(Some(t.created_at))),
        ("started", when(t.started_at)),
        ("finished", when(t.finished_at)),
        (
            "elapsed",
            t.elapsed_ms
                .map(output::elapsed)
                .unwrap_or_else(|| "-".into()),
        ),
    ]);
    if let Some(tpl) = &t.template {
        pairs.push((
            "template",
            format!("{} at {}", cell(&tpl.name), cell(&tpl.commit)),
        ));
        let params: Vec<String> = tpl
            .params
            .iter()
            .map(|(k, v)| format!("{}={}", cell(k), cell(v)))
            .collect();
        pairs.push((
            "parameters",
            if params.is_empty() {
                "-".into()
            } else {
                params.join(" ")
            },
        ));
    }
    let mut out = output::key_values(&pairs);
    if let Some(r) = &t.review {
        out.push_str(&crate::reviews::review_details(r, now));
    }
    out.push_str("script:\n");
    for line in output::printable(&t.script).lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Command;
    use crate::tests::{parse, parse_err};
    use chrono::TimeZone;

    fn tasks(args: &[&str]) -> TasksCmd {
        let mut full = vec!["tasks"];
        full.extend_from_slice(args);
        match parse(&full) {
            Command::Tasks(t) => t,
            other => panic!("not tasks: {other:?}"),
        }
    }

    #[test]
    fn docs_task_line_parses() {
        // runops tasks create -t mysql-target-prod -s 'select 1'
        let TasksSub::Create(c) =
            tasks(&["create", "-t", "mysql-target-prod", "-s", "select 1"]).cmd
        else {
            panic!("not create")
        };
        assert_eq!(c.target, "mysql-target-prod");
        assert_eq!(c.script.as_deref(), Some("select 1"));
        assert!(!c.no_wait);
    }

    #[test]
    fn create_accepts_file_type_message_and_no_wait() {
        let t = tasks(&[
            "create",
            "-t",
            "db",
            "-f",
            "q.sql",
            "--type",
            "mysql-csv",
            "--message",
            "why",
            "--no-wait",
            "--json",
        ]);
        assert!(t.json);
        let TasksSub::Create(c) = t.cmd else {
            panic!("not create")
        };
        assert_eq!(c.file, Some(PathBuf::from("q.sql")));
        assert_eq!(c.kind.as_deref(), Some("mysql-csv"));
        assert_eq!(c.message.as_deref(), Some("why"));
        assert!(c.no_wait);
        let TasksSub::Create(c) = tasks(&["create", "--target", "db", "--no_wait"]).cmd else {
            panic!("not create")
        };
        assert!(c.no_wait && c.script.is_none() && c.file.is_none());
        assert!(
            parse_err(&["tasks", "create", "-t", "db", "-s", "x", "-f", "y"])
                .contains("cannot be used")
        );
        assert!(parse_err(&["tasks", "create", "-s", "x"]).contains("--target"));
    }

    #[test]
    fn approve_reject_and_run_parse() {
        let TasksSub::Approve(a) = tasks(&["approve", "7", "--comment", "ok"]).cmd else {
            panic!("not approve")
        };
        assert_eq!(
            (a.id, a.comment.as_deref(), a.force),
            (7, Some("ok"), false)
        );
        let TasksSub::Approve(a) = tasks(&["approve", "7", "--force", "--reason", "outage"]).cmd
        else {
            panic!("not approve")
        };
        assert!(a.force && a.reason.as_deref() == Some("outage"));
        assert!(parse_err(&["tasks", "approve", "7", "--force"]).contains("--reason"));
        assert!(parse_err(&["tasks", "reject", "7"]).contains("--comment"));
        let TasksSub::Reject(r) = tasks(&["reject", "7", "-c", "no"]).cmd else {
            panic!("not reject")
        };
        assert_eq!(r.comment, "no");
        let TasksSub::Run(r) = tasks(&["run", "7", "--no-wait"]).cmd else {
            panic!("not run")
        };
        assert!(r.no_wait && r.id == 7);
    }

    #[test]
    fn list_show_logs_kill_parse() {
        let TasksSub::List(l) = tasks(&[
            "list",
            "--status",
            "pending-review",
            "--target",
            "db",
            "--limit",
            "5",
        ])
        .cmd
        else {
            panic!("not list")
        };
        assert_eq!(l.status, Some(TaskStatus::PendingReview));
        assert_eq!(l.target.as_deref(), Some("db"));
        assert_eq!(l.limit, Some(5));
        assert!(parse_err(&["tasks", "list", "--status", "done"]).contains("unknown task status"));
        assert!(matches!(
            tasks(&["show", "12"]).cmd,
            TasksSub::Show(TaskId { id: 12 })
        ));
        assert!(matches!(
            tasks(&["logs", "12"]).cmd,
            TasksSub::Logs(TaskLogsArgs {
                id: 12,
                follow: false
            })
        ));
        assert!(matches!(
            tasks(&["logs", "12", "-f"]).cmd,
            TasksSub::Logs(TaskLogsArgs {
                id: 12,
                follow: true
            })
        ));
        assert!(matches!(
            tasks(&["logs", "--follow", "12"]).cmd,
            TasksSub::Logs(TaskLogsArgs {
                id: 12,
                follow: true
            })
        ));
        assert!(matches!(
            tasks(&["kill", "3"]).cmd,
            TasksSub::Kill(TaskId { id: 3 })
        ));
        assert!(parse_err(&["tasks", "kill", "abc"]).contains("invalid"));
    }

    pub(crate) fn sample_task(status: TaskStatus) -> Task {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        Task {
            id: 42,
            target: "demo".into(),
            kind: "bash".into(),
            script: "echo hi\necho there".into(),
            message: None,
            status,
            exit_code: None,
            failure_reason: None,
            failure_message: None,
            user: "ana@example.com".into(),
            agent: Some("host-1".into()),
            redacted: true,
            log_size: 9,
            log_location: Some("server".into()),
            task_logs: "/v1/tasks/42/logs".into(),
            created_at: t0,
            started_at: Some(t0),
            finished_at: Some(t0 + chrono::Duration::seconds(2)),
            elapsed_ms: Some(2000),
            review: None,
            template: None,
        }
    }

    fn failed(reason: FailureReason, code: Option<i32>) -> Task {
        let mut t = sample_task(TaskStatus::Failure);
        t.failure_reason = Some(reason);
        t.exit_code = code;
        t
    }

    #[test]
    fn exit_codes_follow_the_task() {
        assert_eq!(task_exit_code(&sample_task(TaskStatus::Success)), 0);
        assert_eq!(task_exit_code(&failed(FailureReason::ExitCode, Some(3))), 3);
        assert_eq!(
            task_exit_code(&failed(FailureReason::ExitCode, Some(255))),
            255
        );
        // Codes a process cannot exit with still mean failure.
        assert_eq!(
            task_exit_code(&failed(FailureReason::ExitCode, Some(300))),
            1
        );
        assert_eq!(
            task_exit_code(&failed(FailureReason::ExitCode, Some(-9))),
            1
        );
        assert_eq!(task_exit_code(&failed(FailureReason::ExitCode, Some(0))), 1);
        assert_eq!(
            task_exit_code(&failed(FailureReason::Timeout, Some(143))),
            EXIT_TIMEOUT
        );
        assert_eq!(task_exit_code(&failed(FailureReason::Secrets, None)), 1);
        assert_eq!(task_exit_code(&failed(FailureReason::AgentLost, None)), 1);
        assert_eq!(task_exit_code(&sample_task(TaskStatus::Rejected)), 1);
        assert_eq!(task_exit_code(&sample_task(TaskStatus::Running)), 1);
    }

    #[test]
    fn failures_are_explained_with_reason_and_message() {
        assert!(task_failure(&sample_task(TaskStatus::Success), false).is_none());
        let mut t = failed(FailureReason::Secrets, None);
        t.failure_message = Some("environment variable `MY_TARGET` is not set".into());
        let e = task_failure(&t, false).unwrap();
        assert_eq!(
            e.message,
            "task 42 failed (secrets): environment variable `MY_TARGET` is not set"
        );
        assert!(e.hint.unwrap().contains("runops targets show demo"));
        let e = task_failure(&failed(FailureReason::ExitCode, Some(2)), false).unwrap();
        assert_eq!(e.message, "task 42 failed (exit-code): exit code 2");
        let e = task_failure(&failed(FailureReason::Timeout, None), false).unwrap();
        assert!(e.hint.unwrap().contains("--timeout"));
        let e = task_failure(&sample_task(TaskStatus::Rejected), false).unwrap();
        assert_eq!(e.message, "task 42 was rejected in review");
    }

    #[test]
    fn a_failure_message_already_in_the_log_is_not_repeated() {
        let mut t = failed(FailureReason::Secrets, None);
        t.failure_message = Some("environment variable `X` is not set".into());
        let tail = b"some output\nrunops: environment variable `X` is not set\n";
        assert!(failure_shown_in_log(&t, tail));
        assert!(!failure_shown_in_log(&t, b"some output\n"));
        let e = task_failure(&t, true).unwrap();
        assert_eq!(e.message, "task 42 failed (secrets)");
        assert!(e.hint.unwrap().contains("runops targets show demo"));
    }

    #[test]
    fn list_filters_parse_and_a_cut_list_says_how_to_see_more() {
        let TasksSub::List(l) = tasks(&["list", "--mine", "--since", "1h", "--before", "57"]).cmd
        else {
            panic!("not list")
        };
        assert!(l.mine && l.before == Some(57));
        let age = Utc::now() - l.since.unwrap();
        assert!((3590..=3610).contains(&age.num_seconds()), "{age}");
        assert!(parse_err(&["tasks", "list", "--since", "soon"]).contains("not an age or a time"));
        assert!(
            parse_err(&["tasks", "list", "--mine", "--user", "a@b"]).contains("cannot be used")
        );
        assert!(parse_err(&["tasks", "list", "--limit", "0"]).contains("--limit"));
        let e = parse_err(&["tasks", "list", "--status", "failed"]);
        assert!(e.contains("did you mean `failure`?"), "{e}");
        let TasksSub::List(l) = tasks(&["list", "--status", "success", "-t", "db"]).cmd else {
            panic!("not list")
        };
        assert_eq!(
            cut_note(&l, 100, 57),
            "showing the newest 100 matching tasks; see older ones with \
             `runops tasks list --before 57 --status success -t db`, or more at once with --limit 500"
        );
    }

    #[test]
    fn tasks_table_has_one_row_per_task() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 5, 0).unwrap();
        let mut f = failed(FailureReason::ExitCode, Some(1));
        f.id = 43;
        let out = tasks_table(&[sample_task(TaskStatus::Success), f], now);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID  TARGET  TYPE  STATUS"));
        assert!(lines[1].starts_with("42  demo    bash  success "));
        assert!(
            lines[1].ends_with("5m ago   2.0s     echo hi…"),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains("failure (exit-code)  1 "), "{}", lines[2]);
    }

    #[test]
    fn task_details_show_the_whole_script() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 5, 0).unwrap();
        let d = task_details(&failed(FailureReason::ExitCode, Some(1)), now);
        assert!(d.contains("failure reason: exit-code\n"), "{d}");
        assert!(d.ends_with("script:\n  echo hi\n  echo there\n"), "{d}");
        assert!(
            d.contains("created:        2026-01-01T00:00:00Z (5m ago)"),
            "{d}"
        );
    }

    #[tokio::test]
    async fn script_comes_from_flag_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("q.sql");
        std::fs::write(&file, "select 2;\n").unwrap();
        let mut args = TaskCreateArgs {
            target: "db".into(),
            script: Some("select 1".into()),
            file: None,
            kind: None,
            message: None,
            no_wait: false,
        };
        assert_eq!(read_script(&args).await.unwrap(), "select 1");
        args.script = None;
        args.file = Some(file);
        assert_eq!(read_script(&args).await.unwrap(), "select 2;\n");
        args.file = Some(dir.path().join("missing.sql"));
        let e = read_script(&args).await.unwrap_err();
        assert!(
            e.message.starts_with("cannot read the script file"),
            "{}",
            e.message
        );
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; MAX_SCRIPT_BYTES + 1]).unwrap();
        args.file = Some(big);
        assert!(
            read_script(&args)
                .await
                .unwrap_err()
                .message
                .contains("larger than")
        );
    }
}
