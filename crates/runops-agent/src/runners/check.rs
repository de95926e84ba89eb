//! `runops agent --check`: which integration types this agent can run, with the tool
//! each one starts (found where, which version) or why it cannot (the tool is missing,
//! and how to install it) — so an operator sees it before a task fails. The agent logs
//! the same at start-up.

use super::RunnerRegistry;
use super::tool::{Tool, find_program};
use super::{ecs, elixir, heroku, k8s, rails, vault};
use runops_proto::vocab::TargetType;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// A tool's `--version` that takes longer is reported without a version; some CLIs
/// (elixir, aws) take a second to start on a cold machine.
pub const VERSION_PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The Session Manager plugin `aws ecs execute-command` needs.
pub const SESSION_MANAGER_PLUGIN: &str = "session-manager-plugin";

/// How one integration type stands on this agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationCheck {
    pub kind: String,
    pub status: CheckStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckStatus {
    /// Runs inside the agent (native database drivers).
    BuiltIn,
    /// Its tool is there: where, and the first line of its version output.
    Ready {
        tool: PathBuf,
        version: Option<String>,
    },
    /// The program comes from each target's `custom_command`.
    PerTarget,
    /// Cannot run here: why, and what to do.
    Unavailable { why: String },
}

/// The tool a type starts and the arguments that print its version (`None`: built in,
/// or the target's own command).
fn tool_of(kind: TargetType) -> Option<(Tool, &'static [&'static str])> {
    use TargetType::*;
    let plain = |program: &str, install: &'static str| Tool {
        program: program.to_string(),
        config_var: None,
        install,
    };
    Some(match kind {
        Bash => (plain("bash", "`apt-get install bash`"), &["--version"]),
        Python => (
            plain("python3", "`apt-get install python3`"),
            &["--version"],
        ),
        Node => (plain("node", "`apt-get install nodejs`"), &["--version"]),
        Mongodb => (
            plain(
                "mongosh",
                "https://www.mongodb.com/docs/mongodb-shell/install/",
            ),
            &["--version"],
        ),
        K8s | K8sApply | K8sExec | RailsConsoleK8s => {
            (k8s::kubectl_tool(), &["version", "--client"])
        }
        HashicorpVault => (vault::vault_tool(), &["version"]),
        Elixir => (elixir::elixir_tool(), &["--version"]),
        Rails | RailsConsole => (rails::rails_tool(), &["--version"]),
        EcsExec | RailsConsoleEcs => (ecs::aws_tool(), &["--version"]),
        Heroku => (heroku::heroku_tool(), &["--version"]),
        Postgres | PostgresCsv | Mysql | MysqlCsv | SqlServer | CustomCommand => return None,
    })
}

/// Checks every type of `registry` against the agent's `path` (its PATH).
pub async fn check_integrations(registry: &RunnerRegistry, path: &str) -> Vec<IntegrationCheck> {
    let checks = registry.supported().into_iter().map(|kind| async move {
        IntegrationCheck {
            kind: kind.to_string(),
            status: check_type(kind, path).await,
        }
    });
    futures_util::future::join_all(checks).await
}

async fn check_type(kind: &str, path: &str) -> CheckStatus {
    let Ok(known) = kind.parse::<TargetType>() else {
        return CheckStatus::BuiltIn;
    };
    if known == TargetType::CustomCommand {
        return CheckStatus::PerTarget;
    }
    let Some((tool, version_args)) = tool_of(known) else {
        return CheckStatus::BuiltIn;
    };
    let Some(found) = find_program(&tool.program, path) else {
        let env = crate::env::ChildEnv::default().with_vars([("PATH", path)]);
        let why = match tool.locate(&env, kind) {
            Err(f) => f.message,
            Ok(_) => format!("`{}` was not found", tool.program),
        };
        return CheckStatus::Unavailable { why };
    };
    if matches!(known, TargetType::EcsExec | TargetType::RailsConsoleEcs)
        && find_program(SESSION_MANAGER_PLUGIN, path).is_none()
    {
        return CheckStatus::Unavailable {
            why: format!(
                "`{SESSION_MANAGER_PLUGIN}` was not found on the agent's PATH; `aws ecs execute-command` needs it: https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-working-with-install-plugin.html"
            ),
        };
    }
    let version = probe_version(&found, version_args, path).await;
    CheckStatus::Ready {
        tool: found,
        version,
    }
}

