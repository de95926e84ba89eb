//! `elixir`: the script goes to a 0600 file in the task's private dir and runs with
//! `elixir FILE` (the file, not `-e`, keeps the rendered script off the command line).

use super::tool::{Invocation, Tool, run_tool, write_private_file};
use super::{RunContext, RunOutcome, Runner};
use crate::failure::TaskFailure;
use async_trait::async_trait;

/// Where the "elixir not found" message sends the operator.
pub const ELIXIR_INSTALL: &str =
    "Debian/Ubuntu: `apt-get install elixir`; others: https://elixir-lang.org/install.html";

pub struct ElixirRunner {
    pub tool: Tool,
}

/// `elixir`, or the binary named by the agent's `ELIXIR_CLI`.
pub fn elixir_tool() -> Tool {
    Tool::from_agent_env("elixir", "ELIXIR_CLI", ELIXIR_INSTALL)
}

#[async_trait]
impl Runner for ElixirRunner {
    async fn run(&self, ctx: RunContext<'_>) -> Result<RunOutcome, TaskFailure> {
        self.tool.locate(ctx.env, ctx.kind)?;
        let file = write_private_file(ctx.tmp_dir, "script.exs", ctx.script.as_bytes()).await?;
        let args = vec![file.to_string_lossy().into_owned()];
        run_tool(
            &ctx,
            &self.tool,
            ctx.env,
            ctx.tmp_dir,
            vec![Invocation::new(args)],
        )
        .await
    }
}
