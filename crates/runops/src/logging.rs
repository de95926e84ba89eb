//! Log output for every role: human-readable by default, one JSON object per line
//! with `LOG_FORMAT=json`; the level comes from `RUST_LOG` (default `info` for
//! services, `warn` for CLI commands and `runops up` so their output stays clean).
//! Colours only on a terminal, and never with `NO_COLOR` set (https://no-color.org).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

pub enum Mode {
    /// Long-running server/agent: info level, logs on stderr.
    Service,
    /// A CLI command or `runops up`: only warnings, so stdout/stderr carry the
    /// command's own output.
    Cli,
}

pub fn init(mode: Mode) {
    let default = match mode {
        Mode::Service => "info",
        Mode::Cli => "warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_allowed())
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.with_target(false).init();
    }
}

/// Escape sequences only for a person at a terminal who did not opt out with NO_COLOR
/// (any non-empty value); files, pipes and log collectors get plain text.
pub fn colour_allowed() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}
