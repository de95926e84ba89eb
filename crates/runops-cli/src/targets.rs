//! `runops targets create|list|show|update|delete`.
//!
//! `--secret_mapping` is sent as the user's text (a JSON string value): the server
//! parses it and points at the position of any error.

use crate::error::{CliError, CliResult};
use crate::output::{self, cell, or_dash};
use chrono::Utc;
use clap::builder::PossibleValuesParser;
use runops_proto::api::{Target, TargetCreate, TargetSettings, TargetUpdate};
use runops_proto::vocab::{RedactMode, ReviewMode, TargetType};
use std::io::IsTerminal;

#[derive(clap::Args, Debug)]
pub struct TargetsCmd {
    #[command(subcommand)]
    pub cmd: TargetsSub,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true, display_order = 900)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum TargetsSub {
    /// Create a target.
    Create(TargetCreateArgs),
    /// List the organisation's targets.
    #[command(visible_alias = "ls")]
    List,
    /// Show one target.
    Show(TargetName),
    /// Change some fields of a target (only the flags given change).
    Update(TargetUpdateArgs),
    /// Delete a target (asks first on a terminal; --yes does not ask).
    #[command(visible_alias = "rm")]
    Delete(TargetDeleteArgs),
}

#[derive(clap::Args, Debug)]
pub struct TargetDeleteArgs {
    #[command(flatten)]
    pub name: TargetName,
    /// Delete without asking for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

/// The warning for a database target created without a secret source.
fn missing_secret_source_warning(req: &TargetCreate) -> Option<String> {
    let has_source = req.secret_path.is_some()
        || req.secret_provider.is_some()
        || req.config.as_ref().is_some_and(|c| !c.is_empty());
    let is_database = req
        .kind
        .trim()
        .parse::<TargetType>()
        .is_ok_and(TargetType::connects_to_database);
    if has_source || !is_database {
        return None;
    }
    Some(format!(
        "warning: target {} of type {} has no secret source, so its tasks cannot connect\n\
         hint: give it one with `runops targets update --name {} --secret_path VAR` \
         (or --secret_provider, or --config for secrets kept by runops)",
        cell(&req.name),
        cell(&req.kind),
        cell(&req.name)
    ))
}

/// Asks on the terminal whether to delete `name`; true for `y` or `yes`.
fn confirm_delete(name: &str) -> CliResult<bool> {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    write!(
        err,
        "delete target {}? its tasks keep their history [y/N] ",
        cell(name)
    )?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| CliError::new(format!("cannot read the answer: {e}")))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// A target named either as `NAME` or `--name NAME`.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct TargetName {
    /// The target's name.
    #[arg(value_name = "NAME")]
    pub positional: Option<String>,
    /// The target's name.
    #[arg(long = "name", value_name = "NAME")]
    pub flag: Option<String>,
}

impl TargetName {
    fn get(&self) -> &str {
        self.flag
            .as_deref()
            .or(self.positional.as_deref())
            .unwrap_or_default()
    }
}

#[derive(clap::Args, Debug)]
pub struct TargetCreateArgs {
    /// Unique name in the organisation (used by `tasks create -t NAME`).
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Integration: bash, python, node, mysql, postgres, k8s, ...
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: String,
    #[command(flatten)]
    pub fields: TargetFields,
}

#[derive(clap::Args, Debug)]
pub struct TargetUpdateArgs {
    #[command(flatten)]
    pub name: TargetName,
    /// New integration type.
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    #[command(flatten)]
    pub fields: TargetFields,
}

