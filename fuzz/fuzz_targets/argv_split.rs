//! The argv splitter: never panics on any text; words quoted the way `sh` reads them
//! (single quotes, double quotes with escapes, backslashes) split back into themselves.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use runops_agent::runners::argv::{split_commands, split_words};

#[derive(Debug, Arbitrary)]
struct Input {
    text: String,
    words: Vec<String>,
    style: u8,
}

fn single(w: &str) -> String {
    format!("'{}'", w.replace('\'', "'\\''"))
}

fn double(w: &str) -> String {
    let mut out = String::from("\"");
    for c in w.chars() {
        if matches!(c, '$' | '`' | '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn backslashed(w: &str) -> String {
    if w.is_empty() {
        return "''".into();
    }
    let mut out = String::new();
    for c in w.chars() {
        if c == '\n' {
            // Backslash-newline joins lines: a newline is quoted instead.
            out.push_str("'\n'");
        } else {
            out.push('\\');
            out.push(c);
        }
    }
    out
}

fuzz_target!(|input: Input| {
    if let Ok(commands) = split_commands(&input.text) {
        assert!(commands.iter().all(|c| !c.is_empty()), "an empty command");
    }
    let _ = split_words(&input.text);
    let quote = match input.style % 3 {
        0 => single,
        1 => double,
        _ => backslashed,
    };
    let line: Vec<String> = input.words.iter().map(|w| quote(w)).collect();
    let line = line.join(" ");
    let got = split_words(&line).unwrap_or_else(|e| panic!("{line:?} refused: {e}"));
    assert_eq!(got, input.words, "for {line:?}");
});
