//! When what was typed at the REPL's prompt is a statement to send: the rule of the
//! target's type, applied line by line. Pure, so the rules are tested here directly.
//!
//! - SQL types (`postgres`, `postgres-csv`, `mysql`, `mysql-csv`, `sql-server`): a
//!   statement ends with `;`, lexed as the agent splits scripts (`runops-sql`), so a
//!   `;` inside quotes, comments, dollar quotes or parentheses does not end it. Lines
//!   are gathered until then.
//! - Every other type: each line is a statement, unless it opens a block (it ends with
//!   `\`, `{`, `(`, `[`, `:`, `|`, `&&`, `||`, `->`, the word `do` or `then`, or starts
//!   a here-document `<<EOF`); a block gathers lines until an empty one.

use runops_proto::TargetType;
use runops_sql::Dialect;

/// How the REPL cuts input into statements for one target type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatementRule {
    /// Up to a `;` at the end of a line, outside quotes and comments.
    Sql(Dialect),
    /// One line, or a block that ends at an empty line.
    Lines,
}

impl StatementRule {
    pub(crate) fn for_type(kind: TargetType) -> StatementRule {
        use TargetType::*;
        match kind {
            Postgres | PostgresCsv => StatementRule::Sql(Dialect::Postgres),
            Mysql | MysqlCsv => StatementRule::Sql(Dialect::Mysql),
            // T-SQL quotes and comments as PostgreSQL does (no backslash escapes; nested
            // block comments); a `;` ends the statement, `GO` stays the agent's business.
            SqlServer => StatementRule::Sql(Dialect::Postgres),
            Bash | Python | Node | Elixir | Mongodb | K8s | K8sApply | K8sExec
            | RailsConsoleK8s | HashicorpVault | Rails | RailsConsole | RailsConsoleEcs
            | EcsExec | Heroku | CustomCommand => StatementRule::Lines,
        }
    }

    /// How a statement ends, for the banner.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            StatementRule::Sql(_) => "a statement runs when it ends with `;`",
            StatementRule::Lines => {
                "each line runs as a task; a line ending in `{`, `:`, `\\`, `do`, ... opens \
                 a block that runs at an empty line"
            }
        }
    }
}

/// What feeding a line gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fed {
    /// A whole statement: send it.
    Statement(String),
    /// Part of a statement: ask for the next line.
    More,
    /// Nothing to run (a blank line at the prompt).
    Nothing,
}

/// Gathers lines into statements by a [`StatementRule`].
#[derive(Debug)]
pub(crate) struct Statements {
    rule: StatementRule,
    buffer: String,
}

impl Statements {
    pub(crate) fn new(rule: StatementRule) -> Statements {
        Statements {
            rule,
            buffer: String::new(),
        }
    }

    /// True when no statement is started: the prompt is the first-line one.
    pub(crate) fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// Bytes gathered so far (checked against the script size limit).
    pub(crate) fn len(&self) -> usize {
        self.buffer.len()
    }

    /// Forgets the statement being typed (Ctrl-C at the prompt).
    pub(crate) fn clear(&mut self) {
        self.buffer.clear();
    }

    /// Adds `line` (without its newline; a statement recalled from the history may hold
    /// several lines).
    pub(crate) fn feed(&mut self, line: &str) -> Fed {
        match self.rule {
            StatementRule::Sql(dialect) => {
                if self.buffer.is_empty() && line.trim().is_empty() {
                    return Fed::Nothing;
                }
                if !self.buffer.is_empty() {
                    self.buffer.push('\n');
                }
                self.buffer.push_str(line);
                if runops_sql::ends_statement(&self.buffer, dialect) {
                    Fed::Statement(self.take())
                } else {
                    Fed::More
                }
            }
            StatementRule::Lines => {
                if self.buffer.is_empty() {
                    if line.trim().is_empty() {
                        Fed::Nothing
                    } else if line.contains('\n') || !opens_block(line) {
                        // One line, or a whole block recalled from the history.
                        Fed::Statement(line.trim_end().to_string())
                    } else {
                        self.buffer.push_str(line);
                        Fed::More
                    }
                } else if line.trim().is_empty() {
                    Fed::Statement(self.take())
                } else {
                    self.buffer.push('\n');
                    self.buffer.push_str(line);
                    Fed::More
                }
            }
        }
    }

    /// At the end of the input: whatever was started, when it holds something to run.
    pub(crate) fn finish(&mut self) -> Option<String> {
        let rest = self.take();
        let runnable = match self.rule {
            StatementRule::Sql(dialect) => !runops_sql::only_blank_or_comments(&rest, dialect),
            StatementRule::Lines => !rest.trim().is_empty(),
        };
        runnable.then_some(rest)
    }

    fn take(&mut self) -> String {
        let text = std::mem::take(&mut self.buffer);
        text.trim_end().to_string()
    }
}

