//! Checks parameter values against their declarations and puts them into the body.
//! Pure functions; the rule they enforce (see `docs/templates.md`, "Safe values"):
//!
//! - a value is substituted verbatim, so it must be safe by its type: a `number`, a
//!   `date` (`YYYY-MM-DD`), a `boolean` (`true`/`false`) or one of a `select`'s options;
//! - a `text` value without a `pattern` may only hold letters, digits, spaces and
//!   `_ . , : @ / + = -`: no quote, `;`, `$`, backtick or newline can break out of
//!   the quotes the template author wrote around it (SQL or shell alike);
//! - a `text` value with a `pattern` must match it whole: the author chose what may
//!   pass; control characters (newlines) never pass;
//! - no value may hold `{{`: the agent fills `{{KEY}}` placeholders with secrets, so a
//!   value must not smuggle one in.

use super::header::{ParamDef, ParamType};
use std::collections::BTreeMap;

/// Longest value of one parameter.
pub const MAX_VALUE_LEN: usize = 4096;

/// What is wrong with the values of a run, naming the parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub param: String,
    pub message: String,
}

/// The names in the `{{ name }}` placeholders of `body`, in order.
pub fn placeholders(body: &str) -> impl Iterator<Item = &str> {
    body.split("{{")
        .skip(1)
        .filter_map(|rest| rest.split_once("}}").map(|(name, _)| name.trim()))
}

/// Why `value` does not fit `p` (`Err(what is expected)`).
pub fn check_value(p: &ParamDef, value: &str) -> Result<(), String> {
    if value.len() > MAX_VALUE_LEN {
        return Err(format!("a value of at most {MAX_VALUE_LEN} bytes"));
    }
    if value.contains("{{") || value.contains("}}") {
        return Err("a value without `{{` or `}}`".into());
    }
    if value.chars().any(char::is_control) {
        return Err("a value on one line, without control characters".into());
    }
    match p.kind {
        ParamType::Number => {
            let number = value.strip_prefix('-').unwrap_or(value);
            let (int, frac) = number.split_once('.').unwrap_or((number, "0"));
            let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
            if !digits(int) || !digits(frac) {
                return Err("a number such as `42`, `-7` or `3.5`".into());
            }
        }
        ParamType::Date => {
            if value.len() != 10 || chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_err() {
                return Err("a date as YYYY-MM-DD, such as `2026-01-31`".into());
            }
        }
        ParamType::Boolean => {
            if value != "true" && value != "false" {
                return Err("`true` or `false`".into());
            }
        }
        ParamType::Select => {
            if !p.options.iter().any(|o| o == value) {
                return Err(format!("one of: {}", p.options.join(", ")));
            }
        }
        ParamType::Text => {
            if p.pattern.is_none()
                && !value
                    .chars()
                    .all(|c| c.is_alphanumeric() || " _.,:@/+=-".contains(c))
            {
                return Err(
                    "text of letters, digits, spaces and `_ . , : @ / + = -` (the template declares no pattern that allows more)"
                        .into(),
                );
            }
        }
    }
    if let Some(re) = &p.pattern
        && !re.is_match(value)
    {
        let shown = re.as_str();
        let shown = shown
            .strip_prefix("^(?:")
            .and_then(|s| s.strip_suffix(")$"))
            .unwrap_or(shown);
        return Err(format!("a value matching the pattern `{shown}`"));
    }
    Ok(())
}

