//! When a failed delivery is tried again, and when it is given up: pure functions of
//! the attempt count and the clock.

use std::time::Duration;

use crate::store::webhooks::AttemptOutcome;

/// Delay before the first retry; each later one doubles, up to the cap.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The delay after the `attempts`-th failed attempt (1-based): 1 s, 2 s, 4 s... at
/// most `cap` (and at least 1 ms, so a zero cap cannot spin).
pub fn retry_delay(attempts: u32, cap: Duration) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    FIRST_RETRY
        .saturating_mul(1u32 << doublings)
        .min(cap)
        .max(Duration::from_millis(1))
}

/// True for an answer that means "delivered".
pub fn is_delivered(status: u16) -> bool {
    (200..300).contains(&status)
}

/// What a failed attempt leads to: a retry after [`retry_delay`], or giving up once
/// the event is older than `give_up_after`.
pub fn after_failure(
    attempts: u32,
    created_at_ms: i64,
    now_ms: i64,
    cap: Duration,
    give_up_after: Duration,
    status: Option<u16>,
    error: String,
) -> AttemptOutcome {
    let horizon = i64::try_from(give_up_after.as_millis()).unwrap_or(i64::MAX);
    if now_ms.saturating_sub(created_at_ms) >= horizon {
        return AttemptOutcome::GiveUp { status, error };
    }
    let delay = i64::try_from(retry_delay(attempts, cap).as_millis()).unwrap_or(i64::MAX);
    AttemptOutcome::Retry {
        status,
        error,
        next_attempt_ms: now_ms.saturating_add(delay),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_up_to_the_cap() {
        let cap = Duration::from_secs(300);
        let secs: Vec<u64> = (1..=11).map(|a| retry_delay(a, cap).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(retry_delay(u32::MAX, cap), cap);
        assert_eq!(retry_delay(0, cap), FIRST_RETRY);
        assert_eq!(
            retry_delay(5, Duration::ZERO),
            Duration::from_millis(1),
            "a zero cap must not make the worker spin"
        );
    }

    #[test]
    fn only_2xx_is_delivered() {
        assert!(is_delivered(200) && is_delivered(204) && is_delivered(299));
        assert!(!is_delivered(199) && !is_delivered(301) && !is_delivered(500));
    }

    #[test]
    fn a_failure_is_retried_until_the_horizon_then_given_up() {
        let cap = Duration::from_secs(60);
        let day = Duration::from_secs(24 * 3600);
        let out = after_failure(3, 1_000, 5_000, cap, day, Some(503), "503".into());
        assert_eq!(
            out,
            AttemptOutcome::Retry {
                status: Some(503),
                error: "503".into(),
                next_attempt_ms: 5_000 + 4_000
            }
        );
        let late = 1_000 + day.as_millis() as i64;
        let out = after_failure(90, 1_000, late, cap, day, None, "refused".into());
        assert_eq!(
            out,
            AttemptOutcome::GiveUp {
                status: None,
                error: "refused".into()
            }
        );
    }
}
