//! The CLI's one config loader: where the config file lives, how it is written
//! (directory 0700, file 0600, replaced atomically) and how `RUNOPS_URL` /
//! `RUNOPS_TOKEN` override what it holds.

use crate::error::CliError;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Names the config file explicitly (tests, several servers side by side).
pub const ENV_CONFIG: &str = "RUNOPS_CONFIG";
/// Overrides the server URL of the config file, for every command.
pub const ENV_URL: &str = "RUNOPS_URL";
/// Overrides the API token of the config file, for every command.
pub const ENV_TOKEN: &str = "RUNOPS_TOKEN";
/// Overrides the key file that signs task proofs (`runops login --dpop-key`).
pub const ENV_DPOP_KEY: &str = "RUNOPS_DPOP_KEY";

/// Only the owner may read the token.
const CONFIG_FILE_MODE: u32 = 0o600;
/// Only the owner may list or replace the files next to it.
const CONFIG_DIR_MODE: u32 = 0o700;

/// What `runops login` stores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The private key a key-bound JWT (`cnf.jkt`) belongs to: path of its PEM file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_key: Option<String>,
}

/// The server and token a command talks to.
#[derive(Debug, Clone, PartialEq)]
pub struct Credentials {
    pub url: String,
    pub token: String,
}

/// Where the config lives: `$RUNOPS_CONFIG`, else `$XDG_CONFIG_HOME/runops/config.json`,
/// else `~/.config/runops/config.json`.
pub fn config_path() -> anyhow::Result<PathBuf> {
    config_path_from(|k| std::env::var(k).ok())
}

/// [`config_path`] with the environment passed in, so that tests need not touch the
/// process's environment.
pub(crate) fn config_path_from(env: impl Fn(&str) -> Option<String>) -> anyhow::Result<PathBuf> {
    let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    if let Some(p) = set(ENV_CONFIG) {
        return Ok(PathBuf::from(p));
    }
    // The XDG spec says relative values are invalid and must be ignored.
    if let Some(x) = set("XDG_CONFIG_HOME").filter(|x| Path::new(x).is_absolute()) {
        return Ok(Path::new(&x).join("runops").join("config.json"));
    }
    let home = set("HOME").context(
        "cannot find the config file: neither RUNOPS_CONFIG, XDG_CONFIG_HOME nor HOME is set; \
         set RUNOPS_CONFIG to a file path",
    )?;
    Ok(Path::new(&home)
        .join(".config")
        .join("runops")
        .join("config.json"))
}

/// Writes the config file like `runops login` does and returns its path. Used by
/// `runops up` to log the CLI in to the local server.
pub fn write_config(url: &str, token: &str) -> anyhow::Result<PathBuf> {
    let path = config_path()?;
    write_config_at(&path, url, token)?;
    Ok(path)
}

/// Writes `{url, token}` to `path`: the parent directory is created 0700 when missing,
/// the file is written 0600 under a temporary name and renamed over the old one, so a
/// reader never sees half a file and the token is never readable by others.
pub(crate) fn write_config_at(path: &Path, url: &str, token: &str) -> anyhow::Result<()> {
    write_config_file_at(
        path,
        &ConfigFile {
            url: Some(url.to_string()),
            token: Some(token.to_string()),
            dpop_key: None,
        },
    )
}

/// `runops login`: URL, token and the task-proof key file, when given.
pub(crate) fn write_login(
    url: &str,
    token: &str,
    dpop_key: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let path = config_path()?;
    write_config_file_at(
        &path,
        &ConfigFile {
            url: Some(url.to_string()),
            token: Some(token.to_string()),
            dpop_key: dpop_key.map(|p| p.display().to_string()),
        },
    )?;
    Ok(path)
}

/// The key file that signs task proofs: `RUNOPS_DPOP_KEY`, else the config file's.
pub(crate) fn dpop_key_path() -> Result<Option<PathBuf>, CliError> {
    let env = |k: &str| std::env::var(k).ok();
    if let Some(p) = env(ENV_DPOP_KEY).filter(|p| !p.trim().is_empty()) {
        return Ok(Some(PathBuf::from(p.trim())));
    }
    let Ok(path) = config_path_from(env) else {
        return Ok(None);
    };
    Ok(read_config_at(&path)?.dpop_key.map(PathBuf::from))
}

fn write_config_file_at(path: &Path, file: &ConfigFile) -> anyhow::Result<()> {
    let (url, token) = (
        file.url.as_deref().unwrap_or_default(),
        file.token.as_deref().unwrap_or_default(),
    );
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        // Only directories we create are tightened: RUNOPS_CONFIG may point into /tmp.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(CONFIG_DIR_MODE)
            .create(&dir)
            .with_context(|| format!("cannot create the config directory {}", dir.display()))?;
    }
    let body = ConfigFile {
        url: Some(url.trim().trim_end_matches('/').to_string()),
        token: Some(token.trim().to_string()),
        dpop_key: file.dpop_key.clone(),
    };
    let mut text = serde_json::to_string_pretty(&body).context("cannot encode the config")?;
    text.push('\n');

    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config.json".to_string());
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(CONFIG_FILE_MODE)
            .open(&tmp)?;
        // The mode above is filtered by the umask; make sure it is exactly 0600.
        f.set_permissions(std::fs::Permissions::from_mode(CONFIG_FILE_MODE))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("cannot write the config file {}: {e}", path.display())
    })
}

