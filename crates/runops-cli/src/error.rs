//! The CLI's error: a message and an optional hint, printed cargo-style as
//! `error: <message>` then `hint: <hint>` on stderr. Never a debug dump.

use runops_client::ClientError;
use std::fmt;

#[derive(Debug)]
pub struct CliError {
    /// What went wrong (lower-case sentence).
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// Exit quietly with this code: the reader of our stdout went away (`| head`),
    /// there is nothing useful to say.
    pub quiet_exit: Option<u8>,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            hint: None,
            quiet_exit: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a hint only when there is none yet (the server's own hint wins).
    pub fn or_hint(self, hint: impl Into<String>) -> CliError {
        if self.hint.is_some() {
            self
        } else {
            self.with_hint(hint)
        }
    }

    /// The text printed on stderr: `error: ...` and, when known, `hint: ...`.
    pub fn render(&self) -> String {
        match &self.hint {
            Some(h) => format!("error: {}\nhint: {h}", self.message),
            None => format!("error: {}", self.message),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> CliError {
        match e {
            ClientError::Api { status, body } => {
                let err = CliError {
                    message: body.error,
                    hint: body.hint,
                    quiet_exit: None,
                };
                if status == 401 {
                    err.or_hint(
                        "your token was not accepted; log in again with \
                         `runops login --url URL --token TOKEN`",
                    )
                } else {
                    err
                }
            }
            ClientError::Transport { .. } => CliError::new(error_chain(&e)).with_hint(
                "check that the server is running and that the URL is right \
                 (`runops login --url URL --token TOKEN`, or RUNOPS_URL)",
            ),
            other => CliError::new(error_chain(&other)),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> CliError {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // `runops tasks logs 5 | head`: the reader has all it wanted.
            return CliError {
                message: String::new(),
                hint: None,
                quiet_exit: Some(0),
            };
        }
        CliError::new(format!("cannot write the output: {e}"))
    }
}

/// `message: cause: cause` without repeating a cause already in the message
/// (reqwest's Display often leaves the interesting part in its sources).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

pub type CliResult<T> = Result<T, CliError>;

#[cfg(test)]
mod tests {
    use super::*;
    use runops_proto::api::ApiErrorBody;

    #[test]
    fn api_errors_keep_the_server_message_and_hint() {
        let e = ClientError::Api {
            status: 404,
            body: ApiErrorBody {
                code: "not_found".into(),
                error: "target `demo-db` not found".into(),
                hint: Some("run `runops targets list`".into()),
            },
        };
        let cli = CliError::from(e);
        assert_eq!(
            cli.render(),
            "error: target `demo-db` not found\nhint: run `runops targets list`"
        );
    }

    #[test]
    fn unauthorized_without_hint_suggests_logging_in() {
        let e = ClientError::Api {
            status: 401,
            body: ApiErrorBody {
                code: "unauthorized".into(),
                error: "invalid token".into(),
                hint: None,
            },
        };
        let cli = CliError::from(e);
        assert!(cli.hint.unwrap().contains("runops login"));
    }

    #[test]
    fn broken_pipe_is_a_quiet_exit() {
        let e = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert_eq!(CliError::from(e).quiet_exit, Some(0));
    }
}
