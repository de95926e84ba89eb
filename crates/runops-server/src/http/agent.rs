//! The agent protocol: connect → poll → start → logs → finish → disconnect.
//! See `runops_proto::agent` for the contract; this file is the server's side of it.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use runops_proto::TaskStatus;
use runops_proto::agent::{
    ConnectRequest, ConnectResponse, DisconnectRequest, FinishRequest, FinishResponse, LogAck,
    LogChunkQuery, MAX_LOG_TAIL_BYTES, PollRequest, PollResponse, StartRequest, StartResponse,
};
use runops_proto::limits::{MAX_LOG_CHUNK_BYTES, MAX_MESSAGE_LEN, MAX_POLL_HOLD_SECS};
use std::time::Duration;
use tokio::time::Instant;

use super::AppState;
use crate::audit::{self, Actor};
use crate::auth::{AgentAuth, random_id};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, LogChunkBody, parse_task_id};
use crate::store::{
    AppendOutcome, ClaimedTask, EndedSession, FinishOutcome, NewSession, SessionEnd, SessionRecord,
    StartOutcome, StoreError,
};
use crate::{effects, lifecycle, now_ms, validate};

/// A standby connect is held at most this long, then answered `409 tags_taken` so
/// the agent asks again (keeps the request under proxies' idle timeouts).
const STANDBY_HOLD: Duration = Duration::from_secs(MAX_POLL_HOLD_SECS);

/// A standby connect re-checks the live agent this often (its lease may expire
/// without anybody waking us).
const STANDBY_RECHECK: Duration = Duration::from_secs(1);

/// Most offers one poll answer carries, whatever the agent's free slots; the rest
/// come with the next poll.
const MAX_OFFERS_PER_POLL: u32 = 100;

/// Longest hostname, version or instance id an agent may report.
const MAX_AGENT_FIELD_LEN: usize = 256;

/// A poll answered this long after it began touches its session again (a write), so
/// that the lease counts from the answer of a held poll.
const RETOUCH_AFTER: Duration = Duration::from_secs(1);

/// Most task ids a poll may list as running.
const MAX_RUNNING_LISTED: usize = 10_000;

fn session_expired(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "session_expired",
        format!("agent session {id} has ended"),
    )
    .hint("connect again")
}

/// The session `id` if the calling token opened it (live or ended), else `404`.
///
/// Session ids are not secrets (`runops agents list` shows them to every user), so
/// holding one proves nothing: a session is acted on only with the token that opened
/// it. A call with another token (even of the same org) is refused and audited.
async fn owned_session(
    st: &AppState,
    auth: &AgentAuth,
    id: &str,
    call: &str,
) -> ApiResult<SessionRecord> {
    let not_found = || {
        ApiError::not_found(format!("agent session {} not found for this agent token", shorten(id)))
            .hint("connect again with `runops agent`; a session is usable only with the token that opened it")
    };
    match st.store.get_session(id).await? {
        Some(s) if s.org_id == auth.token.org_id && s.token_id == auth.token.id => Ok(s),
        Some(s) if s.org_id == auth.token.org_id => {
            tracing::warn!(session = %s.id, token_id = auth.token.id, owner_token_id = s.token_id, call, "agent call refused: the session belongs to another token");
            let detail = serde_json::json!({
                "call": call,
                "token_id": auth.token.id,
                "owner_token_id": s.token_id,
            });
            audit::record(
                st,
                s.org_id,
                &Actor::agent(auth),
                "agent.session-refused",
                "agent-session",
                &s.id,
                detail,
            )
            .await;
            Err(not_found())
        }
        _ => Err(not_found()),
    }
}

/// The caller's own live session, or `404` (another token's) / `410 session_expired`.
async fn live_session(
    st: &AppState,
    auth: &AgentAuth,
    id: &str,
    call: &str,
) -> ApiResult<SessionRecord> {
    let s = owned_session(st, auth, id, call).await?;
    if s.ended_at_ms.is_some() {
        return Err(session_expired(id));
    }
    Ok(s)
}

