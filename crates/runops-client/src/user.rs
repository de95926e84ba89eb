//! The user-facing API calls (targets, tasks, logs, agents, tokens, users).

use crate::{Client, Result};
use bytes::Bytes;
use futures_util::Stream;
use futures_util::StreamExt;
use reqwest::Method;
use runops_proto::api::*;

/// Percent-encodes one URL path segment (target names may hold any character).
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A piece of a followed log ([`Client::follow_task_log_pieces`]).
#[derive(Debug, Clone)]
pub enum LogPiece {
    /// Log bytes, in order.
    Bytes(Bytes),
    /// The task ended so; its log is complete with the bytes before.
    End(Box<Task>),
}

impl Client {
    pub async fn me(&self) -> Result<User> {
        self.get_json("/v1/me").await
    }

    /// `GET /v1/me` with the credential's kind and expiry (`runops whoami`).
    pub async fn whoami(&self) -> Result<Me> {
        self.get_json("/v1/me").await
    }

    pub async fn create_target(&self, t: &TargetCreate) -> Result<Target> {
        self.post_json("/v1/targets", t, None).await
    }

    pub async fn list_targets(&self) -> Result<Vec<Target>> {
        self.get_json("/v1/targets").await
    }

    pub async fn get_target(&self, name: &str) -> Result<Target> {
        self.get_json(&format!("/v1/targets/{}", seg(name))).await
    }

    pub async fn update_target(&self, name: &str, u: &TargetUpdate) -> Result<Target> {
        let rb = self
            .request(Method::PUT, &format!("/v1/targets/{}", seg(name)), None)
            .json(u);
        self.send_json(rb).await
    }

    pub async fn delete_target(&self, name: &str) -> Result<()> {
        let rb = self.request(Method::DELETE, &format!("/v1/targets/{}", seg(name)), None);
        self.send(rb).await.map(|_| ())
    }

    pub async fn create_task(&self, t: &TaskCreate) -> Result<Task> {
        self.post_json("/v1/tasks", t, None).await
    }

    pub async fn list_tasks(&self, q: &TaskListQuery) -> Result<Vec<Task>> {
        let rb = self.request(Method::GET, "/v1/tasks", None).query(q);
        self.send_json(rb).await
    }

    pub async fn get_task(&self, id: i64) -> Result<Task> {
        self.get_json(&format!("/v1/tasks/{id}")).await
    }

    /// Sends the creator's proof of a task waiting in `created` (key-bound JWT).
    pub async fn prove_task(&self, id: i64, proof: &str) -> Result<Task> {
        let body = TaskProof {
            proof: proof.to_string(),
        };
        self.post_json(&format!("/v1/tasks/{id}/proof"), &body, None)
            .await
    }

    /// Approves a task waiting for review (`force` with `reason`: admins).
    pub async fn approve_task(&self, id: i64, body: &TaskApprove) -> Result<Task> {
        self.post_json(&format!("/v1/tasks/{id}/approve"), body, None)
            .await
    }

    /// Rejects a task waiting for review; `comment` is the required reason.
    pub async fn reject_task(&self, id: i64, body: &TaskReject) -> Result<Task> {
        self.post_json(&format!("/v1/tasks/{id}/reject"), body, None)
            .await
    }

    /// Runs your approved task with this client's credentials.
    pub async fn run_task(&self, id: i64, body: &TaskRun) -> Result<Task> {
        self.post_json(&format!("/v1/tasks/{id}/run"), body, None)
            .await
    }

    /// Tasks waiting for a review you may give, oldest first (`all`: every one).
    pub async fn list_reviews(&self, all: bool) -> Result<Vec<Task>> {
        let q = ReviewsQuery {
            all: all.then_some(true),
        };
        let rb = self.request(Method::GET, "/v1/reviews", None).query(&q);
        self.send_json(rb).await
    }

    pub async fn kill_task(&self, id: i64) -> Result<Task> {
        self.post_json(
            &format!("/v1/tasks/{id}/kill"),
            &serde_json::json!({}),
            None,
        )
        .await
    }

    /// The stored log from `offset` on (whatever exists so far).
    pub async fn task_logs(&self, id: i64, offset: u64) -> Result<Bytes> {
        let q = LogsQuery {
            offset: Some(offset),
            follow: None,
            frames: None,
        };
        let rb = self
            .request(Method::GET, &format!("/v1/tasks/{id}/logs"), None)
            .query(&q);
        let resp = self.send(rb).await?;
        resp.bytes().await.map_err(|e| self.transport(e))
    }

    /// Streams the log from `offset` on as it is written; the stream ends when the
    /// task ends (or the connection breaks: resume from the bytes received so far).
    pub async fn follow_task_logs(
        &self,
        id: i64,
        offset: u64,
    ) -> Result<impl Stream<Item = Result<Bytes>> + use<>> {
        let q = LogsQuery {
            offset: Some(offset),
            follow: Some(true),
            frames: None,
        };
        let rb = self
            .request(Method::GET, &format!("/v1/tasks/{id}/logs"), None)
            .query(&q);
        let resp = self.send(rb).await?;
        let this = self.clone();
        Ok(resp
            .bytes_stream()
            .map(move |r| r.map_err(|e| this.transport(e))))
    }

