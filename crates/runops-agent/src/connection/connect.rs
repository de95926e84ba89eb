//! Opening (or resuming) a session with the server.

use crate::backoff::Backoff;
use runops_client::{Client, ClientError};
use runops_proto::agent::{ConnectRequest, ConnectResponse};
use std::future::Future;

/// Connects, retrying with backoff while the server cannot be reached. Fatal answers
/// (token rejected, tags held by another agent, anything else refused) are an error
/// whose message names the problem. Returns `Ok(None)` if `give_up` resolves first.
pub async fn connect(
    client: &Client,
    req: &ConnectRequest,
    give_up: impl Future<Output = ()>,
) -> anyhow::Result<Option<ConnectResponse>> {
    tokio::pin!(give_up);
    let mut backoff = Backoff::new();
    loop {
        let attempt = tokio::select! {
            r = client.agent_connect(req) => r,
            _ = &mut give_up => return Ok(None),
        };
        match attempt {
            Ok(resp) => return Ok(Some(resp)),
            Err(e) if is_retryable(&e) => {
                let delay = backoff.next_delay();
                tracing::warn!("cannot connect to the server, retrying in {delay:.1?}: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = &mut give_up => return Ok(None),
                }
            }
            Err(e) => return Err(fatal(client, e)),
        }
    }
}

fn is_retryable(e: &ClientError) -> bool {
    // 429: the server asks us to slow down; that is a reason to wait, not to exit.
    e.is_transport() || e.status() == Some(429)
}

/// The error that stops the agent, for an answer that retrying cannot fix.
pub fn fatal(client: &Client, e: ClientError) -> anyhow::Error {
    let url = client.base_url();
    match (e.status(), e.code()) {
        (Some(401), _) => anyhow::anyhow!(
            "the agent token was rejected by {url}: {e}\nhint: create a new one with `runops agents create-token` and set TOKEN"
        ),
        (Some(409), Some("tags_taken")) => anyhow::anyhow!("{e}"),
        (Some(403), _) => anyhow::anyhow!("the agent token may not connect to {url}: {e}"),
        _ => anyhow::anyhow!("the server at {url} refused the agent: {e}"),
    }
}
