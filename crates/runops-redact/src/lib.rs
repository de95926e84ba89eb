//! Streaming redaction: removes a task's secret values (and, later, personal data)
//! from output that arrives in arbitrary chunks, before any byte leaves the agent.
//!
//! Build a [`Redactor`] once per task from a [`RedactConfig`] (it compiles the
//! patterns), then open one [`StreamRedactor`] per output stream with
//! [`Redactor::stream`], feed it chunks with [`StreamRedactor::push`] and end with
//! [`StreamRedactor::finish`]. A match split across two chunks is still caught: the
//! stream holds back only the tail that could still be the start of a match.
//!
//! This crate does no I/O.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// Values shorter than this are not redacted unless their key looks secret:
/// redacting every `1` or `on` would shred the output and protect nothing.
pub const MIN_SECRET_LEN: usize = 6;

/// Values of keys that look secret are redacted from this length on.
pub const MIN_SECRET_LEN_SECRET_KEY: usize = 3;

/// Parts of key names that mark a value as secret whatever its length.
const SECRET_KEY_MARKERS: &[&str] = &[
    "PASS",
    "PWD",
    "SECRET",
    "TOKEN",
    "KEY",
    "CREDENTIAL",
    "PRIVATE",
    "CERT",
    "URI",
    "DSN",
    "CONNECTION",
    "AUTH",
];

/// What to remove.
#[derive(Debug, Clone, Default)]
pub struct RedactConfig {
    /// `(key, value)` of every secret the task sees (after mapping).
    pub secrets: Vec<(String, String)>,
    /// Detect personal data too (`redact=all`). Secret values are always removed.
    pub personal_data: bool,
}

/// True when `key` names something secret (`MYSQL_PASS`, `API_TOKEN`...).
pub fn key_looks_secret(key: &str) -> bool {
    let up = key.to_ascii_uppercase();
    SECRET_KEY_MARKERS.iter().any(|m| up.contains(m))
}

/// The compiled patterns of one task. Cheap to share between streams.
#[derive(Debug, Clone)]
pub struct Redactor {
    matcher: Option<AhoCorasick>,
    /// Replacement text for each pattern, by pattern index.
    replacements: Vec<Vec<u8>>,
    /// Longest pattern, in bytes: how much a stream may have to hold back.
    longest: usize,
}

impl Redactor {
    pub fn new(config: &RedactConfig) -> Redactor {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut replacements = Vec::new();
        for (key, value) in &config.secrets {
            let min = if key_looks_secret(key) {
                MIN_SECRET_LEN_SECRET_KEY
            } else {
                MIN_SECRET_LEN
            };
            // Each line of a multi-line value too: output often splits them.
            let mut forms: Vec<&str> = vec![value.as_str()];
            if value.contains('\n') {
                forms.extend(value.lines().map(str::trim_end));
            }
            for form in forms {
                if form.chars().count() >= min && !patterns.iter().any(|p| p == form.as_bytes())
                {
                    patterns.push(form.as_bytes().to_vec());
                    replacements.push(format!("[REDACTED:{key}]").into_bytes());
                }
            }
        }
        let longest = patterns.iter().map(Vec::len).max().unwrap_or(0);
        let matcher = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&patterns)
                    .expect("secret patterns are plain literals and always compile"),
            )
        };
        Redactor {
            matcher,
            replacements,
            longest,
        }
    }

    /// Opens a stream that redacts chunk by chunk.
    pub fn stream(&self) -> StreamRedactor {
        StreamRedactor {
            redactor: self.clone(),
            pending: Vec::new(),
        }
    }

    /// Redacts a complete text at once (error messages, short outputs).
    pub fn redact(&self, input: &[u8]) -> Vec<u8> {
        let mut s = self.stream();
        let mut out = Vec::with_capacity(input.len());
        s.push(input, &mut out);
        s.finish(&mut out);
        out
    }

    /// [`Redactor::redact`] for text.
    pub fn redact_str(&self, input: &str) -> String {
        String::from_utf8_lossy(&self.redact(input.as_bytes())).into_owned()
    }
}

