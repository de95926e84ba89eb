//! `runops templates list|show|run|refresh`: the vetted scripts of the server's git
//! repository. `run` makes a task on the server from the template and the `--param`
//! values, then follows it exactly as `tasks create` does (`tasks::follow_created`).

use crate::error::{CliError, CliResult};
use crate::output::{self, cell, or_dash};
use chrono::Utc;
use runops_proto::api::TaskCreate;
use runops_proto::templates::{Template, TemplateList, TemplateRun};
use std::collections::BTreeMap;

#[derive(clap::Args, Debug)]
pub struct TemplatesCmd {
    #[command(subcommand)]
    pub cmd: TemplatesSub,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true, display_order = 900)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum TemplatesSub {
    /// List the templates, and the files of the repository that could not be read.
    #[command(visible_alias = "ls")]
    List,
    /// Show a template: where it may run, its parameters and its script.
    Show(TemplateName),
    /// Run a template on a target; waits and streams its output unless --no-wait (on a
    /// reviewed target, or a template asking for review, it first waits for the reviews).
    Run(TemplateRunArgs),
    /// Pull the templates repository now (admins).
    Refresh,
}

#[derive(clap::Args, Debug)]
pub struct TemplateName {
    /// The template's name (`runops templates list`).
    #[arg(value_name = "NAME")]
    pub name: String,
}

