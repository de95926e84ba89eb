//! The `runops` provider: the target's write-only config, stored encrypted in the control
//! plane and sent to the agent only inside the task's offer (`TaskOffer::config`). The
//! offer's config is the whole secret; `secret_path` is not used.

use super::{Secrets, SecretsProvider};
use crate::failure::TaskFailure;
use async_trait::async_trait;
use runops_proto::agent::TaskOffer;

pub struct RunopsProvider;

#[async_trait]
impl SecretsProvider for RunopsProvider {
    fn name(&self) -> &'static str {
        runops_proto::SecretProvider::Runops.as_str()
    }

    async fn fetch(&self, offer: &TaskOffer) -> Result<Secrets, TaskFailure> {
        match &offer.config {
            Some(config) if !config.is_empty() => Ok(config.clone()),
            _ => Err(TaskFailure::secrets(format!(
                "runops: target `{}` has no stored config; set it with `runops targets update {} --config '{{\"KEY\": \"value\"}}'`",
                offer.target, offer.target
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::tests::offer;

    #[tokio::test]
    async fn the_offer_config_is_the_secret() {
        let mut o = offer(Some("runops"), None);
        let e = RunopsProvider.fetch(&o).await.unwrap_err();
        assert!(e.message.contains("has no stored config"), "{e}");
        o.config = Some([("PG_PASS".to_string(), "s3cret".to_string())].into());
        let s = RunopsProvider.fetch(&o).await.unwrap();
        assert_eq!(s["PG_PASS"], "s3cret");
    }
}
