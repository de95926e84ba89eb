//! Reads one template file: its header (a leading comment block between two `---`
//! lines) and its body. Pure: text in, [`TemplateDef`] or a [`HeaderError`] with the
//! line of the mistake out. The format is documented in `docs/templates.md`.
//!
//! ```text
//! -- ---
//! -- description: Ends a database user's sessions
//! -- targets: prod-db, staging-db
//! -- review: team
//! -- reviewers: dba
//! -- param user:
//! --   type: text
//! --   pattern: [a-z_][a-z0-9_]*
//! -- ---
//! select pg_terminate_backend(pid) from pg_stat_activity where usename = '{{user}}';
//! ```

use runops_proto::vocab::ReviewMode;

/// Comment markers a header may use: `--` (SQL), `#` (shell, Python, Ruby), `//` (JavaScript).
const COMMENT_MARKERS: &[&str] = &["--", "#", "//"];

/// Most parameters of one template: more is a form nobody fills in.
pub const MAX_PARAMS: usize = 50;

/// The type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Text,
    Number,
    Select,
    Date,
    Boolean,
}

impl ParamType {
    pub const ALL: [ParamType; 5] = [
        ParamType::Text,
        ParamType::Number,
        ParamType::Select,
        ParamType::Date,
        ParamType::Boolean,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Text => "text",
            ParamType::Number => "number",
            ParamType::Select => "select",
            ParamType::Date => "date",
            ParamType::Boolean => "boolean",
        }
    }

    fn parse(s: &str) -> Option<ParamType> {
        ParamType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A declared parameter.
#[derive(Debug, Clone)]
pub struct ParamDef {
    pub name: String,
    pub kind: ParamType,
    pub required: bool,
    pub default: Option<String>,
    /// Anchored: the whole value must match.
    pub pattern: Option<regex::Regex>,
    pub options: Vec<String>,
    pub description: Option<String>,
}

/// A template as read from its file.
#[derive(Debug, Clone)]
pub struct TemplateDef {
    pub name: String,
    /// Path in the repository (`templates/restart-user.sql`).
    pub path: String,
    pub description: Option<String>,
    /// Target names it may run on; `*` allows any.
    pub targets: Vec<String>,
    /// Target tags it may run on.
    pub tags: Vec<String>,
    pub params: Vec<ParamDef>,
    pub review: Option<ReviewMode>,
    pub reviewers: Vec<String>,
    /// The script without its header (a shebang line is kept).
    pub body: String,
}

/// What is wrong with a template file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderError {
    /// 1-based line in the file.
    pub line: Option<usize>,
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> HeaderError {
    HeaderError {
        line: Some(line),
        message: message.into(),
    }
}

/// A template or parameter name: letters, digits, `_`, `-` (names), starting with a
/// letter or digit.
pub fn valid_name(name: &str, extra: &[char]) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(&c))
        && name.len() <= 100
}

/// The template name of a file name: the name without its last extension
/// (`restart-user.sql` → `restart-user`, `cleanup` → `cleanup`).
pub fn template_name(file_name: &str) -> &str {
    match file_name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => file_name,
    }
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn boolean(value: &str) -> Option<bool> {
    match value {
        "true" | "yes" => Some(true),
        "false" | "no" => Some(false),
        _ => None,
    }
}

/// A header line without its comment marker, with its 1-based line number.
type HeaderLine<'a> = (usize, &'a str);

/// The header's lines and the body; `Err` when the file does not open with a header.
fn split(text: &str) -> Result<(Vec<HeaderLine<'_>>, String), HeaderError> {
    let lines: Vec<&str> = text.lines().collect();
    let start = usize::from(lines.first().is_some_and(|l| l.starts_with("#!")));
    let opening = lines.get(start).map(|l| l.trim_end()).unwrap_or("");
    let marker = COMMENT_MARKERS
        .iter()
        .find(|m| opening.strip_prefix(*m).map(str::trim) == Some("---"))
        .ok_or_else(|| {
            err(
                start + 1,
                "the file does not open with a header: write `-- ---` (or `# ---`, `// ---`) on the first line, then the header, then the same line again",
            )
        })?;
    let mut header = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(start + 1) {
        let Some(rest) = line.trim_end().strip_prefix(marker) else {
            return Err(err(
                i + 1,
                format!(
                    "the header is not closed: every header line starts with `{marker}`, and a `{marker} ---` line ends it"
                ),
            ));
        };
        if rest.trim() == "---" {
            let mut body: Vec<&str> = lines[..start].to_vec();
            body.extend(&lines[i + 1..]);
            let mut body = body.join("\n");
            if text.ends_with('\n') {
                body.push('\n');
            }
            return Ok((header, body));
        }
        header.push((i + 1, rest.strip_prefix(' ').unwrap_or(rest)));
    }
    Err(err(
        lines.len(),
        format!("the header is not closed: end it with a `{marker} ---` line"),
    ))
}

