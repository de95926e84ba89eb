//! `runops webhooks create|list|delete|deliveries` (admins): the organisation's
//! receivers of `review.requested`, `review.approved`, `review.rejected` and
//! `task.finished` events. `docs/webhooks.md` describes the payloads and how to verify
//! their signature.

use crate::error::CliResult;
use crate::output::{self, cell, or_dash};
use chrono::{DateTime, Utc};
use runops_proto::webhook::{
    DeliveryListQuery, DeliveryStatus, WEBHOOK_EVENTS, Webhook, WebhookCreate, WebhookDelivery,
    WebhookFormat,
};

#[derive(clap::Args, Debug)]
pub struct WebhooksCmd {
    #[command(subcommand)]
    pub cmd: WebhooksSub,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true, display_order = 900)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum WebhooksSub {
    /// Add a webhook; prints only its signing secret (shown this once).
    Create(CreateArgs),
    /// List the webhooks with their pending and failed deliveries.
    #[command(visible_alias = "ls")]
    List,
    /// Delete a webhook (its pending deliveries are dropped).
    #[command(visible_alias = "rm")]
    Delete(IdArg),
    /// A webhook's deliveries, newest first: status, attempts, last error.
    Deliveries(DeliveriesArgs),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Where events are POSTed (http:// or https://).
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// `generic` (signed JSON) or `slack` (an incoming-webhook message).
    #[arg(long, value_name = "FORMAT", default_value = "generic", value_parser = parse_format)]
    pub format: WebhookFormat,
    /// Comma-separated events to receive (default: all): review.requested,
    /// review.approved, review.rejected, task.finished.
    #[arg(long, value_name = "EVENTS", value_delimiter = ',')]
    pub events: Vec<String>,
}

fn parse_format(s: &str) -> Result<WebhookFormat, String> {
    s.parse()
}

#[derive(clap::Args, Debug)]
pub struct IdArg {
    /// The webhook's id (`runops webhooks list`).
    #[arg(value_name = "ID")]
    pub id: i64,
}

#[derive(clap::Args, Debug)]
pub struct DeliveriesArgs {
    /// The webhook's id (`runops webhooks list`).
    #[arg(value_name = "ID")]
    pub id: i64,
    /// At most this many deliveries (default 100, at most 1000).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
}

impl WebhooksCmd {
    pub async fn run(self) -> CliResult<u8> {
        let json = self.json;
        let client = crate::connect()?;
        match self.cmd {
            WebhooksSub::Create(args) => {
                let created = client
                    .create_webhook(&WebhookCreate {
                        url: args.url,
                        format: args.format,
                        events: args.events,
                    })
                    .await?;
                if json {
                    output::print_json(&created)?;
                } else {
                    // Only the secret on stdout, so `SECRET=$(runops webhooks create ...)` works.
                    output::print(&format!("{}\n", created.secret))?;
                    output::note(&format!(
                        "webhook {} created ({}; {}); its signing secret above is shown only this once",
                        created.webhook.id,
                        created.webhook.format,
                        created.webhook.events.join(", ")
                    ));
                }
            }
            WebhooksSub::List => {
                let hooks = client.list_webhooks().await?;
                if json {
                    output::print_json(&hooks)?;
                } else if hooks.is_empty() {
                    output::note("no webhooks; add one with `runops webhooks create --url URL`");
                } else {
                    output::print(&webhooks_table(&hooks, Utc::now()))?;
                }
            }
            WebhooksSub::Delete(IdArg { id }) => {
                client.delete_webhook(id).await?;
                if json {
                    output::print_json(&serde_json::json!({ "deleted": id }))?;
                } else {
                    output::print(&format!("webhook {id} deleted\n"))?;
                }
            }
            WebhooksSub::Deliveries(args) => {
                let q = DeliveryListQuery { limit: args.limit };
                let list = client.list_webhook_deliveries(args.id, &q).await?;
                if json {
                    output::print_json(&list)?;
                } else if list.is_empty() {
                    output::note(&format!("no deliveries to webhook {} yet", args.id));
                } else {
                    output::print(&deliveries_table(&list, Utc::now()))?;
                }
            }
        }
        Ok(0)
    }
}

fn events_cell(events: &[String]) -> String {
    if WEBHOOK_EVENTS.iter().all(|e| events.iter().any(|x| x == e)) {
        "all".to_string()
    } else {
        cell(&events.join(","))
    }
}

fn webhooks_table(hooks: &[Webhook], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = hooks
        .iter()
        .map(|w| {
            vec![
                w.id.to_string(),
                w.format.to_string(),
                events_cell(&w.events),
                w.pending.to_string(),
                w.failed.to_string(),
                output::ago(w.created_at, now),
                cell(&w.url),
            ]
        })
        .collect();
    output::table(
        &[
            "ID", "FORMAT", "EVENTS", "PENDING", "FAILED", "CREATED", "URL",
        ],
        &rows,
    )
}

fn deliveries_table(list: &[WebhookDelivery], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            let when = match d.status {
                DeliveryStatus::Delivered => d
                    .delivered_at
                    .map(|t| output::ago(t, now))
                    .unwrap_or_default(),
                DeliveryStatus::Pending => match d.next_attempt_at {
                    Some(t) if t > now => format!(
                        "next in {}",
                        output::short_duration((t - now).num_seconds().max(0) as u64)
                    ),
                    _ => "due".to_string(),
                },
                DeliveryStatus::Failed => "given up".to_string(),
            };
            let last = match (d.last_status, d.last_error.as_deref()) {
                (_, Some(e)) => e.to_string(),
                (Some(s), None) => format!("HTTP {s}"),
                (None, None) => String::new(),
            };
            vec![
                d.id.to_string(),
                cell(&d.event),
                d.task_id.to_string(),
                d.status.to_string(),
                d.attempts.to_string(),
                when,
                or_dash(Some(&last)),
            ]
        })
        .collect();
    output::table(
        &["ID", "EVENT", "TASK", "STATUS", "ATTEMPTS", "WHEN", "LAST"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use crate::tests::{parse, parse_err};

    fn webhooks(args: &[&str]) -> WebhooksCmd {
        let mut full = vec!["webhooks"];
        full.extend_from_slice(args);
        match parse(&full) {
            Command::Webhooks(w) => w,
            other => panic!("not webhooks: {other:?}"),
        }
    }

    #[test]
    fn webhooks_create_list_delete_and_deliveries_parse() {
        let WebhooksSub::Create(c) = webhooks(&[
            "create",
            "--url",
            "https://h.example/x",
            "--format",
            "slack",
            "--events",
            "review.requested,task.finished",
        ])
        .cmd
        else {
            panic!("not create")
        };
        assert_eq!(c.url, "https://h.example/x");
        assert_eq!(c.format, WebhookFormat::Slack);
        assert_eq!(c.events, ["review.requested", "task.finished"]);
        let WebhooksSub::Create(c) = webhooks(&["create", "--url", "http://h"]).cmd else {
            panic!("not create")
        };
        assert_eq!(c.format, WebhookFormat::Generic);
        assert!(c.events.is_empty());
        assert!(webhooks(&["ls", "--json"]).json);
        assert!(matches!(
            webhooks(&["delete", "3"]).cmd,
            WebhooksSub::Delete(IdArg { id: 3 })
        ));
        assert!(matches!(
            webhooks(&["deliveries", "3", "--limit", "5"]).cmd,
            WebhooksSub::Deliveries(DeliveriesArgs {
                id: 3,
                limit: Some(5)
            })
        ));
        let e = parse_err(&["webhooks", "create", "--url", "http://h", "--format", "xml"]);
        assert!(e.contains("unknown webhook format `xml`"), "{e}");
    }

    #[test]
    fn deliveries_table_shows_status_attempts_and_last_error() {
        let now = Utc::now();
        let d = |id, status, err: Option<&str>| WebhookDelivery {
            id,
            event: "task.finished".into(),
            event_id: id,
            task_id: 9,
            status,
            attempts: 3,
            created_at: now,
            last_attempt_at: Some(now),
            next_attempt_at: Some(now + chrono::Duration::seconds(30)),
            last_status: Some(200),
            last_error: err.map(String::from),
            delivered_at: Some(now),
        };
        let t = deliveries_table(
            &[
                d(2, DeliveryStatus::Pending, Some("cannot connect: refused")),
                d(1, DeliveryStatus::Delivered, None),
            ],
            now,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID"), "{t}");
        assert!(
            lines[1].contains("pending") && lines[1].contains("next in 30s"),
            "{t}"
        );
        assert!(lines[1].ends_with("cannot connect: refused"), "{t}");
        assert!(
            lines[2].contains("delivered") && lines[2].ends_with("HTTP 200"),
            "{t}"
        );
    }
}
