//! `mysql` and `mysql-csv` (MySQL and MariaDB): the script runs over a native connection
//! (mysql_async, text protocol), split into statements the way the `mysql` client splits
//! it (quotes, comments, `DELIMITER`) and sent one at a time; the first error stops the
//! script. `mysql` prints what `mysql --batch` prints on stdout (nothing for statements
//! without a result set, nor for empty result sets); `mysql-csv` prints RFC 4180 CSV.
//! An error is printed as the client prints it:
//! `ERROR 1146 (42S02) at line 3: Table 'test.nope' doesn't exist`.
//! No `mysql` binary is needed and the password stays in the agent's memory.

use super::postgres_tls::decode_base64_secret;
use super::sql_output::{CANCEL_WAIT, CONNECT_TIMEOUT, ResultWriter, Style, field_separator};
use super::sql_script::{Dialect, Statement, split_statements};
use super::{RunContext, RunOutcome, Runner};
use crate::failure::TaskFailure;
use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, DriverError, Opts, OptsBuilder, SslOpts, Value};
use std::borrow::Cow;
use tokio_util::sync::CancellationToken;

/// The mysql client's exit code for a failed statement or connection.
pub const EXIT_FAILED: i32 = 1;
/// Exit code of a script stopped by kill or timeout (the pipeline reports the reason).
pub const EXIT_STOPPED: i32 = 130;
/// The MySQL port when MYSQL_PORT is not set.
pub const DEFAULT_PORT: u16 = 3306;

const REQUIRED: &[&str] = &["MYSQL_HOST", "MYSQL_USER", "MYSQL_PASS", "MYSQL_DB"];

pub struct MysqlRunner {
    pub style: Style,
}

/// MYSQL_SSL_MODE, named as the `mysql` client's `--ssl-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disabled,
    /// TLS when the server offers it, plain otherwise.
    Preferred,
    /// TLS without checking the certificate.
    Required,
    /// TLS; the certificate must chain to MYSQL_SSL_CA (or a public root).
    VerifyCa,
    /// VerifyCa and the host name must match.
    VerifyIdentity,
}

/// Where and how to connect, from the task's secrets.
#[derive(Debug, Clone)]
pub struct MysqlTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub db: String,
    pub ssl_mode: SslMode,
    pub ssl_ca: Option<Vec<u8>>,
}

impl MysqlTarget {
    pub fn from_secrets(s: &crate::secrets::Secrets) -> Result<MysqlTarget, TaskFailure> {
        let get = |k: &str| s.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let req = |k: &str| {
            get(k)
                .map(str::to_string)
                .ok_or_else(|| TaskFailure::secrets(format!("the target's secret lacks {k}")))
        };
        let port = match get("MYSQL_PORT") {
            None => DEFAULT_PORT,
            Some(p) => p.parse().map_err(|_| {
                TaskFailure::invalid_config(format!(
                    "MYSQL_PORT `{p}` is not a port number (1-65535)"
                ))
            })?,
        };
        let ssl_mode = match get("MYSQL_SSL_MODE")
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("DISABLED") => SslMode::Disabled,
            Some("PREFERRED") => SslMode::Preferred,
            Some("REQUIRED") => SslMode::Required,
            Some("VERIFY_CA") => SslMode::VerifyCa,
            Some("VERIFY_IDENTITY") => SslMode::VerifyIdentity,
            Some(other) => {
                return Err(TaskFailure::invalid_config(format!(
                    "MYSQL_SSL_MODE `{other}` is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY"
                )));
            }
        };
        let ssl_ca = get("MYSQL_SSL_CA")
            .map(|v| decode_base64_secret("MYSQL_SSL_CA", v).map_err(TaskFailure::invalid_config))
            .transpose()?;
        Ok(MysqlTarget {
            host: req("MYSQL_HOST")?,
            port,
            user: req("MYSQL_USER")?,
            password: s.get("MYSQL_PASS").cloned().unwrap_or_default(),
            db: req("MYSQL_DB")?,
            ssl_mode,
            ssl_ca,
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "MySQL at {}:{} as user `{}`, database `{}`",
            self.host, self.port, self.user, self.db
        )
    }