/// The first line the tool prints for its version (some print it on stderr), if it
/// answers within [`VERSION_PROBE_TIMEOUT`].
async fn probe_version(program: &PathBuf, args: &[&str], path: &str) -> Option<String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", path)
        .env("LANG", crate::limits::DEFAULT_LANG)
        // An agent that exits while a probe still runs closes its pipes: the Erlang VM
        // behind `elixir` then writes an erl_crash.dump into its working directory.
        .env("ERL_CRASH_DUMP_SECONDS", "0")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Ok(home) = std::env::var("HOME") {
        cmd.env("HOME", home);
    }
    let out = tokio::time::timeout(VERSION_PROBE_TIMEOUT, cmd.output())
        .await
        .ok()?
        .ok()?;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // elixir prints the Erlang banner first; prefer a line that names the tool.
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .find(|l| l.to_lowercase().contains(&name))
        .or(lines.first())
        .map(|l| l.to_string())
}

/// The report `runops agent --check` prints: one line per type, then a summary.
pub fn format_checks(checks: &[IntegrationCheck]) -> String {
    let width = checks.iter().map(|c| c.kind.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let (mark, detail) = match &c.status {
            CheckStatus::BuiltIn => ("ok ", "built in".to_string()),
            CheckStatus::PerTarget => (
                "ok ",
                "runs the program of each target's custom_command".to_string(),
            ),
            CheckStatus::Ready { tool, version } => (
                "ok ",
                match version {
                    Some(v) => format!("{} ({v})", tool.display()),
                    None => tool.display().to_string(),
                },
            ),
            CheckStatus::Unavailable { why } => ("no ", why.clone()),
        };
        out.push_str(&format!("{mark} {:width$}  {detail}\n", c.kind));
    }
    let unavailable = checks
        .iter()
        .filter(|c| matches!(c.status, CheckStatus::Unavailable { .. }))
        .count();
    out.push_str(&format!(
        "{} of {} integration types can run on this agent\n",
        checks.len() - unavailable,
        checks.len()
    ));
    out
}

/// One line for start-up: `13 of 21 integration types ready; runops agent --check
/// lists them`. Start-up output stays short; the details are one command away.
pub fn checks_summary(checks: &[IntegrationCheck]) -> String {
    let ready = checks
        .iter()
        .filter(|c| !matches!(c.status, CheckStatus::Unavailable { .. }))
        .count();
    format!(
        "{ready} of {} integration types ready; runops agent --check lists them",
        checks.len()
    )
}

/// Logs [`checks_summary`] at info, and each integration at debug (`RUST_LOG=debug`).
pub fn log_checks(checks: &[IntegrationCheck]) {
    tracing::info!("{}", checks_summary(checks));
    for c in checks {
        match &c.status {
            CheckStatus::Unavailable { why } => {
                tracing::debug!(integration = %c.kind, "cannot run `{}` tasks: {why}", c.kind)
            }
            CheckStatus::Ready { tool, version } => tracing::debug!(
                integration = %c.kind,
                tool = %tool.display(),
                version = version.as_deref().unwrap_or("unknown"),
                "integration ready"
            ),
            CheckStatus::BuiltIn | CheckStatus::PerTarget => {
                tracing::debug!(integration = %c.kind, "integration ready")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn check_reports_found_tools_with_versions_and_missing_ones_with_install_hints() {
        let bin = tempfile::tempdir().unwrap();
        let fake = bin.path().join("kubectl");
        std::fs::write(&fake, "#!/bin/sh\necho 'Client Version: v9.9.9-fake'\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:/usr/bin:/bin", bin.path().display());
        let checks = check_integrations(&RunnerRegistry::with_defaults(), &path).await;
        let get = |kind: &str| {
            checks
                .iter()
                .find(|c| c.kind == kind)
                .unwrap_or_else(|| panic!("{kind} missing from {checks:?}"))
                .status
                .clone()
        };
        assert_eq!(
            get("k8s"),
            CheckStatus::Ready {
                tool: fake.clone(),
                version: Some("Client Version: v9.9.9-fake".into())
            }
        );
        assert!(matches!(get("bash"), CheckStatus::Ready { .. }));
        assert_eq!(get("custom_command"), CheckStatus::PerTarget);
        // No heroku CLI in this PATH (the fake dir, /usr/bin, /bin).
        if find_program("heroku", &path).is_none() {
            let CheckStatus::Unavailable { why } = get("heroku") else {
                panic!("heroku should be unavailable");
            };
            assert!(
                why.contains("`heroku` was not found") && why.contains("devcenter.heroku.com"),
                "{why}"
            );
        }
        let report = format_checks(&checks);
        assert!(
            report.contains("k8s ") && report.contains("v9.9.9-fake"),
            "{report}"
        );
        assert!(
            report.contains("integration types can run on this agent"),
            "{report}"
        );
    }
}