/// Parses a template file at `path` (its name comes from the file name).
pub fn parse(path: &str, text: &str) -> Result<TemplateDef, HeaderError> {
    let file_name = path.rsplit('/').next().unwrap_or(path);
    let name = template_name(file_name);
    if !valid_name(name, &['-', '.']) {
        return Err(HeaderError {
            line: None,
            message: format!(
                "`{name}` is not a template name: use letters, digits, `-`, `_` and `.`, starting with a letter or digit"
            ),
        });
    }
    let (header, body) = split(text)?;
    let mut def = TemplateDef {
        name: name.to_string(),
        path: path.to_string(),
        description: None,
        targets: Vec::new(),
        tags: Vec::new(),
        params: Vec::new(),
        review: None,
        reviewers: Vec::new(),
        body,
    };
    let mut seen_where = false;
    // Where each parameter was declared, for the messages about it.
    let mut param_lines = Vec::new();
    for (n, line) in header {
        if line.trim().is_empty() {
            continue;
        }
        let indented = line.starts_with(' ') || line.starts_with('\t');
        let (key, value) = line
            .trim()
            .split_once(':')
            .ok_or_else(|| err(n, format!("`{}` is not `key: value`", line.trim())))?;
        let (key, value) = (key.trim(), value.trim());
        if indented {
            let param = def
                .params
                .last_mut()
                .ok_or_else(|| err(n, "an indented line belongs to a `param NAME:` above it"))?;
            param_setting(param, key, value).map_err(|m| err(n, m))?;
            continue;
        }
        if let Some(pname) = key.strip_prefix("param ") {
            let pname = pname.trim();
            if !valid_name(pname, &[]) {
                return Err(err(
                    n,
                    format!("`{pname}` is not a parameter name: use letters, digits and `_`"),
                ));
            }
            if def.params.iter().any(|p| p.name == pname) {
                return Err(err(n, format!("parameter `{pname}` is declared twice")));
            }
            if def.params.len() == MAX_PARAMS {
                return Err(err(
                    n,
                    format!("a template has at most {MAX_PARAMS} parameters"),
                ));
            }
            def.params.push(ParamDef {
                name: pname.to_string(),
                kind: ParamType::Text,
                required: false,
                default: None,
                pattern: None,
                options: Vec::new(),
                description: None,
            });
            param_lines.push(n);
            if !value.is_empty() {
                // `param user: text` is short for a `type:` line.
                let p = def.params.last_mut().expect("just pushed");
                param_setting(p, "type", value).map_err(|m| err(n, m))?;
            }
            continue;
        }
        match key {
            "description" => def.description = Some(value.to_string()),
            "targets" | "target" => {
                def.targets = list(value);
                seen_where = true;
            }
            "tags" => {
                def.tags = list(value);
                seen_where = true;
            }
            "review" => {
                def.review = match ReviewMode::parse(value) {
                    Some(ReviewMode::None) | None => {
                        return Err(err(
                            n,
                            format!(
                                "review `{value}` is not `anyone` or `team` (a template can only ask for more review than its target, never less)"
                            ),
                        ));
                    }
                    mode => mode,
                }
            }
            "reviewers" => def.reviewers = list(value),
            other => {
                return Err(err(
                    n,
                    format!(
                        "unknown header key `{other}`: use description, targets, tags, review, reviewers or `param NAME:`"
                    ),
                ));
            }
        }
    }
    if !seen_where || (def.targets.is_empty() && def.tags.is_empty()) {
        return Err(HeaderError {
            line: None,
            message: "the header does not say where the template may run: add `targets: NAME, ...` (`*` for any target) or `tags: TAGS, ...`".into(),
        });
    }
    if def.review == Some(ReviewMode::Team) && def.reviewers.is_empty() {
        return Err(HeaderError {
            line: None,
            message: "`review: team` needs `reviewers: GROUP, ...`".into(),
        });
    }
    for (p, n) in def.params.iter().zip(param_lines) {
        check_param(p, &def.body).map_err(|m| err(n, m))?;
    }
    Ok(def)
}

fn param_setting(p: &mut ParamDef, key: &str, value: &str) -> Result<(), String> {
    let name = &p.name;
    match key {
        "type" => {
            p.kind = ParamType::parse(value).ok_or_else(|| {
                format!(
                    "parameter `{name}`: type `{value}` is not one of text, number, select, date, boolean"
                )
            })?
        }
        "required" => {
            p.required = boolean(value).ok_or_else(|| {
                format!("parameter `{name}`: required is `true` or `false`, not `{value}`")
            })?
        }
        "default" => p.default = Some(value.to_string()),
        "pattern" => {
            let anchored = format!("^(?:{value})$");
            p.pattern = Some(regex::Regex::new(&anchored).map_err(|e| {
                format!("parameter `{name}`: the pattern is not a regular expression: {e}")
            })?)
        }
        "options" => p.options = list(value),
        "description" => p.description = Some(value.to_string()),
        other => {
            return Err(format!(
                "parameter `{name}`: unknown setting `{other}`: use type, required, default, pattern, options or description"
            ));
        }
    }
    Ok(())
}