/// The optional fields shared by `create` and `update`: one flag for each of
/// `runops_proto::api::TargetSettings` (see [`TargetFields::settings`]). In `update`, an
/// empty value clears a text field (`--tags ''` makes the target run on the untagged
/// agent).
#[derive(clap::Args, Debug, Default)]
pub struct TargetFields {
    /// Agent tags this target runs on (the agent's TAGS); none means the untagged agent.
    #[arg(long, value_name = "TAGS")]
    pub tags: Option<String>,
    /// Where the agent reads secrets: env-var (default with --secret_path), filesystem,
    /// aws, hashicorp/kv, hashicorp/db, runops.
    #[arg(
        long = "secret-provider",
        visible_alias = "secret_provider",
        value_name = "PROVIDER"
    )]
    pub secret_provider: Option<String>,
    /// Name of the secret in the provider (for env-var: the agent's variable).
    #[arg(
        long = "secret-path",
        visible_alias = "secret_path",
        value_name = "PATH"
    )]
    pub secret_path: Option<String>,
    /// JSON object `{"WANTED_KEY": "KEY_IN_SECRET"}`.
    #[arg(
        long = "secret-mapping",
        visible_alias = "secret_mapping",
        value_name = "JSON"
    )]
    pub secret_mapping: Option<String>,
    /// Where the task runs (kept for compatibility with the original CLI).
    #[arg(
        long = "runner-provider",
        visible_alias = "runner_provider",
        value_name = "PROVIDER"
    )]
    pub runner_provider: Option<String>,
    /// Free text shown in lists.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// Task timeout: seconds, or with a unit (`90s`, `15m`, `2h`). Default 1h.
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Option<u64>,
    /// Remove personal data from the output too (`all`, default) or only secrets (`none`).
    #[arg(long, value_name = "MODE", value_parser = PossibleValuesParser::new(RedactMode::NAMES))]
    pub redact: Option<String>,
    /// Secret keys to redact although they name where to connect (keys ending in _HOST,
    /// _PORT, _DB, _USER... are shown by default), comma-separated; "" clears the list.
    #[arg(
        long = "redact-keys",
        visible_alias = "redact_keys",
        value_name = "KEYS"
    )]
    pub redact_keys: Option<String>,
    /// Secret keys never to redact, comma-separated; "" clears the list.
    #[arg(
        long = "public-keys",
        visible_alias = "public_keys",
        value_name = "KEYS"
    )]
    pub public_keys: Option<String>,
    /// Review before running: none (default), anyone, team.
    #[arg(long, value_name = "MODE", value_parser = PossibleValuesParser::new(ReviewMode::NAMES))]
    pub review: Option<String>,
    /// Reviewer groups, comma-separated (one approval from each with `--review team`).
    #[arg(long, value_name = "GROUPS", value_delimiter = ',')]
    pub reviewers: Option<Vec<String>>,
    /// Approvals a task needs: with `team`, how many of the groups (default all); with
    /// `anyone`, how many other users (default 1). `0` in an update: back to the default.
    #[arg(
        long = "min-approvals",
        visible_alias = "min_approvals",
        value_name = "N"
    )]
    pub min_approvals: Option<u32>,
    /// How long an approved task waits for its creator to run it: `30m`, `24h` (default), `7d`.
    #[arg(
        long = "approval-ttl",
        visible_alias = "approval_ttl",
        value_name = "DURATION",
        value_parser = parse_duration
    )]
    pub approval_ttl: Option<u64>,
    /// How long a task waits for its reviews: `24h`, `7d` (default), `30d`.
    #[arg(
        long = "review-ttl",
        visible_alias = "review_ttl",
        value_name = "DURATION",
        value_parser = parse_duration
    )]
    pub review_ttl: Option<u64>,
    /// Replaces the type's command; `[[SCRIPT]]` and `[[KEY]]` are filled in.
    #[arg(
        long = "custom-command",
        visible_alias = "custom_command",
        value_name = "COMMAND"
    )]
    pub custom_command: Option<String>,
    /// Slack channel (`#ops` or a channel id) the server's Slack app posts this target's
    /// review requests and finished tasks to (see docs/slack.md); "" removes it.
    #[arg(long, value_name = "CHANNEL")]
    pub channel: Option<String>,
    /// Write-only config, a JSON object `{"KEY": "value"}`: the secrets of the `runops`
    /// provider (and extra keys for the others). Stored encrypted; reads show only its
    /// keys. In `update`, `{}` removes it.
    #[arg(long, value_name = "JSON", conflicts_with = "config_file")]
    pub config: Option<String>,
    /// Like --config, read from a file (`-` for standard input): keeps the values out of
    /// the shell history.
    #[arg(
        long = "config-file",
        visible_alias = "config_file",
        value_name = "FILE"
    )]
    pub config_file: Option<std::path::PathBuf>,
}

