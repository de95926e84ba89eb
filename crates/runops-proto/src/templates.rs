//! Templates: vetted scripts kept in a git repository (`runops server --templates-repo`),
//! run with parameters. See `docs/templates.md` for the file format.
//!
//! | method and path                        | body → answer                                   |
//! |----------------------------------------|-------------------------------------------------|
//! | `GET /v1/templates`                    | → [`TemplateList`]                              |
//! | `GET /v1/templates/{name}`             | → [`Template`] (with its body)                  |
//! | `POST /v1/templates/{name}/run`        | [`TemplateRun`] → `201` [`crate::api::Task`], as `POST /v1/tasks` |
//! | `POST /v1/templates/refresh`           | → [`TemplateList`] after a pull (admin)         |
//! | `POST /v1/templates/webhook`           | a git host's push event → `202` (shared secret) |

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a task made from a template records: which template, at which commit, with
/// which parameter values. Kept with the task, so it outlives the template.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskTemplate {
    pub name: String,
    /// The commit SHA the template was read from.
    pub commit: String,
    pub params: BTreeMap<String, String>,
}

/// `GET /v1/templates`: the templates of the last good pull, and what went wrong.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TemplateList {
    /// The repository (its URL without credentials); `None` when none is configured.
    pub repo: Option<String>,
    pub branch: Option<String>,
    /// The commit the templates were read from (`None` before the first good pull).
    pub commit: Option<String>,
    /// When the templates were last read from the repository (RFC 3339).
    pub pulled_at: Option<chrono::DateTime<chrono::Utc>>,
    pub templates: Vec<Template>,
    /// Files under `templates/` that could not be read; the others are served.
    #[serde(default)]
    pub broken: Vec<BrokenTemplate>,
    /// The last pull failed: its error (the templates above are from the last good one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// A template file with a mistake.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BrokenTemplate {
    /// Path in the repository (`templates/restart-user.sql`).
    pub path: String,
    /// 1-based line of the mistake, when it is on one line.
    pub line: Option<usize>,
    pub error: String,
}

/// One template.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Template {
    pub name: String,
    /// Path in the repository.
    pub path: String,
    pub description: Option<String>,
    /// Targets it may run on (empty: any target whose tags match `tags`, or any target).
    pub targets: Vec<String>,
    /// Target tags it may run on (empty: no tag rule).
    pub tags: Vec<String>,
    pub params: Vec<TemplateParam>,
    /// A stricter review than the target's (`anyone` or `team`).
    pub review: Option<String>,
    /// Reviewer groups of a `team` review.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reviewers: Vec<String>,
    /// The script with its `{{param}}` placeholders (`GET /v1/templates/{name}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// A declared parameter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TemplateParam {
    pub name: String,
    /// `text`, `number`, `select`, `date` or `boolean`.
    #[serde(rename = "type")]
    pub kind: String,
    pub required: bool,
    pub default: Option<String>,
    /// A regular expression the whole value must match.
    pub pattern: Option<String>,
    /// The choices of a `select`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    pub description: Option<String>,
}

/// `POST /v1/templates/{name}/run`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TemplateRun {
    pub target: String,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
