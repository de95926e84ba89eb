//! The Slack app: the `/runops` slash command, the Approve / Reject / Run buttons
//! (interactivity), and messages posted with the bot token to a target's `channel`.
//! See `docs/slack.md` for the app manifest and the set-up.
//!
//! Every request from Slack is checked with the signing secret ([`verify`]) before
//! anything else, and answered at once (Slack waits 3 s at most); the work runs in
//! the background and answers through the request's `response_url` ([`handlers`]).
//! A Slack user acts as the runops user with the same e-mail: Slack's `users.info`
//! gives it (the e-mail Slack verified; the app needs `users:read.email`). An unknown
//! user is told how to get an account, and can do nothing else. Tasks are created,
//! approved, rejected and run through the same handlers as the API's, so every rule
//! (reviews, roles, self-review, audit) applies unchanged. A target whose agent
//! enforces `JWK_URL` refuses Slack tasks: they carry no identity token.
//!
//! Review requests, decisions and finished tasks reach the channel through
//! [`events`]: [`crate::notify::emit`] hands them over, one background worker posts
//! them in order, with retries.
//!
//! Files: [`verify`] (signatures), [`command`] (the slash command's words),
//! [`messages`] (Block Kit), [`api`] (the Web API client), [`handlers`] (the two
//! endpoints), [`events`] (the poster), this file (settings, user mapping).

pub mod api;
pub mod command;
pub mod events;
pub mod handlers;
pub mod messages;
pub mod verify;

use std::collections::HashMap;
use std::sync::Mutex;

use crate::auth::{Credential, UserAuth};
use crate::http::AppState;
use api::{PostedMessage, WebApi};

/// Slack's Web API.
pub const DEFAULT_API_URL: &str = "https://slack.com/api";

/// Review messages remembered (to update them in place) at most; beyond, the oldest
/// task's is forgotten and its decision is posted as a new message.
pub const MAX_REMEMBERED_MESSAGES: usize = 10_000;

/// clap args of the Slack app, flattened into `runops server`.
#[derive(clap::Args, Clone)]
pub struct SlackArgs {
    /// The Slack app's signing secret (Basic Information → App Credentials); with --slack-bot-token, enables /slack/commands and /slack/interactivity
    #[arg(long, env = "RUNOPS_SLACK_SIGNING_SECRET", hide_env_values = true)]
    pub slack_signing_secret: Option<String>,
    /// The Slack app's bot token (`xoxb-...`, OAuth & Permissions)
    #[arg(long, env = "RUNOPS_SLACK_BOT_TOKEN", hide_env_values = true)]
    pub slack_bot_token: Option<String>,
    /// Slack's Web API base URL
    #[arg(long, env = "RUNOPS_SLACK_API_URL", default_value = DEFAULT_API_URL)]
    pub slack_api_url: String,
}

impl std::fmt::Debug for SlackArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets: whether they are set, and the URL.
        f.debug_struct("SlackArgs")
            .field("slack_signing_secret", &self.slack_signing_secret.is_some())
            .field("slack_bot_token", &self.slack_bot_token.is_some())
            .field("slack_api_url", &self.slack_api_url)
            .finish()
    }
}

impl Default for SlackArgs {
    fn default() -> SlackArgs {
        SlackArgs {
            slack_signing_secret: None,
            slack_bot_token: None,
            slack_api_url: DEFAULT_API_URL.into(),
        }
    }
}

/// The configured app, shared by the handlers and the poster.
pub struct SlackApp {
    signing_secret: String,
    pub api: WebApi,
    /// The organisation Slack users belong to (the server's first one).
    pub org_id: i64,
    /// The web app's base URL, for links.
    pub web_url: String,
    /// Review requests posted, by task: decisions update them in place.
    posted: Mutex<HashMap<i64, PostedMessage>>,
    /// Tasks whose end was posted (the newest [`MAX_REMEMBERED_MESSAGES`]): an end
    /// reported twice is posted once.
    finished: Mutex<std::collections::VecDeque<i64>>,
    pub events: events::Queue,
}