impl TargetFields {
    /// The config given with --config or --config-file, checked to be a JSON object.
    /// Errors never quote the text (it holds secrets).
    fn config(&self) -> CliResult<Option<serde_json::Map<String, serde_json::Value>>> {
        let (text, source) = match (&self.config, &self.config_file) {
            (Some(t), _) => (t.clone(), "--config".to_string()),
            (None, Some(path)) if path.as_os_str() == "-" => {
                let mut t = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut t).map_err(|e| {
                    CliError::new(format!("cannot read the config from standard input: {e}"))
                })?;
                (t, "the config from standard input".to_string())
            }
            (None, Some(path)) => (
                std::fs::read_to_string(path).map_err(|e| {
                    CliError::new(format!(
                        "cannot read the config file {}: {e}",
                        path.display()
                    ))
                })?,
                format!("the config file {}", path.display()),
            ),
            (None, None) => return Ok(None),
        };
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(map)) => Ok(Some(map)),
            Ok(_) => Err(CliError::new(format!("{source} must be a JSON object"))
                .with_hint(r#"e.g. --config '{"PG_HOST": "db.internal", "PG_PASS": "..."}'"#)),
            Err(e) => Err(CliError::new(format!(
                "{source} is not valid JSON (line {} column {})",
                e.line(),
                e.column()
            ))
            .with_hint(r#"e.g. --config '{"PG_HOST": "db.internal", "PG_PASS": "..."}'"#)),
        }
    }
}

/// Seconds as a number, or a number with `s`, `m` or `h`.
pub(crate) fn parse_timeout(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits.parse().map_err(|_| {
        format!("`{s}` is not a timeout; give seconds (`3600`) or a unit (`90s`, `15m`, `2h`)")
    })?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => {
            return Err(format!(
                "unknown unit in timeout `{s}`; use `s`, `m` or `h` (`15m`)"
            ));
        }
    };
    let secs = n
        .checked_mul(factor)
        .ok_or_else(|| format!("timeout `{s}` is too large"))?;
    if secs == 0 {
        return Err("the timeout must be at least one second".to_string());
    }
    Ok(secs)
}

/// A review wait: seconds, or with a unit (`90s`, `30m`, `24h`, `7d`).
pub(crate) fn parse_duration(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("`{t}` is not a duration; write e.g. `30m`, `24h` or `7d`");
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(factor) {
        Some(0) => Err("a duration must be at least one second".to_string()),
        Some(secs) => Ok(secs),
        None => Err(bad()),
    }
}

