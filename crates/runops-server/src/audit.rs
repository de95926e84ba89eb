//! The audit log: who did what, when, from where.
//!
//! Handlers record one event per security-relevant change with a one-line call
//! ([`by_user`], or [`record`] with an [`Actor`] for agents and the server itself);
//! `GET /v1/audit` (admins) reads them back newest first. Recorded: `login` (`GET
//! /v1/me`, which `runops login` calls), `user.create` (by an admin, or on first sign-in
//! with the identity provider), `token.create`/`token.revoke` (API and agent tokens),
//! `target.create`/`target.update` (the names of the fields that changed)/`target.delete`,
//! `task.create`/`task.kill`, `task.approve`/`task.reject`/`task.force_approve`/`task.run`
//! (reviews), `webhook.create` (the URL's host only)/`webhook.delete`, `agent.connect`/`agent.disconnect`/`agent.lost`/
//! `agent.token-revoked`, and by `system`: `log.purge` (log retention), `task.review_expired` and the
//! replacement of an unused first admin token at start-up. A detail never holds a secret value: a target's config
//! appears as its keys only, tokens by id only.
//!
//! The address is the TCP peer's IP. `X-Forwarded-For` is deliberately ignored (any
//! client can send it); behind a proxy the proxy's address is recorded.
//!
//! Recording is best effort after the action succeeded: if the store fails, the error
//! is logged and the request still answers (its change is already done).

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use serde_json::Value;
use std::net::SocketAddr;

use crate::auth::{AgentAuth, UserAuth};
use crate::http::AppState;
use crate::now_ms;
use crate::store::NewAuditEvent;

/// The IP address of the connection's peer, when the server was started with
/// connect info (always, through [`crate::Server::start`]).
pub fn peer_ip(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
}

/// Who did it.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The user's e-mail; `None` for agents and the server.
    pub email: Option<String>,
    /// `user`, `agent` or `system`.
    pub kind: &'static str,
    pub remote_addr: Option<String>,
}

impl Actor {
    pub fn user(auth: &UserAuth) -> Actor {
        Actor {
            email: Some(auth.user.email.clone()),
            kind: "user",
            remote_addr: auth.remote_addr.clone(),
        }
    }

    pub fn agent(auth: &AgentAuth) -> Actor {
        Actor {
            email: None,
            kind: "agent",
            remote_addr: auth.remote_addr.clone(),
        }
    }

    /// The server itself (the lease reaper...).
    pub fn system() -> Actor {
        Actor {
            email: None,
            kind: "system",
            remote_addr: None,
        }
    }
}

/// Appends one event to `org_id`'s log; a store failure is logged, not returned.
pub async fn record(
    st: &AppState,
    org_id: i64,
    actor: &Actor,
    action: &'static str,
    object_kind: &'static str,
    object_id: impl ToString,
    detail: Value,
) {
    let event = NewAuditEvent {
        org_id,
        at_ms: now_ms(),
        actor_email: actor.email.clone(),
        actor_kind: actor.kind,
        action,
        object_kind: Some(object_kind),
        object_id: Some(object_id.to_string()),
        remote_addr: actor.remote_addr.clone(),
        detail,
    };
    if let Err(e) = st.store.record_audit(&event).await {
        tracing::error!(error = %e, action, org_id, "cannot write the audit log");
    }
}

/// [`record`] for a user's request, in the user's org.
pub async fn by_user(
    st: &AppState,
    auth: &UserAuth,
    action: &'static str,
    object_kind: &'static str,
    object_id: impl ToString,
    detail: Value,
) {
    record(
        st,
        auth.org_id(),
        &Actor::user(auth),
        action,
        object_kind,
        object_id,
        detail,
    )
    .await;
}

/// The names of the top-level fields whose values differ between two JSON objects
/// (a target before and after an update); never the values.
pub fn changed_fields(before: &Value, after: &Value, ignore: &[&str]) -> Vec<String> {
    let empty = serde_json::Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !ignore.contains(&k.as_str()) && b.get(*k) != a.get(*k))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_fields_names_only_the_differences() {
        let before = json!({"a": 1, "b": "x", "c": null, "updated_at": 1});
        let after = json!({"a": 1, "b": "y", "d": true, "updated_at": 2});
        assert_eq!(
            changed_fields(&before, &after, &["updated_at"]),
            vec!["b".to_string(), "c".to_string(), "d".to_string()]
        );
        assert!(changed_fields(&before, &before, &[]).is_empty());
    }
}
