//! The agent's command line / environment ([`AgentArgs`]) and its resolved form
//! ([`AgentConfig`]). The fixed limits and timeouts are in [`crate::limits`].

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Flags and environment variables of `runops agent`.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// agent token (from `runops agents create-token`); carries the server URL
    #[arg(
        long,
        env = "TOKEN",
        hide_env_values = true,
        default_value = "",
        hide_default_value = true
    )]
    pub token: String,
    /// server URL; overrides the one carried by the token. Replicas of one control plane: comma-separated URLs, the agent moves to the next one when the one it uses does not answer
    #[arg(long, env = "API_URL")]
    pub api_url: Option<String>,
    /// run only the targets whose tags equal these; empty = only untagged targets
    #[arg(long, env = "TAGS")]
    pub tags: Option<String>,
    /// how many tasks may run at the same time
    #[arg(long, env = "CONCURRENCY", default_value_t = 30)]
    pub concurrency: u32,
    /// where task logs and results are kept until the server acknowledges them
    #[arg(long, env = "RUNOPS_AGENT_DATA_DIR", default_value = "./.runops-agent")]
    pub data_dir: PathBuf,
    /// wait for the tags to become free instead of exiting when another agent holds them
    #[arg(long)]
    pub standby: bool,
    /// print which integration types this agent can run (tools found, versions) and exit
    #[arg(long)]
    pub check: bool,
    /// seconds between SIGTERM and SIGKILL when a task is killed or times out (default 10)
    #[arg(long, env = "RUNOPS_KILL_GRACE_SECS", default_value_t = 10)]
    pub kill_grace_secs: u64,
    /// serve /healthz and /metrics on this address (e.g. 0.0.0.0:9090); off when unset
    #[arg(long, env = "RUNOPS_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,
    /// personal data redacted on targets with `redact=all`, comma-separated (e.g. EMAIL_ADDRESS,PHONE_NUMBER); default: every type
    #[arg(long, env = "REDACT_INFO_TYPES")]
    pub redact_info_types: Option<String>,
    /// regions whose national phone formats (`020 7946 0958`) are redacted, ISO codes, comma-separated (e.g. GB,DE,FR); default: 30 common regions (docs/redaction.md); numbers with `+` are redacted whatever the list
    #[arg(long, env = "REDACT_PHONE_REGIONS")]
    pub redact_phone_regions: Option<String>,
    /// who may make this agent run tasks, and as which user (JWK_URL, RUN_AS_USER)
    #[command(flatten)]
    pub identity: IdentityArgs,
}

/// `JWK_URL` enforcement and least privilege (see `jwt.rs` and `env.rs`).
#[derive(Args, Debug, Clone, Default)]
pub struct IdentityArgs {
    /// URL of the identity provider's JWKS: every task must then carry its creator's JWT (RS256/ES256), verified before any secret is fetched
    #[arg(long, env = "JWK_URL")]
    pub jwk_url: Option<String>,
    /// with JWK_URL: the `iss` claim tokens must have
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// with JWK_URL: the audience (`aud`) tokens must be meant for
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// with JWK_URL: the claim holding the user's e-mail, matched against the task's creator (default `email`)
    #[arg(long, env = "JWT_EMAIL_CLAIM")]
    pub jwt_email_claim: Option<String>,
    /// with JWK_URL: refuse tokens issued (`iat`) more than this many seconds ago, whatever their expiry (default 3600)
    #[arg(long, env = "JWT_MAX_AGE_SECS", value_name = "SECS")]
    pub jwt_max_age_secs: Option<u64>,
    /// when the agent runs as root, run tasks as this user (default: `runops` if that user exists; `root` keeps root)
    #[arg(long, env = "RUN_AS_USER")]
    pub run_as_user: Option<String>,
}

/// [`AgentArgs`] checked and resolved.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub server_url: String,
    pub token: String,
    /// `None` for the untagged agent.
    pub tags: Option<String>,
    pub concurrency: u32,
    pub data_dir: PathBuf,
    pub standby: bool,
    pub kill_grace: Duration,
    /// Where `/healthz` and `/metrics` are served; `None`: not served.
    pub health_addr: Option<SocketAddr>,
    /// `JWK_URL` enforcement and the user tasks run as.
    pub identity: IdentityConfig,
    /// `REDACT_INFO_TYPES`: the personal data redacted on `redact=all` targets;
    /// `None`: every type.
    pub redact_info_types: Option<Vec<runops_redact::InfoType>>,
    /// `REDACT_PHONE_REGIONS`: the regions whose national phone formats are read;
    /// `None`: [`runops_redact::DEFAULT_PHONE_REGIONS`].
    pub redact_phone_regions: Option<Vec<String>>,
}

