//! Task pages: the list (filters, keyset paging, live rows), one task (script, timeline,
//! result, the live tail of its log, kill), the new-task form, and the log endpoints the
//! page's script reads.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use runops_proto::TaskStatus;
use runops_proto::api::{LogsQuery, Target, Task, TaskCreate};
use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::csv_view;
use super::layout::{self, Nav, page};
use super::session::{Empty, WebForm, WebUser, csrf_field};
use super::{WebPath, WebQuery, WebResult, see_other};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, parse_task_id};
use crate::http::AppState;
use crate::http::tasks::RawTaskListQuery;

/// Tasks per page of the list.
const PAGE_SIZE: u32 = 50;

/// Characters of a script's first line shown in the list.
const FIRST_LINE_CHARS: usize = 80;

/// Bytes of a log rendered with the task page: the tail only, so a 100 MB log never
/// reaches the browser whole (the full log is a download).
pub const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// A status watch answers after this long even when nothing changed (the page's script
/// asks again); under the server's idle timeout and any proxy's.
const WATCH_HOLD: Duration = Duration::from_secs(25);

/// A watch re-reads the task this often even without a wake-up (a change made by
/// another replica, or one that wakes no log follower).
const WATCH_RECHECK: Duration = Duration::from_secs(2);

/// Filters of the list, as in its URL.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct ListQuery {
    #[serde(default, skip_serializing_if = "is_blank")]
    status: Option<String>,
    #[serde(default, skip_serializing_if = "is_blank")]
    target: Option<String>,
    #[serde(default, skip_serializing_if = "is_blank")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "is_blank")]
    mine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    before: Option<i64>,
}

fn is_blank(v: &Option<String>) -> bool {
    v.as_deref().is_none_or(|s| s.trim().is_empty())
}

