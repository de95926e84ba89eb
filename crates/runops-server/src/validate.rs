//! Checks of user input that the handlers share: target fields, tags, users.
//! Every error names the field and the accepted values.

use runops_proto::api::{DEFAULT_TIMEOUT_SECS, Target, TargetCreate, TargetSettings, TargetUpdate};
use runops_proto::limits::{
    MAX_CONFIG_FIELD_LEN, MAX_MESSAGE_LEN, MAX_TAGS_LEN, MAX_TARGET_NAME_LEN,
};

use crate::error::ApiError;
use runops_proto::vocab::{RedactMode, ReviewMode, Role, SecretProvider, TargetType, UnknownName};

/// Longest task timeout: a week. Longer jobs do not belong in an ad-hoc task runner.
pub const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

/// Longest user name / token name / e-mail.
const MAX_NAME_LEN: usize = 256;

pub fn target_name(name: &str) -> Result<(), ApiError> {
    let valid_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let valid_rest = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > MAX_TARGET_NAME_LEN || !valid_first || !valid_rest {
        return Err(ApiError::bad_request(format!(
            "invalid target name `{}`: use 1 to {MAX_TARGET_NAME_LEN} letters, digits, `.`, `_` or `-`, starting with a letter or digit",
            crate::error::echo(name)
        )));
    }
    Ok(())
}

/// The integration type named `kind`: one of [`TargetType::NAMES`].
pub fn target_type(kind: &str) -> Result<TargetType, ApiError> {
    parse(kind)
}

/// `value` as a name of vocabulary `T`; the error names the vocabulary, the value, the
/// valid names and the closest one (`unknown target type `postgress` (did you mean
/// `postgres`?); use one of: ...`).
fn parse<T: std::str::FromStr<Err = UnknownName>>(value: &str) -> Result<T, ApiError> {
    value.parse::<T>().map_err(|e| {
        let e = UnknownName {
            value: crate::error::echo(value).into_owned(),
            ..e
        };
        ApiError::bad_request(e.to_string())
    })
}

fn max_len(field: &str, value: &Option<String>, max: usize) -> Result<(), ApiError> {
    match value {
        Some(v) if v.len() > max => Err(ApiError::bad_request(format!(
            "{field} is {} bytes long; the limit is {max}",
            v.len()
        ))),
        _ => Ok(()),
    }
}

/// Tags as stored: trimmed, empty → `None`.
pub fn normalize_tags(tags: Option<String>) -> Result<Option<String>, ApiError> {
    let tags = tags.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
    if let Some(t) = &tags {
        if t.len() > MAX_TAGS_LEN {
            return Err(ApiError::bad_request(format!(
                "tags are {} bytes long; the limit is {MAX_TAGS_LEN}",
                t.len()
            )));
        }
        if t.chars().any(|c| c.is_control()) {
            return Err(ApiError::bad_request(
                "tags must not contain control characters",
            ));
        }
    }
    Ok(tags)
}

/// Optional text as stored: empty → `None`.
fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// `secret_mapping` given as a JSON object or as a string holding one: it must map
/// strings to strings.
pub fn secret_mapping(
    value: Option<serde_json::Value>,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, ApiError> {
    let value = match value {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::String(text)) => {
            if text.trim().is_empty() {
                return Ok(None);
            }
            if text.len() > MAX_CONFIG_FIELD_LEN {
                return Err(ApiError::bad_request(format!(
                    "secret_mapping is {} bytes long; the limit is {MAX_CONFIG_FIELD_LEN}",
                    text.len()
                )));
            }
            serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                ApiError::bad_request(format!("secret_mapping is not valid JSON: {e}"))
                    .hint(r#"write it as a JSON object, e.g. '{"WANTED_KEY": "KEY_IN_SECRET"}'"#)
            })?
        }
        Some(v) => v,
    };
    let serde_json::Value::Object(map) = value else {
        return Err(ApiError::bad_request(
            "secret_mapping must be a JSON object of strings, like {\"WANTED_KEY\": \"KEY_IN_SECRET\"}",
        ));
    };
    for (k, v) in &map {
        if !v.is_string() {
            return Err(ApiError::bad_request(format!(
                "secret_mapping value of `{}` must be a string (the key to read from the secret), not {}",
                crate::error::echo(k),
                crate::error::echo(&v.to_string())
            )));
        }
        if k.is_empty() {
            return Err(ApiError::bad_request("secret_mapping has an empty key"));
        }
    }
    Ok(Some(map))
}

