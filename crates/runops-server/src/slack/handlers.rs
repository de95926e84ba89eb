//! `POST /slack/commands` (the `/runops` slash command) and `POST
//! /slack/interactivity` (button clicks and the reject dialog). Both check Slack's
//! signature first (401 otherwise, nothing else happens), answer at once, and do the
//! work in the background, answering through the request's `response_url`. The
//! reject dialog's submission is the exception: it is decided within Slack's 3 s so a
//! refusal shows in the dialog itself.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use runops_proto::TaskStatus;
use runops_proto::api::{Task, TaskApprove, TaskCreate, TaskReject, TaskRun};
use runops_proto::templates::TemplateRun;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

use super::api::PostedMessage;
use super::command::{self, SlashCommand};
use super::messages::{self, ephemeral};
use super::{SlackApp, identify};
use crate::auth::UserAuth;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::http::{AppState, reviews, tasks};

/// The reject dialog's submission is decided within this, under Slack's 3 s; a slower
/// one goes on in the background and the dialog closes.
const VIEW_SUBMISSION_BUDGET: Duration = Duration::from_millis(2500);

/// Why a target refuses Slack tasks: the original's rule, in its documented words.
pub fn jwk_url_refusal(target: &str) -> String {
    format!(
        "Slack tasks are disabled for target `{target}`: its agent enforces JWK_URL (\"Slack Tasks / REPL are disabled when this option is set\"), and a task from Slack carries no identity token.\n\
         Create it with the CLI signed in with your identity provider: `runops tasks create -t {target} -s 'SCRIPT'`"
    )
}

fn not_configured() -> ApiError {
    ApiError::not_found("the Slack app is not configured on this server")
        .hint("start `runops server` with --slack-signing-secret and --slack-bot-token (see docs/slack.md)")
}

