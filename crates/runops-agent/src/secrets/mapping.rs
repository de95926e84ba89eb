//! `secret_mapping`: expose a secret under another key (`{"WANTED": "KEY_IN_SECRET"}`).

use super::Secrets;
use crate::failure::TaskFailure;
use serde_json::Value;

/// Adds `WANTED = secrets[KEY_IN_SECRET]` for each pair of `mapping`, keeping the
/// originals. A source key the secret lacks is skipped (the required-key check
/// reports what is really missing). `None` or blank text maps nothing.
pub fn apply_mapping(secrets: &mut Secrets, mapping: Option<&str>) -> Result<(), TaskFailure> {
    let Some(text) = mapping.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(());
    };
    let value: Value = serde_json::from_str(text).map_err(|e| {
        TaskFailure::invalid_config(format!(
            "secret_mapping of the target is not valid JSON: {e}; expected an object like {{\"WANTED_KEY\": \"KEY_IN_SECRET\"}}"
        ))
    })?;
    let Value::Object(pairs) = value else {
        return Err(TaskFailure::invalid_config(
            "secret_mapping of the target must be a JSON object like {\"WANTED_KEY\": \"KEY_IN_SECRET\"}",
        ));
    };
    let mut added = Vec::new();
    for (wanted, source) in pairs {
        let Value::String(source) = source else {
            return Err(TaskFailure::invalid_config(format!(
                "secret_mapping of the target maps `{wanted}` to something that is not a key name; values must be strings"
            )));
        };
        if let Some(v) = secrets.get(&source) {
            added.push((wanted, v.clone()));
        }
    }
    secrets.extend(added);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use runops_proto::FailureReason;

    fn secrets() -> Secrets {
        [("MYSQL_HOSTNAME", "db.internal"), ("MYSQL_USER", "demo")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn mapping_adds_wanted_key_and_keeps_original() {
        let mut s = secrets();
        apply_mapping(&mut s, Some(r#"{"MYSQL_HOST": "MYSQL_HOSTNAME"}"#)).unwrap();
        assert_eq!(s["MYSQL_HOST"], "db.internal");
        assert_eq!(s["MYSQL_HOSTNAME"], "db.internal");
    }

    #[test]
    fn missing_source_key_is_skipped() {
        let mut s = secrets();
        apply_mapping(&mut s, Some(r#"{"PG_HOST": "NOPE"}"#)).unwrap();
        assert!(!s.contains_key("PG_HOST"));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn no_mapping_changes_nothing() {
        let mut s = secrets();
        apply_mapping(&mut s, None).unwrap();
        apply_mapping(&mut s, Some("  ")).unwrap();
        assert_eq!(s, secrets());
    }

    #[test]
    fn malformed_mapping_fails_fast_with_position() {
        let mut s = secrets();
        let e = apply_mapping(&mut s, Some(r#"{"MYSQL_HOST" "MYSQL_HOSTNAME"}"#)).unwrap_err();
        assert_eq!(e.reason, FailureReason::InvalidConfig);
        assert!(e.message.contains("line 1 column 15"), "{}", e.message);
        let e = apply_mapping(&mut s, Some(r#"["A"]"#)).unwrap_err();
        assert_eq!(e.reason, FailureReason::InvalidConfig);
        let e = apply_mapping(&mut s, Some(r#"{"A": 1}"#)).unwrap_err();
        assert!(e.message.contains("`A`"), "{}", e.message);
    }
}
