//! Review rules: who may review a task, when its approvals are enough, and the digest
//! an approval binds to. Pure functions of data; the store and the handlers call them
//! (SQL only reads and writes the rows).
//!
//! A target's `review` is `none`, `anyone` or `team`:
//! - `anyone`: the task needs `min_approvals` (default 1) approvals, each from a
//!   different user of the organisation other than its creator;
//! - `team` with reviewer groups: the task needs approvals from `min_approvals` of the
//!   groups (default: every group). Each approver counts for one group only, so
//!   `dba,security` needs two people even when one of them is in both groups.
//!
//! One rejection (with a reason) by someone who may review ends the task `rejected`.
//! The creator never reviews their own task, not even an admin forcing it: the admin's
//! way out is to change the target. A forced approval (admins, with a reason) meets
//! the rule at once and is marked `forced` everywhere.

use runops_proto::TaskStatus;
use runops_proto::api::{ReviewEntry, ReviewGroup, Target, TaskReview, User};
use sha2::{Digest, Sha256};

/// A target's `review` setting (defined with the other vocabularies in `runops-proto`).
pub use runops_proto::vocab::ReviewMode;

/// Most approvals an `anyone` rule may ask for: more is a typo, not a policy.
pub const MAX_MIN_APPROVALS: u32 = 20;

/// Most reviewer groups of a `team` rule.
pub const MAX_REVIEWER_GROUPS: usize = 20;

/// Longest comment or reason of a review.
pub const MAX_REVIEW_COMMENT_LEN: usize = 4096;

/// Shortest and longest review and approval waits a target may set (seconds): a
/// second (tests and demos) to 30 days.
pub const MIN_TTL_SECS: u64 = 1;
pub const MAX_TTL_SECS: u64 = 30 * 24 * 3600;

/// The review rule a task was created under (snapshotted from its target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewRule {
    pub mode: ReviewMode,
    pub groups: Vec<String>,
    /// As the target set it (`None`: the default).
    pub min_approvals: Option<u32>,
}

impl ReviewRule {
    pub fn of_target(t: &Target) -> ReviewRule {
        ReviewRule {
            mode: ReviewMode::parse(&t.review).unwrap_or(ReviewMode::None),
            groups: t.reviewers.clone(),
            min_approvals: t.min_approvals,
        }
    }

    pub fn is_reviewed(&self) -> bool {
        self.mode != ReviewMode::None
    }

    /// Approvals needed: groups for `team`, users for `anyone`.
    pub fn required(&self) -> u32 {
        match self.mode {
            ReviewMode::None => 0,
            ReviewMode::Anyone => self.min_approvals.unwrap_or(1).max(1),
            ReviewMode::Team => {
                let all = u32::try_from(self.groups.len()).unwrap_or(u32::MAX);
                self.min_approvals.unwrap_or(all).clamp(1, all.max(1))
            }
        }
    }
}

/// Why someone may not review a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The reviewer created the task.
    OwnTask,
    /// `team`: the reviewer is in none of the reviewer groups.
    NotInGroups { groups: Vec<String> },
    /// The reviewer already reviewed this task.
    AlreadyReviewed,
}

impl Refusal {
    pub fn message(&self, task_id: i64) -> String {
        match self {
            Refusal::OwnTask => format!(
                "you created task {task_id}; the creator of a task cannot review it, another user must"
            ),
            Refusal::NotInGroups { groups } => format!(
                "task {task_id} needs a review from the group(s) {}, and you are in none of them",
                groups.join(", ")
            ),
            Refusal::AlreadyReviewed => format!("you already reviewed task {task_id}"),
        }
    }
}

/// A review already recorded, as the rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CastReview {
    pub email: String,
    /// The groups it counts for (see [`counted_groups`]).
    pub groups: Vec<String>,
    pub approved: bool,
    pub forced: bool,
}

/// The groups a review by `reviewer` counts for: for `team`, the reviewer's groups
/// among the rule's; for `anyone`, all of the reviewer's groups (for the record).
pub fn counted_groups(rule: &ReviewRule, reviewer: &User) -> Vec<String> {
    match rule.mode {
        ReviewMode::Team => rule
            .groups
            .iter()
            .filter(|g| reviewer.groups.contains(g))
            .cloned()
            .collect(),
        _ => reviewer.groups.clone(),
    }
}

