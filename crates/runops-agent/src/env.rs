//! The one place that builds a child process's environment.
//!
//! A child gets only: PATH, HOME, LANG (from the agent, or sane defaults), a private
//! TMPDIR, the task's secrets and the task's metadata. Never the agent's own variables
//! (its TOKEN, API_URL, cloud credentials...): [`ChildEnv::apply`] clears the inherited
//! environment first.

use crate::config::{DEFAULT_LANG, DEFAULT_PATH};
use crate::secrets::Secrets;
use runops_proto::agent::TaskOffer;
use std::collections::BTreeMap;
use std::path::Path;

/// The parts of the agent's environment children may see, read once at start.
#[derive(Debug, Clone)]
pub struct BaseEnv {
    pub path: String,
    pub home: Option<String>,
    pub lang: String,
}

impl BaseEnv {
    pub fn from_process_env() -> BaseEnv {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        BaseEnv {
            path: get("PATH").unwrap_or_else(|| DEFAULT_PATH.to_string()),
            home: get("HOME"),
            lang: get("LANG").unwrap_or_else(|| DEFAULT_LANG.to_string()),
        }
    }
}

/// The metadata of a task, as environment variables (and placeholder values).
pub fn task_metadata(offer: &TaskOffer) -> Vec<(String, String)> {
    vec![
        ("RUNOPS_TASK_ID".into(), offer.task_id.to_string()),
        ("RUNOPS_TASK_TARGET".into(), offer.target.clone()),
        (
            "RUNOPS_TASK_DESCRIPTION".into(),
            offer.message.clone().unwrap_or_default(),
        ),
        ("RUNOPS_TASK_USER_EMAIL".into(), offer.user_email.clone()),
        ("RUNOPS_USER_GROUPS".into(), offer.user_groups.join(",")),
    ]
}

/// A complete child environment.
#[derive(Debug, Clone, Default)]
pub struct ChildEnv {
    vars: BTreeMap<String, String>,
    /// Secret keys that cannot be environment variables (they stay usable as
    /// `{{KEY}}` placeholders); the pipeline tells the user.
    pub skipped: Vec<String>,
}

impl ChildEnv {
    /// Base < secrets < metadata: a secret may override PATH, nothing overrides the metadata.
    pub fn build(
        base: &BaseEnv,
        tmp_dir: &Path,
        secrets: &Secrets,
        metadata: &[(String, String)],
    ) -> ChildEnv {
        let mut env = ChildEnv::default();
        let tmp = tmp_dir.to_string_lossy().into_owned();
        env.vars.insert("PATH".into(), base.path.clone());
        env.vars.insert(
            "HOME".into(),
            base.home.clone().unwrap_or_else(|| tmp.clone()),
        );
        env.vars.insert("LANG".into(), base.lang.clone());
        env.vars.insert("TMPDIR".into(), tmp);
        for (k, v) in secrets.iter().chain(metadata.iter().map(|(k, v)| (k, v))) {
            if is_valid_env_name(k) && !v.contains('\0') {
                env.vars.insert(k.clone(), v.clone());
            } else {
                env.skipped.push(k.clone());
            }
        }
        env
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Replaces `cmd`'s environment with exactly this one.
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        cmd.env_clear();
        cmd.envs(&self.vars);
    }
}

fn is_valid_env_name(k: &str) -> bool {
    !k.is_empty() && !k.contains('=') && !k.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_env_has_base_secrets_and_metadata_only() {
        let base = BaseEnv {
            path: "/bin".into(),
            home: None,
            lang: "C.UTF-8".into(),
        };
        let secrets: Secrets = [
            ("DB_PASS", "x"),
            ("BAD=KEY", "y"),
            ("RUNOPS_TASK_ID", "fake"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let meta = vec![("RUNOPS_TASK_ID".to_string(), "9".to_string())];
        let env = ChildEnv::build(&base, Path::new("/tmp/t9"), &secrets, &meta);
        let keys: Vec<&str> = env.iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "DB_PASS",
                "HOME",
                "LANG",
                "PATH",
                "RUNOPS_TASK_ID",
                "TMPDIR"
            ]
        );
        assert_eq!(env.get("HOME"), Some("/tmp/t9"));
        assert_eq!(env.get("RUNOPS_TASK_ID"), Some("9"));
        assert_eq!(env.skipped, ["BAD=KEY"]);
    }
}