impl std::fmt::Debug for SlackApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the signing secret (nor the token, which `WebApi` leaves out).
        f.debug_struct("SlackApp")
            .field("api", &self.api)
            .field("org_id", &self.org_id)
            .field("web_url", &self.web_url)
            .finish_non_exhaustive()
    }
}

impl SlackApp {
    /// `None` when Slack is not configured; an error when only half of it is.
    pub fn from_args(
        args: &SlackArgs,
        org_id: Option<i64>,
        web_url: &str,
    ) -> anyhow::Result<Option<(SlackApp, events::Receiver)>> {
        let clean = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let (secret, token) = match (
            clean(&args.slack_signing_secret),
            clean(&args.slack_bot_token),
        ) {
            (None, None) => return Ok(None),
            (Some(s), Some(t)) => (s, t),
            (Some(_), None) => anyhow::bail!(
                "--slack-signing-secret needs --slack-bot-token (RUNOPS_SLACK_BOT_TOKEN, the app's `xoxb-` token)"
            ),
            (None, Some(_)) => anyhow::bail!(
                "--slack-bot-token needs --slack-signing-secret (RUNOPS_SLACK_SIGNING_SECRET, from the app's Basic Information page)"
            ),
        };
        let Some(org_id) = org_id else {
            anyhow::bail!(
                "the Slack app needs an organisation for its users, and the store has none"
            );
        };
        let api_url = args.slack_api_url.trim();
        let parsed = reqwest::Url::parse(api_url)
            .map_err(|e| anyhow::anyhow!("--slack-api-url `{api_url}` is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            anyhow::bail!("--slack-api-url must start with https:// (or http://)");
        }
        let (queue, receiver) = events::queue();
        Ok(Some((
            SlackApp {
                signing_secret: secret,
                api: WebApi::new(api_url, token)?,
                org_id,
                web_url: web_url.trim_end_matches('/').to_string(),
                posted: Mutex::new(HashMap::new()),
                finished: Mutex::new(std::collections::VecDeque::new()),
                events: queue,
            },
            receiver,
        )))
    }

    pub fn signing_secret(&self) -> &str {
        &self.signing_secret
    }

    /// Remembers where task `task_id`'s review request is.
    pub fn remember(&self, task_id: i64, at: PostedMessage) {
        let mut posted = self.posted.lock().unwrap_or_else(|e| e.into_inner());
        if posted.len() >= MAX_REMEMBERED_MESSAGES
            && !posted.contains_key(&task_id)
            && let Some(oldest) = posted.keys().min().copied()
        {
            posted.remove(&oldest);
        }
        posted.insert(task_id, at);
    }

    /// Where task `task_id`'s review request is, if this server posted or saw it.
    pub fn recall(&self, task_id: i64) -> Option<PostedMessage> {
        let posted = self.posted.lock().unwrap_or_else(|e| e.into_inner());
        posted.get(&task_id).cloned()
    }

    /// True the first time it is called for `task_id`.
    pub fn first_finish(&self, task_id: i64) -> bool {
        let mut done = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        if done.contains(&task_id) {
            return false;
        }
        if done.len() >= MAX_REMEMBERED_MESSAGES {
            done.pop_front();
        }
        done.push_back(task_id);
        true
    }

    pub fn forget(&self, task_id: i64) {
        let mut posted = self.posted.lock().unwrap_or_else(|e| e.into_inner());
        posted.remove(&task_id);
    }
}

/// How an unknown Slack user gets access: told instead of anything they asked.
pub fn link_instructions(email: Option<&str>) -> String {
    match email {
        Some(e) => format!(
            "Your Slack account ({e}) is not a runops user of this server, so /runops can do nothing for you yet.\n\
             Ask a runops admin to create a user with exactly this e-mail: `runops users create --name NAME --email {e} --groups GROUPS`; then try again."
        ),
        None => "Slack did not tell runops your e-mail, so /runops cannot tell who you are.\n\
             Ask your Slack admin to give the runops app the `users:read.email` scope (and reinstall it), and a runops admin to create a user with your Slack e-mail."
            .to_string(),
    }
}

/// The runops user a Slack user acts as: the user of the app's organisation whose
/// e-mail is the one Slack verified for them. `Err` holds what to tell them.
pub async fn identify(st: &AppState, app: &SlackApp, slack_user: &str) -> Result<UserAuth, String> {
    if slack_user.is_empty()
        || slack_user.len() > 64
        || !slack_user.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(format!(
            "`{}` is not a Slack user id",
            crate::error::echo(slack_user)
        ));
    }
    let info = app.api.user_info(slack_user).await.map_err(|e| {
        tracing::warn!(error = %e, slack_user, "cannot look up a Slack user");
        format!("runops cannot look you up in Slack right now ({e}); try again in a moment")
    })?;
    if info.deleted || info.is_bot {
        return Err("deactivated Slack accounts and bots cannot use /runops".into());
    }
    if info.email_confirmed == Some(false) {
        return Err(
            "your Slack e-mail is not confirmed yet: confirm it in Slack, then try again".into(),
        );
    }
    let Some(email) = info.email else {
        return Err(link_instructions(None));
    };
    let user = st
        .store
        .find_user_by_email(app.org_id, &email)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot look up a user");
            "runops cannot read its users right now; try again in a moment".to_string()
        })?;
    let Some(user) = user else {
        tracing::info!(slack_user, email = %email, "a Slack user without a runops account used the app");
        return Err(link_instructions(Some(&email)));
    };
    Ok(UserAuth {
        org_id: app.org_id,
        user,
        via: Credential::Slack {
            user_id: slack_user.to_string(),
        },
        remote_addr: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(secret: Option<&str>, token: Option<&str>, url: &str) -> SlackArgs {
        SlackArgs {
            slack_signing_secret: secret.map(str::to_string),
            slack_bot_token: token.map(str::to_string),
            slack_api_url: url.into(),
        }
    }

    #[tokio::test]
    async fn the_app_needs_both_secrets_and_a_web_api_url() {
        let org = Some(1);
        assert!(
            SlackApp::from_args(&args(None, None, DEFAULT_API_URL), org, "u")
                .unwrap()
                .is_none()
        );
        assert!(
            SlackApp::from_args(&args(Some(" "), Some(""), DEFAULT_API_URL), org, "u")
                .unwrap()
                .is_none(),
            "blank values are unset"
        );
        let half = SlackApp::from_args(&args(Some("s"), None, DEFAULT_API_URL), org, "u");
        assert!(half.unwrap_err().to_string().contains("--slack-bot-token"));
        let half = SlackApp::from_args(&args(None, Some("xoxb-1"), DEFAULT_API_URL), org, "u");
        assert!(
            half.unwrap_err()
                .to_string()
                .contains("--slack-signing-secret")
        );
        let bad = SlackApp::from_args(&args(Some("s"), Some("xoxb-1"), "ftp://x"), org, "u");
        assert!(bad.unwrap_err().to_string().contains("https://"));
        let (app, _rx) = SlackApp::from_args(
            &args(Some("s"), Some("xoxb-1"), DEFAULT_API_URL),
            org,
            "http://h/",
        )
        .unwrap()
        .unwrap();
        assert_eq!(app.web_url, "http://h");
        let shown = format!(
            "{app:?} {:?}",
            args(Some("s3cr3t"), Some("xoxb-1"), DEFAULT_API_URL)
        );
        assert!(
            !shown.contains("xoxb-1") && !shown.contains("s3cr3t"),
            "secrets are never printed: {shown}"
        );
    }

    #[test]
    fn a_decision_updates_the_remembered_request_and_an_end_is_posted_once() {
        let (app, _rx) =
            SlackApp::from_args(&args(Some("s"), Some("t"), DEFAULT_API_URL), Some(1), "u")
                .unwrap()
                .unwrap();
        let at = PostedMessage {
            channel: "C1".into(),
            ts: "1.2".into(),
        };
        app.remember(7, at.clone());
        assert_eq!(app.recall(7), Some(at));
        app.forget(7);
        assert_eq!(app.recall(7), None);
        assert!(app.first_finish(7));
        assert!(!app.first_finish(7));
    }
}