    /// [`Client::follow_task_logs`] that also says how the task ended: the server
    /// sends the ended task after the last bytes (`frames=true`), so no second request
    /// is needed. A server that predates frames streams plain bytes: no
    /// [`LogPiece::End`] comes then (nor when the stream was cut).
    pub async fn follow_task_log_pieces(
        &self,
        id: i64,
        offset: u64,
    ) -> Result<impl Stream<Item = Result<LogPiece>> + use<>> {
        let q = LogsQuery {
            offset: Some(offset),
            follow: Some(true),
            frames: Some(true),
        };
        let rb = self
            .request(Method::GET, &format!("/v1/tasks/{id}/logs"), None)
            .query(&q);
        let resp = self.send(rb).await?;
        let framed = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(LOG_FRAMES_CONTENT_TYPE));
        let url = resp.url().to_string();
        let status = resp.status().as_u16();
        let this = self.clone();
        let bytes = resp.bytes_stream();
        let state = (
            Box::pin(bytes),
            Vec::<u8>::new(),
            std::collections::VecDeque::new(),
        );
        Ok(futures_util::stream::unfold(
            state,
            move |(mut bytes, mut buf, mut ready)| {
                let this = this.clone();
                let url = url.clone();
                async move {
                    loop {
                        if let Some(piece) = ready.pop_front() {
                            return Some((piece, (bytes, buf, ready)));
                        }
                        let chunk = match bytes.next().await? {
                            Ok(c) => c,
                            Err(e) => return Some((Err(this.transport(e)), (bytes, buf, ready))),
                        };
                        if !framed {
                            return Some((Ok(LogPiece::Bytes(chunk)), (bytes, buf, ready)));
                        }
                        buf.extend_from_slice(&chunk);
                        for (kind, payload) in take_log_frames(&mut buf) {
                            ready.push_back(match kind {
                                LOG_FRAME_BYTES => Ok(LogPiece::Bytes(Bytes::from(payload))),
                                LOG_FRAME_END => serde_json::from_slice::<Task>(&payload)
                                    .map(|t| LogPiece::End(Box::new(t)))
                                    .map_err(|e| crate::ClientError::Protocol {
                                        url: url.clone(),
                                        status,
                                        detail: format!("bad end frame in a log answer: {e}"),
                                    }),
                                // A kind of a later server: skipped.
                                _ => continue,
                            });
                        }
                    }
                }
            },
        ))
    }

    pub async fn list_agents(&self) -> Result<Vec<Agent>> {
        self.get_json("/v1/agents").await
    }

    /// A new agent token for agents with exactly `tags` (`None`: untagged agents).
    pub async fn create_agent_token(
        &self,
        name: Option<String>,
        tags: Option<String>,
    ) -> Result<AgentTokenCreated> {
        self.post_json("/v1/agent-tokens", &AgentTokenCreate { name, tags }, None)
            .await
    }

    pub async fn list_agent_tokens(&self, q: &AgentTokenListQuery) -> Result<Vec<AgentToken>> {
        let rb = self.request(Method::GET, "/v1/agent-tokens", None).query(q);
        self.send_json(rb).await
    }

    pub async fn revoke_agent_token(&self, id: i64) -> Result<()> {
        let rb = self.request(Method::DELETE, &format!("/v1/agent-tokens/{id}"), None);
        self.send(rb).await.map(|_| ())
    }

    /// Your API tokens; `all`: every user's (admins).
    pub async fn list_tokens(&self, all: bool) -> Result<Vec<UserToken>> {
        let q = TokenListQuery {
            all: all.then_some(true),
        };
        let rb = self.request(Method::GET, "/v1/tokens", None).query(&q);
        self.send_json(rb).await
    }

    /// Another API token for yourself (shown once).
    pub async fn create_token(&self, name: Option<String>) -> Result<UserTokenCreated> {
        self.post_json("/v1/tokens", &UserTokenCreate { name }, None)
            .await
    }

    pub async fn revoke_token(&self, id: i64) -> Result<()> {
        let rb = self.request(Method::DELETE, &format!("/v1/tokens/{id}"), None);
        self.send(rb).await.map(|_| ())
    }

    pub async fn create_user(&self, u: &UserCreate) -> Result<UserCreated> {
        self.post_json("/v1/users", u, None).await
    }

    pub async fn list_users(&self) -> Result<Vec<User>> {
        self.get_json("/v1/users").await
    }

    /// The organisation's audit log, newest first (admins).
    pub async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
        let rb = self.request(Method::GET, "/v1/audit", None).query(q);
        self.send_json(rb).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(super::seg("demo-db"), "demo-db");
        assert_eq!(super::seg("a b/c"), "a%20b%2Fc");
    }
}
