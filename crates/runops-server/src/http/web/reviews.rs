//! Reviews: the inbox of tasks I may review, and the approve / reject / force-approve
//! and run forms of a task page, each the API's own handler.

use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};
use runops_proto::api::{ReviewsQuery, Task, TaskApprove, TaskReject, TaskRun};
use serde::Deserialize;

use super::layout::{self, Nav, page};
use super::session::{Empty, WebForm, WebUser, csrf_field};
use super::{WebPath, WebQuery, WebResult, see_other};
use crate::extract::{ApiJson, ApiPath, ApiQuery, parse_task_id};
use crate::http::AppState;

#[derive(Deserialize)]
pub struct InboxQuery {
    #[serde(default)]
    all: Option<String>,
}

/// The tasks waiting for review that the inbox shows (every one with `all`).
async fn waiting(st: &AppState, user: &WebUser, all: bool) -> WebResult<Vec<Task>> {
    let axum::Json(tasks) = crate::http::reviews::inbox(
        State(st.clone()),
        user.auth(),
        ApiQuery(ReviewsQuery {
            all: all.then_some(true),
        }),
    )
    .await?;
    Ok(tasks)
}

fn rows_markup(tasks: &[Task]) -> Markup {
    html! {
        @for t in tasks {
            tr {
                td { a href={ "/tasks/" (t.id) } { (t.id) } }
                td { (t.target) }
                td { (t.user) }
                td { (layout::time(t.created_at)) }
                td { @if let Some(r) = &t.review { (r.progress()) } }
                td class="mono" { (layout::first_line(&t.script, 80)) }
            }
        }
        @if tasks.is_empty() {
            tr { td colspan="6" class="empty" { "Nothing to review." } }
        }
    }
}

fn wants_all(q: &InboxQuery) -> bool {
    q.all.as_deref().is_some_and(|v| !v.is_empty())
}

/// `GET /reviews`: the inbox; its rows refresh while the page is open.
pub async fn inbox(
    State(st): State<AppState>,
    user: WebUser,
    WebQuery(q): WebQuery<InboxQuery>,
) -> WebResult<Markup> {
    let all = wants_all(&q);
    let tasks = waiting(&st, &user, all).await?;
    let refresh = if all {
        "/reviews/rows?all=1"
    } else {
        "/reviews/rows"
    };
    Ok(page(
        "Reviews",
        &user,
        Nav::Reviews,
        html! {
            div class="heading" {
                h1 { "Reviews" }
                @if all { a href="/reviews" { "Only those I may review" } }
                @else { a href="/reviews?all=1" { "Every task waiting for review" } }
            }
            div class="scroll" {
                table {
                    caption class="visually-hidden" { "Tasks waiting for review" }
                    thead { tr {
                        th scope="col" { "ID" } th scope="col" { "Target" } th scope="col" { "User" }
                        th scope="col" { "Created" } th scope="col" { "Approvals" } th scope="col" { "Script" }
                    } }
                    tbody id="review-rows" data-refresh=(refresh) { (rows_markup(&tasks)) }
                }
            }
        },
    ))
}

/// `GET /reviews/rows`: the inbox's rows (the page's script refreshes them).
pub async fn rows(
    State(st): State<AppState>,
    user: WebUser,
    WebQuery(q): WebQuery<InboxQuery>,
) -> WebResult<Markup> {
    Ok(rows_markup(&waiting(&st, &user, wants_all(&q)).await?))
}

/// The review forms of a pending task's page (not shown to its creator, whom the API
/// refuses anyway).
pub fn review_forms(user: &WebUser, id: i64, sha256: &str) -> Markup {
    html! {
        div class="review-forms" {
            form method="post" action={ "/tasks/" (id) "/approve" } class="card" {
                (csrf_field(user))
                input type="hidden" name="sha256" value=(sha256);
                label for="approve-comment" { "Comment (optional)" }
                input id="approve-comment" name="comment";
                button type="submit" { "Approve" }
            }
            form method="post" action={ "/tasks/" (id) "/reject" } class="card" {
                (csrf_field(user))
                input type="hidden" name="sha256" value=(sha256);
                label for="reject-comment" { "Reason for rejecting" }
                input id="reject-comment" name="comment" required;
                button type="submit" class="danger" { "Reject" }
            }
            @if user.is_admin() {
                form method="post" action={ "/tasks/" (id) "/approve" } class="card" {
                    (csrf_field(user))
                    input type="hidden" name="sha256" value=(sha256);
                    input type="hidden" name="force" value="true";
                    label for="force-reason" { "Force-approve (admin): reason" }
                    input id="force-reason" name="reason" required;
                    button type="submit" class="danger" { "Force-approve" }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct ApproveForm {
    #[serde(default)]
    comment: String,
    #[serde(default)]
    force: Option<String>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    sha256: String,
}

fn text(s: &str) -> Option<String> {
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

/// `POST /tasks/{id}/approve`.
pub async fn approve(
    State(st): State<AppState>,
    WebPath(raw): WebPath<String>,
    WebForm { user, form }: WebForm<ApproveForm>,
) -> WebResult<Response> {
    let id = parse_task_id(&raw)?;
    let req = TaskApprove {
        comment: text(&form.comment),
        force: form.force.as_deref().map(|v| v == "true"),
        reason: text(&form.reason),
        sha256: text(&form.sha256),
    };
    let _approved =
        crate::http::reviews::approve(State(st), user.auth(), ApiPath(raw), ApiJson(req)).await?;
    Ok(see_other(&format!("/tasks/{id}")))
}

#[derive(Deserialize)]
pub struct RejectForm {
    #[serde(default)]
    comment: String,
    #[serde(default)]
    sha256: String,
}

/// `POST /tasks/{id}/reject`.
pub async fn reject(
    State(st): State<AppState>,
    WebPath(raw): WebPath<String>,
    WebForm { user, form }: WebForm<RejectForm>,
) -> WebResult<Response> {
    let id = parse_task_id(&raw)?;
    let req = TaskReject {
        comment: form.comment.trim().to_string(),
        sha256: text(&form.sha256),
    };
    let _rejected =
        crate::http::reviews::reject(State(st), user.auth(), ApiPath(raw), ApiJson(req)).await?;
    Ok(see_other(&format!("/tasks/{id}")))
}

/// `POST /tasks/{id}/run`: the creator runs an approved task.
pub async fn run(
    State(st): State<AppState>,
    WebPath(raw): WebPath<String>,
    WebForm { user, .. }: WebForm<Empty>,
) -> WebResult<Response> {
    let id = parse_task_id(&raw)?;
    user.require_task_credentials()?;
    let _ran = crate::http::reviews::run(
        State(st),
        user.auth(),
        ApiPath(raw),
        ApiJson(TaskRun::default()),
    )
    .await?;
    Ok(see_other(&format!("/tasks/{id}")))
}