/// Most keys in a target's `redact_keys` or `public_keys`: a secret has a few dozen.
pub const MAX_REDACTION_KEYS: usize = 200;
/// Longest key name in those lists.
const MAX_KEY_NAME_LEN: usize = 128;

/// Normalizes a `redact_keys`/`public_keys` list: items may hold comma-separated names,
/// blanks are dropped, duplicates removed; each must be a name like an environment
/// variable's.
fn key_list(field: &str, v: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let mut keys: Vec<String> = Vec::new();
    for key in v
        .unwrap_or_default()
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let valid = key.len() <= MAX_KEY_NAME_LEN
            && key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ApiError::bad_request(format!(
                "{field}: `{key}` is not a key name; use names like environment variables (letters, digits and `_`, not starting with a digit, at most {MAX_KEY_NAME_LEN} characters), e.g. PG_HOST"
            )));
        }
        if !keys.iter().any(|k| k == key) {
            keys.push(key.to_string());
        }
    }
    if keys.len() > MAX_REDACTION_KEYS {
        return Err(ApiError::bad_request(format!(
            "{field} lists {} keys; at most {MAX_REDACTION_KEYS} are allowed",
            keys.len()
        )));
    }
    Ok(keys)
}

/// Checks the fields every target must satisfy (create and after an update).
fn check_target(t: &Target) -> Result<(), ApiError> {
    if let Some(both) = t.redact_keys.iter().find(|k| t.public_keys.contains(k)) {
        return Err(ApiError::bad_request(format!(
            "`{both}` is in both redact_keys and public_keys; a key is either redacted or not, remove it from one list"
        )));
    }
    target_name(&t.name)?;
    let kind = target_type(&t.kind)?;
    if let Some(p) = &t.secret_provider {
        parse::<SecretProvider>(p)?;
    }
    parse::<RedactMode>(&t.redact)?;
    let review = parse::<ReviewMode>(&t.review)?;
    review_rule(t, review)?;
    if t.timeout == 0 || t.timeout > MAX_TIMEOUT_SECS {
        return Err(ApiError::bad_request(format!(
            "timeout must be between 1 and {MAX_TIMEOUT_SECS} seconds (7 days), not {}",
            t.timeout
        )));
    }
    max_len("description", &t.description, MAX_MESSAGE_LEN)?;
    max_len("secret_path", &t.secret_path, MAX_CONFIG_FIELD_LEN)?;
    max_len("custom_command", &t.custom_command, MAX_CONFIG_FIELD_LEN)?;
    max_len("runner_provider", &t.runner_provider, MAX_NAME_LEN)?;
    if kind == TargetType::CustomCommand && t.custom_command.is_none() {
        return Err(ApiError::bad_request(
            "a target of type `custom_command` needs a custom_command",
        ));
    }
    if t.reviewers.iter().any(|r| r.len() > MAX_NAME_LEN) {
        return Err(ApiError::bad_request("a reviewer group name is too long"));
    }
    Ok(())
}

/// A target's review settings fit together (whether the groups exist is checked
/// against the org's users by the handler, see [`unknown_reviewer_groups`]).
fn review_rule(t: &Target, mode: ReviewMode) -> Result<(), ApiError> {
    use crate::review::{MAX_MIN_APPROVALS, MAX_REVIEWER_GROUPS, MAX_TTL_SECS, MIN_TTL_SECS};
    let groups = t.reviewers.len();
    match mode {
        ReviewMode::None => {
            if groups > 0 || t.min_approvals.is_some() {
                return Err(ApiError::bad_request(
                    "reviewers and min_approvals need a review rule, and review is `none`",
                )
                .hint(
                    "add `--review team` (approvals from the reviewer groups) or `--review anyone`",
                ));
            }
        }
        ReviewMode::Anyone => {
            if groups > 0 {
                return Err(ApiError::bad_request(
                    "`--review anyone` takes no reviewer groups: any other user may approve",
                )
                .hint("use `--review team --reviewers GROUPS` to require approvals from groups, or clear them with `--reviewers ''`"));
            }
            if let Some(n) = t.min_approvals
                && !(1..=MAX_MIN_APPROVALS).contains(&n)
            {
                return Err(ApiError::bad_request(format!(
                    "min_approvals must be between 1 and {MAX_MIN_APPROVALS}, not {n}"
                )));
            }
        }
        ReviewMode::Team => {
            if groups == 0 {
                return Err(
                    ApiError::bad_request("`--review team` needs reviewer groups").hint(
                        "name them with `--reviewers dba,security` (groups your users carry)",
                    ),
                );
            }
            if groups > MAX_REVIEWER_GROUPS {
                return Err(ApiError::bad_request(format!(
                    "{groups} reviewer groups; at most {MAX_REVIEWER_GROUPS} are allowed"
                )));
            }
            if let Some(n) = t.min_approvals
                && (n == 0 || n as usize > groups)
            {
                return Err(ApiError::bad_request(format!(
                    "min_approvals is {n}, but `--review team` counts approving groups and there {} {groups}: use 1 to {groups}",
                    if groups == 1 { "is" } else { "are" }
                ))
                .hint("leave out --min_approvals to require every group, or add reviewer groups"));
            }
        }
    }
    for (field, v) in [
        ("approval_ttl", t.approval_ttl),
        ("review_ttl", t.review_ttl),
    ] {
        if !(MIN_TTL_SECS..=MAX_TTL_SECS).contains(&v) {
            return Err(ApiError::bad_request(format!(
                "{field} must be between {MIN_TTL_SECS} second and 30 days ({MAX_TTL_SECS} s), not {v} s"
            )));
        }
    }
    Ok(())
}

