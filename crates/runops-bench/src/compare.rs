//! `--compare OLD`: issue 20's figures for two `runops` binaries in the same run. Each
//! figure runs alternately on the old and the new binary (old, new, new, old, old, …:
//! each round swaps who goes first), so drift in the machine's load hits both sides;
//! the table gives each side's median over the rounds, its range, and new / old.

use crate::figures::{self, FigSizes, Figure};
use crate::report::{Goal, num};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

/// One figure's values on both sides, one per round.
#[derive(Debug, Clone, Serialize)]
pub struct Compared {
    pub figure: String,
    pub metric: String,
    pub unit: String,
    pub goal: Option<Goal>,
    pub old: Vec<f64>,
    pub new: Vec<f64>,
    pub old_median: Option<f64>,
    pub new_median: Option<f64>,
    /// new median / old median.
    pub ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub old_bin: String,
    pub old_version: String,
    pub new_bin: String,
    pub new_version: String,
    pub rounds: usize,
    pub rows: Vec<Compared>,
    /// Figures that failed on a side in a round, with why.
    pub failures: Vec<String>,
}

fn median(v: &[f64]) -> Option<f64> {
    crate::stats::Summary::of(v).map(|s| s.p50)
}

fn range(v: &[f64]) -> String {
    match crate::stats::Summary::of(v) {
        Some(s) if s.n > 1 => format!(" ({}–{})", num(s.min), num(s.max)),
        _ => String::new(),
    }
}

/// Runs `figures` `rounds` times on each binary, alternating.
pub async fn run(
    old: (&Path, String),
    new: (&Path, String),
    figures: &[Figure],
    z: &FigSizes,
    rounds: usize,
) -> Comparison {
    let mut rows: Vec<Compared> = Vec::new();
    let mut failures = Vec::new();
    for &f in figures {
        for round in 0..rounds {
            let order = if round % 2 == 0 {
                [(false, old.0), (true, new.0)]
            } else {
                [(true, new.0), (false, old.0)]
            };
            for (is_new, bin) in order {
                let side = if is_new { "new" } else { "old" };
                let t0 = Instant::now();
                eprintln!(
                    "runops-bench: compare: {} round {}/{rounds}, {side}…",
                    f.name(),
                    round + 1
                );
                match figures::measure(f, bin, z).await {
                    Ok(sec) => {
                        for r in sec.rows {
                            let Some(v) = r.value else { continue };
                            let at = match rows
                                .iter()
                                .position(|c| c.figure == f.name() && c.metric == r.metric)
                            {
                                Some(i) => i,
                                None => {
                                    rows.push(Compared {
                                        figure: f.name(),
                                        metric: r.metric.clone(),
                                        unit: r.unit.clone(),
                                        goal: r.goal,
                                        old: Vec::new(),
                                        new: Vec::new(),
                                        old_median: None,
                                        new_median: None,
                                        ratio: None,
                                    });
                                    rows.len() - 1
                                }
                            };
                            if is_new {
                                rows[at].new.push(v);
                            } else {
                                rows[at].old.push(v);
                            }
                        }
                        eprintln!(
                            "runops-bench: compare: {} {side} took {:.0} s",
                            f.name(),
                            t0.elapsed().as_secs_f64()
                        );
                    }
                    Err(e) => {
                        let msg = format!("{} round {} {side}: {e:#}", f.name(), round + 1);
                        eprintln!("runops-bench: compare: failed: {msg}");
                        failures.push(msg);
                    }
                }
            }
        }
    }
    for r in &mut rows {
        r.old_median = median(&r.old);
        r.new_median = median(&r.new);
        r.ratio = match (r.old_median, r.new_median) {
            (Some(o), Some(n)) if o != 0.0 => Some(n / o),
            _ => None,
        };
    }
    Comparison {
        old_bin: old.0.display().to_string(),
        old_version: old.1,
        new_bin: new.0.display().to_string(),
        new_version: new.1,
        rounds,
        rows,
        failures,
    }
}

impl Comparison {
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "### Compare: old `{}` ({}) vs new `{}` ({}), {} round(s) each, alternating\n\n",
            self.old_bin, self.old_version, self.new_bin, self.new_version, self.rounds
        );
        out.push_str("| figure | old | new | new / old | goal | new meets |\n");
        out.push_str("|---|---:|---:|---:|---|:---:|\n");
        for r in &self.rows {
            let cell = |m: Option<f64>, v: &[f64]| {
                m.map_or("failed".to_string(), |m| {
                    format!("{} {}{}", num(m), r.unit, range(v))
                })
            };
            let ratio = r.ratio.map_or(String::new(), |x| format!("{x:.2}×"));
            let goal = r.goal.map_or(String::new(), |g| g.text(&r.unit));
            let met = match (r.goal, r.new_median) {
                (Some(g), Some(v)) if g.met(v) => "yes",
                (Some(_), Some(_)) => "**no**",
                _ => "",
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {ratio} | {goal} | {met} |",
                r.metric,
                cell(r.old_median, &r.old),
                cell(r.new_median, &r.new)
            );
        }
        out.push_str(
            "\nMedians over the rounds (range in brackets); each round runs the figure on both binaries, the first \
             binary alternating between rounds; every run starts a fresh stack (server, agent and CLI all from that \
             binary).\n",
        );
        for f in &self.failures {
            let _ = writeln!(out, "- failed: {f}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_medians_ranges_and_ratio() {
        let c = Comparison {
            old_bin: "old".into(),
            old_version: "runops 1".into(),
            new_bin: "new".into(),
            new_version: "runops 2".into(),
            rounds: 3,
            rows: vec![Compared {
                figure: "dispatch".into(),
                metric: "p50".into(),
                unit: "ms".into(),
                goal: Some(Goal::AtMost(2.0)),
                old: vec![4.0, 5.0, 4.5],
                new: vec![2.0, 1.0, 1.5],
                old_median: Some(4.5),
                new_median: Some(1.5),
                ratio: Some(1.5 / 4.5),
            }],
            failures: vec!["logs round 1 old: boom".into()],
        };
        let md = c.markdown();
        assert!(
            md.contains(
                "| p50 | 4.50 ms (4.00–5.00) | 1.50 ms (1.00–2.00) | 0.33× | ≤ 2.00 ms | yes |"
            ),
            "{md}"
        );
        assert!(md.contains("- failed: logs round 1 old: boom"), "{md}");
    }
}
