//! [`ReviewStore`] on SQLite: the `task_reviews` table and the review columns of
//! `tasks` (migration 0008). The rules are [`crate::review`]'s; this only reads and
//! writes rows, each change in one transaction on the single writer.

use super::*;
use crate::review::{self, ReviewMode, ReviewRule};
use crate::store::reviews::*;
use runops_proto::api::ReviewEntry;

macro_rules! review_cols {
    () => {
        "review, reviewers_json, min_approvals, approval_ttl_secs, review_ttl_secs, review_sha256, approved_at"
    };
}

/// The review columns of a task row (without its entries); `None` for a task of an
/// unreviewed target.
fn review_head(row: &(impl Cols + ?Sized)) -> StoreResult<Option<TaskReviewRow>> {
    let mode: String = row.col("review")?;
    let Some(mode) = ReviewMode::parse(&mode) else {
        return Err(StoreError::Corrupt(format!("task review mode `{mode}`")));
    };
    if mode == ReviewMode::None {
        return Ok(None);
    }
    Ok(Some(TaskReviewRow {
        rule: ReviewRule {
            mode,
            groups: json_list(&row.col::<String>("reviewers_json")?)?,
            min_approvals: row
                .col::<Option<i64>>("min_approvals")?
                .and_then(|n| u32::try_from(n).ok()),
        },
        sha256: row
            .col::<Option<String>>("review_sha256")?
            .unwrap_or_default(),
        approval_ttl_secs: u64_of(row.col("approval_ttl_secs")?),
        review_ttl_secs: u64_of(row.col("review_ttl_secs")?),
        approved_at_ms: row.col("approved_at")?,
        entries: Vec::new(),
    }))
}

const REVIEW_HEAD_SQL: &str = concat!(
    "SELECT ",
    review_cols!(),
    " FROM tasks WHERE org_id = ? AND id = ?"
);

const REVIEW_ENTRIES_SQL: &str = "SELECT user_email, groups_json, verdict, comment, forced, sha256, created_at \
     FROM task_reviews WHERE task_id = ? ORDER BY id";

fn review_entry_from_row(r: &(impl Cols + ?Sized)) -> StoreResult<ReviewEntry> {
    Ok(ReviewEntry {
        user: r.col("user_email")?,
        groups: json_list(&r.col::<String>("groups_json")?)?,
        verdict: r.col("verdict")?,
        comment: r.col("comment")?,
        forced: r.col::<i64>("forced")? != 0,
        sha256: r.col("sha256")?,
        at: ts(r.col("created_at")?)?,
    })
}

async fn review_entries(
    conn: &mut sqlx::SqliteConnection,
    task_id: i64,
) -> StoreResult<Vec<ReviewEntry>> {
    let rows = sqlx::query(REVIEW_ENTRIES_SQL)
        .bind(task_id)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(review_entry_from_row).collect()
}

