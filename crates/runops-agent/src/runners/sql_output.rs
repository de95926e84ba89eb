//! What the SQL runners print, shared by all of them: the shapes users' scripts already
//! parse (`psql -A`, `mysql --batch`, RFC 4180 CSV), the limits and timeouts of a
//! database session, and [`ResultWriter`], which formats rows into a buffer and hands it
//! to the task's log in chunks, so a result of millions of rows streams with bounded
//! memory.

use crate::logs::output::TaskLog;
use crate::secrets::Secrets;
use std::time::Duration;

/// Separator of the psql/mysql/sql-server shapes unless FIELD_SEPARATOR says otherwise.
pub const DEFAULT_TEXT_SEPARATOR: &str = "\t";
/// Separator of the `-csv` types unless FIELD_SEPARATOR says otherwise.
pub const DEFAULT_CSV_SEPARATOR: &str = ",";
/// Formatted output is handed to the log in chunks of about this size: big enough to
/// keep the per-write cost low, small enough to keep memory bounded and output live.
pub const OUTPUT_FLUSH_BYTES: usize = 64 * 1024;
/// An unreachable database must fail the task quickly with a clear message, not hang
/// until the task's timeout (TCP connect, TLS and authentication together).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After asking the server to cancel a running statement (kill, timeout), how long to
/// wait for it to stop before dropping the connection (which also ends it server-side).
pub const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// The output shape of a runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `psql -X -A -F<sep>`: raw values, NULL empty, `(N rows)` footers, command tags.
    Psql,
    /// `mysql --batch`: NULL as `NULL`; tab, newline, backslash and NUL inside values
    /// escaped as `\t`, `\n`, `\\`, `\0`.
    MysqlBatch,
    /// RFC 4180: fields holding the separator, a quote, CR or LF are quoted, quotes
    /// doubled; NULL empty; header row, no footer.
    Csv,
    /// `sqlcmd`-like: raw values, NULL as `NULL`, `(N rows affected)` footers.
    SqlServer,
}

/// FIELD_SEPARATOR from the task's secrets, or the style's default.
pub fn field_separator(secrets: &Secrets, style: Style) -> String {
    match secrets.get("FIELD_SEPARATOR") {
        Some(s) if !s.is_empty() => s.clone(),
        _ if style == Style::Csv => DEFAULT_CSV_SEPARATOR.to_string(),
        _ => DEFAULT_TEXT_SEPARATOR.to_string(),
    }
}

/// Appends one record (a header or a row) and its newline to `buf`.
pub fn write_record<'v>(
    buf: &mut Vec<u8>,
    style: Style,
    sep: &[u8],
    fields: impl IntoIterator<Item = Option<&'v [u8]>>,
    header: bool,
) {
    for (n, field) in fields.into_iter().enumerate() {
        if n > 0 {
            buf.extend_from_slice(sep);
        }
        match (style, field) {
            (Style::Psql | Style::Csv, None) => {}
            (Style::MysqlBatch | Style::SqlServer, None) => buf.extend_from_slice(b"NULL"),
            (Style::Psql | Style::SqlServer, Some(v)) => buf.extend_from_slice(v),
            // The mysql client prints column names as they are.
            (Style::MysqlBatch, Some(v)) if header => buf.extend_from_slice(v),
            (Style::MysqlBatch, Some(v)) => mysql_escape(buf, v),
            (Style::Csv, Some(v)) => csv_field(buf, v, sep),
        }
    }
    buf.push(b'\n');
}

fn mysql_escape(buf: &mut Vec<u8>, v: &[u8]) {
    for &c in v {
        match c {
            0 => buf.extend_from_slice(b"\\0"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            _ => buf.push(c),
        }
    }
}

fn csv_field(buf: &mut Vec<u8>, v: &[u8], sep: &[u8]) {
    let needs_quotes = v.iter().any(|c| matches!(c, b'"' | b'\r' | b'\n'))
        || (!sep.is_empty() && v.windows(sep.len()).any(|w| w == sep));
    if !needs_quotes {
        buf.extend_from_slice(v);
        return;
    }
    buf.push(b'"');
    for &c in v {
        if c == b'"' {
            buf.push(b'"');
        }
        buf.push(c);
    }
    buf.push(b'"');
}

/// psql's footer of a result set.
pub fn psql_row_count(rows: u64) -> String {
    if rows == 1 {
        "(1 row)\n".to_string()
    } else {
        format!("({rows} rows)\n")
    }
}

/// One complete result set in `style`: what a runner prints for `columns` and `rows`
/// (mysql prints nothing for an empty result set).
pub fn format_result_set(
    style: Style,
    sep: &str,
    columns: &[String],
    rows: &[Vec<Option<String>>],
) -> Vec<u8> {
    let mut buf = Vec::new();
    if style == Style::MysqlBatch && rows.is_empty() {
        return buf;
    }
    let sep = sep.as_bytes();
    write_record(
        &mut buf,
        style,
        sep,
        columns.iter().map(|c| Some(c.as_bytes())),
        true,
    );
    for row in rows {
        write_record(
            &mut buf,
            style,
            sep,
            row.iter().map(|v| v.as_deref().map(str::as_bytes)),
            false,
        );
    }
    let n = rows.len() as u64;
    match style {
        Style::Psql => buf.extend_from_slice(psql_row_count(n).as_bytes()),
        Style::SqlServer => buf.extend_from_slice(rows_affected(n).as_bytes()),
        Style::MysqlBatch | Style::Csv => {}
    }
    buf
}

/// sql-server's footer (as `sqlcmd` prints it).
pub fn rows_affected(n: u64) -> String {
    format!("({n} rows affected)\n")
}

/// Formats records into a buffer and writes it to the task's log in chunks.
pub struct ResultWriter<'a> {
    out: &'a TaskLog,
    pub style: Style,
    sep: Vec<u8>,
    buf: Vec<u8>,
}