/// The app, once the request's signature is checked; the refusal otherwise.
fn checked(st: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Arc<SlackApp>, ApiError> {
    let Some(app) = st.slack.clone() else {
        return Err(not_configured());
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    if let Err(e) = super::verify::verify(
        app.signing_secret(),
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
        body,
        now,
    ) {
        tracing::warn!(refusal = %e, "refused a request to the Slack endpoints");
        return Err(ApiError::unauthorized(format!("not a request from Slack: {e}"))
            .hint("Slack signs its requests with the app's signing secret: check --slack-signing-secret"));
    }
    Ok(app)
}

fn error_text(e: &ApiError) -> String {
    match &e.hint {
        Some(h) => format!(":warning: {}\nhint: {h}", e.error),
        None => format!(":warning: {}", e.error),
    }
}

/// The form Slack posts for a slash command (the fields used).
#[derive(Debug, Deserialize)]
struct SlashForm {
    user_id: String,
    #[serde(default)]
    text: String,
    response_url: String,
}

pub async fn commands(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let app = match checked(&st, &headers, &body) {
        Ok(app) => app,
        Err(refused) => return refused.into_response(),
    };
    let form: SlashForm = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(e) => {
            return ApiError::bad_request(format!("not a Slack slash command: {e}"))
                .into_response();
        }
    };
    tokio::spawn(async move {
        let reply = answer_command(&st, &app, &form).await;
        if let Err(e) = app.api.respond(&form.response_url, &reply).await {
            tracing::warn!(error = %e, "cannot answer a Slack command");
        }
    });
    StatusCode::OK.into_response()
}

async fn answer_command(st: &AppState, app: &SlackApp, form: &SlashForm) -> Value {
    let cmd = match command::parse(&form.text) {
        Ok(SlashCommand::Help) => return ephemeral(command::USAGE),
        Ok(c) => c,
        Err(e) => return ephemeral(&format!(":warning: {e}\n{}", command::USAGE)),
    };
    let auth = match identify(st, app, &form.user_id).await {
        Ok(a) => a,
        Err(msg) => return ephemeral(&msg),
    };
    match cmd {
        SlashCommand::Help => ephemeral(command::USAGE),
        SlashCommand::CreateTask {
            target,
            script,
            message,
            kind,
        } => create_task(st, app, auth, target, script, message, kind).await,
        SlashCommand::ShowTask(id) => {
            match tasks::show(State(st.clone()), auth, ApiPath(id.to_string())).await {
                Ok(Json(task)) => messages::task_summary(&task, &app.web_url),
                Err(e) => ephemeral(&error_text(&e)),
            }
        }
        SlashCommand::ListTemplates => list_templates(st),
        SlashCommand::RunTemplate {
            name,
            target,
            params,
            message,
        } => {
            let run = TemplateRun {
                target,
                params,
                message,
            };
            run_template(st, app, auth, name, run).await
        }
    }
}

/// `/runops templates list`: names, descriptions and parameters, or why there are none.
fn list_templates(st: &AppState) -> Value {
    if !st.templates.is_configured() {
        return ephemeral(
            "templates are not configured on this server (`runops server --templates-repo URL`): \
             create tasks with `/runops tasks create -t TARGET -s 'SCRIPT'`",
        );
    }
    let list = st.templates.list();
    let mut text = String::new();
    for t in &list.templates {
        let params: Vec<String> = t
            .params
            .iter()
            .map(|p| format!("{}={}", p.name, p.kind))
            .collect();
        text.push_str(&format!(
            "`{}` {} {}\n",
            t.name,
            t.description.as_deref().unwrap_or(""),
            if params.is_empty() {
                String::new()
            } else {
                format!("(-p {})", params.join(" -p "))
            }
        ));
    }
    if text.is_empty() {
        text.push_str("no templates in the repository yet\n");
    }
    if let Some(w) = &list.warning {
        text.push_str(&format!(":warning: {w}\n"));
    }
    ephemeral(&text)
}

async fn run_template(
    st: &AppState,
    app: &SlackApp,
    auth: UserAuth,
    name: String,
    run: TemplateRun,
) -> Value {
    if let Some(refusal) = refuse_if_jwk_enforced(st, auth.org_id, &run.target).await {
        return ephemeral(&format!(":no_entry: {refusal}"));
    }
    let org_id = auth.org_id;
    let made = crate::http::templates::run(State(st.clone()), auth, ApiPath(name), ApiJson(run));
    match made.await {
        Ok((_, Json(task))) => created_reply(st, app, task, org_id).await,
        Err(e) => ephemeral(&error_text(&e)),
    }
}

/// True when the live agent of `tags` enforces `JWK_URL`.
async fn agent_verifies_identity(st: &AppState, org_id: i64, tags: Option<&str>) -> bool {
    match st.store.find_live_session(org_id, tags).await {
        Ok(s) => s.is_some_and(|s| s.verifies_identity),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the agent sessions");
            false
        }
    }
}

/// The refusal of a task on `target` from Slack, if its agent enforces `JWK_URL`.
async fn refuse_if_jwk_enforced(st: &AppState, org_id: i64, target: &str) -> Option<String> {
    let t = st.store.get_target(org_id, target).await.ok().flatten()?;
    agent_verifies_identity(st, org_id, t.tags.as_deref())
        .await
        .then(|| jwk_url_refusal(&t.name))
}

async fn create_task(
    st: &AppState,
    app: &SlackApp,
    auth: UserAuth,
    target: String,
    script: String,
    message: Option<String>,
    kind: Option<String>,
) -> Value {
    if let Some(refusal) = refuse_if_jwk_enforced(st, auth.org_id, &target).await {
        return ephemeral(&format!(":no_entry: {refusal}"));
    }
    let org_id = auth.org_id;
    let req = TaskCreate {
        target,
        script,
        message,
        kind,
    };
    match tasks::create(State(st.clone()), auth, ApiJson(req)).await {
        Ok((_, Json(task))) => created_reply(st, app, task, org_id).await,
        Err(e) => ephemeral(&error_text(&e)),
    }
}

