//! `postgres` and `postgres-csv`: the script runs over a native connection
//! (tokio-postgres, simple-query protocol, so every value arrives as the server's text),
//! one statement at a time like `psql -f`: each autocommits unless the script opens a
//! transaction, and the first error stops the script. `postgres` prints what
//! `psql -X -A -F<sep> -v ON_ERROR_STOP=1 -f` prints on stdout; `postgres-csv` prints
//! RFC 4180 CSV. No `psql` binary is needed and the password never leaves the agent's
//! memory (no command line, no child environment).
//!
//! Two documented differences from psql: the error goes to the same log as the output,
//! as `ERROR:  <message>` followed by `LINE <n>: <text>` where `<n>` is the line *in
//! the script* (psql numbers lines within the statement); and command tags are rebuilt
//! from the statement and its row count ([`command_tag`]), because the driver does not
//! hand the server's tag over.

use super::postgres_tls::{MakeRustls, Verify, client_config, decode_base64_secret};
use super::sql_output::{
    CANCEL_WAIT, CONNECT_TIMEOUT, ResultWriter, Style, field_separator, psql_row_count,
};
use super::sql_script::{Dialect, Statement, split_statements, top_level_words};
use super::{RunContext, RunOutcome, Runner};
use crate::failure::TaskFailure;
use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::{DbError, ErrorPosition};
use tokio_postgres::{AsyncMessage, Client, SimpleQueryMessage};
use tokio_util::sync::CancellationToken;

/// psql's exit code when a statement fails under ON_ERROR_STOP.
pub const EXIT_STATEMENT_FAILED: i32 = 3;
/// psql's exit code when it cannot connect (or loses the connection).
pub const EXIT_CONNECTION_FAILED: i32 = 2;
/// Exit code of a script stopped by kill or timeout (the pipeline reports the reason).
pub const EXIT_STOPPED: i32 = 130;
/// The PostgreSQL port when PG_PORT is not set.
pub const DEFAULT_PORT: u16 = 5432;
/// Shown in `pg_stat_activity.application_name`, so DBAs can tell Runops sessions apart.
const APPLICATION_NAME: &str = "runops";

const REQUIRED: &[&str] = &["PG_HOST", "PG_USER", "PG_PASS", "PG_DB"];

pub struct PostgresRunner {
    pub style: Style,
}

/// Where and how to connect, from the task's secrets.
#[derive(Debug, Clone)]
pub struct PgTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub db: String,
    pub ssl_mode: SslMode,
    pub verify: Verify,
    pub root_cert: Option<Vec<u8>>,
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
}

impl PgTarget {
    pub fn from_secrets(s: &crate::secrets::Secrets) -> Result<PgTarget, TaskFailure> {
        let get = |k: &str| s.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let req = |k: &str| {
            get(k)
                .map(str::to_string)
                .ok_or_else(|| TaskFailure::secrets(format!("the target's secret lacks {k}")))
        };
        let port = match get("PG_PORT") {
            None => DEFAULT_PORT,
            Some(p) => p.parse().map_err(|_| {
                TaskFailure::invalid_config(format!("PG_PORT `{p}` is not a port number (1-65535)"))
            })?,
        };
        let b64 = |k: &str| {
            get(k)
                .map(|v| decode_base64_secret(k, v).map_err(TaskFailure::invalid_config))
                .transpose()
        };
        let root_cert = b64("PGSSLROOTCERT")?;
        let (ssl_mode, verify) = match get("PGSSLMODE").map(str::to_ascii_lowercase).as_deref() {
            Some("disable") => (SslMode::Disable, Verify::Nothing),
            None | Some("prefer") | Some("allow") => (SslMode::Prefer, Verify::Nothing),
            // libpq: `require` with a root certificate verifies the chain.
            Some("require") if root_cert.is_some() => (SslMode::Require, Verify::Chain),
            Some("require") => (SslMode::Require, Verify::Nothing),
            Some("verify-ca") => (SslMode::Require, Verify::Chain),
            Some("verify-full") => (SslMode::Require, Verify::Full),
            Some(other) => {
                return Err(TaskFailure::invalid_config(format!(
                    "PGSSLMODE `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
                )));
            }
        };
        let client_cert = match (b64("PGSSLCERT")?, b64("PGSSLKEY")?) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(TaskFailure::invalid_config(
                    "PGSSLCERT and PGSSLKEY go together: set both or neither",
                ));
            }
        };
        Ok(PgTarget {
            host: req("PG_HOST")?,
            port,
            user: req("PG_USER")?,
            password: s.get("PG_PASS").cloned().unwrap_or_default(),
            db: req("PG_DB")?,
            ssl_mode,
            verify,
            root_cert,
            client_cert,
        })
    }

    /// `host:port as user `u`, database `d``: what every connection error names.
    pub fn describe(&self) -> String {
        format!(
            "PostgreSQL at {}:{} as user `{}`, database `{}`",
            self.host, self.port, self.user, self.db
        )
    }

    fn tls(&self) -> Result<MakeRustls, TaskFailure> {
        if self.ssl_mode == SslMode::Disable {
            return MakeRustls::unused().map_err(TaskFailure::agent_error);
        }
        let client = self
            .client_cert
            .as_ref()
            .map(|(c, k)| (c.as_slice(), k.as_slice()));
        client_config(self.verify, self.root_cert.as_deref(), client)
            .map(MakeRustls::new)
            .map_err(TaskFailure::invalid_config)
    }
}

