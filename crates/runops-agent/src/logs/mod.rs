//! Task logs on their way to the server.
//!
//! [`output::TaskLog`] is where a running task's output goes: through the task's
//! redactor, then appended to the spool file (raw output never touches disk).
//! [`spool`] keeps each task's redacted log, acknowledged offset and result on disk until
//! the server has them. [`s3`] stores the finished log in the user's own bucket when
//! configured. [`stream`] is the per-task uploader: it sends new log bytes as
//! ordered chunks, then the result, retrying until the server acknowledges both.

pub mod output;
pub mod s3;
pub mod spool;
pub mod stream;
