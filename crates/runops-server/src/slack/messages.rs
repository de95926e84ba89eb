//! The app's messages in Slack's Block Kit: pure functions of a task, tested here.
//! Every text a user typed is escaped (`&`, `<`, `>`) and every script or output is
//! shown redacted and cut ([`script_preview`]): a channel sees them.

use runops_proto::TaskStatus;
use runops_proto::api::Task;
use serde_json::{Value, json};

use crate::webhook::payload::{esc, script_preview};

/// `action_id` of the buttons; the `value` of each is the task id.
pub const APPROVE_ACTION: &str = "runops_approve";
pub const REJECT_ACTION: &str = "runops_reject";
pub const RUN_ACTION: &str = "runops_run";

/// `callback_id` of the reject dialog, and its reason field's block and action ids.
pub const REJECT_VIEW: &str = "runops_reject";
pub const REASON_BLOCK: &str = "reason";
pub const REASON_INPUT: &str = "reason";

/// Characters of a rejection reason the dialog accepts (the API's own limit is larger).
pub const MAX_REASON_CHARS: u32 = 2000;

fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

fn code(text: &str) -> Value {
    // A ``` inside would end the code block early.
    section(format!("```{}```", esc(&text.replace("```", "'''"))))
}

fn facts(task: &Task) -> Value {
    let mut text = format!(
        "*Target:* `{}`   *Type:* {}   *Creator:* {}",
        esc(&task.target),
        esc(&task.kind),
        esc(&task.user)
    );
    if let Some(m) = task.message.as_deref().filter(|m| !m.is_empty()) {
        text.push_str(&format!("\n*Message:* {}", esc(m)));
    }
    json!({"type": "context", "elements": [{"type": "mrkdwn", "text": text}]})
}

fn link(task: &Task, web_url: &str) -> Value {
    json!({"type": "context", "elements": [{"type": "mrkdwn",
        "text": format!("<{web_url}/tasks/{}|Open task {} in runops>", task.id, task.id)}]})
}

fn button(text: &str, action_id: &str, style: Option<&str>, value: &str) -> Value {
    let mut b = json!({
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id,
        "value": value,
    });
    if let Some(s) = style {
        b["style"] = json!(s);
    }
    b
}

fn message(text: String, blocks: Vec<Value>) -> Value {
    json!({"text": text, "blocks": blocks})
}

/// Posted to the target's channel when a task waits for review: the redacted script
/// preview and the Approve / Reject buttons.
pub fn review_requested(task: &Task, web_url: &str) -> Value {
    // The reviewed version travels with the click: an approval binds what was shown.
    let value = match &task.review {
        Some(r) => format!("{}:{}", task.id, r.sha256),
        None => task.id.to_string(),
    };
    let head = format!(
        ":mag: Review requested: task {} on `{}` by {}",
        task.id,
        esc(&task.target),
        esc(&task.user)
    );
    message(
        head.clone(),
        vec![
            section(head),
            facts(task),
            code(&script_preview(&task.script)),
            json!({
                "type": "actions",
                "block_id": format!("runops_review_{}", task.id),
                "elements": [
                    button("Approve", APPROVE_ACTION, Some("primary"), &value),
                    button("Reject", REJECT_ACTION, Some("danger"), &value),
                ],
            }),
            link(task, web_url),
        ],
    )
}

/// Replaces the review request once decided: who decided, the reason of a rejection,
/// and for an approved task the Run button (only its creator may use it).
pub fn review_decided(
    task: &Task,
    approved: bool,
    by: &str,
    reason: Option<&str>,
    web_url: &str,
) -> Value {
    let why = reason
        .filter(|r| !r.is_empty())
        .map(|r| format!(": {}", esc(r)))
        .unwrap_or_default();
    let head = if approved {
        format!(
            ":white_check_mark: Task {} on `{}` approved by {}{why}",
            task.id,
            esc(&task.target),
            esc(by)
        )
    } else {
        format!(
            ":no_entry: Task {} on `{}` rejected by {}{why}",
            task.id,
            esc(&task.target),
            esc(by)
        )
    };
    let mut blocks = vec![
        section(head.clone()),
        facts(task),
        code(&script_preview(&task.script)),
    ];
    if approved && task.status == TaskStatus::Approved {
        blocks.push(section(format!(
            "{} runs it with the button or `runops tasks run {}`",
            esc(&task.user),
            task.id
        )));
        blocks.push(json!({
            "type": "actions",
            "block_id": format!("runops_run_{}", task.id),
            "elements": [button("Run", RUN_ACTION, Some("primary"), &task.id.to_string())],
        }));
    }
    blocks.push(link(task, web_url));
    message(head, blocks)
}

