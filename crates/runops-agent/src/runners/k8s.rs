//! `k8s`, `k8s-apply`, `k8s-exec` and `rails-console-k8s`: `kubectl` with the target's
//! kubeconfig (`KUBE_CONFIG_DATA`, base64) written to a 0600 file in the task's private
//! dir and given with `--kubeconfig`. `NAMESPACE` is honoured by every type.
//!
//! - `k8s`: each line of the script is a `kubectl` command (`get pods -n prod`), split
//!   like a shell splits words and passed as arguments — never to a shell. The lines
//!   run in order; the first that fails ends the task.
//! - `k8s-apply`: the script is a manifest, `kubectl apply -f <private file>`.
//! - `k8s-exec`: with `K8S_EXEC_RESOURCE` and `K8S_EXEC_COMMAND`,
//!   `kubectl exec -i RESOURCE [-n NS] [-c K8S_EXEC_CONTAINER] -- COMMAND...` with the
//!   script on stdin; otherwise the script is `RESOURCE COMMAND...` (or just
//!   `COMMAND...` when only `K8S_EXEC_RESOURCE` is set).
//! - `rails-console-k8s` (deprecated; use `k8s-exec`): `kubectl exec [-n NS]
//!   deploy/DEPLOYMENT -- bundle exec rails runner <script>`.

use super::argv::{split_commands, split_words};
use super::tool::{Invocation, Tool, run_tool, secret, strip_tool_name, write_private_file};
use super::{RunContext, RunOutcome, Runner};
use crate::failure::TaskFailure;
use async_trait::async_trait;
use base64::Engine;
use std::path::Path;

/// Where the "kubectl not found" message sends the operator.
pub const KUBECTL_INSTALL: &str = "https://kubernetes.io/docs/tasks/tools/";

/// What a task of each type asks `kubectl` to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum K8sMode {
    Command,
    Apply,
    Exec,
    RailsConsole,
}

pub struct KubectlRunner {
    pub tool: Tool,
    pub mode: K8sMode,
}

/// `kubectl`, or the binary named by the agent's `KUBECTL`.
pub fn kubectl_tool() -> Tool {
    Tool::from_agent_env("kubectl", "KUBECTL", KUBECTL_INSTALL)
}

#[async_trait]
impl Runner for KubectlRunner {
    fn required_keys(&self) -> &'static [&'static str] {
        match self.mode {
            K8sMode::RailsConsole => &["KUBE_CONFIG_DATA", "DEPLOYMENT"],
            _ => &["KUBE_CONFIG_DATA"],
        }
    }

    async fn run(&self, ctx: RunContext<'_>) -> Result<RunOutcome, TaskFailure> {
        // Before writing anything: a missing kubectl is the likeliest problem.
        self.tool.locate(ctx.env, ctx.kind)?;
        let kubeconfig = decode_kubeconfig(secret(&ctx, "KUBE_CONFIG_DATA").unwrap_or_default())?;
        let config_path = write_private_file(ctx.tmp_dir, "kubeconfig", &kubeconfig).await?;
        let manifest_path = match self.mode {
            K8sMode::Apply => {
                Some(write_private_file(ctx.tmp_dir, "manifest.yaml", ctx.script.as_bytes()).await?)
            }
            _ => None,
        };
        let keys = K8sKeys {
            namespace: secret(&ctx, "NAMESPACE"),
            exec_resource: secret(&ctx, "K8S_EXEC_RESOURCE"),
            exec_command: secret(&ctx, "K8S_EXEC_COMMAND"),
            exec_container: secret(&ctx, "K8S_EXEC_CONTAINER"),
            deployment: secret(&ctx, "DEPLOYMENT"),
        };
        let invocations = plan(
            self.mode,
            ctx.script,
            &keys,
            &config_path,
            manifest_path.as_deref(),
        )?;
        // KUBECONFIG too, for plugins and credential helpers kubectl starts.
        let env = ctx
            .env
            .with_vars([("KUBECONFIG", config_path.to_string_lossy().into_owned())]);
        run_tool(&ctx, &self.tool, &env, ctx.tmp_dir, invocations).await
    }
}

/// The optional keys the k8s types read.
#[derive(Debug, Default, Clone, Copy)]
pub struct K8sKeys<'a> {
    pub namespace: Option<&'a str>,
    pub exec_resource: Option<&'a str>,
    pub exec_command: Option<&'a str>,
    pub exec_container: Option<&'a str>,
    pub deployment: Option<&'a str>,
}

/// The `KUBE_CONFIG_DATA` secret (base64, line breaks allowed) as kubeconfig bytes.
pub fn decode_kubeconfig(data: &str) -> Result<Vec<u8>, TaskFailure> {
    let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(compact.as_bytes()).map_err(|e| {
        TaskFailure::secrets(format!(
            "KUBE_CONFIG_DATA is not valid base64 ({e}); store the kubeconfig encoded, e.g. `base64 -w0 ~/.kube/config`"
        ))
    })
}

