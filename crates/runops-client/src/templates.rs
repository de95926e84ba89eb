//! The template API calls (`/v1/templates`).

use crate::user::seg;
use crate::{Client, Result};
use runops_proto::api::Task;
use runops_proto::templates::*;

impl Client {
    pub async fn list_templates(&self) -> Result<TemplateList> {
        self.get_json("/v1/templates").await
    }

    /// One template with its body.
    pub async fn get_template(&self, name: &str) -> Result<Template> {
        self.get_json(&format!("/v1/templates/{}", seg(name))).await
    }

    /// Creates a task from a template, as `create_task` does from a script.
    pub async fn run_template(&self, name: &str, run: &TemplateRun) -> Result<Task> {
        self.post_json(&format!("/v1/templates/{}/run", seg(name)), run, None)
            .await
    }

    /// Pulls the templates repository now (admins); the list after the pull.
    pub async fn refresh_templates(&self) -> Result<TemplateList> {
        // A pull may take as long as the server lets git run.
        let wait = Some(std::time::Duration::from_secs(150));
        self.post_json("/v1/templates/refresh", &serde_json::json!({}), wait)
            .await
    }
}
