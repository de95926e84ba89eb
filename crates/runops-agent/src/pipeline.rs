//! One task end to end, from an accepted offer to a stored result:
//! verify the creator's identity token (`JWK_URL`) → resolve the runner → fetch secrets →
//! apply `secret_mapping` → check required keys → render `{{KEY}}` → metadata env → run
//! (output through the redactor into the spool) → result. Every failure on the way
//! becomes a result with a `failure_reason` and a one-line redacted message, also written
//! into the task's log; no path ends without a result. The pipeline knows the [`Runner`]
//! and [`SecretsProvider`] traits only.
//!
//! [`SecretsProvider`]: crate::secrets::SecretsProvider

use crate::env::{BaseEnv, ChildEnv, task_metadata};
use crate::failure::TaskFailure;
use crate::jwt::TaskAuthenticator;
use crate::logs::output::{LogProgress, TaskLog};
use crate::logs::s3::S3LogStore;
use crate::logs::spool::{TaskResult, TaskSpool, create_private_dir};
use crate::render::render_placeholders;
use crate::runners::{RunContext, RunOutcome, Runner, RunnerRegistry};
use crate::secrets::{Secrets, SecretsRegistry, mapping::apply_mapping};
use runops_proto::agent::TaskOffer;
use runops_proto::api::DEFAULT_TIMEOUT_SECS;
use runops_proto::{FailureReason, TaskStatus};
use runops_redact::{InfoType, RedactConfig, Redactor, key_is_redacted};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What every task of this agent shares.
#[derive(Clone)]
pub struct PipelineContext {
    pub runners: RunnerRegistry,
    pub secrets: SecretsRegistry,
    pub base_env: BaseEnv,
    /// Parent of the per-task private temp dirs.
    pub tmp_root: PathBuf,
    pub kill_grace: Duration,
    /// The user's bucket for full task logs (`LOGS_S3_BUCKET`), when configured.
    pub log_store: Option<Arc<S3LogStore>>,
    /// `JWK_URL` enforcement: when set, a task runs only with its creator's valid JWT.
    pub authenticator: Option<Arc<TaskAuthenticator>>,
    /// `REDACT_INFO_TYPES`: the personal data redacted on `redact=all` targets;
    /// `None`: every type.
    pub redact_info_types: Option<Vec<InfoType>>,
    /// `REDACT_PHONE_REGIONS`: the regions whose national phone formats are read;
    /// `None`: the default regions.
    pub redact_phone_regions: Option<Vec<String>>,
}

/// Asks a task to stop, remembering why (the first reason wins).
#[derive(Clone, Default)]
pub struct StopHandle {
    token: CancellationToken,
    reason: Arc<OnceLock<TaskFailure>>,
}

impl StopHandle {
    pub fn new() -> StopHandle {
        StopHandle::default()
    }

    pub fn stop(&self, why: TaskFailure) {
        let _ = self.reason.set(why);
        self.token.cancel();
    }

    pub fn reason(&self) -> Option<&TaskFailure> {
        self.reason.get()
    }
}

/// What is known before running, once every check passed.
struct Prepared {
    runner: Arc<dyn Runner>,
    secrets: Secrets,
    script: String,
    metadata: Vec<(String, String)>,
}

/// Runs `offer` to a stored result in `spool`. `on_log` receives the log's progress as
/// soon as the log exists (the agent starts the task's uploader with it). Errors only
/// when the spool itself cannot be written; the result is then returned in the error so
/// the caller can still report it.
pub async fn run_task(
    ctx: &PipelineContext,
    offer: &TaskOffer,
    stop: &StopHandle,
    spool: &TaskSpool,
    on_log: impl FnOnce(watch::Receiver<LogProgress>),
) -> Result<TaskResult, TaskResult> {
    run(ctx, offer, stop, spool, on_log, Keep::Spool).await
}

/// [`run_task`], except that the result is handed back without being written to the
/// spool (the log is): the caller (the agent, through the task's uploader) reports it
/// at once and spools it only if that report did not go through. See
/// `crate::logs::stream::report_task` for why that keeps every spool guarantee.
/// Errors only when the spool's log cannot be created.
pub async fn run_task_unspooled(
    ctx: &PipelineContext,
    offer: &TaskOffer,
    stop: &StopHandle,
    spool: &TaskSpool,
    on_log: impl FnOnce(watch::Receiver<LogProgress>),
) -> Result<TaskResult, TaskResult> {
    run(ctx, offer, stop, spool, on_log, Keep::Memory).await
}

/// Where [`run`] leaves the result.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// `result.json` in the task's spool.
    Spool,
    /// Only the returned value.
    Memory,
}

