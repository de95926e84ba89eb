//! `runops agents list|create-token|revoke-token|tokens`.

use crate::error::CliResult;
use crate::output::{self, cell, or_dash};
use chrono::{DateTime, Utc};
use runops_proto::api::{Agent, AgentToken, AgentTokenListQuery};
use std::io::IsTerminal;

#[derive(clap::Args, Debug)]
pub struct AgentsCmd {
    #[command(subcommand)]
    pub cmd: AgentsSub,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true, display_order = 900)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum AgentsSub {
    /// List the connected agents.
    #[command(visible_alias = "ls")]
    List,
    /// Create an agent token for one tag set (admins); prints only the token (start an
    /// agent with `TOKEN=... runops agent`, with the same TAGS).
    #[command(name = "create-token", alias = "create_token")]
    CreateToken(CreateTokenArgs),
    /// Revoke an agent token, or every token of a tag set (admins); agents using them are
    /// disconnected.
    #[command(name = "revoke-token", alias = "revoke_token")]
    RevokeToken(RevokeArgs),
    /// List agent tokens (admins), optionally of one tag set.
    #[command(visible_alias = "list-tokens")]
    Tokens(TagSetArgs),
}

#[derive(clap::Args, Debug)]
pub struct CreateTokenArgs {
    /// A name to recognise the token by (e.g. where the agent runs).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The agent's TAGS: only an agent with exactly these tags may use the token.
    /// Without it, the token is for untagged agents.
    #[arg(long, value_name = "TAGS")]
    pub tags: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct TagSetArgs {
    /// Only the tokens of agents with exactly these TAGS.
    #[arg(long, value_name = "TAGS", conflicts_with = "untagged")]
    pub tags: Option<String>,
    /// Only the tokens of untagged agents.
    #[arg(long)]
    pub untagged: bool,
}

impl TagSetArgs {
    fn query(&self) -> AgentTokenListQuery {
        AgentTokenListQuery {
            tags: self.tags.clone(),
            untagged: self.untagged,
        }
    }

    fn given(&self) -> bool {
        self.tags.is_some() || self.untagged
    }
}

#[derive(clap::Args, Debug)]
pub struct RevokeArgs {
    /// The token's id (`runops agents tokens`).
    #[arg(value_name = "ID", required_unless_present_any = ["tags", "untagged"], conflicts_with_all = ["tags", "untagged"])]
    pub id: Option<i64>,
    #[command(flatten)]
    pub set: TagSetArgs,
}

impl AgentsCmd {
    pub async fn run(self) -> CliResult<u8> {
        let json = self.json;
        let client = crate::connect()?;
        match self.cmd {
            AgentsSub::List => {
                let agents = client.list_agents().await?;
                if json {
                    output::print_json(&agents)?;
                } else if agents.is_empty() {
                    output::note(
                        "no agent is connected; create a token with `runops agents create-token` \
                         and start one with `TOKEN=... runops agent`",
                    );
                } else {
                    output::print(&agents_table(&agents, Utc::now()))?;
                }
            }
            AgentsSub::CreateToken(args) => {
                let created = client.create_agent_token(args.name, args.tags).await?;
                if json {
                    output::print_json(&created)?;
                } else {
                    // Only the token on stdout, so `TOKEN=$(runops agents create-token)` works.
                    output::print(&format!("{}\n", created.token))?;
                    if std::io::stderr().is_terminal() {
                        output::note(&format!(
                            "agent token {} created; it is shown only this once. \
                             start an agent with `TOKEN=<token> runops agent`",
                            created.id
                        ));
                    }
                }
            }
            AgentsSub::RevokeToken(args) => {
                let ids = match args.id {
                    Some(id) => vec![id],
                    None => client
                        .list_agent_tokens(&args.set.query())
                        .await?
                        .into_iter()
                        .filter(|t| t.revoked_at.is_none())
                        .map(|t| t.id)
                        .collect(),
                };
                for id in &ids {
                    client.revoke_agent_token(*id).await?;
                }
                if json {
                    output::print_json(&serde_json::json!({ "revoked": ids }))?;
                } else if ids.is_empty() {
                    output::note("no active agent token of that tag set; nothing revoked");
                } else {
                    for id in &ids {
                        output::print(&format!("agent token {id} revoked\n"))?;
                    }
                }
            }
            AgentsSub::Tokens(set) => {
                let tokens = client.list_agent_tokens(&set.query()).await?;
                if json {
                    output::print_json(&tokens)?;
                } else if tokens.is_empty() && set.given() {
                    output::note("no agent token of that tag set");
                } else if tokens.is_empty() {
                    output::note(
                        "no agent tokens yet; create one with `runops agents create-token`",
                    );
                } else {
                    output::print(&agent_tokens_table(&tokens, Utc::now()))?;
                }
            }
        }
        Ok(0)
    }
}

pub(crate) fn agents_table(agents: &[Agent], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let running = if a.running_tasks.is_empty() {
                "-".to_string()
            } else {
                a.running_tasks
                    .iter()
                    .map(|id| id.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            vec![
                cell(&a.id),
                or_dash(a.tags.as_deref()),
                cell(&a.hostname),
                cell(&a.version),
                output::ago(a.connected_at, now),
                output::ago(a.last_seen, now),
                format!("{}/{}", a.running_tasks.len(), a.concurrency),
                cell(&running),
            ]
        })
        .collect();
    output::table(
        &[
            "ID",
            "TAGS",
            "HOSTNAME",
            "VERSION",
            "CONNECTED",
            "LAST SEEN",
            "BUSY",
            "RUNNING",
        ],
        &rows,
    )
}

/// One row per token; `revoked` tokens say when.
pub(crate) fn token_rows(tokens: &[AgentToken], now: DateTime<Utc>) -> Vec<Vec<String>> {
    tokens
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                or_dash(t.name.as_deref()),
                output::ago(t.created_at, now),
                t.revoked_at
                    .map(|r| format!("revoked {}", output::ago(r, now)))
                    .unwrap_or_else(|| "active".to_string()),
            ]
        })
        .collect()
}

