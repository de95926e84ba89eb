//! `runops whoami`: which server and context the CLI uses, and who it is there
//! (organisation, user, role, groups, and the token: its kind and expiry).

use crate::config;
use crate::error::CliResult;
use crate::output::{self, cell};
use chrono::Utc;
use runops_proto::api::Me;

#[derive(clap::Args, Debug)]
pub struct WhoamiArgs {
    /// Print JSON (the server's `/v1/me` answer plus `server` and `context`).
    #[arg(long)]
    pub json: bool,
}

impl WhoamiArgs {
    pub async fn run(self) -> CliResult<u8> {
        let creds = config::load_credentials()?;
        let client = crate::client_for(&creds)?;
        let me = client.whoami().await?;
        if self.json {
            let mut v = serde_json::to_value(&me)
                .map_err(|e| crate::error::CliError::new(format!("cannot encode JSON: {e}")))?;
            if let Some(o) = v.as_object_mut() {
                o.insert("server".into(), client.base_url().into());
                o.insert("context".into(), creds.context.clone().into());
            }
            output::print_json(&v)?;
        } else {
            output::print(&describe(
                &me,
                client.base_url(),
                creds.context.as_deref(),
                Utc::now(),
            ))?;
        }
        Ok(0)
    }
}

/// The `key: value` block `whoami` prints.
pub(crate) fn describe(
    me: &Me,
    server: &str,
    context: Option<&str>,
    now: chrono::DateTime<Utc>,
) -> String {
    let u = &me.user;
    let groups = if u.groups.is_empty() {
        "-".to_string()
    } else {
        cell(&u.groups.join(", "))
    };
    let token = match &me.token {
        None => "unknown (the server does not say)".to_string(),
        Some(t) => {
            let kind = match (t.kind.as_str(), t.id) {
                ("api-token", Some(id)) => format!("API token {id}"),
                ("api-token", None) => "API token".to_string(),
                ("identity-provider", _) => "identity-provider token (JWT)".to_string(),
                (other, _) => cell(other),
            };
            match t.expires_at {
                Some(at) if at <= now => format!("{kind}, expired {}", output::timestamp(at, now)),
                Some(at) => format!(
                    "{kind}, expires {} (in {})",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    output::short_duration((at - now).num_seconds().max(0) as u64)
                ),
                None => format!("{kind}, does not expire"),
            }
        }
    };
    output::key_values(&[
        ("server", cell(server)),
        (
            "context",
            context
                .map(cell)
                .unwrap_or_else(|| "- (RUNOPS_URL and RUNOPS_TOKEN)".into()),
        ),
        ("org", cell(&u.org)),
        ("user", format!("{} <{}>", cell(&u.name), cell(&u.email))),
        ("role", cell(&u.role)),
        ("groups", groups),
        ("token", token),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use runops_proto::api::{MeToken, User};

    #[test]
    fn whoami_names_server_org_user_role_groups_and_token() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut me = Me {
            user: User {
                id: 1,
                name: "Ana".into(),
                email: "ana@example.com".into(),
                groups: vec!["dba".into(), "sre".into()],
                role: "user".into(),
                org: "acme".into(),
                created_at: now,
            },
            token: Some(MeToken {
                kind: "api-token".into(),
                id: Some(3),
                expires_at: None,
            }),
        };
        let text = describe(&me, "http://s", Some("prod"), now);
        assert_eq!(
            text,
            "server:  http://s\ncontext: prod\norg:     acme\nuser:    Ana <ana@example.com>\n\
             role:    user\ngroups:  dba, sre\ntoken:   API token 3, does not expire\n"
        );
        me.token = Some(MeToken {
            kind: "identity-provider".into(),
            id: None,
            expires_at: Some(now + chrono::Duration::minutes(90)),
        });
        let text = describe(&me, "http://s", None, now);
        assert!(
            text.contains(
                "token:   identity-provider token (JWT), expires 2026-01-01T01:30:00Z (in 1h)"
            ),
            "{text}"
        );
        assert!(
            text.contains("context: - (RUNOPS_URL and RUNOPS_TOKEN)"),
            "{text}"
        );
    }
}