async fn run(
    ctx: &PipelineContext,
    offer: &TaskOffer,
    stop: &StopHandle,
    spool: &TaskSpool,
    on_log: impl FnOnce(watch::Receiver<LogProgress>),
    keep: Keep,
) -> Result<TaskResult, TaskResult> {
    let started = Instant::now();
    // The secrets fetched are known to the redactor even when a later step fails.
    let mut fetched = Secrets::new();
    let prepared = prepare(ctx, offer, &mut fetched).await;
    let redactor = task_redactor(ctx, offer, fetched);
    let file = match spool.create().await {
        Ok(f) => f,
        Err(e) => {
            let message = format!(
                "cannot create the task's spool in {}: {e}",
                spool.dir().display()
            );
            let message = redactor.redact_str(&message);
            return Err(failed(TaskFailure::agent_error(message), None, 0, started));
        }
    };
    let log = TaskLog::new(file, &redactor);
    on_log(log.subscribe());

    let outcome = match prepared {
        Ok(p) => run_prepared(ctx, offer, stop, &log, spool, p).await,
        Err(f) => Err(f),
    };
    // The task's output is complete: what the redactor held back goes before any note.
    log.end_output().await;
    // Give back what the secrets fetch took (a Vault lease), whatever the outcome.
    ctx.secrets.release(offer).await;
    let mut failure = match outcome {
        Ok(run) => match stop.reason() {
            // Killed for a reason of ours: that reason, not the signal's exit code.
            Some(why) => Some((why.clone(), Some(run.exit_code))),
            None if run.exit_code == 0 => None,
            None => Some((
                TaskFailure::new(
                    FailureReason::ExitCode,
                    format!("the task exited with code {}", run.exit_code),
                ),
                Some(run.exit_code),
            )),
        },
        Err(f) => Some((f, None)),
    };
    if let Some((f, _)) = &mut failure {
        f.message = redactor.redact_str(&f.message);
        // The exit code speaks for itself in the output; everything else gets a line.
        if f.reason != FailureReason::ExitCode {
            log.note(&f.message).await;
        }
    }
    let elapsed = started.elapsed();
    let log_saved = log.finish_with(keep == Keep::Spool).await;
    let log_size = match log_saved.clone() {
        Ok(n) => n,
        Err(e) => {
            failure = Some((
                TaskFailure::agent_error(e),
                failure.and_then(|(_, code)| code),
            ));
            log.written().await
        }
    };
    let (log_size, log_location) = match &ctx.log_store {
        // A log that could not be saved stays with the server only.
        Some(store) if log_saved.is_ok() => {
            store_log_in_s3(store, offer, spool, &log, &redactor, log_size).await
        }
        _ => (log_size, None),
    };
    let mut result = match failure {
        None => TaskResult {
            status: TaskStatus::Success,
            exit_code: Some(0),
            failure_reason: None,
            failure_message: None,
            redacted: false,
            log_size,
            elapsed_ms: 0,
            log_location: None,
        },
        Some((f, code)) => failed(f, code, log_size, started),
    };
    result.elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    result.log_location = log_location;
    // Every byte of the log, and the failure message, went through the task's redactor
    // (secret values always, personal data unless `redact=none`); nothing reaches the
    // spool, the server or S3 any other way. Results made without it say false.
    result.redacted = true;
    if keep == Keep::Spool
        && let Err(e) = spool.write_result(&result).await
    {
        tracing::error!(
            task_id = offer.task_id,
            "cannot store the task's result in the spool: {e}"
        );
        return Err(result);
    }
    log.mark_done();
    Ok(result)
}

/// Uploads the finished log to the user's bucket: `(log size, Some(s3://...))` on
/// success. On failure the log says so (the note makes it longer, hence the size) and
/// keeps going to the server; the S3 upload is retried in the background.
async fn store_log_in_s3(
    store: &S3LogStore,
    offer: &TaskOffer,
    spool: &TaskSpool,
    log: &TaskLog,
    redactor: &Redactor,
    log_size: u64,
) -> (u64, Option<String>) {
    let path = spool.log_path();
    match store.upload_task_log(offer.task_id, &path).await {
        Ok(location) => (log_size, Some(location)),
        Err(e) => {
            let location = store.location(&store.key(offer.task_id));
            tracing::warn!(
                task_id = offer.task_id,
                "cannot store the log in {location}: {e}"
            );
            let kept = store.keep_for_retry(offer.task_id, &path).await;
            let note = match kept {
                Ok(()) => format!(
                    "the log could not be stored in {location} ({e}); the agent keeps it and retries in the background"
                ),
                Err(k) => format!(
                    "the log could not be stored in {location} ({e}) and cannot be kept for a retry ({k})"
                ),
            };
            let size = log
                .append_note_after_finish(&redactor.redact_str(&note))
                .await;
            (size, None)
        }
    }
}

fn failed(f: TaskFailure, exit_code: Option<i32>, log_size: u64, started: Instant) -> TaskResult {
    TaskResult {
        status: TaskStatus::Failure,
        exit_code,
        failure_reason: Some(f.reason),
        failure_message: Some(f.message),
        redacted: false,
        log_size,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        log_location: None,
    }
}

