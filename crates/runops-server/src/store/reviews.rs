//! The store's part of reviews: a task's review rule and reviews, recording an
//! approval or a rejection, running an approved task, and expiring waits. Each change
//! is one transaction; the decisions (may this user review? is the rule met?) are the
//! pure functions of [`crate::review`].

use async_trait::async_trait;
use runops_proto::TaskStatus;
use runops_proto::api::{ReviewEntry, User};

use super::{Decided, StoreResult, TaskEffects, TaskRecord};
use crate::review::{Refusal, ReviewRule};

/// A task's review rule (as snapshotted at its creation) and its reviews.
#[derive(Debug, Clone)]
pub struct TaskReviewRow {
    pub rule: ReviewRule,
    /// SHA-256 of what is reviewed (see [`crate::review::digest`]).
    pub sha256: String,
    pub approval_ttl_secs: u64,
    pub review_ttl_secs: u64,
    pub approved_at_ms: Option<i64>,
    /// Oldest first.
    pub entries: Vec<ReviewEntry>,
}

/// An approval or rejection to record.
#[derive(Debug, Clone)]
pub struct NewReview {
    pub user: User,
    pub approved: bool,
    pub comment: Option<String>,
    /// An admin's approval whatever the rule says (the handler checked the role).
    pub forced: bool,
    /// The digest the reviewer looked at, when they sent it.
    pub sha256_seen: Option<String>,
}

/// Result of [`ReviewStore::record_review`].
#[derive(Debug, Clone)]
pub enum ReviewOutcome {
    /// Recorded; `approved_now` when this approval met the rule (the task is `approved`).
    Approved {
        task: Box<TaskRecord>,
        review: Box<TaskReviewRow>,
        approved_now: bool,
    },
    /// Recorded; the task is `rejected`.
    Rejected {
        task: Box<TaskRecord>,
        review: Box<TaskReviewRow>,
    },
    /// This user may not review this task.
    Refused(Refusal),
    /// The task does not wait for reviews (any more): its status.
    NotPending(TaskStatus),
    /// The task's target did not require reviews.
    NotReviewed,
    /// The reviewer looked at another version of the task than the one stored.
    DigestMismatch {
        stored: String,
    },
    NotFound,
}

/// Result of [`ReviewStore::run_approved_task`].
#[derive(Debug, Clone)]
pub enum RunOutcome {
    /// `approved` → `ready`.
    Ready(Box<TaskRecord>),
    /// It is not `approved`: its status.
    NotApproved(TaskStatus),
    NotFound,
}

/// A task whose wait ran out; it is `failure`/`review-expired` now.
#[derive(Debug, Clone)]
pub struct ExpiredReview {
    pub org_id: i64,
    pub task_id: i64,
    /// `pending-review` (no approval in time) or `approved` (not run in time).
    pub was: TaskStatus,
    /// What the lifecycle decided the handler does (count, notify, wake).
    pub effects: Option<TaskEffects>,
}

#[async_trait]
pub trait ReviewStore: Send + Sync {
    /// The review rule and reviews of a task of the org; `None` when it has none (its
    /// target was not reviewed) or does not exist.
    async fn task_review(&self, org_id: i64, task_id: i64) -> StoreResult<Option<TaskReviewRow>>;
    /// Records an approval or a rejection of a `pending-review` task, and moves the task
    /// to `approved` (rule met) or `rejected`.
    async fn record_review(
        &self,
        org_id: i64,
        task_id: i64,
        review: &NewReview,
        now_ms: i64,
    ) -> StoreResult<Decided<ReviewOutcome>>;
    /// The creator runs an approved task: `approved` → `ready`. `with_jwt`: the run
    /// request came with an identity-provider JWT, which the caller holds for the agent.
    async fn run_approved_task(
        &self,
        org_id: i64,
        task_id: i64,
        with_jwt: bool,
        now_ms: i64,
    ) -> StoreResult<Decided<RunOutcome>>;
    /// The org's tasks waiting for reviews, oldest first, with their reviews.
    async fn tasks_in_review(&self, org_id: i64) -> StoreResult<Vec<(TaskRecord, TaskReviewRow)>>;
    /// Ends the tasks whose review wait or approval ran out by `now_ms` as
    /// `failure`/`review-expired`.
    async fn expire_reviews(&self, now_ms: i64) -> StoreResult<Vec<ExpiredReview>>;
}
