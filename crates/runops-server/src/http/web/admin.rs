//! The organisation's pages: users (admins), API tokens (mine; everyone's for admins)
//! and the audit log (admins), each through the API's own handlers.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use runops_proto::api::{AuditQuery, TokenListQuery, UserCreate, UserTokenCreate};
use serde::{Deserialize, Serialize};

use super::layout::{self, Nav, page};
use super::session::{Empty, WebForm, WebUser, csrf_field};
use super::{WebPath, WebQuery, WebResult, see_other};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::AppState;

/// Audit events per page.
const AUDIT_PAGE: u32 = 100;

/// A token shown once after it was made.
fn shown_once(what: &str, token: &str) -> Markup {
    html! {
        div class="notice" role="status" {
            p { strong { (what) } " Copy the token now: it is shown only this once." }
            label for="new-token" { "Token" }
            input id="new-token" class="mono" readonly value=(token);
            button type="button" class="copy" data-copy=(token) { "Copy token" }
        }
    }
}

async fn users_page(
    st: &AppState,
    user: &WebUser,
    notice: Option<Markup>,
    error: Option<&ApiError>,
) -> WebResult<Markup> {
    user.auth.require_admin("manage users")?;
    let axum::Json(users) = crate::http::org::list_users(State(st.clone()), user.auth()).await?;
    Ok(page(
        "Users",
        user,
        Nav::Users,
        html! {
            h1 { "Users" }
            @if let Some(n) = notice { (n) }
            @if let Some(e) = error { (layout::error_box(e)) }
            form method="post" action="/users" class="card inline" {
                (csrf_field(user))
                div { label for="u-name" { "Name" } input id="u-name" name="name" required; }
                div { label for="u-email" { "E-mail" } input id="u-email" name="email" type="email" required; }
                div { label for="u-groups" { "Groups (comma-separated)" } input id="u-groups" name="groups"; }
                div {
                    label for="u-role" { "Role" }
                    select id="u-role" name="role" { option value="user" { "user" } option value="admin" { "admin" } }
                }
                button type="submit" { "Create user" }
            }
            div class="scroll" {
                table {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "E-mail" } th scope="col" { "Groups" }
                        th scope="col" { "Role" } th scope="col" { "Created" }
                    } }
                    tbody {
                        @for u in &users {
                            tr {
                                td { (u.name) } td { (u.email) } td { (u.groups.join(", ")) }
                                td { (u.role) } td { (layout::time(u.created_at)) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// `GET /users` (admins).
pub async fn users(State(st): State<AppState>, user: WebUser) -> WebResult<Markup> {
    users_page(&st, &user, None, None).await
}

#[derive(Deserialize)]
pub struct UserForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    groups: String,
    #[serde(default)]
    role: String,
}

/// `POST /users`: creates a user and shows their first API token once.
pub async fn create_user(
    State(st): State<AppState>,
    WebForm { user, form }: WebForm<UserForm>,
) -> WebResult<Response> {
    let req = UserCreate {
        name: form.name,
        email: form.email,
        groups: vec![form.groups],
        role: Some(form.role).filter(|r| !r.is_empty()),
    };
    match crate::http::org::create_user(State(st.clone()), user.auth(), ApiJson(req)).await {
        Ok((_, axum::Json(c))) => {
            let notice = shown_once(&format!("User {} created.", c.user.email), &c.token);
            Ok(users_page(&st, &user, Some(notice), None)
                .await?
                .into_response())
        }
        Err(e) => Ok((e.status, users_page(&st, &user, None, Some(&e)).await?).into_response()),
    }
}

async fn tokens_page(st: &AppState, user: &WebUser, notice: Option<Markup>) -> WebResult<Markup> {
    let axum::Json(tokens) = crate::http::org::list_tokens(
        State(st.clone()),
        user.auth(),
        ApiQuery(TokenListQuery {
            all: user.is_admin().then_some(true),
        }),
    )
    .await?;
    Ok(page(
        "API tokens",
        user,
        Nav::Tokens,
        html! {
            h1 { "API tokens" }
            @if let Some(n) = notice { (n) }
            form method="post" action="/tokens" class="card inline" {
                (csrf_field(user))
                div { label for="t-name" { "Name" } input id="t-name" name="name"; }
                button type="submit" { "Create API token" }
            }
            p class="help" { "Revoking the token you signed in with signs you out." }
            form method="post" action="/sign-out-everywhere" {
                (csrf_field(user))
                button type="submit" class="danger" { "Sign out of every browser" }
            }
            div class="scroll" {
                table {
                    thead { tr {
                        th scope="col" { "ID" } th scope="col" { "Name" } th scope="col" { "User" }
                        th scope="col" { "Created" } th scope="col" { "Revoked" } th scope="col" { span class="visually-hidden" { "Actions" } }
                    } }
                    tbody {
                        @for t in &tokens {
                            tr {
                                td { (t.id) @if t.current { " (this session)" } }
                                td { (t.name.as_deref().unwrap_or("")) }
                                td { (t.user) }
                                td { (layout::time(t.created_at)) }
                                td { (layout::time_opt(t.revoked_at)) }
                                td {
                                    @if t.revoked_at.is_none() {
                                        form method="post" action={ "/tokens/" (t.id) "/revoke" } {
                                            (csrf_field(user))
                                            button type="submit" class="danger" aria-label={ "Revoke API token " (t.id) } { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// `GET /tokens`.
pub async fn tokens(State(st): State<AppState>, user: WebUser) -> WebResult<Markup> {
    tokens_page(&st, &user, None).await
}

#[derive(Deserialize)]
pub struct NameForm {
    #[serde(default)]
    name: String,
}

/// `POST /tokens`: a new API token for me, shown once.
pub async fn create_token(
    State(st): State<AppState>,
    WebForm { user, form }: WebForm<NameForm>,
) -> WebResult<Response> {
    let req = UserTokenCreate {
        name: Some(form.name.trim().to_string()).filter(|n| !n.is_empty()),
    };
    let (_, axum::Json(c)) =
        crate::http::org::create_token(State(st.clone()), user.auth(), ApiJson(req)).await?;
    let notice = shown_once(&format!("API token {} created.", c.id), &c.token);
    Ok(tokens_page(&st, &user, Some(notice)).await?.into_response())
}

/// `POST /tokens/{id}/revoke`.
pub async fn revoke_token(
    State(st): State<AppState>,
    WebPath(raw): WebPath<String>,
    WebForm { user, .. }: WebForm<Empty>,
) -> WebResult<Response> {
    crate::http::org::revoke_token(State(st), user.auth(), ApiPath(raw)).await?;
    Ok(see_other("/tokens"))
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct AuditFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    before: Option<i64>,
}

/// `GET /audit` (admins): newest first, filtered by action, paged by id.
pub async fn audit(
    State(st): State<AppState>,
    user: WebUser,
    WebQuery(f): WebQuery<AuditFilter>,
) -> WebResult<Markup> {
    let action = f
        .action
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string);
    let axum::Json(events) = crate::http::org::list_audit(
        State(st),
        user.auth(),
        ApiQuery(AuditQuery {
            limit: Some(AUDIT_PAGE),
            before: f.before,
            action: action.clone(),
        }),
    )
    .await?;
    let older = (events.len() == AUDIT_PAGE as usize)
        .then(|| events.last().map(|e| e.id))
        .flatten()
        .map(|id| AuditFilter {
            action: action.clone(),
            before: Some(id),
        });
    Ok(page(
        "Audit log",
        &user,
        Nav::Audit,
        html! {
            h1 { "Audit log" }
            form method="get" action="/audit" class="filters" {
                div {
                    label for="a-action" { "Action" }
                    input id="a-action" name="action" value=(action.as_deref().unwrap_or("")) placeholder="task.create, login, …";
                }
                button type="submit" { "Filter" }
            }
            div class="scroll" {
                table {
                    thead { tr {
                        th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Action" }
                        th scope="col" { "Object" } th scope="col" { "From" } th scope="col" { "Detail" }
                    } }
                    tbody {
                        @for e in &events {
                            tr {
                                td { (layout::time(e.at)) }
                                td { (e.actor.as_deref().unwrap_or(&e.actor_kind)) }
                                td { (e.action) }
                                td { (e.object_kind.as_deref().unwrap_or("")) " " (e.object_id.as_deref().unwrap_or("")) }
                                td { (e.remote_addr.as_deref().unwrap_or("")) }
                                td class="mono small" { (e.detail.to_string()) }
                            }
                        }
                        @if events.is_empty() { tr { td colspan="6" class="empty" { "No events." } } }
                    }
                }
            }
            nav class="pager" aria-label="Pages" {
                @if let Some(o) = older {
                    a href={ "/audit?" (serde_urlencoded::to_string(&o).unwrap_or_default()) } { "Older →" }
                }
            }
        },
    ))
}