/// A parameter's settings agree with each other and the body uses it.
fn check_param(p: &ParamDef, body: &str) -> Result<(), String> {
    let name = &p.name;
    if p.kind == ParamType::Select && p.options.is_empty() {
        return Err(format!(
            "parameter `{name}` is a select: list its choices with `options: a, b, c`"
        ));
    }
    if p.kind != ParamType::Select && !p.options.is_empty() {
        return Err(format!(
            "parameter `{name}` has options but is not a select: add `type: select`"
        ));
    }
    if let Some(d) = &p.default {
        super::params::check_value(p, d)
            .map_err(|e| format!("parameter `{name}`: its default does not fit: {e}"))?;
    }
    if !super::params::placeholders(body).any(|used| used == name.as_str()) {
        return Err(format!(
            "parameter `{name}` is declared but `{{{{{name}}}}}` does not appear in the script"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQL: &str = "-- ---\n\
-- description: Ends a user's sessions\n\
-- targets: prod-db, staging-db\n\
-- review: team\n\
-- reviewers: dba\n\
-- param user:\n\
--   type: text\n\
--   required: true\n\
--   pattern: [a-z_][a-z0-9_]*\n\
--   description: the database user\n\
-- param mode: select\n\
--   options: soft, hard\n\
--   default: soft\n\
-- ---\n\
select '{{user}}', '{{ mode }}';\n";

    #[test]
    fn sql_header_declares_targets_review_and_params() {
        let t = parse("templates/end-sessions.sql", SQL).unwrap();
        assert_eq!(t.name, "end-sessions");
        assert_eq!(t.targets, ["prod-db", "staging-db"]);
        assert_eq!(t.review, Some(ReviewMode::Team));
        assert_eq!(t.reviewers, ["dba"]);
        assert_eq!(t.params.len(), 2);
        assert!(t.params[0].required);
        assert_eq!(t.params[1].kind, ParamType::Select);
        assert_eq!(t.params[1].options, ["soft", "hard"]);
        assert_eq!(t.params[1].default.as_deref(), Some("soft"));
        assert_eq!(t.body, "select '{{user}}', '{{ mode }}';\n");
    }

    #[test]
    fn shell_header_keeps_the_shebang_in_the_body() {
        let text = "#!/bin/bash\n# ---\n# targets: *\n# param n: number\n# ---\necho {{n}}\n";
        let t = parse("templates/count.sh", text).unwrap();
        assert_eq!(t.name, "count");
        assert_eq!(t.body, "#!/bin/bash\necho {{n}}\n");
    }

    #[test]
    fn file_without_header_is_an_error_on_line_one() {
        let e = parse("templates/x.sql", "select 1;\n").unwrap_err();
        assert_eq!(e.line, Some(1));
        assert!(e.message.contains("does not open with a header"), "{e:?}");
    }

    #[test]
    fn unknown_key_names_its_line() {
        let e = parse(
            "templates/x.sql",
            "-- ---\n-- targets: a\n-- colour: red\n-- ---\nx\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("unknown header key `colour`"), "{e:?}");
    }

    #[test]
    fn unclosed_header_is_an_error() {
        let e = parse("templates/x.sql", "-- ---\n-- targets: a\nselect 1\n").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("not closed"), "{e:?}");
    }

    #[test]
    fn bad_type_pattern_and_default_are_reported_with_their_line() {
        let e = parse(
            "templates/x.sql",
            "-- ---\n-- targets: a\n-- param n:\n--   type: integer\n-- ---\n{{n}}\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("type `integer`"), "{e:?}");
        let e = parse(
            "templates/x.sql",
            "-- ---\n-- targets: a\n-- param n:\n--   pattern: [a-\n-- ---\n{{n}}\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(4));
        let e = parse(
            "templates/x.sql",
            "-- ---\n-- targets: a\n-- param n: number\n--   default: ten\n-- ---\n{{n}}\n",
        )
        .unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("default does not fit"), "{e:?}");
    }

    #[test]
    fn where_it_runs_is_required() {
        let e = parse("templates/x.sql", "-- ---\n-- description: x\n-- ---\nx\n").unwrap_err();
        assert!(e.message.contains("targets:"), "{e:?}");
    }

    #[test]
    fn weaker_review_and_unused_param_are_refused() {
        let e = parse(
            "templates/x.sql",
            "-- ---\n-- targets: a\n-- review: none\n-- ---\nx\n",
        )
        .unwrap_err();
        assert!(e.message.contains("never less"), "{e:?}");
        let e = parse(
            "templates/x.sql",
            "-- ---\n-- targets: a\n-- param who: text\n-- ---\nx\n",
        )
        .unwrap_err();
        assert!(e.message.contains("`{{who}}` does not appear"), "{e:?}");
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn name_is_the_file_name_without_its_last_extension() {
        assert_eq!(template_name("restart-user.sql"), "restart-user");
        assert_eq!(template_name("backup.db.sh"), "backup.db");
        assert_eq!(template_name("cleanup"), "cleanup");
    }
}
