//! The Prometheus text exposition format (version 0.0.4) that the server's and the
//! agent's `/metrics` speak, written by hand: a fixed-bucket [`Histogram`] and an
//! [`Exposition`] writer that emits `# HELP`/`# TYPE` once per family, escapes label
//! values, and writes histograms as cumulative `_bucket{le=...}`, `_sum` and `_count`.
//! Pure formatting, no I/O; the components keep their counters and render on scrape.

use std::fmt::Write;

/// `Content-Type` of a `/metrics` answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets (seconds) for HTTP request durations: 5 ms to a minute; long polls and
/// followed logs land in the top buckets by design.
pub const HTTP_SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Buckets (seconds) for task durations and dispatch latency: 10 ms to a day, since
/// tasks range from `echo` to hour-long migrations and may wait long for an agent.
pub const TASK_SECONDS_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0,
    86400.0,
];

/// The kind of a metric family, as `# TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// Observations counted into fixed upper bounds (seconds, bytes...), plus their sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); one more than `bounds` for `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// `bounds` must be increasing (the constants above are).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Counts one value; NaN is ignored (it would poison the sum forever).
    pub fn observe(&mut self, value: f64) {
        if value.is_nan() {
            return;
        }
        let i = self.bounds.partition_point(|b| *b < value);
        self.counts[i] += 1;
        self.sum += value;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }
}

/// Builds one `/metrics` answer.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. Write each family's samples
    /// right after its header, and each family once.
    pub fn family(&mut self, name: &str, help: &str, kind: MetricType) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample of a counter or gauge.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        self.out.push(' ');
        self.out.push_str(&format_value(value));
        self.out.push('\n');
    }

    /// The series of one histogram: cumulative buckets ending with `+Inf`, sum, count.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (i, n) in h.counts.iter().enumerate() {
            cumulative += n;
            let le = h
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| format_value(*b));
            self.out.push_str(&bucket);
            write_labels(&mut self.out, labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// Go's `strconv.ParseFloat` reads every form this writes.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_inf_equals_count() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.1);
        h.observe(0.5);
        h.observe(7.0);
        h.observe(f64::NAN);
        let mut e = Exposition::new();
        e.family("x_seconds", "Test.", MetricType::Histogram);
        e.histogram("x_seconds", &[("type", "bash")], &h);
        assert_eq!(
            e.finish(),
            "# HELP x_seconds Test.\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{type=\"bash\",le=\"0.1\"} 2\n\
             x_seconds_bucket{type=\"bash\",le=\"1\"} 3\n\
             x_seconds_bucket{type=\"bash\",le=\"+Inf\"} 4\n\
             x_seconds_sum{type=\"bash\"} 7.65\n\
             x_seconds_count{type=\"bash\"} 4\n"
        );
    }

    #[test]
    fn label_values_are_escaped_and_unlabelled_samples_have_no_braces() {
        let mut e = Exposition::new();
        e.sample("a", &[], 3.0);
        e.sample("b", &[("k", "q\"\\\nz")], 0.5);
        assert_eq!(e.finish(), "a 3\nb{k=\"q\\\"\\\\\\nz\"} 0.5\n");
    }
}
