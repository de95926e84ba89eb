//! Reviews from the command line: `runops reviews` (the inbox), `runops tasks approve`,
//! `reject` and `run`, the review part of `tasks show`, and the wait of `tasks create`
//! on a reviewed target (`waiting for review: 0 of 1 (group dba)`, a spinner on a
//! terminal, one line per change otherwise) until the task is approved, when the CLI
//! runs it with the creator's current credentials.

use crate::error::{CliError, CliResult};
use crate::output::{self, cell};
use crate::spinner::Spinner;
use chrono::Utc;
use runops_client::Client;
use runops_proto::TaskStatus;
use runops_proto::api::{Task, TaskApprove, TaskCreate, TaskReject, TaskReview, TaskRun};
use std::io::IsTerminal;
use std::time::Duration;

/// How often a waiting `tasks create` asks whether its task was reviewed: quick enough
/// that the task runs within a second or two of the last approval.
const REVIEW_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Longest the wait keeps retrying an unreachable server before giving up.
const REVIEW_WAIT_GIVE_UP: Duration = Duration::from_secs(120);

#[derive(clap::Args, Debug)]
pub struct ReviewsArgs {
    /// Every task waiting for review in the organisation, not only those you may review.
    #[arg(long)]
    pub all: bool,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl ReviewsArgs {
    pub async fn run(self) -> CliResult<u8> {
        let client = crate::connect()?;
        let tasks = client.list_reviews(self.all).await?;
        if self.json {
            output::print_json(&tasks)?;
            return Ok(0);
        }
        if tasks.is_empty() {
            output::note(if self.all {
                "no task is waiting for review"
            } else {
                "no task is waiting for your review (`runops reviews --all` shows every pending one)"
            });
            return Ok(0);
        }
        output::print(&inbox_table(&tasks, Utc::now()))?;
        output::note(
            "approve with `runops tasks approve ID`, reject with `runops tasks reject ID --comment TEXT`; `runops tasks show ID` shows the whole script",
        );
        Ok(0)
    }
}

/// The script's first line; `…` marks more lines.
fn first_line(script: &str) -> String {
    let mut lines = script.trim().lines();
    let first = cell(lines.next().unwrap_or(""));
    if lines.next().is_some() && !first.ends_with('…') {
        format!("{first}…")
    } else {
        first
    }
}

pub(crate) fn inbox_table(tasks: &[Task], now: chrono::DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                cell(&t.target),
                cell(&t.user),
                output::ago(t.created_at, now)
                    .trim_end_matches(" ago")
                    .to_string(),
                t.review
                    .as_ref()
                    .map(|r| cell(&r.progress()))
                    .unwrap_or_else(|| "-".into()),
                first_line(&t.script),
            ]
        })
        .collect();
    output::table(
        &["ID", "TARGET", "CREATOR", "WAITING", "APPROVALS", "SCRIPT"],
        &rows,
    )
}

/// The review part of `tasks show`: the rule, each group with who approved, every
/// review, the digest and when the wait ends.
pub(crate) fn review_details(r: &TaskReview, now: chrono::DateTime<Utc>) -> String {
    let mut out = format!(
        "review:         {} ({})\n",
        cell(&r.rule),
        cell(&r.progress())
    );
    for g in &r.groups {
        let who = match (&g.approved_by, g.approved_at) {
            (Some(u), Some(at)) => {
                format!("approved by {} at {}", cell(u), output::timestamp(at, now))
            }
            _ => "waiting".to_string(),
        };
        out.push_str(&format!("  group {}: {who}\n", cell(&g.group)));
    }
    for e in &r.reviews {
        let forced = if e.forced {
            " (FORCED by an admin)"
        } else {
            ""
        };
        let groups = if e.groups.is_empty() {
            String::new()
        } else {
            format!(" for {}", cell(&e.groups.join(", ")))
        };
        out.push_str(&format!(
            "  {} {}{groups}{forced} at {}",
            cell(&e.user),
            e.verdict,
            output::timestamp(e.at, now)
        ));
        if let Some(c) = &e.comment {
            out.push_str(&format!(": {}", cell(c)));
        }
        out.push('\n');
    }
    out.push_str(&format!("reviewed sha256: {}\n", r.sha256));
    if let Some(at) = r.expires_at {
        out.push_str(&format!("expires:        {}\n", output::timestamp(at, now)));
    }
    out
}

/// `runops tasks approve ID [--comment C] [--force --reason R]`.
pub(crate) async fn approve(
    id: i64,
    comment: Option<String>,
    force: bool,
    reason: Option<String>,
    json: bool,
) -> CliResult<u8> {
    let client = crate::connect()?;
    // Approve what we looked at: the server refuses if the task is another one.
    let seen = client.get_task(id).await?;
    let body = TaskApprove {
        comment,
        force: force.then_some(true),
        reason,
        sha256: seen.review.as_ref().map(|r| r.sha256.clone()),
    };
    let task = client.approve_task(id, &body).await?;
    if json {
        output::print_json(&task)?;
        return Ok(0);
    }
    let progress = task
        .review
        .as_ref()
        .map(|r| r.progress())
        .unwrap_or_default();
    let line = match task.status {
        TaskStatus::Approved if force => format!(
            "task {id} force-approved; it runs when its creator ({}) runs it",
            task.user
        ),
        TaskStatus::Approved => format!(
            "task {id} approved ({progress}); it runs when its creator ({}) runs it",
            task.user
        ),
        _ => format!("approval recorded for task {id}: {progress}"),
    };
    output::print(&format!("{line}\n"))?;
    Ok(0)
}

