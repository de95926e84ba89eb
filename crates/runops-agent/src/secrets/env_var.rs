//! The `env-var` provider: `secret_path` names an environment variable of the agent
//! holding a JSON object of secrets.
//!
//! The documentation shows the object without braces (`"MYSQL_DB": "demo",` lines with
//! a trailing comma), so that form is accepted too. Numbers and booleans become strings;
//! anything else is an error naming the variable and the position.

use super::{Secrets, SecretsProvider};
use crate::failure::TaskFailure;
use async_trait::async_trait;
use runops_proto::agent::TaskOffer;
use serde_json::Value;
use std::collections::HashMap;

/// Reads secrets from a snapshot of the agent's environment taken at start.
pub struct EnvVarProvider {
    /// Variable → value; `None` when the value is not UTF-8.
    vars: HashMap<String, Option<String>>,
}

impl EnvVarProvider {
    pub fn from_process_env() -> EnvVarProvider {
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok())))
            .collect();
        EnvVarProvider { vars }
    }

    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> EnvVarProvider {
        EnvVarProvider {
            vars: vars.into_iter().map(|(k, v)| (k, Some(v))).collect(),
        }
    }
}

#[async_trait]
impl SecretsProvider for EnvVarProvider {
    fn name(&self) -> &'static str {
        runops_proto::SecretProvider::EnvVar.as_str()
    }

    async fn fetch(&self, offer: &TaskOffer) -> Result<Secrets, TaskFailure> {
        let var = offer.secret_path.as_deref().map(str::trim).unwrap_or("");
        if var.is_empty() {
            return Err(TaskFailure::invalid_config(
                "the target uses secret provider `env-var` but has no secret_path; set it to the name of an environment variable of the agent",
            ));
        }
        match self.vars.get(var) {
            None => Err(TaskFailure::secrets(format!(
                "environment variable `{var}` is not set on the agent (targets with secret_provider env-var read their secrets from the agent's environment)"
            ))),
            Some(None) => Err(TaskFailure::secrets(format!(
                "secret `{var}` (environment variable of the agent) is not valid UTF-8"
            ))),
            Some(Some(text)) => parse_secret_object(text).map_err(|e| {
                TaskFailure::secrets(format!(
                    "secret `{var}` (environment variable of the agent) {e}"
                ))
            }),
        }
    }
}

/// Parses a JSON object of secrets, with or without its braces. One trailing comma
/// after the last entry is accepted in both forms (the docs' lines end with one, and
/// people add braces around them). The error completes "secret `X` ..." and names the
/// position and the likely fix (e.g. "is not a JSON object: expected `:` at line 2
/// column 14; separate each key from its value with `:`").
pub fn parse_secret_object(text: &str) -> Result<Secrets, String> {
    let braced = text.trim_start().starts_with('{');
    let parsed: Result<Value, serde_json::Error> = if braced {
        serde_json::from_str(&without_trailing_comma(text))
    } else {
        // `"K": "V",` lines: drop one trailing comma and add the braces. Only one
        // character is added before the text, on its first line.
        let body = text.trim_end();
        let body = body.strip_suffix(',').unwrap_or(body);
        serde_json::from_str(&format!("{{{body}}}"))
    };
    let value = parsed.map_err(|e| {
        let (line, mut column) = (e.line(), e.column());
        if !braced && line == 1 {
            column = column.saturating_sub(1).max(1);
        }
        let full = e.to_string();
        let what = full.split(" at line ").next().unwrap_or(&full);
        let fix = suggested_fix(what, braced);
        if line == 0 {
            format!("is not a JSON object: {what}; {fix}")
        } else {
            format!("is not a JSON object: {what} at line {line} column {column}; {fix}")
        }
    })?;
    let Value::Object(map) = value else {
        return Err(format!(
            "is not a JSON object: it is {}; write `{{\"KEY\": \"value\", ...}}`",
            json_kind(&value)
        ));
    };
    let mut secrets = Secrets::new();
    for (key, value) in map {
        let text = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(format!(
                    "has a value that is {} at key `{key}`; values must be strings, numbers or booleans",
                    json_kind(&other)
                ));
            }
        };
        secrets.insert(key, text);
    }
    Ok(secrets)
}

/// `{"A": "1",}` → `{"A": "1" }`: one comma right before the closing brace becomes a
/// space, so every other character keeps its line and column for error messages.
fn without_trailing_comma(text: &str) -> String {
    let trimmed = text.trim_end();
    let Some(inner) = trimmed.strip_suffix('}') else {
        return text.to_string();
    };
    let inner_end = inner.trim_end();
    match inner_end.strip_suffix(',') {
        Some(before) => {
            let mut out = String::with_capacity(text.len());
            out.push_str(before);
            out.push(' ');
            out.push_str(&text[inner_end.len()..]);
            out
        }
        None => text.to_string(),
    }
}

