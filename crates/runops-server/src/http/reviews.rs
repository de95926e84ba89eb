//! Reviews of tasks on reviewed targets: `POST /v1/tasks/{id}/approve`, `/reject`,
//! `/run` and `GET /v1/reviews` (the inbox). Who may review and when the rule is met
//! are [`crate::review`]'s decisions; the store records them in one transaction.
//!
//! An approved task does not run by itself: its creator runs it (`/run`), which sends
//! the creator's current credentials, so that an agent with `JWK_URL` gets an identity
//! token issued now rather than one from when the task was created.

use axum::Json;
use axum::extract::State;
use runops_proto::TaskStatus;
use runops_proto::api::{ReviewsQuery, Task, TaskApprove, TaskReject, TaskRun};
use serde_json::json;

use super::AppState;
use crate::audit::{self, Actor};
use crate::auth::UserAuth;
use crate::effects;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, parse_task_id};
use crate::notify::{self, EventKind};
use crate::now_ms;
use crate::review::{self, MAX_REVIEW_COMMENT_LEN, Refusal};
use crate::store::reviews::{NewReview, ReviewOutcome, RunOutcome, TaskReviewRow};
use crate::store::{Decided, StoreError, TaskRecord};

/// `task` with its review view filled in (when its target required reviews).
pub async fn with_review(st: &AppState, rec: TaskRecord) -> Result<Task, StoreError> {
    let row = st.store.task_review(rec.org_id, rec.task.id).await?;
    Ok(attach(rec.task, row))
}

fn ms_to_time(ms: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_millis(ms)
}

fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Puts the review view of `row` into `task`.
fn attach(mut task: Task, row: Option<TaskReviewRow>) -> Task {
    let Some(row) = row else { return task };
    let expires_at = match task.status {
        TaskStatus::PendingReview => ms_to_time(
            task.created_at
                .timestamp_millis()
                .saturating_add(secs_ms(row.review_ttl_secs)),
        ),
        TaskStatus::Approved => row
            .approved_at_ms
            .and_then(|at| ms_to_time(at.saturating_add(secs_ms(row.approval_ttl_secs)))),
        _ => None,
    };
    task.review = Some(review::view(
        &row.rule,
        row.entries,
        row.sha256,
        row.approved_at_ms.and_then(ms_to_time),
        expires_at,
    ));
    task
}

/// After a task of a reviewed target was created: tells the reviewers (webhooks).
pub async fn review_requested(st: &AppState, auth: &UserAuth, rec: TaskRecord) -> ApiResult<Task> {
    let org_id = rec.org_id;
    let task = with_review(st, rec).await?;
    let progress = task
        .review
        .as_ref()
        .map(review::progress_line)
        .unwrap_or_default();
    tracing::info!(task = task.id, status = "pending-review", by = %auth.user.email, "task waits for review: {progress}");
    notify::emit(
        st,
        org_id,
        task.id,
        EventKind::ReviewRequested,
        json!({
            "target": task.target,
            "type": task.kind,
            "creator": task.user,
            "message": task.message,
            "review": task.review,
        }),
    )
    .await;
    Ok(task)
}

fn comment_of(text: Option<String>, what: &str) -> ApiResult<Option<String>> {
    let text = text.map(|c| c.trim().to_string()).filter(|c| !c.is_empty());
    if let Some(c) = &text
        && c.len() > MAX_REVIEW_COMMENT_LEN
    {
        return Err(ApiError::bad_request(format!(
            "the {what} is {} bytes; the limit is {MAX_REVIEW_COMMENT_LEN}",
            c.len()
        )));
    }
    Ok(text)
}

