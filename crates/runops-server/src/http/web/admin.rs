//! The organisation's pages: users (admins), API tokens (mine; everyone's for admins)
//! and the audit log (admins), each through the API's own handlers, each with filters
//! in its URL. Users and tokens are filtered here ([`UserFilter`], [`TokenFilter`]: an
//! organisation's lists are short); the audit log by the store, as it is paged.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use runops_proto::api::{AuditQuery, TokenListQuery, User, UserCreate, UserToken, UserTokenCreate};
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

fn trimmed(v: &Option<String>) -> &str {
    v.as_deref().map(str::trim).unwrap_or("")
}

fn contains_ci(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// Filters of the users page, as in its URL.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct UserFilter {
    /// Part of the name or e-mail, any case.
    #[serde(default)]
    q: Option<String>,
    /// `admin` or `user`; empty for both.
    #[serde(default)]
    role: Option<String>,
    /// A group the user is in (exactly, any case).
    #[serde(default)]
    group: Option<String>,
}

impl UserFilter {
    pub fn matches(&self, u: &User) -> bool {
        let q = trimmed(&self.q);
        let role = trimmed(&self.role);
        let group = trimmed(&self.group);
        (q.is_empty() || contains_ci(&u.name, q) || contains_ci(&u.email, q))
            && (role.is_empty() || u.role == role)
            && (group.is_empty() || u.groups.iter().any(|g| g.eq_ignore_ascii_case(group)))
    }
}

async fn users_page(
    st: &AppState,
    user: &WebUser,
    filter: &UserFilter,
    notice: Option<Markup>,
    error: Option<&ApiError>,
) -> WebResult<Markup> {
    user.auth.require_admin("manage users")?;
    let axum::Json(all) = crate::http::org::list_users(State(st.clone()), user.auth()).await?;
    let total = all.len();
    let users: Vec<User> = all.into_iter().filter(|u| filter.matches(u)).collect();
    let role = trimmed(&filter.role);
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
            form method="get" action="/users" class="filters" {
                div {
                    label for="uf-q" { "Name or e-mail" }
                    input id="uf-q" name="q" type="search" value=(trimmed(&filter.q));
                }
                div {
                    label for="uf-role" { "Role" }
                    select id="uf-role" name="role" {
                        option value="" selected[role.is_empty()] { "any" }
                        @for r in runops_proto::Role::ALL {
                            option value=(r.as_str()) selected[role == r.as_str()] { (r.as_str()) }
                        }
                    }
                }
                div {
                    label for="uf-group" { "Group" }
                    input id="uf-group" name="group" value=(trimmed(&filter.group));
                }
                button type="submit" { "Filter" }
            }
            p class="small" id="user-count" { (users.len()) " of " (total) " users" }
            div class="scroll" {
                table {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "E-mail" } th scope="col" { "Groups" }
                        th scope="col" { "Role" } th scope="col" { "Created" }
                    } }
                    tbody id="user-rows" {
                        @for u in &users {
                            tr {
                                td { (u.name) } td { (u.email) } td { (u.groups.join(", ")) }
                                td { (u.role) } td { (layout::time(u.created_at)) }
                            }
                        }
                        @if users.is_empty() { tr { td colspan="5" class="empty" { "No users match." } } }
                    }
                }
            }
        },
    ))
}

/// `GET /users?q=&role=&group=` (admins).
pub async fn users(
    State(st): State<AppState>,
    user: WebUser,
    WebQuery(filter): WebQuery<UserFilter>,
) -> WebResult<Markup> {
    users_page(&st, &user, &filter, None, None).await
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
            Ok(
                users_page(&st, &user, &UserFilter::default(), Some(notice), None)
                    .await?
                    .into_response(),
            )
        }
        Err(e) => Ok((
            e.status,
            users_page(&st, &user, &UserFilter::default(), None, Some(&e)).await?,
        )
            .into_response()),
    }
}

/// Filters of the API tokens page, as in its URL.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct TokenFilter {
    /// Part of the owner's e-mail, any case (admins see everyone's tokens).
    #[serde(default)]
    user: Option<String>,
    /// Part of the token's name, any case.
    #[serde(default)]
    name: Option<String>,
    /// `active` or `revoked`; empty for both.
    #[serde(default)]
    state: Option<String>,
}

/// The states a token can be filtered by.
const TOKEN_STATES: [&str; 2] = ["active", "revoked"];

impl TokenFilter {
    pub fn matches(&self, t: &UserToken) -> bool {
        let user = trimmed(&self.user);
        let name = trimmed(&self.name);
        let state_ok = match trimmed(&self.state) {
            "active" => t.revoked_at.is_none(),
            "revoked" => t.revoked_at.is_some(),
            _ => true,
        };
        state_ok
            && (user.is_empty() || contains_ci(&t.user, user))
            && (name.is_empty() || t.name.as_deref().is_some_and(|n| contains_ci(n, name)))
    }