/// Posted when a task ends: status, exit code, the first lines of its (redacted)
/// output and a link to the web app.
pub fn task_finished(task: &Task, output: &str, web_url: &str) -> Value {
    let exit = task
        .exit_code
        .map(|c| format!(" (exit code {c})"))
        .unwrap_or_default();
    let head = match task.status {
        TaskStatus::Success => format!(
            ":white_check_mark: Task {} on `{}` succeeded{exit}",
            task.id,
            esc(&task.target)
        ),
        _ => {
            let reason = task
                .failure_reason
                .map(|r| r.as_str().to_string())
                .unwrap_or_else(|| task.status.to_string());
            format!(
                ":x: Task {} on `{}` failed: {}{exit}",
                task.id,
                esc(&task.target),
                esc(&reason)
            )
        }
    };
    let mut blocks = vec![section(head.clone()), facts(task)];
    if let Some(m) = task.failure_message.as_deref().filter(|m| !m.is_empty()) {
        blocks.push(section(format!("*Why:* {}", esc(m))));
    }
    let shown = script_preview(output);
    if shown.trim().is_empty() {
        blocks.push(section("_no output_".into()));
    } else {
        blocks.push(code(&shown));
    }
    blocks.push(link(task, web_url));
    message(head, blocks)
}

/// The reject dialog (`views.open`): one required reason; `private_metadata` carries
/// the task id and the message to update.
pub fn reject_dialog(task_id: i64, private_metadata: &str) -> Value {
    json!({
        "type": "modal",
        "callback_id": REJECT_VIEW,
        "private_metadata": private_metadata,
        "title": {"type": "plain_text", "text": format!("Reject task {task_id}")},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [{
            "type": "input",
            "block_id": REASON_BLOCK,
            "label": {"type": "plain_text", "text": "Why? The creator sees this."},
            "element": {
                "type": "plain_text_input",
                "action_id": REASON_INPUT,
                "multiline": true,
                "max_length": MAX_REASON_CHARS,
            },
        }],
    })
}

/// A reply only the user who typed the command (or clicked) sees.
pub fn ephemeral(text: &str) -> Value {
    json!({"response_type": "ephemeral", "text": text})
}

