//! Identity-provider JWTs of tasks waiting for dispatch, kept in the database when
//! several replicas share it (a task created on one replica is claimed on another).
//! One process alone keeps them in memory (`crate::identity::HeldTokens`); with a
//! shared store it goes through this trait, and stores only what the server key sealed
//! (see [`crate::sealed`]). The rules (how long, how many) stay in `identity`.

use async_trait::async_trait;

use super::StoreResult;

/// A token to hold for a task.
#[derive(Debug, Clone)]
pub struct HeldRow {
    pub task_id: i64,
    /// The token, sealed with the server key.
    pub sealed: Vec<u8>,
    /// The creator's proof, sealed, for a key-bound token that has it.
    pub proof_sealed: Option<Vec<u8>>,
    /// Dropped after this (ms since the epoch).
    pub drop_after_ms: i64,
    /// `(org id, deadline in ms)` while the task waits in `created` for its proof.
    pub awaiting_proof: Option<(i64, i64)>,
}

#[async_trait]
pub trait HeldTokenStore: Send + Sync {
    /// Tokens held now that are not past `drop_after` (`now_ms`).
    async fn held_count(&self, now_ms: i64) -> StoreResult<u64>;
    /// Holds (or replaces) the token of a task.
    async fn hold_token(&self, row: &HeldRow) -> StoreResult<()>;
    /// `(sealed token, sealed proof)` of a task.
    async fn held_token(&self, task_id: i64) -> StoreResult<Option<(Vec<u8>, Option<Vec<u8>>)>>;
    /// The task waits for its creator's proof until `due_ms`.
    async fn await_held_proof(&self, task_id: i64, org_id: i64, due_ms: i64) -> StoreResult<()>;
    /// Stores the proof of a task that waits for one; false when it does not.
    async fn set_held_proof(&self, task_id: i64, proof_sealed: &[u8]) -> StoreResult<bool>;
    /// Removes and returns `(org id, task id)` of tasks whose proof is overdue at
    /// `now_ms`; also drops tokens past their `drop_after`.
    async fn take_overdue_proofs(&self, now_ms: i64) -> StoreResult<Vec<(i64, i64)>>;
    /// The task started or ended: its token goes.
    async fn release_token(&self, task_id: i64) -> StoreResult<()>;
}