#[derive(clap::Args, Debug)]
pub struct TemplateRunArgs {
    /// The template's name (`runops templates list`).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The target to run on.
    #[arg(short = 't', long = "target", value_name = "TARGET")]
    pub target: String,
    /// A parameter's value; repeat for each parameter.
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Why you run it (kept with the task, shown to reviewers).
    #[arg(short = 'm', long, value_name = "MESSAGE")]
    pub message: Option<String>,
    /// Print the task id and return at once instead of following the task.
    #[arg(long = "no-wait", visible_alias = "no_wait")]
    pub no_wait: bool,
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

impl TemplatesCmd {
    pub async fn run(self) -> CliResult<u8> {
        let json = self.json;
        let client = crate::connect()?;
        match self.cmd {
            TemplatesSub::List => {
                let list = client.list_templates().await?;
                print_list(&list, json)?;
            }
            TemplatesSub::Refresh => {
                let list = client.refresh_templates().await?;
                print_list(&list, json)?;
            }
            TemplatesSub::Show(TemplateName { name }) => {
                let t = client.get_template(&name).await?;
                if json {
                    output::print_json(&t)?;
                } else {
                    output::print(&template_details(&t))?;
                }
            }
            TemplatesSub::Run(args) => return run(&client, args, json).await,
        }
        Ok(0)
    }
}

async fn run(client: &runops_client::Client, args: TemplateRunArgs, json: bool) -> CliResult<u8> {
    let mut params = BTreeMap::new();
    for (k, v) in args.params {
        if params.insert(k.clone(), v).is_some() {
            return Err(CliError::new(format!("--param {k} is given twice")));
        }
    }
    let req = TemplateRun {
        target: args.target,
        params,
        message: args.message,
    };
    let task = client.run_template(&args.name, &req).await?;
    // What the server made: the proof and the reviews bind this script.
    let created = TaskCreate {
        target: task.target.clone(),
        script: task.script.clone(),
        message: task.message.clone(),
        kind: Some(task.kind.clone()),
    };
    crate::tasks::follow_created(client, &created, task, args.no_wait, json).await
}

fn print_list(list: &TemplateList, json: bool) -> CliResult<()> {
    if json {
        return output::print_json(list);
    }
    let Some(repo) = &list.repo else {
        output::note("this server has no templates repository");
        output::note("hint: start the server with --templates-repo URL (see docs/templates.md)");
        return Ok(());
    };
    let commit = list.commit.as_deref().map(short_sha).unwrap_or("-");
    let pulled = list
        .pulled_at
        .map(|t| output::ago(t, Utc::now()))
        .unwrap_or_else(|| "never".into());
    output::note(&format!(
        "{} ({}) at {commit}, pulled {pulled}",
        cell(repo),
        cell(list.branch.as_deref().unwrap_or("-"))
    ));
    if list.templates.is_empty() {
        output::note("no templates found");
    } else {
        let rows: Vec<Vec<String>> = list
            .templates
            .iter()
            .map(|t| {
                let params: Vec<&str> = t.params.iter().map(|p| p.name.as_str()).collect();
                vec![
                    cell(&t.name),
                    where_cell(t),
                    or_dash(Some(&params.join(", "))),
                    or_dash(t.description.as_deref()),
                ]
            })
            .collect();
        output::print(&output::table(
            &["NAME", "RUNS ON", "PARAMETERS", "DESCRIPTION"],
            &rows,
        ))?;
    }
    for b in &list.broken {
        let at = b.line.map(|l| format!(":{l}")).unwrap_or_default();
        output::note(&format!(
            "warning: {}{at}: {}",
            cell(&b.path),
            cell(&b.error)
        ));
    }
    if let Some(w) = &list.warning {
        output::note(&format!("warning: {}", output::printable(w)));
    }
    Ok(())
}

fn short_sha(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// `targets a, b; tags eu`, `any target`.
fn where_cell(t: &Template) -> String {
    let mut parts = Vec::new();
    if t.targets.iter().any(|n| n == "*") {
        parts.push("any target".to_string());
    } else if !t.targets.is_empty() {
        parts.push(format!("targets {}", t.targets.join(", ")));
    }
    if !t.tags.is_empty() {
        parts.push(format!("tags {}", t.tags.join(", ")));
    }
    cell(&parts.join("; "))
}

fn template_details(t: &Template) -> String {
    let review = match (&t.review, t.reviewers.is_empty()) {
        (Some(r), true) => r.clone(),
        (Some(r), false) => format!("{r} ({})", t.reviewers.join(", ")),
        (None, _) => "the target's".into(),
    };
    let mut out = output::key_values(&[
        ("name", cell(&t.name)),
        ("file", cell(&t.path)),
        ("description", or_dash(t.description.as_deref())),
        ("runs on", where_cell(t)),
        ("review", cell(&review)),
    ]);
    if t.params.is_empty() {
        out.push_str("parameters: -\n");
    } else {
        out.push_str("parameters:\n");
        for p in &t.params {
            let mut line = format!("  {} ({}", cell(&p.name), p.kind);
            if p.required {
                line.push_str(", required");
            }
            if let Some(d) = &p.default {
                line.push_str(&format!(", default {}", cell(d)));
            }
            if !p.options.is_empty() {
                line.push_str(&format!(", one of {}", cell(&p.options.join(", "))));
            }
            if let Some(re) = &p.pattern {
                line.push_str(&format!(", pattern {}", cell(re)));
            }
            line.push(')');
            if let Some(d) = &p.description {
                line.push_str(&format!(": {}", cell(d)));
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push_str("script:\n");
    for line in output::printable(t.body.as_deref().unwrap_or("")).lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::Command;
    use crate::tests::{parse, parse_err};

    #[test]
    fn run_takes_repeated_params() {
        let Command::Templates(c) = parse(&[
            "templates",
            "run",
            "end-sessions",
            "-t",
            "db",
            "--param",
            "user=alice",
            "-p",
            "mode=a=b",
        ]) else {
            panic!("not templates");
        };
        let super::TemplatesSub::Run(a) = c.cmd else {
            panic!("not run");
        };
        assert_eq!(
            a.params,
            [
                ("user".into(), "alice".into()),
                ("mode".into(), "a=b".into())
            ]
        );
        assert!(
            parse_err(&["templates", "run", "x", "-t", "db", "-p", "novalue"])
                .contains("KEY=VALUE")
        );
    }
}
