//! The caller's organisation: `/v1/me`, users, tokens, live agents and the audit log.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use runops_proto::api::{
    Agent, AgentToken, AgentTokenCreate, AgentTokenCreated, AgentTokenListQuery, AuditEvent,
    AuditQuery, Me, MeToken, TokenListQuery, User, UserCreate, UserCreated, UserToken,
    UserTokenCreate, UserTokenCreated,
};
use runops_proto::token::{TokenKind, format_agent_token, format_user_token};
use serde_json::json;

use super::AppState;
use super::agent::end_session;
use crate::audit::{self, Actor};
use crate::auth::{Credential, UserAuth, hash_token, random_secret};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::store::{NewUser, SessionEnd};
use crate::{now_ms, validate};

/// Longest agent-token name.
const MAX_TOKEN_NAME_LEN: usize = 256;

fn internal(e: anyhow::Error) -> ApiError {
    tracing::error!(error = %e, "cannot make a token");
    ApiError::internal()
}

/// `GET /v1/me`: who the caller is. `runops login` calls it to check its token, so
/// it is what the audit log records as a `login`.
#[utoipa::path(
    get,
    path = "/v1/me",
    operation_id = "me",
    tag = "users",
    summary = "The caller and the credential used",
    responses((status = 200, description = "The caller", body = Me)),
)]
pub async fn me(State(st): State<AppState>, auth: UserAuth) -> Json<Me> {
    let (via, token) = match &auth.via {
        Credential::ApiToken { id } => (
            json!({"via": "api-token", "token_id": id}),
            MeToken {
                kind: "api-token".into(),
                id: Some(*id),
                expires_at: None,
            },
        ),
        Credential::IdentityToken(jwt) => (
            json!({"via": "identity-provider"}),
            MeToken {
                kind: "identity-provider".into(),
                id: None,
                expires_at: crate::identity::token_expiry_ms(jwt)
                    .and_then(chrono::DateTime::from_timestamp_millis),
            },
        ),
        Credential::Sso => (
            json!({"via": "web-sso"}),
            MeToken {
                kind: "web-sso".into(),
                id: None,
                expires_at: None,
            },
        ),
        Credential::Slack { user_id } => (
            json!({"via": "slack", "slack_user": user_id}),
            MeToken {
                kind: "slack".into(),
                id: None,
                expires_at: None,
            },
        ),
    };
    audit::by_user(&st, &auth, "login", "user", &auth.user.email, via).await;
    Json(Me {
        user: auth.user,
        token: Some(token),
    })
}

#[utoipa::path(
    post,
    path = "/v1/users",
    operation_id = "users_create",
    tag = "users",
    summary = "Create a user and their first API token (admins)",
    request_body = UserCreate,
    responses((status = 201, description = "The user and their token, shown once", body = UserCreated)),
)]
pub async fn create_user(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiJson(req): ApiJson<UserCreate>,
) -> ApiResult<(StatusCode, Json<UserCreated>)> {
    auth.require_admin("create users")?;
    let role = req
        .role
        .unwrap_or_else(|| runops_proto::Role::DEFAULT.as_str().into());
    let email = req.email.trim().to_string();
    let role = validate::user_fields(&req.name, &email, &role)?;
    let groups: Vec<String> = req
        .groups
        .iter()
        .flat_map(|g| g.split(','))
        .map(|g| g.trim().to_string())
        .filter(|g| !g.is_empty())
        .collect();
    let now = now_ms();
    let new = NewUser {
        name: req.name.trim().to_string(),
        email,
        groups,
        role,
    };
    let user = st.store.create_user(auth.org_id(), &new, now).await?;
    let token = format_user_token(&random_secret().map_err(internal)?);
    st.store
        .create_token(
            auth.org_id(),
            TokenKind::User,
            Some(user.id),
            Some("first token"),
            &hash_token(&token),
            now,
        )
        .await?;
    tracing::info!(user = %user.email, role = %user.role, by = %auth.user.email, "user created");
    let detail = json!({"role": user.role, "groups": user.groups});
    audit::by_user(&st, &auth, "user.create", "user", &user.email, detail).await;
    Ok((StatusCode::CREATED, Json(UserCreated { user, token })))
}

#[utoipa::path(
    get,
    path = "/v1/users",
    operation_id = "users_list",
    tag = "users",
    summary = "List the users",
    responses((status = 200, description = "The users of the organisation", body = Vec<User>)),
)]
pub async fn list_users(State(st): State<AppState>, auth: UserAuth) -> ApiResult<Json<Vec<User>>> {
    Ok(Json(st.store.list_users(auth.org_id()).await?))
}

