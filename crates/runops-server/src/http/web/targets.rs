//! Targets: list, show, and (admins) create and edit through the API's own handlers, so
//! a refused field gets the API's message. The write-only config stays a CLI matter
//! (`runops targets create --config`): the pages never show or take secret values.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use runops_proto::api::{Target, TargetCreate, TargetUpdate};
use serde::Deserialize;

use super::layout::{self, Nav, page};
use super::session::{WebForm, WebUser, csrf_field};
use super::{WebPath, WebResult, see_other};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::http::AppState;

/// `GET /targets`.
pub async fn list(State(st): State<AppState>, user: WebUser) -> WebResult<Markup> {
    let axum::Json(targets) = crate::http::targets::list(State(st), user.auth()).await?;
    Ok(page(
        "Targets",
        &user,
        Nav::Targets,
        html! {
            div class="heading" {
                h1 { "Targets" }
                @if user.is_admin() { a class="button" href="/targets/new" { "New target" } }
            }
            div class="scroll" {
                table {
                    caption class="visually-hidden" { "Targets" }
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Type" } th scope="col" { "Tags" }
                        th scope="col" { "Review" } th scope="col" { "Description" }
                    } }
                    tbody {
                        @for t in &targets {
                            tr {
                                td { a href={ "/targets/" (t.name) } { (t.name) } }
                                td { (t.kind) }
                                td { (t.tags.as_deref().unwrap_or("(untagged)")) }
                                td { (t.review) }
                                td { (t.description.as_deref().unwrap_or("")) }
                            }
                        }
                        @if targets.is_empty() { tr { td colspan="5" class="empty" { "No targets yet." } } }
                    }
                }
            }
        },
    ))
}

/// `GET /targets/{name}`.
pub async fn show(
    State(st): State<AppState>,
    user: WebUser,
    WebPath(name): WebPath<String>,
) -> WebResult<Markup> {
    let axum::Json(t) = crate::http::targets::show(State(st), user.auth(), ApiPath(name)).await?;
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
    Ok(page(
        &format!("Target {}", t.name),
        &user,
        Nav::Targets,
        html! {
            div class="heading" {
                h1 { "Target " (t.name) }
                div class="actions" {
                    a class="button" href={ "/tasks/new?target=" (t.name) } { "New task" }
                    @if user.is_admin() { a class="button" href={ "/targets/" (t.name) "/edit" } { "Edit" } }
                }
            }
            dl class="facts" {
                dt { "Type" } dd { (t.kind) }
                dt { "Description" } dd { (opt(&t.description)) }
                dt { "Tags" } dd { (t.tags.as_deref().unwrap_or("(untagged)")) }
                dt { "Secret provider" } dd { (opt(&t.secret_provider)) }
                dt { "Secret path" } dd { (opt(&t.secret_path)) }
                dt { "Secret mapping" } dd class="mono" {
                    @if let Some(m) = &t.secret_mapping { (serde_json::Value::Object(m.clone()).to_string()) } @else { "—" }
                }
                dt { "Config keys (write-only)" } dd { @if t.config_keys.is_empty() { "—" } @else { (t.config_keys.join(", ")) } }
                dt { "Redact" } dd { (t.redact) }
                dt { "Review" } dd { (t.review) @if !t.reviewers.is_empty() { " (" (t.reviewers.join(", ")) ")" } }
                dt { "Custom command" } dd class="mono" { (opt(&t.custom_command)) }
                dt { "Slack channel" } dd { (opt(&t.channel)) }
                dt { "Timeout" } dd { (t.timeout) " s" }
                dt { "Updated" } dd { (layout::time(t.updated_at)) }
            }
            p class="help" { "The write-only config is set with " code { "runops targets update NAME --config" } "; no page shows it." }
        },
    ))
}

