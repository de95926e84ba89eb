//! Templates: vetted scripts kept in a git repository and run with parameters
//! (`runops server --templates-repo URL`; the format is in `docs/templates.md`).
//!
//! [`git`] pulls the repository into the data dir with the `git` CLI (at start, every
//! `--templates-interval-secs`, on `POST /v1/templates/refresh` and on the git host's
//! webhook); [`header`] reads each file under `templates/`; [`params`] checks a run's
//! values and fills them in. [`Templates`] holds the last good set: a failed pull keeps
//! serving it and shows the error as a warning. Running a template makes a task through
//! the same path as `POST /v1/tasks` (`http/templates.rs`).

pub mod git;
pub mod header;
pub mod params;

use runops_proto::api::Target;
use runops_proto::templates::{BrokenTemplate, Template, TemplateList, TemplateParam};
use runops_proto::vocab::ReviewMode;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;

pub use header::TemplateDef;

/// Default seconds between two pulls.
pub const DEFAULT_INTERVAL_SECS: u64 = 60;

/// The folder of the repository that holds the templates.
pub const TEMPLATES_DIR: &str = "templates";

/// Most template files read from one commit: a bound on memory and on the list's size.
pub const MAX_TEMPLATE_FILES: usize = 1000;

/// Env var with an HTTPS token for the repository (sent as Basic auth, never on a command line).
pub const TOKEN_ENV: &str = "RUNOPS_TEMPLATES_TOKEN";
/// Env var with the user name sent with [`TOKEN_ENV`] (default `x-access-token`).
pub const TOKEN_USER_ENV: &str = "RUNOPS_TEMPLATES_TOKEN_USER";

/// clap args of `runops server` for templates.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TemplatesArgs {
    /// Git repository of templates (files under `templates/`); HTTPS token in RUNOPS_TEMPLATES_TOKEN, SSH key with --templates-ssh-key.
    #[arg(long, env = "RUNOPS_TEMPLATES_REPO", value_name = "URL")]
    pub templates_repo: Option<String>,
    /// Branch of the templates repository.
    #[arg(
        long,
        env = "RUNOPS_TEMPLATES_BRANCH",
        value_name = "BRANCH",
        default_value = "main"
    )]
    pub templates_branch: String,
    /// Seconds between two pulls of the templates repository.
    #[arg(long, env = "RUNOPS_TEMPLATES_INTERVAL_SECS", value_name = "SECS", default_value_t = DEFAULT_INTERVAL_SECS)]
    pub templates_interval_secs: u64,
    /// Private SSH key for an ssh:// or git@ templates repository.
    #[arg(long, env = "RUNOPS_TEMPLATES_SSH_KEY", value_name = "PATH")]
    pub templates_ssh_key: Option<PathBuf>,
    /// Shared secret of POST /v1/templates/webhook (GitHub `X-Hub-Signature-256` or GitLab `X-Gitlab-Token`).
    #[arg(
        long,
        env = "RUNOPS_TEMPLATES_WEBHOOK_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub templates_webhook_secret: Option<String>,
}

/// The templates read from one commit.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub commit: Option<String>,
    pub pulled_at: Option<chrono::DateTime<chrono::Utc>>,
    pub templates: BTreeMap<String, TemplateDef>,
    pub broken: Vec<BrokenTemplate>,
    /// The error of the last pull, when it failed.
    pub warning: Option<String>,
}

/// The server's templates: where they come from and the last good set.
pub struct Templates {
    repo: Option<git::Repo>,
    interval: Duration,
    webhook_secret: Option<String>,
    current: RwLock<Arc<Snapshot>>,
    /// One pull at a time; a second caller waits and then pulls again.
    pulling: tokio::sync::Mutex<()>,
    /// Wakes the poller for a pull now (the webhook).
    wake: Notify,
}

