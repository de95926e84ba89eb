//! Precision and recall on the generated corpus (`tests/corpus/generated`, written by
//! `scripts/redact/gen_corpus.py` with a fixed seed): phone numbers of the 30 default
//! regions in national, international and E.164 formats and Faker's layouts, SSNs keyed
//! and separated, e-mails, cards, IBANs and IPs, among lines of lookalikes (versions,
//! tracking numbers, timestamps, durations, byte counts, ids).
//!
//! A finding counts as correct when it covers a planted value of its type on its line
//! (so the value is gone from the output); every other finding is a false positive.
//! `scripts/redact/compare_presidio.py` scores Presidio the same way.
//!
//! `cargo test -p runops-redact --test generated_corpus -- --nocapture` prints the
//! tables of `docs/redaction.md`.

use std::collections::BTreeMap;
use std::path::Path;

use runops_redact::{InfoType, RedactConfig, Redactor};

struct Planted {
    line: usize,
    region: String,
    info_type: InfoType,
    value: String,
}

#[derive(Default, Clone, Copy)]
struct Score {
    planted: usize,
    found: usize,
    false_positives: usize,
}

impl Score {
    fn precision(&self) -> f64 {
        let reported = self.found + self.false_positives;
        if reported == 0 {
            1.0
        } else {
            self.found as f64 / reported as f64
        }
    }

    fn recall(&self) -> f64 {
        if self.planted == 0 {
            1.0
        } else {
            self.found as f64 / self.planted as f64
        }
    }
}

fn read(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus/generated")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn planted() -> Vec<Planted> {
    read("expected.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.splitn(4, '\t').collect();
            assert_eq!(cols.len(), 4, "expected.tsv line: {l:?}");
            Planted {
                line: cols[0].parse().expect("line number"),
                region: cols[1].to_string(),
                info_type: cols[2].parse().unwrap_or_else(|e| panic!("{e}")),
                value: cols[3].to_string(),
            }
        })
        .collect()
}

#[test]
fn generated_corpus_meets_the_precision_and_recall_goals() {
    let text = read("corpus.txt");
    let planted = planted();
    let r = Redactor::new(&RedactConfig {
        personal_data: true,
        ..Default::default()
    });
    // Byte offset of each line start (lines numbered from 1).
    let mut line_starts = vec![0];
    line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
    let line_of = |at: usize| line_starts.partition_point(|s| *s <= at);

    let mut by_line: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (k, p) in planted.iter().enumerate() {
        by_line.entry(p.line).or_default().push(k);
    }
    let mut found = vec![false; planted.len()];
    let mut by_type: BTreeMap<InfoType, Score> = BTreeMap::new();
    let mut by_region: BTreeMap<String, Score> = BTreeMap::new();
    let mut false_positives = Vec::new();
    let findings = r.find_personal_data(text.as_bytes());
    for f in &findings {
        let line = line_of(f.start);
        let got = &text[f.start..f.end];
        let line_start = line_starts[line - 1];
        let hit = by_line.get(&line).and_then(|ks| {
            ks.iter().copied().find(|&k| {
                let p = &planted[k];
                if p.info_type != f.info_type {
                    return false;
                }
                // The value's place on its line must lie inside the finding.
                let line_text = &text[line_start..];
                line_text.match_indices(p.value.as_str()).any(|(at, _)| {
                    let (s, e) = (line_start + at, line_start + at + p.value.len());
                    f.start <= s && e <= f.end
                })
            })
        });
        match hit {
            Some(k) => {
                if !found[k] {
                    found[k] = true;
                    by_type.entry(f.info_type).or_default().found += 1;
                    if f.info_type == InfoType::PhoneNumber {
                        by_region
                            .entry(planted[k].region.clone())
                            .or_default()
                            .found += 1;
                    }
                }
            }
            None => {
                by_type.entry(f.info_type).or_default().false_positives += 1;
                false_positives.push(format!("line {line}: {} {got:?}", f.info_type));
            }
        }
    }
    let mut missed = Vec::new();
    for (k, p) in planted.iter().enumerate() {
        by_type.entry(p.info_type).or_default().planted += 1;
        if p.info_type == InfoType::PhoneNumber {
            by_region.entry(p.region.clone()).or_default().planted += 1;
        }
        if !found[k] {
            missed.push(format!(
                "line {}: {} {} {:?}",
                p.line, p.region, p.info_type, p.value
            ));
        }
    }
    println!("\n| info type | planted | found | false positives | precision | recall |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (t, s) in &by_type {
        println!(
            "| {t} | {} | {} | {} | {:.2} % | {:.2} % |",
            s.planted,
            s.found,
            s.false_positives,
            100.0 * s.precision(),
            100.0 * s.recall()
        );
    }
    println!("\n| region | planted phones | found | recall |");
    println!("|---|---:|---:|---:|");
    for (region, s) in &by_region {
        println!(
            "| {region} | {} | {} | {:.1} % |",
            s.planted,
            s.found,
            100.0 * s.recall()
        );
    }
    println!("\nfalse positives ({}):", false_positives.len());
    for fp in &false_positives {
        println!("  {fp}");
    }
    println!("missed ({}):", missed.len());
    for m in &missed {
        println!("  {m}");
    }

    let goal = |t: InfoType, precision: f64, recall: f64| {
        let s = by_type.get(&t).copied().unwrap_or_default();
        assert!(s.planted > 0, "{t} is planted");
        assert!(
            s.precision() >= precision && s.recall() >= recall,
            "{t}: precision {:.4} (goal {precision}), recall {:.4} (goal {recall})",
            s.precision(),
            s.recall()
        );
    };
    goal(InfoType::PhoneNumber, 0.995, 0.99);
    goal(InfoType::UsSocialSecurityNumber, 0.995, 0.99);
    for t in [
        InfoType::EmailAddress,
        InfoType::CreditCardNumber,
        InfoType::IbanCode,
        InfoType::IpAddress,
    ] {
        goal(t, 1.0, 1.0);
    }
    for (region, s) in &by_region {
        assert!(
            s.recall() >= 0.95,
            "{region}: phone recall {:.3}",
            s.recall()
        );
    }
}