fn nonblank(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl ListQuery {
    fn mine(&self) -> bool {
        !is_blank(&self.mine)
    }

    fn url(&self, path: &str) -> String {
        match serde_urlencoded::to_string(self) {
            Ok(q) if !q.is_empty() => format!("{path}?{q}"),
            _ => path.to_string(),
        }
    }
}

/// One page of tasks through the API's own list, and whether older ones exist.
async fn fetch_page(st: &AppState, user: &WebUser, q: &ListQuery) -> WebResult<(Vec<Task>, bool)> {
    let raw = RawTaskListQuery {
        status: nonblank(&q.status),
        target: nonblank(&q.target),
        limit: Some(PAGE_SIZE + 1),
        before: q.before,
        user: if q.mine() {
            Some(user.email().to_string())
        } else {
            nonblank(&q.user)
        },
        since: None,
    };
    let axum::Json(mut tasks) =
        crate::http::tasks::list(State(st.clone()), user.auth(), ApiQuery(raw)).await?;
    let more = tasks.len() > PAGE_SIZE as usize;
    tasks.truncate(PAGE_SIZE as usize);
    Ok((tasks, more))
}

fn rows_markup(tasks: &[Task]) -> Markup {
    html! {
        @for t in tasks {
            tr {
                td { a href={ "/tasks/" (t.id) } { (t.id) } }
                td { (layout::status(t.status)) }
                td { (t.target) }
                td { (t.user) }
                td { (layout::time(t.created_at)) }
                td { (layout::elapsed(t.elapsed_ms)) }
                td class="mono" { (layout::first_line(&t.script, FIRST_LINE_CHARS)) }
            }
        }
        @if tasks.is_empty() {
            tr { td colspan="7" class="empty" { "No tasks match." } }
        }
    }
}

/// `GET /tasks`.
pub async fn list(
    State(st): State<AppState>,
    user: WebUser,
    WebQuery(q): WebQuery<ListQuery>,
) -> WebResult<Markup> {
    let (tasks, error) = match fetch_page(&st, &user, &q).await {
        Ok((tasks, more)) => ((tasks, more), None),
        Err(super::WebError::Api(e))
            if e.status == StatusCode::BAD_REQUEST || e.status == StatusCode::NOT_FOUND =>
        {
            ((Vec::new(), false), Some(e))
        }
        Err(e) => return Err(e),
    };
    let (tasks, more) = tasks;
    let status = nonblank(&q.status).unwrap_or_default();
    let live = q.before.is_none() && error.is_none();
    let mut rows_query = q.clone();
    rows_query.before = None;
    let older = tasks.last().map(|t| ListQuery {
        before: Some(t.id),
        ..q.clone()
    });
    Ok(page(
        "Tasks",
        &user,
        Nav::Tasks,
        html! {
            div class="heading" {
                h1 { "Tasks" }
                a class="button" href="/tasks/new" { "New task" }
            }
            form method="get" action="/tasks" class="filters" {
                div {
                    label for="f-status" { "Status" }
                    select id="f-status" name="status" {
                        option value="" selected[status.is_empty()] { "any" }
                        @for s in TaskStatus::ALL {
                            option value=(s.as_str()) selected[status == s.as_str()] { (s.as_str()) }
                        }
                    }
                }
                div {
                    label for="f-target" { "Target" }
                    input id="f-target" name="target" value=(q.target.as_deref().unwrap_or(""));
                }
                div {
                    label for="f-user" { "User (e-mail)" }
                    input id="f-user" name="user" value=(q.user.as_deref().unwrap_or(""));
                }
                div class="check" {
                    input id="f-mine" type="checkbox" name="mine" value="1" checked[q.mine()];
                    label for="f-mine" { "Only mine" }
                }
                button type="submit" { "Filter" }
            }
            @if let Some(e) = &error { (layout::error_box(e)) }
            div class="scroll" {
                table class="tasks" {
                    caption class="visually-hidden" { "Tasks, newest first" }
                    thead { tr {
                        th scope="col" { "ID" } th scope="col" { "Status" } th scope="col" { "Target" }
                        th scope="col" { "User" } th scope="col" { "Created" } th scope="col" { "Elapsed" }
                        th scope="col" { "Script" }
                    } }
                    tbody id="task-rows" data-refresh=[live.then(|| rows_query.url("/tasks/rows"))] {
                        (rows_markup(&tasks))
                    }
                }
            }
            nav class="pager" aria-label="Pages" {
                @if q.before.is_some() {
                    a href=(ListQuery { before: None, ..q.clone() }.url("/tasks")) { "← Newest" }
                }
                @if more { @if let Some(o) = &older { a href=(o.url("/tasks")) { "Older →" } } }
            }
        },
    ))
}

/// `GET /tasks/rows`: the rows of the list's first page (the page's script refreshes
/// them while it is open).
pub async fn rows(
    State(st): State<AppState>,
    user: WebUser,
    WebQuery(q): WebQuery<ListQuery>,
) -> WebResult<Markup> {
    let (tasks, _) = fetch_page(&st, &user, &q).await?;
    Ok(rows_markup(&tasks))
}

fn task_id(raw: &str) -> WebResult<i64> {
    Ok(parse_task_id(raw)?)
}

/// What happened to a task, oldest first.
fn timeline(t: &Task) -> Vec<(chrono::DateTime<chrono::Utc>, String)> {
    let mut events = vec![(t.created_at, format!("created by {}", t.user))];
    if let Some(r) = &t.review {
        for e in &r.reviews {
            let what = match (e.verdict.as_str(), e.forced) {
                ("approved", true) => format!("force-approved by {}", e.user),
                (v, _) => format!("{v} by {}", e.user),
            };
            let what = match &e.comment {
                Some(c) if !c.is_empty() => format!("{what}: {c}"),
                _ => what,
            };
            events.push((e.at, what));
        }
        if let Some(at) = r.approved_at {
            events.push((at, "review rule met: approved".into()));
        }
    }
    if let Some(at) = t.started_at {
        let on = t
            .agent
            .as_deref()
            .map(|a| format!(" on agent {a}"))
            .unwrap_or_default();
        events.push((at, format!("started{on}")));
    }
    if let Some(at) = t.finished_at {
        events.push((at, format!("finished: {}", t.status)));
    }
    events.sort_by_key(|(at, _)| *at);
    events
}

fn script_markup(script: &str) -> Markup {
    html! {
        pre class="script" tabindex="0" {
            code { @for line in script.lines() { span class="line" { (line) "\n" } } }
        }
    }
}

/// `GET /tasks/{id}`.
pub async fn show(
    State(st): State<AppState>,
    user: WebUser,
    WebPath(raw): WebPath<String>,
) -> WebResult<Markup> {
    let id = task_id(&raw)?;
    let axum::Json(t) =
        crate::http::tasks::show(State(st.clone()), user.auth(), ApiPath(raw.clone())).await?;
    // The kept size, to render only the tail and follow from its end.
    let kept = st
        .store
        .get_task(user.auth.org_id, id)
        .await?
        .map(|r| r.log_kept)
        .unwrap_or(0);
    let start = kept.saturating_sub(LOG_TAIL_BYTES);
    let tail = st
        .store
        .read_log(id, start, usize::try_from(kept - start).unwrap_or(0))
        .await?;
    let tail = String::from_utf8_lossy(&tail);
    let csv = csv_view::is_csv_type(&t.kind) && t.status == TaskStatus::Success;
    let table = if csv && kept > 0 && kept <= csv_view::TABLE_MAX_BYTES {
        let all = st
            .store
            .read_log(id, 0, usize::try_from(kept).unwrap_or(0))
            .await?;
        let text = String::from_utf8_lossy(&all);
        csv_view::parse(
            &text,
            csv_view::separator(&text),
            csv_view::TABLE_MAX_ROWS + 1,
        )
    } else {
        None
    };
    let running = !t.status.is_final();
    let creator = t.user.eq_ignore_ascii_case(user.email());
    let review = t.review.as_ref();
    Ok(page(
        &format!("Task {id}"),
        &user,
        Nav::Tasks,
        html! {
            div id="task" data-watch=[running.then(|| format!("/tasks/{id}/watch?status={}", t.status.as_str()))] {
                div class="heading" {
                    h1 { "Task " (id) " " (layout::status(t.status)) }
                    div class="actions" {
                        @if running {
                            form method="post" action={ "/tasks/" (id) "/kill" } {
                                (csrf_field(&user))
                                button type="submit" class="danger" { "Kill" }
                            }
                        }
                        @if t.status == TaskStatus::Approved && creator {
                            form method="post" action={ "/tasks/" (id) "/run" } {
                                (csrf_field(&user))
                                button type="submit" { "Run" }
                            }
                        }
                    }
                }
                dl class="facts" {
                    dt { "Target" } dd { a href={ "/targets/" (t.target) } { (t.target) } }
                    dt { "Type" } dd { (t.kind) }
                    dt { "User" } dd { (t.user) }
                    dt { "Agent" } dd { (t.agent.as_deref().unwrap_or("—")) }
                    dt { "Created" } dd { (layout::time(t.created_at)) }
                    dt { "Elapsed" } dd { (layout::elapsed(t.elapsed_ms)) }
                    dt { "Exit code" } dd id="exit-code" { @if let Some(c) = t.exit_code { (c) } @else { "—" } }
                    @if let Some(r) = t.failure_reason {
                        dt { "Failure reason" } dd id="failure-reason" { (r.as_str()) }
                    }
                    @if let Some(m) = &t.failure_message {
                        dt { "Failure" } dd { (m) }
                    }
                    @if let Some(m) = &t.message {
                        dt { "Message" } dd { (m) }
                    }
                }
                @if let Some(r) = review {
                    section aria-labelledby="review-h" {
                        h2 id="review-h" { "Review" }
                        p { "Rule: " (r.rule) " — approvals " (r.progress()) }
                        @if let Some(e) = r.expires_at { p { "Expires " (layout::time(e)) } }
                        p class="mono small" { "SHA-256 of what is reviewed: " (r.sha256) }
                        @if t.status == TaskStatus::PendingReview && !creator {
                            (super::reviews::review_forms(&user, id, &r.sha256))
                        }
                    }
                }
                section aria-labelledby="timeline-h" {
                    h2 id="timeline-h" { "Timeline" }
                    ol class="timeline" {
                        @for (at, what) in timeline(&t) { li { (layout::time(at)) " " (what) } }
                    }
                }
                section aria-labelledby="script-h" {
                    h2 id="script-h" { "Script" }
                    (script_markup(&t.script))
                }
                @if csv {
                    section aria-labelledby="result-h" {
                        div class="heading" {
                            h2 id="result-h" { "Result" }
                            a href={ "/tasks/" (id) "/result.csv" } download { "Download CSV" }
                        }
                        @if let Some((head, body)) = table.as_ref().and_then(|r| r.split_first()) {
                            div class="scroll" tabindex="0" {
                                table class="result" {
                                    thead { tr { @for h in head { th scope="col" { (h) } } } }
                                    tbody {
                                        @for row in body.iter().take(csv_view::TABLE_MAX_ROWS) {
                                            tr { @for c in row { td { (c) } } }
                                        }
                                    }
                                }
                            }
                            @if body.len() > csv_view::TABLE_MAX_ROWS {
                                p class="small" { "The first " (csv_view::TABLE_MAX_ROWS) " rows; the download has them all." }
                            }
                        } @else {
                            p class="small" { "Too large (or not CSV) to show as a table; download it." }
                        }
                    }
                }
                section aria-labelledby="log-h" {
                    div class="heading" {
                        h2 id="log-h" { "Log" }
                        a href={ "/tasks/" (id) "/log.txt" } download {
                            "Download the full log" @if !running { " (" (kept) " bytes)" }
                        }
                    }
                    // Shown by the page's script too, once the live tail drops earlier output.
                    p class="small" id="log-trimmed" hidden[start == 0] {
                        "Only the end of the log is shown here; the earlier output is in the download."
                    }
                    pre id="log" class="log" tabindex="0"
                        data-follow=[running.then(|| format!("/tasks/{id}/log?offset={kept}"))] { (tail.as_ref()) }
                }
            }
        },
    ))
}

#[derive(Deserialize)]
pub struct WatchQuery {
    status: String,
}

/// `GET /tasks/{id}/watch?status=S`: answers `{"status": ...}` as soon as the task's
/// status is no longer `S`, or after [`WATCH_HOLD`] with the same status; the page
/// reloads on a change (a review, a start, the end).
pub async fn watch(
    State(st): State<AppState>,
    user: WebUser,
    WebPath(raw): WebPath<String>,
    WebQuery(q): WebQuery<WatchQuery>,
) -> WebResult<Response> {
    let id = task_id(&raw)?;
    let notify = st.hub.log_notify(id);
    let _release = ReleaseLog {
        st: &st,
        id,
        notify: notify.clone(),
    };
    let deadline = tokio::time::Instant::now() + WATCH_HOLD;
    loop {
        let woken = notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let rec = st
            .store
            .get_task(user.auth.org_id, id)
            .await?
            .ok_or_else(|| ApiError::task_not_found(id))?;
        let now = rec.task.status.as_str();
        if now != q.status || tokio::time::Instant::now() >= deadline || st.hub.is_stopping() {
            return Ok(axum::Json(serde_json::json!({"status": now})).into_response());
        }
        tokio::select! {
            _ = &mut woken => {}
            _ = tokio::time::sleep(WATCH_RECHECK) => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Gives the task's wake-up back to the hub when a watch ends.
struct ReleaseLog<'a> {
    st: &'a AppState,
    id: i64,
    notify: std::sync::Arc<tokio::sync::Notify>,
}

impl Drop for ReleaseLog<'_> {
    fn drop(&mut self) {
        self.st.hub.release_log(self.id, &self.notify);
    }
}

#[derive(Deserialize)]
pub struct OffsetQuery {
    #[serde(default)]
    offset: Option<u64>,
}

/// `GET /tasks/{id}/log?offset=N`: the log from `N`, streamed until the task ends (the
/// API's own follow).
pub async fn follow_log(
    State(st): State<AppState>,
    user: WebUser,
    WebPath(raw): WebPath<String>,
    WebQuery(q): WebQuery<OffsetQuery>,
) -> WebResult<Response> {
    let query = LogsQuery {
        offset: q.offset,
        follow: Some(true),
        frames: None,
    };
    Ok(crate::http::tasks::logs(State(st), user.auth(), ApiPath(raw), ApiQuery(query)).await?)
}

/// `GET /tasks/{id}/log.txt`: the whole kept log as a file.
pub async fn download_log(
    State(st): State<AppState>,
    user: WebUser,
    WebPath(raw): WebPath<String>,
) -> WebResult<Response> {
    let id = task_id(&raw)?;
    let mut res = crate::http::tasks::logs(
        State(st),
        user.auth(),
        ApiPath(raw),
        ApiQuery(LogsQuery::default()),
    )
    .await?;
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"task-{id}.log\"")) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

/// `GET /tasks/{id}/result.csv`: the log of a `-csv` task as a CSV file.
pub async fn download_csv(
    State(st): State<AppState>,
    user: WebUser,
    WebPath(raw): WebPath<String>,
) -> WebResult<Response> {
    let id = task_id(&raw)?;
    let mut res = crate::http::tasks::logs(
        State(st),
        user.auth(),
        ApiPath(raw),
        ApiQuery(LogsQuery::default()),
    )
    .await?;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"task-{id}.csv\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

/// `POST /tasks/{id}/kill`.
pub async fn kill(
    State(st): State<AppState>,
    WebPath(raw): WebPath<String>,
    WebForm { user, .. }: WebForm<Empty>,
) -> WebResult<Response> {
    let id = task_id(&raw)?;
    let _killed = crate::http::tasks::kill(State(st), user.auth(), ApiPath(raw)).await?;
    Ok(see_other(&format!("/tasks/{id}")))
}

#[derive(Debug, Default, Deserialize)]
pub struct NewTaskForm {
    #[serde(default)]
    target: String,
    #[serde(default)]
    script: String,
    #[serde(default)]
    message: String,
}

fn new_task_page(
    user: &WebUser,
    targets: &[Target],
    f: &NewTaskForm,
    error: Option<&ApiError>,
) -> Markup {
    page(
        "New task",
        user,
        Nav::NewTask,
        html! {
            h1 { "New task" }
            @if let Some(e) = error { (layout::error_box(e)) }
            @else if user.must_sign_in_again() {
                div class="notice" role="status" id="sign-in-again" {
                    p {
                        "Your sign-in with the identity provider has expired: a task created here carries it to the agent. "
                        a href="/sign-in/sso" { "Sign in with SSO again" } " to create tasks."
                    }
                }
            }
            form method="post" action="/tasks/new" class="card" {
                (csrf_field(user))
                label for="target" { "Target" }
                select id="target" name="target" required {
                    @for t in targets {
                        option value=(t.name) selected[t.name == f.target] { (t.name) " (" (t.kind) ")" }
                    }
                }
                @if targets.is_empty() {
                    p class="help" { "No targets yet: an admin creates them on the " a href="/targets" { "Targets" } " page." }
                }
                label for="script" { "Script" }
                textarea id="script" name="script" rows="12" required spellcheck="false" class="mono" data-tabs { (f.script) }
                p class="help" { "Tab inserts a tab; Esc then Tab moves to the next field." }
                label for="message" { "Message (optional)" }
                input id="message" name="message" value=(f.message);
                button type="submit" { "Run" }
            }
        },
    )
}

#[derive(Deserialize)]
pub struct NewTaskQuery {
    #[serde(default)]
    target: Option<String>,
}

/// `GET /tasks/new`.
pub async fn new_form(
    State(st): State<AppState>,
    user: WebUser,
    WebQuery(q): WebQuery<NewTaskQuery>,
) -> WebResult<Markup> {
    let axum::Json(targets) = crate::http::targets::list(State(st), user.auth()).await?;
    let f = NewTaskForm {
        target: q.target.unwrap_or_default(),
        ..NewTaskForm::default()
    };
    Ok(new_task_page(&user, &targets, &f, None))
}

/// `POST /tasks/new`: the API's create; a refusal shows the form again with its message.
pub async fn create(
    State(st): State<AppState>,
    WebForm { user, form }: WebForm<NewTaskForm>,
) -> WebResult<Response> {
    let req = TaskCreate {
        target: form.target.clone(),
        script: form.script.replace("\r\n", "\n"),
        message: Some(form.message.trim().to_string()).filter(|m| !m.is_empty()),
        kind: None,
    };
    let created = match user.require_task_credentials() {
        Ok(()) => crate::http::tasks::create(State(st.clone()), user.auth(), ApiJson(req)).await,
        Err(e) => Err(e),
    };
    match created {
        Ok((_, axum::Json(t))) => Ok(see_other(&format!("/tasks/{}", t.id))),
        Err(e) => {
            let axum::Json(targets) = crate::http::targets::list(State(st), user.auth()).await?;
            Ok((e.status, new_task_page(&user, &targets, &form, Some(&e))).into_response())
        }
    }
}
