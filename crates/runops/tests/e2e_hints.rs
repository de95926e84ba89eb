//! Every `runops ...` command quoted in the sources (server error hints, CLI errors and
//! suggestions, help texts) exists: each is run with `--help` against the real binary,
//! and every flag it names appears in that help.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn is_word(t: &str) -> bool {
    let mut c = t.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase())
        && c.all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == '-')
}

/// (subcommand words, flags) of each command quoted as `` `runops ...` ``; `a|b`
/// alternatives become one command each.
fn quoted_commands() -> BTreeSet<(Vec<String>, Vec<String>)> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for krate in std::fs::read_dir(crates).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    let mut found = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for piece in text.split("`runops ").skip(1) {
            let Some(cmd) = piece.split('`').next() else {
                continue;
            };
            let tokens: Vec<&str> = cmd.split_whitespace().collect();
            let words: Vec<&str> = tokens
                .iter()
                .copied()
                .take_while(|t| t.split('|').all(is_word))
                .collect();
            let flags: Vec<String> = tokens
                .iter()
                .filter(|t| t.starts_with("--") && !t.contains('*'))
                .map(|t| t.split('=').next().unwrap().to_string())
                .filter(|t| t.len() > 2)
                .collect();
            // Expand `a|b|c` in any position.
            let mut variants: Vec<Vec<String>> = vec![vec![]];
            for w in &words {
                variants = variants
                    .into_iter()
                    .flat_map(|v| {
                        w.split('|').map(move |alt| {
                            let mut v = v.clone();
                            v.push(alt.to_string());
                            v
                        })
                    })
                    .collect();
            }
            let several = words.iter().any(|w| w.contains('|'));
            for v in variants {
                // Flags belong to a single command, not to a list of alternatives.
                let flags = if several { vec![] } else { flags.clone() };
                found.insert((v, flags));
            }
        }
    }
    found
}

#[test]
fn every_quoted_runops_command_exists_with_its_flags() {
    let sb = Sandbox::new();
    let commands = quoted_commands();
    assert!(commands.len() > 20, "too few commands found: {commands:?}");
    let mut bad = Vec::new();
    for (words, flags) in &commands {
        let out = base_command(&sb.home())
            .args(words)
            .arg("--help")
            .output()
            .unwrap();
        let help = stdout(&out);
        if !out.status.success() {
            bad.push(format!(
                "`runops {}`: {}",
                words.join(" "),
                stderr(&out).trim()
            ));
            continue;
        }
        for f in flags {
            if !help.contains(f.as_str()) {
                bad.push(format!("`runops {}` has no flag {f}", words.join(" ")));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "hints name commands that do not exist:\n{}",
        bad.join("\n")
    );
}
