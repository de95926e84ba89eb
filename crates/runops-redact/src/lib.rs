//! Streaming redaction: removes a task's secret values and personal data from output
//! that arrives in arbitrary chunks, before any byte leaves the agent. No I/O.
//!
//! Build a [`Redactor`] once per task from a [`RedactConfig`] (it compiles the patterns;
//! clones share them), open one [`StreamRedactor`] per output stream with
//! [`Redactor::stream`], feed it chunks with [`StreamRedactor::push`] and end with
//! [`StreamRedactor::finish`]. How the output is chunked never changes the result.
//!
//! Two stages, in order: `secrets` replaces every form of every secret value (plain,
//! each line, base64, URL-encoded, JSON-escaped; see `encodings`) with
//! `[REDACTED:KEY_NAME]` in one leftmost-longest pass; then, with `personal_data`, the
//! `pii` detectors replace e-mail addresses, phone numbers, card numbers and the other
//! [`InfoType`]s with `[INFO_TYPE]`, line by line (`stream` explains the segments).
//! `docs/redaction.md` lists the rules, the measured precision and recall, and the
//! throughput.

mod encodings;
mod pii;
mod secrets;
mod stream;

use std::sync::Arc;

pub use pii::{
    DEFAULT_PHONE_REGIONS, Finding, InfoType, UnknownInfoType, UnknownPhoneRegion,
    known_phone_regions, parse_phone_regions,
};
pub use stream::{CAP_CUT_SEARCH, StreamRedactor};

/// Values shorter than this are not redacted unless their key looks secret:
/// redacting every `1` or `on` would shred the output and protect nothing.
pub const MIN_SECRET_LEN: usize = 6;

/// Values of keys that look secret are redacted from this length on.
pub const MIN_SECRET_LEN_SECRET_KEY: usize = 3;

/// Encoded forms (base64, URL, JSON) shorter than this are not searched for: a 3-letter
/// base64 fragment would match ordinary words.
pub const MIN_ENCODED_FORM_LEN: usize = 4;

/// Longest literal pattern; longer forms are split into pieces of this size, so a
/// stream never holds back more than this for the secrets.
pub const MAX_PATTERN_LEN: usize = 4096;

/// Longest segment the personal-data detectors see at once: a longer line is cut here,
/// which bounds what a stream holds back while a line is incomplete.
pub const LINE_CAP: usize = 64 * 1024;

/// A private-key block with no END marker after this many bytes is not one (or was
/// truncated): redaction of the block stops there instead of swallowing all output.
pub const MAX_PRIVATE_KEY_BLOCK: usize = 64 * 1024;

/// Bytes of an incomplete UTF-8 character a stream may hold back so that what it
/// emits never ends inside a character.
const UTF8_MAX_PARTIAL: usize = 3;

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
    "URL",
    "DSN",
    "CONNECTION",
    "AUTH",
    "SESSION",
    "COOKIE",
    "SIGNATURE",
];

/// Suffixes of key names that say where to connect (`PG_HOST`, `AWS_REGION`): their
/// values are not secret and are not redacted unless the target lists the key in its
/// `redact_keys`. A key equal to a suffix without its `_` (`HOST`) counts too.
pub const PUBLIC_KEY_SUFFIXES: &[&str] = &[
    "_HOST",
    "_HOSTNAME",
    "_PORT",
    "_DB",
    "_DATABASE",
    "_USER",
    "_USERNAME",
    "_REGION",
    "_NAMESPACE",
    "_CLUSTER",
    "_CONTEXT",
];

/// True when the value of secret key `key` is redacted: a key in `public_keys` is not,
/// a key in `redact_keys` is; otherwise every key is except those ending in one of
/// [`PUBLIC_KEY_SUFFIXES`] (connection settings). Names compare case-insensitively.
pub fn key_is_redacted(key: &str, redact_keys: &[String], public_keys: &[String]) -> bool {
    if public_keys.iter().any(|k| k.eq_ignore_ascii_case(key)) {
        return false;
    }
    if redact_keys.iter().any(|k| k.eq_ignore_ascii_case(key)) {
        return true;
    }
    let up = key.to_ascii_uppercase();
    !PUBLIC_KEY_SUFFIXES
        .iter()
        .any(|s| up.ends_with(s) || up == s[1..])
}

/// What to remove.
#[derive(Debug, Clone, Default)]
pub struct RedactConfig {
    /// `(key, value)` of every secret the task sees (after mapping).
    pub secrets: Vec<(String, String)>,
    /// Detect personal data too (`redact=all`). Secret values are always removed.
    pub personal_data: bool,
    /// Which personal data to detect when `personal_data` is on; `None` means all of
    /// [`InfoType::ALL`]. Parse `REDACT_INFO_TYPES` with [`InfoType::parse_list`].
    pub info_types: Option<Vec<InfoType>>,
    /// The regions whose national phone formats (`020 7946 0958`) are read, as ISO
    /// codes; `None` means [`DEFAULT_PHONE_REGIONS`]. Parse `REDACT_PHONE_REGIONS` with
    /// [`parse_phone_regions`]. Numbers written with `+` are found whatever the list.
    pub phone_regions: Option<Vec<String>>,
}