/// Checks `given` against `params` (unknown, missing, malformed values) and returns
/// every parameter's value, defaults filled in. Booleans given as `yes`/`no` become
/// `true`/`false`.
pub fn resolve(
    params: &[ParamDef],
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ParamError> {
    if let Some(unknown) = given.keys().find(|k| !params.iter().any(|p| &p.name == *k)) {
        let known: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        return Err(ParamError {
            param: unknown.clone(),
            message: if known.is_empty() {
                format!("unknown parameter `{unknown}`: this template takes no parameters")
            } else {
                format!(
                    "unknown parameter `{unknown}`: this template takes {}",
                    known.join(", ")
                )
            },
        });
    }
    let mut values = BTreeMap::new();
    for p in params {
        let value = match given.get(&p.name).map(|v| v.trim()) {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => match &p.default {
                Some(d) => d.clone(),
                None if p.required => {
                    return Err(ParamError {
                        param: p.name.clone(),
                        message: format!(
                            "parameter `{}` is required ({})",
                            p.name,
                            p.kind.as_str()
                        ),
                    });
                }
                // An optional parameter without a value is an empty string.
                None => {
                    values.insert(p.name.clone(), String::new());
                    continue;
                }
            },
        };
        let value = match (p.kind, value.as_str()) {
            (ParamType::Boolean, "yes") => "true".to_string(),
            (ParamType::Boolean, "no") => "false".to_string(),
            _ => value,
        };
        check_value(p, &value).map_err(|expected| ParamError {
            param: p.name.clone(),
            message: format!(
                "parameter `{}` does not accept `{}`: expected {expected}",
                p.name,
                value.escape_debug()
            ),
        })?;
        values.insert(p.name.clone(), value);
    }
    Ok(values)
}

/// The body with each declared parameter's `{{name}}` (or `{{ name }}`) replaced by
/// its value, in one pass; other placeholders (the agent's secrets) stay as they are.
pub fn render(body: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        match after
            .find("}}")
            .and_then(|close| values.get(after[..close].trim()).map(|v| (close, v)))
        {
            Some((close, value)) => {
                out.push_str(value);
                rest = &after[close + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(kind: ParamType) -> ParamDef {
        ParamDef {
            name: "p".into(),
            kind,
            required: true,
            default: None,
            pattern: None,
            options: vec!["soft".into(), "hard".into()],
            description: None,
        }
    }

    fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn each_type_accepts_its_values_and_says_what_it_expects() {
        let ok = |k, v| check_value(&param(k), v).is_ok();
        assert!(ok(ParamType::Number, "42") && ok(ParamType::Number, "-3.5"));
        assert!(!ok(ParamType::Number, "1; drop table x") && !ok(ParamType::Number, "1e3"));
        assert!(ok(ParamType::Date, "2026-01-31") && !ok(ParamType::Date, "2026-02-30"));
        assert!(ok(ParamType::Boolean, "true") && !ok(ParamType::Boolean, "1"));
        assert!(ok(ParamType::Select, "hard") && !ok(ParamType::Select, "medium"));
        let e = check_value(&param(ParamType::Select), "medium").unwrap_err();
        assert_eq!(e, "one of: soft, hard");
    }

    #[test]
    fn text_without_pattern_refuses_quotes_and_shell_characters() {
        let ok = |v| check_value(&param(ParamType::Text), v).is_ok();
        assert!(ok("alice@example.com") && ok("Zoë O-1/2"));
        for bad in ["o'brien", "a\"b", "a;b", "$(id)", "`id`", "a\nb", "a\\b"] {
            assert!(!ok(bad), "{bad} passed");
        }
    }

    #[test]
    fn text_with_pattern_must_match_whole_and_never_holds_placeholders() {
        let mut p = param(ParamType::Text);
        p.pattern = Some(regex::Regex::new("^(?:[a-z]+)$").unwrap());
        assert!(check_value(&p, "alice").is_ok());
        assert_eq!(
            check_value(&p, "alice1").unwrap_err(),
            "a value matching the pattern `[a-z]+`"
        );
        p.pattern = Some(regex::Regex::new("^(?:.*)$").unwrap());
        assert!(check_value(&p, "it's").is_ok());
        assert!(check_value(&p, "{{DB_PASSWORD}}").is_err());
        assert!(check_value(&p, "a\nb").is_err());
    }

    #[test]
    fn resolve_names_unknown_missing_and_bad_parameters() {
        let mut n = param(ParamType::Number);
        n.name = "n".into();
        let params = vec![n];
        let e = resolve(&params, &given(&[("x", "1")])).unwrap_err();
        assert_eq!(e.param, "x");
        assert!(e.message.contains("takes n"), "{e:?}");
        let e = resolve(&params, &given(&[])).unwrap_err();
        assert_eq!(e.message, "parameter `n` is required (number)");
        let e = resolve(&params, &given(&[("n", "ten")])).unwrap_err();
        assert!(e.message.contains("expected a number"), "{e:?}");
        assert_eq!(resolve(&params, &given(&[("n", "10")])).unwrap()["n"], "10");
    }

    #[test]
    fn defaults_fill_in_and_booleans_are_normalised() {
        let mut b = param(ParamType::Boolean);
        b.name = "b".into();
        let mut d = param(ParamType::Select);
        d.name = "mode".into();
        d.default = Some("soft".into());
        let v = resolve(&[b, d], &given(&[("b", "yes")])).unwrap();
        assert_eq!(v["b"], "true");
        assert_eq!(v["mode"], "soft");
    }

    #[test]
    fn render_replaces_declared_placeholders_once_and_keeps_the_agents() {
        let v = given(&[("user", "alice"), ("n", "{{n}}")]);
        assert_eq!(
            render("u={{user}} {{ user }} pw={{DB_PASSWORD}} n={{n}} {{", &v),
            "u=alice alice pw={{DB_PASSWORD}} n={{n}} {{"
        );
        let names: Vec<&str> = placeholders("a {{ x }} b {{y}} {{z").collect();
        assert_eq!(names, ["x", "y"]);
    }
}