/// The answer to a review the store did not record.
fn not_recorded(id: i64, outcome: ReviewOutcome) -> ApiError {
    match outcome {
        ReviewOutcome::Refused(Refusal::AlreadyReviewed) => {
            ApiError::conflict("already_reviewed", Refusal::AlreadyReviewed.message(id))
                .hint(format!("see the reviews with `runops tasks show {id}`"))
        }
        ReviewOutcome::Refused(r @ Refusal::OwnTask) => ApiError::forbidden(r.message(id)).hint(
            "ask a reviewer to look at it (`runops reviews` lists what each user may review)",
        ),
        ReviewOutcome::Refused(r @ Refusal::NotInGroups { .. }) => {
            ApiError::forbidden(r.message(id))
                .hint("ask a member of those groups; `runops whoami` shows your groups")
        }
        ReviewOutcome::NotPending(TaskStatus::Approved) => ApiError::conflict(
            "not_pending_review",
            format!("task {id} is already approved"),
        )
        .hint(format!("its creator runs it with `runops tasks run {id}`")),
        ReviewOutcome::NotPending(status) if status.is_final() => ApiError::conflict(
            "task_ended",
            format!("task {id} already ended ({status}); there is nothing to review"),
        ),
        ReviewOutcome::NotPending(status) => ApiError::conflict(
            "not_pending_review",
            format!("task {id} is {status}, not waiting for review"),
        ),
        ReviewOutcome::NotReviewed => ApiError::conflict(
            "not_reviewed",
            format!(
                "task {id} does not need reviews: its target did not require them when it was created"
            ),
        ),
        ReviewOutcome::DigestMismatch { stored } => ApiError::conflict(
            "review_mismatch",
            format!("task {id} is not the version you reviewed (its SHA-256 is {stored})"),
        )
        .hint(format!("look at it again with `runops tasks show {id}`")),
        ReviewOutcome::NotFound => ApiError::task_not_found(id),
        ReviewOutcome::Approved { .. } | ReviewOutcome::Rejected { .. } => ApiError::internal(),
    }
}

/// `POST /v1/tasks/{id}/approve`.
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/approve",
    operation_id = "reviews_approve",
    tag = "reviews",
    summary = "Approve a task (`force` + `reason`: admins)",
    params(("id" = i64, Path, description = "The task's id")),
    request_body = TaskApprove,
    responses((status = 200, description = "The task with its reviews", body = Task)),
)]
pub async fn approve(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiPath(raw): ApiPath<String>,
    ApiJson(req): ApiJson<TaskApprove>,
) -> ApiResult<Json<Task>> {
    let id = parse_task_id(&raw)?;
    let forced = req.force.unwrap_or(false);
    let comment = comment_of(req.comment, "comment")?;
    let reason = comment_of(req.reason, "reason")?;
    if forced {
        auth.require_admin("force-approve tasks")?;
    }
    let comment = if forced {
        let Some(reason) = reason else {
            return Err(ApiError::bad_request(
                "a forced approval needs a reason",
            )
            .hint(format!("say why with `runops tasks approve {id} --force --reason TEXT`; it is recorded and shown to everyone")));
        };
        Some(match comment {
            Some(c) => format!("{reason} ({c})"),
            None => reason,
        })
    } else {
        if reason.is_some() {
            return Err(ApiError::bad_request(
                "a reason goes with a forced approval (`force`); use a comment otherwise",
            ));
        }
        comment
    };
    let new = NewReview {
        user: auth.user.clone(),
        approved: true,
        comment: comment.clone(),
        forced,
        sha256_seen: req.sha256,
    };
    let decided = st
        .store
        .record_review(auth.org_id(), id, &new, now_ms())
        .await?;
    let outcome = decided.outcome;
    let ReviewOutcome::Approved {
        task,
        review,
        approved_now,
    } = outcome
    else {
        return Err(not_recorded(id, outcome));
    };
    let task = attach(task.task, Some(*review));
    let progress = task
        .review
        .as_ref()
        .map(review::progress_line)
        .unwrap_or_default();
    tracing::info!(task = id, by = %auth.user.email, forced, approved = approved_now, "task approved by a reviewer: {progress}");
    let action = if forced {
        "task.force_approve"
    } else {
        "task.approve"
    };
    let groups = task
        .review
        .as_ref()
        .and_then(|r| r.reviews.last())
        .map(|e| e.groups.clone())
        .unwrap_or_default();
    let sha256 = task.review.as_ref().map(|r| r.sha256.clone());
    let detail = json!({
        "target": task.target,
        "groups": groups,
        "comment": comment,
        "forced": forced,
        "sha256": sha256,
        "approved": approved_now,
        "progress": progress,
    });
    audit::by_user(&st, &auth, action, "task", id, detail).await;
    // The status change's effects (the lifecycle's); the notification carries who.
    let mut detail = json!({
        "target": task.target,
        "creator": task.user,
        "approved_by": auth.user.email,
        "forced": forced,
        "review": task.review,
    });
    if forced {
        detail["reason"] = json!(comment);
    }
    let actor = Actor::user(&auth);
    effects::apply_detailed(&st, &actor, decided.effects.as_ref(), Some(detail)).await;
    if !approved_now {
        // One more approval recorded: followers of the task see the progress.
        st.hub.wake_log(id);
    }
    Ok(Json(task))
}

