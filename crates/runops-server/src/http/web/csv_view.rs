//! The table view of a `postgres-csv` / `mysql-csv` task: its log is RFC 4180 CSV, read
//! here into rows (quoted fields, doubled quotes, CRLF or LF, line breaks inside quotes).

/// Target types whose output is CSV.
pub fn is_csv_type(kind: &str) -> bool {
    kind.ends_with("-csv")
}

/// Logs larger than this are offered as a download only, not as a table.
pub const TABLE_MAX_BYTES: u64 = 1024 * 1024;

/// Rows shown in the table; the download has them all.
pub const TABLE_MAX_ROWS: usize = 1000;

/// The field separator of a CSV text: the one of `,` `;` tab `|` its first line holds
/// most (a target may set another separator than the comma).
pub fn separator(text: &str) -> char {
    let first = text.lines().next().unwrap_or("");
    [',', ';', '\t', '|']
        .into_iter()
        .max_by_key(|sep| (first.matches(*sep).count(), *sep == ','))
        .unwrap_or(',')
}

/// The records of `text` split at `sep`, at most `max_rows`; `None` when it is not
/// well-formed CSV (a quote left open), so the page shows the plain log instead.
pub fn parse(text: &str, sep: char, max_rows: usize) -> Option<Vec<Vec<String>>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                quoted = true;
                at_field_start = false;
            }
            c if c == sep => {
                row.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                at_field_start = true;
                if rows.len() == max_rows {
                    return Some(rows);
                }
            }
            _ => {
                field.push(c);
                at_field_start = false;
            }
        }
    }
    if quoted {
        return None;
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    Some(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_keep_quotes_commas_and_line_breaks() {
        let text = "id,name\r\n1,\"a, \"\"b\"\"\"\n2,\"two\nlines\"\n3,\n";
        let rows = parse(text, ',', 100).unwrap();
        assert_eq!(
            rows,
            vec![
                vec!["id", "name"],
                vec!["1", "a, \"b\""],
                vec!["2", "two\nlines"],
                vec!["3", ""],
            ]
        );
    }

    #[test]
    fn csv_without_a_final_newline_and_row_limits() {
        assert_eq!(
            parse("a,b\n1,2", ',', 100).unwrap(),
            vec![vec!["a", "b"], vec!["1", "2"]]
        );
        assert_eq!(parse("a\n1\n2\n3\n", ',', 2).unwrap().len(), 2);
        assert_eq!(parse("", ',', 10).unwrap(), Vec::<Vec<String>>::new());
        assert!(
            parse("a,\"open", ',', 10).is_none(),
            "an unclosed quote is not CSV"
        );
        assert!(is_csv_type("postgres-csv") && !is_csv_type("postgres"));
    }

    #[test]
    fn the_separator_is_the_one_the_header_uses() {
        assert_eq!(separator("id;name;\"a,b\"\n1;2;3"), ';');
        assert_eq!(separator("id,name\n"), ',');
        assert_eq!(separator("id\n1\n"), ',');
        assert_eq!(
            parse("a;b\n1;\"x;y\"\n", ';', 10).unwrap()[1],
            vec!["1", "x;y"]
        );
    }
}
