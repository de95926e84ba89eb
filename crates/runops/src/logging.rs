//! Log output for every role: human-readable by default, one JSON object per line
//! with `LOG_FORMAT=json`; the level comes from `RUST_LOG` (default `info` for
//! services, `warn` for CLI commands so their output stays clean).

use tracing_subscriber::EnvFilter;

pub enum Mode {
    /// Long-running server/agent: info level, logs on stderr.
    Service,
    /// A CLI command: only warnings, so stdout/stderr carry the command's own output.
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
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.with_target(false).init();
    }
}