/// What to change, from serde_json's description of a syntax error.
fn suggested_fix(what: &str, braced: bool) -> &'static str {
    if what.starts_with("key must be a string") {
        "put each key in double quotes: \"KEY\": \"value\""
    } else if what.starts_with("expected `:`") {
        "separate each key from its value with `:`"
    } else if what.starts_with("expected `,` or `}`") {
        "separate the entries with `,` and put text values in double quotes"
    } else if what.starts_with("trailing comma") {
        "remove the extra `,`"
    } else if what.starts_with("EOF while parsing") && braced {
        "close the object with `}` and every text value with `\"`"
    } else if what.starts_with("EOF while parsing") {
        "close every text value with `\"`"
    } else if what.starts_with("expected value") {
        "put text values in double quotes: \"KEY\": \"value\""
    } else if what.starts_with("invalid escape") || what.starts_with("control character") {
        "escape `\\` as `\\\\` and write line breaks as `\\n` inside values"
    } else {
        "write it as \"KEY\": \"value\" entries separated by `,`, with or without `{}` around them"
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::tests::offer;
    use runops_proto::FailureReason;

    const DOCS_FORM: &str = "\"MYSQL_DB\": \"demo\",\n\"MYSQL_PASS\": \"GtK23d<ejkLy0ST2\",\n\"MYSQL_USER\": \"demo-user\",\n";

    #[test]
    fn brace_less_docs_form_with_trailing_comma_is_accepted() {
        let s = parse_secret_object(DOCS_FORM).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s["MYSQL_DB"], "demo");
        assert_eq!(s["MYSQL_PASS"], "GtK23d<ejkLy0ST2");
        assert_eq!(s["MYSQL_USER"], "demo-user");
    }

    #[test]
    fn braced_docs_form_with_trailing_comma_is_accepted() {
        let s = parse_secret_object(&format!("{{\n{DOCS_FORM}}}\n")).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s["MYSQL_USER"], "demo-user");
        let s = parse_secret_object("{\"A\": \"1\", }").unwrap();
        assert_eq!(s["A"], "1");
        // An error after the removed comma keeps its position.
        let e = parse_secret_object("{\"A\": \"1\",\n\"B\" 2,\n}").unwrap_err();
        assert!(e.contains("at line 2 column 5"), "{e}");
    }

    #[test]
    fn braced_object_is_accepted() {
        let s = parse_secret_object(" {\"A\": \"1\"}\n").unwrap();
        assert_eq!(s["A"], "1");
    }

    #[test]
    fn numbers_and_booleans_become_strings() {
        let s = parse_secret_object(r#"{"PORT": 3306, "SSL": true, "RATIO": 0.5}"#).unwrap();
        assert_eq!(s["PORT"], "3306");
        assert_eq!(s["SSL"], "true");
        assert_eq!(s["RATIO"], "0.5");
    }

    #[test]
    fn null_array_and_object_values_are_rejected_by_key() {
        for (text, kind) in [
            (r#"{"A": null}"#, "null"),
            (r#"{"A": [1]}"#, "an array"),
            (r#""A": {"b": 1},"#, "an object"),
        ] {
            let e = parse_secret_object(text).unwrap_err();
            assert!(e.contains(&format!("is {kind} at key `A`")), "{e}");
        }
    }

    #[test]
    fn syntax_error_names_line_and_column_of_the_text_as_given() {
        // Missing `:` on line 2, right after the key (column 14 of the original text).
        let e =
            parse_secret_object("\"MYSQL_DB\": \"demo\",\n\"MYSQL_PASS\" \"x\",\n").unwrap_err();
        assert_eq!(
            e,
            "is not a JSON object: expected `:` at line 2 column 14; separate each key from its value with `:`"
        );
        // On line 1 the added brace must not shift the column.
        let e = parse_secret_object("\"A\" \"b\"").unwrap_err();
        assert!(
            e.starts_with("is not a JSON object: expected `:` at line 1 column 5;"),
            "{e}"
        );
        let braced = parse_secret_object("{\"A\" \"b\"}").unwrap_err();
        assert!(
            braced.starts_with("is not a JSON object: expected `:` at line 1 column 6;"),
            "{braced}"
        );
        let unquoted = parse_secret_object("{A: \"b\"}").unwrap_err();
        assert!(
            unquoted.ends_with("put each key in double quotes: \"KEY\": \"value\""),
            "{unquoted}"
        );
    }

    #[test]
    fn non_object_json_is_rejected() {
        let e = parse_secret_object("[1, 2]").unwrap_err();
        assert!(e.starts_with("is not a JSON object"), "{e}");
        let e = parse_secret_object("just text").unwrap_err();
        assert!(e.starts_with("is not a JSON object"), "{e}");
        // Two trailing commas are not the docs' form.
        assert!(parse_secret_object("\"A\": \"b\",,").is_err());
    }

    #[tokio::test]
    async fn missing_variable_and_malformed_value_fail_with_the_variable_name() {
        let p = EnvVarProvider::from_vars([(
            "MY_TARGET".to_string(),
            "\"MYSQL_DB\": \"demo\",\n\"MYSQL_PASS\" \"x\"".to_string(),
        )]);
        let e = p.fetch(&offer(None, Some("NOPE"))).await.unwrap_err();
        assert_eq!(e.reason, FailureReason::Secrets);
        assert_eq!(
            e.message,
            "environment variable `NOPE` is not set on the agent (targets with secret_provider env-var read their secrets from the agent's environment)"
        );
        let e = p.fetch(&offer(None, Some("MY_TARGET"))).await.unwrap_err();
        assert_eq!(e.reason, FailureReason::Secrets);
        assert_eq!(
            e.message,
            "secret `MY_TARGET` (environment variable of the agent) is not a JSON object: expected `:` at line 2 column 14; separate each key from its value with `:`"
        );
    }
}