/// [`IdentityArgs`] resolved. The default enforces nothing and keeps the agent's user
/// unless it is root and a `runops` user exists.
#[derive(Debug, Clone, Default)]
pub struct IdentityConfig {
    /// `Some` when `JWK_URL` is set: tasks need their creator's valid JWT.
    pub jwt: Option<crate::jwt::JwtSettings>,
    /// `RUN_AS_USER` as given (`None`: the default, `runops` when it exists).
    pub run_as_user: Option<String>,
}

impl IdentityConfig {
    pub fn from_args(args: &IdentityArgs) -> anyhow::Result<IdentityConfig> {
        let clean = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let jwt = match clean(&args.jwk_url) {
            Some(jwk_url) => Some(crate::jwt::JwtSettings {
                jwk_url,
                issuer: clean(&args.jwt_issuer),
                audience: clean(&args.jwt_audience),
                email_claim: clean(&args.jwt_email_claim)
                    .unwrap_or_else(|| crate::jwt::DEFAULT_EMAIL_CLAIM.to_string()),
                max_age_secs: match args.jwt_max_age_secs {
                    None => crate::jwt::DEFAULT_MAX_AGE_SECS,
                    Some(0) => anyhow::bail!(
                        "JWT_MAX_AGE_SECS is 0: no token could ever be young enough; set it to the oldest token age to accept in seconds (default {})",
                        crate::jwt::DEFAULT_MAX_AGE_SECS
                    ),
                    Some(s) if s > crate::jwt::MAX_MAX_AGE_SECS => anyhow::bail!(
                        "JWT_MAX_AGE_SECS is {s}, more than a week ({} s): is it in milliseconds? set it in seconds",
                        crate::jwt::MAX_MAX_AGE_SECS
                    ),
                    Some(s) => s,
                },
            }),
            None => {
                if clean(&args.jwt_issuer).is_some()
                    || clean(&args.jwt_audience).is_some()
                    || args.jwt_max_age_secs.is_some()
                {
                    anyhow::bail!(
                        "JWT_ISSUER / JWT_AUDIENCE / JWT_MAX_AGE_SECS are set but JWK_URL is not: tokens would not be checked at all; set JWK_URL to the identity provider's JWKS URL"
                    );
                }
                None
            }
        };
        Ok(IdentityConfig {
            jwt,
            run_as_user: clean(&args.run_as_user),
        })
    }
}

impl AgentConfig {
    pub fn from_args(args: &AgentArgs) -> anyhow::Result<AgentConfig> {
        let token = args.token.trim().to_string();
        if token.is_empty() {
            anyhow::bail!(
                "the agent token is empty; set TOKEN to a token from `runops agents create-token`"
            );
        }
        let server_url = match args.api_url.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => url.trim_end_matches('/').to_string(),
            _ => runops_proto::token::agent_token_server_url(&token)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        };
        if args.concurrency == 0 {
            anyhow::bail!("CONCURRENCY must be at least 1");
        }
        let tags = args
            .tags
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if let Some(t) = &tags
            && t.len() > runops_proto::limits::MAX_TAGS_LEN
        {
            anyhow::bail!(
                "TAGS is {} bytes long; at most {} are allowed",
                t.len(),
                runops_proto::limits::MAX_TAGS_LEN
            );
        }
        Ok(AgentConfig {
            server_url,
            token,
            tags,
            concurrency: args.concurrency,
            data_dir: args.data_dir.clone(),
            standby: args.standby,
            kill_grace: Duration::from_secs(args.kill_grace_secs),
            health_addr: args.health_addr,
            identity: IdentityConfig::from_args(&args.identity)?,
            redact_info_types: parse_redact_info_types(args.redact_info_types.as_deref())?,
            redact_phone_regions: parse_redact_phone_regions(args.redact_phone_regions.as_deref())?,
        })
    }
}