/// The `kubectl` runs of one task (pure: unit-tested for every type).
pub fn plan(
    mode: K8sMode,
    script: &str,
    keys: &K8sKeys<'_>,
    kubeconfig: &Path,
    manifest: Option<&Path>,
) -> Result<Vec<Invocation>, TaskFailure> {
    let mut base = vec![
        "--kubeconfig".to_string(),
        kubeconfig.to_string_lossy().into_owned(),
    ];
    let ns_flag = |args: &mut Vec<String>| {
        if let Some(ns) = keys.namespace {
            args.extend(["--namespace".to_string(), ns.to_string()]);
        }
    };
    let invalid = |e: super::argv::SplitError| {
        TaskFailure::invalid_config(format!("cannot split the script into arguments: {e}"))
    };
    match mode {
        K8sMode::Command => {
            ns_flag(&mut base);
            let commands = split_commands(script).map_err(invalid)?;
            if commands.is_empty() {
                return Err(TaskFailure::invalid_config(
                    "the script is empty; write kubectl arguments, e.g. `get pods`",
                ));
            }
            Ok(commands
                .into_iter()
                .map(|cmd| {
                    let mut args = base.clone();
                    args.extend(strip_tool_name(cmd, &["kubectl"]));
                    Invocation::new(args)
                })
                .collect())
        }
        K8sMode::Apply => {
            let Some(manifest) = manifest else {
                return Err(TaskFailure::agent_error(
                    "the manifest file was not written",
                ));
            };
            ns_flag(&mut base);
            base.extend([
                "apply".to_string(),
                "-f".to_string(),
                manifest.to_string_lossy().into_owned(),
            ]);
            Ok(vec![Invocation::new(base)])
        }
        K8sMode::Exec => {
            let (resource, command, stdin) = match (keys.exec_resource, keys.exec_command) {
                (Some(resource), Some(command)) => {
                    let command = split_words(command).map_err(|e| {
                        TaskFailure::invalid_config(format!(
                            "cannot split K8S_EXEC_COMMAND into arguments: {e}"
                        ))
                    })?;
                    (resource.to_string(), command, Some(script))
                }
                (None, Some(_)) => {
                    return Err(TaskFailure::invalid_config(
                        "K8S_EXEC_COMMAND is set but K8S_EXEC_RESOURCE is not; add the resource to exec in (`deploy/web`, `pod/web-0`) to the secret",
                    ));
                }
                (Some(resource), None) => (
                    resource.to_string(),
                    split_words(script).map_err(invalid)?,
                    None,
                ),
                (None, None) => {
                    let mut words = split_words(script).map_err(invalid)?;
                    if words.is_empty() {
                        return Err(exec_usage());
                    }
                    let resource = words.remove(0);
                    (resource, words, None)
                }
            };
            if command.is_empty() {
                return Err(exec_usage());
            }
            base.push("exec".to_string());
            if stdin.is_some() {
                base.push("-i".to_string());
            }
            base.push(resource);
            ns_flag(&mut base);
            if let Some(container) = keys.exec_container {
                base.extend(["-c".to_string(), container.to_string()]);
            }
            base.push("--".to_string());
            base.extend(command);
            Ok(vec![match stdin {
                Some(script) => Invocation::with_stdin(base, script),
                None => Invocation::new(base),
            }])
        }
        K8sMode::RailsConsole => {
            let Some(deployment) = keys.deployment else {
                return Err(TaskFailure::secrets(
                    "rails-console-k8s needs DEPLOYMENT (the deployment running the Rails app) in the secret",
                ));
            };
            base.push("exec".to_string());
            ns_flag(&mut base);
            base.push(format!("deploy/{deployment}"));
            base.extend(
                ["--", "bundle", "exec", "rails", "runner"]
                    .iter()
                    .map(|s| s.to_string()),
            );
            base.push(script.to_string());
            Ok(vec![Invocation::new(base)])
        }
    }
}