    /// A state that is neither empty nor one of [`TOKEN_STATES`].
    fn check(&self) -> Result<(), ApiError> {
        let state = trimmed(&self.state);
        if state.is_empty() || TOKEN_STATES.contains(&state) {
            return Ok(());
        }
        Err(ApiError::bad_request(format!(
            "unknown token state `{state}`: it is `active` or `revoked`"
        ))
        .hint("leave the state empty to see every token"))
    }
}

async fn tokens_page(
    st: &AppState,
    user: &WebUser,
    filter: &TokenFilter,
    notice: Option<Markup>,
) -> WebResult<Markup> {
    filter.check()?;
    let state = trimmed(&filter.state);
    let axum::Json(all) = crate::http::org::list_tokens(
        State(st.clone()),
        user.auth(),
        ApiQuery(TokenListQuery {
            all: user.is_admin().then_some(true),
        }),
    )
    .await?;
    let total = all.len();
    let tokens: Vec<UserToken> = all.into_iter().filter(|t| filter.matches(t)).collect();
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
            form method="get" action="/tokens" class="filters" {
                @if user.is_admin() {
                    div {
                        label for="tf-user" { "User (e-mail)" }
                        input id="tf-user" name="user" type="search" value=(trimmed(&filter.user));
                    }
                }
                div {
                    label for="tf-name" { "Name" }
                    input id="tf-name" name="name" type="search" value=(trimmed(&filter.name));
                }
                div {
                    label for="tf-state" { "State" }
                    select id="tf-state" name="state" {
                        option value="" selected[state.is_empty()] { "any" }
                        @for s in TOKEN_STATES {
                            option value=(s) selected[state == s] { (s) }
                        }
                    }
                }
                button type="submit" { "Filter" }
            }
            p class="small" id="token-count" { (tokens.len()) " of " (total) " API tokens" }
            div class="scroll" {
                table {
                    thead { tr {
                        th scope="col" { "ID" } th scope="col" { "Name" } th scope="col" { "User" }
                        th scope="col" { "Created" } th scope="col" { "Revoked" } th scope="col" { span class="visually-hidden" { "Actions" } }
                    } }
                    tbody id="token-rows" {
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
                        @if tokens.is_empty() { tr { td colspan="6" class="empty" { "No API tokens match." } } }
                    }
                }
            }
        },
    ))
}

/// `GET /tokens?user=&name=&state=`.
pub async fn tokens(
    State(st): State<AppState>,
    user: WebUser,
    WebQuery(filter): WebQuery<TokenFilter>,
) -> WebResult<Markup> {
    tokens_page(&st, &user, &filter, None).await
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
    Ok(
        tokens_page(&st, &user, &TokenFilter::default(), Some(notice))
            .await?
            .into_response(),
    )
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

/// Filters of the audit log page, as in its URL.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct AuditFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    action: Option<String>,
    /// A user's e-mail, or `agent` / `system`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    /// The object's id: a task id, a target's name...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    object: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    before: Option<i64>,
}

fn nonblank(v: &Option<String>) -> Option<String> {
    Some(trimmed(v).to_string()).filter(|v| !v.is_empty())
}

/// `GET /audit?action=&actor=&object=&before=` (admins): newest first, filtered, paged
/// by id.
pub async fn audit(
    State(st): State<AppState>,
    user: WebUser,
    WebQuery(f): WebQuery<AuditFilter>,
) -> WebResult<Markup> {
    let f = AuditFilter {
        action: nonblank(&f.action),
        actor: nonblank(&f.actor),
        object: nonblank(&f.object),
        before: f.before,
    };
    let axum::Json(events) = crate::http::org::list_audit(
        State(st),
        user.auth(),
        ApiQuery(AuditQuery {
            limit: Some(AUDIT_PAGE),
            before: f.before,
            action: f.action.clone(),
            actor: f.actor.clone(),
            object: f.object.clone(),
        }),
    )
    .await?;
    let older = (events.len() == AUDIT_PAGE as usize)
        .then(|| events.last().map(|e| e.id))
        .flatten()
        .map(|id| AuditFilter {
            before: Some(id),
            ..f.clone()
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
                    input id="a-action" name="action" value=(trimmed(&f.action)) placeholder="task.create, login, …";
                }
                div {
                    label for="a-actor" { "Who (e-mail, agent or system)" }
                    input id="a-actor" name="actor" value=(trimmed(&f.actor));
                }
                div {
                    label for="a-object" { "Object (task id, target, e-mail…)" }
                    input id="a-object" name="object" value=(trimmed(&f.object));
                }
                button type="submit" { "Filter" }
            }
            div class="scroll" {
                table {
                    thead { tr {
                        th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Action" }
                        th scope="col" { "Object" } th scope="col" { "From" } th scope="col" { "Detail" }
                    } }
                    tbody id="audit-rows" {
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
