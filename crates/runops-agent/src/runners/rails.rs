//! `rails` and `rails-console`, in the application's directory (the `RAILS_ROOT`
//! secret, or the agent's working directory when it is not set).
//!
//! - `rails`: each line of the script is a `rails` command (`db:migrate:status`), split
//!   like a shell splits words and run without a shell, in order; the first that fails
//!   ends the task.
//! - `rails-console`: the script goes to a 0600 file in the task's private dir and runs
//!   with `rails runner FILE`.

use super::argv::split_commands;
use super::tool::{Invocation, Tool, run_tool, secret, strip_tool_name, write_private_file};
use super::{RunContext, RunOutcome, Runner};
use crate::failure::TaskFailure;
use async_trait::async_trait;
use std::path::{Path, PathBuf};

/// Where the "rails not found" message sends the operator.
pub const RAILS_INSTALL: &str = "run the agent where the application's gems are installed (`gem install rails`, or Debian's `rails` package)";

pub struct RailsRunner {
    pub tool: Tool,
    /// `rails runner FILE` (`rails-console`) instead of `rails <args>`.
    pub console: bool,
    /// The application directory when the secret has no `RAILS_ROOT`.
    pub default_root: PathBuf,
}

/// `rails`, or the binary named by the agent's `RAILS_CLI` (`bin/rails`).
pub fn rails_tool() -> Tool {
    Tool::from_agent_env("rails", "RAILS_CLI", RAILS_INSTALL)
}

#[async_trait]
impl Runner for RailsRunner {
    async fn run(&self, ctx: RunContext<'_>) -> Result<RunOutcome, TaskFailure> {
        let root = match secret(&ctx, "RAILS_ROOT") {
            Some(r) => PathBuf::from(r),
            None => self.default_root.clone(),
        };
        if !root.is_dir() {
            return Err(TaskFailure::invalid_config(format!(
                "RAILS_ROOT `{}` is not a directory on the agent's machine; set it to the application's directory",
                root.display()
            )));
        }
        self.tool.locate(ctx.env, ctx.kind)?;
        let invocations = if self.console {
            let file = write_private_file(ctx.tmp_dir, "runner.rb", ctx.script.as_bytes()).await?;
            vec![console_invocation(&file)]
        } else {
            plan(ctx.script)?
        };
        run_tool(&ctx, &self.tool, ctx.env, &root, invocations).await
    }
}

/// `rails runner FILE`.
pub fn console_invocation(file: &Path) -> Invocation {
    Invocation::new(vec![
        "runner".to_string(),
        file.to_string_lossy().into_owned(),
    ])
}

/// The `rails` runs of a `rails` script (pure: unit-tested).
pub fn plan(script: &str) -> Result<Vec<Invocation>, TaskFailure> {
    let commands = split_commands(script).map_err(|e| {
        TaskFailure::invalid_config(format!("cannot split the script into arguments: {e}"))
    })?;
    if commands.is_empty() {
        return Err(TaskFailure::invalid_config(
            "the script is empty; write rails arguments, e.g. `db:migrate:status`",
        ));
    }
    Ok(commands
        .into_iter()
        .map(|cmd| Invocation::new(strip_tool_name(cmd, &["rails", "bin/rails"])))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rails_runs_each_line_as_rails_arguments() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            plan("rails db:migrate:status\nrunner 'puts \"$(id)\"; 1'\n").unwrap(),
            [
                Invocation::new(v(&["db:migrate:status"])),
                Invocation::new(v(&["runner", "puts \"$(id)\"; 1"])),
            ]
        );
        assert!(plan("").unwrap_err().message.contains("script is empty"));
    }

    #[test]
    fn rails_console_runs_the_private_script_file() {
        assert_eq!(
            console_invocation(Path::new("/tmp/t/runner.rb")).args,
            ["runner", "/tmp/t/runner.rb"]
        );
    }
}
