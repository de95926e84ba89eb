//! `runops tokens list`: the tokens of the organisation. Today these are the agent
//! tokens (with a KIND column); user API tokens will join this list when the API
//! grows endpoints for them.

use crate::agents;
use crate::error::CliResult;
use crate::output;
use chrono::Utc;

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
    /// List tokens (agent tokens for now; see `runops agents create-token`).
    #[command(visible_alias = "ls")]
    List,
}

impl TokensCmd {
    pub async fn run(self) -> CliResult<u8> {
        let client = crate::connect()?;
        match self.cmd {
            TokensSub::List => {
                let tokens = client.list_agent_tokens().await?;
                if self.json {
                    output::print_json(&tokens)?;
                } else if tokens.is_empty() {
                    output::note(
                        "no tokens yet; create an agent token with `runops agents create-token`",
                    );
                } else {
                    let rows: Vec<Vec<String>> = agents::token_rows(&tokens, Utc::now())
                        .into_iter()
                        .map(|mut r| {
                            r.insert(1, "agent".to_string());
                            r
                        })
                        .collect();
                    output::print(&output::table(
                        &["ID", "KIND", "NAME", "CREATED", "STATUS"],
                        &rows,
                    ))?;
                }
            }
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use crate::tests::parse;

    #[test]
    fn tokens_list_parses() {
        let Command::Tokens(t) = parse(&["tokens", "list", "--json"]) else {
            panic!("not tokens")
        };
        assert!(t.json);
        assert!(matches!(t.cmd, TokensSub::List));
    }
}
