//! `/v1/tasks`: create (and prove, for key-bound identity tokens), list, show, kill, and
//! read or follow a task's log.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use runops_proto::TaskStatus;
use runops_proto::api::{
    LOG_FRAME_BYTES, LOG_FRAME_END, LOG_FRAMES_CONTENT_TYPE, LogsQuery, Target, Task, TaskCreate,
    TaskListQuery, TaskProof, log_frame,
};
use runops_proto::limits::{MAX_MESSAGE_LEN, MAX_SCRIPT_BYTES};
use runops_proto::templates::TaskTemplate;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

use super::AppState;
use super::targets::target_not_found;
use crate::audit::{self, Actor};
use crate::auth::UserAuth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, parse_task_id};
use crate::store::{Decided, KillOutcome, NewTask, TaskEffects};
use crate::{effects, lifecycle, now_ms, validate};

/// Bytes read from the store per piece of a log answer: bounds the memory of one
/// reader whatever the log's size.
const LOG_READ_BATCH: usize = 1024 * 1024;

/// A follower re-reads the task this often even without a wake-up, as a safety net
/// (a wake-up from another replica, a missed edge).
const FOLLOW_RECHECK: Duration = Duration::from_secs(5);

#[utoipa::path(
    post,
    path = "/v1/tasks",
    operation_id = "tasks_create",
    tag = "tasks",
    summary = "Create a task",
    request_body = TaskCreate,
    responses((status = 201, description = "The task: `ready`, `pending-review` on a reviewed target, or `created` while it waits for its proof", body = Task)),
)]
pub async fn create(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiJson(req): ApiJson<TaskCreate>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let target = st
        .store
        .get_target(auth.org_id(), &req.target)
        .await?
        .ok_or_else(|| target_not_found(&req.target))?;
    let task = create_task(&st, &auth, target, req, None).await?;
    Ok((StatusCode::CREATED, Json(task)))
}

/// Creates a task on `target` (already looked up): the one path of every task, typed
/// (`POST /v1/tasks`) or made from a template (`template`, recorded with the task).
/// Checks the script and type, starts the reviews the target asks for, holds the
/// creator's identity token, audits, and wakes the agents.
pub async fn create_task(
    st: &AppState,
    auth: &UserAuth,
    target: Target,
    req: TaskCreate,
    template: Option<TaskTemplate>,
) -> ApiResult<Task> {
    if req.script.len() > MAX_SCRIPT_BYTES {
        return Err(ApiError::too_large(format!(
            "the script is {} bytes; the limit is {MAX_SCRIPT_BYTES} bytes",
            req.script.len()
        ))
        .hint("move large data out of the script (into a file the task reads)"));
    }
    if req.script.trim().is_empty() {
        return Err(ApiError::bad_request("the script is empty")
            .hint("pass it with -s SCRIPT, -f FILE or on stdin"));
    }
    if req
        .message
        .as_ref()
        .is_some_and(|m| m.len() > MAX_MESSAGE_LEN)
    {
        return Err(ApiError::bad_request(format!(
            "the message is longer than {MAX_MESSAGE_LEN} bytes"
        )));
    }
    let kind = match req
        .kind
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
    {
        Some(k) => {
            validate::task_type(&target.kind, &k)?;
            k
        }
        None => target.kind.clone(),
    };
    // A task of a reviewed target waits for its reviews; the creator's credentials
    // travel when they run it once approved (`reviews::run`), not now.
    let rule = crate::review::ReviewRule::of_target(&target);
    let reviewed = rule.is_reviewed();
    let review_sha256 = reviewed.then(|| {
        crate::review::digest(&crate::review::ReviewedTask {
            target: &target,
            kind: &kind,
            script: &req.script,
        })
    });
    // The creator's identity token travels to the agent with the task (memory only).
    let creator_token = crate::identity::creator_token(auth).filter(|_| !reviewed);
    if creator_token.is_some() && !st.jwts.has_room().await {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "too many tasks created with identity tokens are waiting for an agent",
        )
        .hint("try again when some of them have started"));
    }
    // A token bound to a key (`cnf.jkt`) alone does not make the task runnable: it
    // waits in `created` for its creator's proof (see `proof` below).
    let awaits_proof = creator_token.and_then(crate::identity::bound_key).is_some();
    let (status, created) = lifecycle::initial_status(reviewed, awaits_proof);
    let new = NewTask {
        target,
        kind,
        script: req.script,
        message: req.message.filter(|m| !m.is_empty()),
        user: auth.user.clone(),
        status,
        created_with_jwt: creator_token.is_some(),
        review_sha256,
        template,
    };
    let now = now_ms();
    let rec = st.store.create_task(auth.org_id(), &new, now).await?;
    if let Some(token) = creator_token {
        st.jwts
            .hold(rec.task.id, token, crate::identity::token_expiry_ms(token))
            .await;
        if awaits_proof {
            let wait_ms = i64::try_from(crate::identity::PROOF_WAIT.as_millis()).unwrap_or(0);
            st.jwts
                .await_proof(rec.task.id, auth.org_id(), now.saturating_add(wait_ms))
                .await;
        }
    }
    tracing::info!(task = rec.task.id, target = %rec.task.target, status = %status, by = %auth.user.email, "task created");
    let mut detail = serde_json::json!({"target": rec.task.target, "type": rec.task.kind, "awaits_proof": awaits_proof});
    if let Some(t) = &rec.task.template {
        detail["template"] = serde_json::json!(t);
    }
    audit::by_user(st, auth, "task.create", "task", rec.task.id, detail).await;
    if reviewed {
        return super::reviews::review_requested(st, auth, rec).await;
    }
    let fx = TaskEffects::for_task(&rec, created);
    effects::apply(st, &Actor::user(auth), fx.as_ref()).await;
    Ok(rec.task)
}