impl<'a> ResultWriter<'a> {
    pub fn new(out: &'a TaskLog, style: Style, sep: &str) -> ResultWriter<'a> {
        ResultWriter {
            out,
            style,
            sep: sep.as_bytes().to_vec(),
            buf: Vec::with_capacity(OUTPUT_FLUSH_BYTES),
        }
    }

    pub async fn header<'v>(&mut self, names: impl IntoIterator<Item = &'v [u8]>) {
        write_record(
            &mut self.buf,
            self.style,
            &self.sep,
            names.into_iter().map(Some),
            true,
        );
        self.flush_if_full().await;
    }

    pub async fn row<'v>(&mut self, values: impl IntoIterator<Item = Option<&'v [u8]>>) {
        write_record(&mut self.buf, self.style, &self.sep, values, false);
        self.flush_if_full().await;
    }

    /// A line of its own (footers, command tags, errors).
    pub async fn line(&mut self, text: &str) {
        self.buf.extend_from_slice(text.as_bytes());
        if !text.ends_with('\n') {
            self.buf.push(b'\n');
        }
        self.flush_if_full().await;
    }

    async fn flush_if_full(&mut self) {
        if self.buf.len() >= OUTPUT_FLUSH_BYTES {
            self.flush().await;
        }
    }

    /// Hands everything buffered to the log.
    pub async fn flush(&mut self) {
        if !self.buf.is_empty() {
            self.out.write(&self.buf).await;
            self.buf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: &[&[Option<&str>]]) -> Vec<Vec<Option<String>>> {
        v.iter()
            .map(|r| r.iter().map(|c| c.map(str::to_string)).collect())
            .collect()
    }

    fn cols(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn psql_shape_has_raw_values_empty_nulls_and_a_row_count() {
        let out = format_result_set(
            Style::Psql,
            "\t",
            &cols(&["a", "b"]),
            &rows(&[&[Some("1"), None], &[Some("x\ty"), Some("z")]]),
        );
        assert_eq!(out, b"a\tb\n1\t\nx\ty\tz\n(2 rows)\n");
        let one = format_result_set(Style::Psql, "|", &cols(&["n"]), &rows(&[&[Some("1")]]));
        assert_eq!(one, b"n\n1\n(1 row)\n");
        let none = format_result_set(Style::Psql, "\t", &cols(&["n"]), &[]);
        assert_eq!(none, b"n\n(0 rows)\n");
    }

    #[test]
    fn mysql_batch_escapes_tabs_newlines_backslashes_and_nul_and_prints_null() {
        let out = format_result_set(
            Style::MysqlBatch,
            "\t",
            &cols(&["a\tb", "c"]),
            &rows(&[&[Some("x\ty\nz\\w\0"), None]]),
        );
        assert_eq!(out, b"a\tb\tc\nx\\ty\\nz\\\\w\\0\tNULL\n");
    }

    #[test]
    fn mysql_batch_prints_nothing_for_an_empty_result_set() {
        assert!(format_result_set(Style::MysqlBatch, "\t", &cols(&["a"]), &[]).is_empty());
    }

    #[test]
    fn mysql_csv_quotes_fields_with_separators_quotes_and_newlines() {
        let out = format_result_set(
            Style::Csv,
            ",",
            &cols(&["id", "note, text"]),
            &rows(&[
                &[Some("1"), Some("plain")],
                &[Some("2"), Some("a,b")],
                &[Some("3"), Some("say \"hi\"")],
                &[Some("4"), Some("two\nlines")],
                &[Some("5"), Some("cr\rhere")],
                &[None, Some("")],
            ]),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id,\"note, text\"\n1,plain\n2,\"a,b\"\n3,\"say \"\"hi\"\"\"\n4,\"two\nlines\"\n5,\"cr\rhere\"\n,\n"
        );
    }

    #[test]
    fn csv_with_a_multi_character_separator_quotes_only_fields_that_hold_it() {
        let out = format_result_set(
            Style::Csv,
            "||",
            &cols(&["a", "b"]),
            &rows(&[&[Some("x|y"), Some("p||q")]]),
        );
        assert_eq!(out, b"a||b\nx|y||\"p||q\"\n");
    }

    #[test]
    fn sql_server_shape_prints_null_and_rows_affected() {
        let out = format_result_set(
            Style::SqlServer,
            "\t",
            &cols(&["id", "name"]),
            &rows(&[&[Some("1"), None]]),
        );
        assert_eq!(out, b"id\tname\n1\tNULL\n(1 rows affected)\n");
    }

    #[test]
    fn field_separator_defaults_per_style_and_honours_the_secret() {
        let mut s = Secrets::new();
        assert_eq!(field_separator(&s, Style::Psql), "\t");
        assert_eq!(field_separator(&s, Style::Csv), ",");
        s.insert("FIELD_SEPARATOR".into(), ";".into());
        assert_eq!(field_separator(&s, Style::Csv), ";");
        assert_eq!(field_separator(&s, Style::MysqlBatch), ";");
    }
}