/// `POST /v1/tasks/{id}/reject`.
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/reject",
    operation_id = "reviews_reject",
    tag = "reviews",
    summary = "Reject a task",
    params(("id" = i64, Path, description = "The task's id")),
    request_body = TaskReject,
    responses((status = 200, description = "The task, `rejected`", body = Task)),
)]
pub async fn reject(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiPath(raw): ApiPath<String>,
    ApiJson(req): ApiJson<TaskReject>,
) -> ApiResult<Json<Task>> {
    let id = parse_task_id(&raw)?;
    let Some(reason) = comment_of(Some(req.comment), "reason")? else {
        return Err(
            ApiError::bad_request("a rejection needs a reason").hint(format!(
                "say why with `runops tasks reject {id} --comment TEXT`; the creator sees it"
            )),
        );
    };
    let new = NewReview {
        user: auth.user.clone(),
        approved: false,
        comment: Some(reason.clone()),
        forced: false,
        sha256_seen: req.sha256,
    };
    let decided = st
        .store
        .record_review(auth.org_id(), id, &new, now_ms())
        .await?;
    let outcome = decided.outcome;
    let ReviewOutcome::Rejected { task, review } = outcome else {
        return Err(not_recorded(id, outcome));
    };
    let task = attach(task.task, Some(*review));
    tracing::info!(task = id, status = "rejected", by = %auth.user.email, "task rejected by a reviewer");
    let sha256 = task.review.as_ref().map(|r| r.sha256.clone());
    let detail = json!({"target": task.target, "reason": reason, "sha256": sha256});
    audit::by_user(&st, &auth, "task.reject", "task", id, detail).await;
    let detail = json!({
        "target": task.target,
        "creator": task.user,
        "rejected_by": auth.user.email,
        "reason": reason,
    });
    let actor = Actor::user(&auth);
    effects::apply_detailed(&st, &actor, decided.effects.as_ref(), Some(detail)).await;
    Ok(Json(task))
}

/// `POST /v1/tasks/{id}/run`: the creator runs their approved task, with the
/// credentials of this request.
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/run",
    operation_id = "reviews_run",
    tag = "reviews",
    summary = "Run an approved task (its creator)",
    params(("id" = i64, Path, description = "The task's id")),
    request_body = TaskRun,
    responses((status = 200, description = "The task, `ready`", body = Task)),
)]
pub async fn run(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiPath(raw): ApiPath<String>,
    ApiJson(req): ApiJson<TaskRun>,
) -> ApiResult<Json<Task>> {
    let id = parse_task_id(&raw)?;
    let rec = st
        .store
        .get_task(auth.org_id(), id)
        .await?
        .ok_or_else(|| ApiError::task_not_found(id))?;
    if !rec.task.user.eq_ignore_ascii_case(&auth.user.email) {
        return Err(ApiError::forbidden(format!(
            "task {id} was created by {}; only its creator runs it once approved (with their own credentials)",
            rec.task.user
        )));
    }
    let token = crate::identity::creator_token(&auth);
    let now = now_ms();
    let proof = match token.and_then(crate::identity::bound_key) {
        Some(jkt) => Some(check_run_proof(
            &rec,
            token.unwrap_or_default(),
            &jkt,
            req.proof,
            now,
        )?),
        None => None,
    };
    if token.is_some() && !st.jwts.has_room().await {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "too many tasks created with identity tokens are waiting for an agent",
        )
        .hint("try again when some of them have started"));
    }
    // Held before the task becomes `ready`, so the first dispatch finds it.
    if let Some(token) = token {
        let expiry = crate::identity::token_expiry_ms(token);
        match &proof {
            Some(proof) => st.jwts.hold_proven(id, token, expiry, proof).await,
            None => st.jwts.hold(id, token, expiry).await,
        }
    }
    let outcome = st
        .store
        .run_approved_task(auth.org_id(), id, token.is_some(), now)
        .await;
    let (rec, fx) = match outcome {
        Ok(Decided {
            outcome: RunOutcome::Ready(rec),
            effects,
        }) => (rec, effects),
        other => {
            if token.is_some() {
                st.jwts.release(id).await;
            }
            return Err(match other?.outcome {
                RunOutcome::NotApproved(status) => {
                    not_runnable(&st, auth.org_id(), id, status).await
                }
                RunOutcome::NotFound => ApiError::task_not_found(id),
                RunOutcome::Ready(_) => ApiError::internal(),
            });
        }
    };
    tracing::info!(task = id, status = "ready", by = %auth.user.email, with_identity_token = token.is_some(), "approved task run by its creator");
    let detail = json!({"target": rec.task.target, "identity_token": token.is_some()});
    audit::by_user(&st, &auth, "task.run", "task", id, detail).await;
    effects::apply(&st, &Actor::user(&auth), fx.as_ref()).await;
    Ok(Json(with_review(&st, *rec).await?))
}

