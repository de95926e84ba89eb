//! The webhook API calls (`/v1/webhooks`, admins).

use crate::{Client, Result};
use reqwest::Method;
use runops_proto::webhook::*;

impl Client {
    /// A new webhook; the answer holds its signing secret, shown only this once.
    pub async fn create_webhook(&self, w: &WebhookCreate) -> Result<WebhookCreated> {
        self.post_json("/v1/webhooks", w, None).await
    }

    pub async fn list_webhooks(&self) -> Result<Vec<Webhook>> {
        self.get_json("/v1/webhooks").await
    }

    pub async fn delete_webhook(&self, id: i64) -> Result<()> {
        let rb = self.request(Method::DELETE, &format!("/v1/webhooks/{id}"), None);
        self.send(rb).await.map(|_| ())
    }

    /// A webhook's deliveries, newest first.
    pub async fn list_webhook_deliveries(
        &self,
        id: i64,
        q: &DeliveryListQuery,
    ) -> Result<Vec<WebhookDelivery>> {
        let rb = self
            .request(Method::GET, &format!("/v1/webhooks/{id}/deliveries"), None)
            .query(q);
        self.send_json(rb).await
    }
}
