//! The results of a run: one [`Section`] per measurement, each a few [`Row`]s that put a
//! figure next to its baseline and its goal; printed as it goes, written at the end as
//! JSON (everything, including raw summaries) and markdown (the tables of BENCHMARKS.md).

use serde::Serialize;
use std::fmt::Write as _;

/// The machine the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub mem_total_mib: u64,
    pub kernel: String,
    /// `/proc/loadavg`'s three averages when the run started and ended.
    pub load_before: String,
    pub load_after: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_mib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kib| kib / 1024)
            .unwrap_or(0);
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            mem_total_mib,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            load_before: load_average(),
            load_after: String::new(),
        }
    }
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Which way a goal points.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub enum Goal {
    /// The figure must be at most this.
    AtMost(f64),
    /// The figure must be at least this.
    AtLeast(f64),
}

impl Goal {
    pub fn met(self, v: f64) -> bool {
        match self {
            Goal::AtMost(g) => v <= g,
            Goal::AtLeast(g) => v >= g,
        }
    }
    pub fn text(self, unit: &str) -> String {
        match self {
            Goal::AtMost(g) => format!("≤ {} {unit}", num(g)),
            Goal::AtLeast(g) => format!("≥ {} {unit}", num(g)),
        }
    }
}

/// One figure. `value` is `None` when it could not be measured (see the notes).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub metric: String,
    pub value: Option<f64>,
    pub unit: String,
    /// What the figure is compared with, and its value in the same unit.
    pub baseline: Option<(String, f64)>,
    pub goal: Option<Goal>,
    pub met: Option<bool>,
    /// The baseline is context, not a denominator (e.g. an added time next to the
    /// time it is added to): no ratio column.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_ratio: bool,
}

impl Row {
    pub fn new(metric: impl Into<String>, value: f64, unit: &str) -> Row {
        Row {
            metric: metric.into(),
            value: Some(value),
            unit: unit.into(),
            baseline: None,
            goal: None,
            met: None,
            no_ratio: false,
        }
    }

    pub fn no_ratio(mut self) -> Row {
        self.no_ratio = true;
        self
    }

    pub fn pending(metric: impl Into<String>, unit: &str) -> Row {
        Row {
            value: None,
            ..Row::new(metric, 0.0, unit)
        }
    }

    pub fn vs(mut self, what: impl Into<String>, baseline: f64) -> Row {
        self.baseline = Some((what.into(), baseline));
        self
    }

    pub fn goal(mut self, goal: Goal) -> Row {
        self.goal = Some(goal);
        self.met = self.value.map(|v| goal.met(v));
        self
    }

    /// value / baseline.
    pub fn ratio(&self) -> Option<f64> {
        if self.no_ratio {
            return None;
        }
        let v = self.value?;
        let (_, b) = self.baseline.as_ref()?;
        (*b != 0.0).then(|| v / b)
    }
}

/// One measurement's results.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub id: String,
    pub title: String,
    pub rows: Vec<Row>,
    /// Method, caveats, why a figure is pending.
    pub notes: Vec<String>,
    /// Raw numbers (summaries, counts) for the JSON file.
    pub details: serde_json::Value,
    /// Output of another tool, quoted as is (the redaction engine's table).
    pub text: Option<String>,
    pub seconds: f64,
}

impl Section {
    pub fn new(id: &str, title: &str) -> Section {
        Section {
            id: id.into(),
            title: title.into(),
            rows: Vec::new(),
            notes: Vec::new(),
            details: serde_json::Value::Object(Default::default()),
            text: None,
            seconds: 0.0,
        }
    }

