//! The agent protocol calls (connect, poll, start, logs, finish, disconnect).
//! See `runops_proto::agent` for the semantics.

use crate::{Client, Result};
use reqwest::Method;
use runops_proto::agent::*;
use std::time::Duration;

/// Bound on any agent call other than the poll: the server answers these at once,
/// so a call that takes longer than this is a broken connection.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Extra time given to a poll beyond the server's hold time before it counts as lost.
const POLL_GRACE: Duration = Duration::from_secs(10);

impl Client {
    pub async fn agent_connect(&self, req: &ConnectRequest) -> Result<ConnectResponse> {
        // A standby connect may be held by the server until the tags free up.
        let timeout = if req.standby {
            None
        } else {
            Some(CALL_TIMEOUT)
        };
        self.post_json("/v1/agent/connect", req, timeout).await
    }

    /// Long-poll; `hold` is the server's `poll_hold_secs`.
    pub async fn agent_poll(&self, req: &PollRequest, hold: Duration) -> Result<PollResponse> {
        self.post_json("/v1/agent/poll", req, Some(hold + POLL_GRACE))
            .await
    }

    pub async fn agent_start(&self, task_id: i64, session_id: &str) -> Result<StartResponse> {
        let req = StartRequest {
            session_id: session_id.to_string(),
        };
        self.post_json(
            &format!("/v1/agent/tasks/{task_id}/start"),
            &req,
            Some(CALL_TIMEOUT),
        )
        .await
    }

    /// Uploads `bytes` as the part of the log that starts at `offset`.
    pub async fn agent_upload_log(
        &self,
        task_id: i64,
        session_id: &str,
        offset: u64,
        bytes: Vec<u8>,
    ) -> Result<LogAck> {
        let q = LogChunkQuery {
            session_id: session_id.to_string(),
            offset,
        };
        let rb = self
            .request(
                Method::POST,
                &format!("/v1/agent/tasks/{task_id}/logs"),
                Some(CALL_TIMEOUT),
            )
            .query(&q)
            .header("content-type", "application/octet-stream")
            .body(bytes);
        self.send_json(rb).await
    }

    pub async fn agent_finish(&self, task_id: i64, req: &FinishRequest) -> Result<FinishResponse> {
        self.post_json(
            &format!("/v1/agent/tasks/{task_id}/finish"),
            req,
            Some(CALL_TIMEOUT),
        )
        .await
    }

    pub async fn agent_disconnect(&self, session_id: &str) -> Result<()> {
        let req = DisconnectRequest {
            session_id: session_id.to_string(),
        };
        let rb = self
            .request(Method::POST, "/v1/agent/disconnect", Some(CALL_TIMEOUT))
            .json(&req);
        self.send(rb).await.map(|_| ())
    }
}