    fn opts(&self, tls: bool) -> Opts {
        let mut b = OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.clone()))
            .db_name(Some(self.db.clone()))
            .prefer_socket(false)
            .stmt_cache_size(0);
        if tls {
            let mut ssl = SslOpts::default();
            if let Some(ca) = &self.ssl_ca {
                ssl = ssl.with_root_certs(vec![ca.clone().into()]);
            }
            ssl = match self.ssl_mode {
                SslMode::Disabled | SslMode::Preferred | SslMode::Required => ssl
                    .with_danger_accept_invalid_certs(true)
                    .with_danger_skip_domain_validation(true),
                SslMode::VerifyCa => ssl.with_danger_skip_domain_validation(true),
                SslMode::VerifyIdentity => ssl,
            };
            b = b.ssl_opts(Some(ssl));
        }
        Opts::from(b)
    }
}

#[async_trait]
impl Runner for MysqlRunner {
    fn required_keys(&self) -> &'static [&'static str] {
        REQUIRED
    }

    async fn run(&self, ctx: RunContext<'_>) -> Result<RunOutcome, TaskFailure> {
        let target = MysqlTarget::from_secrets(ctx.secrets)?;
        let sep = field_separator(ctx.secrets, self.style);
        let statements = split_statements(ctx.script, Dialect::Mysql);

        let connected = tokio::select! {
            c = connect(&target) => c,
            _ = ctx.stop.cancelled() => return Ok(RunOutcome { exit_code: EXIT_STOPPED }),
        };
        let (mut conn, opts) = match connected {
            Ok(c) => c,
            Err(message) => {
                ctx.output.note(&message).await;
                return Ok(RunOutcome {
                    exit_code: EXIT_FAILED,
                });
            }
        };
        let connection_id = conn.id();
        let mut out = ResultWriter::new(ctx.output, self.style, &sep);
        let mut exit_code = 0;
        for stmt in &statements {
            match run_statement(&mut conn, stmt, &mut out, ctx.stop).await {
                Ok(()) => {}
                Err(Failure::Sql(e)) => {
                    out.line(&format_error(&e, stmt)).await;
                    exit_code = EXIT_FAILED;
                    break;
                }
                Err(Failure::Stopped) => {
                    out.flush().await;
                    kill_query(&opts, connection_id).await;
                    exit_code = EXIT_STOPPED;
                    break;
                }
            }
        }
        out.flush().await;
        if exit_code != EXIT_STOPPED {
            let _ = tokio::time::timeout(CANCEL_WAIT, conn.disconnect()).await;
        }
        Ok(RunOutcome { exit_code })
    }
}

/// Connects within [`CONNECT_TIMEOUT`]; the error names host, port, user and database.
async fn connect(target: &MysqlTarget) -> Result<(Conn, Opts), String> {
    let tls = target.ssl_mode != SslMode::Disabled;
    if tls {
        // mysql_async builds its rustls config from the process-wide provider: make sure
        // there is one (an error only means another part of the agent installed it).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
    let fail = |why: String| format!("cannot connect to {}: {why}", target.describe());
    let attempt = |opts: Opts| async move {
        match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts.clone())).await {
            Ok(Ok(conn)) => Ok((conn, opts)),
            Ok(Err(e)) => Err(Some(e)),
            Err(_) => Err(None),
        }
    };
    let result = match attempt(target.opts(tls)).await {
        Err(Some(mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer)))
            if target.ssl_mode == SslMode::Preferred =>
        {
            attempt(target.opts(false)).await
        }
        other => other,
    };
    result.map_err(|e| match e {
        None => fail(format!(
            "no answer within {} s; check the host, the port and the firewall",
            CONNECT_TIMEOUT.as_secs()
        )),
        Some(mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer)) => {
            fail("the server does not offer TLS, but MYSQL_SSL_MODE requires it".to_string())
        }
        Some(mysql_async::Error::Server(e)) => {
            fail(format!("ERROR {} ({}): {}", e.code, e.state, e.message))
        }
        Some(e) => fail(e.to_string()),
    })
}

enum Failure {
    Sql(mysql_async::Error),
    Stopped,
}

