//! The agent's bookkeeping of its tasks: which ones it is running or still reporting
//! (the poll's `running`), how to stop each, and the slots that bound concurrency.

use crate::failure::TaskFailure;
use crate::pipeline::StopHandle;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::futures::Notified;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// Tasks of this agent by id: `Some(stop)` while running, `None` while only reporting.
#[derive(Default)]
pub struct ActiveTasks {
    tasks: Mutex<BTreeMap<i64, Option<StopHandle>>>,
    /// Offers being started: not running yet, but must not be taken twice.
    starting: Mutex<BTreeSet<i64>>,
    /// Signalled whenever the last task leaves.
    emptied: Notify,
}

impl ActiveTasks {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<i64, Option<StopHandle>>> {
        // The map stays consistent even if a holder panicked: every update is one call.
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves an offered task for starting; false when this agent already has it (an
    /// offer repeated after a reconnect must not run twice).
    pub fn claim(&self, task_id: i64) -> bool {
        let tasks = self.lock();
        let mut starting = self.starting.lock().unwrap_or_else(|p| p.into_inner());
        !tasks.contains_key(&task_id) && starting.insert(task_id)
    }

    /// Gives up a claim (the start was refused).
    pub fn unclaim(&self, task_id: i64) {
        let mut starting = self.starting.lock().unwrap_or_else(|p| p.into_inner());
        starting.remove(&task_id);
    }

    pub fn add(&self, task_id: i64, stop: Option<StopHandle>) {
        let mut tasks = self.lock();
        tasks.insert(task_id, stop);
        self.starting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&task_id);
    }

    /// The task stopped running; it is only reporting now.
    pub fn mark_reporting(&self, task_id: i64) {
        if let Some(entry) = self.lock().get_mut(&task_id) {
            *entry = None;
        }
    }

    pub fn remove(&self, task_id: i64) {
        let mut tasks = self.lock();
        tasks.remove(&task_id);
        if tasks.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    pub fn ids(&self) -> Vec<i64> {
        self.lock().keys().copied().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Resolves when the last task leaves. Create (and `enable`) it before checking
    /// [`ActiveTasks::is_empty`] so that no wake-up is lost in between.
    pub fn emptied(&self) -> Notified<'_> {
        self.emptied.notified()
    }

    /// Stops a running task; `false` when it is not running here.
    pub fn stop(&self, task_id: i64, why: TaskFailure) -> bool {
        match self.lock().get(&task_id) {
            Some(Some(stop)) => {
                stop.stop(why);
                true
            }
            _ => false,
        }
    }

    pub fn stop_all(&self, why: &TaskFailure) {
        for stop in self.lock().values().flatten() {
            stop.stop(why.clone());
        }
    }
}

/// At most `concurrency` tasks execute at once; a freed slot is announced so that the
/// poll loop can ask for more work at once instead of after a full poll hold.
pub struct Slots {
    semaphore: Arc<Semaphore>,
    total: u32,
    freed: Arc<Notify>,
}

/// One occupied slot; freeing it (drop) announces it.
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    freed: Arc<Notify>,
}

impl Slots {
    pub fn new(concurrency: u32) -> Slots {
        Slots {
            semaphore: Arc::new(Semaphore::new(concurrency as usize)),
            total: concurrency,
            freed: Arc::new(Notify::new()),
        }
    }

    pub fn free(&self) -> u32 {
        u32::try_from(self.semaphore.available_permits()).unwrap_or(u32::MAX)
    }

    pub fn all_free(&self) -> bool {
        self.free() >= self.total
    }

    pub fn try_take(&self) -> Option<Slot> {
        match self.semaphore.clone().try_acquire_owned() {
            Ok(permit) => Some(Slot {
                permit: Some(permit),
                freed: self.freed.clone(),
            }),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => None,
        }
    }

    /// Resolves after a slot was freed. Create (and `enable`) it before reading
    /// [`Slots::free`] so that no wake-up is lost in between.
    pub fn freed(&self) -> Notified<'_> {
        self.freed.notified()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runops_proto::FailureReason;

    #[test]
    fn slots_bound_concurrency_and_come_back() {
        let slots = Slots::new(2);
        let a = slots.try_take().unwrap();
        let _b = slots.try_take().unwrap();
        assert!(slots.try_take().is_none());
        assert_eq!(slots.free(), 0);
        drop(a);
        assert_eq!(slots.free(), 1);
        assert!(!slots.all_free());
    }

    #[test]
    fn stop_reaches_only_running_tasks_and_first_reason_wins() {
        let active = ActiveTasks::default();
        let stop = StopHandle::new();
        active.add(1, Some(stop.clone()));
        active.add(2, None);
        let why = TaskFailure::new(FailureReason::Cancelled, "killed");
        assert!(active.stop(1, why.clone()));
        assert!(!active.stop(2, why.clone()));
        active.stop_all(&TaskFailure::new(FailureReason::Timeout, "late"));
        assert_eq!(stop.reason(), Some(&why));
        assert_eq!(active.ids(), vec![1, 2]);
        assert!(!active.claim(1), "a task already here was claimed again");
        assert!(active.claim(3));
        assert!(!active.claim(3));
        assert_eq!(
            active.ids(),
            vec![1, 2],
            "a claimed task is not running yet"
        );
        active.unclaim(3);
        assert!(active.claim(3));
        active.remove(1);
        active.remove(2);
        assert!(active.is_empty());
    }
}