/// True when `line` of a script opens a block: a continuation (`\`, a pipe or `&&` at
/// the end), an open bracket or a colon (Python), a `do` or `then` (shell, Ruby,
/// Elixir), or the start of a here-document.
pub(crate) fn opens_block(line: &str) -> bool {
    let t = line.trim_end();
    const ENDINGS: [&str; 9] = ["\\", "{", "(", "[", ":", "|", "&&", "||", "->"];
    if ENDINGS.iter().any(|e| t.ends_with(e)) {
        return true;
    }
    let last = t.rsplit(char::is_whitespace).next().unwrap_or("");
    matches!(last, "do" | "then") || (last.starts_with("<<") && last.len() > 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(rule: StatementRule, lines: &[&str]) -> Vec<Fed> {
        let mut s = Statements::new(rule);
        lines.iter().map(|l| s.feed(l)).collect()
    }

    const PG: StatementRule = StatementRule::Sql(Dialect::Postgres);

    #[test]
    fn sql_statements_run_when_they_end_with_a_semicolon() {
        assert_eq!(
            feed_all(PG, &["select 1;"]),
            [Fed::Statement("select 1;".into())]
        );
        assert_eq!(
            feed_all(PG, &["select", "  2 as two", ";"]),
            [
                Fed::More,
                Fed::More,
                Fed::Statement("select\n  2 as two\n;".into())
            ]
        );
        assert_eq!(feed_all(PG, &["", "   "]), [Fed::Nothing, Fed::Nothing]);
    }

    #[test]
    fn a_semicolon_inside_quotes_does_not_end_a_sql_statement() {
        assert_eq!(
            feed_all(PG, &["select 'a;", "b';"]),
            [Fed::More, Fed::Statement("select 'a;\nb';".into())]
        );
        let my = StatementRule::Sql(Dialect::Mysql);
        assert_eq!(
            feed_all(my, &["select \"it\\\"s;", "\";"]),
            [Fed::More, Fed::Statement("select \"it\\\"s;\n\";".into())]
        );
    }

    #[test]
    fn clearing_forgets_the_statement_being_typed() {
        let mut s = Statements::new(PG);
        assert_eq!(s.feed("select 1"), Fed::More);
        assert!(!s.is_empty());
        s.clear();
        assert!(s.is_empty());
        assert_eq!(s.feed("select 2;"), Fed::Statement("select 2;".into()));
    }

    #[test]
    fn the_end_of_input_sends_an_unfinished_statement_but_not_a_comment() {
        let mut s = Statements::new(PG);
        assert_eq!(s.feed("select 3"), Fed::More);
        assert_eq!(s.finish(), Some("select 3".into()));
        assert_eq!(s.feed("-- just a note"), Fed::More);
        assert_eq!(s.finish(), None);
        let mut l = Statements::new(StatementRule::Lines);
        assert_eq!(l.feed("for i in 1 2; do"), Fed::More);
        assert_eq!(l.finish(), Some("for i in 1 2; do".into()));
    }

    #[test]
    fn other_types_run_each_line_or_a_block_until_an_empty_line() {
        let lines = StatementRule::Lines;
        assert_eq!(
            feed_all(lines, &["echo hi", "", "uname -a  "]),
            [
                Fed::Statement("echo hi".into()),
                Fed::Nothing,
                Fed::Statement("uname -a".into())
            ]
        );
        assert_eq!(
            feed_all(lines, &["for i in 1 2; do", "  echo $i", "done", ""]),
            [
                Fed::More,
                Fed::More,
                Fed::More,
                Fed::Statement("for i in 1 2; do\n  echo $i\ndone".into())
            ]
        );
        // A block recalled from the history comes back whole.
        assert_eq!(
            feed_all(lines, &["if true; then\n  echo y\nfi"]),
            [Fed::Statement("if true; then\n  echo y\nfi".into())]
        );
    }

    #[test]
    fn block_openers_are_the_documented_ones() {
        for opens in [
            "def f(x):",
            "function f() {",
            "ls \\",
            "while true; do",
            "if [ -f x ]; then",
            "cat <<EOF",
            "ps aux |",
            "make &&",
            "[1, 2].each do |x|",
            "values = [",
        ] {
            assert!(opens_block(opens), "{opens:?} should open a block");
        }
        for single in [
            "echo hi",
            "print('a:b')",
            "echo to do it",
            "x = {}",
            "ls <<",
        ] {
            assert!(!opens_block(single), "{single:?} is one line");
        }
    }

    #[test]
    fn sql_types_end_statements_with_a_semicolon_and_others_by_lines() {
        assert_eq!(
            StatementRule::for_type(TargetType::Postgres),
            StatementRule::Sql(Dialect::Postgres)
        );
        assert_eq!(
            StatementRule::for_type(TargetType::MysqlCsv),
            StatementRule::Sql(Dialect::Mysql)
        );
        assert!(matches!(
            StatementRule::for_type(TargetType::SqlServer),
            StatementRule::Sql(_)
        ));
        assert_eq!(
            StatementRule::for_type(TargetType::Bash),
            StatementRule::Lines
        );
        assert_eq!(
            StatementRule::for_type(TargetType::Mongodb),
            StatementRule::Lines
        );
    }
}
