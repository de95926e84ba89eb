//! `runops login [--context NAME] --url URL --token TOKEN | --with-token`: checks the
//! token with `GET /v1/me`, then saves URL and token as a context of the config file
//! and makes it the current one. TOKEN is a user API token (`rou_...`) or an
//! identity-provider JWT; agent tokens (`roa_...`) are refused. `--with-token` reads
//! the token from standard input, so it stays out of the shell's history.
//! `--dpop-key FILE` names the private key a JWT bound to a key (`cnf.jkt`) belongs to;
//! `tasks create` signs its task proofs with it (see `proof.rs`).

use crate::config::{self, ENV_DPOP_KEY, ENV_TOKEN, ENV_URL};
use crate::error::{CliError, CliResult};
use crate::output;
use runops_client::Client;
use runops_proto::token::{TokenKind, token_kind};
use std::io::IsTerminal;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

/// Most bytes read from standard input for `--with-token`: far above any JWT, and a
/// bound on what a wrong pipe (`runops login --with-token < big.log`) can make us read.
const MAX_TOKEN_INPUT_BYTES: u64 = 64 * 1024;

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// The server's root URL, e.g. `http://127.0.0.1:8080` (default: the context's URL
    /// when it exists).
    #[arg(long, env = ENV_URL, value_name = "URL")]
    pub url: Option<String>,
    /// A user API token (`rou_...`), or a JWT from the identity provider when the server
    /// accepts them (`runops server --auth-jwk-url`). Prefer --with-token: a token on the
    /// command line lands in the shell's history.
    #[arg(long, env = ENV_TOKEN, value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the token from standard input (`runops login --with-token < token.txt`);
    /// takes the place of --token and RUNOPS_TOKEN.
    #[arg(long = "with-token", visible_alias = "with_token")]
    pub with_token: bool,
    /// The private key (unencrypted PKCS#8 PEM, P-256) your identity token is bound to
    /// (`cnf.jkt`, DPoP): tasks you create are proven with it. Remembered in the context
    /// until the next login.
    #[arg(long = "dpop-key", env = ENV_DPOP_KEY, value_name = "FILE")]
    pub dpop_key: Option<std::path::PathBuf>,
    /// Print the logged-in user as JSON.
    #[arg(long)]
    pub json: bool,
}

impl LoginArgs {
    pub async fn run(self) -> CliResult<u8> {
        let path = config::config_path().map_err(|e| CliError::new(format!("{e:#}")))?;
        let file = config::read_config_at(&path)?;
        let env = |k: &str| std::env::var(k).ok();
        let context = config::requested_context(&env)
            .or_else(|| file.current_context.clone())
            .unwrap_or_else(|| config::DEFAULT_CONTEXT.to_string());
        config::check_context_name(&context)?;
        let known = file.contexts.get(&context);

        let url = match self.url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            Some(u) => u.to_string(),
            None => match known {
                Some(c) => c.url.clone(),
                None => {
                    return Err(
                        CliError::new(format!("no server URL for context `{context}`"))
                            .with_hint("pass it with `--url URL` (e.g. http://127.0.0.1:8080)"),
                    );
                }
            },
        };
        let (token, source) = if self.with_token {
            (read_token_from_stdin().await?, "from standard input")
        } else {
            match self
                .token
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
            {
                Some(t) => (t.to_string(), "given"),
                None => {
                    return Err(CliError::new("no token given").with_hint(
                        "pipe it in with `runops login --with-token < token.txt` \
                         (or pass --token TOKEN)",
                    ));
                }
            }
        };
        if token_kind(&token) == Some(TokenKind::Agent) {
            return Err(CliError::new("this is an agent token, not a user API token")
                .with_hint("agent tokens (`roa_...`) are for `runops agent`; log in with a user token (`rou_...`)"));
        }
        config::check_token_shape(&token, source)?;
        let bound = crate::proof::bound_key(&token);
        let dpop_key = match &self.dpop_key {
            Some(file) => {
                let key = crate::proof::load_key(file)?;
                if let Some(jkt) = &bound
                    && jkt != key.thumbprint()
                {
                    return Err(CliError::new(format!(
                        "the token is bound to key {jkt}, but {} is key {}",
                        file.display(),
                        key.thumbprint()
                    ))
                    .with_hint("pass the private key the identity provider bound the token to"));
                }
                // Absolute, so that commands run from elsewhere find it.
                Some(std::path::absolute(file).unwrap_or_else(|_| file.clone()))
            }
            None => None,
        };
        let client = Client::new(&url, &token)?;
        let me = client.me().await?;
        let path =
            config::save_login_context(&context, client.base_url(), &token, dpop_key.as_deref())
                .map_err(|e| CliError::new(format!("{e:#}")))?;
        if self.json {
            output::print_json(&me)?;
        } else {
            output::print(&format!(
                "logged in to {} as {} (context `{context}`)\n",
                client.base_url(),
                output::cell(&me.email)
            ))?;
            output::note(&format!("saved in {}", path.display()));
        }
        if let (Some(jkt), None) = (&bound, &dpop_key) {
            output::note(&format!(
                "warning: this token is bound to key {jkt} (`cnf.jkt`): tasks you create need a proof signed with it; log in again with --dpop-key FILE or set RUNOPS_DPOP_KEY"
            ));
        }
        Ok(0)
    }
}

/// The token piped in: the first non-empty line. On a terminal, one typed line.
async fn read_token_from_stdin() -> CliResult<String> {
    let mut text = String::new();
    let read = if std::io::stdin().is_terminal() {
        output::note("paste the token and press Enter:");
        tokio::io::BufReader::new(tokio::io::stdin().take(MAX_TOKEN_INPUT_BYTES))
            .read_line(&mut text)
            .await
    } else {
        tokio::io::stdin()
            .take(MAX_TOKEN_INPUT_BYTES)
            .read_to_string(&mut text)
            .await
    };
    read.map_err(|e| CliError::new(format!("cannot read the token from standard input: {e}")))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(String::from)
        .ok_or_else(|| {
            CliError::new("--with-token read no token from standard input")
                .with_hint("pipe the token in: `runops login --with-token < token.txt`")
        })
}

#[cfg(test)]
mod tests {
    use crate::Command;
    use crate::tests::parse;

    #[test]
    fn login_takes_url_and_token() {
        let Command::Login(a) = parse(&[
            "login",
            "--url",
            "http://127.0.0.1:8080",
            "--token",
            "rou_x",
        ]) else {
            panic!("not login")
        };
        assert_eq!(a.url.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(a.token.as_deref(), Some("rou_x"));
        let Command::Login(a) = parse(&["login", "--url", "http://x", "--with-token"]) else {
            panic!("not login")
        };
        assert!(a.with_token);
    }

    #[test]
    fn login_accepts_an_identity_provider_jwt() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJlbWFpbCI6ImFAYi5jIn0.c2ln";
        let Command::Login(a) = parse(&["login", "--url", "http://x", "--token", jwt]) else {
            panic!("not login")
        };
        assert_eq!(a.token.as_deref(), Some(jwt));
        assert_ne!(
            runops_proto::token::token_kind(jwt),
            Some(runops_proto::token::TokenKind::Agent),
            "a JWT is not refused as an agent token"
        );
    }
}