/// The fields of the create and edit forms, as text (the API parses and checks them).
#[derive(Debug, Default, Deserialize)]
pub struct TargetForm {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    secret_provider: String,
    #[serde(default)]
    secret_path: String,
    #[serde(default)]
    secret_mapping: String,
    #[serde(default)]
    redact: String,
    #[serde(default)]
    review: String,
    #[serde(default)]
    reviewers: String,
    #[serde(default)]
    custom_command: String,
    #[serde(default)]
    timeout: String,
    #[serde(default)]
    channel: String,
}

impl TargetForm {
    fn of(t: &Target) -> TargetForm {
        TargetForm {
            name: t.name.clone(),
            kind: t.kind.clone(),
            description: t.description.clone().unwrap_or_default(),
            tags: t.tags.clone().unwrap_or_default(),
            secret_provider: t.secret_provider.clone().unwrap_or_default(),
            secret_path: t.secret_path.clone().unwrap_or_default(),
            secret_mapping: t
                .secret_mapping
                .as_ref()
                .map(|m| serde_json::Value::Object(m.clone()).to_string())
                .unwrap_or_default(),
            redact: t.redact.clone(),
            review: t.review.clone(),
            reviewers: t.reviewers.join(", "),
            custom_command: t.custom_command.clone().unwrap_or_default(),
            timeout: t.timeout.to_string(),
            channel: t.channel.clone().unwrap_or_default(),
        }
    }

    fn timeout(&self) -> Result<Option<u64>, ApiError> {
        let t = self.timeout.trim();
        if t.is_empty() {
            return Ok(None);
        }
        t.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "timeout `{}` is not a whole number of seconds",
                crate::error::echo(t)
            ))
        })
    }

    fn reviewers(&self) -> Vec<String> {
        self.reviewers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The mapping as the user typed it: the API parses it and points at the error.
    fn mapping(&self) -> Option<serde_json::Value> {
        let m = self.secret_mapping.trim();
        (!m.is_empty()).then(|| serde_json::Value::String(m.to_string()))
    }
}

