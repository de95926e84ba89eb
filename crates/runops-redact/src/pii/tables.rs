//! Column names of a SQL result as labels: in a psql or MySQL table whose header names
//! a column `phone`, `mobile`, `ssn`..., the bare digit runs in that column are phone
//! numbers or social security numbers (`5019897824`, `413161273`).
//!
//! A table is recognised at its separator line (only `-` and `+`, with a `-+-`), whose
//! previous line is the header: the `+` of the separator sit where the header has `|`.
//! Rows follow while a line has `|` at those places. What carries from one segment to
//! the next: the labelled columns of the last line (a header whose separator may come
//! in the next segment), and the columns of the table being read.

use super::phones::{Label, PhoneRegions, phone_national};
use super::{Hit, InfoType};

/// Longest header or row line looked at.
const MAX_TABLE_LINE: usize = 4096;

/// A column with a label: its byte range in the lines, `end` open for the last column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Column {
    start: usize,
    end: Option<usize>,
    label: Label,
}

/// The table state carried between segments.
#[derive(Debug, Default, Clone)]
pub(crate) struct TableState {
    /// The last line scanned when it has a `|` (it could be a header): read only when
    /// the next text begins with a separator line.
    last_line: Vec<u8>,
    /// The table being read: the offsets of the `|` of its rows, its labelled columns.
    table: Option<(Vec<usize>, Vec<Column>)>,
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let mut l = line;
    while let [rest @ .., b'\n' | b'\r'] = l {
        l = rest;
    }
    l
}

/// The `|` offsets of `line` and its labelled columns, when it has both.
fn header_of(line: &[u8]) -> Option<(Vec<usize>, Vec<Column>)> {
    let line = trim_eol(line);
    if line.len() > MAX_TABLE_LINE
        || memchr::memchr(b'|', line).is_none()
        || !super::phones::may_name_label(line)
    {
        return None;
    }
    let pipes: Vec<usize> = memchr::memchr_iter(b'|', line).collect();
    let mut columns = Vec::new();
    let mut start = 0;
    for k in 0..=pipes.len() {
        let end = pipes.get(k).copied();
        let cell = &line[start..end.unwrap_or(line.len())];
        let name = cell.trim_ascii();
        if let Some(label) = super::phones::label_of(name) {
            columns.push(Column { start, end, label });
        }
        start = end.map_or(0, |e| e + 1);
    }
    (!columns.is_empty()).then_some((pipes, columns))
}

/// `-----+------+----`, `+----+------+`: only `-` and `+` (and the line break).
fn is_separator(line: &[u8]) -> bool {
    let line = trim_eol(line);
    line.len() >= 3 && only_dashes_and_pluses(line) && memchr::memchr(b'+', line).is_some()
}

/// Every byte is `-` or `+`: eight bytes at a time (a separator line is mostly `-`).
fn only_dashes_and_pluses(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        // `-` becomes 0, `+` 6 (0x2D ^ 0x2B); nothing else gives 0 or 6.
        let x = u64::from_le_bytes(word) ^ (0x2D * ONES);
        let only_bits_1_2 = x & !(0x06 * ONES) == 0;
        let both_or_neither = ((x >> 1) ^ (x >> 2)) & ONES == 0;
        if !(only_bits_1_2 && both_or_neither) {
            return false;
        }
    }
    chunks.remainder().iter().all(|b| matches!(b, b'-' | b'+'))
}

fn plus_positions(line: &[u8]) -> Vec<usize> {
    memchr::memchr_iter(b'+', trim_eol(line)).collect()
}

/// A row of a table with `|` at `pipes` (the outer `|` of a MySQL table included).
fn is_row(line: &[u8], pipes: &[usize]) -> bool {
    let line = trim_eol(line);
    !line.is_empty() && pipes.iter().all(|p| line.get(*p) == Some(&b'|'))
}

/// Finds the labelled cells of the tables in `text` (complete lines, or a final piece of
/// one) and adds their hits; `state` carries over from the previous text.
pub(super) fn labelled_cells(
    text: &[u8],
    base: usize,
    state: &mut TableState,
    regions: &PhoneRegions,
    (phone, ssn): (bool, bool),
    hits: &mut Vec<Hit>,
) {
    // Only separator lines and the rows of a table are looked at.
    let mut at = rows(text, 0, base, state, regions, (phone, ssn), hits);
    while state.table.is_none() {
        // The first `-+-` from `at` (a line start): found by its `+`, rarer than `-`.
        let Some(found) = memchr::memchr(b'+', &text[at..]) else {
            break;
        };
        let plus = at + found;
        if plus == at || text[plus - 1] != b'-' || text.get(plus + 1) != Some(&b'-') {
            at = plus + 1;
            continue;
        }
        let sep = plus - 1;
        let start = memchr::memrchr(b'\n', &text[..sep]).map_or(0, |p| p + 1);
        let end = memchr::memchr(b'\n', &text[sep..]).map_or(text.len(), |p| sep + p + 1);
        let line = &text[start..end];
        at = end;
        if !is_separator(line) {
            continue;
        }
        let prev = if start == 0 {
            &state.last_line[..]
        } else {
            let prev_start = memchr::memrchr(b'\n', &text[..start - 1]).map_or(0, |p| p + 1);
            &text[prev_start..start]
        };
        let header = if !super::phones::may_name_label(prev) {
            None
        } else {
            // Parsed only when its `|` sit where the separator has `+`.
            let aligned = trim_eol(prev)
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'|')
                .map(|(k, _)| k)
                .eq(memchr::memchr_iter(b'+', trim_eol(line)));
            if aligned { header_of(prev) } else { None }
        };
        if let Some((pipes, columns)) = header
            && plus_positions(line) == pipes
        {
            state.table = Some((pipes, columns));
            at = rows(text, end, base, state, regions, (phone, ssn), hits);
        }
    }
    state.last_line.clear();
    if let Some(last) = last_line(text)
        && last.len() <= MAX_TABLE_LINE
        && memchr::memchr(b'|', last).is_some()
    {
        state.last_line.extend_from_slice(last);
    }
}