fn exec_usage() -> TaskFailure {
    TaskFailure::invalid_config(
        "k8s-exec needs a resource and a command: set K8S_EXEC_RESOURCE and K8S_EXEC_COMMAND in the secret (the script then goes to the command's stdin), or write the script as `RESOURCE COMMAND...` (`deploy/web ls -la`)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use runops_proto::FailureReason;

    const CFG: &str = "/tmp/t/kubeconfig";

    fn args(mode: K8sMode, script: &str, keys: K8sKeys<'_>) -> Vec<Invocation> {
        plan(
            mode,
            script,
            &keys,
            Path::new(CFG),
            Some(Path::new("/tmp/t/manifest.yaml")),
        )
        .unwrap()
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn k8s_runs_each_line_as_kubectl_arguments_with_namespace() {
        let keys = K8sKeys {
            namespace: Some("prod"),
            ..K8sKeys::default()
        };
        let inv = args(
            K8sMode::Command,
            "get pods -l 'app=web'\nkubectl get svc; id\n",
            keys,
        );
        assert_eq!(
            inv,
            [
                Invocation::new(v(&[
                    "--kubeconfig",
                    CFG,
                    "--namespace",
                    "prod",
                    "get",
                    "pods",
                    "-l",
                    "app=web"
                ])),
                Invocation::new(v(&[
                    "--kubeconfig",
                    CFG,
                    "--namespace",
                    "prod",
                    "get",
                    "svc;",
                    "id"
                ])),
            ]
        );
    }

    #[test]
    fn k8s_rejects_an_empty_script_and_unbalanced_quotes() {
        let f = plan(
            K8sMode::Command,
            " \n# only a comment\n",
            &K8sKeys::default(),
            Path::new(CFG),
            None,
        )
        .unwrap_err();
        assert_eq!(f.reason, FailureReason::InvalidConfig);
        assert!(f.message.contains("script is empty"), "{f}");
        let f = plan(
            K8sMode::Command,
            "get pods -l 'app",
            &K8sKeys::default(),
            Path::new(CFG),
            None,
        )
        .unwrap_err();
        assert!(f.message.contains("single quote opened on line 1"), "{f}");
    }

    #[test]
    fn k8s_apply_applies_the_private_manifest_file() {
        let keys = K8sKeys {
            namespace: Some("staging"),
            ..K8sKeys::default()
        };
        assert_eq!(
            args(K8sMode::Apply, "kind: ConfigMap\n", keys),
            [Invocation::new(v(&[
                "--kubeconfig",
                CFG,
                "--namespace",
                "staging",
                "apply",
                "-f",
                "/tmp/t/manifest.yaml"
            ]))]
        );
    }

    #[test]
    fn k8s_exec_with_resource_and_command_keys_sends_the_script_on_stdin() {
        let keys = K8sKeys {
            namespace: Some("prod"),
            exec_resource: Some("deploy/web"),
            exec_command: Some("bundle exec rails runner -"),
            exec_container: Some("app"),
            ..K8sKeys::default()
        };
        let script = "puts \"$(id)\"; `rm -rf /`\n";
        assert_eq!(
            args(K8sMode::Exec, script, keys),
            [Invocation::with_stdin(
                v(&[
                    "--kubeconfig",
                    CFG,
                    "exec",
                    "-i",
                    "deploy/web",
                    "--namespace",
                    "prod",
                    "-c",
                    "app",
                    "--",
                    "bundle",
                    "exec",
                    "rails",
                    "runner",
                    "-"
                ]),
                script
            )]
        );
    }

    #[test]
    fn k8s_exec_without_keys_reads_resource_and_command_from_the_script() {
        assert_eq!(
            args(
                K8sMode::Exec,
                "pod/web-0 sh -c 'echo $HOME; ls'",
                K8sKeys::default()
            ),
            [Invocation::new(v(&[
                "--kubeconfig",
                CFG,
                "exec",
                "pod/web-0",
                "--",
                "sh",
                "-c",
                "echo $HOME; ls"
            ]))]
        );
        let keys = K8sKeys {
            exec_resource: Some("deploy/web"),
            ..K8sKeys::default()
        };
        assert_eq!(
            args(K8sMode::Exec, "ls -la", keys),
            [Invocation::new(v(&[
                "--kubeconfig",
                CFG,
                "exec",
                "deploy/web",
                "--",
                "ls",
                "-la"
            ]))]
        );
        let f = plan(
            K8sMode::Exec,
            "pod/web-0",
            &K8sKeys::default(),
            Path::new(CFG),
            None,
        )
        .unwrap_err();
        assert!(
            f.message.contains("K8S_EXEC_RESOURCE and K8S_EXEC_COMMAND"),
            "{f}"
        );
        let keys = K8sKeys {
            exec_command: Some("sh"),
            ..K8sKeys::default()
        };
        let f = plan(K8sMode::Exec, "x", &keys, Path::new(CFG), None).unwrap_err();
        assert!(f.message.contains("K8S_EXEC_RESOURCE is not"), "{f}");
    }

    #[test]
    fn rails_console_k8s_runs_rails_runner_in_the_deployment() {
        let keys = K8sKeys {
            namespace: Some("prod"),
            deployment: Some("web"),
            ..K8sKeys::default()
        };
        assert_eq!(
            args(K8sMode::RailsConsole, "puts User.count", keys),
            [Invocation::new(v(&[
                "--kubeconfig",
                CFG,
                "exec",
                "--namespace",
                "prod",
                "deploy/web",
                "--",
                "bundle",
                "exec",
                "rails",
                "runner",
                "puts User.count"
            ]))]
        );
    }

    #[test]
    fn kubeconfig_is_decoded_from_base64_with_line_breaks() {
        assert_eq!(decode_kubeconfig("YXBp\nVmVy\n").unwrap(), b"apiVer");
        assert_eq!(decode_kubeconfig("YQ").unwrap(), b"a");
        let f = decode_kubeconfig("not base64!").unwrap_err();
        assert_eq!(f.reason, FailureReason::Secrets);
        assert!(
            f.message.contains("KUBE_CONFIG_DATA is not valid base64"),
            "{f}"
        );
    }
}