#[async_trait]
impl Runner for PostgresRunner {
    fn required_keys(&self) -> &'static [&'static str] {
        REQUIRED
    }

    async fn run(&self, ctx: RunContext<'_>) -> Result<RunOutcome, TaskFailure> {
        let target = PgTarget::from_secrets(ctx.secrets)?;
        let tls = target.tls()?;
        let sep = field_separator(ctx.secrets, self.style);
        let statements = split_statements(ctx.script, Dialect::Postgres);

        let session = tokio::select! {
            s = connect(&target, tls.clone()) => s,
            _ = ctx.stop.cancelled() => return Ok(RunOutcome { exit_code: EXIT_STOPPED }),
        };
        let Session {
            client,
            mut notices,
            driver,
        } = match session {
            Ok(s) => s,
            Err(message) => {
                ctx.output.note(&message).await;
                return Ok(RunOutcome {
                    exit_code: EXIT_CONNECTION_FAILED,
                });
            }
        };
        let mut out = ResultWriter::new(ctx.output, self.style, &sep);
        let mut exit_code = 0;
        for stmt in &statements {
            let result = run_statement(&client, stmt, &mut out, &mut notices, ctx.stop).await;
            write_notices(&mut notices, &mut out).await;
            match result {
                Ok(()) => {}
                Err(StatementError::Db(e)) => {
                    out.line(&format_db_error(&e, stmt)).await;
                    exit_code = EXIT_STATEMENT_FAILED;
                    break;
                }
                Err(StatementError::Refused) => {
                    exit_code = EXIT_STATEMENT_FAILED;
                    break;
                }
                Err(StatementError::Connection(e)) => {
                    out.flush().await;
                    ctx.output
                        .note(&format!(
                            "lost the connection to {}: {}",
                            target.describe(),
                            error_chain(&e)
                        ))
                        .await;
                    exit_code = EXIT_CONNECTION_FAILED;
                    break;
                }
                Err(StatementError::Stopped) => {
                    out.flush().await;
                    cancel_on_server(&client, tls.clone()).await;
                    exit_code = EXIT_STOPPED;
                    break;
                }
            }
        }
        out.flush().await;
        drop(client);
        driver.abort();
        Ok(RunOutcome { exit_code })
    }
}

struct Session {
    client: Client,
    /// Server notices (`RAISE NOTICE`, warnings), printed like psql does.
    notices: mpsc::UnboundedReceiver<DbError>,
    /// Drives the connection; aborted when the run ends.
    driver: tokio::task::JoinHandle<()>,
}

/// Connects within [`CONNECT_TIMEOUT`]; the error names host, port, user and database.
async fn connect(target: &PgTarget, tls: MakeRustls) -> Result<Session, String> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&target.host)
        .port(target.port)
        .user(&target.user)
        .password(&target.password)
        .dbname(&target.db)
        .application_name(APPLICATION_NAME)
        .ssl_mode(target.ssl_mode)
        .connect_timeout(CONNECT_TIMEOUT);
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, cfg.connect(tls)).await;
    let (client, mut connection) = match connected {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            return Err(format!(
                "cannot connect to {}: {}",
                target.describe(),
                error_chain(&e)
            ));
        }
        Err(_) => {
            return Err(format!(
                "cannot connect to {}: no answer within {} s; check the host, the port and the firewall",
                target.describe(),
                CONNECT_TIMEOUT.as_secs()
            ));
        }
    };
    let (tx, notices) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(msg)) = messages.next().await {
            if let AsyncMessage::Notice(n) = msg {
                let _ = tx.send(n);
            }
        }
    });
    Ok(Session {
        client,
        notices,
        driver,
    })
}