/// `POST /v1/tasks/{id}/proof`: the creator's proof for a task created with a JWT bound
/// to a key. Checked here (cheaply: key thumbprint, signature, task, script) so that a
/// wrong proof is told to the CLI at once; the agent checks it again and trusts nothing
/// of this. The proof is held in memory next to the token, never stored.
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/proof",
    operation_id = "tasks_proof",
    tag = "tasks",
    summary = "Prove a task created with a key-bound identity token",
    params(("id" = i64, Path, description = "The task's id")),
    request_body = TaskProof,
    responses((status = 200, description = "The task, now `ready`", body = Task)),
)]
pub async fn proof(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiPath(raw): ApiPath<String>,
    ApiJson(req): ApiJson<TaskProof>,
) -> ApiResult<Json<Task>> {
    let id = parse_task_id(&raw)?;
    let rec = st
        .store
        .get_task(auth.org_id(), id)
        .await?
        .ok_or_else(|| ApiError::task_not_found(id))?;
    if !rec.task.user.eq_ignore_ascii_case(&auth.user.email) {
        return Err(ApiError::forbidden(format!(
            "task {id} was created by another user; only its creator can prove it"
        )));
    }
    if rec.task.status != TaskStatus::Created {
        return Err(ApiError::conflict(
            "not_awaiting_proof",
            format!("task {id} is {}, not waiting for a proof", rec.task.status),
        ));
    }
    let token = st.jwts.token(id).await;
    let Some((token, jkt)) = token.and_then(|t| crate::identity::bound_key(&t).map(|k| (t, k)))
    else {
        return Err(ApiError::conflict(
            "not_awaiting_proof",
            format!("task {id} does not wait for a proof any more (its wait ran out, or the control plane restarted)"),
        )
        .hint("create the task again"));
    };
    let check = runops_jwt::proof::ProofCheck {
        jkt: &jkt,
        token: &token,
        binding: runops_jwt::proof::TaskBinding {
            task_id: id,
            target: &rec.task.target,
            kind: &rec.task.kind,
            script: &rec.task.script,
        },
        not_before: Some(rec.task.created_at.timestamp()),
        max_age_secs: crate::identity::PROOF_WAIT.as_secs(),
    };
    runops_jwt::proof::verify_task_proof(&req.proof, &check).map_err(|e| {
        tracing::info!(task = id, refusal = e.kind(), "task proof refused");
        ApiError::bad_request(format!("{e}")).hint(
            "sign the proof with the key your identity token is bound to (`runops login --dpop-key FILE`)",
        )
    })?;
    let proven = match st.jwts.set_proof(id, &req.proof).await {
        true => st.store.ready_proven_task(auth.org_id(), id).await?,
        false => Decided::only(false),
    };
    if !proven.outcome {
        return Err(ApiError::conflict(
            "not_awaiting_proof",
            format!(
                "task {id} does not wait for a proof any more (its wait ran out, or it was killed)"
            ),
        )
        .hint("create the task again"));
    }
    tracing::info!(task = id, status = "ready", by = %auth.user.email, "task proven by its creator's key");
    audit::by_user(
        &st,
        &auth,
        "task.prove",
        "task",
        id,
        serde_json::json!({"jkt": jkt}),
    )
    .await;
    effects::apply(&st, &Actor::user(&auth), proven.effects.as_ref()).await;
    let mut task = rec.task;
    task.status = TaskStatus::Ready;
    Ok(Json(task))
}