/// A client-sent id as it may appear in a message (never more than 200 characters).
fn shorten(id: &str) -> String {
    const MAX_ECHO: usize = 64;
    match id.char_indices().nth(MAX_ECHO) {
        Some((cut, _)) => format!("{}…", &id[..cut]),
        None => id.to_string(),
    }
}

/// Ends a session and tells everyone who waits on it; `by` goes to the audit log.
pub async fn end_session(
    st: &AppState,
    id: &str,
    how: &SessionEnd,
    by: &Actor,
) -> Result<(), StoreError> {
    let ended = st.store.end_session(id, how, now_ms()).await?;
    if !ended.ended_now {
        return Ok(());
    }
    let action = match how {
        SessionEnd::Disconnected => "agent.disconnect",
        SessionEnd::Lost { .. } => "agent.lost",
        SessionEnd::TokenRevoked => "agent.token-revoked",
        SessionEnd::Restarted => "agent.restarted",
    };
    let detail = serde_json::json!({
        "hostname": ended.hostname,
        "tags": ended.tags,
        "failed_tasks": ended.failed,
        "requeued_tasks": ended.requeued,
    });
    audit::record(st, ended.org_id, by, action, "agent-session", id, detail).await;
    tracing::info!(
        session = %id,
        hostname = %ended.hostname,
        tags = ended.tags.as_deref().unwrap_or(""),
        reason = how.as_str(),
        "agent session ended"
    );
    for task in &ended.failed {
        tracing::info!(
            task,
            status = "failure",
            reason = "agent-lost",
            "task state changed"
        );
    }
    for task in &ended.requeued {
        tracing::info!(task, status = "ready", "offer returned to the queue");
    }
    apply_session_rules(st, by, &ended).await;
    st.hub.forget_session(id);
    st.hub.wake_tags_freed(ended.org_id, ended.tags.as_deref());
    Ok(())
}

fn check_field(name: &str, value: &str, required: bool) -> ApiResult<()> {
    if required && value.trim().is_empty() {
        return Err(ApiError::bad_request(format!("{name} is empty")));
    }
    if value.len() > MAX_AGENT_FIELD_LEN {
        return Err(ApiError::bad_request(format!(
            "{name} is longer than {MAX_AGENT_FIELD_LEN} bytes"
        )));
    }
    Ok(())
}

