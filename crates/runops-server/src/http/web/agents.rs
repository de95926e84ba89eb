//! Agents: the live sessions, and (admins) agent tokens: create (the token shown once,
//! with the docs' `docker run`, Kubernetes and Heroku snippets filled in), list, revoke.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use runops_proto::api::{AgentTokenCreate, AgentTokenCreated, AgentTokenListQuery};
use serde::Deserialize;

use super::layout::{self, Nav, page};
use super::session::{Empty, WebForm, WebUser, csrf_field};
use super::{WebPath, WebResult, see_other};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::AppState;

/// The ways to start an agent with `token`, as README.md and docs/deploy/ give them.
fn snippets(token: &str, tags: Option<&str>) -> Vec<(&'static str, String)> {
    let tags_env = tags.map(|t| format!(" --env TAGS={t}")).unwrap_or_default();
    let k8s_tags = tags
        .map(|t| format!(" --from-literal=TAGS=\"{t}\""))
        .unwrap_or_default();
    let heroku_tags = tags.map(|t| format!(" TAGS={t}")).unwrap_or_default();
    vec![
        (
            "Docker",
            format!(
                "export TOKEN='{token}'\ndocker run --env TOKEN{tags_env} -v runops-agent-spool:/var/lib/runops-agent \\\n  --stop-timeout 3600 runops/agent:latest"
            ),
        ),
        (
            "Kubernetes",
            format!(
                "kubectl create secret generic runner-secrets --from-literal=TOKEN='{token}'{k8s_tags}\nkubectl apply -k deploy/kubernetes/agent"
            ),
        ),
        (
            "Heroku",
            format!(
                "heroku config:set --app runops-agent TOKEN='{token}'{heroku_tags}\nheroku container:release --app runops-agent worker && heroku ps:scale --app runops-agent worker=1"
            ),
        ),
        (
            "Shell",
            format!(
                "TOKEN='{token}'{} runops agent",
                tags.map(|t| format!(" TAGS={t}")).unwrap_or_default()
            ),
        ),
    ]
}

async fn render(
    st: &AppState,
    user: &WebUser,
    created: Option<(&AgentTokenCreated, Option<&str>)>,
    error: Option<&ApiError>,
) -> WebResult<Markup> {
    let axum::Json(agents) = crate::http::org::list_agents(State(st.clone()), user.auth()).await?;
    let tokens = if user.is_admin() {
        let axum::Json(t) = crate::http::org::list_agent_tokens(
            State(st.clone()),
            user.auth(),
            ApiQuery(AgentTokenListQuery::default()),
        )
        .await?;
        Some(t)
    } else {
        None
    };
    Ok(page(
        "Agents",
        user,
        Nav::Agents,
        html! {
            h1 { "Agents" }
            section aria-labelledby="online-h" {
                h2 id="online-h" { "Online" }
                div class="scroll" {
                    table {
                        thead { tr {
                            th scope="col" { "Hostname" } th scope="col" { "Tags" } th scope="col" { "Version" }
                            th scope="col" { "Running tasks" } th scope="col" { "Connected" } th scope="col" { "Last seen" }
                        } }
                        tbody {
                            @for a in &agents {
                                tr {
                                    td { (a.hostname) }
                                    td { (a.tags.as_deref().unwrap_or("(untagged)")) }
                                    td { (a.version) }
                                    td {
                                        @for (i, id) in a.running_tasks.iter().enumerate() {
                                            @if i > 0 { ", " }
                                            a href={ "/tasks/" (id) } { (id) }
                                        }
                                        " (" (a.running_tasks.len()) " of " (a.concurrency) ")"
                                    }
                                    td { (layout::time(a.connected_at)) }
                                    td { (layout::time(a.last_seen)) }
                                }
                            }
                            @if agents.is_empty() { tr { td colspan="6" class="empty" { "No agent is connected." } } }
                        }
                    }
                }
            }
            @if let Some(tokens) = &tokens {
                section aria-labelledby="tokens-h" {
                    h2 id="tokens-h" { "Agent tokens" }
                    @if let Some(e) = error { (layout::error_box(e)) }
                    @if let Some((c, tags)) = created {
                        div class="notice" role="status" {
                            p { strong { "Agent token " (c.id) " created." } " Copy it now: it is shown only this once." }
                            label for="new-agent-token" { "Token" }
                            input id="new-agent-token" class="mono" readonly value=(c.token);
                            @for (name, text) in snippets(&c.token, tags) {
                                h3 { (name) }
                                pre class="snippet" tabindex="0" data-snippet=(name) { code { (text) } }
                                button type="button" class="copy" data-copy=(text) { "Copy " (name) " snippet" }
                            }
                        }
                    }
                    form method="post" action="/agents" class="card inline" {
                        (csrf_field(user))
                        div { label for="token-name" { "Name" } input id="token-name" name="name"; }
                        div { label for="token-tags" { "Tags (empty: untagged agents)" } input id="token-tags" name="tags"; }
                        button type="submit" { "Create agent token" }
                    }
                    div class="scroll" {
                        table {
                            thead { tr {
                                th scope="col" { "ID" } th scope="col" { "Name" } th scope="col" { "Tags" }
                                th scope="col" { "Created" } th scope="col" { "Revoked" } th scope="col" { span class="visually-hidden" { "Actions" } }
                            } }
                            tbody {
                                @for t in tokens {
                                    tr {
                                        td { (t.id) }
                                        td { (t.name.as_deref().unwrap_or("")) }
                                        td { (t.tags.as_deref().unwrap_or("(untagged)")) }
                                        td { (layout::time(t.created_at)) }
                                        td { (layout::time_opt(t.revoked_at)) }
                                        td {
                                            @if t.revoked_at.is_none() {
                                                form method="post" action={ "/agents/tokens/" (t.id) "/revoke" } {
                                                    (csrf_field(user))
                                                    button type="submit" class="danger" aria-label={ "Revoke agent token " (t.id) } { "Revoke" }
                                                }
                                            }
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

/// `GET /agents`.
pub async fn show(State(st): State<AppState>, user: WebUser) -> WebResult<Markup> {
    render(&st, &user, None, None).await
}

#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    tags: String,
}

/// `POST /agents`: creates an agent token and shows it once.
pub async fn create_token(
    State(st): State<AppState>,
    WebForm { user, form }: WebForm<TokenForm>,
) -> WebResult<Response> {
    let tags = Some(form.tags.trim().to_string()).filter(|t| !t.is_empty());
    let req = AgentTokenCreate {
        name: Some(form.name.trim().to_string()).filter(|n| !n.is_empty()),
        tags: tags.clone(),
    };
    match crate::http::org::create_agent_token(State(st.clone()), user.auth(), ApiJson(req)).await {
        Ok((_, axum::Json(created))) => {
            Ok(render(&st, &user, Some((&created, tags.as_deref())), None)
                .await?
                .into_response())
        }
        Err(e) => {
            let status = e.status;
            Ok((status, render(&st, &user, None, Some(&e)).await?).into_response())
        }
    }
}

/// `POST /agents/tokens/{id}/revoke`.
pub async fn revoke_token(
    State(st): State<AppState>,
    WebPath(raw): WebPath<String>,
    WebForm { user, .. }: WebForm<Empty>,
) -> WebResult<Response> {
    crate::http::org::revoke_agent_token(State(st), user.auth(), ApiPath(raw)).await?;
    Ok(see_other("/agents"))
}