/// [`TaskListQuery`] as sent: the status stays text here so that a mistyped one gets
/// a suggestion instead of serde's generic "unknown variant". (Not `flatten`ed: query
/// strings then lose their numbers.)
#[derive(serde::Deserialize, Default)]
pub struct RawTaskListQuery {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub before: Option<i64>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
}

#[utoipa::path(
    get,
    path = "/v1/tasks",
    operation_id = "tasks_list",
    tag = "tasks",
    summary = "List tasks, newest first",
    params(TaskListQuery),
    responses((status = 200, description = "The tasks", body = Vec<Task>)),
)]
pub async fn list(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiQuery(raw): ApiQuery<RawTaskListQuery>,
) -> ApiResult<Json<Vec<Task>>> {
    let status = match raw
        .status
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(s) => Some(s.parse::<TaskStatus>().map_err(ApiError::bad_request)?),
        None => None,
    };
    let q = TaskListQuery {
        status,
        target: raw.target,
        limit: raw.limit,
        before: raw.before,
        user: raw.user,
        since: raw.since,
    };
    // An unknown target is a mistake worth naming, not an empty list.
    if let Some(name) = q.target.as_deref()
        && st.store.get_target(auth.org_id(), name).await?.is_none()
    {
        return Err(target_not_found(name));
    }
    Ok(Json(st.store.list_tasks(auth.org_id(), &q).await?))
}

#[utoipa::path(
    get,
    path = "/v1/tasks/{id}",
    operation_id = "tasks_show",
    tag = "tasks",
    summary = "Show a task",
    params(("id" = i64, Path, description = "The task's id")),
    responses((status = 200, description = "The task, with its reviews", body = Task)),
)]
pub async fn show(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult<Json<Task>> {
    let id = parse_task_id(&raw)?;
    let rec = st
        .store
        .get_task(auth.org_id(), id)
        .await?
        .ok_or_else(|| ApiError::task_not_found(id))?;
    Ok(Json(super::reviews::with_review(&st, rec).await?))
}

#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/kill",
    operation_id = "tasks_kill",
    tag = "tasks",
    summary = "Kill a task",
    params(("id" = i64, Path, description = "The task's id")),
    responses((status = 202, description = "Killed before it started, or its agent told to stop it", body = Task)),
)]
pub async fn kill(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let id = parse_task_id(&raw)?;
    let by = &auth.user.email;
    let d = st.store.kill_task(auth.org_id(), id, by, now_ms()).await?;
    // Audited, counted, and the agent running it told (see `lifecycle`).
    effects::apply(&st, &Actor::user(&auth), d.effects.as_ref()).await;
    match d.outcome {
        KillOutcome::CancelledBeforeStart(rec) => {
            tracing::info!(task = id, status = "failure", reason = "cancelled", by = %by, "task killed before it started");
            Ok((StatusCode::ACCEPTED, Json(rec.task)))
        }
        KillOutcome::CancelRequested { task, .. } => {
            tracing::info!(task = id, by = %by, "kill requested for a running task");
            Ok((StatusCode::ACCEPTED, Json(task.task)))
        }
        KillOutcome::AlreadyEnded(status) => Err(ApiError::conflict(
            "task_ended",
            format!("task {id} already ended ({status})"),
        )),
        KillOutcome::NotFound => Err(ApiError::task_not_found(id)),
    }
}