/// Reads the config file; a missing file is an empty config.
pub(crate) fn read_config_at(path: &Path) -> Result<ConfigFile, CliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
        Err(e) => {
            return Err(CliError::new(format!(
                "cannot read the config file {}: {e}",
                path.display()
            )));
        }
    };
    serde_json::from_str(&text).map_err(|e| {
        CliError::new(format!(
            "the config file {} is not valid JSON: {e}",
            path.display()
        ))
        .with_hint(LOGIN_HINT)
    })
}

/// What to do when the CLI has no server or token.
pub(crate) const LOGIN_HINT: &str =
    "run `runops login --url URL --token TOKEN` (or `runops up` for a local setup)";

/// Combines the file with the environment: `RUNOPS_URL` and `RUNOPS_TOKEN` each win
/// over the file's value when set and not empty.
pub(crate) fn resolve_credentials(
    file: ConfigFile,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Credentials, CliError> {
    let pick = |var: &str, from_file: Option<String>| {
        env(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .or(from_file.filter(|v| !v.trim().is_empty()))
    };
    match (pick(ENV_URL, file.url), pick(ENV_TOKEN, file.token)) {
        (Some(url), Some(token)) => Ok(Credentials { url, token }),
        _ => Err(CliError::new("not logged in").with_hint(LOGIN_HINT)),
    }
}

/// The credentials every command but `login` uses.
pub(crate) fn load_credentials() -> Result<Credentials, CliError> {
    let env = |k: &str| std::env::var(k).ok();
    // With both variables set the file is not needed (and may not exist).
    let both_in_env = [ENV_URL, ENV_TOKEN]
        .iter()
        .all(|k| env(k).is_some_and(|v| !v.trim().is_empty()));
    let file = if both_in_env {
        ConfigFile::default()
    } else {
        let path = config_path_from(env).map_err(|e| CliError::new(format!("{e:#}")))?;
        read_config_at(&path)?
    };
    resolve_credentials(file, env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn config_path_prefers_runops_config_then_xdg_then_home() {
        let all = env_of(&[
            ("RUNOPS_CONFIG", "/etc/r.json"),
            ("XDG_CONFIG_HOME", "/x"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(config_path_from(all).unwrap(), PathBuf::from("/etc/r.json"));
        let xdg = env_of(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/home/u")]);
        assert_eq!(
            config_path_from(xdg).unwrap(),
            PathBuf::from("/x/runops/config.json")
        );
        let relative_xdg = env_of(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/home/u")]);
        assert_eq!(
            config_path_from(relative_xdg).unwrap(),
            PathBuf::from("/home/u/.config/runops/config.json")
        );
        let err = config_path_from(env_of(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("RUNOPS_CONFIG"), "{err:#}");
    }

    #[test]
    fn written_config_is_0600_in_a_new_0700_directory_and_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("nested").join("runops").join("config.json");
        write_config_at(&path, "http://127.0.0.1:8080/", "rou_abc\n").unwrap();

        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);

        let file = read_config_at(&path).unwrap();
        assert_eq!(file.url.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(file.token.as_deref(), Some("rou_abc"));

        // Rewriting replaces the file and keeps it private; no temporary file is left.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_config_at(&path, "https://runops.example", "rou_new").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(
            read_config_at(&path).unwrap().token.as_deref(),
            Some("rou_new")
        );
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("config.json")]);
    }

    #[test]
    fn existing_directory_permissions_are_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = tmp.path().join("c.json");
        write_config_at(&path, "http://h", "t").unwrap();
        let mode = std::fs::metadata(tmp.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
    }

    #[test]
    fn missing_file_is_empty_and_broken_file_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("none.json");
        assert_eq!(read_config_at(&path).unwrap(), ConfigFile::default());
        std::fs::write(&path, "{not json").unwrap();
        let err = read_config_at(&path).unwrap_err();
        assert!(err.message.contains("is not valid JSON"), "{}", err.message);
        assert!(err.hint.unwrap().contains("runops login"));
    }

    #[test]
    fn environment_overrides_each_field_of_the_file() {
        let file = ConfigFile {
            url: Some("http://file".into()),
            token: Some("file-token".into()),
            dpop_key: None,
        };
        let none = resolve_credentials(file.clone(), env_of(&[])).unwrap();
        assert_eq!(none.url, "http://file");
        assert_eq!(none.token, "file-token");

        let url_only =
            resolve_credentials(file.clone(), env_of(&[("RUNOPS_URL", "http://env")])).unwrap();
        assert_eq!(url_only.url, "http://env");
        assert_eq!(url_only.token, "file-token");

        let both = resolve_credentials(
            file.clone(),
            env_of(&[("RUNOPS_URL", "http://env"), ("RUNOPS_TOKEN", "env-token")]),
        )
        .unwrap();
        assert_eq!(both.token, "env-token");

        // An empty variable does not erase the file's value.
        let empty = resolve_credentials(file, env_of(&[("RUNOPS_TOKEN", "")])).unwrap();
        assert_eq!(empty.token, "file-token");
    }

    #[test]
    fn no_url_or_no_token_means_not_logged_in() {
        let err = resolve_credentials(ConfigFile::default(), env_of(&[])).unwrap_err();
        assert_eq!(err.message, "not logged in");
        assert_eq!(err.hint.as_deref(), Some(LOGIN_HINT));
        let token_only =
            resolve_credentials(ConfigFile::default(), env_of(&[("RUNOPS_TOKEN", "rou_x")]))
                .unwrap_err();
        assert_eq!(token_only.message, "not logged in");
    }
}
