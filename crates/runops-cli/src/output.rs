//! Output formatting: aligned tables, `key: value` blocks, pretty JSON and times.
//! Every text that came from the server goes through [`cell`] so that a name holding
//! a newline or a terminal escape cannot break a table or the user's terminal.

use crate::error::CliResult;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::io::Write;

/// Longest text shown in one table cell; longer values (descriptions, scripts) are cut
/// so that a row still fits a terminal. `show` and `--json` give the full value.
pub const MAX_CELL_CHARS: usize = 60;

/// Space between two table columns.
const COLUMN_GAP: &str = "  ";

/// Writes text to stdout; a closed pipe ends the command quietly.
pub fn print(text: &str) -> CliResult<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Raw bytes to stdout (task logs), unchanged.
pub fn print_bytes(bytes: &[u8]) -> CliResult<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

/// Pretty JSON of an API object or array, then a newline.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> CliResult<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| crate::error::CliError::new(format!("cannot encode JSON: {e}")))?;
    print(&format!("{text}\n"))
}

/// One line on stderr (notes and warnings; errors go through `CliError`).
pub fn note(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

/// A single-line, printable version of a server-provided value: control characters
/// (newlines, tabs, escapes) become spaces, long values are cut with `…`.
pub fn cell(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() > MAX_CELL_CHARS {
        let cut: String = clean.chars().take(MAX_CELL_CHARS - 1).collect();
        format!("{}…", cut.trim_end())
    } else {
        clean
    }
}

/// Like [`cell`] but not shortened (for `show`), keeping nothing that could drive
/// the terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect()
}

/// An optional value, `-` when absent or empty.
pub fn or_dash(v: Option<&str>) -> String {
    match v {
        Some(s) if !s.is_empty() => cell(s),
        _ => "-".to_string(),
    }
}

/// Aligned columns separated by two spaces, headers first. The last column is not
/// padded so lines carry no trailing blanks. Cells must already be single-line.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(width(c));
            }
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows.iter()) {
        let last = row.len().min(widths.len()).saturating_sub(1);
        for (i, c) in row.iter().enumerate().take(widths.len()) {
            out.push_str(c);
            if i < last {
                out.push_str(&" ".repeat(widths[i] - width(c)));
                out.push_str(COLUMN_GAP);
            }
        }
        out.push('\n');
    }
    out
}

/// `key: value` lines with the values aligned, for `show` commands.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let w = pairs
        .iter()
        .map(|(k, _)| k.chars().count() + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let key = format!("{k}:");
        out.push_str(&format!("{key:<w$} {v}\n"));
    }
    out
}

/// How long ago `t` was, for tables: `12s ago`, `5m ago`, `3h ago`, `2d ago`.
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    if secs < 0 {
        return "just now".to_string();
    }
    format!("{} ago", short_duration(secs as u64))
}

/// `42s`, `3m`, `5h`, `2d`: the largest whole unit.
pub fn short_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// An elapsed time in milliseconds for humans: `850ms`, `12.3s`, `4m05s`, `2h10m`.
pub fn elapsed(ms: u64) -> String {
    match ms {
        m if m < 1000 => format!("{m}ms"),
        m if m < 60_000 => format!("{:.1}s", m as f64 / 1000.0),
        m if m < 3_600_000 => format!("{}m{:02}s", m / 60_000, (m / 1000) % 60),
        m => format!("{}h{:02}m", m / 3_600_000, (m / 60_000) % 60),
    }
}

/// A timestamp for `show`: RFC 3339 in UTC, to the second, plus how long ago.
pub fn timestamp(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!(
        "{} ({})",
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ago(t, now)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn table_aligns_columns_without_trailing_blanks() {
        let rows = vec![
            vec![
                "demo-db".to_string(),
                "mysql".to_string(),
                "prod".to_string(),
            ],
            vec!["a".to_string(), "bash".to_string(), "-".to_string()],
        ];
        let t = table(&["NAME", "TYPE", "TAGS"], &rows);
        assert_eq!(
            t,
            "NAME     TYPE   TAGS\n\
             demo-db  mysql  prod\n\
             a        bash   -\n"
        );
        assert!(t.lines().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn table_counts_characters_not_bytes() {
        let rows = vec![vec!["é".to_string(), "x".to_string()]];
        assert_eq!(table(&["AB", "C"], &rows), "AB  C\né   x\n");
    }

    #[test]
    fn cells_are_single_line_and_short() {
        assert_eq!(cell("a\nb\tc\x1b[31m"), "a b c [31m");
        let long = "x".repeat(200);
        let c = cell(&long);
        assert_eq!(c.chars().count(), MAX_CELL_CHARS);
        assert!(c.ends_with('…'));
        assert_eq!(or_dash(None), "-");
        assert_eq!(or_dash(Some("")), "-");
    }

    #[test]
    fn key_values_align_values() {
        let kv = key_values(&[("id", "7".to_string()), ("status", "success".to_string())]);
        assert_eq!(kv, "id:     7\nstatus: success\n");
    }

    #[test]
    fn times_read_naturally() {
        let now = Utc.with_ymd_and_hms(2026, 1, 2, 12, 0, 0).unwrap();
        let t = |s: i64| now - chrono::Duration::seconds(s);
        assert_eq!(ago(t(5), now), "5s ago");
        assert_eq!(ago(t(125), now), "2m ago");
        assert_eq!(ago(t(7200), now), "2h ago");
        assert_eq!(ago(t(3 * 86_400), now), "3d ago");
        assert_eq!(ago(t(-10), now), "just now");
        assert_eq!(elapsed(850), "850ms");
        assert_eq!(elapsed(12_340), "12.3s");
        assert_eq!(elapsed(245_000), "4m05s");
        assert_eq!(elapsed(7_800_000), "2h10m");
        assert_eq!(timestamp(t(60), now), "2026-01-02T11:59:00Z (1m ago)");
    }
}
