//! The per-task uploader: sends a task's spooled log to the server as ordered chunks
//! (each with its offset) while it runs, then its result, and deletes the spool once the
//! server acknowledged the result. Every task has its own uploader, so a slow upload
//! never delays another task's report.
//!
//! Nothing is ever dropped on a transport error: it retries with backoff until the
//! server is back. Only an answer saying the task is over on the server (`task_ended`,
//! unknown task) ends the uploads without a successful finish.
//!
//! A task that just ended hands its result over in memory: the uploader first tries to
//! report it at once, with the log bytes the server lacks riding along when they are
//! few (one request, no `result.json` written, synced and deleted, no sync of the
//! log), and spools it only if that did not go through (syncing the log, then writing
//! `result.json`, as before). Why the spool keeps its guarantees (no result lost
//! without a trace, no task run twice):
//! - The task's spool directory and its log exist from before the task ran until the
//!   result is acknowledged, so a crash at any moment leaves the directory: the next
//!   start finds it, and without `result.json` reports the task `failure`/`agent-error`
//!   ("restarted while the task ran") — it is never re-run and never left `running`.
//! - Before this change the same crash between the task's exit and the `result.json`
//!   rename had that same outcome; reporting first only widens that window by one
//!   request, bounded by [`DIRECT_REPORT_TIMEOUT`], after which the result is spooled
//!   as before and reported by the ordinary retries.
//! - The log is synced only on that fallback: a synced log protects against losing the
//!   machine (power), not the agent process; a task reported directly has its bytes on
//!   the server already, and on a crash of the machine before that the task is reported
//!   `agent-error` as above, with whatever log survived.
//! - If the crash comes after the server took the result but before the directory
//!   was deleted, the next start reports `agent-error` for a task that already ended:
//!   the server keeps the first result and answers `task_ended`, and the spool is
//!   dropped (as for any result reported twice).
//! - An answer other than "taken" or "the task is over" (a transport error, a gap, a
//!   server that predates `log_tail` answering `log_incomplete`) spools the result and
//!   goes on exactly as before: the log is uploaded from the spool, then the result.

use super::output::LogProgress;
use super::spool::{LogReader, TaskResult, TaskSpool};
use crate::backoff::Backoff;
use crate::connection::{MIN_LOG_CHUNK_BYTES, ServerLink};
use crate::limits::{DIRECT_REPORT_TIMEOUT, UPLOAD_FLUSH_BYTES, UPLOAD_INTERVAL};
use runops_client::ClientError;
use runops_proto::agent::{LogTail, MAX_LOG_TAIL_BYTES};
use runops_proto::{FailureReason, TaskStatus};
use tokio::sync::{oneshot, watch};

/// The failure reported for a finished task whose result cannot be read back from the
/// spool (it was lost with a full or damaged disk).
pub const LOST_RESULT_MESSAGE: &str = "the agent could not read the task's result back from its spool (disk full or damaged); the log may be incomplete";

/// What the server's answer means for the uploader.
enum Answer<T> {
    Ok(T),
    /// The server's stored size differs from ours: find it out and resend from there.
    Resync,
    /// The task is over on the server (ended, deleted): stop and drop the spool.
    Ended,
    /// Try again (after a backoff unless `backoff` is false).
    Retry {
        backoff: bool,
    },
    /// The agent is stopping; the spool stays for the next start.
    Stopping,
}

