//! The SQL script splitter (psql and mysql dialects) on any text: never panics; each
//! statement is a trimmed, non-empty slice of the script, in order, not overlapping,
//! holding more than blanks and comments, with the right 1-based line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runops_agent::runners::sql_script::{
    Dialect, only_blank_or_comments, split_statements, top_level_words,
};

fuzz_target!(|script: &str| {
    let base = script.as_ptr() as usize;
    for dialect in [Dialect::Postgres, Dialect::Mysql] {
        let _ = only_blank_or_comments(script, dialect);
        let mut end_of_previous = 0;
        for st in split_statements(script, dialect) {
            let start = st.text.as_ptr() as usize - base;
            assert!(
                start + st.text.len() <= script.len(),
                "not a slice of the script"
            );
            assert!(
                start >= end_of_previous,
                "statements overlap or go backwards"
            );
            assert!(!st.text.is_empty());
            let blank = |c: char| c.is_ascii_whitespace() || c == '\x0b';
            assert_eq!(st.text, st.text.trim_matches(blank), "not trimmed");
            assert!(
                !only_blank_or_comments(st.text, dialect),
                "an empty statement"
            );
            let line = 1 + script.as_bytes()[..start]
                .iter()
                .filter(|&&c| c == b'\n')
                .count();
            assert_eq!(st.line, line, "wrong line for {:?}", st.text);
            end_of_previous = start + st.text.len();
            let _ = top_level_words(st.text, 3);
        }
    }
});
