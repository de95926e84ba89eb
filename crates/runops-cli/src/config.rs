//! The CLI's one config loader: where the config file lives, how it is written
//! (directory 0700, file 0600, replaced atomically), which context a command uses and
//! how `RUNOPS_URL` / `RUNOPS_TOKEN` override what it holds.
//!
//! The file holds named contexts (a server URL and a token each) and the current one,
//! as kubectl does:
//!
//! ```json
//! {"current_context": "prod", "contexts": {"prod": {"url": "...", "token": "..."}}}
//! ```
//!
//! A file written by older versions (`{"url": ..., "token": ...}`) is read as one
//! context named `default`; the next write stores it in the new form.

use crate::error::CliError;
use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// Names the config file explicitly (tests, several servers side by side).
pub const ENV_CONFIG: &str = "RUNOPS_CONFIG";
/// Overrides the server URL of the config file, for every command.
pub const ENV_URL: &str = "RUNOPS_URL";
/// Overrides the API token of the config file, for every command.
pub const ENV_TOKEN: &str = "RUNOPS_TOKEN";
/// Overrides the key file that signs task proofs (`runops login --dpop-key`).
pub const ENV_DPOP_KEY: &str = "RUNOPS_DPOP_KEY";
/// Picks the context instead of the file's current one (like `--context`).
pub const ENV_CONTEXT: &str = "RUNOPS_CONTEXT";
/// The context a config without contexts (older versions, first login) uses.
pub const DEFAULT_CONTEXT: &str = "default";

/// Only the owner may read the token.
const CONFIG_FILE_MODE: u32 = 0o600;
/// Only the owner may list or replace the files next to it.
const CONFIG_DIR_MODE: u32 = 0o700;

/// One server and the token to use with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContextEntry {
    pub url: String,
    pub token: String,
    /// The private key a key-bound JWT (`cnf.jkt`) belongs to: path of its PEM file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_key: Option<String>,
}

/// What `runops login` and `runops up` store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, ContextEntry>,
    /// The single server of files from older versions; moved to `default` on read.
    #[serde(default, skip_serializing)]
    url: Option<String>,
    #[serde(default, skip_serializing)]
    token: Option<String>,
}

impl ConfigFile {
    /// Moves an older file's `url`/`token` into the context `default` (unless a
    /// context of that name exists) and makes it current when none is.
    fn migrate(mut self) -> ConfigFile {
        let url = self.url.take().filter(|u| !u.trim().is_empty());
        let token = self.token.take().filter(|t| !t.trim().is_empty());
        if (url.is_some() || token.is_some()) && !self.contexts.contains_key(DEFAULT_CONTEXT) {
            self.contexts.insert(
                DEFAULT_CONTEXT.to_string(),
                ContextEntry {
                    url: url.unwrap_or_default(),
                    token: token.unwrap_or_default(),
                    dpop_key: None,
                },
            );
            if self.current_context.is_none() {
                self.current_context = Some(DEFAULT_CONTEXT.to_string());
            }
        }
        self
    }

    /// The names of the contexts, for hints: `a`, `b` (or `none yet`).
    pub fn context_names(&self) -> String {
        if self.contexts.is_empty() {
            return "none yet".to_string();
        }
        let names: Vec<String> = self.contexts.keys().map(|n| format!("`{n}`")).collect();
        names.join(", ")
    }

    /// Error for a context name that is not in the file.
    pub fn unknown_context(&self, name: &str, path: &Path) -> CliError {
        CliError::new(format!(
            "context `{name}` not found in {}",
            path.display()
        ))
        .with_hint(format!(
            "the contexts are: {}; add one with `runops login --context {name} --url URL --token TOKEN`",
            self.context_names()
        ))
    }
}

/// The server and token a command talks to.
#[derive(Debug, Clone, PartialEq)]
pub struct Credentials {
    pub url: String,
    pub token: String,
    /// The context they came from (None when the environment gave both).
    pub context: Option<String>,
    /// The context's task-proof key, when its token came from the context.
    pub dpop_key: Option<String>,
}

/// The context chosen with `--context` for this process; set once by `run`.
static CONTEXT_FLAG: RwLock<Option<String>> = RwLock::new(None);

/// Records `--context NAME` for every command of this process.
pub(crate) fn set_context_flag(name: Option<String>) {
    if let Ok(mut c) = CONTEXT_FLAG.write() {
        *c = name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
    }
}

