//! Size limits shared by the server and its clients. Each one exists so that no
//! single input can exhaust memory or storage on either side.

/// Largest script a task may carry. Scripts are stored and sent inside the offer.
pub const MAX_SCRIPT_BYTES: usize = 1024 * 1024;

/// Largest JSON body the API accepts for any request other than log uploads
/// (a target's config or a task with a maximal script fit comfortably).
pub const MAX_JSON_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Largest single log chunk this server takes, advertised to agents in
/// `ConnectResponse::max_log_chunk_bytes`; an agent splits bigger spools. Each chunk is
/// one request and one store transaction, so fewer, bigger chunks move a large log
/// faster (BENCHMARKS.md: 1 → 4 MiB, +25 % on a 1 GiB log).
pub const MAX_LOG_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Largest log chunk every server takes, including those that predate
/// `ConnectResponse::max_log_chunk_bytes`: what an agent sends when the server does not
/// say.
pub const BASE_LOG_CHUNK_BYTES: usize = 1024 * 1024;

/// Longest target name; names appear in URLs and tables.
pub const MAX_TARGET_NAME_LEN: usize = 128;

/// Longest tag string (targets' `tags`, agents' `TAGS`).
pub const MAX_TAGS_LEN: usize = 256;

/// Longest task message / target description.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// Longest `secret_path`, `secret_mapping` or `custom_command` text.
pub const MAX_CONFIG_FIELD_LEN: usize = 64 * 1024;

/// Longest a server holds an agent's poll open when nothing happens. The poll is
/// also the heartbeat, so it must stay well under the lease.
pub const MAX_POLL_HOLD_SECS: u64 = 25;
