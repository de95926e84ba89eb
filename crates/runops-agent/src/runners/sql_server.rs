//! `sql-server`: the script runs over a native TDS connection (tiberius, TLS on rustls),
//! split into batches on `GO` lines as `sqlcmd` does; the first failing batch stops the
//! script. Each result set prints as a header row and rows separated by
//! FIELD_SEPARATOR (tab by default), NULL as `NULL`, then `(N rows affected)`.
//! Errors print as `sqlcmd` prints them (`Msg 208, Level 16, State 1, Line 1` and the
//! message) and the task exits 1.
//!
//! Not run against a live SQL Server (none can run where this was built): the URI
//! parsing, the formatting and the failure paths are tested; the protocol is tiberius'.

use super::sql_output::{CONNECT_TIMEOUT, ResultWriter, Style, field_separator, rows_affected};
use super::{RunContext, RunOutcome, Runner};
use crate::failure::TaskFailure;
use async_trait::async_trait;
use futures_util::TryStreamExt;
use tiberius::{AuthMethod, Client, ColumnData, Config, EncryptionLevel, FromSql, QueryItem};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};
use tokio_util::sync::CancellationToken;

/// The SQL Server port when MSSQL_CONNECTION_URI names none.
pub const DEFAULT_PORT: u16 = 1433;
/// Exit code of a failed batch or connection (as `sqlcmd -b`).
pub const EXIT_FAILED: i32 = 1;
/// Exit code of a script stopped by kill or timeout (the pipeline reports the reason).
pub const EXIT_STOPPED: i32 = 130;

const REQUIRED: &[&str] = &[
    "MSSQL_CONNECTION_URI",
    "MSSQL_USER",
    "MSSQL_PASS",
    "MSSQL_DB",
];

pub struct SqlServerRunner;

/// Host and port from MSSQL_CONNECTION_URI: `host`, `host:port`, `host,port` (the
/// `sqlcmd -S` form), optionally prefixed with `tcp:`; `[v6]:port` for IPv6.
pub fn parse_server(uri: &str) -> Result<(String, u16), String> {
    let s = uri.trim();
    let s = s.strip_prefix("tcp:").unwrap_or(s);
    let bad = |why: &str| {
        format!("MSSQL_CONNECTION_URI `{uri}` {why}; use `host`, `host:port` or `host,port`")
    };
    if s.is_empty() {
        return Err(bad("is empty"));
    }
    if s.contains('\\') {
        return Err(bad(
            "names an instance, which needs the SQL Server Browser; give the instance's port instead",
        ));
    }
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                bad(&format!(
                    "has `{}` where a port (1-65535) should be",
                    p.trim()
                ))
            })
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("has an unclosed `[`"))?;
        return match after.strip_prefix(':').or_else(|| after.strip_prefix(',')) {
            Some(p) => Ok((host.to_string(), port(p)?)),
            None if after.is_empty() => Ok((host.to_string(), DEFAULT_PORT)),
            None => Err(bad("has text after `]`")),
        };
    }
    if let Some((host, p)) = s.split_once(',') {
        return Ok((host.trim().to_string(), port(p)?));
    }
    match s.matches(':').count() {
        0 => Ok((s.to_string(), DEFAULT_PORT)),
        1 => {
            let (host, p) = s.split_once(':').unwrap_or((s, ""));
            Ok((host.to_string(), port(p)?))
        }
        // A bare IPv6 address.
        _ => Ok((s.to_string(), DEFAULT_PORT)),
    }
}

/// Splits a script into batches on lines holding only `GO` (any case), like `sqlcmd`.
/// Returns each batch with the script line it starts on.
pub fn split_batches(script: &str) -> Vec<(String, usize)> {
    let mut batches = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (n, line) in script.lines().enumerate() {
        if line.trim().eq_ignore_ascii_case("go") {
            if !current.trim().is_empty() {
                batches.push((std::mem::take(&mut current), start));
            }
            current.clear();
            start = n + 2;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    if !current.trim().is_empty() {
        batches.push((current, start));
    }
    batches
}

/// A value as `sqlcmd` shows it; `None` for NULL.
pub fn column_text(data: &ColumnData<'static>) -> Option<String> {
    use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};
    match data {
        ColumnData::U8(v) => v.map(|x| x.to_string()),
        ColumnData::I16(v) => v.map(|x| x.to_string()),
        ColumnData::I32(v) => v.map(|x| x.to_string()),
        ColumnData::I64(v) => v.map(|x| x.to_string()),
        ColumnData::F32(v) => v.map(|x| x.to_string()),
        ColumnData::F64(v) => v.map(|x| x.to_string()),
        ColumnData::Bit(v) => v.map(|x| if x { "1" } else { "0" }.to_string()),
        ColumnData::String(v) => v.as_ref().map(|s| s.to_string()),
        ColumnData::Guid(v) => v.map(|g| g.to_string().to_uppercase()),
        ColumnData::Binary(v) => v.as_ref().map(|b| {
            let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
            format!("0x{hex}")
        }),
        ColumnData::Numeric(v) => v.map(|n| n.to_string()),
        ColumnData::Xml(v) => v.as_ref().map(|x| x.to_string()),
        ColumnData::DateTime(_) | ColumnData::SmallDateTime(_) | ColumnData::DateTime2(_) => {
            NaiveDateTime::from_sql(data)
                .ok()
                .flatten()
                .map(|d| d.format("%Y-%m-%d %H:%M:%S%.f").to_string())
        }
        ColumnData::Date(_) => NaiveDate::from_sql(data)
            .ok()
            .flatten()
            .map(|d| d.to_string()),
        ColumnData::Time(_) => NaiveTime::from_sql(data)
            .ok()
            .flatten()
            .map(|t| t.format("%H:%M:%S%.f").to_string()),
        ColumnData::DateTimeOffset(_) => DateTime::<FixedOffset>::from_sql(data)
            .ok()
            .flatten()
            .map(|d| d.format("%Y-%m-%d %H:%M:%S%.f %:z").to_string()),
    }
}

/// `sqlcmd`'s rendering of a server error; `line` is the batch's first script line.
pub fn format_server_error(e: &tiberius::error::TokenError, batch_line: usize) -> String {
    let line = batch_line + (e.line() as usize).saturating_sub(1);
    format!(
        "Msg {}, Level {}, State {}, Line {}\n{}",
        e.code(),
        e.class(),
        e.state(),
        line,
        e.message()
    )
}

#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    user: String,
    password: String,
    db: String,
    trust_cert: bool,
}

