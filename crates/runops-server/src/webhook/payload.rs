//! What a delivery carries: the event snapshot taken by `emit` ([`event_payload`]),
//! the bodies rendered from it ([`generic_body`], [`slack_body`]) and the signature
//! header ([`signature_header`]). Pure functions, tested here.
//!
//! The snapshot holds a redacted preview of the script, never the script: the
//! outbox keeps it for days and Slack shows it to a channel.

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use runops_proto::api::Task;
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::OnceLock;

use crate::notify::EventKind;

/// Lines of the script a preview shows.
pub const PREVIEW_LINES: usize = 5;

/// Characters of one preview line; longer lines end with `…`.
pub const PREVIEW_LINE_CHARS: usize = 160;

/// Bytes of the script's first lines handed to the redactor: far beyond what the
/// preview shows, so a value cut at this point is never displayed.
const PREVIEW_SCAN_BYTES: usize = 16 * 1024;

/// The redactor of previews: personal data and the detectable secrets (cloud keys,
/// private keys, JWTs, passwords in URLs). The server never sees a task's secret
/// values, so there is nothing more to give it.
fn redactor() -> &'static runops_redact::Redactor {
    static R: OnceLock<runops_redact::Redactor> = OnceLock::new();
    R.get_or_init(|| {
        runops_redact::Redactor::new(&runops_redact::RedactConfig {
            personal_data: true,
            ..Default::default()
        })
    })
}

