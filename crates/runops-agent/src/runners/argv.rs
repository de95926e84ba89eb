//! Splitting text into argument vectors the way a POSIX shell splits words — without a
//! shell. Quotes and backslashes group and escape as in `sh`; nothing else has a
//! meaning: `$(...)`, backticks, `$VAR`, `;`, `|`, `&&`, `>` and globs stay literal
//! characters of the words they are in. The original agent split on spaces or fed user
//! text to bash (shell injection); integrations hand these vectors to `execve` directly.
//!
//! Rules (those of `sh` for words):
//! - blanks (space, tab, CR) separate words; a newline ends a command
//!   ([`split_commands`]) or is a blank ([`split_words`]);
//! - `'...'` keeps everything literally; `"..."` too, except that a backslash escapes
//!   `$`, `` ` ``, `"`, `\` and a newline (removed);
//! - outside quotes a backslash makes the next character literal; backslash-newline
//!   joins lines;
//! - `#` at the start of a word begins a comment up to the end of the line;
//! - `''` and `""` are empty arguments.

use std::fmt;

/// Text that cannot be split (an unterminated quote, a lone trailing backslash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitError {
    pub message: String,
}

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SplitError {}

/// Splits `text` into commands (one per line, blank lines and comments dropped), each
/// an argument vector.
pub fn split_commands(text: &str) -> Result<Vec<Vec<String>>, SplitError> {
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    // `Some` once a word has started, even if it is still empty (`''`).
    let mut word: Option<String> = None;
    let mut line = 1usize;
    let mut chars = text.chars().peekable();

    fn end_word(word: &mut Option<String>, words: &mut Vec<String>) {
        if let Some(w) = word.take() {
            words.push(w);
        }
    }

    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                end_word(&mut word, &mut words);
                if !words.is_empty() {
                    commands.push(std::mem::take(&mut words));
                }
                line += 1;
            }
            ' ' | '\t' | '\r' => end_word(&mut word, &mut words),
            '#' if word.is_none() => {
                while chars.peek().is_some_and(|c| *c != '\n') {
                    chars.next();
                }
            }
            '\\' => match chars.next() {
                Some('\n') => line += 1,
                Some(next) => word.get_or_insert_with(String::new).push(next),
                None => {
                    return Err(SplitError {
                        message: format!(
                            "line {line} ends the text with a lone backslash; remove it or quote it ('\\\\')"
                        ),
                    });
                }
            },
            '\'' => {
                let opened = line;
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => {
                            if ch == '\n' {
                                line += 1;
                            }
                            w.push(ch);
                        }
                        None => return Err(unterminated("single", opened)),
                    }
                }
            }
            '"' => {
                let opened = line;
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.peek().copied() {
                            Some(esc @ ('$' | '`' | '"' | '\\')) => {
                                chars.next();
                                w.push(esc);
                            }
                            Some('\n') => {
                                chars.next();
                                line += 1;
                            }
                            _ => w.push('\\'),
                        },
                        Some(ch) => {
                            if ch == '\n' {
                                line += 1;
                            }
                            w.push(ch);
                        }
                        None => return Err(unterminated("double", opened)),
                    }
                }
            }
            other => word.get_or_insert_with(String::new).push(other),
        }
    }
    end_word(&mut word, &mut words);
    if !words.is_empty() {
        commands.push(words);
    }
    Ok(commands)
}

/// Splits `text` into one argument vector; newlines separate words like blanks do.
pub fn split_words(text: &str) -> Result<Vec<String>, SplitError> {
    Ok(split_commands(text)?.into_iter().flatten().collect())
}

fn unterminated(kind: &str, line: usize) -> SplitError {
    SplitError {
        message: format!(
            "the {kind} quote opened on line {line} is never closed; close it, or escape it with a backslash"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        split_words(s).unwrap()
    }

    #[test]
    fn blanks_separate_words_and_quotes_group_them() {
        assert_eq!(
            words("  get   pods\t-n  prod "),
            ["get", "pods", "-n", "prod"]
        );
        assert_eq!(
            words(r#"kv put secret/x note="two words" other='it''s'"#),
            ["kv", "put", "secret/x", "note=two words", "other=its"]
        );
        assert_eq!(words(r#"a"b"'c'd"#), ["abcd"]);
    }

    #[test]
    fn empty_quotes_are_empty_arguments() {
        assert_eq!(words(r#"a '' "" b"#), ["a", "", "", "b"]);
        assert!(words("   \n\t ").is_empty());
    }

    #[test]
    fn shell_metacharacters_stay_literal() {
        assert_eq!(
            words("get pods; rm -rf / && echo $(id) `whoami` $HOME > /tmp/x | cat *"),
            [
                "get", "pods;", "rm", "-rf", "/", "&&", "echo", "$(id)", "`whoami`", "$HOME", ">",
                "/tmp/x", "|", "cat", "*"
            ]
        );
    }

    #[test]
    fn backslashes_escape_like_sh() {
        assert_eq!(words(r"a\ b \'c\' \\"), ["a b", "'c'", "\\"]);
        // In double quotes only $ ` " \ are escaped; other backslashes stay.
        assert_eq!(words(r#""\$x \` \" \\ \n""#), ["$x ` \" \\ \\n"]);
        // Single quotes keep backslashes.
        assert_eq!(words(r"'a\nb\'"), ["a\\nb\\"]);
    }

    #[test]
    fn newlines_end_commands_unless_quoted_or_escaped() {
        let cmds =
            split_commands("get pods\n\n  # a comment\nget svc -n 'x\ny' \\\n  -o wide\n").unwrap();
        assert_eq!(
            cmds,
            [
                vec!["get", "pods"],
                vec!["get", "svc", "-n", "x\ny", "-o", "wide"]
            ]
        );
    }

    #[test]
    fn a_hash_inside_a_word_is_not_a_comment() {
        assert_eq!(
            words("note=#1 a#b # gone\nnext"),
            ["note=#1", "a#b", "next"]
        );
    }

    #[test]
    fn unterminated_quotes_and_trailing_backslash_are_errors_naming_the_line() {
        let e = split_words("ok\nkv put 'oops").unwrap_err();
        assert!(e.message.contains("single quote opened on line 2"), "{e}");
        let e = split_words("\"never").unwrap_err();
        assert!(e.message.contains("double quote opened on line 1"), "{e}");
        let e = split_words("a \\").unwrap_err();
        assert!(e.message.contains("lone backslash"), "{e}");
    }

    #[test]
    fn non_ascii_text_survives() {
        assert_eq!(
            words("echo 'héllo wörld' 日本"),
            ["echo", "héllo wörld", "日本"]
        );
    }
}