#[utoipa::path(
    post,
    path = "/v1/agent-tokens",
    operation_id = "agent_tokens_create",
    tag = "agents",
    summary = "Create an agent token for one tag set (admins)",
    request_body = AgentTokenCreate,
    responses((status = 201, description = "The token, shown once", body = AgentTokenCreated)),
)]
pub async fn create_agent_token(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiJson(req): ApiJson<AgentTokenCreate>,
) -> ApiResult<(StatusCode, Json<AgentTokenCreated>)> {
    // An agent token decides which tasks (and so which secrets) an agent receives.
    auth.require_admin("create agent tokens")?;
    let tags = validate::normalize_tags(req.tags)?;
    let name = req
        .name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    if name.as_ref().is_some_and(|n| n.len() > MAX_TOKEN_NAME_LEN) {
        return Err(ApiError::bad_request(format!(
            "token name is longer than {MAX_TOKEN_NAME_LEN} bytes"
        )));
    }
    let token = format_agent_token(&st.settings.public_url, &random_secret().map_err(internal)?);
    let id = st
        .store
        .create_agent_token(
            auth.org_id(),
            name.as_deref(),
            tags.as_deref(),
            &hash_token(&token),
            now_ms(),
        )
        .await?;
    tracing::info!(token_id = id, tags = tags.as_deref().unwrap_or(""), by = %auth.user.email, "agent token created");
    let detail = json!({"name": name, "tags": tags});
    audit::by_user(&st, &auth, "token.create", "agent-token", id, detail).await;
    Ok((StatusCode::CREATED, Json(AgentTokenCreated { id, token })))
}

#[utoipa::path(
    get,
    path = "/v1/agent-tokens",
    operation_id = "agent_tokens_list",
    tag = "agents",
    summary = "List the agent tokens (admins)",
    params(AgentTokenListQuery),
    responses((status = 200, description = "The agent tokens", body = Vec<AgentToken>)),
)]
pub async fn list_agent_tokens(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiQuery(q): ApiQuery<AgentTokenListQuery>,
) -> ApiResult<Json<Vec<AgentToken>>> {
    auth.require_admin("list agent tokens")?;
    let mut tokens = st.store.list_agent_tokens(auth.org_id()).await?;
    if q.untagged || q.tags.is_some() {
        let want = validate::normalize_tags(q.tags)?;
        tokens.retain(|t| t.tags == want);
    }
    Ok(Json(tokens))
}

#[utoipa::path(
    delete,
    path = "/v1/agent-tokens/{id}",
    operation_id = "agent_tokens_revoke",
    tag = "agents",
    summary = "Revoke an agent token; its agents are disconnected (admins)",
    params(("id" = i64, Path, description = "The agent token's id")),
    responses((status = 204, description = "Revoked")),
)]
pub async fn revoke_agent_token(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult<StatusCode> {
    auth.require_admin("revoke agent tokens")?;
    let not_found = || {
        ApiError::not_found(format!("agent token {raw} not found"))
            .hint("run `runops agents tokens` to see the ids")
    };
    let id: i64 = raw.parse().map_err(|_| not_found())?;
    let sessions = st
        .store
        .revoke_agent_token(auth.org_id(), id, now_ms())
        .await?
        .ok_or_else(not_found)?;
    tracing::info!(token_id = id, by = %auth.user.email, "agent token revoked");
    audit::by_user(&st, &auth, "token.revoke", "agent-token", id, json!({})).await;
    let actor = Actor::user(&auth);
    for s in sessions {
        end_session(&st, &s, &SessionEnd::TokenRevoked, &actor).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/agents",
    operation_id = "agents_list",
    tag = "agents",
    summary = "List the live agent sessions",
    responses((status = 200, description = "The live agents", body = Vec<Agent>)),
)]
pub async fn list_agents(
    State(st): State<AppState>,
    auth: UserAuth,
) -> ApiResult<Json<Vec<Agent>>> {
    Ok(Json(st.store.list_live_agents(auth.org_id()).await?))
}

/// `GET /v1/tokens`: the caller's API tokens; `?all=true`: every user's (admins).
#[utoipa::path(
    get,
    path = "/v1/tokens",
    operation_id = "tokens_list",
    tag = "users",
    summary = "List your API tokens (`all=true`: everyone's, admins)",
    params(TokenListQuery),
    responses((status = 200, description = "The tokens", body = Vec<UserToken>)),
)]
pub async fn list_tokens(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiQuery(q): ApiQuery<TokenListQuery>,
) -> ApiResult<Json<Vec<UserToken>>> {
    let all = q.all.unwrap_or(false);
    if all && !auth.is_admin() {
        return Err(
            ApiError::forbidden("only admins can list other users' tokens")
                .hint("run `runops tokens list` without --all to see your own"),
        );
    }
    let owner = (!all).then_some(auth.user.id);
    let mut tokens = st.store.list_user_tokens(auth.org_id(), owner).await?;
    let current = auth.token_id();
    for t in &mut tokens {
        t.current = Some(t.id) == current;
    }
    Ok(Json(tokens))
}