/// Runs one statement, streaming every result set it returns into `out`.
async fn run_statement(
    conn: &mut Conn,
    stmt: &Statement<'_>,
    out: &mut ResultWriter<'_>,
    stop: &CancellationToken,
) -> Result<(), Failure> {
    let mut result = tokio::select! {
        r = conn.query_iter(stmt.text) => r.map_err(Failure::Sql)?,
        _ = stop.cancelled() => return Err(Failure::Stopped),
    };
    loop {
        let columns: Vec<Vec<u8>> = result
            .columns_ref()
            .iter()
            .map(|c| c.name_ref().to_vec())
            .collect();
        let mut rows: u64 = 0;
        loop {
            let row = tokio::select! {
                r = result.next() => r.map_err(Failure::Sql)?,
                _ = stop.cancelled() => return Err(Failure::Stopped),
            };
            let Some(row) = row else { break };
            // `mysql --batch` prints a header only above rows; CSV always has one.
            if rows == 0 {
                out.header(columns.iter().map(Vec::as_slice)).await;
            }
            rows += 1;
            let values = row.unwrap();
            let texts: Vec<Option<Cow<'_, [u8]>>> = values.iter().map(value_text).collect();
            out.row(texts.iter().map(|v| v.as_deref())).await;
        }
        if rows == 0 && out.style == Style::Csv && !columns.is_empty() {
            out.header(columns.iter().map(Vec::as_slice)).await;
        }
        if result.is_empty() {
            return Ok(());
        }
    }
}

/// A value as the server's text (the text protocol sends bytes; the rest is defensive).
fn value_text(v: &Value) -> Option<Cow<'_, [u8]>> {
    match v {
        Value::NULL => None,
        Value::Bytes(b) => Some(Cow::Borrowed(b.as_slice())),
        Value::Int(i) => Some(Cow::Owned(i.to_string().into_bytes())),
        Value::UInt(u) => Some(Cow::Owned(u.to_string().into_bytes())),
        Value::Float(f) => Some(Cow::Owned(f.to_string().into_bytes())),
        Value::Double(d) => Some(Cow::Owned(d.to_string().into_bytes())),
        other => Some(Cow::Owned(
            other.as_sql(true).trim_matches('\'').as_bytes().to_vec(),
        )),
    }
}

/// The mysql client's rendering of an error in a script.
pub fn format_error(e: &mysql_async::Error, stmt: &Statement<'_>) -> String {
    match e {
        mysql_async::Error::Server(s) => format!(
            "ERROR {} ({}) at line {}: {}",
            s.code, s.state, stmt.line, s.message
        ),
        other => format!("ERROR at line {}: {other}", stmt.line),
    }
}

/// Stops the statement running on connection `id` (kill, timeout) from a second
/// connection, as the mysql client does on Ctrl-C.
async fn kill_query(opts: &Opts, id: u32) {
    let kill = async {
        let mut admin = Conn::new(opts.clone()).await?;
        admin.query_drop(format!("KILL QUERY {id}")).await?;
        admin.disconnect().await
    };
    match tokio::time::timeout(CANCEL_WAIT, kill).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("cannot kill a mysql query: {e}"),
        Err(_) => tracing::warn!("cannot kill a mysql query: no answer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(pairs: &[(&str, &str)]) -> crate::secrets::Secrets {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn target_reads_port_and_ssl_mode_with_clear_errors() {
        let base = [
            ("MYSQL_HOST", "db"),
            ("MYSQL_USER", "u"),
            ("MYSQL_PASS", "p"),
            ("MYSQL_DB", "d"),
        ];
        let t = MysqlTarget::from_secrets(&secrets(&base)).unwrap();
        assert_eq!((t.port, t.ssl_mode), (3306, SslMode::Disabled));
        assert_eq!(t.describe(), "MySQL at db:3306 as user `u`, database `d`");
        let mut s = secrets(&base);
        s.insert("MYSQL_SSL_MODE".into(), "verify_identity".into());
        s.insert("MYSQL_PORT".into(), "3307".into());
        let t = MysqlTarget::from_secrets(&s).unwrap();
        assert_eq!((t.port, t.ssl_mode), (3307, SslMode::VerifyIdentity));
        s.insert("MYSQL_SSL_MODE".into(), "maybe".into());
        let e = MysqlTarget::from_secrets(&s).unwrap_err();
        assert!(
            e.message.contains("MYSQL_SSL_MODE `MAYBE`"),
            "{}",
            e.message
        );
        s.insert("MYSQL_PORT".into(), "99999".into());
        let e = MysqlTarget::from_secrets(&s).unwrap_err();
        assert!(e.message.contains("MYSQL_PORT `99999`"), "{}", e.message);
    }

    #[test]
    fn errors_render_like_the_mysql_client() {
        let e = mysql_async::Error::Server(mysql_async::ServerError {
            code: 1146,
            message: "Table 'test.nope' doesn't exist".into(),
            state: "42S02".into(),
        });
        let stmt = Statement {
            text: "select * from nope",
            line: 3,
        };
        assert_eq!(
            format_error(&e, &stmt),
            "ERROR 1146 (42S02) at line 3: Table 'test.nope' doesn't exist"
        );
    }
}