pub(crate) fn agent_tokens_table(tokens: &[AgentToken], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .zip(token_rows(tokens, now))
        .map(|(t, mut row)| {
            row.insert(2, or_dash(t.tags.as_deref()));
            row
        })
        .collect();
    output::table(&["ID", "NAME", "TAGS", "CREATED", "STATUS"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use crate::tests::parse;
    use chrono::TimeZone;

    fn agents(args: &[&str]) -> AgentsCmd {
        let mut full = vec!["agents"];
        full.extend_from_slice(args);
        match parse(&full) {
            Command::Agents(a) => a,
            other => panic!("not agents: {other:?}"),
        }
    }

    #[test]
    fn docs_create_token_line_parses() {
        // runops agents create-token
        assert!(matches!(
            agents(&["create-token"]).cmd,
            AgentsSub::CreateToken(CreateTokenArgs {
                name: None,
                tags: None
            })
        ));
        let AgentsSub::CreateToken(a) = agents(&["create-token", "--name", "k8s-prod"]).cmd else {
            panic!("not create-token")
        };
        assert_eq!(a.name.as_deref(), Some("k8s-prod"));
        assert!(matches!(
            agents(&["create_token"]).cmd,
            AgentsSub::CreateToken(_)
        ));
    }

    #[test]
    fn list_revoke_and_tokens_parse() {
        assert!(matches!(agents(&["list"]).cmd, AgentsSub::List));
        assert!(agents(&["list", "--json"]).json);
        assert!(matches!(
            agents(&["revoke-token", "7"]).cmd,
            AgentsSub::RevokeToken(RevokeArgs { id: Some(7), .. })
        ));
        let AgentsSub::RevokeToken(r) = agents(&["revoke-token", "--tags", "prod"]).cmd else {
            panic!("not revoke-token")
        };
        assert_eq!((r.id, r.set.tags.as_deref()), (None, Some("prod")));
        assert!(matches!(agents(&["tokens"]).cmd, AgentsSub::Tokens(_)));
        assert!(matches!(agents(&["list-tokens"]).cmd, AgentsSub::Tokens(_)));
        let AgentsSub::CreateToken(c) = agents(&["create-token", "--tags", "prod"]).cmd else {
            panic!("not create-token")
        };
        assert_eq!(c.tags.as_deref(), Some("prod"));
    }

    #[test]
    fn tables_show_agents_and_tokens() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 1, 0, 0).unwrap();
        let a = Agent {
            id: "s-1".into(),
            tags: Some("prod".into()),
            hostname: "box".into(),
            version: "0.1.0".into(),
            concurrency: 30,
            connected_at: now - chrono::Duration::hours(1),
            last_seen: now - chrono::Duration::seconds(3),
            running_tasks: vec![4, 5],
        };
        let t = agents_table(&[a], now);
        assert_eq!(
            t.lines().nth(1).unwrap(),
            "s-1  prod  box       0.1.0    1h ago     3s ago     2/30  4,5"
        );
        let tokens = vec![
            AgentToken {
                id: 1,
                name: Some("prod".into()),
                tags: Some("prod".into()),
                created_at: now - chrono::Duration::days(2),
                revoked_at: Some(now - chrono::Duration::minutes(5)),
            },
            AgentToken {
                id: 2,
                name: None,
                tags: None,
                created_at: now,
                revoked_at: None,
            },
        ];
        let out = agent_tokens_table(&tokens, now);
        assert_eq!(
            out,
            "ID  NAME  TAGS  CREATED  STATUS\n\
             1   prod  prod  2d ago   revoked 5m ago\n\
             2   -     -     0s ago   active\n"
        );
    }
}