/// Checks the creator's proof for running a task with a key-bound JWT; returns it.
fn check_run_proof(
    rec: &TaskRecord,
    token: &str,
    jkt: &str,
    proof: Option<String>,
    now: i64,
) -> ApiResult<String> {
    let id = rec.task.id;
    let Some(proof) = proof else {
        return Err(ApiError::bad_request(format!(
            "your identity token is bound to a key (`cnf.jkt`): running task {id} needs a proof signed with it"
        ))
        .hint(format!("run it with the runops CLI holding that key: `runops tasks run {id}` (`runops login --dpop-key FILE`)")));
    };
    let check = runops_jwt::proof::ProofCheck {
        jkt,
        token,
        binding: runops_jwt::proof::TaskBinding {
            task_id: id,
            target: &rec.task.target,
            kind: &rec.task.kind,
            script: &rec.task.script,
        },
        // The agent holds the proof against the time of this run.
        not_before: Some(now.div_euclid(1000)),
        max_age_secs: crate::identity::PROOF_WAIT.as_secs(),
    };
    runops_jwt::proof::verify_task_proof(&proof, &check).map_err(|e| {
        ApiError::bad_request(format!("{e}")).hint(
            "sign the proof with the key your identity token is bound to (`runops login --dpop-key FILE`)",
        )
    })?;
    Ok(proof)
}

/// Why task `id` in `status` cannot be run.
async fn not_runnable(st: &AppState, org_id: i64, id: i64, status: TaskStatus) -> ApiError {
    match status {
        TaskStatus::PendingReview => {
            let progress = st
                .store
                .task_review(org_id, id)
                .await
                .ok()
                .flatten()
                .map(|row| {
                    let view = review::view(&row.rule, row.entries, row.sha256, None, None);
                    review::progress_line(&view)
                })
                .unwrap_or_default();
            ApiError::conflict(
                "not_approved",
                format!("task {id} still waits for review: {progress}"),
            )
            .hint(format!(
                "it can run once approved; follow it with `runops tasks show {id}`"
            ))
        }
        TaskStatus::Created => ApiError::conflict(
            "not_approved",
            format!("task {id} does not need reviews; it waits for its creator's proof"),
        ),
        TaskStatus::Ready | TaskStatus::Dispatched | TaskStatus::Running => ApiError::conflict(
            "already_running",
            format!("task {id} was already run ({status})"),
        )
        .hint(format!("follow it with `runops tasks logs {id} -f`")),
        s if s.is_final() => {
            ApiError::conflict("task_ended", format!("task {id} already ended ({s})")).hint(
                format!("see why with `runops tasks show {id}`; create the task again to run it"),
            )
        }
        s => ApiError::conflict("not_approved", format!("task {id} is {s}, not approved")),
    }
}

/// `GET /v1/reviews`: tasks waiting for a review you may give, oldest first; with
/// `all=true`, every task of the organisation waiting for review.
#[utoipa::path(
    get,
    path = "/v1/reviews",
    operation_id = "reviews_inbox",
    tag = "reviews",
    summary = "Tasks waiting for your review, oldest first",
    params(ReviewsQuery),
    responses((status = 200, description = "The tasks", body = Vec<Task>)),
)]
pub async fn inbox(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiQuery(q): ApiQuery<ReviewsQuery>,
) -> ApiResult<Json<Vec<Task>>> {
    let all = q.all.unwrap_or(false);
    let waiting = st.store.tasks_in_review(auth.org_id()).await?;
    let mut out = Vec::with_capacity(waiting.len());
    for (rec, row) in waiting {
        let cast: Vec<review::CastReview> = row.entries.iter().map(review::cast_of).collect();
        if !all && review::may_review(&row.rule, &rec.task.user, &auth.user, &cast).is_err() {
            continue;
        }
        out.push(attach(rec.task, Some(row)));
    }
    Ok(Json(out))
}
