//! `runops audit list`: the organisation's audit log (admins), newest first: who did
//! what, when, from where.

use crate::error::CliResult;
use crate::output::{self, cell, or_dash};
use chrono::{DateTime, Utc};
use runops_proto::api::{AuditEvent, AuditQuery};

/// Events shown when `--limit` is not given (the server's own default).
const DEFAULT_LIMIT: u32 = 100;

#[derive(clap::Args, Debug)]
pub struct AuditCmd {
    #[command(subcommand)]
    pub cmd: AuditSub,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true, display_order = 900)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum AuditSub {
    /// List audit events, newest first (admins only).
    #[command(visible_alias = "ls")]
    List(AuditListArgs),
}

#[derive(clap::Args, Debug)]
pub struct AuditListArgs {
    /// At most this many events (at most 1000).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Only this action: login, user.create, token.create, token.revoke, target.create,
    /// target.update, target.delete, task.create, task.kill, agent.connect,
    /// agent.disconnect, agent.lost, agent.token-revoked.
    #[arg(long, value_name = "ACTION")]
    pub action: Option<String>,
    /// Only events of this actor: a user's e-mail, or `agent` / `system`.
    #[arg(long, value_name = "EMAIL")]
    pub actor: Option<String>,
    /// Only events about this object: a task id, a target name, a user's e-mail...
    #[arg(long, value_name = "ID")]
    pub object: Option<String>,
    /// Only events older than this event id (paging).
    #[arg(long, value_name = "ID")]
    pub before: Option<i64>,
}

impl AuditCmd {
    pub async fn run(self) -> CliResult<u8> {
        let client = crate::connect()?;
        match self.cmd {
            AuditSub::List(args) => {
                let q = AuditQuery {
                    limit: Some(args.limit),
                    before: args.before,
                    action: args.action.filter(|a| !a.trim().is_empty()),
                    actor: args.actor.filter(|a| !a.trim().is_empty()),
                    object: args.object.filter(|o| !o.trim().is_empty()),
                };
                let events = client.list_audit(&q).await?;
                if self.json {
                    output::print_json(&events)?;
                } else if events.is_empty() {
                    output::note("no audit events");
                } else {
                    output::print(&output::table(
                        &["ID", "WHEN", "ACTOR", "FROM", "ACTION", "OBJECT", "DETAIL"],
                        &rows(&events, Utc::now()),
                    ))?;
                }
            }
        }
        Ok(0)
    }
}

/// One row per event: ID, WHEN, ACTOR, FROM, ACTION, OBJECT, DETAIL.
fn rows(events: &[AuditEvent], now: DateTime<Utc>) -> Vec<Vec<String>> {
    events
        .iter()
        .map(|e| {
            let actor = match &e.actor {
                Some(email) => cell(email),
                None => e.actor_kind.clone(),
            };
            let object = match (&e.object_kind, &e.object_id) {
                (Some(k), Some(id)) => cell(&format!("{k} {id}")),
                (_, id) => or_dash(id.as_deref()),
            };
            let detail = match &e.detail {
                serde_json::Value::Object(m) if m.is_empty() => "-".to_string(),
                serde_json::Value::Null => "-".to_string(),
                d => cell(&d.to_string()),
            };
            vec![
                e.id.to_string(),
                output::ago(e.at, now),
                actor,
                or_dash(e.remote_addr.as_deref()),
                cell(&e.action),
                object,
                detail,
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use crate::tests::{parse, parse_err};
    use chrono::TimeZone;

    fn audit(args: &[&str]) -> AuditCmd {
        let mut full = vec!["audit"];
        full.extend_from_slice(args);
        match parse(&full) {
            Command::Audit(a) => a,
            other => panic!("not audit: {other:?}"),
        }
    }

    #[test]
    fn audit_list_parses_its_filters() {
        let a = audit(&["list", "--json", "--limit", "5", "--action", "task.kill"]);
        assert!(a.json);
        let AuditSub::List(l) = a.cmd;
        assert_eq!(l.limit, 5);
        assert_eq!(l.action.as_deref(), Some("task.kill"));
        let AuditSub::List(l) =
            audit(&["list", "--actor", "ana@example.com", "--object", "42"]).cmd;
        assert_eq!(
            (l.actor.as_deref(), l.object.as_deref()),
            (Some("ana@example.com"), Some("42"))
        );
        let AuditSub::List(l) = audit(&["ls"]).cmd;
        assert_eq!(l.limit, DEFAULT_LIMIT);
        assert!(l.action.is_none() && l.actor.is_none() && l.object.is_none());
        assert!(parse_err(&["audit", "list", "--limit", "0"]).contains("0"));
    }

    #[test]
    fn rows_show_the_actor_or_its_kind_and_never_break_lines() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 1, 0, 0).unwrap();
        let ev = |actor: Option<&str>, kind: &str| AuditEvent {
            id: 3,
            at: now,
            actor: actor.map(String::from),
            actor_kind: kind.into(),
            action: "target.update".into(),
            object_kind: Some("target".into()),
            object_id: Some("db\nx".into()),
            remote_addr: Some("127.0.0.1".into()),
            detail: serde_json::json!({"changed": ["description"]}),
        };
        let r = rows(
            &[ev(Some("ana@example.com"), "user"), ev(None, "system")],
            now,
        );
        assert_eq!(r[0][2], "ana@example.com");
        assert_eq!(r[1][2], "system");
        assert_eq!(r[0][3], "127.0.0.1");
        assert_eq!(r[0][5], "target db x");
        assert_eq!(r[0][6], r#"{"changed":["description"]}"#);
    }
}
