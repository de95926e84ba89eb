//! `/v1/templates`: list, show and run the templates of the git repository, pull it
//! now (admins), and the git host's webhook (shared secret, no user token).
//! A run makes its task through [`super::tasks::create_task`], the path of
//! `POST /v1/tasks`: reviews, audit, target checks and type rules all apply.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use runops_proto::api::{Task, TaskCreate};
use runops_proto::templates::{TaskTemplate, Template, TemplateList, TemplateRun};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::AppState;
use super::targets::target_not_found;
use crate::auth::UserAuth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::templates::{self, params};

#[utoipa::path(
    get,
    path = "/v1/templates",
    operation_id = "templates_list",
    tag = "templates",
    summary = "List the templates of the git repository, with the files that could not be read",
    responses((status = 200, description = "The templates", body = TemplateList)),
)]
pub async fn list(State(st): State<AppState>, _auth: UserAuth) -> Json<TemplateList> {
    Json(st.templates.list())
}

#[utoipa::path(
    get,
    path = "/v1/templates/{name}",
    operation_id = "templates_show",
    tag = "templates",
    summary = "Show a template: where it may run, its parameters and its body",
    params(("name" = String, Path, description = "The template's name")),
    responses((status = 200, description = "The template", body = Template)),
)]
pub async fn show(
    State(st): State<AppState>,
    _auth: UserAuth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Template>> {
    let snap = st.templates.current();
    let def = snap
        .templates
        .get(&name)
        .ok_or_else(|| template_not_found(&st, &name))?;
    Ok(Json(templates::summary(def, true)))
}

#[utoipa::path(
    post,
    path = "/v1/templates/{name}/run",
    operation_id = "templates_run",
    tag = "templates",
    summary = "Run a template on a target with checked parameters (a task, as POST /v1/tasks makes)",
    params(("name" = String, Path, description = "The template's name")),
    request_body = TemplateRun,
    responses((status = 201, description = "The task", body = Task)),
)]
pub async fn run(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<TemplateRun>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    let snap = st.templates.current();
    let def = snap
        .templates
        .get(&name)
        .ok_or_else(|| template_not_found(&st, &name))?;
    let target = st
        .store
        .get_target(auth.org_id(), &req.target)
        .await?
        .ok_or_else(|| target_not_found(&req.target))?;
    templates::may_run_on(def, &target).map_err(|e| {
        ApiError::forbidden(e).hint(format!(
            "see where it may run with `runops templates show {name}`"
        ))
    })?;
    let values = params::resolve(&def.params, &req.params).map_err(|e| {
        ApiError::bad_request(e.message).hint(format!(
            "see its parameters with `runops templates show {name}`; pass them as `--param NAME=VALUE`"
        ))
    })?;
    let script = params::render(&def.body, &values);
    let target = templates::with_template_review(target, def);
    let create = TaskCreate {
        target: req.target,
        script,
        message: req.message,
        kind: None,
    };
    let from = TaskTemplate {
        name: def.name.clone(),
        commit: snap.commit.clone().unwrap_or_default(),
        params: values,
    };
    let task = super::tasks::create_task(&st, &auth, target, create, Some(from)).await?;
    Ok((StatusCode::CREATED, Json(task)))
}

/// `POST /v1/templates/refresh` (admins): pulls now and answers with the result.
#[utoipa::path(
    post,
    path = "/v1/templates/refresh",
    operation_id = "templates_refresh",
    tag = "templates",
    summary = "Pull the templates repository now (admins)",
    responses((status = 200, description = "The templates after the pull", body = TemplateList)),
)]
pub async fn refresh(State(st): State<AppState>, auth: UserAuth) -> ApiResult<Json<TemplateList>> {
    auth.require_admin("refresh the templates")?;
    if !st.templates.is_configured() {
        return Err(not_configured());
    }
    st.templates.refresh().await;
    Ok(Json(st.templates.list()))
}

/// `POST /v1/templates/webhook`: a git host says the repository changed. Authenticated
/// by the shared secret (`--templates-webhook-secret`): GitHub's `X-Hub-Signature-256`
/// (HMAC-SHA256 of the body) or GitLab's `X-Gitlab-Token`. The pull runs in the
/// background; the host gets `202` at once.
#[utoipa::path(
    post,
    path = "/v1/templates/webhook",
    operation_id = "templates_webhook",
    tag = "templates",
    summary = "The git host's push webhook: authenticated by the shared secret (X-Hub-Signature-256 or X-Gitlab-Token), not a token",
    request_body(content = String, content_type = "application/json", description = "The git host's push event (its content is not read)"),
    responses((status = 202, description = "A pull was requested", body = serde_json::Value)),
)]
pub async fn webhook(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let Some(secret) = st.templates.webhook_secret() else {
        return Err(ApiError::not_found("the templates webhook is not enabled")
            .hint("start the server with --templates-webhook-secret"));
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if !webhook_authentic(
        secret,
        header("x-hub-signature-256"),
        header("x-gitlab-token"),
        &body,
    ) {
        tracing::warn!("templates webhook refused: wrong or missing signature");
        return Err(ApiError::unauthorized(
            "the webhook's signature (X-Hub-Signature-256) or token (X-Gitlab-Token) does not match the shared secret",
        )
        .hint("set the same secret in the git host's webhook and in --templates-webhook-secret"));
    }
    st.templates.wake();
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"status": "pull requested"})),
    ))
}

/// True when `signature` is `sha256=<hex HMAC-SHA256 of body>` or `token` is the
/// secret, compared in constant time.
pub fn webhook_authentic(
    secret: &str,
    signature: Option<&str>,
    token: Option<&str>,
    body: &[u8],
) -> bool {
    if let Some(sig) = signature.and_then(|s| s.trim().strip_prefix("sha256="))
        && let Ok(given) = hex::decode(sig)
    {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(body);
        return mac.verify_slice(&given).is_ok();
    }
    token.is_some_and(|t| bool::from(t.as_bytes().ct_eq(secret.as_bytes())))
}

fn not_configured() -> ApiError {
    ApiError::not_found("this server has no templates repository")
        .hint("start the server with --templates-repo URL (see docs/templates.md)")
}

fn template_not_found(st: &AppState, name: &str) -> ApiError {
    if !st.templates.is_configured() {
        return not_configured();
    }
    let snap = st.templates.current();
    match snap.broken.iter().find(|b| {
        b.path
            .rsplit('/')
            .next()
            .is_some_and(|f| templates::header::template_name(f) == name)
    }) {
        Some(b) => ApiError::not_found(format!(
            "template `{}` cannot be used: {}{}: {}",
            crate::error::echo(name),
            b.path,
            b.line.map(|l| format!(":{l}")).unwrap_or_default(),
            b.error
        ))
        .hint("fix the file in the templates repository"),
        None => ApiError::not_found(format!("template `{}` not found", crate::error::echo(name)))
            .hint("run `runops templates list` to see the templates"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_signature_and_gitlab_token_are_checked() {
        let body = b"{\"ref\":\"refs/heads/main\"}";
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(webhook_authentic("s3cret", Some(&good), None, body));
        assert!(!webhook_authentic("other", Some(&good), None, body));
        assert!(!webhook_authentic("s3cret", Some(&good), None, b"{}"));
        assert!(!webhook_authentic("s3cret", Some("sha256=zz"), None, body));
        assert!(webhook_authentic("s3cret", None, Some("s3cret"), body));
        assert!(!webhook_authentic("s3cret", None, Some("s3cre"), body));
        assert!(!webhook_authentic("s3cret", None, None, body));
    }
}