/// Reports one task: uploads its log as it grows, then its result. Returns when the
/// server acknowledged the result (the spool is then deleted) or the agent stops.
/// `progress` comes from the task's [`super::output::TaskLog`]; for a task recovered
/// from the spool pass a finished progress. `fresh`: the result of a task that just
/// ran, not spooled yet (see the module documentation); `None` reads it from the spool.
pub async fn report_task(
    link: ServerLink,
    spool: TaskSpool,
    mut progress: watch::Receiver<LogProgress>,
    mut fresh: Option<oneshot::Receiver<TaskResult>>,
) {
    let task_id = spool.task_id();
    let mut backoff = Backoff::new();
    // A task that just ran has a spool made for it this run: nothing of it is uploaded
    // yet, and reading `acked` would be one more hand-off to a blocking thread per task.
    let mut acked = match fresh {
        Some(_) => 0,
        None => spool.acked().await.min(progress.borrow().written),
    };
    let mut last_upload: Option<tokio::time::Instant> = None;
    // The spool log, opened at the first upload and kept open for the next ones.
    let mut reader: Option<LogReader> = None;
    // A result the spool could not keep (disk full): reported from memory.
    let mut in_memory: Option<TaskResult> = None;
    loop {
        // Upload until everything written is acknowledged and the log is complete.
        let current = *progress.borrow_and_update();
        if current.done
            && let Some(rx) = fresh.take()
        {
            // Without a result (the task's runner went away) the spool decides, as
            // for a recovered task.
            if let Ok(result) = rx.await {
                match report_directly(&link, &spool, acked, current.written, &result).await {
                    Direct::Reported => return drop_spool(&spool).await,
                    Direct::Spool => {
                        // As a spooled task's: the log on disk first, then its result.
                        if let Err(e) = sync_log(&spool).await {
                            tracing::warn!(task_id, "cannot sync the task's spooled log: {e}");
                        }
                        if let Err(e) = spool.write_result(&result).await {
                            tracing::error!(
                                task_id,
                                "cannot store the task's result in the spool, reporting it from memory: {e}"
                            );
                            in_memory = Some(result);
                        }
                    }
                }
            }
            continue;
        }
        if acked < current.written {
            if !current.done
                && current.written - acked < UPLOAD_FLUSH_BYTES
                && let Some(last) = last_upload
            {
                // Output that keeps coming is sent at most once per interval; the
                // first bytes after a quiet spell go at once (a line is live).
                let _ = tokio::time::timeout_at(
                    last + UPLOAD_INTERVAL,
                    progress.wait_for(|p| p.done || p.written - acked >= UPLOAD_FLUSH_BYTES),
                )
                .await;
                if fresh.is_some() && progress.borrow().done {
                    // It ended meanwhile: the rest goes with the result.
                    continue;
                }
            }
            last_upload = Some(tokio::time::Instant::now());
            let written = progress.borrow().written;
            match upload_chunk(&link, &spool, &mut reader, acked, written).await {
                Answer::Ok(stored) => {
                    acked = stored.min(written);
                    if let Err(e) = spool.set_acked(acked).await {
                        tracing::warn!(task_id, "cannot record the uploaded log offset: {e}");
                    }
                    backoff.reset();
                }
                Answer::Resync => acked = stored_size(&link, task_id).await.min(written),
                Answer::Ended => return drop_spool(&spool).await,
                Answer::Retry { backoff: true } => backoff.wait().await,
                Answer::Retry { backoff: false } => {}
                Answer::Stopping => return,
            }
            continue;
        }
        if !current.done {
            if progress.changed().await.is_err() {
                // The task's log went away without completing: only a bug gets here;
                // report what the spool holds rather than nothing.
                tracing::warn!(task_id, "the task's log ended without a result");
                return;
            }
            continue;
        }
        // The whole log is acknowledged: report the result.
        let stored = match in_memory.clone() {
            Some(r) => Ok(Some(r)),
            None => spool.result().await,
        };
        let result = match stored {
            Ok(Some(r)) => r,
            Ok(None) => {
                // Never leave the task `running` on the server for good: report it
                // failed with the log the server has.
                tracing::error!(
                    task_id,
                    "the task finished but its result is missing from the spool; reporting it failed"
                );
                TaskResult {
                    status: TaskStatus::Failure,
                    exit_code: None,
                    failure_reason: Some(FailureReason::AgentError),
                    failure_message: Some(LOST_RESULT_MESSAGE.to_string()),
                    redacted: false,
                    log_size: acked,
                    elapsed_ms: 0,
                    log_location: None,
                }
            }
            Err(e) => {
                tracing::warn!(task_id, "cannot read the task's result from the spool: {e}");
                backoff.wait().await;
                continue;
            }
        };
        match finish(&link, task_id, &result).await {
            Answer::Ok(()) => return drop_spool(&spool).await,
            Answer::Resync => {
                // The server lacks part of the log: resend from its stored size.
                acked = stored_size(&link, task_id).await.min(result.log_size);
                if acked >= result.log_size {
                    backoff.wait().await;
                }
            }
            Answer::Ended => return drop_spool(&spool).await,
            Answer::Retry { backoff: true } => backoff.wait().await,
            Answer::Retry { backoff: false } => {}
            Answer::Stopping => return,
        }
    }
}