/// The context asked for explicitly: `--context`, else `RUNOPS_CONTEXT`.
pub(crate) fn requested_context(env: &impl Fn(&str) -> Option<String>) -> Option<String> {
    CONTEXT_FLAG
        .read()
        .ok()
        .and_then(|c| c.clone())
        .or_else(|| env(ENV_CONTEXT).map(|v| v.trim().to_string()))
        .filter(|n| !n.is_empty())
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

/// Stores `url` and `token` as context `name` (replacing only that context), makes it
/// the current one, and returns the file's path. `runops login` and `runops up` use it.
pub fn save_context(name: &str, url: &str, token: &str) -> anyhow::Result<PathBuf> {
    let path = config_path()?;
    save_context_at(&path, name, url, token)?;
    Ok(path)
}

/// Like [`save_context`], also remembering the key a key-bound JWT belongs to (or
/// forgetting the context's earlier one): `runops login`.
pub(crate) fn save_login_context(
    name: &str,
    url: &str,
    token: &str,
    dpop_key: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let path = config_path()?;
    save_context_with_key_at(&path, name, url, token, dpop_key)?;
    Ok(path)
}

pub(crate) fn save_context_at(
    path: &Path,
    name: &str,
    url: &str,
    token: &str,
) -> anyhow::Result<()> {
    save_context_with_key_at(path, name, url, token, None)
}

fn save_context_with_key_at(
    path: &Path,
    name: &str,
    url: &str,
    token: &str,
    dpop_key: Option<&Path>,
) -> anyhow::Result<()> {
    check_context_name(name)
        .map_err(|e| anyhow::anyhow!("{}", e.render().trim_start_matches("error: ")))?;
    let mut file = read_config_at(path).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    file.contexts.insert(
        name.to_string(),
        ContextEntry {
            url: url.trim().trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
            dpop_key: dpop_key.map(|p| p.display().to_string()),
        },
    );
    file.current_context = Some(name.to_string());
    write_config_file_at(path, &file)
}

/// Checks a context name given on the command line: it is a key of the file and
/// appears in tables, so it is one short printable word.
pub(crate) fn check_context_name(name: &str) -> Result<(), CliError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CONTEXT_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':'));
    if ok {
        Ok(())
    } else {
        Err(
            CliError::new(format!("`{name}` is not a valid context name")).with_hint(format!(
                "use up to {MAX_CONTEXT_NAME_LEN} letters, digits and `-_.@:`, e.g. `prod`"
            )),
        )
    }
}

/// Longest context name: it is typed on command lines and shown in a table column.
const MAX_CONTEXT_NAME_LEN: usize = 64;

