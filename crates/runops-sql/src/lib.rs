//! SQL script lexing shared by the Runops agent and CLI.
//!
//! The agent splits a script into statements, as `psql -f` and the `mysql` client do:
//! both send one statement at a time (so each autocommits, an error stops the rest, and
//! the error can name the statement's line). A `;` ends a statement only outside quotes,
//! comments, dollar quotes (PostgreSQL) and parentheses (PostgreSQL, as psql does for
//! `CREATE RULE`); the `mysql` client's `DELIMITER` command is understood too.
//!
//! The CLI's REPL (`runops tasks repl`) asks the same lexer whether what was typed so far
//! ends a statement ([`ends_statement`]), so a `;` inside a string never sends half a
//! statement and both sides agree on where statements end.

/// Which lexical rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `'...'` (doubled quotes; backslash escapes only in `E'...'`), `"ident"`,
    /// `$tag$...$tag$`, `--` and nested `/* */` comments.
    Postgres,
    /// `'...'` and `"..."` with backslash escapes, `` `ident` ``, `#`, `-- ` and
    /// `/* */` comments, `DELIMITER`.
    Mysql,
}

/// One statement of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement<'a> {
    /// From its first non-blank character up to (not including) its delimiter.
    pub text: &'a str,
    /// 1-based line of the script on which `text` starts.
    pub line: usize,
}

/// The statements of `script`, skipping those that hold only blanks and comments.
pub fn split_statements(script: &str, dialect: Dialect) -> Vec<Statement<'_>> {
    let (mut out, tail) = scan(script, dialect);
    push_statement(script, tail, script.len(), dialect, &mut out);
    out
}

/// True when `script` holds a statement and everything after its last delimiter is
/// blanks and comments: what a REPL asks before sending what was typed. False while a
/// quote, a dollar quote or a parenthesis is open, or after text with no delimiter yet.
pub fn ends_statement(script: &str, dialect: Dialect) -> bool {
    let (statements, tail) = scan(script, dialect);
    !statements.is_empty()
        && script
            .get(tail..)
            .is_some_and(|t| only_blank_or_comments(t, dialect))
}

/// The delimited statements of `script` and where the undelimited rest starts.
fn scan(script: &str, dialect: Dialect) -> (Vec<Statement<'_>>, usize) {
    let b = script.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut depth: u32 = 0;
    let mut delimiter: Vec<u8> = b";".to_vec();
    while i < b.len() {
        let c = b[i];
        if dialect == Dialect::Mysql
            && (i == 0 || b[i - 1] == b'\n')
            && only_blank_or_comments(&script[start..i], dialect)
            && let Some((new_delim, next)) = delimiter_command(b, i)
        {
            delimiter = new_delim;
            i = next;
            start = next;
            continue;
        }
        match c {
            b'\'' => {
                let backslash = dialect == Dialect::Mysql || is_escape_string_prefix(b, i);
                i = skip_quoted(b, i, b'\'', backslash);
            }
            b'"' => i = skip_quoted(b, i, b'"', dialect == Dialect::Mysql),
            b'`' if dialect == Dialect::Mysql => i = skip_quoted(b, i, b'`', false),
            b'-' if b.get(i + 1) == Some(&b'-')
                && (dialect == Dialect::Postgres
                    || b.get(i + 2).is_none_or(|n| n.is_ascii_whitespace())) =>
            {
                i = skip_line(b, i);
            }
            b'#' if dialect == Dialect::Mysql => i = skip_line(b, i),
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = skip_block_comment(b, i, dialect == Dialect::Postgres);
            }
            b'$' if dialect == Dialect::Postgres => i = skip_dollar_quoted(b, i),
            b'(' if dialect == Dialect::Postgres => {
                depth += 1;
                i += 1;
            }
            b')' if dialect == Dialect::Postgres => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ if depth == 0 && b[i..].starts_with(&delimiter) => {
                push_statement(script, start, i, dialect, &mut out);
                i += delimiter.len();
                start = i;
            }
            _ => i += 1,
        }
    }
    (out, start)
}

fn push_statement<'a>(
    script: &'a str,
    start: usize,
    end: usize,
    dialect: Dialect,
    out: &mut Vec<Statement<'a>>,
) {
    let Some(chunk) = script.get(start..end) else {
        return;
    };
    if only_blank_or_comments(chunk, dialect) {
        return;
    }
    // The same blanks as `only_blank_or_comments`: with `str::trim` (Unicode
    // whitespace) a chunk of a vertical tab alone passed as a statement and then
    // trimmed to an empty one, sent to the server as an empty query.
    let trimmed = chunk.trim_start_matches(is_blank_char);
    let offset = start + (chunk.len() - trimmed.len());
    let line = 1 + script.as_bytes()[..offset]
        .iter()
        .filter(|&&c| c == b'\n')
        .count();
    out.push(Statement {
        text: trimmed.trim_end_matches(is_blank_char),
        line,
    });
}

