//! `runops config get-contexts|current-context|use-context NAME|delete-context NAME`:
//! the servers the CLI knows (contexts of the config file, see `config.rs`) and which
//! one commands use. Tokens are never printed.

use crate::config::{self, ConfigFile};
use crate::error::{CliError, CliResult};
use crate::output::{self, cell};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ConfigCmd {
    #[command(subcommand)]
    pub cmd: ConfigSub,
    /// Print JSON instead of text.
    #[arg(long, global = true, display_order = 900)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum ConfigSub {
    /// List the contexts (name and server); `*` marks the current one.
    #[command(name = "get-contexts", visible_alias = "get_contexts")]
    GetContexts,
    /// Print the name of the current context.
    #[command(name = "current-context", visible_alias = "current_context")]
    CurrentContext,
    /// Make NAME the context every command uses (unless --context says otherwise).
    #[command(name = "use-context", visible_alias = "use_context")]
    UseContext(ContextName),
    /// Remove a context and its token from the config file.
    #[command(name = "delete-context", visible_alias = "delete_context")]
    DeleteContext(ContextName),
}

#[derive(clap::Args, Debug)]
pub struct ContextName {
    /// The context's name (`runops config get-contexts`).
    #[arg(value_name = "NAME")]
    pub name: String,
}

fn load() -> CliResult<(ConfigFile, PathBuf)> {
    let path = config::config_path().map_err(|e| CliError::new(format!("{e:#}")))?;
    Ok((config::read_config_at(&path)?, path))
}

fn save(file: &ConfigFile, path: &std::path::Path) -> CliResult<()> {
    config::write_config_file_at(path, file).map_err(|e| CliError::new(format!("{e:#}")))
}

impl ConfigCmd {
    pub async fn run(self) -> CliResult<u8> {
        let (mut file, path) = load()?;
        match self.cmd {
            ConfigSub::GetContexts => {
                let current = file.current_context.clone().unwrap_or_default();
                if self.json {
                    let list: Vec<_> = file
                        .contexts
                        .iter()
                        .map(|(name, c)| {
                            serde_json::json!({"name": name, "url": c.url, "current": *name == current})
                        })
                        .collect();
                    output::print_json(&list)?;
                } else if file.contexts.is_empty() {
                    output::note(&format!("no contexts in {}", path.display()));
                    output::note(&format!("hint: {}", config::LOGIN_HINT));
                } else {
                    output::print(&contexts_table(&file))?;
                }
            }
            ConfigSub::CurrentContext => match file.current_context {
                Some(name) if file.contexts.contains_key(&name) => {
                    output::print(&format!("{name}\n"))?
                }
                _ => {
                    return Err(CliError::new("no current context").with_hint(config::LOGIN_HINT));
                }
            },
            ConfigSub::UseContext(ContextName { name }) => {
                if !file.contexts.contains_key(&name) {
                    return Err(file.unknown_context(&name, &path));
                }
                file.current_context = Some(name.clone());
                save(&file, &path)?;
                output::print(&format!("switched to context `{name}`\n"))?;
            }
            ConfigSub::DeleteContext(ContextName { name }) => {
                if file.contexts.remove(&name).is_none() {
                    return Err(file.unknown_context(&name, &path));
                }
                if file.current_context.as_deref() == Some(&name) {
                    file.current_context = None;
                }
                save(&file, &path)?;
                output::print(&format!("deleted context `{name}`\n"))?;
                if file.current_context.is_none() && !file.contexts.is_empty() {
                    output::note(&format!(
                        "hint: no context is current now; pick one with `runops config use-context NAME` ({})",
                        file.context_names()
                    ));
                }
            }
        }
        Ok(0)
    }
}

fn contexts_table(file: &ConfigFile) -> String {
    let current = file.current_context.as_deref();
    let rows: Vec<Vec<String>> = file
        .contexts
        .iter()
        .map(|(name, c)| {
            let mark = if Some(name.as_str()) == current {
                "*"
            } else {
                ""
            };
            vec![mark.to_string(), cell(name), cell(&c.url)]
        })
        .collect();
    output::table(&["CURRENT", "NAME", "SERVER"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use crate::tests::parse;

    #[test]
    fn config_subcommands_parse() {
        let Command::Config(c) = parse(&["config", "use-context", "prod"]) else {
            panic!("not config")
        };
        assert!(matches!(c.cmd, ConfigSub::UseContext(ContextName { name }) if name == "prod"));
        let Command::Config(c) = parse(&["config", "get-contexts"]) else {
            panic!("not config")
        };
        assert!(matches!(c.cmd, ConfigSub::GetContexts));
    }

    #[test]
    fn table_marks_the_current_context_and_hides_tokens() {
        let mut file = ConfigFile::default();
        for (n, u) in [("a", "http://a"), ("b", "http://b")] {
            file.contexts.insert(
                n.into(),
                config::ContextEntry {
                    url: u.into(),
                    token: "rou_secret".into(),
                    dpop_key: None,
                },
            );
        }
        file.current_context = Some("b".into());
        let t = contexts_table(&file);
        assert_eq!(
            t,
            "CURRENT  NAME  SERVER\n         a     http://a\n*        b     http://b\n"
        );
    }
}
