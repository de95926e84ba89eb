//! The few Slack Web API methods the app calls, with the bot token
//! (`Authorization: Bearer xoxb-...`): `chat.postMessage`, `chat.update`, `users.info`,
//! `views.open`, and posts to a command's `response_url`. Slack answers HTTP 200 with
//! `{"ok": false, "error": "..."}` for most failures; both kinds become a [`SlackError`].

use serde_json::{Value, json};
use std::time::Duration;

/// Every call is bounded: a slow Slack costs a background task, never a handler.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call failed; `retryable` when trying again later may work (network, 5xx,
/// `429 Too Many Requests`).
#[derive(Debug, Clone)]
pub struct SlackError {
    pub message: String,
    pub retryable: bool,
}

impl std::fmt::Display for SlackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A posted message: where it is, to update it later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedMessage {
    pub channel: String,
    pub ts: String,
}

/// What `users.info` tells about a Slack user.
#[derive(Debug, Clone, Default)]
pub struct SlackUser {
    /// `profile.email`: present when the app has `users:read.email`.
    pub email: Option<String>,
    pub deleted: bool,
    pub is_bot: bool,
    /// `is_email_confirmed` when Slack sends it.
    pub email_confirmed: Option<bool>,
}

/// The Web API at `base` (`https://slack.com/api`), with the bot token.
pub struct WebApi {
    base: String,
    bot_token: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for WebApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("WebApi").field("base", &self.base).finish()
    }
}

impl WebApi {
    pub fn new(base: &str, bot_token: String) -> anyhow::Result<WebApi> {
        let client = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("runops-slack/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(WebApi {
            base: base.trim_end_matches('/').to_string(),
            bot_token,
            client,
        })
    }

    async fn call(&self, method: &str, body: &Value) -> Result<Value, SlackError> {
        let resp = self
            .client
            .post(format!("{}/{method}", self.base))
            .bearer_auth(&self.bot_token)
            .json(body)
            .send()
            .await;
        answer(method, resp).await
    }

    pub async fn post_message(
        &self,
        channel: &str,
        message: &Value,
    ) -> Result<PostedMessage, SlackError> {
        let mut body = message.clone();
        body["channel"] = json!(channel);
        let got = self.call("chat.postMessage", &body).await?;
        Ok(PostedMessage {
            channel: got["channel"].as_str().unwrap_or(channel).to_string(),
            ts: got["ts"].as_str().unwrap_or_default().to_string(),
        })
    }

    pub async fn update_message(
        &self,
        at: &PostedMessage,
        message: &Value,
    ) -> Result<(), SlackError> {
        let mut body = message.clone();
        body["channel"] = json!(at.channel);
        body["ts"] = json!(at.ts);
        self.call("chat.update", &body).await.map(drop)
    }

    pub async fn open_view(&self, trigger_id: &str, view: &Value) -> Result<(), SlackError> {
        self.call(
            "views.open",
            &json!({"trigger_id": trigger_id, "view": view}),
        )
        .await
        .map(drop)
    }

    /// `users.info` (a GET with `?user=`: the method does not take JSON bodies).
    pub async fn user_info(&self, user_id: &str) -> Result<SlackUser, SlackError> {
        let resp = self
            .client
            .get(format!("{}/users.info", self.base))
            .query(&[("user", user_id)])
            .bearer_auth(&self.bot_token)
            .send()
            .await;
        let got = answer("users.info", resp).await?;
        let user = &got["user"];
        Ok(SlackUser {
            email: user["profile"]["email"]
                .as_str()
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_string),
            deleted: user["deleted"].as_bool().unwrap_or(false),
            is_bot: user["is_bot"].as_bool().unwrap_or(false),
            email_confirmed: user["is_email_confirmed"].as_bool(),
        })
    }

    /// Posts `message` to a command's or an action's `response_url` (no token: the
    /// URL itself is the credential, valid 30 minutes).
    pub async fn respond(&self, response_url: &str, message: &Value) -> Result<(), SlackError> {
        let resp = self.client.post(response_url).json(message).send().await;
        match resp {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(SlackError {
                message: format!("the response URL answered HTTP {}", r.status().as_u16()),
                retryable: r.status().is_server_error(),
            }),
            Err(e) => Err(network("the response URL", e)),
        }
    }
}

fn network(what: &str, e: reqwest::Error) -> SlackError {
    // Never the URL: a response URL is a credential.
    SlackError {
        message: format!("cannot reach {what}: {}", e.without_url()),
        retryable: true,
    }
}

async fn answer(
    method: &str,
    resp: Result<reqwest::Response, reqwest::Error>,
) -> Result<Value, SlackError> {
    let resp = resp.map_err(|e| network(&format!("Slack ({method})"), e))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(SlackError {
            message: format!("Slack answered {method} with HTTP {}", status.as_u16()),
            retryable: status.is_server_error() || status.as_u16() == 429,
        });
    }
    let got: Value = resp.json().await.map_err(|e| SlackError {
        message: format!(
            "Slack's answer to {method} is not JSON: {}",
            e.without_url()
        ),
        retryable: true,
    })?;
    if got["ok"].as_bool() != Some(true) {
        let error = got["error"].as_str().unwrap_or("unknown error");
        return Err(SlackError {
            message: format!("Slack refused {method}: {error}"),
            retryable: matches!(error, "ratelimited" | "internal_error" | "fatal_error"),
        });
    }
    Ok(got)
}