/// Blanks between statements: ASCII whitespace and the vertical tab (both servers'
/// lexers skip it).
fn is_blank(c: u8) -> bool {
    c.is_ascii_whitespace() || c == 0x0b
}

fn is_blank_char(c: char) -> bool {
    u8::try_from(c).is_ok_and(is_blank)
}

/// True when `s` holds nothing the server would run.
pub fn only_blank_or_comments(s: &str, dialect: Dialect) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c if is_blank(c) => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => i = skip_line(b, i),
            b'#' if dialect == Dialect::Mysql => i = skip_line(b, i),
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = skip_block_comment(b, i, dialect == Dialect::Postgres);
            }
            _ => return false,
        }
    }
    true
}

/// `DELIMITER xx` at `i` (start of a line): the new delimiter and where the next line starts.
fn delimiter_command(b: &[u8], i: usize) -> Option<(Vec<u8>, usize)> {
    let mut j = i;
    while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
        j += 1;
    }
    let word = b"delimiter";
    let head = b.get(j..j + word.len())?;
    if !head.eq_ignore_ascii_case(word)
        || !b
            .get(j + word.len())
            .is_some_and(|c| *c == b' ' || *c == b'\t')
    {
        return None;
    }
    let end = b[j..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |p| j + p);
    let arg: Vec<u8> = b[j + word.len()..end].trim_ascii().to_vec();
    if arg.is_empty() {
        return None;
    }
    Some((arg, (end + 1).min(b.len())))
}

/// `E'...'` (any case) where the `E` is not the end of a longer word.
fn is_escape_string_prefix(b: &[u8], quote: usize) -> bool {
    quote >= 1 && matches!(b[quote - 1], b'e' | b'E') && (quote < 2 || !is_ident_byte(b[quote - 2]))
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// Index after the closing `quote` of the literal starting at `i` (doubled quotes and,
/// when `backslash`, `\x` escapes stay inside); the end of input when unterminated.
fn skip_quoted(b: &[u8], i: usize, quote: u8, backslash: bool) -> usize {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' if backslash => j += 2,
            c if c == quote => {
                if b.get(j + 1) == Some(&quote) {
                    j += 2;
                } else {
                    return j + 1;
                }
            }
            _ => j += 1,
        }
    }
    b.len()
}

fn skip_line(b: &[u8], i: usize) -> usize {
    b[i..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |p| i + p + 1)
}

fn skip_block_comment(b: &[u8], i: usize, nested: bool) -> usize {
    let mut depth = 0u32;
    let mut j = i;
    while j + 1 < b.len() {
        if b[j] == b'/' && b[j + 1] == b'*' {
            depth = if nested { depth + 1 } else { 1 };
            j += 2;
        } else if b[j] == b'*' && b[j + 1] == b'/' {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return j;
            }
        } else {
            j += 1;
        }
    }
    b.len()
}

/// `$tag$ ... $tag$` starting at `i`; a `$` that does not open one (`$1`, `a$b`) is skipped.
fn skip_dollar_quoted(b: &[u8], i: usize) -> usize {
    if i > 0 && is_ident_byte(b[i - 1]) {
        return i + 1;
    }
    let mut j = i + 1;
    while j < b.len() && is_ident_byte(b[j]) {
        j += 1;
    }
    if j >= b.len() || b[j] != b'$' || b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        return i + 1;
    }
    let tag = &b[i..=j];
    let body = j + 1;
    match b[body..].windows(tag.len()).position(|w| w == tag) {
        Some(p) => body + p + tag.len(),
        None => b.len(),
    }
}

