//! `runops tokens list|create|revoke`: API tokens (yours; an admin sees everyone's
//! with `--all`) and, in the same list, the organisation's agent tokens (KIND column).
//! Tokens are shown once, when created; the server keeps only their SHA-256.

use crate::agents;
use crate::error::CliResult;
use crate::output::{self, or_dash};
use chrono::{DateTime, Utc};
use runops_proto::api::UserToken;
use std::io::IsTerminal;

#[derive(clap::Args, Debug)]
pub struct TokensCmd {
    #[command(subcommand)]
    pub cmd: TokensSub,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true, display_order = 900)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum TokensSub {
    /// List your API tokens and the organisation's agent tokens.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Create another API token for yourself; prints only the token (shown once).
    Create(CreateArgs),
    /// Revoke a token by id (an API token; an agent token also works).
    Revoke(RevokeArgs),
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Every user's API tokens (admins only).
    #[arg(long)]
    pub all: bool,
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// A name to recognise the token by (e.g. `ci`, `laptop`).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct RevokeArgs {
    /// The token's id (`runops tokens list`).
    #[arg(value_name = "ID")]
    pub id: i64,
}

impl TokensCmd {
    pub async fn run(self) -> CliResult<u8> {
        let client = crate::connect()?;
        match self.cmd {
            TokensSub::List(args) => {
                let api = client.list_tokens(args.all).await?;
                // Agent tokens are listed to admins only; others see their API tokens.
                let agent = match client.list_agent_tokens(&Default::default()).await {
                    Ok(tokens) => tokens,
                    Err(e) if e.status() == Some(403) => Vec::new(),
                    Err(e) => return Err(e.into()),
                };
                if self.json {
                    output::print_json(&serde_json::json!({
                        "api_tokens": api,
                        "agent_tokens": agent,
                    }))?;
                } else if api.is_empty() && agent.is_empty() {
                    output::note(
                        "no tokens; create an API token with `runops tokens create` or an agent token with `runops agents create-token`",
                    );
                } else {
                    let now = Utc::now();
                    let mut rows = api_rows(&api, now);
                    rows.extend(agents::token_rows(&agent, now).into_iter().map(|mut r| {
                        r.insert(1, "agent".to_string());
                        r.insert(3, "-".to_string());
                        r
                    }));
                    rows.sort_by_key(|r| r[0].parse::<i64>().unwrap_or(i64::MAX));
                    output::print(&output::table(
                        &["ID", "KIND", "NAME", "USER", "CREATED", "STATUS"],
                        &rows,
                    ))?;
                }
            }
            TokensSub::Create(args) => {
                let created = client.create_token(args.name).await?;
                if self.json {
                    output::print_json(&created)?;
                } else {
                    // Only the token on stdout, so `TOKEN=$(runops tokens create)` works.
                    output::print(&format!("{}\n", created.token))?;
                    if std::io::stderr().is_terminal() {
                        output::note(&format!(
                            "API token {} created; it is shown only this once",
                            created.id
                        ));
                    }
                }
            }
            TokensSub::Revoke(RevokeArgs { id }) => {
                let kind = match client.revoke_token(id).await {
                    Ok(()) => "API",
                    // Not an API token of yours: maybe an agent token (same id space).
                    Err(e) if e.status() == Some(404) => {
                        client.revoke_agent_token(id).await.map_err(|_| e)?;
                        "agent"
                    }
                    Err(e) => return Err(e.into()),
                };
                if self.json {
                    output::print_json(&serde_json::json!({ "revoked": id, "kind": kind }))?;
                } else {
                    output::print(&format!("{kind} token {id} revoked\n"))?;
                }
            }
        }
        Ok(0)
    }
}

/// One row per API token: ID, KIND, NAME, USER, CREATED, STATUS.
fn api_rows(tokens: &[UserToken], now: DateTime<Utc>) -> Vec<Vec<String>> {
    tokens
        .iter()
        .map(|t| {
            let status = match t.revoked_at {
                Some(r) => format!("revoked {}", output::ago(r, now)),
                None if t.current => "active (this one)".to_string(),
                None => "active".to_string(),
            };
            vec![
                t.id.to_string(),
                "api".to_string(),
                or_dash(t.name.as_deref()),
                output::cell(&t.user),
                output::ago(t.created_at, now),
                status,
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use crate::tests::parse;
    use chrono::TimeZone;

    fn tokens(args: &[&str]) -> TokensCmd {
        let mut full = vec!["tokens"];
        full.extend_from_slice(args);
        match parse(&full) {
            Command::Tokens(t) => t,
            other => panic!("not tokens: {other:?}"),
        }
    }

    #[test]
    fn tokens_list_create_and_revoke_parse() {
        let t = tokens(&["list", "--json"]);
        assert!(t.json);
        assert!(matches!(t.cmd, TokensSub::List(ListArgs { all: false })));
        assert!(matches!(
            tokens(&["ls", "--all"]).cmd,
            TokensSub::List(ListArgs { all: true })
        ));
        let TokensSub::Create(c) = tokens(&["create", "--name", "ci"]).cmd else {
            panic!("not create")
        };
        assert_eq!(c.name.as_deref(), Some("ci"));
        assert!(matches!(
            tokens(&["revoke", "12"]).cmd,
            TokensSub::Revoke(RevokeArgs { id: 12 })
        ));
    }

    #[test]
    fn api_token_rows_mark_the_current_and_revoked_ones() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 1, 0, 0).unwrap();
        let t = |id, current, revoked: Option<DateTime<Utc>>| UserToken {
            id,
            name: None,
            user: "ana@example.com".into(),
            created_at: now,
            revoked_at: revoked,
            current,
        };
        let rows = api_rows(
            &[t(1, true, None), t(2, false, Some(now)), t(3, false, None)],
            now,
        );
        assert_eq!(rows[0][5], "active (this one)");
        assert_eq!(rows[1][5], "revoked 0s ago");
        assert_eq!(rows[2][5], "active");
        assert_eq!(rows[0][3], "ana@example.com");
    }
}
