//! `bash`, `python` and `node`: the interpreter reads the script on stdin, so the
//! (rendered, secret-bearing) script never touches disk or a command line.

use super::{RunContext, RunOutcome, Runner};
use crate::failure::TaskFailure;
use crate::process::{ProcessSpec, run_process};
use async_trait::async_trait;

/// An interpreter that runs a script given on stdin.
pub struct ScriptRunner {
    pub program: &'static str,
    pub args: &'static [&'static str],
}

#[async_trait]
impl Runner for ScriptRunner {
    async fn run(&self, ctx: RunContext<'_>) -> Result<RunOutcome, TaskFailure> {
        let spec = ProcessSpec {
            program: self.program.to_string(),
            args: self.args.iter().map(|a| a.to_string()).collect(),
            stdin: Some(ctx.script.as_bytes().to_vec()),
            cwd: ctx.tmp_dir.to_path_buf(),
            needed_for: format!("`{}` tasks", ctx.kind),
            group_record: Some(ctx.group_record.to_path_buf()),
        };
        let exit_code = run_process(&spec, ctx.env, ctx.output, ctx.stop, ctx.kill_grace).await?;
        Ok(RunOutcome { exit_code })
    }
}