/// The keywords and identifiers of `text` outside parentheses, strings and comments,
/// upper-cased (at most `max`): what the statement is, for PostgreSQL command tags.
pub fn top_level_words(text: &str, max: usize) -> Vec<String> {
    let b = text.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    let mut depth = 0u32;
    while i < b.len() && words.len() < max {
        match b[i] {
            b'\'' => i = skip_quoted(b, i, b'\'', is_escape_string_prefix(b, i)),
            b'"' => i = skip_quoted(b, i, b'"', false),
            b'-' if b.get(i + 1) == Some(&b'-') => i = skip_line(b, i),
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_block_comment(b, i, true),
            b'$' => i = skip_dollar_quoted(b, i),
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            c if is_ident_byte(c) && !c.is_ascii_digit() => {
                let s = i;
                while i < b.len() && (is_ident_byte(b[i]) || b[i] == b'$') {
                    i += 1;
                }
                if depth == 0 {
                    words.push(text[s..i].to_ascii_uppercase());
                }
            }
            _ => i += 1,
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (fuzz target `sql_split`, input "\x0b\n"): a vertical tab alone
    /// was a statement, trimmed to an empty one and sent to the server.
    #[test]
    fn a_vertical_tab_is_blank_and_never_an_empty_statement() {
        for d in [Dialect::Postgres, Dialect::Mysql] {
            assert!(split_statements("\x0b\n", d).is_empty());
            assert!(only_blank_or_comments("\x0b -- c\n", d));
            assert_eq!(
                texts("select 1;\x0b\n\x0bselect 2\x0b", d),
                [("select 1", 1), ("select 2", 2)]
            );
        }
    }

    fn texts(script: &str, d: Dialect) -> Vec<(&str, usize)> {
        split_statements(script, d)
            .into_iter()
            .map(|s| (s.text, s.line))
            .collect()
    }

    #[test]
    fn postgres_splits_on_semicolons_outside_quotes_comments_and_dollar_quotes() {
        let script = "select 'a;b', \"x;y\";\n-- c;\nselect E'it\\'s;';\n/* a /* nested; */ ; */ select 1;\n\
                      create function f() returns int as $body$ select 1; $body$ language sql;\n\
                      select $$;$$ ; select (1;2)\n";
        assert_eq!(
            texts(script, Dialect::Postgres),
            [
                ("select 'a;b', \"x;y\"", 1),
                ("-- c;\nselect E'it\\'s;'", 2),
                ("/* a /* nested; */ ; */ select 1", 4),
                (
                    "create function f() returns int as $body$ select 1; $body$ language sql",
                    5
                ),
                ("select $$;$$", 6),
                ("select (1;2)", 6),
            ]
        );
    }

    #[test]
    fn postgres_keeps_standard_strings_backslashes_literal() {
        // In a standard string a backslash is an ordinary character: the quote closes it.
        assert_eq!(
            texts("select 'a\\'; select 2;", Dialect::Postgres),
            [("select 'a\\'", 1), ("select 2", 1)]
        );
    }

    #[test]
    fn comment_only_and_empty_statements_are_skipped() {
        assert!(texts(" ;; -- nothing\n/* x */ ;", Dialect::Postgres).is_empty());
        assert_eq!(
            texts("select 1;\n-- bye\n", Dialect::Mysql),
            [("select 1", 1)]
        );
    }

    #[test]
    fn mysql_understands_backslash_escapes_hash_comments_and_delimiter() {
        let script = "select 'a\\';b', \"c;\", `d;`; # x;\nDELIMITER //\ncreate procedure p() begin select 1; end//\nDELIMITER ;\nselect 2;";
        assert_eq!(
            texts(script, Dialect::Mysql),
            [
                ("select 'a\\';b', \"c;\", `d;`", 1),
                ("create procedure p() begin select 1; end", 3),
                ("select 2", 5),
            ]
        );
    }

    #[test]
    fn mysql_double_dash_needs_a_space_to_start_a_comment() {
        assert_eq!(texts("select 1--1;", Dialect::Mysql), [("select 1--1", 1)]);
    }

    #[test]
    fn unterminated_quotes_swallow_the_rest_without_panicking() {
        assert_eq!(texts("select 'abc; select 2", Dialect::Postgres).len(), 1);
        assert_eq!(
            texts("select $x$ abc; select 2", Dialect::Postgres).len(),
            1
        );
        assert_eq!(texts("select /* abc; select 2", Dialect::Mysql).len(), 1);
    }

    #[test]
    fn a_statement_ends_at_a_delimiter_outside_quotes_comments_and_parentheses() {
        let pg = Dialect::Postgres;
        for done in [
            "select 1;",
            "select\n  2 as two\n;",
            "select 'a;b'; -- trailing note",
            "select 1; /* done */ ",
            "select $$ a; b $$;",
            "select 1; select 2;",
        ] {
            assert!(ends_statement(done, pg), "{done:?} should be complete");
        }
        for open in [
            "",
            "  ",
            "-- only a comment;",
            ";",
            "select 1",
            "select 'a;",
            "select $body$ a;",
            "select (1;",
            "select 1; select 2",
            "select \"x;",
        ] {
            assert!(!ends_statement(open, pg), "{open:?} should wait for more");
        }
        let my = Dialect::Mysql;
        assert!(ends_statement("select 'it\\'s;';", my));
        assert!(!ends_statement("select 'it\\'s;", my));
        assert!(!ends_statement("select 1 # not yet;", my));
        assert!(!ends_statement(
            "DELIMITER //\ncreate procedure p() begin select 1;",
            my
        ));
        assert!(ends_statement(
            "DELIMITER //\ncreate procedure p() begin select 1; end//",
            my
        ));
    }

    #[test]
    fn top_level_words_skip_parentheses_strings_and_comments() {
        assert_eq!(
            top_level_words(
                "with a as (select 1) /* x */ insert into t select * from a",
                4
            ),
            ["WITH", "A", "AS", "INSERT"]
        );
        assert_eq!(
            top_level_words("create table t (a int) ", 10),
            ["CREATE", "TABLE", "T"]
        );
    }
}