/// May `reviewer` approve or reject a task of `creator_email` under `rule`, given the
/// reviews already cast? (Forcing is checked by the caller: admins only.)
pub fn may_review(
    rule: &ReviewRule,
    creator_email: &str,
    reviewer: &User,
    cast: &[CastReview],
) -> Result<(), Refusal> {
    if reviewer.email.eq_ignore_ascii_case(creator_email) {
        return Err(Refusal::OwnTask);
    }
    if cast
        .iter()
        .any(|c| c.email.eq_ignore_ascii_case(&reviewer.email))
    {
        return Err(Refusal::AlreadyReviewed);
    }
    if rule.mode == ReviewMode::Team && counted_groups(rule, reviewer).is_empty() {
        return Err(Refusal::NotInGroups {
            groups: rule.groups.clone(),
        });
    }
    Ok(())
}

/// How far the approvals are: `(approvals that count, for team: group → approver)`.
/// For `team`, a maximum matching of approvers to groups, so each approver counts for
/// one group and the count is as high as the approvals allow.
pub fn progress(rule: &ReviewRule, cast: &[CastReview]) -> (u32, Vec<Option<usize>>) {
    let approvals: Vec<&CastReview> = cast.iter().filter(|c| c.approved).collect();
    match rule.mode {
        ReviewMode::None => (0, Vec::new()),
        ReviewMode::Anyone => (
            u32::try_from(approvals.len()).unwrap_or(u32::MAX),
            Vec::new(),
        ),
        ReviewMode::Team => {
            // owner[g] = index (in `cast`) of the approval counted for group g.
            let mut owner: Vec<Option<usize>> = vec![None; rule.groups.len()];
            for (i, c) in cast.iter().enumerate() {
                if !c.approved {
                    continue;
                }
                let mut seen = vec![false; rule.groups.len()];
                assign(rule, cast, i, &mut owner, &mut seen);
            }
            let n = owner.iter().filter(|o| o.is_some()).count();
            (u32::try_from(n).unwrap_or(u32::MAX), owner)
        }
    }
}

/// One augmenting-path step of the matching in [`progress`].
fn assign(
    rule: &ReviewRule,
    cast: &[CastReview],
    i: usize,
    owner: &mut [Option<usize>],
    seen: &mut [bool],
) -> bool {
    for (g, group) in rule.groups.iter().enumerate() {
        if seen[g] || !cast[i].groups.contains(group) {
            continue;
        }
        seen[g] = true;
        let free = match owner[g] {
            None => true,
            Some(other) => assign(rule, cast, other, owner, seen),
        };
        if free {
            owner[g] = Some(i);
            return true;
        }
    }
    false
}

/// True when the approvals meet the rule (a forced approval always does).
pub fn is_met(rule: &ReviewRule, cast: &[CastReview]) -> bool {
    cast.iter().any(|c| c.approved && c.forced) || progress(rule, cast).0 >= rule.required()
}

/// How far a task's approvals are (see [`TaskReview::progress`]).
pub fn progress_line(review: &TaskReview) -> String {
    review.progress()
}

/// Builds the API's view of a task's reviews.
pub fn view(
    rule: &ReviewRule,
    entries: Vec<ReviewEntry>,
    sha256: String,
    approved_at: Option<chrono::DateTime<chrono::Utc>>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> TaskReview {
    let cast: Vec<CastReview> = entries.iter().map(cast_of).collect();
    let (approvals, owners) = progress(rule, &cast);
    let groups = if rule.mode == ReviewMode::Team {
        rule.groups
            .iter()
            .zip(owners.iter().chain(std::iter::repeat(&None)))
            .map(|(g, owner)| ReviewGroup {
                group: g.clone(),
                approved_by: owner.map(|i| entries[i].user.clone()),
                approved_at: owner.map(|i| entries[i].at),
            })
            .collect()
    } else {
        Vec::new()
    };
    TaskReview {
        rule: rule.mode.as_str().to_string(),
        reviewers: rule.groups.clone(),
        required: rule.required(),
        approvals,
        groups,
        reviews: entries,
        sha256,
        approved_at,
        expires_at,
    }
}

pub fn cast_of(e: &ReviewEntry) -> CastReview {
    CastReview {
        email: e.user.clone(),
        groups: e.groups.clone(),
        approved: e.verdict == VERDICT_APPROVED,
        forced: e.forced,
    }
}

pub const VERDICT_APPROVED: &str = "approved";
pub const VERDICT_REJECTED: &str = "rejected";

/// What an approval binds: the script, the type it runs as, and the target's settings
/// the task snapshotted (where and how it runs, which secrets, the review rule).
pub struct ReviewedTask<'a> {
    pub target: &'a Target,
    pub kind: &'a str,
    pub script: &'a str,
}