/// The error and its causes on one line (tokio-postgres hides the useful part in the source).
fn error_chain(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

enum StatementError {
    Db(Box<DbError>),
    /// Not sent to the server; the reason is already printed.
    Refused,
    Connection(tokio_postgres::Error),
    Stopped,
}

impl From<tokio_postgres::Error> for StatementError {
    fn from(e: tokio_postgres::Error) -> StatementError {
        match e.as_db_error() {
            Some(db) => StatementError::Db(Box::new(db.clone())),
            None => StatementError::Connection(e),
        }
    }
}

/// Runs one statement, streaming its rows into `out`.
async fn run_statement(
    client: &Client,
    stmt: &Statement<'_>,
    out: &mut ResultWriter<'_>,
    notices: &mut mpsc::UnboundedReceiver<DbError>,
    stop: &CancellationToken,
) -> Result<(), StatementError> {
    if is_copy_over_the_connection(stmt.text) {
        out.line(&format!(
            "ERROR:  COPY ... FROM STDIN / TO STDOUT is not supported by Runops; select the rows instead (`postgres-csv` prints CSV)\nLINE {}: {}",
            stmt.line,
            stmt.text.lines().next().unwrap_or_default()
        ))
        .await;
        return Err(StatementError::Refused);
    }
    let stream = tokio::select! {
        s = client.simple_query_raw(stmt.text) => s?,
        _ = stop.cancelled() => return Err(StatementError::Stopped),
    };
    let mut stream = std::pin::pin!(stream);
    let mut in_result_set = false;
    let mut rows: u64 = 0;
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = stop.cancelled() => return Err(StatementError::Stopped),
        };
        match msg {
            None => return Ok(()),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(SimpleQueryMessage::RowDescription(columns))) => {
                write_notices(notices, out).await;
                out.header(columns.iter().map(|c| c.name().as_bytes()))
                    .await;
                in_result_set = true;
                rows = 0;
            }
            Some(Ok(SimpleQueryMessage::Row(row))) => {
                rows += 1;
                out.row((0..row.len()).map(|i| row.get(i).map(str::as_bytes)))
                    .await;
            }
            Some(Ok(SimpleQueryMessage::CommandComplete(n))) => {
                write_notices(notices, out).await;
                if out.style == Style::Csv {
                    in_result_set = false;
                    continue;
                }
                let tag = command_tag(stmt.text, n);
                if std::mem::take(&mut in_result_set) {
                    out.line(&psql_row_count(rows)).await;
                    // psql also prints the tag of INSERT/UPDATE/DELETE ... RETURNING.
                    if let Some(t) = tag.filter(|t| {
                        ["INSERT ", "UPDATE ", "DELETE "]
                            .iter()
                            .any(|v| t.starts_with(v))
                    }) {
                        out.line(&t).await;
                    }
                } else if let Some(t) = tag {
                    out.line(&t).await;
                }
            }
            Some(Ok(_)) => {}
        }
    }
}

async fn write_notices(notices: &mut mpsc::UnboundedReceiver<DbError>, out: &mut ResultWriter<'_>) {
    while let Ok(n) = notices.try_recv() {
        out.line(&format!("{}:  {}", n.severity(), n.message()))
            .await;
    }
}

/// Asks the server to cancel what runs (kill, timeout), then waits until the session is
/// idle again, so no backend keeps running the query after the task ended.
async fn cancel_on_server(client: &Client, tls: MakeRustls) {
    let token = client.cancel_token();
    if let Err(e) = tokio::time::timeout(CANCEL_WAIT, token.cancel_query(tls)).await {
        tracing::warn!("cannot cancel a postgres query: {e}");
        return;
    }
    // Statements run in order: once this answers, the cancelled one has ended.
    let _ = tokio::time::timeout(CANCEL_WAIT, client.simple_query("")).await;
}

/// `COPY ... FROM STDIN` / `TO STDOUT` need the copy sub-protocol, which the
/// simple-query driver does not speak (psql's `\copy` is a client command anyway).
fn is_copy_over_the_connection(text: &str) -> bool {
    let words = top_level_words(text, 64);
    words.first().is_some_and(|w| w == "COPY")
        && words.iter().any(|w| w == "STDIN" || w == "STDOUT")
}

