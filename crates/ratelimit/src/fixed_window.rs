//! The fixed window counter.

use std::time::Duration;

use infra_common::sync::Mutex;

use crate::algorithm::{Algorithm, AlgorithmConfig, CONFIG_WORDS};
use crate::{Decision, Error, Quota};

/// A counter per fixed window: at most `limit` requests in each window `[k·period, (k+1)·period)`
/// of the clock.
///
/// Semantics: the count resets at each window boundary; `check_n(n)` is admitted while
/// `count + n ≤ limit` and denial consumes nothing. Cheap and easy to explain, but a client can
/// send `limit` at the end of one window and `limit` again at the start of the next: up to twice
/// the limit within one period. Use a sliding window or GCRA when that matters. The burst of the
/// quota is not used.
///
/// After a quota change the count carries over and the new limit applies to it. After a change
/// of window length, windows of the new length are aligned to the clock the same way, and the
/// count, which belongs to the window it was taken in, carries into the current window if the
/// two overlap and is dropped otherwise. Precisely: no cell is lost (every cell admitted within
/// a window of the new length counts against it), and when the new window contains the old one
/// (a limit per second becoming a limit per minute) it counts exactly that window's cells. When
/// it does not, the count (which keeps no times) may include cells admitted in the old window
/// before the new one began: the limiter then admits less in that one window, never more.
#[derive(Debug)]
pub struct FixedWindow {
    state: Mutex<WindowCount>,
}

/// `count` cells admitted in the window `[start, end)`.
#[derive(Debug, Clone, Copy)]
struct WindowCount {
    start: u64,
    end: u64,
    count: u64,
}

impl WindowCount {
    fn empty(config: &WindowConfig, now: u64) -> Self {
        let start = config.window_start(now);
        Self {
            start,
            end: start.saturating_add(config.window),
            count: 0,
        }
    }

    /// Moves the count to the window of `config` holding `now`: kept if its own window
    /// overlaps that one, else dropped. A reading older than the count's window (a racing
    /// thread) counts in that window.
    fn roll(&mut self, config: &WindowConfig, now: u64) {
        if now < self.start {
            return;
        }
        let current = Self::empty(config, now);
        let count = if self.end > current.start {
            self.count
        } else {
            0
        };
        *self = Self { count, ..current };
    }
}

/// A window algorithm's configuration: its length and the most it admits per window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowConfig {
    /// Window length in nanoseconds.
    pub window: u64,
    /// Most cells per window.
    pub limit: u32,
}

impl AlgorithmConfig for WindowConfig {
    fn from_quota(quota: &Quota) -> Result<Self, Error> {
        Ok(Self {
            window: quota.period_nanos(),
            limit: quota.limit(),
        })
    }

    fn encode(&self) -> [u64; CONFIG_WORDS] {
        [self.window, u64::from(self.limit), 0, 0]
    }

    fn decode(words: [u64; CONFIG_WORDS]) -> Self {
        Self {
            window: words[0].max(1),
            limit: u32::try_from(words[1]).unwrap_or(u32::MAX),
        }
    }

    fn capacity(&self) -> u32 {
        self.limit
    }
}

impl WindowConfig {
    /// The start of the window holding `now`.
    pub fn window_start(&self, now: u64) -> u64 {
        now - now % self.window
    }
}

pub(crate) fn cells(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

pub(crate) fn nanos(value: u64) -> Duration {
    Duration::from_nanos(value)
}

impl Algorithm for FixedWindow {
    type Config = WindowConfig;
    const NAME: &'static str = "fixed_window";

    fn new(config: &WindowConfig, now: u64) -> Self {
        Self {
            state: Mutex::new(WindowCount::empty(config, now)),
        }
    }

    fn check_n(&self, config: &WindowConfig, now: u64, n: u32) -> Decision {
        let limit = u64::from(config.limit);
        let mut state = self.state.lock();
        // A reading older than the count's window (a racing thread's, or a clock stepped back)
        // is decided as at that window's start: it counts there, the window is brought to the
        // length in force as a reading then would bring it, and every wait is told from it.
        let at = now.max(state.start);
        state.roll(config, at);
        let until_end = state.end.saturating_sub(now);
        let left = limit.saturating_sub(state.count);
        let reset = |count: u64| nanos(if count > 0 { until_end } else { 0 });
        if n == 0 {
            return Decision::allowed(config.limit, cells(left), reset(state.count));
        }
        if u64::from(n) <= left {
            state.count += u64::from(n);
            return Decision::allowed(config.limit, cells(left - u64::from(n)), nanos(until_end));
        }
        let retry = if n > config.limit {
            Duration::MAX
        } else {
            nanos(until_end)
        };
        Decision::denied(config.limit, cells(left), retry, reset(state.count))
    }

    fn is_idle(&self, config: &WindowConfig, now: u64) -> bool {
        let mut state = *self.state.lock();
        state.roll(config, now);
        state.count == 0
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::RateLimiter;
    use infra_common::ManualClock;

    #[test]
    fn counts_reset_at_window_boundaries() {
        let clock = ManualClock::new();
        clock.advance(Duration::from_millis(900));
        let limiter =
            RateLimiter::<FixedWindow, _>::with_clock(Quota::per_second(3).unwrap(), clock.clone())
                .unwrap();
        assert!(limiter.check_n(3).unwrap().is_allowed());
        let denied = limiter.check();
        assert!(denied.is_denied());
        assert_eq!(denied.retry_after(), Duration::from_millis(100));
        clock.advance(Duration::from_millis(100));
        // The boundary problem: three more right away.
        assert!(limiter.check_n(3).unwrap().is_allowed());
        assert!(limiter.check().is_denied());
        clock.advance(Duration::from_secs(1));
        assert!(limiter.is_idle());
    }
}