/// `REDACT_INFO_TYPES` checked: `None` (unset or blank) means every type; an unknown
/// name, or a list that names none, stops the agent with the valid names.
pub fn parse_redact_info_types(
    list: Option<&str>,
) -> anyhow::Result<Option<Vec<runops_redact::InfoType>>> {
    let Some(list) = list.map(str::trim).filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let types = runops_redact::InfoType::parse_list(list)
        .map_err(|e| anyhow::anyhow!("REDACT_INFO_TYPES: {e}"))?;
    if types.is_empty() {
        let valid: Vec<&str> = runops_redact::InfoType::ALL
            .iter()
            .map(|t| t.name())
            .collect();
        anyhow::bail!(
            "REDACT_INFO_TYPES names no info type; list some of {} or unset it to redact them all (a target with redact=none turns personal-data redaction off)",
            valid.join(", ")
        );
    }
    Ok(Some(types))
}

/// `REDACT_PHONE_REGIONS` checked: `None` (unset or blank) means the default regions;
/// a code libphonenumber does not know, or a list that names none, stops the agent.
pub fn parse_redact_phone_regions(list: Option<&str>) -> anyhow::Result<Option<Vec<String>>> {
    let Some(list) = list.map(str::trim).filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let regions = runops_redact::parse_phone_regions(list)
        .map_err(|e| anyhow::anyhow!("REDACT_PHONE_REGIONS: {e}"))?;
    if regions.is_empty() {
        anyhow::bail!(
            "REDACT_PHONE_REGIONS names no region; list ISO codes such as GB,DE,FR or unset it for the default regions ({})",
            runops_redact::DEFAULT_PHONE_REGIONS.join(",")
        );
    }
    Ok(Some(regions))
}

#[cfg(test)]
mod redact_info_types_tests {
    use super::parse_redact_info_types;
    use runops_redact::InfoType;

    #[test]
    fn redact_info_types_parse_and_unknown_names_list_the_valid_ones() {
        assert_eq!(parse_redact_info_types(None).unwrap(), None);
        assert_eq!(parse_redact_info_types(Some("  ")).unwrap(), None);
        assert_eq!(
            parse_redact_info_types(Some("email_address, PHONE_NUMBER")).unwrap(),
            Some(vec![InfoType::EmailAddress, InfoType::PhoneNumber])
        );
        let e = parse_redact_info_types(Some("EMAIL_ADDRESS,PASSPORT"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`PASSPORT`"), "{e}");
        assert!(
            e.contains("CREDIT_CARD_NUMBER") && e.contains("IP_ADDRESS"),
            "{e}"
        );
        let e = parse_redact_info_types(Some(",")).unwrap_err().to_string();
        assert!(e.contains("names no info type"), "{e}");
    }
}

#[cfg(test)]
mod redact_phone_regions_tests {
    use super::parse_redact_phone_regions;

    #[test]
    fn redact_phone_regions_parse_and_unknown_codes_are_refused() {
        assert_eq!(parse_redact_phone_regions(None).unwrap(), None);
        assert_eq!(parse_redact_phone_regions(Some(" ")).unwrap(), None);
        assert_eq!(
            parse_redact_phone_regions(Some("gb, DE,gb")).unwrap(),
            Some(vec!["GB".to_string(), "DE".to_string()])
        );
        let e = parse_redact_phone_regions(Some("GB,UK"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("REDACT_PHONE_REGIONS: unknown phone region `UK`"),
            "{e}"
        );
        let e = parse_redact_phone_regions(Some(","))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("names no region") && e.contains("US,CA,GB"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod jwt_max_age_tests {
    use super::{IdentityArgs, IdentityConfig};

    fn with(jwk_url: Option<&str>, max_age: Option<u64>) -> anyhow::Result<IdentityConfig> {
        IdentityConfig::from_args(&IdentityArgs {
            jwk_url: jwk_url.map(str::to_string),
            jwt_max_age_secs: max_age,
            ..IdentityArgs::default()
        })
    }

    #[test]
    fn jwt_max_age_defaults_to_an_hour_and_nonsense_is_a_start_up_error() {
        let url = Some("https://idp.example/jwks.json");
        let age = |c: IdentityConfig| c.jwt.unwrap().max_age_secs;
        assert_eq!(
            age(with(url, None).unwrap()),
            crate::jwt::DEFAULT_MAX_AGE_SECS
        );
        assert_eq!(age(with(url, Some(900)).unwrap()), 900);
        let e = with(url, Some(0)).unwrap_err().to_string();
        assert!(e.contains("JWT_MAX_AGE_SECS is 0"), "{e}");
        let e = with(url, Some(3_600_000)).unwrap_err().to_string();
        assert!(e.contains("milliseconds"), "{e}");
        let e = with(None, Some(900)).unwrap_err().to_string();
        assert!(e.contains("JWK_URL is not"), "{e}");
    }
}
