//! The `filesystem` provider: a JSON file on the agent (`SECRETS_FILE`, default
//! `./secrets.json`) mapping each `secret_path` to an object of secrets. The file is
//! read again for every task, so edits apply without restarting the agent; nothing
//! serves it over the network.

use super::env_var::parse_secret_object;
use super::{Secrets, SecretsProvider};
use crate::failure::TaskFailure;
use crate::limits::MAX_SECRETS_FILE_BYTES;
use async_trait::async_trait;
use runops_proto::agent::TaskOffer;
use std::path::PathBuf;
use tokio::io::AsyncReadExt;

/// Where the file is when `SECRETS_FILE` is not set (relative to the agent's directory).
pub const DEFAULT_SECRETS_FILE: &str = "./secrets.json";

pub struct FilesystemProvider {
    file: PathBuf,
}

impl FilesystemProvider {
    pub fn new(file: impl Into<PathBuf>) -> FilesystemProvider {
        FilesystemProvider { file: file.into() }
    }

    /// `SECRETS_FILE`, or [`DEFAULT_SECRETS_FILE`].
    pub fn from_process_env() -> FilesystemProvider {
        let file = std::env::var("SECRETS_FILE")
            .ok()
            .filter(|f| !f.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_SECRETS_FILE.to_string());
        FilesystemProvider::new(file)
    }

    async fn read(&self) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        let file = tokio::fs::File::open(&self.file).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                "does not exist; create it or set SECRETS_FILE to the agent's secrets file"
                    .to_string()
            } else {
                format!("cannot be read: {e}")
            }
        })?;
        let mut text = String::new();
        file.take(MAX_SECRETS_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .await
            .map_err(|e| format!("cannot be read: {e}"))?;
        if text.len() as u64 > MAX_SECRETS_FILE_BYTES {
            return Err(format!("is larger than {MAX_SECRETS_FILE_BYTES} bytes"));
        }
        match serde_json::from_str(&text) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            Ok(_) => Err("is not a JSON object of `secret_path` → object of secrets".into()),
            Err(e) => Err(format!("is not valid JSON: {e}")),
        }
    }
}

#[async_trait]
impl SecretsProvider for FilesystemProvider {
    fn name(&self) -> &'static str {
        runops_proto::SecretProvider::Filesystem.as_str()
    }

    async fn fetch(&self, offer: &TaskOffer) -> Result<Secrets, TaskFailure> {
        let path = offer.secret_path.as_deref().map(str::trim).unwrap_or("");
        if path.is_empty() {
            return Err(TaskFailure::invalid_config(
                "the target uses secret provider `filesystem` but has no secret_path; set it to a key of the agent's secrets file",
            ));
        }
        let file = self.file.display();
        let all = self.read().await.map_err(|e| {
            TaskFailure::secrets(format!("filesystem: the secrets file {file} {e}"))
        })?;
        let Some(value) = all.get(path) else {
            return Err(TaskFailure::secrets(format!(
                "filesystem: secret `{path}` not found in the secrets file {file}; add it or fix the target's secret_path"
            )));
        };
        if !value.is_object() {
            return Err(TaskFailure::secrets(format!(
                "filesystem: secret `{path}` in {file} is not a JSON object"
            )));
        }
        parse_secret_object(&value.to_string())
            .map_err(|e| TaskFailure::secrets(format!("filesystem: secret `{path}` in {file} {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::tests::offer;
    use runops_proto::FailureReason;

    #[tokio::test]
    async fn reads_the_path_and_sees_edits_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.json");
        std::fs::write(&file, r#"{"db": {"PG_USER": "ana", "PG_PORT": 5432}}"#).unwrap();
        let p = FilesystemProvider::new(&file);
        let s = p
            .fetch(&offer(Some("filesystem"), Some("db")))
            .await
            .unwrap();
        assert_eq!(s["PG_USER"], "ana");
        assert_eq!(s["PG_PORT"], "5432");
        std::fs::write(&file, r#"{"db": {"PG_USER": "bob"}}"#).unwrap();
        let s = p
            .fetch(&offer(Some("filesystem"), Some("db")))
            .await
            .unwrap();
        assert_eq!(s["PG_USER"], "bob");
    }

    #[tokio::test]
    async fn missing_file_path_and_bad_json_fail_as_secrets_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.json");
        let p = FilesystemProvider::new(&file);
        let e = p
            .fetch(&offer(Some("filesystem"), Some("db")))
            .await
            .unwrap_err();
        assert_eq!(e.reason, FailureReason::Secrets);
        assert!(
            e.message
                .contains("does not exist; create it or set SECRETS_FILE"),
            "{e}"
        );
        std::fs::write(&file, r#"{"db": {"PG_PASS": "hunter2"}, "x": "flat"}"#).unwrap();
        let e = p
            .fetch(&offer(Some("filesystem"), Some("nope")))
            .await
            .unwrap_err();
        assert!(
            e.message
                .contains("secret `nope` not found in the secrets file"),
            "{e}"
        );
        let e = p
            .fetch(&offer(Some("filesystem"), Some("x")))
            .await
            .unwrap_err();
        assert!(e.message.contains("is not a JSON object"), "{e}");
        assert!(!e.message.contains("flat"), "{e}");
        std::fs::write(&file, r#"{"db": {"PG_PASS": "hunter2""#).unwrap();
        let e = p
            .fetch(&offer(Some("filesystem"), Some("db")))
            .await
            .unwrap_err();
        assert!(e.message.contains("is not valid JSON"), "{e}");
        assert!(!e.message.contains("hunter2"), "{e}");
    }
}