fn some(s: &str) -> Option<String> {
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

fn target_form(user: &WebUser, f: &TargetForm, editing: bool, error: Option<&ApiError>) -> Markup {
    let (title, action) = if editing {
        (
            format!("Edit target {}", f.name),
            format!("/targets/{}/edit", f.name),
        )
    } else {
        ("New target".to_string(), "/targets/new".to_string())
    };
    let select = |id: &str, current: &str, options: &[&str]| {
        html! {
            select id=(id) name=(id) {
                @for o in options { option value=(o) selected[current == *o] { (o) } }
            }
        }
    };
    page(
        &title,
        user,
        Nav::Targets,
        html! {
            h1 { (title) }
            @if let Some(e) = error { (layout::error_box(e)) }
            form method="post" action=(action) class="card" {
                (csrf_field(user))
                @if !editing {
                    label for="name" { "Name" }
                    input id="name" name="name" value=(f.name) required;
                }
                label for="type" { "Type" }
                input id="type" name="type" value=(f.kind) required placeholder="postgres, mysql, bash, python, …";
                label for="description" { "Description" }
                input id="description" name="description" value=(f.description);
                label for="tags" { "Agent tags (empty: the untagged agent)" }
                input id="tags" name="tags" value=(f.tags);
                label for="secret_provider" { "Secret provider" }
                input id="secret_provider" name="secret_provider" value=(f.secret_provider) placeholder="env-var, filesystem, aws, hashicorp/kv, hashicorp/db, runops";
                label for="secret_path" { "Secret path" }
                input id="secret_path" name="secret_path" value=(f.secret_path);
                label for="secret_mapping" { "Secret mapping (JSON object)" }
                input id="secret_mapping" name="secret_mapping" class="mono" value=(f.secret_mapping);
                label for="redact" { "Redact" }
                (select("redact", if f.redact.is_empty() { "all" } else { f.redact.as_str() }, &["all", "none"]))
                label for="review" { "Review" }
                (select("review", if f.review.is_empty() { "none" } else { f.review.as_str() }, &["none", "anyone", "team"]))
                label for="reviewers" { "Reviewer groups (comma-separated, for team)" }
                input id="reviewers" name="reviewers" value=(f.reviewers);
                label for="custom_command" { "Custom command" }
                input id="custom_command" name="custom_command" class="mono" value=(f.custom_command);
                label for="timeout" { "Timeout (seconds)" }
                input id="timeout" name="timeout" inputmode="numeric" value=(f.timeout);
                label for="channel" { "Slack channel (review requests and finished tasks, e.g. #ops)" }
                input id="channel" name="channel" value=(f.channel);
                button type="submit" { @if editing { "Save" } @else { "Create" } }
            }
        },
    )
}

/// `GET /targets/new` (admins).
pub async fn new_form(user: WebUser) -> WebResult<Markup> {
    user.auth.require_admin("create targets")?;
    Ok(target_form(&user, &TargetForm::default(), false, None))
}

/// `POST /targets/new`.
pub async fn create(
    State(st): State<AppState>,
    WebForm { user, form }: WebForm<TargetForm>,
) -> WebResult<Response> {
    let result = async {
        let req = TargetCreate {
            name: form.name.trim().to_string(),
            kind: form.kind.trim().to_string(),
            description: some(&form.description),
            tags: some(&form.tags),
            secret_provider: some(&form.secret_provider),
            secret_path: some(&form.secret_path),
            secret_mapping: form.mapping(),
            redact: some(&form.redact),
            review: some(&form.review),
            reviewers: Some(form.reviewers()).filter(|r| !r.is_empty()),
            custom_command: some(&form.custom_command),
            timeout: form.timeout()?,
            channel: some(&form.channel),
            ..TargetCreate::default()
        };
        crate::http::targets::create(State(st), user.auth(), ApiJson(req)).await
    }
    .await;
    match result {
        Ok((_, axum::Json(t))) => Ok(see_other(&format!("/targets/{}", t.name))),
        Err(e) => Ok((e.status, target_form(&user, &form, false, Some(&e))).into_response()),
    }
}

/// `GET /targets/{name}/edit` (admins).
pub async fn edit_form(
    State(st): State<AppState>,
    user: WebUser,
    WebPath(name): WebPath<String>,
) -> WebResult<Markup> {
    user.auth.require_admin("change targets")?;
    let axum::Json(t) = crate::http::targets::show(State(st), user.auth(), ApiPath(name)).await?;
    Ok(target_form(&user, &TargetForm::of(&t), true, None))
}

/// `POST /targets/{name}/edit`: every field is sent; an empty one clears it (as the API's
/// update does with `""`).
pub async fn update(
    State(st): State<AppState>,
    WebPath(name): WebPath<String>,
    WebForm { user, mut form }: WebForm<TargetForm>,
) -> WebResult<Response> {
    form.name = name.clone();
    let result = async {
        let req = TargetUpdate {
            kind: Some(form.kind.trim().to_string()),
            description: Some(form.description.trim().to_string()),
            tags: Some(form.tags.trim().to_string()),
            secret_provider: Some(form.secret_provider.trim().to_string()),
            secret_path: Some(form.secret_path.trim().to_string()),
            secret_mapping: Some(
                form.mapping()
                    .unwrap_or(serde_json::Value::String(String::new())),
            ),
            redact: some(&form.redact),
            review: some(&form.review),
            reviewers: Some(form.reviewers()),
            custom_command: Some(form.custom_command.trim().to_string()),
            timeout: form.timeout()?,
            channel: Some(form.channel.trim().to_string()),
            ..TargetUpdate::default()
        };
        crate::http::targets::update(State(st), user.auth(), ApiPath(name.clone()), ApiJson(req))
            .await
    }
    .await;
    match result {
        Ok(axum::Json(t)) => Ok(see_other(&format!("/targets/{}", t.name))),
        Err(e) => Ok((e.status, target_form(&user, &form, true, Some(&e))).into_response()),
    }
}