/// The target's reviewer groups that no user of the organisation carries. A group is
/// known once a user carries it: given with `runops users create --groups`, or sent by
/// the identity provider's groups claim at a user's sign-in. A group no one is in could
/// never approve anything.
pub fn unknown_reviewer_groups(t: &Target, users: &[runops_proto::api::User]) -> Vec<String> {
    t.reviewers
        .iter()
        .filter(|g| !users.iter().any(|u| u.groups.contains(g)))
        .cloned()
        .collect()
}

fn reviewers(v: Option<Vec<String>>) -> Vec<String> {
    v.unwrap_or_default()
        .into_iter()
        .flat_map(|s| {
            s.split(',')
                .map(|p| p.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// Checks that a task may run as `requested` on a target of `target_kind`: the same
/// type, or one of its [`TargetType::family`] (the same secrets and power).
pub fn task_type(target_kind: &str, requested: &str) -> Result<(), ApiError> {
    let requested_type = target_type(requested)?;
    if requested == target_kind {
        return Ok(());
    }
    let family = match target_kind.parse::<TargetType>() {
        Ok(t) => t.family(),
        Err(_) => &[],
    };
    if family.contains(&requested_type) {
        return Ok(());
    }
    let allowed = family
        .iter()
        .filter(|k| k.as_str() != target_kind)
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>();
    let hint = if allowed.is_empty() {
        format!("run it as the target's type `{target_kind}` (leave out --type)")
    } else {
        format!(
            "leave out --type, or use one of {} (the same secrets and power)",
            allowed.join(", ")
        )
    };
    Err(ApiError::bad_request(format!(
        "a task on a `{target_kind}` target cannot run as `{requested}`: the type decides what the target's secrets can be used for"
    ))
    .hint(hint))
}

/// Builds the target to store from a create request: the defaults, then the settings
/// given (see [`apply_settings`]).
pub fn new_target(
    mut req: TargetCreate,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Target, ApiError> {
    let settings = req.take_settings();
    let t = Target {
        name: req.name,
        kind: req.kind.trim().to_string(),
        description: None,
        tags: None,
        secret_provider: None,
        secret_path: None,
        secret_mapping: None,
        runner_provider: None,
        redact: RedactMode::DEFAULT.as_str().into(),
        review: ReviewMode::DEFAULT.as_str().into(),
        reviewers: Vec::new(),
        min_approvals: None,
        approval_ttl: runops_proto::api::DEFAULT_APPROVAL_TTL_SECS,
        review_ttl: runops_proto::api::DEFAULT_REVIEW_TTL_SECS,
        custom_command: None,
        timeout: DEFAULT_TIMEOUT_SECS,
        channel: None,
        created_at: now,
        updated_at: now,
        config_keys: Vec::new(),
        redact_keys: Vec::new(),
        public_keys: Vec::new(),
    };
    apply_settings(t, settings, Apply::Create)
}

/// Applies an update (present fields only; `""` clears an optional text field).
pub fn apply_update(
    mut t: Target,
    mut u: TargetUpdate,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Target, ApiError> {
    if let Some(kind) = u.kind.take() {
        t.kind = kind.trim().to_string();
    }
    t.updated_at = now;
    apply_settings(t, u.take_settings(), Apply::Update)
}

/// Characters of a Slack channel name at most (Slack's own limit).
const MAX_CHANNEL_LEN: usize = 80;

/// A target's Slack `channel`: `#name` or `name` (lower-case letters, digits, `-`,
/// `_`, `.`) or a channel id (`C0123ABC`); `""` removes it.
pub fn slack_channel(raw: &str) -> Result<Option<String>, ApiError> {
    let v = raw.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let name = v.strip_prefix('#').unwrap_or(v);
    let fine = !name.is_empty()
        && name.len() <= MAX_CHANNEL_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !fine {
        return Err(ApiError::bad_request(format!(
            "`{}` is not a Slack channel",
            crate::error::echo(v)
        ))
        .hint(format!("use a channel name such as `#ops` (letters, digits, `-`, `_`, at most {MAX_CHANNEL_LEN}) or a channel id such as `C0123ABCD`")));
    }
    Ok(Some(v.to_string()))
}

/// Whether settings complete a new target or change an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Apply {
    Create,
    Update,
}

/// Sets the settings present in `s` on `t` (`""` clears an optional text field), then
/// checks the whole target. The one place each setting of a create or an update is
/// read: the destructuring below does not compile when a setting is added to
/// `runops_proto::api::TargetSettings` and not handled here. `config` is stored apart
/// (sealed) by the handler, which takes it out of the request first.
fn apply_settings(mut t: Target, s: TargetSettings, how: Apply) -> Result<Target, ApiError> {
    let TargetSettings {
        description,
        tags,
        secret_provider,
        secret_path,
        secret_mapping: mapping,
        runner_provider,
        redact,
        review,
        reviewers: groups,
        min_approvals,
        approval_ttl,
        review_ttl,
        custom_command,
        timeout,
        channel,
        config: _,
        redact_keys,
        public_keys,
    } = s;
    if let Some(v) = description {
        t.description = non_empty(Some(v));
    }
    if let Some(v) = tags {
        t.tags = normalize_tags(Some(v))?;
    }
    if let Some(v) = secret_provider {
        t.secret_provider = non_empty(Some(v));
    }
    if let Some(v) = secret_path {
        t.secret_path = non_empty(Some(v));
    }
    if t.secret_provider.is_none() && t.secret_path.is_some() {
        t.secret_provider = Some(SecretProvider::DEFAULT.as_str().into());
    }
    if let Some(v) = mapping {
        t.secret_mapping = secret_mapping(Some(v))?;
    }
    if let Some(v) = runner_provider {
        t.runner_provider = non_empty(Some(v));
    }
    if let Some(v) = redact {
        t.redact = v;
    }
    let review_set = review.is_some();
    let reviewers_set = groups.is_some();
    if let Some(v) = review {
        t.review = v;
    }
    if let Some(v) = groups {
        t.reviewers = reviewers(Some(v));
    }
    if let Some(n) = min_approvals {
        // `0` in an update goes back to the default; in a create it is refused below.
        t.min_approvals = match how {
            Apply::Create => Some(n),
            Apply::Update => (n > 0).then_some(n),
        };
    }
    if let Some(v) = approval_ttl {
        t.approval_ttl = v;
    }
    if let Some(v) = review_ttl {
        t.review_ttl = v;
    }
    // Turning reviews off drops the rule's details with them.
    if t.review == ReviewMode::None.as_str() && review_set {
        if !reviewers_set {
            t.reviewers.clear();
        }
        if min_approvals.is_none() {
            t.min_approvals = None;
        }
    }
    if let Some(v) = custom_command {
        t.custom_command = non_empty(Some(v));
    }
    if let Some(v) = timeout {
        t.timeout = v;
    }
    if let Some(v) = channel {
        t.channel = slack_channel(&v)?;
    }
    if let Some(v) = redact_keys {
        t.redact_keys = key_list("redact_keys", Some(v))?;
    }
    if let Some(v) = public_keys {
        t.public_keys = key_list("public_keys", Some(v))?;
    }
    check_target(&t)?;
    Ok(t)
}

/// Most keys a target's write-only config may have.
pub const MAX_CONFIG_KEYS: usize = 200;
/// Largest config value: certificates and keys fit, a file dump does not.
pub const MAX_CONFIG_VALUE_LEN: usize = 64 * 1024;

/// Checks a write-only config and turns it into strings (numbers and booleans are
/// written as JSON writes them). Errors name the key, never the value.
pub fn target_config(
    config: serde_json::Map<String, serde_json::Value>,
) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    if config.len() > MAX_CONFIG_KEYS {
        return Err(ApiError::bad_request(format!(
            "config has {} keys; at most {MAX_CONFIG_KEYS} are allowed",
            config.len()
        )));
    }
    let mut out = std::collections::BTreeMap::new();
    for (key, value) in config {
        if key.trim().is_empty() || key.len() > MAX_NAME_LEN || key.chars().any(char::is_control) {
            return Err(ApiError::bad_request(format!(
                "config key {:?} is not valid: keys are 1 to {MAX_NAME_LEN} printable characters",
                crate::error::echo(&key)
            )));
        }
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "config key `{}` must be a string, number or boolean",
                    crate::error::echo(&key)
                )));
            }
        };
        if text.len() > MAX_CONFIG_VALUE_LEN {
            return Err(ApiError::bad_request(format!(
                "config key `{}` has a value longer than {MAX_CONFIG_VALUE_LEN} bytes",
                crate::error::echo(&key)
            )));
        }
        out.insert(key, text);
    }
    Ok(out)
}