/// Syncs the spool's log file (not synced when the task ended, see `report_task`).
async fn sync_log(spool: &TaskSpool) -> std::io::Result<()> {
    tokio::fs::File::open(spool.log_path())
        .await?
        .sync_data()
        .await
}

/// What [`report_directly`] leaves to do.
enum Direct {
    /// The server took the result, or the task is over there: drop the spool.
    Reported,
    /// Not reported: spool the result and report it the ordinary way.
    Spool,
}

/// One attempt, bounded by [`DIRECT_REPORT_TIMEOUT`], to report a task that just ended
/// with the log bytes the server lacks (`acked..written` of the spool's log), when they
/// fit in a finish's `log_tail`.
async fn report_directly(
    link: &ServerLink,
    spool: &TaskSpool,
    acked: u64,
    written: u64,
    result: &TaskResult,
) -> Direct {
    let task_id = spool.task_id();
    let missing = written.saturating_sub(acked);
    if missing > MAX_LOG_TAIL_BYTES as u64 {
        return Direct::Spool;
    }
    let attempt = async {
        let tail = match missing {
            0 => None,
            n => match spool.read_chunk(acked, n as usize).await {
                Ok(bytes) if bytes.len() as u64 == n => Some(LogTail::new(acked, &bytes)),
                _ => return Direct::Spool,
            },
        };
        let Some(session) = link.session_id().await else {
            return Direct::Spool;
        };
        let mut req = result.to_finish(&session);
        req.log_tail = tail;
        match link.client.agent_finish(task_id, &req).await {
            Ok(_) => Direct::Reported,
            Err(e) => match (e.status(), e.code()) {
                (Some(409), Some("log_gap" | "log_incomplete")) => Direct::Spool,
                (Some(409) | Some(404), _) => {
                    tracing::info!(
                        task_id,
                        "the server no longer takes reports for this task ({e}); dropping its spool"
                    );
                    Direct::Reported
                }
                _ => Direct::Spool,
            },
        }
    };
    tokio::time::timeout(DIRECT_REPORT_TIMEOUT, attempt)
        .await
        .unwrap_or(Direct::Spool)
}

async fn upload_chunk(
    link: &ServerLink,
    spool: &TaskSpool,
    reader: &mut Option<LogReader>,
    offset: u64,
    written: u64,
) -> Answer<u64> {
    let task_id = spool.task_id();
    let len = (written - offset).min(link.log_chunk_bytes() as u64) as usize;
    // Held until the server answered: the chunk's buffer lives that long.
    let _buffer = link.upload_buffer(len).await;
    let open = match reader {
        Some(r) => r,
        None => match spool.log_reader().await {
            Ok(r) => reader.insert(r),
            Err(e) => {
                tracing::warn!(task_id, "cannot read the task's log from the spool: {e}");
                return Answer::Retry { backoff: true };
            }
        },
    };
    let bytes = match open.read_chunk(offset, len).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(task_id, "cannot read the task's log from the spool: {e}");
            *reader = None;
            return Answer::Retry { backoff: true };
        }
    };
    let sent = bytes.len() as u64;
    let Some(session) = link.session_id().await else {
        return Answer::Stopping;
    };
    match link
        .client
        .agent_upload_log(task_id, &session, offset, bytes)
        .await
    {
        // No progress on a non-empty chunk would make us spin: back off instead.
        Ok(ack) if ack.stored <= offset && sent > 0 => {
            tracing::warn!(
                task_id,
                offset,
                stored = ack.stored,
                "the server did not take the log chunk; retrying"
            );
            Answer::Retry { backoff: true }
        }
        Ok(ack) => Answer::Ok(ack.stored),
        Err(e) if e.status() == Some(413) && sent > MIN_LOG_CHUNK_BYTES as u64 => {
            // The server, or a proxy before it, takes less than it advertised.
            let smaller = link.shrink_log_chunk(sent as usize);
            tracing::warn!(
                task_id,
                "a {sent}-byte log chunk was refused as too large ({e}); sending at most {smaller} bytes per chunk from now on (raise the body size limit of any proxy before the server)"
            );
            Answer::Retry { backoff: false }
        }
        Err(e) => classify(link, task_id, &session, e, "log_gap").await,
    }
}

