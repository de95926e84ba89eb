//! Exponential backoff with jitter for retries against the server.

use crate::limits::{BACKOFF_INITIAL, BACKOFF_MAX};
use std::time::Duration;

/// Delays of 0.5 s doubling up to 30 s; each one is randomised between half and all of
/// its value so that many agents coming back after an outage do not retry in step.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff {
            next: BACKOFF_INITIAL,
        }
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_INITIAL;
    }

    /// The delay to wait now; the following one will be about twice as long.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let mut bytes = [0u8; 4];
        let unit = match getrandom::fill(&mut bytes) {
            Ok(()) => f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX),
            Err(_) => 1.0,
        };
        base.mul_f64(0.5 + 0.5 * unit)
    }

    /// Sleeps for [`Backoff::next_delay`].
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_stay_jittered_below_it() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= BACKOFF_INITIAL / 2 && first <= BACKOFF_INITIAL);
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= BACKOFF_MAX);
        }
        let late = b.next_delay();
        assert!(late >= BACKOFF_MAX / 2);
        b.reset();
        assert!(b.next_delay() <= BACKOFF_INITIAL);
    }
}