/// One output stream being redacted.
#[derive(Debug)]
pub struct StreamRedactor {
    redactor: Redactor,
    /// Input not yet emitted because it might be the start of a match.
    pending: Vec<u8>,
}

impl StreamRedactor {
    /// Adds `input` and appends to `out` everything that can no longer change.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.pending.extend_from_slice(input);
        self.drain(out, false);
    }

    /// Ends the stream: appends the held-back tail to `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.drain(out, true);
    }

    fn drain(&mut self, out: &mut Vec<u8>, at_end: bool) {
        let Some(matcher) = &self.redactor.matcher else {
            out.append(&mut self.pending);
            return;
        };
        let len = self.pending.len();
        let hold = self.redactor.longest.saturating_sub(1);
        // Bytes before `safe` can be emitted: no match that starts there can still grow.
        let safe = if at_end { len } else { len.saturating_sub(hold) };
        let mut emitted = 0;
        for m in matcher.find_iter(&self.pending) {
            if m.start() >= safe {
                break;
            }
            // A match may only be committed when its longest possible form is visible;
            // otherwise hold back from its start and decide with more input.
            if !at_end && m.start() + self.redactor.longest > len {
                self.consume(out, emitted, m.start());
                return;
            }
            out.extend_from_slice(&self.pending[emitted..m.start()]);
            out.extend_from_slice(&self.redactor.replacements[m.pattern().as_usize()]);
            emitted = m.end();
        }
        let upto = safe.max(emitted);
        self.consume(out, emitted, upto);
    }

    /// Emits `pending[from..to]` and drops `pending[..to]`.
    fn consume(&mut self, out: &mut Vec<u8>, from: usize, to: usize) {
        out.extend_from_slice(&self.pending[from..to]);
        self.pending.drain(..to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(secrets: &[(&str, &str)]) -> Redactor {
        Redactor::new(&RedactConfig {
            secrets: secrets
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            personal_data: false,
        })
    }

    #[test]
    fn secret_value_is_replaced_with_its_key_name() {
        let r = redactor(&[("MYSQL_PASS", "GtK23d<ejkLy0ST2")]);
        assert_eq!(
            r.redact_str("pass=GtK23d<ejkLy0ST2!"),
            "pass=[REDACTED:MYSQL_PASS]!"
        );
    }

    #[test]
    fn short_values_of_plain_keys_stay() {
        let r = redactor(&[("MYSQL_DB", "demo"), ("DB_PASS", "abc")]);
        assert_eq!(r.redact_str("demo abc"), "demo [REDACTED:DB_PASS]");
    }

    #[test]
    fn match_split_across_every_chunk_boundary_is_caught() {
        let r = redactor(&[("TOKEN", "s3cr3t-value"), ("OTHER", "s3cr3t-value-longer")]);
        let text = b"a s3cr3t-value b s3cr3t-value-longer c s3cr3t-valu";
        let whole = r.redact(text);
        for cut in 0..text.len() {
            let mut s = r.stream();
            let mut out = Vec::new();
            s.push(&text[..cut], &mut out);
            s.push(&text[cut..], &mut out);
            s.finish(&mut out);
            assert_eq!(out, whole, "cut at {cut}");
        }
        assert_eq!(
            String::from_utf8(whole).unwrap(),
            "a [REDACTED:TOKEN] b [REDACTED:OTHER] c s3cr3t-valu"
        );
    }

    #[test]
    fn each_line_of_a_multiline_secret_is_redacted() {
        let r = redactor(&[("PRIVATE_KEY", "line-one-xx\nline-two-yy")]);
        assert_eq!(
            r.redact_str("x line-two-yy y"),
            "x [REDACTED:PRIVATE_KEY] y"
        );
    }
}
