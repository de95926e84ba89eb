//! The agent's main loop: the long-poll (which is also the heartbeat), offers handed to
//! the pipeline, cancels handed to running tasks, reconnects, and the graceful stop.
//!
//! The loop never waits for a task: each accepted offer runs (and reports) in its own
//! tokio task, so polling goes on while tasks run.

use super::connect::{connect, fatal};
use super::{ServerLink, SessionPublisher};
use crate::agent::Agent;
use crate::backoff::Backoff;
use crate::failure::TaskFailure;
use crate::health::OTHER_TYPE;
use crate::limits::{DISCONNECT_TIMEOUT, FATAL_STOP_WAIT};
use crate::logs::spool::TaskResult;
use crate::logs::stream::{finish_from_memory, report_task};
use crate::pipeline::{StopHandle, run_task_unspooled};
use crate::shutdown::{ABANDON, CANCEL_TASKS, DRAIN, ShutdownSignal};
use crate::tasks::Slot;
use runops_client::ClientError;
use runops_proto::agent::{ConnectResponse, PollRequest, TaskOffer};
use runops_proto::{FailureReason, TaskStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connects, then polls until the shutdown completes or a fatal error.
pub async fn run_loop(
    agent: Arc<Agent>,
    publisher: SessionPublisher,
    mut shutdown: ShutdownSignal,
) -> anyhow::Result<()> {
    let client = agent.link.client.clone();
    let request = agent.first_connect_request().await;
    let first = {
        let mut s = shutdown.clone();
        connect(&client, &request, async move { s.reached(DRAIN).await }).await?
    };
    let Some(mut session) = first else {
        return Ok(());
    };
    announce(&agent, &session);
    agent.health.connected();
    publisher.publish(Some(&session));
    let mut backoff = Backoff::new();
    loop {
        let level = shutdown.level();
        if level >= ABANDON {
            tracing::warn!(
                "stopping without waiting for reports; unreported results stay in the spool for the next start"
            );
            break;
        }
        if level >= CANCEL_TASKS {
            agent.active.stop_all(&TaskFailure::new(
                FailureReason::Cancelled,
                "the agent was stopped while the task ran; its processes were killed",
            ));
        }
        let draining = level >= DRAIN;
        if draining {
            agent.health.draining();
        }
        // Register for the wake-ups before reading the state they announce.
        let freed = agent.slots.freed();
        let emptied = agent.active.emptied();
        tokio::pin!(freed, emptied);
        freed.as_mut().enable();
        emptied.as_mut().enable();
        if draining && agent.active.is_empty() {
            break;
        }
        let free_slots = if draining { 0 } else { agent.slots.free() };
        let req = PollRequest {
            session_id: session.session_id.clone(),
            running: agent.active.ids(),
            free_slots,
        };
        let hold = Duration::from_secs(session.poll_hold_secs);
        let answer = tokio::select! {
            r = client.agent_poll(&req, hold) => r,
            // More room than the server knows of: ask again with the new count.
            _ = &mut freed, if free_slots == 0 && !draining => continue,
            _ = &mut emptied, if draining => continue,
            _ = shutdown.changed() => continue,
            _ = publisher.expired() => {
                session = reconnect(&agent, &publisher, &mut shutdown, "a report found the session expired").await?;
                continue;
            }
        };
        match answer {
            Ok(resp) => {
                backoff.reset();
                agent.health.connected();
                for task_id in resp.cancel {
                    agent.active.stop(
                        task_id,
                        TaskFailure::new(
                            FailureReason::Cancelled,
                            "the task was cancelled on the server (killed by a user); its processes were killed",
                        ),
                    );
                }
                for offer in resp.offers {
                    take_offer(&agent, offer, draining);
                }
            }
            Err(e) if e.status() == Some(410) => {
                session =
                    reconnect(&agent, &publisher, &mut shutdown, "the session expired").await?;
            }
            Err(e) if e.is_transport() || e.status() == Some(429) => {
                agent.health.unreachable();
                let delay = backoff.next_delay();
                tracing::warn!("cannot poll the server, retrying in {delay:.1?}: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) if matches!(e.status(), Some(401 | 403)) => {
                return Err(stop_on_fatal(&agent, fatal(&client, e)).await);
            }
            Err(e) => {
                agent.health.unreachable();
                let delay = backoff.next_delay();
                tracing::warn!("the server refused a poll, retrying in {delay:.1?}: {e}");
                tokio::time::sleep(delay).await;
            }
        }
    }
    publisher.publish(None);
    agent.health.disconnected();
    match tokio::time::timeout(
        DISCONNECT_TIMEOUT,
        client.agent_disconnect(&session.session_id),
    )
    .await
    {
        Ok(Ok(())) => tracing::info!("disconnected from {}", client.base_url()),
        Ok(Err(e)) => {
            tracing::warn!("disconnect failed (the server will notice when the lease expires): {e}")
        }
        Err(_) => {
            tracing::warn!("disconnect timed out (the server will notice when the lease expires)")
        }
    }
    Ok(())
}

fn announce(agent: &Agent, session: &ConnectResponse) {
    if let Some(store) = &agent.ctx.log_store {
        store.set_org(&session.org);
    }
    let tags = agent.cfg.tags.as_deref().unwrap_or("(untagged)");
    tracing::info!(
        server = %agent.cfg.server_url,
        tags,
        org = %session.org,
        resumed = session.resumed,
        concurrency = agent.cfg.concurrency,
        "connected; ready"
    );
}

/// Connects again with the same instance id (resuming the session when the server
/// still has it). Uploads wait meanwhile.
async fn reconnect(
    agent: &Agent,
    publisher: &SessionPublisher,
    shutdown: &mut ShutdownSignal,
    why: &str,
) -> anyhow::Result<ConnectResponse> {
    tracing::info!("reconnecting: {why}");
    agent.health.reconnecting();
    publisher.publish(None);
    let mut s = shutdown.clone();
    let resp = connect(&agent.link.client, &agent.connect_request(), async move {
        s.reached(ABANDON).await
    })
    .await;
    match resp {
        Ok(Some(session)) => {
            announce(agent, &session);
            agent.health.connected();
            publisher.publish(Some(&session));
            Ok(session)
        }
        Ok(None) => Err(anyhow::anyhow!(
            "stopped while reconnecting; unreported results stay in the spool for the next start"
        )),
        Err(e) => Err(stop_on_fatal(agent, e).await),
    }
}

/// Kills running tasks before a fatal error ends the agent, so no process outlives it.
async fn stop_on_fatal(agent: &Agent, e: anyhow::Error) -> anyhow::Error {
    agent.active.stop_all(&TaskFailure::agent_error(
        "the agent stopped on a fatal error while the task ran; its processes were killed",
    ));
    let deadline = Instant::now() + agent.cfg.kill_grace + FATAL_STOP_WAIT;
    while !agent.slots.all_free() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    e
}

/// Accepts an offer if there is room (an offer beyond capacity is simply not started:
/// it goes back to the queue when its deadline passes).
fn take_offer(agent: &Arc<Agent>, offer: TaskOffer, draining: bool) {
    let task_id = offer.task_id;
    if draining {
        tracing::debug!(task_id, "stopping: offer not taken");
        return;
    }
    let Some(slot) = agent.slots.try_take() else {
        tracing::debug!(task_id, "no free slot: offer not taken");
        return;
    };
    if !agent.active.claim(task_id) {
        tracing::debug!(task_id, "offer for a task this agent already has: ignored");
        return;
    }
    tokio::spawn(handle_offer(agent.clone(), offer, slot));
}

/// `start`, then the pipeline, then the report; the slot is freed as soon as the task
/// stops running, while its report may still go on.
async fn handle_offer(agent: Arc<Agent>, offer: TaskOffer, slot: Slot) {
    let task_id = offer.task_id;
    if !start(&agent.link, &offer).await {
        agent.active.unclaim(task_id);
        return;
    }
    let stop = StopHandle::new();
    agent.active.add(task_id, Some(stop.clone()));
    let running = agent.health.task_started();
    let started = Instant::now();
    tracing::info!(task_id, r#type = %offer.kind, target = %offer.target, "task started");
    let spool = agent.spool.task(task_id);
    let mut uploader = None;
    let (result_tx, result_rx) = tokio::sync::oneshot::channel();
    // The result goes to the uploader in memory: it reports it at once and spools it
    // only if that fails (see `crate::logs::stream`).
    let result = run_task_unspooled(&agent.ctx, &offer, &stop, &spool, |progress| {
        uploader = Some(tokio::spawn(report_task(
            agent.link.clone(),
            spool.clone(),
            progress,
            Some(result_rx),
        )));
    })
    .await;
    if let Ok(r) = &result {
        let _ = result_tx.send(r.clone());
    }
    drop(slot);
    drop(running);
    agent.active.mark_reporting(task_id);
    let r = match &result {
        Ok(r) | Err(r) => r,
    };
    record_task(&agent, &offer, r, started.elapsed());
    tracing::info!(
        task_id,
        r#type = %offer.kind,
        status = %r.status,
        reason = r.failure_reason.map(|f| f.as_str()).unwrap_or(""),
        elapsed_ms = r.elapsed_ms,
        "task finished"
    );
    if let Some(handle) = uploader {
        let _ = handle.await;
    }
    if let Err(unspooled) = result {
        // The spool failed: report from memory (the log may be partial).
        finish_from_memory(&agent.link, task_id, &unspooled).await;
    }
    agent.active.remove(task_id);
}

/// Counts a task that stopped running into the health metrics, under a bounded type
/// label and its outcome (`success` or the failure reason).
fn record_task(agent: &Agent, offer: &TaskOffer, r: &TaskResult, took: Duration) {
    let kind = if agent.ctx.runners.supported().contains(&offer.kind.as_str()) {
        offer.kind.as_str()
    } else {
        OTHER_TYPE
    };
    let outcome = match (r.status, r.failure_reason) {
        (TaskStatus::Success, _) => "success",
        (_, Some(reason)) => reason.as_str(),
        (_, None) => "failure",
    };
    agent.health.task_finished(kind, outcome, took);
}

/// Accepts the offer; false when it must not run (withdrawn, or the server could not be
/// told before the offer's deadline).
async fn start(link: &ServerLink, offer: &TaskOffer) -> bool {
    let task_id = offer.task_id;
    let deadline = Instant::now() + Duration::from_millis(offer.start_deadline_ms);
    let mut backoff = Backoff::new();
    loop {
        let Some(session) = link.session_id().await else {
            return false;
        };
        match link.client.agent_start(task_id, &session).await {
            Ok(_) => return true,
            Err(e) if e.status() == Some(409) => {
                tracing::debug!(task_id, "offer withdrawn: {e}");
                return false;
            }
            Err(e) if retry_start(&e) && Instant::now() < deadline => {
                tracing::warn!(task_id, "cannot start the task yet: {e}");
                tokio::time::sleep(backoff.next_delay().min(Duration::from_secs(1))).await;
            }
            Err(e) => {
                tracing::warn!(task_id, "task not started: {e}");
                return false;
            }
        }
    }
}

fn retry_start(e: &ClientError) -> bool {
    e.is_transport()
}