/// True when `key` names something secret (`MYSQL_PASS`, `API_TOKEN`...).
pub fn key_looks_secret(key: &str) -> bool {
    let up = key.to_ascii_uppercase();
    SECRET_KEY_MARKERS.iter().any(|m| up.contains(m))
}

/// The compiled patterns of one task. Cheap to clone and share between streams.
#[derive(Clone)]
pub struct Redactor {
    inner: Arc<Inner>,
}

struct Inner {
    secrets: Option<secrets::SecretMatcher>,
    pii: Option<pii::PiiScanner>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("secret_patterns", &self.secret_pattern_count())
            .field("info_types", &self.info_types())
            .finish()
    }
}

impl Redactor {
    pub fn new(config: &RedactConfig) -> Redactor {
        let pii = if config.personal_data {
            let regions: Vec<String> = match &config.phone_regions {
                Some(r) => r.clone(),
                None => DEFAULT_PHONE_REGIONS
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
            };
            match &config.info_types {
                Some(types) => pii::PiiScanner::new(types, &regions),
                None => pii::PiiScanner::new(&InfoType::ALL, &regions),
            }
        } else {
            None
        };
        Redactor {
            inner: Arc::new(Inner {
                secrets: secrets::SecretMatcher::new(&config.secrets),
                pii,
            }),
        }
    }

    /// Opens a stream that redacts chunk by chunk.
    pub fn stream(&self) -> StreamRedactor {
        StreamRedactor::new(self.clone())
    }

    /// Redacts a complete text at once (error messages, short outputs). Same result as
    /// streaming it in any chunks.
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

    /// The personal data detected in `text` (secret values are not looked at), by byte
    /// offsets, as the stream would find it. Empty when personal data is off.
    pub fn find_personal_data(&self, text: &[u8]) -> Vec<Finding> {
        match &self.inner.pii {
            Some(pii) => stream::find_in(pii, text),
            None => Vec::new(),
        }
    }

    /// The info types this redactor detects.
    pub fn info_types(&self) -> Vec<InfoType> {
        self.inner
            .pii
            .as_ref()
            .map_or_else(Vec::new, pii::PiiScanner::info_types)
    }

    /// Number of literal patterns the secret values compiled to (all their forms).
    pub fn secret_pattern_count(&self) -> usize {
        self.inner
            .secrets
            .as_ref()
            .map_or(0, secrets::SecretMatcher::pattern_count)
    }