/// `POST /v1/tokens`: another API token for the caller, shown once.
#[utoipa::path(
    post,
    path = "/v1/tokens",
    operation_id = "tokens_create",
    tag = "users",
    summary = "Create another API token for yourself",
    request_body = UserTokenCreate,
    responses((status = 201, description = "The token, shown once", body = UserTokenCreated)),
)]
pub async fn create_token(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiJson(req): ApiJson<UserTokenCreate>,
) -> ApiResult<(StatusCode, Json<UserTokenCreated>)> {
    let name = req
        .name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    if name.as_ref().is_some_and(|n| n.len() > MAX_TOKEN_NAME_LEN) {
        return Err(ApiError::bad_request(format!(
            "token name is longer than {MAX_TOKEN_NAME_LEN} bytes"
        )));
    }
    let token = format_user_token(&random_secret().map_err(internal)?);
    let id = st
        .store
        .create_token(
            auth.org_id(),
            TokenKind::User,
            Some(auth.user.id),
            name.as_deref(),
            &hash_token(&token),
            now_ms(),
        )
        .await?;
    tracing::info!(token_id = id, by = %auth.user.email, "API token created");
    let detail = json!({"name": name, "user": auth.user.email});
    audit::by_user(&st, &auth, "token.create", "api-token", id, detail).await;
    Ok((StatusCode::CREATED, Json(UserTokenCreated { id, token })))
}

/// `DELETE /v1/tokens/{id}`: revokes one of the caller's API tokens; admins may revoke
/// anyone's in their org.
#[utoipa::path(
    delete,
    path = "/v1/tokens/{id}",
    operation_id = "tokens_revoke",
    tag = "users",
    summary = "Revoke an API token (another user's: admins)",
    params(("id" = i64, Path, description = "The API token's id")),
    responses((status = 204, description = "Revoked")),
)]
pub async fn revoke_token(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let not_found = || {
        ApiError::not_found(format!("API token {raw} not found")).hint(
            "run `runops tokens list` to see the ids (agent tokens: `runops agents revoke-token`)",
        )
    };
    let id: i64 = raw.parse().map_err(|_| not_found())?;
    let owner = (!auth.is_admin()).then_some(auth.user.id);
    if !st
        .store
        .revoke_user_token(auth.org_id(), id, owner, now_ms())
        .await?
    {
        // A non-admin naming another user's token: say so instead of "not found".
        if owner.is_some()
            && st
                .store
                .list_user_tokens(auth.org_id(), None)
                .await?
                .iter()
                .any(|t| t.id == id)
        {
            return Err(
                ApiError::forbidden("only admins can revoke other users' tokens")
                    .hint("ask an admin of your organisation"),
            );
        }
        return Err(not_found());
    }
    tracing::info!(token_id = id, by = %auth.user.email, "API token revoked");
    audit::by_user(&st, &auth, "token.revoke", "api-token", id, json!({})).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/audit?limit=&before=&action=`: the org's audit log, newest first (admins).
#[utoipa::path(
    get,
    path = "/v1/audit",
    operation_id = "audit_list",
    tag = "audit",
    summary = "The audit log, newest first (admins)",
    params(AuditQuery),
    responses((status = 200, description = "The events", body = Vec<AuditEvent>)),
)]
pub async fn list_audit(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEvent>>> {
    if !auth.is_admin() {
        return Err(ApiError::forbidden("only admins can read the audit log")
            .hint("ask an admin of your organisation"));
    }
    Ok(Json(st.store.list_audit(auth.org_id(), &q).await?))
}