/// The answer to a command that created `task`: where its review or result will show.
async fn created_reply(st: &AppState, app: &SlackApp, task: Task, org_id: i64) -> Value {
    let channel = st
        .store
        .get_target(org_id, &task.target)
        .await
        .ok()
        .flatten()
        .and_then(|t| t.channel);
    let next = match (&channel, task.status) {
        (Some(c), TaskStatus::PendingReview) => {
            format!("it waits for review; the request is posted in {c}")
        }
        (None, TaskStatus::PendingReview) => {
            format!("it waits for review (`runops tasks approve {}`)", task.id)
        }
        (Some(c), _) => format!("its result will be posted in {c}"),
        (None, _) => format!(
            "this target has no Slack channel: follow it with `/runops tasks show {}`",
            task.id
        ),
    };
    ephemeral(&format!(
        "Task {} created on `{}` ({}): {next}. <{}/tasks/{}|Open it in runops>",
        task.id, task.target, task.status, app.web_url, task.id
    ))
}

#[derive(Debug, Deserialize)]
struct InteractionForm {
    payload: String,
}

pub async fn interactivity(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let app = match checked(&st, &headers, &body) {
        Ok(app) => app,
        Err(refused) => return refused.into_response(),
    };
    let payload: Value = match serde_urlencoded::from_bytes::<InteractionForm>(&body)
        .map_err(|e| e.to_string())
        .and_then(|f| serde_json::from_str(&f.payload).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => {
            return ApiError::bad_request(format!("not a Slack interaction payload: {e}"))
                .into_response();
        }
    };
    match payload["type"].as_str() {
        Some("block_actions") => {
            tokio::spawn(async move { on_button(&st, &app, &payload).await });
            StatusCode::OK.into_response()
        }
        Some("view_submission")
            if payload["view"]["callback_id"].as_str() == Some(messages::REJECT_VIEW) =>
        {
            let work = tokio::spawn(async move { on_reject_dialog(&st, &app, &payload).await });
            match tokio::time::timeout(VIEW_SUBMISSION_BUDGET, work).await {
                Ok(Ok(Some(error))) => Json(json!({
                    "response_action": "errors",
                    "errors": {messages::REASON_BLOCK: error},
                }))
                .into_response(),
                // Done, or still going on (it finishes in the background): close.
                _ => StatusCode::OK.into_response(),
            }
        }
        _ => StatusCode::OK.into_response(),
    }
}

/// A button's `value`: `ID` or `ID:SHA256` (the reviewed version).
fn task_of(value: &str) -> Option<(i64, Option<String>)> {
    let (id, sha) = match value.split_once(':') {
        Some((id, sha)) => (id, Some(sha.to_string())),
        None => (value, None),
    };
    id.parse().ok().filter(|id| *id > 0).map(|id| (id, sha))
}

async fn on_button(st: &AppState, app: &SlackApp, p: &Value) {
    let response_url = p["response_url"].as_str().unwrap_or_default();
    let reply = button_reply(st, app, p).await;
    if let Some(text) = reply
        && !response_url.is_empty()
    {
        let msg = json!({"response_type": "ephemeral", "replace_original": false, "text": text});
        if let Err(e) = app.api.respond(response_url, &msg).await {
            tracing::warn!(error = %e, "cannot answer a Slack button");
        }
    }
}