    /// Most bytes a stream holds back between pushes: less than the longest secret
    /// pattern plus a partial UTF-8 character, plus one segment of personal-data
    /// input when that stage is on.
    pub fn max_held_back(&self) -> usize {
        let secrets = self
            .inner
            .secrets
            .as_ref()
            .map_or(0, |s| s.longest().saturating_sub(1))
            + UTF8_MAX_PARTIAL;
        let lines = if self.inner.pii.is_some() {
            LINE_CAP
        } else {
            0
        };
        secrets + lines
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
            ..Default::default()
        })
    }

    fn everything(secrets: &[(&str, &str)]) -> Redactor {
        Redactor::new(&RedactConfig {
            secrets: secrets
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            personal_data: true,
            ..Default::default()
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
    fn connection_settings_are_public_unless_listed() {
        let none: Vec<String> = Vec::new();
        for key in [
            "PG_HOST",
            "pg_hostname",
            "MYSQL_PORT",
            "PG_DB",
            "PG_DATABASE",
            "PG_USER",
            "DB_USERNAME",
            "AWS_REGION",
            "K8S_NAMESPACE",
            "EKS_CLUSTER",
            "KUBE_CONTEXT",
            "HOST",
        ] {
            assert!(!key_is_redacted(key, &none, &none), "{key}");
        }
        for key in [
            "PG_PASS",
            "API_TOKEN",
            "PG_HOST_KEY",
            "USERDATA",
            "DBX",
            "DATABASE_URL",
        ] {
            assert!(key_is_redacted(key, &none, &none), "{key}");
        }
        let listed = vec!["pg_host".to_string()];
        assert!(key_is_redacted("PG_HOST", &listed, &none));
        assert!(!key_is_redacted("PG_PASS", &none, &["PG_PASS".to_string()]));
    }

    #[test]
    fn short_values_of_plain_keys_stay() {
        let r = redactor(&[("MYSQL_DB", "demo"), ("DB_PASS", "abc")]);
        assert_eq!(r.redact_str("demo abc"), "demo [REDACTED:DB_PASS]");
    }

    #[test]
    fn match_split_across_every_chunk_boundary_is_caught() {
        let r = everything(&[("TOKEN", "s3cr3t-value"), ("OTHER", "s3cr3t-value-longer")]);
        let text = b"a s3cr3t-value b s3cr3t-value-longer c jane@example.com s3cr3t-valu";
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
            "a [REDACTED:TOKEN] b [REDACTED:OTHER] c [EMAIL_ADDRESS] s3cr3t-valu"
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

    #[test]
    fn encoded_forms_of_secrets_are_redacted() {
        let value = "p@ss w0rd/\"x\"";
        let r = redactor(&[("DB_PASSWORD", value)]);
        let b64 = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(format!("admin:{value}"))
        };
        let text = format!(
            "url=p%40ss%20w0rd%2F%22x%22 form=p%40ss+w0rd%2F%22x%22 json=\"p@ss w0rd/\\\"x\\\"\" basic={b64}"
        );
        let out = r.redact_str(&text);
        assert!(!out.contains("w0rd"), "{out}");
        assert!(!out.contains(&b64[8..]), "{out}");
    }

    #[test]
    fn personal_data_is_replaced_with_its_info_type() {
        let r = everything(&[]);
        assert_eq!(
            r.redact_str("jane@example.com paid with 4111 1111 1111 1111, call +44 20 7946 0958\n"),
            "[EMAIL_ADDRESS] paid with [CREDIT_CARD_NUMBER], call [PHONE_NUMBER]\n"
        );
        assert_eq!(
            r.redact_str("postgres://app:hunter2@10.1.2.3:5432/db"),
            "postgres://app:[PASSWORD_IN_URL]@[IP_ADDRESS]:5432/db"
        );
    }

    #[test]
    fn only_the_configured_info_types_are_detected() {
        let r = Redactor::new(&RedactConfig {
            personal_data: true,
            info_types: Some(InfoType::parse_list("EMAIL_ADDRESS").unwrap()),
            ..Default::default()
        });
        assert_eq!(r.info_types(), vec![InfoType::EmailAddress]);
        assert_eq!(
            r.redact_str("jane@example.com 415-555-0132"),
            "[EMAIL_ADDRESS] 415-555-0132"
        );
        let off = Redactor::new(&RedactConfig {
            personal_data: false,
            info_types: Some(InfoType::ALL.to_vec()),
            ..Default::default()
        });
        assert_eq!(off.redact_str("jane@example.com"), "jane@example.com");
    }

    #[test]
    fn private_key_block_across_lines_becomes_one_marker() {
        let r = everything(&[]);
        let text = "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1\nZZZ+/==\n-----END RSA PRIVATE KEY-----\nnext\n";
        assert_eq!(r.redact_str(text), "key:\n[PRIVATE_KEY]\nnext\n");
        let found = r.find_personal_data(text.as_bytes());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].start, 5);
        assert_eq!(&text[found[0].end..], "\nnext\n");
    }

    #[test]
    fn held_back_bytes_stay_within_the_bound() {
        let r = everything(&[("TOKEN", "abcdefghij")]);
        let mut s = r.stream();
        let mut out = Vec::new();
        let line = vec![b'x'; 1000];
        for _ in 0..200 {
            s.push(&line, &mut out);
            assert!(s.held_back() <= r.max_held_back());
        }
        s.finish(&mut out);
        assert_eq!(out.len(), 200 * 1000);
    }

    #[test]
    fn only_a_tail_that_could_begin_a_secret_is_held_back() {
        for personal_data in [false, true] {
            let r = Redactor::new(&RedactConfig {
                secrets: vec![("API_TOKEN".into(), "tok_live_8f3Kq2Lm9Xw7Vb1N".into())],
                personal_data,
                ..Default::default()
            });
            let mut s = r.stream();
            let mut out = Vec::new();
            // A complete line leaves at once.
            s.push(b"step1\n", &mut out);
            assert_eq!(out, b"step1\n");
            // An incomplete line ending in a secret's first half: the flush releases the
            // line up to the half and keeps the half.
            s.push(b"half=tok_live_8f3", &mut out);
            s.flush(&mut out);
            assert_eq!(String::from_utf8_lossy(&out), "step1\nhalf=");
            s.flush(&mut out);
            s.push(b"Kq2Lm9Xw7Vb1N done\n", &mut out);
            s.finish(&mut out);
            assert_eq!(
                String::from_utf8_lossy(&out),
                "step1\nhalf=[REDACTED:API_TOKEN] done\n"
            );
        }
    }
}
