//! `/v1/targets`: create, list, show, update, delete.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use runops_proto::api::{Target, TargetCreate, TargetUpdate};
use serde_json::json;
use std::collections::BTreeMap;

use super::AppState;
use crate::audit;
use crate::auth::UserAuth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::store::StoreError;
use crate::validate;

pub fn target_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("target `{name}` not found"))
        .hint("run `runops targets list` to see the targets you can use")
}

/// Seals and stores a target's write-only config (`None` or an empty one removes it);
/// returns the keys now set. The values are never logged.
async fn store_config(
    st: &AppState,
    org_id: i64,
    name: &str,
    config: Option<BTreeMap<String, String>>,
) -> ApiResult<Vec<String>> {
    let config = config.filter(|c| !c.is_empty());
    let keys: Vec<String> = config
        .as_ref()
        .map(|c| c.keys().cloned().collect())
        .unwrap_or_default();
    let sealed = match &config {
        Some(c) => Some(st.sealer.seal(org_id, name, c).map_err(|e| {
            tracing::error!(target = %name, "cannot seal the target config: {e}");
            ApiError::internal()
        })?),
        None => None,
    };
    let stored = st
        .store
        .set_target_config(
            org_id,
            name,
            sealed.as_deref().map(|s| (s, keys.as_slice())),
        )
        .await?;
    if !stored {
        return Err(target_not_found(name));
    }
    Ok(keys)
}

/// Refuses reviewer groups no user of the org carries (see
/// [`validate::unknown_reviewer_groups`]): no one could ever approve for them.
async fn check_reviewer_groups(st: &AppState, org_id: i64, target: &Target) -> ApiResult<()> {
    if target.reviewers.is_empty() {
        return Ok(());
    }
    let users = st.store.list_users(org_id).await?;
    let unknown = validate::unknown_reviewer_groups(target, &users);
    if unknown.is_empty() {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "unknown reviewer group{} {}: no user of this organisation is in {}",
        if unknown.len() == 1 { "" } else { "s" },
        unknown
            .iter()
            .map(|g| format!("`{}`", crate::error::echo(g)))
            .collect::<Vec<_>>()
            .join(", "),
        if unknown.len() == 1 { "it" } else { "them" }
    ))
    .hint("check the spelling against `runops users list`; give users a group with `runops users create --groups`, or through your identity provider's groups claim"))
}

#[utoipa::path(
    post,
    path = "/v1/targets",
    operation_id = "targets_create",
    tag = "targets",
    summary = "Create a target (admins)",
    request_body = TargetCreate,
    responses((status = 201, description = "The target", body = Target)),
)]
pub async fn create(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiJson(mut req): ApiJson<TargetCreate>,
) -> ApiResult<(StatusCode, Json<Target>)> {
    // A target decides which agent gets its tasks and with which secrets: whoever may
    // change it may read those secrets, so only admins do.
    auth.require_admin("create targets")?;
    let config = req.config.take().map(validate::target_config).transpose()?;
    let target = validate::new_target(req, chrono::Utc::now())?;
    check_reviewer_groups(&st, auth.org_id(), &target).await?;
    let mut created = st
        .store
        .create_target(auth.org_id(), &target)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(msg) => ApiError::conflict("conflict", msg)
                .hint("pick another name, or change it with `runops targets update`"),
            other => other.into(),
        })?;
    if config.is_some() {
        match store_config(&st, auth.org_id(), &created.name, config).await {
            Ok(keys) => created.config_keys = keys,
            Err(e) => {
                // No half-created target: without its config it would fail every task.
                let _ = st.store.delete_target(auth.org_id(), &created.name).await;
                return Err(e);
            }
        }
    }
    tracing::info!(target = %created.name, kind = %created.kind, config_keys = created.config_keys.len(), by = %auth.user.email, "target created");
    let detail =
        json!({"type": created.kind, "tags": created.tags, "config_keys": created.config_keys});
    audit::by_user(&st, &auth, "target.create", "target", &created.name, detail).await;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    get,
    path = "/v1/targets",
    operation_id = "targets_list",
    tag = "targets",
    summary = "List the targets",
    responses((status = 200, description = "Every target of the organisation", body = Vec<Target>)),
)]
pub async fn list(State(st): State<AppState>, auth: UserAuth) -> ApiResult<Json<Vec<Target>>> {
    Ok(Json(st.store.list_targets(auth.org_id()).await?))
}

#[utoipa::path(
    get,
    path = "/v1/targets/{name}",
    operation_id = "targets_show",
    tag = "targets",
    summary = "Show a target",
    params(("name" = String, Path, description = "The target's name")),
    responses((status = 200, description = "The target", body = Target)),
)]
pub async fn show(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Target>> {
    st.store
        .get_target(auth.org_id(), &name)
        .await?
        .map(Json)
        .ok_or_else(|| target_not_found(&name))
}

#[utoipa::path(
    put,
    path = "/v1/targets/{name}",
    operation_id = "targets_update",
    tag = "targets",
    summary = "Change a target (admins)",
    params(("name" = String, Path, description = "The target's name")),
    request_body = TargetUpdate,
    responses((status = 200, description = "The target as changed", body = Target)),
)]
pub async fn update(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiPath(name): ApiPath<String>,
    ApiJson(mut req): ApiJson<TargetUpdate>,
) -> ApiResult<Json<Target>> {
    auth.require_admin("change targets")?;
    let config = req.config.take().map(validate::target_config).transpose()?;
    let current = st
        .store
        .get_target(auth.org_id(), &name)
        .await?
        .ok_or_else(|| target_not_found(&name))?;
    let before = serde_json::to_value(&current).unwrap_or_default();
    let updated = validate::apply_update(current, req, chrono::Utc::now())?;
    check_reviewer_groups(&st, auth.org_id(), &updated).await?;
    let mut saved = st
        .store
        .update_target(auth.org_id(), &updated)
        .await?
        .ok_or_else(|| target_not_found(&name))?;
    let config_set = config.is_some();
    if config_set {
        saved.config_keys = store_config(&st, auth.org_id(), &name, config).await?;
    }
    tracing::info!(target = %saved.name, by = %auth.user.email, "target updated");
    // Field names only: never a value (a config is write-only; its keys are enough).
    let after = serde_json::to_value(&saved).unwrap_or_default();
    let mut changed = audit::changed_fields(&before, &after, &["updated_at", "config_keys"]);
    let config_keys = config_set.then(|| saved.config_keys.clone());
    if config_keys.is_some() {
        changed.push("config".into());
    }
    let detail = json!({"changed": changed, "config_keys": config_keys});
    audit::by_user(&st, &auth, "target.update", "target", &saved.name, detail).await;
    Ok(Json(saved))
}

#[utoipa::path(
    delete,
    path = "/v1/targets/{name}",
    operation_id = "targets_delete",
    tag = "targets",
    summary = "Delete a target (admins)",
    params(("name" = String, Path, description = "The target's name")),
    responses((status = 204, description = "Deleted")),
)]
pub async fn remove(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    auth.require_admin("delete targets")?;
    if !st.store.delete_target(auth.org_id(), &name).await? {
        return Err(target_not_found(&name));
    }
    tracing::info!(target = %name, by = %auth.user.email, "target deleted");
    audit::by_user(&st, &auth, "target.delete", "target", &name, json!({})).await;
    Ok(StatusCode::NO_CONTENT)
}