/// Carries out a click; `Some(text)` to tell the user who clicked.
async fn button_reply(st: &AppState, app: &SlackApp, p: &Value) -> Option<String> {
    let action = &p["actions"][0];
    let action_id = action["action_id"].as_str().unwrap_or_default();
    let (id, sha256) = task_of(action["value"].as_str().unwrap_or_default())?;
    let auth = match identify(st, app, p["user"]["id"].as_str().unwrap_or_default()).await {
        Ok(a) => a,
        Err(msg) => return Some(msg),
    };
    // The clicked message is the one to update with the decision.
    let channel = p["container"]["channel_id"]
        .as_str()
        .or_else(|| p["channel"]["id"].as_str());
    let ts = p["container"]["message_ts"]
        .as_str()
        .or_else(|| p["message"]["ts"].as_str());
    if let (Some(channel), Some(ts)) = (channel, ts)
        && action_id != messages::RUN_ACTION
    {
        app.remember(
            id,
            PostedMessage {
                channel: channel.to_string(),
                ts: ts.to_string(),
            },
        );
    }
    match action_id {
        messages::APPROVE_ACTION => {
            let req = TaskApprove {
                sha256,
                ..TaskApprove::default()
            };
            match reviews::approve(
                State(st.clone()),
                auth,
                ApiPath(id.to_string()),
                ApiJson(req),
            )
            .await
            {
                Ok(Json(task)) if task.status == TaskStatus::PendingReview => {
                    let progress = task
                        .review
                        .as_ref()
                        .map(crate::review::progress_line)
                        .unwrap_or_default();
                    Some(format!(
                        "Your approval of task {id} is recorded: {progress}"
                    ))
                }
                Ok(_) => None,
                Err(e) => Some(error_text(&e)),
            }
        }
        messages::REJECT_ACTION => {
            let Some(trigger) = p["trigger_id"].as_str() else {
                return Some(":warning: Slack sent no trigger id to open the dialog".into());
            };
            let meta = json!({"task": id, "sha256": sha256}).to_string();
            match app
                .api
                .open_view(trigger, &messages::reject_dialog(id, &meta))
                .await
            {
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the Slack reject dialog");
                    Some(format!(
                        ":warning: cannot open the reject dialog ({e}); reject with `runops tasks reject {id} --comment \"why\"`"
                    ))
                }
            }
        }
        messages::RUN_ACTION => {
            let target = st
                .store
                .get_task(auth.org_id, id)
                .await
                .ok()
                .flatten()
                .map(|r| r.task.target);
            if let Some(target) = target
                && let Some(refusal) = refuse_if_jwk_enforced(st, auth.org_id, &target).await
            {
                return Some(format!(":no_entry: {refusal}"));
            }
            match reviews::run(
                State(st.clone()),
                auth,
                ApiPath(id.to_string()),
                ApiJson(TaskRun::default()),
            )
            .await
            {
                Ok(_) => Some(format!("Task {id} runs now")),
                Err(e) => Some(error_text(&e)),
            }
        }
        _ => None,
    }
}

/// The reject dialog was submitted: `Some(error)` to show in it.
async fn on_reject_dialog(st: &AppState, app: &SlackApp, p: &Value) -> Option<String> {
    let view = &p["view"];
    let meta: Value =
        serde_json::from_str(view["private_metadata"].as_str().unwrap_or("{}")).unwrap_or_default();
    let Some(id) = meta["task"].as_i64() else {
        return Some("this dialog lost its task; click Reject again".into());
    };
    let reason = view["state"]["values"][messages::REASON_BLOCK][messages::REASON_INPUT]["value"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let auth = match identify(st, app, p["user"]["id"].as_str().unwrap_or_default()).await {
        Ok(a) => a,
        Err(msg) => return Some(msg),
    };
    let req = TaskReject {
        comment: reason,
        sha256: meta["sha256"].as_str().map(str::to_string),
    };
    match reviews::reject(
        State(st.clone()),
        auth,
        ApiPath(id.to_string()),
        ApiJson(req),
    )
    .await
    {
        Ok(_) => None,
        Err(e) => Some(match e.hint {
            Some(h) => format!("{} ({h})", e.error),
            None => e.error,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn button_values_carry_the_task_and_the_reviewed_version() {
        assert_eq!(task_of("42"), Some((42, None)));
        assert_eq!(task_of("42:abc"), Some((42, Some("abc".into()))));
        assert_eq!(task_of("x"), None);
        assert_eq!(task_of("0"), None);
        assert_eq!(task_of(""), None);
    }

    #[test]
    fn the_jwk_url_refusal_quotes_the_documented_rule() {
        let m = jwk_url_refusal("prod");
        assert!(m.contains("Slack Tasks / REPL are disabled when this option is set"));
        assert!(m.contains("`prod`") && m.contains("JWK_URL"));
    }
}