/// Name, e-mail and role of a new user.
pub fn user_fields(name: &str, email: &str, role: &str) -> Result<Role, ApiError> {
    if name.trim().is_empty() || name.len() > MAX_NAME_LEN {
        return Err(ApiError::bad_request(format!(
            "user name must be 1 to {MAX_NAME_LEN} characters"
        )));
    }
    let at = email.find('@');
    if email.len() > MAX_NAME_LEN
        || at.is_none_or(|i| i == 0 || i + 1 == email.len())
        || email.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError::bad_request(format!(
            "invalid e-mail address `{}`",
            crate::error::echo(email)
        )));
    }
    parse(role)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn slack_channels_are_names_or_ids_and_blank_removes_them() {
        assert_eq!(slack_channel(" #ops ").unwrap().as_deref(), Some("#ops"));
        assert_eq!(
            slack_channel("C0123ABCD").unwrap().as_deref(),
            Some("C0123ABCD")
        );
        assert_eq!(
            slack_channel("team.db-alerts_2").unwrap().as_deref(),
            Some("team.db-alerts_2")
        );
        assert_eq!(slack_channel("  ").unwrap(), None);
        for bad in ["#", "#a b", "<#C1|ops>", "ops!", &"a".repeat(81)] {
            let e = slack_channel(bad).unwrap_err();
            assert!(
                e.error.contains("not a Slack channel"),
                "{bad}: {}",
                e.error
            );
            assert!(e.hint.is_some());
        }
    }

    #[test]
    fn target_names_follow_the_documented_pattern() {
        assert!(target_name("demo-db").is_ok());
        assert!(target_name("a.b_c-1").is_ok());
        assert!(target_name("").is_err());
        assert!(target_name("-x").is_err());
        assert!(target_name("a b").is_err());
        assert!(target_name(&"a".repeat(129)).is_err());
    }

    #[test]
    fn mapping_text_errors_point_at_the_position() {
        let e = secret_mapping(Some(json!("{\"A\" \"B\"}"))).unwrap_err();
        assert!(e.error.contains("line 1 column"), "{}", e.error);
        assert!(e.error.starts_with("secret_mapping is not valid JSON"));
        let e = secret_mapping(Some(json!({"A": 1}))).unwrap_err();
        assert!(e.error.contains("must be a string"));
        let m = secret_mapping(Some(json!("{\"A\": \"B\"}")))
            .unwrap()
            .unwrap();
        assert_eq!(m["A"], "B");
        assert!(secret_mapping(Some(json!(""))).unwrap().is_none());
        assert!(secret_mapping(Some(json!([1]))).is_err());
    }

    #[test]
    fn provider_defaults_to_env_var_with_a_path() {
        let t = new_target(
            TargetCreate {
                name: "demo".into(),
                kind: "bash".into(),
                secret_path: Some("MY_TARGET".into()),
                tags: Some("".into()),
                ..Default::default()
            },
            chrono::Utc::now(),
        )
        .unwrap();
        assert_eq!(t.secret_provider.as_deref(), Some("env-var"));
        assert_eq!(t.tags, None);
        assert_eq!(t.timeout, DEFAULT_TIMEOUT_SECS);
    }
}
