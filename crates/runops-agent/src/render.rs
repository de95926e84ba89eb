//! Placeholders: `{{KEY}}` in scripts, `[[KEY]]` in a target's `custom_command`. One
//! renderer serves both; only the delimiters differ.
//!
//! Only a placeholder (spaces inside the delimiters allowed) whose key `lookup` knows is
//! replaced, by the value of a secret or metadata key; values are not scanned again.
//! Everything else stays byte for byte: unknown placeholders, other `{{...}}` text, and
//! no HTML escaping (the original blanked and escaped them).

/// The delimiters of one placeholder syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    pub open: &'static str,
    pub close: &'static str,
}

/// `{{KEY}}`: placeholders in scripts.
pub const SCRIPT: Delimiters = Delimiters {
    open: "{{",
    close: "}}",
};

/// `[[KEY]]`: placeholders in a target's `custom_command`.
pub const COMMAND: Delimiters = Delimiters {
    open: "[[",
    close: "]]",
};

/// Replaces each placeholder of `text` written with `d` whose key `lookup` knows.
pub fn render<V: AsRef<str>>(
    text: &str,
    d: Delimiters,
    lookup: impl Fn(&str) -> Option<V>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find(d.open) {
        out.push_str(&rest[..open]);
        let after = &rest[open + d.open.len()..];
        let replaced = after.find(d.close).and_then(|close| {
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
                out.push_str(value.as_ref());
                rest = &after[close + d.close.len()..];
            }
            None => {
                // Keep the delimiter and look for the next placeholder right after it.
                out.push_str(d.open);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Replaces each `{{KEY}}` of a script whose key `lookup` knows.
pub fn render_placeholders<'a>(script: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    render(script, SCRIPT, lookup)
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