/// psql's rendering of a server error, with the statement's line in the script.
pub fn format_db_error(e: &DbError, stmt: &Statement<'_>) -> String {
    let mut text = format!("{}:  {}\n", e.severity(), e.message());
    let (line_offset, column) = match e.position() {
        Some(ErrorPosition::Original(pos)) => {
            let before: String = stmt
                .text
                .chars()
                .take((*pos as usize).saturating_sub(1))
                .collect();
            let line_offset = before.matches('\n').count();
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count());
            (line_offset, Some(column))
        }
        _ => (0, None),
    };
    let line_no = stmt.line + line_offset;
    let line_text = stmt.text.lines().nth(line_offset).unwrap_or_default();
    let prefix = format!("LINE {line_no}: ");
    text.push_str(&prefix);
    text.push_str(line_text);
    text.push('\n');
    if let Some(col) = column {
        text.push_str(&" ".repeat(prefix.len() + col));
        text.push_str("^\n");
    }
    for (label, value) in [
        ("DETAIL", e.detail()),
        ("HINT", e.hint()),
        ("CONTEXT", e.where_()),
    ] {
        if let Some(v) = value {
            text.push_str(&format!("{label}:  {v}\n"));
        }
    }
    text
}

/// The command tag the server sends for `text` having affected `rows` rows (`INSERT 0 1`,
/// `UPDATE 3`, `CREATE TABLE`), rebuilt from the statement's leading keywords. `None`
/// when the statement has no keyword at all.
pub fn command_tag(text: &str, rows: u64) -> Option<String> {
    let words = top_level_words(text, 64);
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    let first = words.first()?.as_str();
    let tag = match first {
        "INSERT" => format!("INSERT 0 {rows}"),
        "UPDATE" | "DELETE" | "MERGE" | "FETCH" | "MOVE" | "COPY" => format!("{first} {rows}"),
        "SELECT" | "VALUES" | "TABLE" => format!("SELECT {rows}"),
        "WITH" => {
            let verb = words
                .iter()
                .skip(1)
                .find(|w| {
                    matches!(
                        w.as_str(),
                        "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "SELECT" | "VALUES"
                    )
                })
                .map_or("SELECT", String::as_str);
            return command_tag(verb, rows);
        }
        "CREATE" | "DROP" | "ALTER" => {
            let mut i = 1;
            if w(1) == "OR" && w(2) == "REPLACE" {
                i = 3;
            }
            while matches!(
                w(i),
                "TEMP"
                    | "TEMPORARY"
                    | "UNLOGGED"
                    | "GLOBAL"
                    | "LOCAL"
                    | "UNIQUE"
                    | "TRUSTED"
                    | "PROCEDURAL"
                    | "CONSTRAINT"
                    | "RECURSIVE"
                    | "DEFAULT"
            ) {
                i += 1;
            }
            let object = object_type(&words[i.min(words.len())..]);
            if first == "CREATE"
                && (object == "MATERIALIZED VIEW"
                    || (object == "TABLE" && words[i..].iter().any(|w| w == "AS")))
            {
                format!("SELECT {rows}")
            } else {
                format!("{first} {object}")
            }
        }
        "BEGIN" => "BEGIN".to_string(),
        "START" => "START TRANSACTION".to_string(),
        "COMMIT" | "END" if w(1) == "PREPARED" => "COMMIT PREPARED".to_string(),
        "COMMIT" | "END" => "COMMIT".to_string(),
        "ROLLBACK" if w(1) == "PREPARED" => "ROLLBACK PREPARED".to_string(),
        "ROLLBACK" | "ABORT" => "ROLLBACK".to_string(),
        "PREPARE" if w(1) == "TRANSACTION" => "PREPARE TRANSACTION".to_string(),
        "TRUNCATE" => "TRUNCATE TABLE".to_string(),
        "LOCK" => "LOCK TABLE".to_string(),
        "ANALYSE" => "ANALYZE".to_string(),
        "DECLARE" => "DECLARE CURSOR".to_string(),
        "CLOSE" if w(1) == "ALL" => "CLOSE CURSOR ALL".to_string(),
        "CLOSE" => "CLOSE CURSOR".to_string(),
        "DISCARD" => format!("DISCARD {}", w(1)),
        "DEALLOCATE" if w(1) == "ALL" || w(2) == "ALL" => "DEALLOCATE ALL".to_string(),
        "REFRESH" => "REFRESH MATERIALIZED VIEW".to_string(),
        "SET" if w(1) == "CONSTRAINTS" => "SET CONSTRAINTS".to_string(),
        "SECURITY" => "SECURITY LABEL".to_string(),
        "REASSIGN" => "REASSIGN OWNED".to_string(),
        "IMPORT" => "IMPORT FOREIGN SCHEMA".to_string(),
        other => other.to_string(),
    };
    Some(tag)
}

