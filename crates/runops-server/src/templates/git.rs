//! Pulls the templates repository with the `git` CLI: a clone in the data dir,
//! fetched and hard-reset to `origin/<branch>` (a force-push simply wins). Credentials
//! go through the child's environment, never its command line: an HTTPS token as an
//! `http.extraHeader` set with `GIT_CONFIG_*`, an SSH key with `GIT_SSH_COMMAND`.

use base64::Engine;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

/// Longest one git command may take: a remote that hangs must not stop later pulls.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(120);

/// Bytes of git's error output kept in a warning: the end says what went wrong.
const MAX_ERROR_CHARS: usize = 600;

/// Where the templates come from.
#[derive(Debug, Clone)]
pub struct Repo {
    pub url: String,
    pub branch: String,
    /// The clone (in the server's data dir).
    pub dir: PathBuf,
    pub ssh_key: Option<PathBuf>,
    pub token: Option<String>,
    pub token_user: String,
}

impl Repo {
    /// Fetches the branch and resets the clone to it; returns the commit SHA.
    pub async fn pull(&self) -> Result<String, String> {
        if !self.dir.join(".git").exists() {
            tokio::fs::create_dir_all(&self.dir)
                .await
                .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
            self.git(&["init", "--quiet"]).await?;
        }
        let refspec = format!("+refs/heads/{0}:refs/remotes/origin/{0}", self.branch);
        let url = self.url.clone();
        self.git(&[
            "fetch",
            "--quiet",
            "--force",
            "--no-tags",
            "--",
            &url,
            &refspec,
        ])
        .await?;
        let remote = format!("refs/remotes/origin/{}", self.branch);
        self.git(&["reset", "--quiet", "--hard", &remote]).await?;
        self.git(&["clean", "--quiet", "-fdx"]).await?;
        let sha = self.git(&["rev-parse", "HEAD"]).await?;
        Ok(sha.trim().to_string())
    }

    /// Runs `git ARGS` in the clone; its stdout, or its error output as the error.
    async fn git(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new("git");
        cmd.arg("-C")
            .arg(&self.dir)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "true")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(token) = &self.token {
            let basic = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{token}", self.token_user));
            cmd.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {basic}"),
                );
        }
        if let Some(key) = &self.ssh_key {
            cmd.env("GIT_SSH_COMMAND", ssh_command(key));
        }
        let what = args.first().copied().unwrap_or("git");
        let out = tokio::time::timeout(GIT_TIMEOUT, cmd.output())
            .await
            .map_err(|_| format!("git {what} took longer than {} s", GIT_TIMEOUT.as_secs()))?
            .map_err(|e| format!("cannot run git (is it installed?): {e}"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stderr = without_credentials(stderr.trim());
            let start = stderr
                .char_indices()
                .rev()
                .nth(MAX_ERROR_CHARS)
                .map_or(0, |(i, _)| i);
            return Err(format!("git {what} failed: {}", &stderr[start..]));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// `ssh -i 'KEY' ...` for `GIT_SSH_COMMAND` (which a shell reads: the path is quoted).
/// A host seen for the first time is trusted and remembered (`accept-new`).
fn ssh_command(key: &Path) -> String {
    let quoted = key.display().to_string().replace('\'', "'\\''");
    format!(
        "ssh -i '{quoted}' -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new"
    )
}

/// `text` with the user info of any URL in it replaced by `***` (a token written in
/// the repository URL must not reach logs or the API).
pub fn without_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&tail[at..end]);
            }
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_hidden() {
        assert_eq!(
            without_credentials("fatal: https://user:tok@github.com/o/r.git not found"),
            "fatal: https://***@github.com/o/r.git not found"
        );
        assert_eq!(
            without_credentials("file:///tmp/x.git"),
            "file:///tmp/x.git"
        );
    }

    #[test]
    fn ssh_key_path_is_quoted_for_the_shell() {
        assert!(ssh_command(Path::new("/k/it's")).starts_with("ssh -i '/k/it'\\''s'"));
    }
}