fn tags_taken(st: &AppState, live: &SessionRecord) -> ApiError {
    let since = chrono::DateTime::from_timestamp_millis(live.connected_at_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let which = match &live.tags {
        Some(t) => format!("with tags `{t}`"),
        None => "without tags".to_string(),
    };
    ApiError::conflict(
        "tags_taken",
        format!(
            "another agent is already connected {which} (hostname {}, since {since})",
            live.hostname
        ),
    )
    .hint(format!(
        "give this agent other TAGS, stop the other agent (if it died, its lease of {} s must expire first), or start this one with `--standby` to take over when the other goes away",
        st.settings.lease_secs
    ))
}

#[utoipa::path(
    post,
    path = "/v1/agent/connect",
    operation_id = "agent_connect",
    tag = "agent protocol",
    summary = "Open (or resume) an agent session",
    request_body = ConnectRequest,
    responses((status = 200, description = "The session", body = ConnectResponse)),
)]
pub async fn connect(
    State(st): State<AppState>,
    auth: AgentAuth,
    ApiJson(req): ApiJson<ConnectRequest>,
) -> ApiResult<Json<ConnectResponse>> {
    check_field("hostname", &req.hostname, true)?;
    check_field("version", &req.version, false)?;
    check_field("instance_id", &req.instance_id, true)?;
    if req.concurrency == 0 {
        return Err(ApiError::bad_request("concurrency must be at least 1"));
    }
    let tags = validate::normalize_tags(req.tags.clone())?;
    if tags != auth.token.tags {
        return Err(token_tags_mismatch(&auth, tags.as_deref()));
    }
    let org_id = auth.token.org_id;
    let give_up = Instant::now() + STANDBY_HOLD;
    let freed = st.hub.freed_notify(org_id, tags.as_deref());
    loop {
        let wait = freed.notified();
        tokio::pin!(wait);
        wait.as_mut().enable();
        let now = now_ms();
        let live = st.store.find_live_session(org_id, tags.as_deref()).await?;
        let blocker = match live {
            // The same agent (its instance id, token, and, after a restart, host) takes
            // its session back; anybody else waits for the lease.
            Some(s)
                if s.instance_id == req.instance_id
                    && s.token_id == auth.token.id
                    && (!req.restarted || s.hostname == req.hostname) =>
            {
                st.store
                    .resume_session(
                        &s.id,
                        &req.hostname,
                        &req.version,
                        req.concurrency,
                        req.verifies_identity,
                        now,
                    )
                    .await?;
                if req.restarted {
                    recover_restarted(&st, &s, &req.spooled, &Actor::agent(&auth)).await?;
                }
                tracing::info!(session = %s.id, hostname = %req.hostname, tags = tags.as_deref().unwrap_or(""), "agent resumed its session");
                let detail = connect_detail(&req, tags.as_deref(), auth.token.id, true);
                audit::record(
                    &st,
                    org_id,
                    &Actor::agent(&auth),
                    "agent.connect",
                    "agent-session",
                    &s.id,
                    detail,
                )
                .await;
                return Ok(Json(connected(&st, s.id, &s.org, true)));
            }
            Some(s) => {
                let cutoff = now - st.settings.lease_ms();
                if s.last_seen_ms < cutoff && !st.hub.session_seen_since(&s.id, cutoff) {
                    // Its lease expired and the reaper has not got to it yet.
                    end_session(
                        &st,
                        &s.id,
                        &SessionEnd::Lost {
                            lease_secs: st.settings.lease_secs,
                        },
                        &Actor::system(),
                    )
                    .await?;
                    continue;
                }
                Some(s)
            }
            None => {
                let new = NewSession {
                    id: random_id().map_err(|e| {
                        tracing::error!(error = %e, "cannot make a session id");
                        ApiError::internal()
                    })?,
                    org_id,
                    token_id: auth.token.id,
                    tags: tags.clone(),
                    hostname: req.hostname.clone(),
                    version: req.version.clone(),
                    instance_id: req.instance_id.clone(),
                    concurrency: req.concurrency,
                    verifies_identity: req.verifies_identity,
                };
                match st.store.create_session(&new, now).await {
                    Ok(s) => {
                        tracing::info!(session = %s.id, hostname = %s.hostname, tags = tags.as_deref().unwrap_or(""), version = %s.version, "agent connected");
                        let detail = connect_detail(&req, tags.as_deref(), auth.token.id, false);
                        audit::record(
                            &st,
                            org_id,
                            &Actor::agent(&auth),
                            "agent.connect",
                            "agent-session",
                            &s.id,
                            detail,
                        )
                        .await;
                        return Ok(Json(connected(&st, s.id, &s.org, false)));
                    }
                    // Another connect won the race for these tags: look again.
                    Err(StoreError::Conflict(_)) => None,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if let Some(s) = &blocker
            && (!req.standby || Instant::now() >= give_up || st.hub.is_stopping())
        {
            return Err(tags_taken(&st, s));
        }
        if blocker.is_some() {
            let stopping = st.hub.shutdown.notified();
            tokio::pin!(stopping);
            stopping.as_mut().enable();
            if st.hub.is_stopping() {
                continue;
            }
            tokio::select! {
                _ = &mut wait => {}
                _ = &mut stopping => {}
                _ = tokio::time::sleep(STANDBY_RECHECK) => {}
                _ = tokio::time::sleep_until(give_up) => {}
            }
        }
    }
}

/// A restarted agent process took its session back: what the old process ran and
/// did not spool is over (never re-run), what it was offered goes to the queue again.
async fn recover_restarted(
    st: &AppState,
    session: &SessionRecord,
    spooled: &[i64],
    by: &Actor,
) -> Result<(), StoreError> {
    if spooled.len() > MAX_RUNNING_LISTED {
        // Keep everything: the spool reports each of them, and the lease rules stand.
        return Ok(());
    }
    let r = st
        .store
        .recover_restarted_session(&session.id, spooled, now_ms())
        .await?;
    for task in &r.failed {
        tracing::info!(task, status = "failure", reason = "agent-lost", hostname = %session.hostname, "task state changed: its agent restarted");
    }
    for task in &r.requeued {
        tracing::info!(
            task,
            status = "ready",
            "offer returned to the queue: its agent restarted"
        );
    }
    apply_session_rules(st, by, &r).await;
    Ok(())
}

/// The lifecycle's effects on the tasks of an ended (or recovered) session.
async fn apply_session_rules(st: &AppState, by: &Actor, ended: &EndedSession) {
    let (org_id, tags) = (ended.org_id, ended.tags.as_deref());
    let running = &lifecycle::SESSION_ENDED_RUNNING;
    effects::apply_rule(st, by, running, org_id, tags, &ended.failed).await;
    let offered = &lifecycle::SESSION_ENDED_OFFERED;
    effects::apply_rule(st, by, offered, org_id, tags, &ended.requeued).await;
}

/// `403`: the agent's `TAGS` are not the tag set its token was made for.
fn token_tags_mismatch(auth: &AgentAuth, tags: Option<&str>) -> ApiError {
    let describe = |t: Option<&str>| match t {
        Some(t) => format!("TAGS=`{t}`"),
        None => "no TAGS".to_string(),
    };
    let create = match tags {
        Some(t) => format!("runops agents create-token --tags '{t}'"),
        None => "runops agents create-token".to_string(),
    };
    let token_for = match auth.token.tags.as_deref() {
        Some(t) => format!("agents with TAGS=`{t}`"),
        None => "untagged agents".to_string(),
    };
    ApiError::forbidden(format!(
        "this agent token (id {}) is for {token_for}; this agent has {}",
        auth.token.id,
        describe(tags)
    ))
    .hint(format!(
        "start the agent with the TAGS its token was made for, or ask an admin for a token for these tags (`{create}`)"
    ))
}

/// What the audit log keeps of a connect: who the agent says it is, and its token.
fn connect_detail(
    req: &ConnectRequest,
    tags: Option<&str>,
    token_id: i64,
    resumed: bool,
) -> serde_json::Value {
    serde_json::json!({
        "hostname": req.hostname,
        "version": req.version,
        "tags": tags,
        "token_id": token_id,
        "resumed": resumed,
    })
}

fn connected(st: &AppState, session_id: String, org: &str, resumed: bool) -> ConnectResponse {
    ConnectResponse {
        session_id,
        org: org.to_string(),
        lease_secs: st.settings.lease_secs,
        poll_hold_secs: st.settings.poll_hold.as_secs_f64().ceil() as u64,
        resumed,
        max_log_chunk_bytes: Some(MAX_LOG_CHUNK_BYTES as u64),
    }
}

#[utoipa::path(
    post,
    path = "/v1/agent/poll",
    operation_id = "agent_poll",
    tag = "agent protocol",
    summary = "Heartbeat; held open until there are offers or cancels",
    request_body = PollRequest,
    responses((status = 200, description = "Offers and cancels", body = PollResponse)),
)]
pub async fn poll(
    State(st): State<AppState>,
    auth: AgentAuth,
    ApiJson(req): ApiJson<PollRequest>,
) -> ApiResult<Json<PollResponse>> {
    if req.running.len() > MAX_RUNNING_LISTED {
        return Err(ApiError::bad_request(format!(
            "a poll may list at most {MAX_RUNNING_LISTED} running tasks"
        )));
    }
    let session = live_session(&st, &auth, &req.session_id, "poll").await?;
    let _open = st.hub.open_poll(&session.id, now_ms());
    // An agent busy with short tasks polls many times a second: a lease touched within
    // its last tenth stays as it is (a write fewer per poll; the lease is at most a
    // tenth shorter).
    if now_ms().saturating_sub(session.last_seen_ms) >= st.settings.lease_ms() / 10 {
        st.store.touch_session(&session.id, now_ms()).await?;
    }
    let work = st.hub.work_notify(session.org_id, session.tags.as_deref());
    let wake = st.hub.session_notify(&session.id);
    let began = Instant::now();
    let hold_until = began + st.settings.poll_hold;
    let free = req
        .free_slots
        .min(session.concurrency.max(1))
        .min(MAX_OFFERS_PER_POLL);
    let offer_ms =
        i64::try_from(st.settings.offer_timeout_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    // The session was read just above; later rounds (after a wake-up) read it again.
    let mut read_session = false;
    loop {
        let new_work = work.notified();
        let woken = wake.notified();
        let stopping = st.hub.shutdown.notified();
        tokio::pin!(new_work, woken, stopping);
        new_work.as_mut().enable();
        woken.as_mut().enable();
        stopping.as_mut().enable();

        if read_session
            && st
                .store
                .get_session(&session.id)
                .await?
                .is_none_or(|s| s.ended_at_ms.is_some())
        {
            return Err(session_expired(&session.id));
        }
        read_session = true;
        let cancel = st
            .store
            .cancels_for(&session.id, session.org_id, &req.running)
            .await?;
        let new_cancels = match st.store.take_new_cancels(&session.id, &cancel).await? {
            Some(n) => n,
            None => st.hub.take_new_cancels(&session.id, &cancel),
        };
        let now = now_ms();
        let mut claimed = st
            .store
            .claim_tasks(&session, free, now, now.saturating_add(offer_ms))
            .await?;
        attach_configs(&st, &session, &mut claimed).await?;
        let offers = crate::identity::attach_tokens(&st, session.org_id, claimed).await?;
        for o in &offers {
            tracing::info!(task = o.task_id, status = "dispatched", hostname = %session.hostname, "task state changed");
        }
        if !offers.is_empty()
            || new_cancels > 0
            || Instant::now() >= hold_until
            || st.hub.is_stopping()
        {
            // The lease counts from when the poll began (touched above); a poll held
            // a while is touched again as it answers, one answered at once needs no
            // second write.
            if began.elapsed() >= RETOUCH_AFTER {
                st.store.touch_session(&session.id, now_ms()).await?;
            }
            return Ok(Json(PollResponse { offers, cancel }));
        }
        tokio::select! {
            _ = &mut new_work => {}
            _ = &mut woken => {}
            _ = &mut stopping => {}
            _ = tokio::time::sleep_until(hold_until) => {}
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/agent/tasks/{id}/start",
    operation_id = "agent_start",
    tag = "agent protocol",
    summary = "Start an offered task (at most once)",
    params(("id" = i64, Path, description = "The task's id")),
    request_body = StartRequest,
    responses((status = 200, description = "Started: run it", body = StartResponse)),
)]
pub async fn start(
    State(st): State<AppState>,
    auth: AgentAuth,
    ApiPath(raw): ApiPath<String>,
    ApiJson(req): ApiJson<StartRequest>,
) -> ApiResult<Json<StartResponse>> {
    let id = parse_task_id(&raw)?;
    let session = live_session(&st, &auth, &req.session_id, "start").await?;
    let d = st
        .store
        .start_task(session.org_id, id, &session.id, now_ms())
        .await?;
    // Running now: the creator's token went out with the offer and is dropped here; a
    // late start put the offer back in the queue.
    effects::apply(&st, &Actor::agent(&auth), d.effects.as_ref()).await;
    match d.outcome {
        StartOutcome::Started(rec) => {
            tracing::info!(task = id, status = "running", hostname = %session.hostname, "task state changed");
            Ok(Json(StartResponse {
                task_id: id,
                status: rec.task.status,
            }))
        }
        StartOutcome::OfferExpired => Err(ApiError::conflict(
            "offer_expired",
            format!("the offer of task {id} expired or went to another agent; do not run it"),
        )),
        StartOutcome::Ended(status) => Err(ApiError::conflict(
            "task_ended",
            format!("task {id} already ended ({status}); do not run it"),
        )),
        StartOutcome::NotFound => Err(ApiError::task_not_found(id)),
    }
}

#[utoipa::path(
    post,
    path = "/v1/agent/tasks/{id}/logs",
    operation_id = "agent_upload_log",
    tag = "agent protocol",
    summary = "Append a chunk of a task's log at `offset` (idempotent)",
    params(("id" = i64, Path, description = "The task's id"), LogChunkQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The chunk's bytes"),
    responses((status = 200, description = "The log's stored size", body = LogAck)),
)]
pub async fn upload_log(
    State(st): State<AppState>,
    auth: AgentAuth,
    ApiPath(raw): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogChunkQuery>,
    LogChunkBody(bytes): LogChunkBody,
) -> ApiResult<Json<LogAck>> {
    let id = parse_task_id(&raw)?;
    // Ended sessions still deliver what they have (the store refuses ended tasks).
    owned_session(&st, &auth, &q.session_id, "logs").await?;
    let stored = append_chunk(&st, &auth, id, &q.session_id, q.offset, &bytes).await?;
    Ok(Json(LogAck { stored }))
}

/// Appends `bytes` at `offset` to task `id`'s log (an upload, or the tail sent with a
/// finish): the stored size, or the upload's error answers.
async fn append_chunk(
    st: &AppState,
    auth: &AgentAuth,
    id: i64,
    session_id: &str,
    offset: u64,
    bytes: &[u8],
) -> ApiResult<u64> {
    let d = st
        .store
        .append_log(
            auth.token.org_id,
            id,
            session_id,
            offset,
            bytes,
            st.settings.log_cap_bytes,
        )
        .await?;
    effects::apply(st, &Actor::agent(auth), d.effects.as_ref()).await;
    match d.outcome {
        AppendOutcome::Stored(stored) => Ok(stored),
        AppendOutcome::Gap(stored) => {
            let mut e = ApiError::conflict(
                "log_gap",
                format!("log chunk of task {id} starts at byte {offset} but the server has {stored} bytes"),
            )
            .hint(format!("resend the log from byte {stored}"));
            e.stored = Some(stored);
            Err(e)
        }
        AppendOutcome::Ended(status) => Err(ApiError::conflict(
            "task_ended",
            format!(
                "task {id} is not running on this agent session ({status}); stop sending its log"
            ),
        )),
        AppendOutcome::NotFound => Err(ApiError::task_not_found(id)),
    }
}

fn truncate_message(mut m: String) -> String {
    if m.len() > MAX_MESSAGE_LEN {
        let mut cut = MAX_MESSAGE_LEN;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
    }
    m
}

#[utoipa::path(
    post,
    path = "/v1/agent/tasks/{id}/finish",
    operation_id = "agent_finish",
    tag = "agent protocol",
    summary = "Report a task's result (idempotent)",
    params(("id" = i64, Path, description = "The task's id")),
    request_body = FinishRequest,
    responses((status = 200, description = "The task's final status", body = FinishResponse)),
)]
pub async fn finish(
    State(st): State<AppState>,
    auth: AgentAuth,
    ApiPath(raw): ApiPath<String>,
    ApiJson(mut req): ApiJson<FinishRequest>,
) -> ApiResult<Json<FinishResponse>> {
    let id = parse_task_id(&raw)?;
    if !matches!(req.result.status, TaskStatus::Success | TaskStatus::Failure) {
        return Err(ApiError::bad_request(format!(
            "a task finishes `success` or `failure`, not `{}`",
            req.result.status
        )));
    }
    req.result.failure_message = req.result.failure_message.map(truncate_message);
    owned_session(&st, &auth, &req.session_id, "finish").await?;
    if let Some(tail) = req.log_tail.take() {
        // The last log bytes came with the result: stored exactly as an upload at
        // their offset would be (resends harmless, a gap refused and nothing
        // finished), then the result is taken as usual.
        let Some(bytes) = tail.bytes().filter(|b| b.len() <= MAX_LOG_TAIL_BYTES) else {
            return Err(ApiError::bad_request(format!(
                "log_tail of task {id} must be base64 of at most {MAX_LOG_TAIL_BYTES} bytes"
            )));
        };
        append_chunk(&st, &auth, id, &req.session_id, tail.offset, &bytes).await?;
    }
    let d = st
        .store
        .finish_task(auth.token.org_id, id, &req, now_ms())
        .await?;
    effects::apply(&st, &Actor::agent(&auth), d.effects.as_ref()).await;
    match d.outcome {
        FinishOutcome::Finished(rec) => {
            tracing::info!(
                task = id,
                status = %rec.task.status,
                reason = rec.task.failure_reason.map(|r| r.as_str()).unwrap_or(""),
                exit_code = rec.task.exit_code,
                "task state changed"
            );
            Ok(Json(FinishResponse {
                task_id: id,
                status: rec.task.status,
            }))
        }
        FinishOutcome::AlreadyFinished(rec) => Ok(Json(FinishResponse {
            task_id: id,
            status: rec.task.status,
        })),
        FinishOutcome::LogIncomplete { stored } => {
            let mut e = ApiError::conflict(
                "log_incomplete",
                format!(
                    "the server has {stored} bytes of the log of task {id}, the agent reports {}",
                    req.result.log_size
                ),
            )
            .hint(format!(
                "resend the log from byte {stored}, then finish again"
            ));
            e.stored = Some(stored);
            Err(e)
        }
        FinishOutcome::Ended(status) => Err(ApiError::conflict(
            "task_ended",
            format!("task {id} already ended ({status}) with another result"),
        )),
        FinishOutcome::NotYours => Err(ApiError::conflict(
            "task_ended",
            format!("task {id} is not running on this agent session"),
        )),
        FinishOutcome::NotFound => Err(ApiError::task_not_found(id)),
    }
}