/// SHA-256 (hex) over a canonical JSON document of [`ReviewedTask`]. The task row is
/// immutable after creation (the database refuses changes), so this digest stays the
/// one reviewers approved.
pub fn digest(t: &ReviewedTask<'_>) -> String {
    let target = t.target;
    // serde_json writes object keys in insertion order; this literal fixes it.
    let doc = serde_json::json!({
        "script": t.script,
        "type": t.kind,
        "target": {
            "name": target.name,
            "tags": target.tags,
            "secret_provider": target.secret_provider,
            "secret_path": target.secret_path,
            "secret_mapping": target.secret_mapping,
            "redact": target.redact,
            "redact_keys": target.redact_keys,
            "public_keys": target.public_keys,
            "custom_command": target.custom_command,
            "timeout": target.timeout,
            "review": target.review,
            "reviewers": target.reviewers,
            "min_approvals": target.min_approvals,
        },
    });
    hex::encode(Sha256::digest(doc.to_string().as_bytes()))
}

/// `24h`, `7d`, `90s`: a wait as the CLI's flags write it.
pub fn ttl_text(secs: u64) -> String {
    if secs >= 86_400 && secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Parses a review wait given as seconds or with a unit: `90s`, `30m`, `24h`, `7d`.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let bad = || format!("`{t}` is not a duration; write e.g. `90s`, `30m`, `24h` or `7d`");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).ok_or_else(bad)
}

/// The failure message of a task that expired in `was`.
pub fn expiry_message(was: TaskStatus, ttl_secs: u64) -> String {
    let wait = ttl_text(ttl_secs);
    if was == TaskStatus::Approved {
        format!(
            "the approval expired: the task was approved but not run within {wait} (the target's approval_ttl); nothing ran. create the task again"
        )
    } else {
        format!(
            "the review expired: the task was not approved within {wait} (the target's review_ttl); nothing ran. create the task again"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(email: &str, groups: &[&str]) -> User {
        User {
            id: 1,
            name: email.into(),
            email: email.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            role: "user".into(),
            org: "o".into(),
            created_at: chrono::Utc::now(),
        }
    }

    fn team(groups: &[&str], min: Option<u32>) -> ReviewRule {
        ReviewRule {
            mode: ReviewMode::Team,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            min_approvals: min,
        }
    }

    fn approval(rule: &ReviewRule, u: &User) -> CastReview {
        CastReview {
            email: u.email.clone(),
            groups: counted_groups(rule, u),
            approved: true,
            forced: false,
        }
    }

    #[test]
    fn team_needs_one_approver_per_group_and_one_person_counts_once() {
        let rule = team(&["dba", "security"], None);
        assert_eq!(rule.required(), 2);
        let both = user("both@x", &["dba", "security"]);
        let dba = user("dba@x", &["dba"]);
        let sec = user("sec@x", &["security"]);
        let cast = vec![approval(&rule, &both)];
        assert_eq!(progress(&rule, &cast).0, 1);
        assert!(!is_met(&rule, &cast));
        // `both` first took dba; the matching moves them to security for `dba`.
        let cast = vec![approval(&rule, &both), approval(&rule, &dba)];
        assert!(is_met(&rule, &cast));
        let cast = vec![approval(&rule, &dba), approval(&rule, &sec)];
        assert!(is_met(&rule, &cast));
        let one_of = team(&["dba", "security"], Some(1));
        assert!(is_met(&one_of, &[approval(&one_of, &sec)]));
    }

    #[test]
    fn creators_outsiders_and_second_reviews_are_refused() {
        let rule = team(&["dba"], None);
        let ana = user("ana@x", &["dba"]);
        assert_eq!(may_review(&rule, "ANA@x", &ana, &[]), Err(Refusal::OwnTask));
        let out = user("out@x", &["dev"]);
        assert!(matches!(
            may_review(&rule, "c@x", &out, &[]),
            Err(Refusal::NotInGroups { .. })
        ));
        let cast = vec![approval(&rule, &ana)];
        assert_eq!(
            may_review(&rule, "c@x", &ana, &cast),
            Err(Refusal::AlreadyReviewed)
        );
        let anyone = ReviewRule {
            mode: ReviewMode::Anyone,
            groups: vec![],
            min_approvals: None,
        };
        assert!(may_review(&anyone, "c@x", &out, &[]).is_ok());
        assert!(is_met(&anyone, &[approval(&anyone, &out)]));
    }

    #[test]
    fn a_forced_approval_meets_any_rule() {
        let rule = team(&["dba", "security"], None);
        let admin = user("admin@x", &[]);
        let mut forced = approval(&rule, &admin);
        forced.forced = true;
        assert!(is_met(&rule, &[forced]));
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("24h"), Ok(86_400));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert_eq!(parse_duration("45"), Ok(45));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn progress_lines_name_the_groups() {
        let rule = team(&["dba"], None);
        let v = view(&rule, vec![], "x".into(), None, None);
        assert_eq!(progress_line(&v), "0 of 1 (group dba)");
    }
}