    pub fn row(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn detail(&mut self, key: &str, value: impl Serialize) {
        if let serde_json::Value::Object(map) = &mut self.details {
            map.insert(
                key.into(),
                serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
            );
        }
    }

    /// The section as markdown: a table, then its notes.
    pub fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n", self.title);
        if let Some(text) = &self.text {
            let _ = writeln!(out, "```text\n{}\n```\n", text.trim_end());
        }
        if self.rows.is_empty() {
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
            out.push('\n');
            return out;
        }
        out.push_str("| figure | runops | baseline | ratio | goal | met |\n");
        out.push_str("|---|---:|---|---:|---|:---:|\n");
        for r in &self.rows {
            let value = r
                .value
                .map_or("pending".to_string(), |v| format!("{} {}", num(v), r.unit));
            let baseline = r.baseline.as_ref().map_or(String::new(), |(what, b)| {
                format!("{} {} ({what})", num(*b), r.unit)
            });
            let ratio = r.ratio().map_or(String::new(), |x| format!("{x:.2}×"));
            let goal = r.goal.map_or(String::new(), |g| g.text(&r.unit));
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            };
            let _ = writeln!(
                out,
                "| {} | {value} | {baseline} | {ratio} | {goal} | {met} |",
                r.metric
            );
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out.push('\n');
        out
    }
}

/// The id of the section holding issue 20's goals table.
pub const GOALS_ID: &str = "goals";

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub date: String,
    pub machine: Machine,
    pub runops_bin: String,
    pub runops_version: String,
    pub sections: Vec<Section>,
    pub seconds: f64,
}

impl Report {
    /// The goals table: the `goals` section (issue 20) when it ran, else every figure
    /// that has a goal, one line each.
    pub fn goals_markdown(&self) -> String {
        if let Some(g) = self.sections.iter().find(|s| s.id == GOALS_ID) {
            return g.markdown();
        }
        if !self
            .sections
            .iter()
            .any(|s| s.rows.iter().any(|r| r.goal.is_some()))
        {
            return "No goals in this run: issue 20's goals table is the `goals` measurement.\n"
                .into();
        }
        let mut out = String::from("| measurement | figure | runops | goal | met |\n");
        out.push_str("|---|---|---:|---|:---:|\n");
        for s in &self.sections {
            for r in s.rows.iter().filter(|r| r.goal.is_some()) {
                let value = r
                    .value
                    .map_or("pending".to_string(), |v| format!("{} {}", num(v), r.unit));
                let met = match r.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "pending",
                };
                let goal = r.goal.map_or(String::new(), |g| g.text(&r.unit));
                let _ = writeln!(
                    out,
                    "| {} | {} | {value} | {goal} | {met} |",
                    s.title, r.metric
                );
            }
        }
        out
    }

    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "## Run of {}\n\n- machine: {} cores ({}), {} MiB memory, Linux {}\n\
             - load average (1, 5, 15 min): {} at the start, {} at the end\n\
             - binary: `{}` ({}); the whole run took {:.0} s\n\n",
            self.date,
            m.nproc,
            m.cpu_model,
            m.mem_total_mib,
            m.kernel,
            m.load_before,
            m.load_after,
            self.runops_bin,
            self.runops_version,
            self.seconds
        );
        if self.sections.iter().any(|s| s.id == GOALS_ID) {
            out.push_str(&self.goals_markdown());
        } else {
            out.push_str("### Goals\n\n");
            out.push_str(&self.goals_markdown());
            out.push('\n');
        }
        for s in self.sections.iter().filter(|s| s.id != GOALS_ID) {
            out.push_str(&s.markdown());
        }
        out
    }
}

/// A number with as many decimals as its size deserves.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_are_checked_in_their_direction() {
        assert_eq!(
            Row::new("p50", 4.0, "ms").goal(Goal::AtMost(5.0)).met,
            Some(true)
        );
        assert_eq!(
            Row::new("rate", 250.0, "tasks/s")
                .goal(Goal::AtLeast(300.0))
                .met,
            Some(false)
        );
        assert_eq!(
            Row::pending("select 1", "ms").goal(Goal::AtMost(20.0)).met,
            None
        );
    }

    #[test]
    fn markdown_row_shows_baseline_and_ratio() {
        let mut s = Section::new("x", "Overhead");
        s.row(
            Row::new("median", 12.0, "ms")
                .vs("bash -c true", 3.0)
                .goal(Goal::AtMost(20.0)),
        );
        let md = s.markdown();
        assert!(
            md.contains("| median | 12.0 ms | 3.00 ms (bash -c true) | 4.00× | ≤ 20.0 ms | yes |"),
            "{md}"
        );
    }
}
