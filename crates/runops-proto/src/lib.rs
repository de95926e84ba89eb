//! Wire types shared by every Runops component.
//!
//! The control plane (`runops-server`), the agent (`runops-agent`) and the CLI
//! (`runops-cli`, through `runops-client`) speak JSON over HTTP. This crate holds
//! the shapes of those messages and nothing else: no I/O, no async, only serde.
//!
//! - [`api`]: the user-facing REST API (`/v1/targets`, `/v1/tasks`, ...).
//! - [`agent`]: the agent protocol (`connect` → `poll` → `start` → `logs` → `finish`).
//! - [`token`]: the format of API and agent tokens (an agent token carries the server URL).
//! - [`status`]: task statuses and failure reasons, with their wire names.
//! - [`limits`]: size limits shared by both sides, each with its reason.
//! - [`vocab`]: target types, secret providers, redact and review modes, roles.
//! - [`templates`]: vetted scripts kept in git, run with parameters (`/v1/templates`).
//! - [`webhook`]: the webhook API (receivers of task and review events, deliveries).

pub mod agent;
pub mod api;
pub mod limits;
pub mod status;
pub mod templates;
pub mod token;
pub mod vocab;
pub mod webhook;

pub use status::{FailureReason, TaskStatus};
pub use vocab::{RedactMode, ReviewMode, Role, SecretProvider, TargetType, UnknownName};

/// The version every component reports (`runops --version`, agent `connect`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