#[utoipa::path(
    post,
    path = "/v1/agent/disconnect",
    operation_id = "agent_disconnect",
    tag = "agent protocol",
    summary = "End an agent session",
    request_body = DisconnectRequest,
    responses((status = 204, description = "Disconnected")),
)]
pub async fn disconnect(
    State(st): State<AppState>,
    auth: AgentAuth,
    ApiJson(req): ApiJson<DisconnectRequest>,
) -> ApiResult<StatusCode> {
    let s = owned_session(&st, &auth, &req.session_id, "disconnect").await?;
    end_session(&st, &s.id, &SessionEnd::Disconnected, &Actor::agent(&auth)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Puts each offered task's target config (opened from its sealed form) into the offer:
/// the only way a config leaves the server. Only to the session of the agent that may
/// run the target now: when the target's tags changed after the task was queued, the
/// config stays here (the task fails on the agent, naming the missing config). A
/// config that cannot be opened is left out the same way and logged without values.
async fn attach_configs(
    st: &AppState,
    session: &SessionRecord,
    claimed: &mut [ClaimedTask],
) -> ApiResult<()> {
    let org_id = session.org_id;
    for ClaimedTask { offer, .. } in claimed.iter_mut().filter(|c| c.target_has_config) {
        let Some(config) = st.store.target_config(org_id, &offer.target).await? else {
            continue;
        };
        if config.tags != session.tags {
            tracing::warn!(task = offer.task_id, target = %offer.target, session = %session.id, "target config withheld: the target's tags changed after the task was created");
            continue;
        }
        match st.sealer.open(org_id, &offer.target, &config.sealed) {
            Ok(config) => offer.config = Some(config),
            Err(e) => tracing::error!(task = offer.task_id, target = %offer.target, "{e}"),
        }
    }
    Ok(())
}