impl Templates {
    /// From the server's args; `data_dir` holds the clone.
    pub fn from_args(args: &TemplatesArgs, data_dir: &std::path::Path) -> anyhow::Result<Self> {
        if args.templates_interval_secs == 0 {
            anyhow::bail!("--templates-interval-secs must be at least 1");
        }
        let repo = match args.templates_repo.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => Some(git::Repo {
                url: url.to_string(),
                branch: args.templates_branch.trim().to_string(),
                dir: data_dir.join("templates-repo"),
                ssh_key: args.templates_ssh_key.clone(),
                token: std::env::var(TOKEN_ENV)
                    .ok()
                    .filter(|t| !t.trim().is_empty()),
                token_user: std::env::var(TOKEN_USER_ENV)
                    .ok()
                    .filter(|u| !u.trim().is_empty())
                    .unwrap_or_else(|| "x-access-token".into()),
            }),
            _ => None,
        };
        if let Some(r) = &repo
            && (r.branch.is_empty() || r.branch.starts_with('-'))
        {
            anyhow::bail!("--templates-branch `{}` is not a branch name", r.branch);
        }
        Ok(Templates {
            repo,
            interval: Duration::from_secs(args.templates_interval_secs),
            webhook_secret: args
                .templates_webhook_secret
                .clone()
                .filter(|s| !s.is_empty()),
            current: RwLock::default(),
            pulling: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
        })
    }

    pub fn is_configured(&self) -> bool {
        self.repo.is_some()
    }

    pub fn webhook_secret(&self) -> Option<&str> {
        self.webhook_secret.as_deref()
    }

    /// The last good set (and the last pull's warning).
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.read().expect("templates lock").clone()
    }

    /// Asks the poller for a pull now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Pulls and reads the repository; a failure keeps the last good set and records
    /// the error as its warning.
    pub async fn refresh(&self) -> Arc<Snapshot> {
        let Some(repo) = &self.repo else {
            return self.current();
        };
        let _one = self.pulling.lock().await;
        let next = match repo.pull().await {
            Ok(commit) => {
                let (templates, broken) = read_templates(&repo.dir.join(TEMPLATES_DIR)).await;
                for b in &broken {
                    tracing::warn!(path = %b.path, line = ?b.line, error = %b.error, "template not read");
                }
                tracing::info!(%commit, templates = templates.len(), broken = broken.len(), "templates pulled");
                Snapshot {
                    commit: Some(commit),
                    pulled_at: Some(chrono::Utc::now()),
                    templates,
                    broken,
                    warning: None,
                }
            }
            Err(e) => {
                tracing::warn!(repo = %git::without_credentials(&repo.url), error = %e, "templates pull failed; serving the last good templates");
                let last = self.current();
                Snapshot {
                    commit: last.commit.clone(),
                    pulled_at: last.pulled_at,
                    templates: last.templates.clone(),
                    broken: last.broken.clone(),
                    warning: Some(format!(
                        "the last pull failed ({}): {e}",
                        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    )),
                }
            }
        };
        let next = Arc::new(next);
        *self.current.write().expect("templates lock") = next.clone();
        next
    }

    /// Pulls at once, then every interval or when woken; runs until aborted.
    pub async fn run_poller(self: Arc<Self>) {
        if self.repo.is_none() {
            return;
        }
        loop {
            self.refresh().await;
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// The API's view of the current set.
    pub fn list(&self) -> TemplateList {
        let snap = self.current();
        TemplateList {
            repo: self.repo.as_ref().map(|r| git::without_credentials(&r.url)),
            branch: self.repo.as_ref().map(|r| r.branch.clone()),
            commit: snap.commit.clone(),
            pulled_at: snap.pulled_at,
            templates: snap.templates.values().map(|t| summary(t, false)).collect(),
            broken: snap.broken.clone(),
            warning: snap.warning.clone(),
        }
    }
}

/// May template `t` run on `target`? Its `targets` name it (or are `*`), or its `tags`
/// hold the target's tags. `Err` says where it may run.
pub fn may_run_on(t: &TemplateDef, target: &Target) -> Result<(), String> {
    let by_name = t.targets.iter().any(|n| n == "*" || *n == target.name);
    let by_tags = target
        .tags
        .as_deref()
        .is_some_and(|tags| t.tags.iter().any(|x| x == tags));
    if by_name || by_tags {
        return Ok(());
    }
    let mut allowed = Vec::new();
    if !t.targets.is_empty() {
        allowed.push(format!("targets {}", t.targets.join(", ")));
    }
    if !t.tags.is_empty() {
        allowed.push(format!("targets tagged {}", t.tags.join(", ")));
    }
    Err(format!(
        "template `{}` may not run on target `{}`: it runs on {}",
        t.name,
        target.name,
        allowed.join(" or ")
    ))
}

/// `target` with the review a task of template `t` gets: the stricter of the target's
/// and the template's (`none` < `anyone` < `team`); on a tie the target's rule stands.
/// A template can only add review, never lower the target's.
pub fn with_template_review(mut target: Target, t: &TemplateDef) -> Target {
    let rank = |m: ReviewMode| match m {
        ReviewMode::None => 0,
        ReviewMode::Anyone => 1,
        ReviewMode::Team => 2,
    };
    let own = ReviewMode::parse(&target.review).unwrap_or(ReviewMode::None);
    if let Some(wanted) = t.review
        && rank(wanted) > rank(own)
    {
        target.review = wanted.as_str().to_string();
        target.reviewers = t.reviewers.clone();
        // The target's count was for its own (weaker) rule: a team review needs every group.
        if wanted == ReviewMode::Team || own == ReviewMode::None {
            target.min_approvals = None;
        }
    }
    target
}

/// The API's view of a template (`with_body`: `GET /v1/templates/{name}`).
pub fn summary(t: &TemplateDef, with_body: bool) -> Template {
    Template {
        name: t.name.clone(),
        path: t.path.clone(),
        description: t.description.clone(),
        targets: t.targets.clone(),
        tags: t.tags.clone(),
        params: t
            .params
            .iter()
            .map(|p| TemplateParam {
                name: p.name.clone(),
                kind: p.kind.as_str().to_string(),
                required: p.required,
                default: p.default.clone(),
                pattern: p.pattern.as_ref().map(|re| {
                    let s = re.as_str();
                    s.strip_prefix("^(?:")
                        .and_then(|s| s.strip_suffix(")$"))
                        .unwrap_or(s)
                        .to_string()
                }),
                options: p.options.clone(),
                description: p.description.clone(),
            })
            .collect(),
        review: t.review.map(|r| r.as_str().to_string()),
        reviewers: t.reviewers.clone(),
        body: with_body.then(|| t.body.clone()),
    }
}

/// Reads every file directly under `dir` (not hidden, not `*.md`): the templates, and
/// the files that are not (each with its mistake). Two files with one name are both
/// refused: which one runs must never depend on the order of a directory listing.
async fn read_templates(
    dir: &std::path::Path,
) -> (BTreeMap<String, TemplateDef>, Vec<BrokenTemplate>) {
    let mut found: BTreeMap<String, Vec<TemplateDef>> = BTreeMap::new();
    let mut broken = Vec::new();
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (BTreeMap::new(), broken),
        Err(e) => {
            broken.push(BrokenTemplate {
                path: TEMPLATES_DIR.into(),
                line: None,
                error: format!("cannot read the folder: {e}"),
            });
            return (BTreeMap::new(), broken);
        }
    };
    let mut files = Vec::new();
    while let Ok(Some(entry)) = entries.next_entry().await {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().await.is_ok_and(|t| t.is_file());
        if is_file && !file_name.starts_with('.') && !file_name.ends_with(".md") {
            files.push(file_name);
        }
    }
    files.sort();
    for file_name in files.into_iter().take(MAX_TEMPLATE_FILES) {
        let path = format!("{TEMPLATES_DIR}/{file_name}");
        let text = match tokio::fs::read(dir.join(&file_name)).await {
            Ok(bytes) if bytes.len() > runops_proto::limits::MAX_SCRIPT_BYTES => Err(format!(
                "the file is larger than a script may be ({} bytes)",
                runops_proto::limits::MAX_SCRIPT_BYTES
            )),
            Ok(bytes) => String::from_utf8(bytes).map_err(|_| "the file is not UTF-8 text".into()),
            Err(e) => Err(format!("cannot read the file: {e}")),
        };
        let parsed = text
            .map_err(|message| header::HeaderError {
                line: None,
                message,
            })
            .and_then(|t| header::parse(&path, &t));
        match parsed {
            Ok(def) => found.entry(def.name.clone()).or_default().push(def),
            Err(e) => broken.push(BrokenTemplate {
                path,
                line: e.line,
                error: e.message,
            }),
        }
    }
    let mut templates = BTreeMap::new();
    for (name, mut defs) in found {
        if defs.len() == 1 {
            templates.insert(name, defs.remove(0));
            continue;
        }
        let paths: Vec<String> = defs.iter().map(|d| d.path.clone()).collect();
        for d in defs {
            broken.push(BrokenTemplate {
                path: d.path,
                line: None,
                error: format!(
                    "two files define template `{name}` ({}): rename one",
                    paths.join(", ")
                ),
            });
        }
    }
    (templates, broken)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(header: &str) -> TemplateDef {
        header::parse("templates/t.sh", &format!("# ---\n{header}# ---\necho\n")).unwrap()
    }

    fn target(name: &str, tags: Option<&str>, review: &str) -> Target {
        let mut t: Target = serde_json::from_value(serde_json::json!({
            "name": name, "type": "bash", "description": null, "tags": tags,
            "secret_provider": null, "secret_path": null, "secret_mapping": null,
            "redact": "all", "review": review, "reviewers": [], "custom_command": null,
            "timeout": 60, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        }))
        .unwrap();
        if review == "team" {
            t.reviewers = vec!["ops".into()];
            t.min_approvals = Some(1);
        }
        t
    }

    #[test]
    fn runs_only_on_named_or_tagged_targets() {
        let t = def("# targets: db1\n# tags: eu\n");
        assert!(may_run_on(&t, &target("db1", None, "none")).is_ok());
        assert!(may_run_on(&t, &target("db2", Some("eu"), "none")).is_ok());
        let e = may_run_on(&t, &target("db2", Some("us"), "none")).unwrap_err();
        assert_eq!(
            e,
            "template `t` may not run on target `db2`: it runs on targets db1 or targets tagged eu"
        );
        assert!(may_run_on(&def("# targets: *\n"), &target("x", None, "none")).is_ok());
    }

    #[test]
    fn template_review_is_never_weaker_than_the_targets() {
        let anyone = def("# targets: *\n# review: anyone\n");
        let team = def("# targets: *\n# review: team\n# reviewers: dba, sec\n");
        let t = with_template_review(target("x", None, "none"), &anyone);
        assert_eq!(t.review, "anyone");
        let t = with_template_review(target("x", None, "team"), &anyone);
        assert_eq!(
            (t.review.as_str(), t.reviewers.clone()),
            ("team", vec!["ops".to_string()])
        );
        let t = with_template_review(target("x", None, "anyone"), &team);
        assert_eq!(t.review, "team");
        assert_eq!(t.reviewers, ["dba", "sec"]);
        assert_eq!(t.min_approvals, None);
        let t = with_template_review(target("x", None, "team"), &def("# targets: *\n"));
        assert_eq!(t.review, "team");
    }
}
