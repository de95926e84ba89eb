//! Giving freed memory back to the system when the agent is idle.
//!
//! glibc's allocator keeps the heap pages that tasks' buffers (log chunks, requests,
//! environments) used once they are freed, so a worked agent stays as big as its busiest
//! moment. When no task has been running for [`IDLE_TRIM_DELAY`], [`trim_when_idle`]
//! calls `malloc_trim(0)`, which returns every whole free page of every arena. It runs
//! at most once per task burst, never while tasks run (a trim makes the next
//! allocations fault their pages in again).

use crate::agent::Agent;
use std::sync::Arc;
use std::time::Duration;

/// How long the agent must have been without tasks before its free heap is trimmed: long
/// enough that back-to-back tasks do not pay for it, short enough to be back to its
/// idle size within seconds of its last task.
pub const IDLE_TRIM_DELAY: Duration = Duration::from_secs(1);

/// Trims the heap once after start-up and then each time the agent has been idle for
/// [`IDLE_TRIM_DELAY`] after its last task left. Runs until aborted.
pub async fn trim_when_idle(agent: Arc<Agent>) {
    loop {
        // Registered before the check below, so that a task leaving during the wait
        // is not missed.
        let emptied = agent.active.emptied();
        tokio::pin!(emptied);
        emptied.as_mut().enable();
        tokio::time::sleep(IDLE_TRIM_DELAY).await;
        if agent.active.is_empty() {
            trim();
        }
        emptied.await;
    }
}

/// Returns the allocator's free pages to the system.
fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks and releases the allocator's own free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