/// A task's review row with its entries, read on `conn`.
async fn review_of(
    conn: &mut sqlx::SqliteConnection,
    org_id: i64,
    task_id: i64,
) -> StoreResult<Option<TaskReviewRow>> {
    let row = sqlx::query(REVIEW_HEAD_SQL)
        .bind(org_id)
        .bind(task_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let Some(mut head) = review_head(&row)? else {
        return Ok(None);
    };
    head.entries = review_entries(conn, task_id).await?;
    Ok(Some(head))
}

#[async_trait]
impl ReviewStore for SqliteStore {
    async fn task_review(&self, org_id: i64, task_id: i64) -> StoreResult<Option<TaskReviewRow>> {
        // Read for every task that ends (its notification, the CLI's last frame): a
        // read without a thread hop (`sqlite::inline`).
        self.inline.read(|c| {
            let head = read_optional(c, REVIEW_HEAD_SQL, (org_id, task_id), |r| review_head(r))?;
            let Some(Some(mut head)) = head else {
                return Ok(None);
            };
            head.entries = read_all(c, REVIEW_ENTRIES_SQL, [task_id], |r| {
                review_entry_from_row(r)
            })?;
            Ok(Some(head))
        })
    }

    async fn record_review(
        &self,
        org_id: i64,
        task_id: i64,
        new: &NewReview,
        now_ms: i64,
    ) -> StoreResult<Decided<ReviewOutcome>> {
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin().await?;
        let Some((rec, state)) = locked_task(&mut tx, org_id, task_id).await? else {
            return Ok(Decided::only(ReviewOutcome::NotFound));
        };
        let Some(mut head) = review_of(&mut tx, org_id, task_id).await? else {
            return Ok(Decided::only(ReviewOutcome::NotReviewed));
        };
        if state.status != TaskStatus::PendingReview {
            return Ok(Decided::only(ReviewOutcome::NotPending(state.status)));
        }
        if let Some(seen) = &new.sha256_seen
            && !seen.eq_ignore_ascii_case(&head.sha256)
        {
            return Ok(Decided::only(ReviewOutcome::DigestMismatch {
                stored: head.sha256.clone(),
            }));
        }
        let cast: Vec<review::CastReview> = head.entries.iter().map(review::cast_of).collect();
        match review::may_review(&head.rule, &rec.task.user, &new.user, &cast) {
            Ok(()) => {}
            // An admin forcing needs no group, but is still not the creator and
            // reviews once.
            Err(review::Refusal::NotInGroups { .. }) if new.forced => {}
            Err(refusal) => return Ok(Decided::only(ReviewOutcome::Refused(refusal))),
        }
        let groups = review::counted_groups(&head.rule, &new.user);
        let verdict = if new.approved {
            review::VERDICT_APPROVED
        } else {
            review::VERDICT_REJECTED
        };
        sqlx::query(
            "INSERT INTO task_reviews (task_id, org_id, user_id, user_email, groups_json, verdict, comment, forced, sha256, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(task_id)
        .bind(org_id)
        .bind(new.user.id)
        .bind(&new.user.email)
        .bind(to_json_list(&groups))
        .bind(verdict)
        .bind(&new.comment)
        .bind(new.forced)
        .bind(&head.sha256)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        head.entries.push(ReviewEntry {
            user: new.user.email.clone(),
            groups,
            verdict: verdict.to_string(),
            comment: new.comment.clone(),
            forced: new.forced,
            sha256: head.sha256.clone(),
            at: ts(now_ms)?,
        });
        // The status change, if any, is the lifecycle's.
        let cast: Vec<review::CastReview> = head.entries.iter().map(review::cast_of).collect();
        let approved_now = new.approved && review::is_met(&head.rule, &cast);
        let message;
        let event = if !new.approved {
            let reason = new.comment.as_deref().unwrap_or_default();
            message = format!("rejected by {}: {reason}", new.user.email);
            Some(Event::ReviewRejected { reason: &message })
        } else if approved_now {
            Some(Event::ReviewApproved { forced: new.forced })
        } else {
            None
        };
        let mut effects = None;
        let mut task = rec.clone();
        if let Some(event) = event {
            let d = lifecycle::decide(&state, &event).map_err(|r| {
                StoreError::Corrupt(format!("task {task_id}: review refused: {r:?}"))
            })?;
            if let Some(written) = write_task(&mut tx, task_id, &d.write, now_ms).await? {
                task = written;
            }
            if approved_now {
                sqlx::query("UPDATE tasks SET approved_at = ? WHERE id = ?")
                    .bind(now_ms)
                    .bind(task_id)
                    .execute(&mut *tx)
                    .await?;
                head.approved_at_ms = Some(now_ms);
            }
            effects = TaskEffects::for_task(&rec, d.effects);
        }
        tx.commit().await?;
        let outcome = if new.approved {
            ReviewOutcome::Approved {
                task: Box::new(task),
                review: Box::new(head),
                approved_now,
            }
        } else {
            ReviewOutcome::Rejected {
                task: Box::new(task),
                review: Box::new(head),
            }
        };
        Ok(Decided { outcome, effects })
    }

    async fn run_approved_task(
        &self,
        org_id: i64,
        task_id: i64,
        with_jwt: bool,
        now_ms: i64,
    ) -> StoreResult<Decided<RunOutcome>> {
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin().await?;
        let Some((rec, state)) = locked_task(&mut tx, org_id, task_id).await? else {
            return Ok(Decided::only(RunOutcome::NotFound));
        };
        // The creator's proof, when the token is key-bound, came with the run request.
        let d = match lifecycle::decide(
            &state,
            &Event::RunApproved {
                awaits_proof: false,
            },
        ) {
            Ok(d) => d,
            Err(_) => return Ok(Decided::only(RunOutcome::NotApproved(state.status))),
        };
        sqlx::query("UPDATE tasks SET run_requested_at = ?, created_with_jwt = ? WHERE id = ?")
            .bind(now_ms)
            .bind(with_jwt)
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
        let task = write_task(&mut tx, task_id, &d.write, now_ms)
            .await?
            .unwrap_or(rec);
        tx.commit().await?;
        let effects = TaskEffects::for_task(&task, d.effects);
        Ok(Decided {
            outcome: RunOutcome::Ready(Box::new(task)),
            effects,
        })
    }

    async fn tasks_in_review(&self, org_id: i64) -> StoreResult<Vec<(TaskRecord, TaskReviewRow)>> {
        let mut conn = self.reader.acquire().await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            task_cols!(),
            ", ",
            review_cols!(),
            " FROM tasks WHERE status = ? AND org_id = ? ORDER BY id"
        ))
        .bind(TaskStatus::PendingReview.as_str())
        .bind(org_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let rec = task_from_row(row)?;
            let Some(mut head) = review_head(row)? else {
                continue;
            };
            head.entries = review_entries(&mut conn, rec.task.id).await?;
            out.push((rec, head));
        }
        Ok(out)
    }

    async fn expire_reviews(&self, now_ms: i64) -> StoreResult<Vec<ExpiredReview>> {
        let mut writer = self.writer.lock().await?;
        let mut tx = writer.begin().await?;
        let rows = sqlx::query(
            "SELECT id, org_id, status, review_ttl_secs, approval_ttl_secs FROM tasks \
             WHERE (status = ? AND created_at + review_ttl_secs * 1000 <= ?) \
                OR (status = ? AND approved_at + approval_ttl_secs * 1000 <= ?)",
        )
        .bind(TaskStatus::PendingReview.as_str())
        .bind(now_ms)
        .bind(TaskStatus::Approved.as_str())
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await?;
        let mut expired = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.try_get("id")?;
            let org_id: i64 = row.try_get("org_id")?;
            let Some((rec, state)) = locked_task(&mut tx, org_id, id).await? else {
                continue;
            };
            let event = if state.status == TaskStatus::Approved {
                Event::ApprovalExpired {
                    ttl_secs: u64_of(row.try_get("approval_ttl_secs")?),
                }
            } else {
                Event::ReviewExpired {
                    ttl_secs: u64_of(row.try_get("review_ttl_secs")?),
                }
            };
            let Ok(d) = lifecycle::decide(&state, &event) else {
                continue;
            };
            write_task(&mut tx, id, &d.write, now_ms).await?;
            expired.push(ExpiredReview {
                org_id,
                task_id: id,
                was: state.status,
                effects: TaskEffects::for_task(&rec, d.effects),
            });
        }
        tx.commit().await?;
        Ok(expired)
    }
}