/// The object of CREATE/DROP/ALTER as the server names it in its tag.
fn object_type(words: &[String]) -> String {
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    let two = |n: usize| words[..n.min(words.len())].join(" ");
    match w(0) {
        "USER" if w(1) == "MAPPING" => "USER MAPPING".to_string(),
        "USER" | "GROUP" => "ROLE".to_string(),
        "MATERIALIZED" | "EVENT" | "ACCESS" => two(2),
        "FOREIGN" if w(1) == "DATA" => "FOREIGN DATA WRAPPER".to_string(),
        "FOREIGN" => two(2),
        "TEXT" => two(3),
        "OPERATOR" if matches!(w(1), "CLASS" | "FAMILY") => two(2),
        "OWNED" => "OWNED".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tags_match_what_the_server_sends() {
        let cases = [
            ("insert into t values (1)", 1, "INSERT 0 1"),
            ("update t set a = 1", 3, "UPDATE 3"),
            ("delete from t", 0, "DELETE 0"),
            ("create table t (a int)", 0, "CREATE TABLE"),
            ("CREATE TEMP TABLE t (a int)", 0, "CREATE TABLE"),
            ("create unique index i on t (a)", 0, "CREATE INDEX"),
            (
                "create or replace function f() returns int as $$ select 1 $$ language sql",
                0,
                "CREATE FUNCTION",
            ),
            ("create table t2 as select * from t", 4, "SELECT 4"),
            ("create materialized view v as select 1", 1, "SELECT 1"),
            ("drop table if exists t", 0, "DROP TABLE"),
            ("drop schema s cascade", 0, "DROP SCHEMA"),
            ("alter table t add column b int", 0, "ALTER TABLE"),
            ("create user u", 0, "CREATE ROLE"),
            ("begin", 0, "BEGIN"),
            ("start transaction", 0, "START TRANSACTION"),
            ("end", 0, "COMMIT"),
            ("abort", 0, "ROLLBACK"),
            ("set search_path = s", 0, "SET"),
            ("truncate t", 0, "TRUNCATE TABLE"),
            ("do $$ begin end $$", 0, "DO"),
            (
                "with x as (select 1) insert into t select * from x",
                1,
                "INSERT 0 1",
            ),
            ("select 1 into t3", 1, "SELECT 1"),
            ("grant select on t to public", 0, "GRANT"),
        ];
        for (sql, rows, want) in cases {
            assert_eq!(command_tag(sql, rows).as_deref(), Some(want), "{sql}");
        }
        assert_eq!(command_tag("-- nothing", 0), None);
    }

    #[test]
    fn copy_over_the_connection_is_recognised() {
        assert!(is_copy_over_the_connection("copy t to stdout with csv"));
        assert!(is_copy_over_the_connection("COPY t (a, b) FROM STDIN"));
        assert!(is_copy_over_the_connection("copy (select 1) to stdout"));
        assert!(!is_copy_over_the_connection("copy t to '/tmp/file'"));
        assert!(!is_copy_over_the_connection("select 'copy to stdout'"));
    }

    #[test]
    fn secrets_are_checked_with_clear_messages() {
        let mut s = crate::secrets::Secrets::new();
        for (k, v) in [
            ("PG_HOST", "db"),
            ("PG_USER", "u"),
            ("PG_PASS", "p"),
            ("PG_DB", "d"),
        ] {
            s.insert(k.into(), v.into());
        }
        let t = PgTarget::from_secrets(&s).unwrap();
        assert_eq!(t.port, 5432);
        assert_eq!(t.ssl_mode, SslMode::Prefer);
        assert_eq!(
            t.describe(),
            "PostgreSQL at db:5432 as user `u`, database `d`"
        );
        s.insert("PG_PORT".into(), "x".into());
        let e = PgTarget::from_secrets(&s).unwrap_err();
        assert!(e.message.contains("PG_PORT `x`"), "{}", e.message);
        s.insert("PG_PORT".into(), "6543".into());
        s.insert("PGSSLMODE".into(), "sometimes".into());
        let e = PgTarget::from_secrets(&s).unwrap_err();
        assert!(e.message.contains("PGSSLMODE `sometimes`"), "{}", e.message);
        s.insert("PGSSLMODE".into(), "verify-full".into());
        s.insert("PGSSLROOTCERT".into(), "%%%".into());
        let e = PgTarget::from_secrets(&s).unwrap_err();
        assert!(
            e.message.contains("PGSSLROOTCERT is not valid base64"),
            "{}",
            e.message
        );
        s.remove("PGSSLROOTCERT");
        s.insert("PGSSLCERT".into(), "AAAA".into());
        let e = PgTarget::from_secrets(&s).unwrap_err();
        assert!(
            e.message.contains("PGSSLCERT and PGSSLKEY go together"),
            "{}",
            e.message
        );
    }
}