/// `runops tasks reject ID --comment TEXT`.
pub(crate) async fn reject(id: i64, comment: String, json: bool) -> CliResult<u8> {
    let client = crate::connect()?;
    let seen = client.get_task(id).await?;
    let body = TaskReject {
        comment,
        sha256: seen.review.as_ref().map(|r| r.sha256.clone()),
    };
    let task = client.reject_task(id, &body).await?;
    if json {
        output::print_json(&task)?;
    } else {
        output::print(&format!("task {id} rejected\n"))?;
    }
    Ok(0)
}

/// Runs `task` (approved, ours) with our current credentials; with a key-bound
/// identity token, signs the proof for it. `asked`: what `tasks create` sent, checked
/// against what the server holds before signing.
pub(crate) async fn run_approved(
    client: &Client,
    task: &Task,
    asked: Option<&TaskCreate>,
) -> CliResult<Task> {
    let proof = crate::proof::run_proof(task, asked)?;
    Ok(client.run_task(task.id, &TaskRun { proof }).await?)
}

/// Waits while `task` is `pending-review`, saying how far its approvals are; returns
/// it once reviewed (approved, rejected, expired or killed).
pub(crate) async fn wait_for_review(client: &Client, mut task: Task) -> CliResult<Task> {
    let tty = std::io::stderr().is_terminal();
    let spinner = if tty {
        Spinner::start(client, &task)
    } else {
        None
    };
    let mut said: Option<String> = None;
    let mut unreachable_since: Option<std::time::Instant> = None;
    while task.status == TaskStatus::PendingReview {
        if !tty {
            let line = waiting_line(&task);
            if said.as_deref() != Some(line.as_str()) {
                output::note(&line);
                said = Some(line);
            }
        }
        tokio::time::sleep(REVIEW_POLL_INTERVAL).await;
        match client.get_task(task.id).await {
            Ok(t) => {
                task = t;
                unreachable_since = None;
            }
            Err(e) if e.is_transport() => {
                let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= REVIEW_WAIT_GIVE_UP {
                    let id = task.id;
                    return Err(CliError::from(e).with_hint(format!(
                        "task {id} may still be waiting for review; once approved, run it with `runops tasks run {id}`"
                    )));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(s) = spinner {
        s.finish().await;
    }
    if task.status == TaskStatus::Approved {
        let by: Vec<String> = task
            .review
            .as_ref()
            .map(|r| {
                r.reviews
                    .iter()
                    .filter(|e| e.verdict == "approved")
                    .map(|e| {
                        if e.forced {
                            format!("{} (forced)", e.user)
                        } else {
                            e.user.clone()
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        output::note(&format!(
            "task {} approved by {}; running it",
            task.id,
            by.join(", ")
        ));
    }
    Ok(task)
}

/// `waiting for review: 0 of 1 (group dba)`.
pub(crate) fn waiting_line(task: &Task) -> String {
    match &task.review {
        Some(r) => format!("waiting for review: {}", r.progress()),
        None => "waiting for review".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use runops_proto::api::{ReviewEntry, ReviewGroup};

    fn review() -> TaskReview {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        TaskReview {
            rule: "team".into(),
            reviewers: vec!["dba".into(), "security".into()],
            required: 2,
            approvals: 1,
            groups: vec![
                ReviewGroup {
                    group: "dba".into(),
                    approved_by: Some("dan@x".into()),
                    approved_at: Some(t0),
                },
                ReviewGroup {
                    group: "security".into(),
                    approved_by: None,
                    approved_at: None,
                },
            ],
            reviews: vec![ReviewEntry {
                user: "dan@x".into(),
                groups: vec!["dba".into()],
                verdict: "approved".into(),
                comment: Some("ok".into()),
                forced: false,
                sha256: "ab".into(),
                at: t0,
            }],
            sha256: "ab".into(),
            approved_at: None,
            expires_at: None,
        }
    }

    #[test]
    fn show_lists_each_group_with_who_approved() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 5, 0).unwrap();
        let d = review_details(&review(), now);
        assert!(
            d.starts_with("review:         team (1 of 2 (groups dba, security; dba approved))\n"),
            "{d}"
        );
        assert!(
            d.contains("  group dba: approved by dan@x at 2026-01-01T00:00:00Z (5m ago)\n"),
            "{d}"
        );
        assert!(d.contains("  group security: waiting\n"), "{d}");
        assert!(d.contains("  dan@x approved for dba at"), "{d}");
    }

    #[test]
    fn the_waiting_line_names_the_groups() {
        let mut t = crate::tasks::tests::sample_task(TaskStatus::PendingReview);
        let mut r = review();
        r.approvals = 0;
        r.groups[0].approved_by = None;
        r.reviewers = vec!["dba".into()];
        r.required = 1;
        r.groups.truncate(1);
        t.review = Some(r);
        assert_eq!(waiting_line(&t), "waiting for review: 0 of 1 (group dba)");
    }
}