/// The task's redactor: the values of its secrets always (also with `redact=none`)
/// except connection settings (`PG_HOST`, `PG_USER`...; the target's `redact_keys` and
/// `public_keys` adjust the rule, see `runops_redact::key_is_redacted`), and personal
/// data unless the target says `redact=none`, limited to `REDACT_INFO_TYPES` when set.
/// The creator's identity token counts as a secret: it never reaches a log.
fn task_redactor(ctx: &PipelineContext, offer: &TaskOffer, secrets: Secrets) -> Redactor {
    let mut secrets: Vec<(String, String)> = secrets
        .into_iter()
        .filter(|(k, _)| key_is_redacted(k, &offer.redact_keys, &offer.public_keys))
        .collect();
    if let Some(jwt) = &offer.user_jwt {
        secrets.push(("USER_JWT".to_string(), jwt.clone()));
    }
    Redactor::new(&RedactConfig {
        secrets,
        // Anything but an explicit `none` (a name this agent does not know too) also
        // removes personal data: redacting more is the safe side.
        personal_data: !matches!(
            offer.redact.parse::<runops_proto::RedactMode>(),
            Ok(runops_proto::RedactMode::None)
        ),
        info_types: ctx.redact_info_types.clone(),
        phone_regions: ctx.redact_phone_regions.clone(),
    })
}

/// Steps 1-6: everything that can fail before anything runs. `fetched` receives the
/// secrets as soon as they are known (mapped once the mapping applied).
async fn prepare(
    ctx: &PipelineContext,
    offer: &TaskOffer,
    fetched: &mut Secrets,
) -> Result<Prepared, TaskFailure> {
    // First of all, before any secret is fetched: who asked for this task?
    if let Some(auth) = &ctx.authenticator {
        auth.check(offer).await?;
    }
    let runner = ctx
        .runners
        .resolve_task(&offer.kind, offer.custom_command.as_deref())?;
    let mut secrets = ctx.secrets.fetch(offer).await?;
    *fetched = secrets.clone();
    apply_mapping(&mut secrets, offer.secret_mapping.as_deref())?;
    *fetched = secrets.clone();
    let missing: Vec<&str> = runner
        .required_keys()
        .iter()
        .copied()
        .filter(|k| secrets.get(*k).is_none_or(|v| v.is_empty()))
        .collect();
    if !missing.is_empty() {
        return Err(TaskFailure::secrets(format!(
            "the secret of target `{}` lacks the keys that type `{}` needs: {} (add them to the secret, or map existing keys with secret_mapping)",
            offer.target,
            offer.kind,
            missing.join(", ")
        )));
    }
    let metadata = task_metadata(offer);
    let script = render_placeholders(&offer.script, |key| {
        secrets.get(key).map(String::as_str).or_else(|| {
            metadata
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        })
    });
    Ok(Prepared {
        runner,
        secrets,
        script,
        metadata,
    })
}

/// Step 7: a private temp dir, the child environment, the run under the timeout.
async fn run_prepared(
    ctx: &PipelineContext,
    offer: &TaskOffer,
    stop: &StopHandle,
    log: &TaskLog,
    spool: &TaskSpool,
    p: Prepared,
) -> Result<RunOutcome, TaskFailure> {
    if let Some(why) = stop.reason() {
        return Err(why.clone());
    }
    let tmp_dir = ctx
        .tmp_root
        .join(format!("task-{}-{}", offer.task_id, random_suffix()));
    let create = {
        let dir = tmp_dir.clone();
        tokio::task::spawn_blocking(move || create_private_dir(&dir)).await
    };
    if let Err(e) = create.map_err(std::io::Error::other).and_then(|r| r) {
        return Err(TaskFailure::agent_error(format!(
            "cannot create the task's temp dir {}: {e}",
            tmp_dir.display()
        )));
    }
    let env = ChildEnv::build(&ctx.base_env, &tmp_dir, &p.secrets, &p.metadata);
    for key in &env.skipped {
        log.note(&format!(
            "secret key `{key}` cannot be an environment variable name; it is not exported (it still works as a {{{{placeholder}}}})"
        ))
        .await;
    }
    let timeout_secs = if offer.timeout_secs == 0 {
        DEFAULT_TIMEOUT_SECS
    } else {
        offer.timeout_secs
    };
    let groups_path = spool.groups_path();
    let run = p.runner.run(RunContext {
        task_id: offer.task_id,
        kind: &offer.kind,
        script: &p.script,
        custom_command: offer.custom_command.as_deref(),
        secrets: &p.secrets,
        env: &env,
        tmp_dir: &tmp_dir,
        group_record: &groups_path,
        output: log,
        stop: &stop.token,
        kill_grace: ctx.kill_grace,
    });
    let deadline = tokio::time::sleep(Duration::from_secs(timeout_secs));
    tokio::pin!(run, deadline);
    let mut timed_out = false;
    let outcome = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = &mut deadline, if !timed_out => {
                timed_out = true;
                stop.stop(TaskFailure::new(
                    FailureReason::Timeout,
                    format!("the task ran longer than its timeout of {timeout_secs} s; its processes were killed"),
                ));
            }
        }
    };
    if let Err(e) = tokio::fs::remove_dir_all(&tmp_dir).await {
        tracing::warn!(
            task_id = offer.task_id,
            "cannot remove the task's temp dir {}: {e}",
            tmp_dir.display()
        );
    }
    outcome
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 6];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
