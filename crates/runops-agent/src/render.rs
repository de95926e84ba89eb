//! `{{KEY}}` placeholders in scripts.
//!
//! Only `{{KEY}}` (spaces inside the braces allowed) is replaced, by the value of a
//! secret or metadata key. Everything else stays byte for byte: unknown placeholders,
//! other `{{...}}` text, and no HTML escaping (the original blanked and escaped them).

/// Replaces each `{{KEY}}` whose key `lookup` knows.
pub fn render_placeholders<'a>(script: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(script.len());
    let mut rest = script;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let replaced = after.find("}}").and_then(|close| {
            let key = after[..close].trim();
            let is_key = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
            let value = if is_key { lookup(key) } else { None }?;
            Some((value, close))
        });
        match replaced {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 2..];
            }
            None => {
                // Keep the braces and look for the next placeholder right after them.
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
    use std::collections::BTreeMap;

    fn render(script: &str) -> String {
        let vals: BTreeMap<&str, &str> =
            [("DB", "demo"), ("SYM", "<&>\"'"), ("RUNOPS_TASK_ID", "42")]
                .into_iter()
                .collect();
        render_placeholders(script, |k| vals.get(k).copied())
    }

    #[test]
    fn known_keys_are_replaced() {
        assert_eq!(
            render("use {{DB}}; -- {{ DB }} #{{RUNOPS_TASK_ID}}"),
            "use demo; -- demo #42"
        );
    }

    #[test]
    fn unknown_placeholders_stay_as_written() {
        assert_eq!(
            render("echo {{UNKNOWN}} {{ }} {{a b}} {{DB"),
            "echo {{UNKNOWN}} {{ }} {{a b}} {{DB"
        );
        assert_eq!(render("{{{{DB}}}}"), "{{demo}}");
    }

    #[test]
    fn values_are_not_html_escaped() {
        assert_eq!(render("x={{SYM}}"), "x=<&>\"'");
    }

    #[test]
    fn other_template_syntax_is_left_alone() {
        let s = "{{#each x}}{{/each}} {{> partial}} {{!comment}} ${VAR} é";
        assert_eq!(render(s), s);
    }
}
