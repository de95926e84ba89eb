//! What the integrations that drive a command-line tool (`kubectl`, `vault`, `elixir`,
//! `rails`, `aws`, `heroku`, a custom command) share: finding the tool before anything
//! runs (and saying how to install it when it is missing), private files for scripts
//! and credentials, and running one or several argument vectors — never through a
//! shell — with the task's environment, output and stop signal.

use super::{RunContext, RunOutcome};
use crate::env::ChildEnv;
use crate::failure::TaskFailure;
use crate::process::{ProcessSpec, run_process};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// A command-line tool an integration runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    /// A name looked up on the child's PATH, or a path (from `config_var`).
    pub program: String,
    /// The agent variable that points the integration at another binary (`KUBECTL`,
    /// `VAULT_CLI=bao`), named in the "not found" message.
    pub config_var: Option<&'static str>,
    /// How to install it, for the "not found" message.
    pub install: &'static str,
}

impl Tool {
    /// The tool named by the agent's `config_var` variable (read once, when the agent
    /// starts), or `default`.
    pub fn from_agent_env(default: &str, config_var: &'static str, install: &'static str) -> Tool {
        let program = std::env::var(config_var)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_string());
        Tool {
            program,
            config_var: Some(config_var),
            install,
        }
    }

    /// The tool's executable on `env`'s PATH (or at its configured path), or an
    /// `agent-error` naming the tool and how to install it.
    pub fn locate(&self, env: &ChildEnv, kind: &str) -> Result<PathBuf, TaskFailure> {
        let path = env.get("PATH").unwrap_or_default();
        find_program(&self.program, path).ok_or_else(|| self.missing(path, kind))
    }

    fn missing(&self, path: &str, kind: &str) -> TaskFailure {
        let program = &self.program;
        let configure = match self.config_var {
            Some(var) => format!(", or set {var} on the agent to its path"),
            None => String::new(),
        };
        let where_ = if program.contains('/') {
            "does not exist or is not executable".to_string()
        } else {
            format!("was not found on the agent's PATH ({path})")
        };
        TaskFailure::agent_error(format!(
            "`{program}` {where_}; `{kind}` tasks need it: install it on the agent's machine or image ({}){configure}",
            self.install
        ))
    }
}

/// `program` if it contains a `/`, else the first executable file named `program` in the
/// colon-separated `path` — what `execvp` would run.
pub fn find_program(program: &str, path: &str) -> Option<PathBuf> {
    if program.is_empty() {
        return None;
    }
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_executable(&p).then_some(p);
    }
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Writes `contents` to `dir/name`, readable by the agent's user only (0600). For
/// scripts, manifests and credentials: they never go on a command line.
pub async fn write_private_file(
    dir: &Path,
    name: &str,
    contents: &[u8],
) -> Result<PathBuf, TaskFailure> {
    let path = dir.join(name);
    let written = async {
        let mut f = tokio::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .await?;
        f.write_all(contents).await?;
        f.flush().await
    };
    written.await.map_err(|e| {
        TaskFailure::agent_error(format!(
            "cannot write the task's private file {}: {e}",
            path.display()
        ))
    })?;
    Ok(path)
}

/// One run of the tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub args: Vec<String>,
    /// Given on stdin (then closed); `None` is an empty stdin.
    pub stdin: Option<Vec<u8>>,
}

impl Invocation {
    pub fn new(args: Vec<String>) -> Invocation {
        Invocation { args, stdin: None }
    }

    pub fn with_stdin(args: Vec<String>, stdin: &str) -> Invocation {
        Invocation {
            args,
            stdin: Some(stdin.as_bytes().to_vec()),
        }
    }
}

/// Runs `invocations` of `tool` one after the other, like `sh -e` would: the first one
/// that exits non-zero (or a stop) ends the task with its exit code.
pub async fn run_tool(
    ctx: &RunContext<'_>,
    tool: &Tool,
    env: &ChildEnv,
    cwd: &Path,
    invocations: Vec<Invocation>,
) -> Result<RunOutcome, TaskFailure> {
    let program = tool.locate(env, ctx.kind)?;
    let mut exit_code = 0;
    for inv in invocations {
        if ctx.stop.is_cancelled() {
            break;
        }
        let spec = ProcessSpec {
            program: program.to_string_lossy().into_owned(),
            args: inv.args,
            stdin: inv.stdin,
            cwd: cwd.to_path_buf(),
            needed_for: format!("`{}` tasks", ctx.kind),
            group_record: Some(ctx.group_record.to_path_buf()),
        };
        exit_code = run_process(&spec, env, ctx.output, ctx.stop, ctx.kill_grace).await?;
        if exit_code != 0 {
            break;
        }
    }
    Ok(RunOutcome { exit_code })
}

/// Drops a leading word naming the tool itself (`kubectl get pods` → `get pods`), so a
/// script copied from a terminal works as written.
pub fn strip_tool_name(mut args: Vec<String>, names: &[&str]) -> Vec<String> {
    if args
        .first()
        .is_some_and(|first| names.contains(&first.as_str()))
    {
        args.remove(0);
    }
    args
}

/// A secret's value when it is present and not blank.
pub fn secret<'a>(ctx: &'a RunContext<'_>, key: &str) -> Option<&'a str> {
    ctx.secrets
        .get(key)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_program_searches_path_in_order_and_needs_the_exec_bit() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let plain = a.path().join("tool");
        std::fs::write(&plain, "not executable").unwrap();
        let exe = b.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}::{}", a.path().display(), b.path().display());
        assert_eq!(find_program("tool", &path), Some(exe.clone()));
        assert_eq!(find_program("other", &path), None);
        assert_eq!(find_program(exe.to_str().unwrap(), ""), Some(exe));
        assert_eq!(find_program(plain.to_str().unwrap(), ""), None);
        assert_eq!(find_program("", &path), None);
    }

    #[test]
    fn missing_tool_message_names_tool_install_hint_and_config_var() {
        let tool = Tool {
            program: "kubectl".into(),
            config_var: Some("KUBECTL"),
            install: "https://kubernetes.io/docs/tasks/tools/",
        };
        let env = ChildEnv::default().with_vars([("PATH", "/nowhere")]);
        let f = tool.locate(&env, "k8s").unwrap_err();
        assert_eq!(f.reason, runops_proto::FailureReason::AgentError);
        assert!(
            f.message
                .contains("`kubectl` was not found on the agent's PATH (/nowhere)"),
            "{f}"
        );
        assert!(f.message.contains("kubernetes.io/docs/tasks/tools"), "{f}");
        assert!(f.message.contains("set KUBECTL"), "{f}");
        assert!(f.message.contains("`k8s` tasks"), "{f}");
    }

    #[tokio::test]
    async fn private_files_are_0600_and_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_private_file(dir.path(), "kubeconfig", b"secret")
            .await
            .unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
        assert!(
            write_private_file(dir.path(), "kubeconfig", b"x")
                .await
                .is_err()
        );
    }

    #[test]
    fn strip_tool_name_only_drops_a_leading_tool_word() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            strip_tool_name(v(&["kubectl", "get"]), &["kubectl"]),
            v(&["get"])
        );
        assert_eq!(
            strip_tool_name(v(&["get", "kubectl"]), &["kubectl"]),
            v(&["get", "kubectl"])
        );
        assert!(strip_tool_name(vec![], &["kubectl"]).is_empty());
    }
}