/// A short task summary for `/runops tasks show`.
pub fn task_summary(task: &Task, web_url: &str) -> Value {
    let mut text = format!(
        "Task {} on `{}` is *{}*",
        task.id,
        esc(&task.target),
        task.status
    );
    if let Some(c) = task.exit_code {
        text.push_str(&format!(" (exit code {c})"));
    }
    if let Some(r) = task.failure_reason {
        text.push_str(&format!(": {}", r.as_str()));
    }
    json!({
        "response_type": "ephemeral",
        "text": text,
        "blocks": [section(text.clone()), facts(task), link(task, web_url)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn task(status: TaskStatus) -> Task {
        Task {
            id: 42,
            target: "prod-db".into(),
            kind: "postgres".into(),
            script: "delete from t where mail = 'eve@example.com' and a < b".into(),
            message: Some("fix <the> row".into()),
            status,
            exit_code: None,
            failure_reason: None,
            failure_message: None,
            user: "ana@example.com".into(),
            agent: None,
            redacted: true,
            log_size: 0,
            log_location: None,
            task_logs: "/v1/tasks/42/logs".into(),
            template: None,
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            elapsed_ms: None,
            review: None,
        }
    }

    /// Block Kit's rules the messages must follow (Slack rejects a message otherwise):
    /// a fallback `text`, known block types, buttons with text, action_id and value.
    fn assert_block_kit(msg: &Value) {
        assert!(msg["text"].as_str().is_some_and(|t| !t.is_empty()), "{msg}");
        for b in msg["blocks"].as_array().expect("blocks") {
            match b["type"].as_str().unwrap() {
                "section" => assert_eq!(b["text"]["type"], "mrkdwn", "{b}"),
                "context" => assert!(b["elements"].as_array().is_some_and(|e| !e.is_empty())),
                "actions" => {
                    for e in b["elements"].as_array().unwrap() {
                        assert_eq!(e["type"], "button");
                        assert_eq!(e["text"]["type"], "plain_text");
                        assert!(e["action_id"].as_str().is_some());
                        assert!(e["value"].as_str().is_some());
                    }
                }
                other => panic!("unexpected block type {other}"),
            }
            let t = b["text"]["text"].as_str().unwrap_or_default();
            assert!(
                t.chars().count() <= 3000,
                "a section's text is at most 3000 characters"
            );
        }
    }

    #[test]
    fn review_request_has_redacted_preview_and_both_buttons() {
        let msg = review_requested(
            &task(TaskStatus::PendingReview),
            "https://runops.example.com",
        );
        assert_block_kit(&msg);
        let all = msg.to_string();
        assert!(
            all.contains("[EMAIL_ADDRESS]") && !all.contains("eve@example.com"),
            "{all}"
        );
        assert!(
            all.contains("a &lt; b") && all.contains("fix &lt;the&gt; row"),
            "{all}"
        );
        let actions = msg["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "actions")
            .unwrap();
        let ids: Vec<&str> = actions["elements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [APPROVE_ACTION, REJECT_ACTION]);
        assert_eq!(actions["elements"][0]["value"], "42");
        assert!(all.contains("<https://runops.example.com/tasks/42|Open task 42 in runops>"));
    }

    #[test]
    fn decisions_replace_the_buttons() {
        let ok = review_decided(
            &task(TaskStatus::Approved),
            true,
            "bob@example.com",
            None,
            "u",
        );
        assert_block_kit(&ok);
        assert!(
            ok["text"]
                .as_str()
                .unwrap()
                .contains("approved by bob@example.com")
        );
        assert!(ok.to_string().contains(RUN_ACTION));
        assert!(!ok.to_string().contains(APPROVE_ACTION));
        let no = review_decided(
            &task(TaskStatus::Rejected),
            false,
            "bob@example.com",
            Some("not <now>"),
            "u",
        );
        assert_block_kit(&no);
        assert!(
            no["text"]
                .as_str()
                .unwrap()
                .contains("rejected by bob@example.com: not &lt;now&gt;")
        );
        assert!(!no.to_string().contains(RUN_ACTION));
    }

    #[test]
    fn finished_shows_exit_code_and_the_first_output_lines() {
        let mut t = task(TaskStatus::Failure);
        t.exit_code = Some(3);
        t.failure_reason = Some(runops_proto::FailureReason::ExitCode);
        let out = (1..=20).map(|i| format!("line {i}\n")).collect::<String>();
        let msg = task_finished(&t, &out, "u");
        assert_block_kit(&msg);
        let head = msg["text"].as_str().unwrap();
        assert!(head.contains("failed: exit-code (exit code 3)"), "{head}");
        let all = msg.to_string();
        assert!(
            all.contains("line 1\\nline 2") && all.contains("more lines"),
            "{all}"
        );
        assert!(!all.contains("line 20"), "{all}");
    }

    #[test]
    fn the_reject_dialog_is_a_modal_with_one_required_reason() {
        let v = reject_dialog(42, "{\"task\":42}");
        assert_eq!(v["type"], "modal");
        assert_eq!(v["callback_id"], REJECT_VIEW);
        assert_eq!(v["private_metadata"], "{\"task\":42}");
        assert_eq!(v["blocks"][0]["type"], "input");
        assert_eq!(v["blocks"][0]["block_id"], REASON_BLOCK);
        assert_eq!(v["blocks"][0]["element"]["action_id"], REASON_INPUT);
        assert!(v["blocks"][0].get("optional").is_none(), "required");
        assert!(
            v["title"]["text"].as_str().unwrap().chars().count() <= 24,
            "Slack's title limit"
        );
    }
}
