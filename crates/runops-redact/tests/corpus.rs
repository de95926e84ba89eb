//! Quality on committed corpora, with personal-data detection on:
//! - `corpus/clean/*.txt`: realistic database and log output with no personal data;
//!   nothing may be redacted.
//! - `corpus/planted/*.txt` with `corpus/planted/expected.tsv` (`file TAB INFO_TYPE TAB
//!   text`): every planted finding must be found with its type and must be gone from
//!   the redacted output.
//!
//! `cargo test -p runops-redact --test corpus -- --nocapture` prints precision and
//! recall per info type (the table in `docs/redaction.md`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use runops_redact::{Finding, InfoType, RedactConfig, Redactor};

fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name)
}

fn text_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .expect("corpus directory exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .map(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            let text = std::fs::read_to_string(&p).expect("corpus file is UTF-8");
            (name.unwrap_or_default(), text)
        })
        .collect();
    files.sort();
    files
}

fn all_types() -> Redactor {
    Redactor::new(&RedactConfig {
        personal_data: true,
        ..Default::default()
    })
}

struct Expected {
    file: String,
    info_type: InfoType,
    text: String,
}

fn expectations() -> Vec<Expected> {
    let tsv = std::fs::read_to_string(corpus_dir("planted").join("expected.tsv"))
        .expect("expected.tsv exists");
    tsv.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut cols = l.splitn(3, '\t');
            let (file, t, text) = (cols.next(), cols.next(), cols.next());
            let (Some(file), Some(t), Some(text)) = (file, t, text) else {
                panic!("expected.tsv line needs 3 tab-separated columns: {l:?}");
            };
            Expected {
                file: file.to_string(),
                info_type: t.parse().unwrap_or_else(|e| panic!("{e}")),
                text: text.to_string(),
            }
        })
        .collect()
}

#[derive(Default)]
struct Score {
    true_positives: usize,
    false_positives: usize,
    false_negatives: usize,
}

fn describe(text: &str, f: &Finding) -> String {
    format!("{} {:?}", f.info_type, &text[f.start..f.end])
}

#[test]
fn clean_corpus_is_left_untouched() {
    let r = all_types();
    let files = text_files(&corpus_dir("clean"));
    assert!(files.len() >= 3, "the clean corpus has files");
    let mut false_positives = Vec::new();
    for (name, text) in &files {
        for f in r.find_personal_data(text.as_bytes()) {
            false_positives.push(format!("{name}: {}", describe(text, &f)));
        }
        if false_positives.is_empty() {
            assert_eq!(&r.redact_str(text), text, "{name} changed");
        }
    }
    assert!(
        false_positives.is_empty(),
        "findings in clean output:\n{}",
        false_positives.join("\n")
    );
}

#[test]
fn planted_personal_data_is_all_found_and_removed() {
    let r = all_types();
    let expected = expectations();
    let mut scores: BTreeMap<InfoType, Score> = InfoType::ALL
        .iter()
        .map(|t| (*t, Score::default()))
        .collect();
    let mut problems = Vec::new();
    let mut found = vec![false; expected.len()];

    for (name, text) in text_files(&corpus_dir("planted")) {
        for f in r.find_personal_data(text.as_bytes()) {
            let got = &text[f.start..f.end];
            let matching = expected.iter().enumerate().find(|(_, e)| {
                e.file == name && e.info_type == f.info_type && got.contains(&e.text)
            });
            match matching {
                Some((i, _)) => {
                    found[i] = true;
                    if let Some(s) = scores.get_mut(&f.info_type) {
                        s.true_positives += 1;
                    }
                }
                None => {
                    if let Some(s) = scores.get_mut(&f.info_type) {
                        s.false_positives += 1;
                    }
                    problems.push(format!("unexpected in {name}: {}", describe(&text, &f)));
                }
            }
        }
        let redacted = r.redact_str(&text);
        for e in expected.iter().filter(|e| e.file == name) {
            if redacted.contains(&e.text) {
                problems.push(format!(
                    "{name}: {} {:?} survived redaction",
                    e.info_type, e.text
                ));
            }
        }
    }
    for (e, hit) in expected.iter().zip(&found) {
        if !hit {
            if let Some(s) = scores.get_mut(&e.info_type) {
                s.false_negatives += 1;
            }
            problems.push(format!(
                "missed in {}: {} {:?}",
                e.file, e.info_type, e.text
            ));
        }
    }

    println!("\n| info type | planted | found | false positives | precision | recall |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (t, s) in &scores {
        let planted = s.true_positives + s.false_negatives;
        let reported = s.true_positives + s.false_positives;
        let ratio = |num: usize, den: usize| {
            if den == 0 {
                "n/a".to_string()
            } else {
                format!("{:.2}", num as f64 / den as f64)
            }
        };
        println!(
            "| {t} | {planted} | {} | {} | {} | {} |",
            s.true_positives,
            s.false_positives,
            ratio(s.true_positives, reported),
            ratio(s.true_positives, planted)
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        InfoType::ALL.iter().all(|t| scores[t].true_positives > 0),
        "every type is planted"
    );
}