/// `GET /v1/tasks/{id}/logs?offset=&follow=&frames=`: the kept log from `offset`; with
/// `follow=true` the body stays open and streams new bytes until the task ends; with
/// `frames=true` the bytes come in frames, the ended task last (see
/// `runops_proto::api::LOG_FRAMES_CONTENT_TYPE`).
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}/logs",
    operation_id = "tasks_logs",
    tag = "tasks",
    summary = "Read or follow a task's log",
    params(("id" = i64, Path, description = "The task's id"), LogsQuery),
    responses((status = 200, description = "The log from `offset` (redacted by the agent); with `follow=true` it streams until the task ends; with `frames=true` in `application/vnd.runops.log-frames` frames, the ended task last", content((String = "text/plain"), (String = "application/vnd.runops.log-frames")))),
)]
pub async fn logs(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiPath(raw): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> ApiResult<Response> {
    let id = parse_task_id(&raw)?;
    let rec = st
        .store
        .get_task(auth.org_id(), id)
        .await?
        .ok_or_else(|| ApiError::task_not_found(id))?;
    let reader = LogReader {
        notify: st.hub.log_notify(id),
        st,
        org_id: rec.org_id,
        id,
        offset: q.offset.unwrap_or(0),
        follow: q.follow.unwrap_or(false),
        frames: q.frames.unwrap_or(false),
        done: false,
    };
    let content_type = if reader.frames {
        LOG_FRAMES_CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let stream = futures_util::stream::unfold(reader, |mut r| async move {
        r.next_piece().await.map(|piece| (piece, r))
    });
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(stream),
    )
        .into_response())
}

/// State of one log answer.
struct LogReader {
    st: AppState,
    org_id: i64,
    id: i64,
    offset: u64,
    follow: bool,
    /// Answer in frames, the ended task last.
    frames: bool,
    notify: Arc<Notify>,
    done: bool,
}

impl LogReader {
    /// The next bytes of the log, or `None` at the end of the answer.
    async fn next_piece(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            if self.done {
                return None;
            }
            let notify = self.notify.clone();
            let appended = notify.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let stopping = self.st.hub.shutdown.notified();
            tokio::pin!(stopping);
            stopping.as_mut().enable();
            // Status first, then bytes: a final status read before the bytes means
            // the bytes read next are all there will ever be.
            let rec = match self.st.store.get_task(self.org_id, self.id).await {
                Ok(Some(r)) => r,
                Ok(None) => return None,
                Err(e) => {
                    self.done = true;
                    return Some(Err(std::io::Error::other(e.to_string())));
                }
            };
            match self
                .st
                .store
                .read_log(self.id, self.offset, LOG_READ_BATCH)
                .await
            {
                Ok(bytes) if !bytes.is_empty() => {
                    self.offset += bytes.len() as u64;
                    if self.frames {
                        return Some(Ok(Bytes::from(log_frame(LOG_FRAME_BYTES, &bytes))));
                    }
                    return Some(Ok(Bytes::from(bytes)));
                }
                Ok(_) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(std::io::Error::other(e.to_string())));
                }
            }
            if self.frames && rec.task.status.is_final() {
                // Read before the last bytes: the log is complete, and this is how
                // the task ended.
                self.done = true;
                let task = match super::reviews::with_review(&self.st, rec).await {
                    Ok(t) => t,
                    Err(e) => return Some(Err(std::io::Error::other(e.to_string()))),
                };
                let json = serde_json::to_vec(&task).map_err(std::io::Error::other);
                return Some(json.map(|j| Bytes::from(log_frame(LOG_FRAME_END, &j))));
            }
            if !self.follow || rec.task.status.is_final() || self.st.hub.is_stopping() {
                self.done = true;
                return None;
            }
            tokio::select! {
                _ = &mut appended => {}
                _ = &mut stopping => {}
                _ = tokio::time::sleep(FOLLOW_RECHECK) => {}
            }
        }
    }
}

impl Drop for LogReader {
    fn drop(&mut self) {
        self.st.hub.release_log(self.id, &self.notify);
    }
}