/// Reads the rows of the open table from `at`; returns where they end (the table is
/// closed there), or the end of `text` (it stays open).
fn rows(
    text: &[u8],
    mut at: usize,
    base: usize,
    state: &mut TableState,
    regions: &PhoneRegions,
    flags: (bool, bool),
    hits: &mut Vec<Hit>,
) -> usize {
    let Some((pipes, columns)) = &state.table else {
        return at;
    };
    while at < text.len() {
        let end = memchr::memchr(b'\n', &text[at..]).map_or(text.len(), |p| at + p + 1);
        let line = &text[at..end];
        if !is_row(line, pipes) {
            state.table = None;
            return at;
        }
        cells(line, at + base, columns, regions, flags, hits);
        at = end;
    }
    at
}

fn last_line(text: &[u8]) -> Option<&[u8]> {
    let body = trim_eol(text);
    let start = memchr::memrchr(b'\n', body).map_or(0, |p| p + 1);
    Some(&text[start..])
}

fn cells(
    line: &[u8],
    base: usize,
    columns: &[Column],
    regions: &PhoneRegions,
    (phone, ssn): (bool, bool),
    hits: &mut Vec<Hit>,
) {
    let body = trim_eol(line);
    for c in columns {
        let end = c.end.unwrap_or(body.len()).min(body.len());
        if c.start >= end {
            continue;
        }
        let cell = &body[c.start..end];
        let lead = cell.iter().take_while(|b| **b == b' ').count();
        let value = cell.trim_ascii();
        if value.is_empty() || !value[0].is_ascii_digit() {
            continue;
        }
        let at = c.start + lead;
        let bare = value.iter().all(u8::is_ascii_digit);
        let found = match c.label {
            Label::Ssn if ssn && bare && value.len() == 9 => ssn_valid(value),
            Label::Phone if phone => {
                phone_national(body, at, regions, true) == Some(at + value.len())
                    || (bare && nanp_bare(value))
            }
            _ => false,
        };
        if found {
            let t = match c.label {
                Label::Ssn => InfoType::UsSocialSecurityNumber,
                Label::Phone => InfoType::PhoneNumber,
            };
            hits.push(Hit::new(base + at, base + at + value.len(), t));
        }
    }
}

/// Nine digits outside the never-issued ranges (area 000, 666, 9xx; group 00; serial
/// 0000).
pub(super) fn ssn_valid(d: &[u8]) -> bool {
    d.len() == 9
        && &d[..3] != b"000"
        && &d[..3] != b"666"
        && d[0] != b'9'
        && &d[3..5] != b"00"
        && &d[5..] != b"0000"
}

/// `5019897824`, `15019897824`: a North American number, area code and exchange 2-9.
pub(super) fn nanp_bare(d: &[u8]) -> bool {
    let ok = |a: u8, b: u8| (b'2'..=b'9').contains(&a) && (b'2'..=b'9').contains(&b);
    (d.len() == 10 && ok(d[0], d[3])) || (d.len() == 11 && d[0] == b'1' && ok(d[1], d[4]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pii::phones::DEFAULT_PHONE_REGIONS;

    fn found(text: &str) -> Vec<(&str, InfoType)> {
        let codes: Vec<String> = DEFAULT_PHONE_REGIONS
            .iter()
            .map(|s| s.to_string())
            .collect();
        let regions = PhoneRegions::new(&codes);
        let mut state = TableState::default();
        let mut hits = Vec::new();
        labelled_cells(
            text.as_bytes(),
            0,
            &mut state,
            &regions,
            (true, true),
            &mut hits,
        );
        hits.iter()
            .map(|h| (&text[h.start..h.end], h.info_type))
            .collect()
    }

    #[test]
    fn psql_columns_named_phone_or_ssn_label_their_cells() {
        let t = " id | name |   phone    |    ssn    | order_no\n\
                 ----+------+------------+-----------+----------\n\
                 \x20 1 | Jane | 5019897824 | 413161273 | 5019897824\n\
                 \x20 2 | Bob  |            | 000000000 | 1\n\
                 (2 rows)\n\
                 \x20 3 | x | 5019897824\n";
        assert_eq!(
            found(t),
            vec![
                ("5019897824", InfoType::PhoneNumber),
                ("413161273", InfoType::UsSocialSecurityNumber)
            ]
        );
    }

    #[test]
    fn mysql_tables_too() {
        let t = "+----+--------------+\n| id | mobile       |\n+----+--------------+\n\
                 |  1 | 020 7946 0958 |\n+----+--------------+\n";
        assert_eq!(found(t), vec![]);
        let t = "+----+---------------+\n| id | mobile        |\n+----+---------------+\n\
                 |  1 | 020 7946 0958 |\n+----+---------------+\n";
        assert_eq!(found(t), vec![("020 7946 0958", InfoType::PhoneNumber)]);
    }
}
