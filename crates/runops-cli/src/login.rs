//! `runops login --url URL --token TOKEN`: checks the token with `GET /v1/me`, then
//! saves URL and token in the config file. TOKEN is a user API token (`rou_...`) or an
//! identity-provider JWT; agent tokens (`roa_...`) are refused. `--dpop-key FILE` names
//! the private key a JWT bound to a key (`cnf.jkt`) belongs to; `tasks create` signs its
//! task proofs with it (see `proof.rs`).

use crate::config::{self, ENV_DPOP_KEY, ENV_TOKEN, ENV_URL};
use crate::error::{CliError, CliResult};
use crate::output;
use runops_client::Client;
use runops_proto::token::{TokenKind, token_kind};

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// The server's root URL, e.g. `http://127.0.0.1:8080`.
    #[arg(long, env = ENV_URL, value_name = "URL")]
    pub url: String,
    /// A user API token (`rou_...`), or a JWT from the identity provider when the server
    /// accepts them (`runops server --auth-jwk-url`).
    #[arg(long, env = ENV_TOKEN, value_name = "TOKEN", hide_env_values = true)]
    pub token: String,
    /// The private key (unencrypted PKCS#8 PEM, P-256) your identity token is bound to
    /// (`cnf.jkt`, DPoP): tasks you create are proven with it. Remembered until the next
    /// login.
    #[arg(long = "dpop-key", env = ENV_DPOP_KEY, value_name = "FILE")]
    pub dpop_key: Option<std::path::PathBuf>,
    /// Print the logged-in user as JSON.
    #[arg(long)]
    pub json: bool,
}

impl LoginArgs {
    pub async fn run(self) -> CliResult<u8> {
        if token_kind(self.token.trim()) == Some(TokenKind::Agent) {
            return Err(CliError::new("this is an agent token, not a user API token")
                .with_hint("agent tokens (`roa_...`) are for `runops agent`; log in with a user token (`rou_...`)"));
        }
        let bound = crate::proof::bound_key(&self.token);
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
        let client = Client::new(&self.url, &self.token)?;
        let me = client.me().await?;
        let path = config::write_login(client.base_url(), &self.token, dpop_key.as_deref())
            .map_err(|e| CliError::new(format!("{e:#}")))?;
        if self.json {
            output::print_json(&me)?;
        } else {
            output::print(&format!(
                "logged in to {} as {}\n",
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
        assert_eq!(a.url, "http://127.0.0.1:8080");
        assert_eq!(a.token, "rou_x");
    }

    #[test]
    fn login_accepts_an_identity_provider_jwt() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJlbWFpbCI6ImFAYi5jIn0.c2ln";
        let Command::Login(a) = parse(&["login", "--url", "http://x", "--token", jwt]) else {
            panic!("not login")
        };
        assert_eq!(a.token, jwt);
        assert_ne!(
            runops_proto::token::token_kind(jwt),
            Some(runops_proto::token::TokenKind::Agent),
            "a JWT is not refused as an agent token"
        );
    }
}