/// Trims reviewer groups and drops empty ones (`--reviewers ''` clears the list).
fn clean_groups(groups: Option<Vec<String>>) -> Option<Vec<String>> {
    groups.map(|g| {
        g.into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

impl TargetFields {
    /// The settings these flags give (the config apart: see [`TargetFields::config`]).
    fn settings(&self) -> TargetSettings {
        TargetSettings {
            description: self.description.clone(),
            tags: self.tags.clone(),
            secret_provider: self.secret_provider.clone(),
            secret_path: self.secret_path.clone(),
            secret_mapping: self.secret_mapping.clone().map(serde_json::Value::String),
            runner_provider: self.runner_provider.clone(),
            redact: self.redact.clone(),
            review: self.review.clone(),
            reviewers: clean_groups(self.reviewers.clone()),
            min_approvals: self.min_approvals,
            approval_ttl: self.approval_ttl,
            review_ttl: self.review_ttl,
            custom_command: self.custom_command.clone(),
            timeout: self.timeout,
            channel: self.channel.clone(),
            config: None,
            redact_keys: self.redact_keys.as_deref().map(key_names),
            public_keys: self.public_keys.as_deref().map(key_names),
        }
    }
}

impl TargetCreateArgs {
    pub(crate) fn to_request(&self) -> TargetCreate {
        TargetCreate {
            name: self.name.clone(),
            kind: self.kind.clone(),
            ..Default::default()
        }
        .with_settings(self.fields.settings())
    }
}

impl TargetUpdateArgs {
    pub(crate) fn to_request(&self) -> TargetUpdate {
        TargetUpdate {
            kind: self.kind.clone(),
            ..Default::default()
        }
        .with_settings(self.fields.settings())
    }
}

/// A key list for `targets show`.
fn key_list_cell(keys: &[String]) -> String {
    if keys.is_empty() {
        "-".to_string()
    } else {
        cell(&keys.join(", "))
    }
}

/// `A, B` as `["A", "B"]`; blank input as an empty list (which clears it).
fn key_names(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// True when an update would change nothing.
fn is_empty_update(u: &TargetUpdate) -> bool {
    serde_json::to_value(u)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.is_empty()))
        .unwrap_or(false)
}

impl TargetsCmd {
    pub async fn run(self) -> CliResult<u8> {
        let json = self.json;
        match self.cmd {
            TargetsSub::Create(args) => {
                let mut req = args.to_request();
                req.config = args.fields.config()?;
                let client = crate::connect()?;
                let target = client.create_target(&req).await?;
                if let Some(w) = missing_secret_source_warning(&req) {
                    output::note(&w);
                }
                if json {
                    output::print_json(&target)?;
                } else {
                    output::print(&format!(
                        "created target {} ({})\n",
                        cell(&target.name),
                        cell(&target.kind)
                    ))?;
                    output::note(&format!(
                        "run a task on it with `runops tasks create -t {} -s SCRIPT`",
                        target.name
                    ));
                }
            }
            TargetsSub::List => {
                let client = crate::connect()?;
                let targets = client.list_targets().await?;
                if json {
                    output::print_json(&targets)?;
                } else if targets.is_empty() {
                    output::note(
                        "no targets yet; create one with `runops targets create --name NAME --type bash`",
                    );
                } else {
                    output::print(&targets_table(&targets))?;
                }
            }
            TargetsSub::Show(name) => {
                let client = crate::connect()?;
                let target = client.get_target(name.get()).await?;
                if json {
                    output::print_json(&target)?;
                } else {
                    output::print(&target_details(&target))?;
                }
            }
            TargetsSub::Update(args) => {
                let mut update = args.to_request();
                update.config = args.fields.config()?;
                if is_empty_update(&update) {
                    return Err(CliError::new("nothing to update").with_hint(
                        "pass the fields to change, e.g. `runops targets update --name NAME --tags prod`",
                    ));
                }
                let client = crate::connect()?;
                let target = client.update_target(args.name.get(), &update).await?;
                if json {
                    output::print_json(&target)?;
                } else {
                    output::print(&format!("updated target {}\n", cell(&target.name)))?;
                }
            }
            TargetsSub::Delete(TargetDeleteArgs { name, yes }) => {
                let client = crate::connect()?;
                if !yes && std::io::stdin().is_terminal() && !confirm_delete(name.get())? {
                    return Err(CliError::new(format!(
                        "target {} was not deleted",
                        cell(name.get())
                    ))
                    .with_hint("answer `y` to delete it, or pass --yes to skip the question"));
                }
                client.delete_target(name.get()).await?;
                if json {
                    output::print_json(&serde_json::json!({ "deleted": name.get() }))?;
                } else {
                    output::print(&format!("deleted target {}\n", cell(name.get())))?;
                }
            }
        }
        Ok(0)
    }
}

/// Where the agent finds the target's secrets, in one cell: `aws:mysql-prod`.
fn secrets_cell(t: &Target) -> String {
    match (&t.secret_provider, &t.secret_path) {
        (Some(p), Some(path)) => cell(&format!("{p}:{path}")),
        (None, Some(path)) => cell(path),
        (Some(p), None) => cell(p),
        (None, None) => "-".to_string(),
    }
}

pub(crate) fn targets_table(targets: &[Target]) -> String {
    let rows: Vec<Vec<String>> = targets
        .iter()
        .map(|t| {
            vec![
                cell(&t.name),
                cell(&t.kind),
                or_dash(t.tags.as_deref()),
                secrets_cell(t),
                cell(&t.review),
                output::short_duration(t.timeout),
                or_dash(t.description.as_deref()),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME",
            "TYPE",
            "TAGS",
            "SECRETS",
            "REVIEW",
            "TIMEOUT",
            "DESCRIPTION",
        ],
        &rows,
    )
}

fn target_details(t: &Target) -> String {
    let now = Utc::now();
    let text = |v: &Option<String>| match v {
        Some(s) if !s.is_empty() => output::printable(s),
        _ => "-".to_string(),
    };
    let mapping = t
        .secret_mapping
        .as_ref()
        .map(|m| serde_json::Value::Object(m.clone()).to_string())
        .unwrap_or_else(|| "-".to_string());
    let reviewers = if t.reviewers.is_empty() {
        "-".to_string()
    } else {
        cell(&t.reviewers.join(","))
    };
    let tags = match t.tags.as_deref() {
        Some(s) if !s.is_empty() => cell(s),
        _ => "- (runs on the agent without TAGS)".to_string(),
    };
    output::key_values(&[
        ("name", cell(&t.name)),
        ("type", cell(&t.kind)),
        ("description", text(&t.description)),
        ("tags", tags),
        ("secret provider", text(&t.secret_provider)),
        ("secret path", text(&t.secret_path)),
        ("secret mapping", output::printable(&mapping)),
        ("runner provider", text(&t.runner_provider)),
        ("redact", cell(&t.redact)),
        ("redact keys", key_list_cell(&t.redact_keys)),
        ("public keys", key_list_cell(&t.public_keys)),
        ("review", cell(&t.review)),
        ("reviewers", reviewers),
        (
            "min approvals",
            match (ReviewMode::parse(&t.review), t.min_approvals) {
                (Some(ReviewMode::None), _) => "-".to_string(),
                (_, Some(n)) => n.to_string(),
                (Some(ReviewMode::Team), None) => "every reviewer group".to_string(),
                (Some(ReviewMode::Anyone) | None, None) => "1".to_string(),
            },
        ),
        ("review ttl", output::short_duration(t.review_ttl)),
        ("approval ttl", output::short_duration(t.approval_ttl)),
        ("custom command", text(&t.custom_command)),
        ("slack channel", text(&t.channel)),
        (
            "config keys",
            if t.config_keys.is_empty() {
                "-".to_string()
            } else {
                cell(&format!(
                    "{} (values are write-only)",
                    t.config_keys.join(", ")
                ))
            },
        ),
        (
            "timeout",
            format!("{}s ({})", t.timeout, output::short_duration(t.timeout)),
        ),
        ("created", output::timestamp(t.created_at, now)),
        ("updated", output::timestamp(t.updated_at, now)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use crate::tests::{parse, parse_err};

    fn targets(args: &[&str]) -> TargetsCmd {
        let mut full = vec!["targets"];
        full.extend_from_slice(args);
        match parse(&full) {
            Command::Targets(t) => t,
            other => panic!("not targets: {other:?}"),
        }
    }

    fn create(args: &[&str]) -> TargetCreate {
        let mut full = vec!["create"];
        full.extend_from_slice(args);
        match targets(&full).cmd {
            TargetsSub::Create(c) => c.to_request(),
            other => panic!("not create: {other:?}"),
        }
    }

    #[test]
    fn docs_walkthrough_target_parses() {
        // runops targets create --name 'demo-db' --type 'mysql' --secret_path 'MY_TARGET'
        let t = create(&[
            "--name",
            "demo-db",
            "--type",
            "mysql",
            "--secret_path",
            "MY_TARGET",
        ]);
        assert_eq!(t.name, "demo-db");
        assert_eq!(t.kind, "mysql");
        assert_eq!(t.secret_path.as_deref(), Some("MY_TARGET"));
        assert_eq!(t.secret_provider, None);
    }

    #[test]
    fn docs_existing_secrets_target_parses_and_sends_the_mapping_as_text() {
        let t = create(&[
            "--name",
            "demo-db",
            "--type",
            "mysql",
            "--secret_provider",
            "aws",
            "--runner_provider",
            "runops",
            "--secret_path",
            "mysql-target-prod",
            "--secret_mapping",
            r#"{"MYSQL_HOST": "MYSQL_HOSTNAME"}"#,
        ]);
        assert_eq!(t.secret_provider.as_deref(), Some("aws"));
        assert_eq!(t.runner_provider.as_deref(), Some("runops"));
        assert_eq!(t.secret_path.as_deref(), Some("mysql-target-prod"));
        let body = serde_json::to_value(&t).unwrap();
        assert_eq!(
            body["secret_mapping"],
            serde_json::Value::String(r#"{"MYSQL_HOST": "MYSQL_HOSTNAME"}"#.into())
        );
        assert_eq!(body["type"], "mysql");
    }

    #[test]
    fn kebab_case_spellings_are_accepted_too() {
        let t = create(&[
            "--name",
            "n",
            "--type",
            "bash",
            "--secret-provider",
            "env-var",
            "--secret-path",
            "P",
            "--secret-mapping",
            "{}",
            "--runner-provider",
            "runops",
            "--custom-command",
            "bash -c [[SCRIPT]]",
        ]);
        assert_eq!(t.secret_provider.as_deref(), Some("env-var"));
        assert_eq!(t.secret_path.as_deref(), Some("P"));
        assert_eq!(t.custom_command.as_deref(), Some("bash -c [[SCRIPT]]"));
        let u = create(&["--name", "n", "--type", "bash", "--custom_command", "x"]);
        assert_eq!(u.custom_command.as_deref(), Some("x"));
    }

    #[test]
    fn all_create_options_reach_the_request() {
        let t = create(&[
            "--name",
            "db",
            "--type",
            "postgres",
            "--tags",
            "prod",
            "--description",
            "main db",
            "--timeout",
            "15m",
            "--redact",
            "none",
            "--review",
            "team",
            "--reviewers",
            "dba, sre",
        ]);
        assert_eq!(t.tags.as_deref(), Some("prod"));
        assert_eq!(t.description.as_deref(), Some("main db"));
        assert_eq!(t.timeout, Some(900));
        assert_eq!(t.redact.as_deref(), Some("none"));
        assert_eq!(t.review.as_deref(), Some("team"));
        assert_eq!(
            t.reviewers,
            Some(vec!["dba".to_string(), "sre".to_string()])
        );
    }

    #[test]
    fn bad_enum_values_and_missing_fields_are_rejected_by_the_parser() {
        assert!(parse_err(&["targets", "create", "--name", "x"]).contains("--type"));
        assert!(
            parse_err(&[
                "targets", "create", "--name", "x", "--type", "bash", "--redact", "some"
            ])
            .contains("all")
        );
        assert!(
            parse_err(&[
                "targets",
                "create",
                "--name",
                "x",
                "--type",
                "bash",
                "--timeout",
                "1y"
            ])
            .contains("unit")
        );
    }

    #[test]
    fn original_update_line_parses_and_sets_the_channel() {
        // runops targets update --name N --review R --channel C --reviewers G
        let TargetsSub::Update(u) = targets(&[
            "update",
            "--name",
            "demo-db",
            "--review",
            "team",
            "--channel",
            "#ops",
            "--reviewers",
            "dba",
        ])
        .cmd
        else {
            panic!("not update")
        };
        assert_eq!(u.name.get(), "demo-db");
        assert_eq!(u.fields.channel.as_deref(), Some("#ops"));
        let req = u.to_request();
        assert_eq!(req.review.as_deref(), Some("team"));
        assert_eq!(req.reviewers, Some(vec!["dba".to_string()]));
        let body = serde_json::to_value(&req).unwrap();
        assert_eq!(body["channel"], "#ops");
        assert!(!is_empty_update(&req));
    }

    #[test]
    fn update_with_only_a_name_changes_nothing() {
        let TargetsSub::Update(u) = targets(&["update", "demo-db"]).cmd else {
            panic!("not update")
        };
        assert!(is_empty_update(&u.to_request()));
        // An empty value is a change: it clears the field.
        let TargetsSub::Update(u) = targets(&["update", "demo-db", "--tags", ""]).cmd else {
            panic!("not update")
        };
        assert_eq!(u.to_request().tags.as_deref(), Some(""));
        assert!(!is_empty_update(&u.to_request()));
    }

    #[test]
    fn show_and_delete_take_the_name_either_way() {
        for args in [
            &["show", "demo-db"][..],
            &["show", "--name", "demo-db"][..],
            &["delete", "demo-db"][..],
            &["delete", "--name", "demo-db"][..],
        ] {
            match targets(args).cmd {
                TargetsSub::Show(n) | TargetsSub::Delete(TargetDeleteArgs { name: n, .. }) => {
                    assert_eq!(n.get(), "demo-db")
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(parse_err(&["targets", "show"]).contains("NAME"));
        parse_err(&["targets", "delete", "a", "--name", "b"]);
        assert!(matches!(
            targets(&["delete", "demo-db", "--yes"]).cmd,
            TargetsSub::Delete(TargetDeleteArgs { yes: true, .. })
        ));
    }

    #[test]
    fn database_target_without_secret_source_warns() {
        let warn = |args: &[&str]| missing_secret_source_warning(&create(args));
        let w = warn(&["--name", "db", "--type", "mysql"]).unwrap();
        assert!(
            w.starts_with("warning: target db of type mysql has no secret source"),
            "{w}"
        );
        assert!(warn(&["--name", "db", "--type", "mysql", "--secret_path", "X"]).is_none());
        assert!(
            warn(&[
                "--name",
                "db",
                "--type",
                "postgres",
                "--secret_provider",
                "aws"
            ])
            .is_none()
        );
        assert!(warn(&["--name", "b", "--type", "bash"]).is_none());
    }

    #[test]
    fn json_flag_is_accepted_before_or_after_the_subcommand() {
        assert!(targets(&["list", "--json"]).json);
        assert!(targets(&["--json", "list"]).json);
        assert!(!targets(&["list"]).json);
    }

    #[test]
    fn timeouts_accept_units() {
        assert_eq!(parse_timeout("3600"), Ok(3600));
        assert_eq!(parse_timeout("90s"), Ok(90));
        assert_eq!(parse_timeout("2h"), Ok(7200));
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("").is_err());
        assert!(parse_timeout("99999999999999999999h").is_err());
    }

    fn sample_target(name: &str, tags: Option<&str>) -> Target {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        Target {
            name: name.into(),
            kind: "mysql".into(),
            description: Some("line one\nline two".into()),
            tags: tags.map(Into::into),
            secret_provider: Some("aws".into()),
            secret_path: Some("mysql-target-prod".into()),
            secret_mapping: None,
            runner_provider: None,
            redact: "all".into(),
            review: "none".into(),
            reviewers: vec![],
            min_approvals: None,
            approval_ttl: 86_400,
            review_ttl: 604_800,
            custom_command: None,
            timeout: 3600,
            channel: None,
            created_at: t0,
            updated_at: t0,
            config_keys: vec![],
            redact_keys: vec![],
            public_keys: vec![],
        }
    }

    #[test]
    fn targets_table_shows_one_line_per_target() {
        let t = targets_table(&[
            sample_target("demo-db", Some("prod")),
            sample_target("x", None),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME     TYPE   TAGS  SECRETS"));
        assert!(lines[1].starts_with("demo-db  mysql  prod  aws:mysql-target-prod"));
        assert!(
            lines[1].ends_with("none    1h       line one line two"),
            "{}",
            lines[1]
        );
        assert!(lines[2].starts_with("x        mysql  -     aws:"));
    }

    #[test]
    fn target_details_mention_the_untagged_agent() {
        let d = target_details(&sample_target("x", None));
        assert!(d.contains("runs on the agent without TAGS"), "{d}");
        assert!(d.contains("timeout:         3600s (1h)"), "{d}");
    }
}