impl Target {
    fn from_secrets(s: &crate::secrets::Secrets) -> Result<Target, TaskFailure> {
        let get = |k: &str| s.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let req = |k: &str| {
            get(k)
                .map(str::to_string)
                .ok_or_else(|| TaskFailure::secrets(format!("the target's secret lacks {k}")))
        };
        let (host, port) =
            parse_server(&req("MSSQL_CONNECTION_URI")?).map_err(TaskFailure::invalid_config)?;
        let trust_cert = get("MSSQL_TRUST_SERVER_CERTIFICATE")
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "1"));
        Ok(Target {
            host,
            port,
            user: req("MSSQL_USER")?,
            password: s.get("MSSQL_PASS").cloned().unwrap_or_default(),
            db: req("MSSQL_DB")?,
            trust_cert,
        })
    }

    fn describe(&self) -> String {
        format!(
            "SQL Server at {}:{} as user `{}`, database `{}`",
            self.host, self.port, self.user, self.db
        )
    }
}

type TdsClient = Client<Compat<TcpStream>>;

/// Connects within [`CONNECT_TIMEOUT`]; the error names host, port, user and database.
async fn connect(t: &Target) -> Result<TdsClient, String> {
    let mut config = Config::new();
    config.host(&t.host);
    config.port(t.port);
    config.database(&t.db);
    config.application_name("runops");
    config.authentication(AuthMethod::sql_server(&t.user, &t.password));
    config.encryption(EncryptionLevel::Required);
    if t.trust_cert {
        config.trust_cert();
    }
    let fail = |why: String| format!("cannot connect to {}: {why}", t.describe());
    let attempt = async {
        let tcp = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        Client::connect(config, tcp.compat_write())
            .await
            .map_err(|e| fail(e.to_string()))
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(r) => r,
        Err(_) => Err(fail(format!(
            "no answer within {} s; check the host, the port and the firewall",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

#[async_trait]
impl Runner for SqlServerRunner {
    fn required_keys(&self) -> &'static [&'static str] {
        REQUIRED
    }

    async fn run(&self, ctx: RunContext<'_>) -> Result<RunOutcome, TaskFailure> {
        let target = Target::from_secrets(ctx.secrets)?;
        let sep = field_separator(ctx.secrets, Style::SqlServer);
        let connected = tokio::select! {
            c = connect(&target) => c,
            _ = ctx.stop.cancelled() => return Ok(RunOutcome { exit_code: EXIT_STOPPED }),
        };
        let mut client = match connected {
            Ok(c) => c,
            Err(message) => {
                ctx.output.note(&message).await;
                return Ok(RunOutcome {
                    exit_code: EXIT_FAILED,
                });
            }
        };
        let mut out = ResultWriter::new(ctx.output, Style::SqlServer, &sep);
        let mut exit_code = 0;
        for (batch, line) in split_batches(ctx.script) {
            match run_batch(&mut client, &batch, &mut out, ctx.stop).await {
                Ok(()) => {}
                Err(BatchError::Stopped) => {
                    // Dropping the connection makes the server abort the batch.
                    exit_code = EXIT_STOPPED;
                    break;
                }
                Err(BatchError::Tds(tiberius::error::Error::Server(e))) => {
                    out.line(&format_server_error(&e, line)).await;
                    exit_code = EXIT_FAILED;
                    break;
                }
                Err(BatchError::Tds(e)) => {
                    out.flush().await;
                    ctx.output
                        .note(&format!(
                            "lost the connection to {}: {e}",
                            target.describe()
                        ))
                        .await;
                    exit_code = EXIT_FAILED;
                    break;
                }
            }
        }
        out.flush().await;
        Ok(RunOutcome { exit_code })
    }
}

enum BatchError {
    Tds(tiberius::error::Error),
    Stopped,
}

async fn run_batch(
    client: &mut TdsClient,
    batch: &str,
    out: &mut ResultWriter<'_>,
    stop: &CancellationToken,
) -> Result<(), BatchError> {
    let mut stream = tokio::select! {
        s = client.simple_query(batch) => s.map_err(BatchError::Tds)?,
        _ = stop.cancelled() => return Err(BatchError::Stopped),
    };
    let mut rows: Option<u64> = None;
    loop {
        let item = tokio::select! {
            i = stream.try_next() => i.map_err(BatchError::Tds)?,
            _ = stop.cancelled() => return Err(BatchError::Stopped),
        };
        match item {
            None => break,
            Some(QueryItem::Metadata(meta)) => {
                if let Some(n) = rows.take() {
                    out.line(&rows_affected(n)).await;
                }
                out.header(meta.columns().iter().map(|c| c.name().as_bytes()))
                    .await;
                rows = Some(0);
            }
            Some(QueryItem::Row(row)) => {
                let texts: Vec<Option<String>> =
                    row.cells().map(|(_, data)| column_text(data)).collect();
                out.row(texts.iter().map(|t| t.as_deref().map(str::as_bytes)))
                    .await;
                if let Some(n) = rows.as_mut() {
                    *n += 1;
                }
            }
        }
    }
    if let Some(n) = rows {
        out.line(&rows_affected(n)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runners::sql_output::format_result_set;

    #[test]
    fn connection_uri_accepts_host_host_port_and_host_comma_port() {
        let ok = |s: &str| parse_server(s).unwrap();
        assert_eq!(ok("db.internal"), ("db.internal".to_string(), 1433));
        assert_eq!(ok("db.internal:14330"), ("db.internal".to_string(), 14330));
        assert_eq!(ok("db.internal,14330"), ("db.internal".to_string(), 14330));
        assert_eq!(ok("tcp:10.0.0.5, 1500"), ("10.0.0.5".to_string(), 1500));
        assert_eq!(ok("[::1]:1444"), ("::1".to_string(), 1444));
        assert_eq!(ok("[::1]"), ("::1".to_string(), 1433));
        assert_eq!(ok("fe80::1"), ("fe80::1".to_string(), 1433));
    }

    #[test]
    fn connection_uri_errors_say_what_is_wrong() {
        let err = |s: &str| parse_server(s).unwrap_err();
        assert!(err("").contains("is empty"));
        assert!(
            err("db:port").contains("`port` where a port"),
            "{}",
            err("db:port")
        );
        assert!(err("db,0").contains("`0` where a port"));
        assert!(err("db:70000").contains("`70000`"));
        assert!(err("db\\SQLEXPRESS").contains("instance"));
        assert!(err("[::1").contains("unclosed"));
    }

    #[test]
    fn batches_split_on_go_lines_only() {
        let b = split_batches("select 1\nGO\n\ngo  \nselect 'GO'\nselect 2 -- go\n");
        assert_eq!(
            b,
            [
                ("select 1\n".to_string(), 1),
                ("select 'GO'\nselect 2 -- go\n".to_string(), 5)
            ]
        );
    }

    #[test]
    fn values_print_like_sqlcmd() {
        assert_eq!(column_text(&ColumnData::I32(Some(7))).as_deref(), Some("7"));
        assert_eq!(column_text(&ColumnData::I32(None)), None);
        assert_eq!(
            column_text(&ColumnData::Bit(Some(true))).as_deref(),
            Some("1")
        );
        assert_eq!(
            column_text(&ColumnData::Binary(Some(vec![0xde, 0xad].into()))).as_deref(),
            Some("0xDEAD")
        );
        assert_eq!(
            column_text(&ColumnData::Numeric(Some(
                tiberius::numeric::Numeric::new_with_scale(12345, 2)
            )))
            .as_deref(),
            Some("123.45")
        );
        assert_eq!(
            column_text(&ColumnData::String(Some("tab\there".into()))).as_deref(),
            Some("tab\there")
        );
    }

    #[test]
    fn result_sets_print_header_rows_and_rows_affected() {
        let cols = vec!["id".to_string(), "name".to_string()];
        let rows = vec![
            vec![Some("1".to_string()), Some("ada".to_string())],
            vec![Some("2".to_string()), None],
        ];
        assert_eq!(
            String::from_utf8(format_result_set(Style::SqlServer, "|", &cols, &rows)).unwrap(),
            "id|name\n1|ada\n2|NULL\n(2 rows affected)\n"
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_fast_naming_host_and_port() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = Target {
            host: "127.0.0.1".into(),
            port,
            user: "sa".into(),
            password: "Secret-Pass-1".into(),
            db: "master".into(),
            trust_cert: false,
        };
        let Err(err) = connect(&t).await else {
            panic!("nothing listens on port {port}");
        };
        assert!(
            err.starts_with(&format!(
                "cannot connect to SQL Server at 127.0.0.1:{port} as user `sa`, database `master`: "
            )),
            "{err}"
        );
        assert!(!err.contains("Secret-Pass-1"), "{err}");
    }
}
