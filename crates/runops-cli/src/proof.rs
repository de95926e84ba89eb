//! Task proofs for identity tokens bound to a key (`cnf.jkt`, RFC 9449 DPoP).
//!
//! The server creates a task of such a token in status `created`; this CLI then signs a
//! proof over the task (its id, target, type and the script it sent) with the private key
//! the token is bound to and sends it (`POST /v1/tasks/{id}/proof`). Without the key a
//! captured token makes no agent run anything. The key is a PEM file named by
//! `runops login --dpop-key FILE` or `RUNOPS_DPOP_KEY`.

use crate::config;
use crate::error::{CliError, CliResult};
use runops_client::Client;
use runops_jwt::proof::{PROOF_KEY_HINT, ProofKey, TaskBinding};
use runops_proto::api::{Task, TaskCreate};
use std::path::Path;

/// The thumbprint a JWT is bound to, read without verifying it (the server and the agent
/// verify; this is only for telling the user early). `None` for API tokens.
pub(crate) fn bound_key(token: &str) -> Option<String> {
    if !runops_jwt::looks_like_jwt(token.trim()) {
        return None;
    }
    runops_jwt::confirmation_jkt(&runops_jwt::claims_of_verified_token(token.trim()))
        .ok()
        .flatten()
}

/// Reads the task-proof key at `path`.
pub(crate) fn load_key(path: &Path) -> CliResult<ProofKey> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::new(format!("cannot read the DPoP key {}: {e}", path.display()))
            .with_hint("pass the PEM file of the private key your identity token is bound to")
    })?;
    ProofKey::from_pem(&text).map_err(|why| {
        CliError::new(format!(
            "the DPoP key {} cannot be used: {why}",
            path.display()
        ))
        .with_hint(PROOF_KEY_HINT)
    })
}

/// What to do when a task needs a proof and no key is configured.
const NO_KEY_HINT: &str = "log in with `runops login --url URL --token JWT --dpop-key FILE` (or set RUNOPS_DPOP_KEY=FILE) naming the private key your identity token is bound to; the task fails by itself if no proof comes";

/// Proves `task` (just created from `req`, status `created`) with the configured key;
/// returns the task as the server has it then (`ready`).
pub(crate) async fn prove_created_task(
    client: &Client,
    req: &TaskCreate,
    task: Task,
) -> CliResult<Task> {
    let id = task.id;
    let Some(path) = config::dpop_key_path()? else {
        return Err(CliError::new(format!(
            "task {id} waits for a proof signed with the key your identity token is bound to (`cnf.jkt`), and no key is configured"
        ))
        .with_hint(NO_KEY_HINT));
    };
    let key = load_key(&path)?;
    let token = config::load_credentials()?.token;
    if let Some(jkt) = bound_key(&token)
        && jkt != key.thumbprint()
    {
        return Err(CliError::new(format!(
            "task {id} needs a proof signed with key {jkt}, but {} is key {}",
            path.display(),
            key.thumbprint()
        ))
        .with_hint(NO_KEY_HINT));
    }
    // Sign what we asked for, not what the server says it created.
    if task.target != req.target
        || req.kind.as_deref().is_some_and(|k| k.trim() != task.kind)
        || task.script != req.script
    {
        return Err(CliError::new(format!(
            "the server created task {id} differently from what was asked (target, type or script); it is not signed and will not run"
        )));
    }
    let binding = TaskBinding {
        task_id: id,
        target: &req.target,
        kind: &task.kind,
        script: &req.script,
    };
    let proof = key.sign(&token, &binding).map_err(CliError::new)?;
    Ok(client.prove_task(id, &proof).await?)
}

/// The proof `tasks run` sends for an approved task when the credentials are an identity
/// token bound to a key: the agent checks the token sent now, so it needs a proof made
/// now. `None` with any other credential. `asked`: what `tasks create` sent, which the
/// task must still be before we sign it.
pub(crate) fn run_proof(task: &Task, asked: Option<&TaskCreate>) -> CliResult<Option<String>> {
    let token = config::load_credentials()?.token;
    let Some(jkt) = bound_key(&token) else {
        return Ok(None);
    };
    let id = task.id;
    let Some(path) = config::dpop_key_path()? else {
        return Err(CliError::new(format!(
            "running task {id} needs a proof signed with the key your identity token is bound to (`cnf.jkt`), and no key is configured"
        ))
        .with_hint(NO_KEY_HINT));
    };
    let key = load_key(&path)?;
    if jkt != key.thumbprint() {
        return Err(CliError::new(format!(
            "task {id} needs a proof signed with key {jkt}, but {} is key {}",
            path.display(),
            key.thumbprint()
        ))
        .with_hint(NO_KEY_HINT));
    }
    if let Some(req) = asked
        && (task.target != req.target
            || req.kind.as_deref().is_some_and(|k| k.trim() != task.kind)
            || task.script != req.script)
    {
        return Err(CliError::new(format!(
            "the server holds task {id} differently from what was asked (target, type or script); it is not signed and will not run"
        )));
    }
    let binding = TaskBinding {
        task_id: id,
        target: &task.target,
        kind: &task.kind,
        script: &task.script,
    };
    key.sign(&token, &binding).map(Some).map_err(CliError::new)
}
