//! The text after `/runops`, parsed into a [`SlashCommand`]: pure, tested here. The
//! words follow the CLI's (`tasks create -t TARGET -s SCRIPT`), split like a shell
//! would, so quoting works as users type it in a terminal.

/// What a user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlashCommand {
    Help,
    CreateTask {
        target: String,
        script: String,
        message: Option<String>,
        kind: Option<String>,
    },
    ShowTask(i64),
    /// `templates list`
    ListTemplates,
    /// `templates run NAME -t TARGET [-p KEY=VALUE]... [-m MESSAGE]`
    RunTemplate {
        name: String,
        target: String,
        params: std::collections::BTreeMap<String, String>,
        message: Option<String>,
    },
}

/// The commands, as `/runops help` lists them.
pub const USAGE: &str = "\
`/runops tasks create -t TARGET -s 'SCRIPT' [-m MESSAGE] [--type TYPE]`  create a task\n\
`/runops tasks show ID`  a task's status\n\
`/runops templates list`  the templates of the git repository\n\
`/runops templates run NAME -t TARGET [-p KEY=VALUE]... [-m MESSAGE]`  run one\n\
`/runops help`  this list";

/// Slack escapes `&`, `<` and `>` in a command's text, and its clients may turn
/// quotes into typographic ones: both are undone before splitting.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
        .replace(['\u{201c}', '\u{201d}'], "\"")
        .replace(['\u{2018}', '\u{2019}'], "'")
}

/// Parses the text of `/runops`; the error says what is wrong in words a user acts on.
pub fn parse(text: &str) -> Result<SlashCommand, String> {
    let text = unescape(text);
    let words = shlex::split(&text)
        .ok_or_else(|| "unbalanced quotes in the command: close every ' and \"".to_string())?;
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        [] | ["help"] | ["--help"] | ["-h"] => Ok(SlashCommand::Help),
        ["tasks", "create", rest @ ..] => create(rest),
        ["tasks", "show", id] => id
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(SlashCommand::ShowTask)
            .ok_or_else(|| format!("`{id}` is not a task id (a number such as 42)")),
        ["tasks", "show", ..] => {
            Err("`tasks show` takes one task id: `/runops tasks show 42`".into())
        }
        ["templates", "list"] => Ok(SlashCommand::ListTemplates),
        ["templates", "run", name, rest @ ..] if !name.starts_with('-') => run_template(name, rest),
        ["templates", ..] => {
            Err("`templates` takes `list` or `run NAME -t TARGET [-p KEY=VALUE]...`".into())
        }
        [first, ..] => Err(format!("unknown command `{first}`")),
    }
}

fn create(words: &[&str]) -> Result<SlashCommand, String> {
    let (mut target, mut script, mut message, mut kind) = (None, None, None, None);
    let mut it = words.iter();
    while let Some(flag) = it.next() {
        let slot = match *flag {
            "-t" | "--target" => &mut target,
            "-s" | "--script" => &mut script,
            "-m" | "--message" => &mut message,
            "--type" => &mut kind,
            other => {
                return Err(format!(
                    "`tasks create` does not know `{other}`: use -t TARGET -s 'SCRIPT' [-m MESSAGE] [--type TYPE]"
                ));
            }
        };
        let value = it.next().ok_or_else(|| format!("`{flag}` needs a value"))?;
        *slot = Some(value.to_string());
    }
    let target = target.ok_or("`tasks create` needs a target: -t TARGET")?;
    let script = script.ok_or("`tasks create` needs a script: -s 'SCRIPT'")?;
    Ok(SlashCommand::CreateTask {
        target,
        script,
        message,
        kind,
    })
}

fn run_template(name: &str, words: &[&str]) -> Result<SlashCommand, String> {
    let (mut target, mut message) = (None, None);
    let mut params = std::collections::BTreeMap::new();
    let mut it = words.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("`{flag}` needs a value"))?;
        match *flag {
            "-t" | "--target" => target = Some(value.to_string()),
            "-m" | "--message" => message = Some(value.to_string()),
            "-p" | "--param" => {
                let (k, v) = value
                    .split_once('=')
                    .ok_or_else(|| format!("`{value}` is not a parameter: write KEY=VALUE"))?;
                params.insert(k.to_string(), v.to_string());
            }
            other => {
                return Err(format!(
                    "`templates run` does not know `{other}`: use -t TARGET [-p KEY=VALUE]... [-m MESSAGE]"
                ));
            }
        }
    }
    let target = target.ok_or("`templates run` needs a target: -t TARGET")?;
    Ok(SlashCommand::RunTemplate {
        name: name.to_string(),
        target,
        params,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_takes_the_clis_flags_and_shell_quoting() {
        assert_eq!(
            parse("tasks create -t prod-db -s 'select * from t where a &gt; 1' -m \"why not\"")
                .unwrap(),
            SlashCommand::CreateTask {
                target: "prod-db".into(),
                script: "select * from t where a > 1".into(),
                message: Some("why not".into()),
                kind: None,
            }
        );
        assert_eq!(
            parse("tasks create --target local --type bash --script \u{201c}echo hi\u{201d}")
                .unwrap(),
            SlashCommand::CreateTask {
                target: "local".into(),
                script: "echo hi".into(),
                message: None,
                kind: Some("bash".into()),
            }
        );
    }

    #[test]
    fn show_help_and_templates() {
        assert_eq!(parse("tasks show 42").unwrap(), SlashCommand::ShowTask(42));
        assert_eq!(parse("").unwrap(), SlashCommand::Help);
        assert_eq!(parse("  help ").unwrap(), SlashCommand::Help);
        assert_eq!(
            parse("templates list").unwrap(),
            SlashCommand::ListTemplates
        );
        assert_eq!(
            parse("templates run restart -t web -p app=web -p mode='a b'").unwrap(),
            SlashCommand::RunTemplate {
                name: "restart".into(),
                target: "web".into(),
                params: [("app", "web"), ("mode", "a b")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                message: None,
            }
        );
        assert!(
            parse("templates run restart -p app=web")
                .unwrap_err()
                .contains("needs a target")
        );
        assert!(
            parse("templates run restart -t w -p app")
                .unwrap_err()
                .contains("KEY=VALUE")
        );
        assert!(
            parse("templates")
                .unwrap_err()
                .contains("takes `list` or `run")
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("tasks create -s 'echo'", "needs a target"),
            ("tasks create -t db", "needs a script"),
            ("tasks create -t db -s", "`-s` needs a value"),
            ("tasks create -t db -x 1", "does not know `-x`"),
            ("tasks create -t db -s 'echo", "unbalanced quotes"),
            ("tasks show abc", "not a task id"),
            ("tasks show 0", "not a task id"),
            ("tasks show 1 2", "one task id"),
            ("deploy now", "unknown command `deploy`"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