/// Writes `file` to `path`: the parent directory is created 0700 when missing, the
/// file is written 0600 under a temporary name and renamed over the old one, so a
/// reader never sees half a file and the token is never readable by others.
pub(crate) fn write_config_file_at(path: &Path, file: &ConfigFile) -> anyhow::Result<()> {
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
    let mut text = serde_json::to_string_pretty(file).context("cannot encode the config")?;
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

/// Reads the config file (an older single-server file becomes context `default`); a
/// missing file is an empty config.
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
    serde_json::from_str::<ConfigFile>(&text)
        .map(ConfigFile::migrate)
        .map_err(|e| {
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

/// Combines the file with the environment. The context is `requested` (`--context`
/// or `RUNOPS_CONTEXT`), which must exist, else the file's current one. `RUNOPS_URL`
/// and `RUNOPS_TOKEN` each win over the context's value when set and not empty.
pub(crate) fn resolve_credentials(
    file: ConfigFile,
    requested: Option<String>,
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Credentials, CliError> {
    let (context, entry) = match requested {
        Some(name) => match file.contexts.get(&name) {
            Some(e) => (Some(name), Some(e.clone())),
            None => return Err(file.unknown_context(&name, path)),
        },
        None => {
            let name = file.current_context.clone();
            let entry = name.as_ref().and_then(|n| file.contexts.get(n)).cloned();
            (name.filter(|_| entry.is_some()), entry)
        }
    };
    let (file_url, file_token, file_key) = match entry {
        Some(e) => (Some(e.url), Some(e.token), e.dpop_key),
        None => (None, None, None),
    };
    let from_env = |var: &str| {
        env(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let url_env = from_env(ENV_URL);
    let token_env = from_env(ENV_TOKEN);
    let context = context.filter(|_| url_env.is_none() || token_env.is_none());
    // The context's key belongs to the context's token, not to one from the environment.
    let dpop_key = file_key.filter(|_| token_env.is_none());
    let pick = |env_value: Option<String>, from_file: Option<String>| {
        env_value.or(from_file.filter(|v| !v.trim().is_empty()))
    };
    match (pick(url_env, file_url), pick(token_env, file_token)) {
        (Some(url), Some(token)) => Ok(Credentials {
            url,
            token,
            context,
            dpop_key,
        }),
        _ => Err(CliError::new("not logged in").with_hint(LOGIN_HINT)),
    }
}

/// The key file that signs task proofs: `RUNOPS_DPOP_KEY`, else the context's.
pub(crate) fn dpop_key_path() -> Result<Option<PathBuf>, CliError> {
    if let Some(p) = std::env::var(ENV_DPOP_KEY)
        .ok()
        .filter(|p| !p.trim().is_empty())
    {
        return Ok(Some(PathBuf::from(p.trim())));
    }
    Ok(load_credentials()?.dpop_key.map(PathBuf::from))
}

/// The credentials every command but `login` uses.
pub(crate) fn load_credentials() -> Result<Credentials, CliError> {
    let env = |k: &str| std::env::var(k).ok();
    let requested = requested_context(&env);
    // With both variables set (and no context asked for) the file is not needed.
    let both_in_env = [ENV_URL, ENV_TOKEN]
        .iter()
        .all(|k| env(k).is_some_and(|v| !v.trim().is_empty()));
    let path = config_path_from(env).map_err(|e| CliError::new(format!("{e:#}")));
    let (file, path) = if both_in_env && requested.is_none() {
        (ConfigFile::default(), path.unwrap_or_default())
    } else {
        let path = path?;
        (read_config_at(&path)?, path)
    };
    resolve_credentials(file, requested, &path, env)
}

/// A token that cannot be sent in an HTTP header (a space, a line break, a character
/// that is not ASCII: usually a bad copy and paste) is reported as such; sending it
/// would fail with an error that looks like an unreachable server.
pub(crate) fn check_token_shape(token: &str, source: &str) -> Result<(), CliError> {
    let token = token.trim();
    let bad = token
        .char_indices()
        .find(|(_, c)| !c.is_ascii_graphic())
        .map(|(i, c)| (token[..i].chars().count() + 1, c));
    let problem = match bad {
        _ if token.is_empty() => "it is empty".to_string(),
        Some((pos, c)) if c.is_whitespace() => {
            format!("it contains a space or line break at character {pos}")
        }
        Some((pos, c)) if c.is_control() => {
            format!("it contains a control character at character {pos}")
        }
        Some((pos, _)) => format!("it contains a character that is not ASCII at character {pos}"),
        None => return Ok(()),
    };
    Err(
        CliError::new(format!("the API token {source} is malformed: {problem}")).with_hint(
            "copy the whole token again (user tokens look like `rou_...`) and log in with \
             `runops login --with-token < token-file`",
        ),
    )
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

    fn file_with(contexts: &[(&str, &str, &str)], current: Option<&str>) -> ConfigFile {
        ConfigFile {
            current_context: current.map(String::from),
            contexts: contexts
                .iter()
                .map(|(n, u, t)| {
                    (
                        n.to_string(),
                        ContextEntry {
                            url: u.to_string(),
                            token: t.to_string(),
                            dpop_key: None,
                        },
                    )
                })
                .collect(),
            ..Default::default()
        }
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
    fn saved_contexts_are_0600_in_a_new_0700_directory_and_keep_each_other() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("nested").join("runops").join("config.json");
        save_context_at(&path, "prod", "http://127.0.0.1:8080/", "rou_abc\n").unwrap();

        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);

        let file = read_config_at(&path).unwrap();
        assert_eq!(file.current_context.as_deref(), Some("prod"));
        assert_eq!(file.contexts["prod"].url, "http://127.0.0.1:8080");
        assert_eq!(file.contexts["prod"].token, "rou_abc");

        // A second context is added next to the first one and becomes current;
        // rewriting keeps the file private and leaves no temporary file.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        save_context_at(&path, "local", "https://runops.example", "rou_new").unwrap();
        assert_eq!(mode(&path), 0o600);
        let file = read_config_at(&path).unwrap();
        assert_eq!(file.current_context.as_deref(), Some("local"));
        assert_eq!(file.contexts["prod"].token, "rou_abc");
        assert_eq!(file.contexts["local"].token, "rou_new");
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
        save_context_at(&path, "default", "http://h", "t").unwrap();
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
    fn single_server_file_of_older_versions_becomes_context_default() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("old.json");
        std::fs::write(&path, r#"{"url": "http://old", "token": "rou_old"}"#).unwrap();
        let file = read_config_at(&path).unwrap();
        assert_eq!(file.current_context.as_deref(), Some(DEFAULT_CONTEXT));
        assert_eq!(file.contexts[DEFAULT_CONTEXT].url, "http://old");
        let creds = resolve_credentials(file, None, &path, env_of(&[])).unwrap();
        assert_eq!(creds.token, "rou_old");
        assert_eq!(creds.context.as_deref(), Some(DEFAULT_CONTEXT));

        // Adding a context keeps the migrated one.
        save_context_at(&path, "up", "http://local", "rou_up").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["contexts"]["default"]["token"], "rou_old");
        assert_eq!(json["current_context"], "up");
        assert!(json.get("url").is_none(), "{text}");
    }

    #[test]
    fn requested_context_wins_and_must_exist() {
        let file = file_with(
            &[("a", "http://a", "rou_a"), ("b", "http://b", "rou_b")],
            Some("a"),
        );
        let p = Path::new("/c.json");
        let cur = resolve_credentials(file.clone(), None, p, env_of(&[])).unwrap();
        assert_eq!(cur.url, "http://a");
        let b = resolve_credentials(file.clone(), Some("b".into()), p, env_of(&[])).unwrap();
        assert_eq!(
            (b.url.as_str(), b.context.as_deref()),
            ("http://b", Some("b"))
        );
        let err = resolve_credentials(file, Some("c".into()), p, env_of(&[])).unwrap_err();
        assert_eq!(err.message, "context `c` not found in /c.json");
        assert!(err.hint.unwrap().contains("`a`, `b`"));
    }

    #[test]
    fn environment_overrides_each_field_of_the_context() {
        let file = file_with(&[("default", "http://file", "file-token")], Some("default"));
        let p = Path::new("/c.json");
        let none = resolve_credentials(file.clone(), None, p, env_of(&[])).unwrap();
        assert_eq!(none.url, "http://file");
        assert_eq!(none.token, "file-token");

        let url_only = resolve_credentials(
            file.clone(),
            None,
            p,
            env_of(&[("RUNOPS_URL", "http://env")]),
        )
        .unwrap();
        assert_eq!(url_only.url, "http://env");
        assert_eq!(url_only.token, "file-token");

        let both = resolve_credentials(
            file.clone(),
            None,
            p,
            env_of(&[("RUNOPS_URL", "http://env"), ("RUNOPS_TOKEN", "env-token")]),
        )
        .unwrap();
        assert_eq!(both.token, "env-token");
        assert_eq!(both.context, None);

        // An empty variable does not erase the file's value.
        let empty = resolve_credentials(file, None, p, env_of(&[("RUNOPS_TOKEN", "")])).unwrap();
        assert_eq!(empty.token, "file-token");
    }

    #[test]
    fn no_url_or_no_token_means_not_logged_in() {
        let p = Path::new("/c.json");
        let err = resolve_credentials(ConfigFile::default(), None, p, env_of(&[])).unwrap_err();
        assert_eq!(err.message, "not logged in");
        assert_eq!(err.hint.as_deref(), Some(LOGIN_HINT));
        let token_only = resolve_credentials(
            ConfigFile::default(),
            None,
            p,
            env_of(&[("RUNOPS_TOKEN", "rou_x")]),
        )
        .unwrap_err();
        assert_eq!(token_only.message, "not logged in");
    }

    #[test]
    fn malformed_tokens_are_named_as_such() {
        assert!(check_token_shape("rou_abc-_", "x").is_ok());
        let e = check_token_shape("rou_a bc", "in RUNOPS_TOKEN").unwrap_err();
        assert_eq!(
            e.message,
            "the API token in RUNOPS_TOKEN is malformed: it contains a space or line break at character 6"
        );
        assert!(
            check_token_shape("rou_é", "x")
                .unwrap_err()
                .message
                .contains("not ASCII at character 5")
        );
        assert!(
            check_token_shape("  ", "x")
                .unwrap_err()
                .message
                .contains("empty")
        );
    }

    #[test]
    fn context_names_are_short_words() {
        assert!(check_context_name("prod-eu.1").is_ok());
        assert!(check_context_name("a b").is_err());
        assert!(check_context_name("").is_err());
    }
}
