//! `/v1/targets`: create, list, show, update, delete.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use runops_proto::api::{Target, TargetCreate, TargetUpdate};

use super::AppState;
use crate::auth::UserAuth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::store::StoreError;
use crate::validate;

pub fn target_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("target `{name}` not found"))
        .hint("run `runops targets list` to see the targets you can use")
}

pub async fn create(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiJson(req): ApiJson<TargetCreate>,
) -> ApiResult<(StatusCode, Json<Target>)> {
    let target = validate::new_target(req, chrono::Utc::now())?;
    let created = st
        .store
        .create_target(auth.org_id(), &target)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(msg) => ApiError::conflict("conflict", msg)
                .hint("pick another name, or change it with `runops targets update`"),
            other => other.into(),
        })?;
    tracing::info!(target = %created.name, kind = %created.kind, by = %auth.user.email, "target created");
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn list(State(st): State<AppState>, auth: UserAuth) -> ApiResult<Json<Vec<Target>>> {
    Ok(Json(st.store.list_targets(auth.org_id()).await?))
}

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

pub async fn update(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<TargetUpdate>,
) -> ApiResult<Json<Target>> {
    let current = st
        .store
        .get_target(auth.org_id(), &name)
        .await?
        .ok_or_else(|| target_not_found(&name))?;
    let updated = validate::apply_update(current, req, chrono::Utc::now())?;
    let saved = st
        .store
        .update_target(auth.org_id(), &updated)
        .await?
        .ok_or_else(|| target_not_found(&name))?;
    tracing::info!(target = %saved.name, by = %auth.user.email, "target updated");
    Ok(Json(saved))
}

pub async fn remove(
    State(st): State<AppState>,
    auth: UserAuth,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    if !st.store.delete_target(auth.org_id(), &name).await? {
        return Err(target_not_found(&name));
    }
    tracing::info!(target = %name, by = %auth.user.email, "target deleted");
    Ok(StatusCode::NO_CONTENT)
}