async fn finish(link: &ServerLink, task_id: i64, result: &TaskResult) -> Answer<()> {
    let Some(session) = link.session_id().await else {
        return Answer::Stopping;
    };
    match link
        .client
        .agent_finish(task_id, &result.to_finish(&session))
        .await
    {
        Ok(_) => Answer::Ok(()),
        Err(e) => classify(link, task_id, &session, e, "log_incomplete").await,
    }
}

/// Turns an error answer into what to do. `resync_code` is the 409 code that means
/// "our offsets disagree" for this call.
async fn classify<T>(
    link: &ServerLink,
    task_id: i64,
    session: &str,
    e: ClientError,
    resync_code: &str,
) -> Answer<T> {
    match (e.status(), e.code()) {
        (Some(409), Some(code)) if code == resync_code => Answer::Resync,
        (Some(409), _) | (Some(404), _) => {
            tracing::info!(
                task_id,
                "the server no longer takes reports for this task ({e}); dropping its spool"
            );
            Answer::Ended
        }
        (Some(410), _) => {
            link.session_expired(session).await;
            Answer::Retry { backoff: false }
        }
        _ => {
            if e.is_transport() {
                tracing::warn!(task_id, "cannot report to the server, will retry: {e}");
            } else {
                tracing::warn!(task_id, "the server refused a report, will retry: {e}");
            }
            Answer::Retry { backoff: true }
        }
    }
}

/// The server's stored size of the task's log, learned by uploading an empty chunk at
/// offset 0 (harmless: the server has everything before its stored size). When that
/// fails, 0: resending from the start is always correct, only slower.
async fn stored_size(link: &ServerLink, task_id: i64) -> u64 {
    let Some(session) = link.session_id().await else {
        return 0;
    };
    match link
        .client
        .agent_upload_log(task_id, &session, 0, Vec::new())
        .await
    {
        Ok(ack) => ack.stored,
        Err(e) => {
            tracing::debug!(
                task_id,
                "cannot learn the stored log size, resending from 0: {e}"
            );
            0
        }
    }
}

async fn drop_spool(spool: &TaskSpool) {
    if let Err(e) = spool.remove().await {
        tracing::warn!(
            task_id = spool.task_id(),
            "cannot delete the reported task's spool {}: {e}",
            spool.dir().display()
        );
    }
}

/// Reports a result that could not be spooled (disk full...): the finish is retried like
/// any other, from memory. If the server lacks part of the log, the result is reported
/// with the size the server has.
pub async fn finish_from_memory(link: &ServerLink, task_id: i64, result: &TaskResult) {
    let mut result = result.clone();
    let mut backoff = Backoff::new();
    loop {
        match finish(link, task_id, &result).await {
            Answer::Ok(()) | Answer::Ended | Answer::Stopping => return,
            Answer::Resync => {
                result.log_size = stored_size(link, task_id).await;
                backoff.wait().await;
            }
            Answer::Retry { backoff: true } => backoff.wait().await,
            Answer::Retry { backoff: false } => {}
        }
    }
}