/// The first [`PREVIEW_LINES`] lines of `script`, redacted, each cut at
/// [`PREVIEW_LINE_CHARS`]; a last line says how many lines were left out.
pub fn script_preview(script: &str) -> String {
    let total = script.lines().count();
    let mut head = String::new();
    for line in script.lines().take(PREVIEW_LINES) {
        if head.len() + line.len() > PREVIEW_SCAN_BYTES {
            let mut cut = PREVIEW_SCAN_BYTES
                .saturating_sub(head.len())
                .min(line.len());
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            head.push_str(&line[..cut]);
            head.push('\n');
            break;
        }
        head.push_str(line);
        head.push('\n');
    }
    let redacted = redactor().redact_str(&head);
    let mut out: Vec<String> = redacted
        .lines()
        .take(PREVIEW_LINES)
        .map(|l| {
            if l.chars().count() > PREVIEW_LINE_CHARS {
                let mut s: String = l.chars().take(PREVIEW_LINE_CHARS).collect();
                s.push('…');
                s
            } else {
                l.to_string()
            }
        })
        .collect();
    if total > PREVIEW_LINES {
        out.push(format!("… ({} more lines)", total - PREVIEW_LINES));
    }
    out.join("\n")
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The event as stored in the outbox and sent by the generic format (plus `event_id`).
/// `detail` is what the emitter adds (`by`, `comment`, `forced`, `reason`...).
pub fn event_payload(kind: EventKind, task: &Task, detail: Value, at: DateTime<Utc>) -> Value {
    json!({
        "event": kind.as_str(),
        "time": rfc3339(at),
        "task": {
            "id": task.id,
            "target": task.target,
            "type": task.kind,
            "creator": task.user,
            "message": task.message,
            "status": task.status,
            "exit_code": task.exit_code,
            "failure_reason": task.failure_reason,
            "failure_message": task.failure_message,
            "created_at": rfc3339(task.created_at),
            "finished_at": task.finished_at.map(rfc3339),
            "script_preview": script_preview(&task.script),
        },
        "detail": if detail.is_object() { detail } else { json!({}) },
    })
}

/// The generic format: the stored payload with the event's id.
pub fn generic_body(event_id: i64, payload: &Value) -> Vec<u8> {
    let mut body = payload.clone();
    if let Some(o) = body.as_object_mut() {
        o.insert("event_id".into(), json!(event_id));
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

/// `X-Runops-Signature`: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub fn signature_header(secret: &str, unix_secs: i64, body: &[u8]) -> String {
    format!("t={unix_secs},v1={}", sign(secret, unix_secs, body))
}

/// The hex HMAC-SHA256 under `secret` of `"<unix_secs>." + body`.
pub fn sign(secret: &str, unix_secs: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(unix_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Slack's mrkdwn control characters, escaped as Slack asks.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The one-line summary of an event (Slack's `text`, the first block).
fn headline(payload: &Value) -> String {
    let task = &payload["task"];
    let detail = &payload["detail"];
    let id = task["id"].as_i64().unwrap_or_default();
    let target = esc(text(task, "target").unwrap_or("?"));
    let creator = esc(text(task, "creator").unwrap_or("?"));
    let by = text(detail, "by").map(esc);
    let why = text(detail, "reason")
        .or_else(|| text(detail, "comment"))
        .map(esc);
    let by_part = by.map(|b| format!(" by {b}")).unwrap_or_default();
    let why_part = why.map(|w| format!(": {w}")).unwrap_or_default();
    match text(payload, "event").unwrap_or_default() {
        "review.requested" => {
            format!(":mag: Review requested: task {id} on `{target}` by {creator}")
        }
        "review.approved" if detail["forced"].as_bool() == Some(true) => {
            format!(
                ":warning: Task {id} on `{target}` was FORCE-APPROVED{by_part} (admin){why_part}"
            )
        }
        "review.approved" => {
            format!(":white_check_mark: Task {id} on `{target}` approved{by_part}{why_part}")
        }
        "review.rejected" => {
            format!(":no_entry: Task {id} on `{target}` rejected{by_part}{why_part}")
        }
        "task.finished" => {
            let exit = task["exit_code"]
                .as_i64()
                .map(|c| format!(" (exit {c})"))
                .unwrap_or_default();
            match text(task, "status") {
                Some("success") => {
                    format!(":white_check_mark: Task {id} on `{target}` succeeded{exit}")
                }
                _ => {
                    let reason = text(task, "failure_reason").unwrap_or("failure");
                    format!(":x: Task {id} on `{target}` failed: {}{exit}", esc(reason))
                }
            }
        }
        other => format!("{} for task {id} on `{target}`", esc(other)),
    }
}

/// A Slack incoming-webhook message: `text` (notifications, fallback) and `blocks`
/// (the summary, the creator's message, the redacted script preview, and for a review
/// request the commands to approve or reject).
pub fn slack_body(payload: &Value) -> Vec<u8> {
    let task = &payload["task"];
    let id = task["id"].as_i64().unwrap_or_default();
    let head = headline(payload);
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": head},
    })];
    let mut facts = format!(
        "*Creator:* {}   *Type:* {}",
        esc(text(task, "creator").unwrap_or("?")),
        esc(text(task, "type").unwrap_or("?"))
    );
    if let Some(m) = text(task, "message") {
        facts.push_str(&format!("\n*Message:* {}", esc(m)));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": facts}]}));
    if let Some(preview) = text(task, "script_preview") {
        // A ``` inside the preview would end the code block early.
        let shown = esc(&preview.replace("```", "'''"));
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": format!("```{shown}```")},
        }));
    }
    if text(payload, "event") == Some("review.requested") {
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": format!(
                "Approve: `runops tasks approve {id}`\nReject: `runops tasks reject {id} --comment \"why\"`"
            )},
        }));
    }
    serde_json::to_vec(&json!({"text": head, "blocks": blocks})).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use runops_proto::TaskStatus;

    fn task(script: &str) -> Task {
        Task {
            id: 42,
            target: "prod-db".into(),
            kind: "postgres".into(),
            script: script.into(),
            message: Some("fix <the> row".into()),
            status: TaskStatus::Success,
            exit_code: Some(0),
            failure_reason: None,
            failure_message: None,
            user: "ana@example.com".into(),
            agent: None,
            redacted: true,
            log_size: 0,
            log_location: None,
            task_logs: "/v1/tasks/42/logs".into(),
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            elapsed_ms: None,
            review: None,
            template: None,
        }
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2 shape: key "Jefe", data "what do ya want for nothing?".
        // Here the data is "<t>.<body>", so check against a known value computed the
        // same way as the docs' openssl example.
        let sig = sign("Jefe", 0, b"what do ya want for nothing?");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"0.what do ya want for nothing?");
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sig, want);
        assert_eq!(sig.len(), 64);
        assert_eq!(
            signature_header("Jefe", 0, b"what do ya want for nothing?"),
            format!("t=0,v1={want}")
        );
    }

    #[test]
    fn preview_is_redacted_cut_and_counts_the_rest() {
        let script = format!(
            "select * from users where email = 'bob@example.com';\n{}\nl3\nl4\nl5\nl6\nl7",
            "x".repeat(500)
        );
        let p = script_preview(&script);
        assert!(!p.contains("bob@example.com"), "{p}");
        assert!(p.contains("[EMAIL_ADDRESS]"), "{p}");
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines.len(), PREVIEW_LINES + 1, "{p}");
        assert_eq!(lines[1].chars().count(), PREVIEW_LINE_CHARS + 1);
        assert!(lines[1].ends_with('…'));
        assert_eq!(lines[5], "… (2 more lines)");
        assert_eq!(script_preview("echo hi"), "echo hi");
    }

    #[test]
    fn generic_body_is_the_payload_with_the_event_id() {
        let p = event_payload(
            EventKind::TaskFinished,
            &task("echo hi"),
            json!({}),
            Utc::now(),
        );
        let body: Value = serde_json::from_slice(&generic_body(7, &p)).unwrap();
        assert_eq!(body["event"], "task.finished");
        assert_eq!(body["event_id"], 7);
        assert_eq!(body["task"]["id"], 42);
        assert_eq!(body["task"]["target"], "prod-db");
        assert_eq!(body["task"]["creator"], "ana@example.com");
        assert_eq!(body["task"]["status"], "success");
        assert_eq!(body["task"]["exit_code"], 0);
        assert_eq!(body["task"]["script_preview"], "echo hi");
        assert!(body["task"].get("script").is_none(), "never the script");
    }

    #[test]
    fn slack_review_request_has_preview_and_commands_escaped() {
        let p = event_payload(
            EventKind::ReviewRequested,
            &task("delete from t where mail = 'eve@example.com' and a < b"),
            json!({}),
            Utc::now(),
        );
        let body: Value = serde_json::from_slice(&slack_body(&p)).unwrap();
        let all = body.to_string();
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .contains("Review requested: task 42")
        );
        assert!(all.contains("runops tasks approve 42"), "{all}");
        assert!(all.contains("runops tasks reject 42 --comment"), "{all}");
        assert!(
            all.contains("[EMAIL_ADDRESS]") && !all.contains("eve@example.com"),
            "{all}"
        );
        assert!(
            all.contains("a &lt; b") && all.contains("fix &lt;the&gt; row"),
            "{all}"
        );
    }

    #[test]
    fn slack_marks_a_forced_approval() {
        let p = event_payload(
            EventKind::ReviewApproved,
            &task("select 1"),
            json!({"by": "root@example.com", "forced": true, "reason": "outage"}),
            Utc::now(),
        );
        let body: Value = serde_json::from_slice(&slack_body(&p)).unwrap();
        let text = body["text"].as_str().unwrap();
        assert!(
            text.contains("FORCE-APPROVED by root@example.com"),
            "{text}"
        );
        assert!(text.contains("outage"), "{text}");
        assert!(!body.to_string().contains("runops tasks approve"));
    }
}
