//! Sliding windows: a weighted counter (approximate, two numbers) and a log (exact).

use std::collections::VecDeque;
use std::time::Duration;

use infra_common::sync::Mutex;

use crate::Decision;
use crate::algorithm::Algorithm;
use crate::fixed_window::{WindowConfig, cells, nanos};

/// The sliding-window counter: the current fixed window's count plus the previous window's,
/// weighted by how much of it the sliding window still covers.
///
/// Semantics: with window `W`, `e` nanoseconds into the current window, previous count `p` and
/// current count `c`, the estimate is `p·(W−e)/W + c`, and `check_n(n)` is admitted when
/// `estimate + n ≤ limit` (compared exactly, in integers). Denial consumes nothing. This smooths
/// the fixed window's boundary burst with two counters per key; it assumes the previous
/// window's requests were evenly spread, so a burst at the end of one window can still let
/// through somewhat more than `limit` in some sliding period. Use [`SlidingWindowLog`] when the
/// bound must be exact. The quota's burst is not used.
///
/// After a change of window length, windows of the new length are aligned to the clock, and
/// each of the two counts, which belong to the windows they were taken in, moves to the later of
/// the two new windows (current and previous) that its own window overlaps, or is dropped if it
/// overlaps neither. No cell is lost: the estimate is never below the one computed from the
/// cells' actual admission times. When each old window lies within one new window (a limit per
/// second becoming a limit per minute) the estimate is exactly that one; otherwise a cell may
/// count as admitted later than it was, and the limiter admits less for a while, never more.
#[derive(Debug)]
pub struct SlidingWindowCounter {
    state: Mutex<Counts>,
}

/// `current` cells admitted in the window `[start, end)` and `previous` in the one of the same
/// length before it.
#[derive(Debug, Clone, Copy)]
struct Counts {
    start: u64,
    end: u64,
    previous: u64,
    current: u64,
}

impl Counts {
    fn empty(config: &WindowConfig, now: u64) -> Self {
        let start = config.window_start(now);
        Self {
            start,
            end: start.saturating_add(config.window),
            previous: 0,
            current: 0,
        }
    }

    /// Moves the counts to the window of `config` holding `now` and the one before it; older
    /// readings change nothing.
    ///
    /// Each count goes to the later of the two new windows that its own window overlaps (its
    /// cells may lie there), and is dropped if it overlaps neither. With an unchanged length
    /// this is the usual shift (current becomes previous, then nothing); after a change of
    /// length no cell is lost, and a cell is at most counted later than it was admitted.
    fn roll(&mut self, config: &WindowConfig, now: u64) {
        if now < self.start {
            return;
        }
        let mut rolled = Self::empty(config, now);
        let before = rolled.start.saturating_sub(config.window);
        // The previous window ends where the current one starts.
        for (count, ends) in [(self.current, self.end), (self.previous, self.start)] {
            if ends > rolled.start {
                rolled.current += count;
            } else if ends > before {
                rolled.previous += count;
            }
        }
        *self = rolled;
    }
}

/// Smallest `e` in `0..=W` with `weight·(W−e) ≤ room·W`, for `weight > 0`.
fn first_fit(window: u64, weight: u64, room: u64) -> u64 {
    let w = u128::from(window);
    let fits = u128::from(room) * w / u128::from(weight);
    u64::try_from(w.saturating_sub(fits)).unwrap_or(u64::MAX)
}

impl Algorithm for SlidingWindowCounter {
    type Config = WindowConfig;
    const NAME: &'static str = "sliding_window_counter";

    fn new(config: &WindowConfig, now: u64) -> Self {
        Self {
            state: Mutex::new(Counts::empty(config, now)),
        }
    }

    fn check_n(&self, config: &WindowConfig, now: u64, n: u32) -> Decision {
        let mut counts = self.state.lock();
        // A reading older than the counts' window (a racing thread's, or a clock stepped back)
        // is decided as at that window's start: the counts are brought to the length in force
        // as a reading then would bring them, and every wait told at it is that much longer.
        let at = now.max(counts.start);
        counts.roll(config, at);
        let Counts {
            start,
            previous,
            current,
            ..
        } = *counts;
        let w = config.window;
        let limit = u64::from(config.limit);
        let elapsed = now.saturating_sub(start).min(w);
        let behind = start.saturating_sub(now);
        let used =
            u128::from(previous) * u128::from(w - elapsed) + u128::from(current) * u128::from(w);
        let room = (u128::from(limit) * u128::from(w)).saturating_sub(used);
        let remaining = |room: u128| cells(u64::try_from(room / u128::from(w)).unwrap_or(0));
        let reset = |current: u64| {
            nanos(if current > 0 {
                (2 * w).saturating_sub(elapsed).saturating_add(behind)
            } else if previous > 0 {
                (w - elapsed).saturating_add(behind)
            } else {
                0
            })
        };
        let cost = u128::from(n) * u128::from(w);
        if n == 0 || cost <= room {
            let current = current + u64::from(n);
            counts.current = current;
            return Decision::allowed(config.limit, remaining(room - cost), reset(current));
        }
        let n = u64::from(n);
        let retry = if n > limit {
            Duration::MAX
        } else if current + n <= limit {
            // Fits in this window once enough of the previous one has slid out.
            nanos((first_fit(w, previous, limit - current - n) - elapsed).saturating_add(behind))
        } else {
            // Must wait for the next window, where this window's count is the weighted one.
            nanos((w - elapsed + first_fit(w, current, limit - n)).saturating_add(behind))
        };
        Decision::denied(config.limit, remaining(room), retry, reset(current))
    }

    fn is_idle(&self, config: &WindowConfig, now: u64) -> bool {
        let mut counts = *self.state.lock();
        counts.roll(config, now);
        counts.previous == 0 && counts.current == 0
    }
}

/// The sliding-window log: the admission time of every cell still inside the window.
///
/// Semantics: exact. In every interval `(t−W, t]` at most `limit` cells are admitted;
/// `check_n(n)` is admitted when the cells admitted in `(now−W, now]` plus `n` are at most the
/// limit, and denial consumes nothing. `retry_after` is the moment enough old entries leave the
/// window. Memory is bounded by the limit: at most `limit` entries of 16 bytes (fewer when
/// requests take several cells or arrive in the same nanosecond), so keep it for modest limits
/// (up to thousands per window). The quota's burst is not used.
#[derive(Debug)]
pub struct SlidingWindowLog {
    state: Mutex<Log>,
}

#[derive(Debug)]
struct Log {
    /// (admission time, cells), oldest first, times non-decreasing.
    entries: VecDeque<(u64, u32)>,
    /// Cells in `entries`: at most the largest limit they were admitted under, so a `u32`.
    total: u32,
    /// The largest limit the log was charged for: the one it was created under, or a raised
    /// one a keyed limiter charged it for since (see [`Algorithm::charged_heap_bytes`]); in the
    /// word `total` leaves free.
    charged_limit: u32,
}

impl Log {
    fn evict(&mut self, window: u64, now: u64) {
        while let Some(&(at, cells)) = self.entries.front() {
            if at.saturating_add(window) > now {
                break;
            }
            self.entries.pop_front();
            self.total -= cells;
        }
    }

    fn reset_after(&self, window: u64, now: u64) -> Duration {
        self.entries.back().map_or(Duration::ZERO, |&(at, _)| {
            nanos(at.saturating_add(window).saturating_sub(now))
        })
    }
}

/// The most heap memory a log holds under `limit`: at most `limit` entries (each holds at
/// least one admitted cell), in a `VecDeque` whose capacity doubles from 4.
fn log_bytes(limit: u32) -> usize {
    let entries = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .max(4)
        .checked_next_power_of_two()
        .unwrap_or(usize::MAX);
    entries.saturating_mul(std::mem::size_of::<(u64, u32)>())
}

/// The log's decision under `config`, with its lock held.
fn decide(log: &mut Log, config: &WindowConfig, now: u64, n: u32) -> Decision {
    let w = config.window;
    let limit = u64::from(config.limit);
    log.evict(w, now);
    let left = limit.saturating_sub(u64::from(log.total));
    if n == 0 {
        return Decision::allowed(config.limit, cells(left), log.reset_after(w, now));
    }
    let n64 = u64::from(n);
    if n64 <= left {
        // A reading older than the newest entry (a racing thread) is recorded at the newest
        // time, keeping the log ordered; the entry then lives slightly longer, never shorter.
        let at = log.entries.back().map_or(now, |&(last, _)| last.max(now));
        match log.entries.back_mut() {
            Some((last, cells)) if *last == at => *cells += n,
            _ => log.entries.push_back((at, n)),
        }
        // `n <= left`, so the total stays within the limit, a `u32`.
        log.total += n;
        return Decision::allowed(config.limit, cells(left - n64), log.reset_after(w, now));
    }
    let retry = if n64 > limit {
        Duration::MAX
    } else {
        // Cells past a lowered limit must leave too, not only the `n - left` missing
        // under it.
        let mut to_free = (u64::from(log.total) + n64).saturating_sub(limit);
        let mut retry = Duration::ZERO;
        for &(at, cells) in &log.entries {
            retry = nanos(at.saturating_add(w).saturating_sub(now));
            to_free = to_free.saturating_sub(u64::from(cells));
            if to_free == 0 {
                break;
            }
        }
        retry
    };
    Decision::denied(config.limit, cells(left), retry, log.reset_after(w, now))
}

impl SlidingWindowLog {
    /// Entries currently held (for measuring memory).
    pub fn entries(&self) -> usize {
        self.state.lock().entries.len()
    }
}

impl Algorithm for SlidingWindowLog {
    type Config = WindowConfig;
    const NAME: &'static str = "sliding_window_log";

    fn new(config: &WindowConfig, _now: u64) -> Self {
        Self {
            state: Mutex::new(Log {
                entries: VecDeque::new(),
                total: 0,
                charged_limit: config.limit,
            }),
        }
    }

    fn check_n(&self, config: &WindowConfig, now: u64, n: u32) -> Decision {
        decide(&mut self.state.lock(), config, now, n)
    }

    /// Under a limit raised past the one the log was charged for, it asks for the larger log's
    /// bytes; refused, it keeps to the limit it was charged for, so its entries stay within
    /// its charge.
    fn check_n_charged(
        &self,
        config: &WindowConfig,
        now: u64,
        n: u32,
        charge: impl FnOnce(usize) -> bool,
    ) -> Decision {
        let mut log = self.state.lock();
        if config.limit > log.charged_limit {
            let extra = log_bytes(config.limit) - log_bytes(log.charged_limit);
            if extra == 0 || charge(extra) {
                log.charged_limit = config.limit;
            } else {
                let charged = WindowConfig {
                    limit: log.charged_limit,
                    ..*config
                };
                let decision = decide(&mut log, &charged, now, n);
                if decision.is_denied() && n > charged.limit {
                    // Admitted once the cap has room for the larger log, which may be at any
                    // moment: not never.
                    return Decision::denied(
                        charged.limit,
                        decision.remaining(),
                        Decision::RETRY_SOON,
                        decision.reset_after(),
                    );
                }
                return decision;
            }
        }
        decide(&mut log, config, now, n)
    }

    /// At most `limit` entries (each holds at least one admitted cell), in a `VecDeque` whose
    /// capacity doubles from 4.
    fn heap_bytes(config: &WindowConfig) -> usize {
        log_bytes(config.limit)
    }

    fn charged_heap_bytes(&self) -> usize {
        log_bytes(self.state.lock().charged_limit)
    }

    fn is_idle(&self, config: &WindowConfig, now: u64) -> bool {
        let log = self.state.lock();
        log.entries
            .back()
            .is_none_or(|&(at, _)| at.saturating_add(config.window) <= now)
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::{Quota, RateLimiter};
    use infra_common::ManualClock;

    #[test]
    fn counter_weights_the_previous_window() {
        let clock = ManualClock::new();
        let limiter = RateLimiter::<SlidingWindowCounter, _>::with_clock(
            Quota::per_second(10).unwrap(),
            clock.clone(),
        )
        .unwrap();
        assert!(limiter.check_n(10).unwrap().is_allowed());
        clock.advance(Duration::from_millis(1250));
        // The previous window (10) still weighs 75 %: 7.5 used, 2 whole cells left.
        let d = limiter.check_n(0).unwrap();
        assert_eq!(d.remaining(), 2);
        assert!(limiter.check_n(2).unwrap().is_allowed());
        let denied = limiter.check();
        assert!(denied.is_denied());
        // 0.5 used by the weight must slide out: 10·(1000−e)/1000 + 2 + 1 ≤ 10 at e = 300 ms.
        assert_eq!(denied.retry_after(), Duration::from_millis(50));
        clock.advance(Duration::from_millis(50));
        assert!(limiter.check().is_allowed());
    }

    #[test]
    fn log_is_exact_and_bounded_by_the_limit() {
        let clock = ManualClock::new();
        let limiter = RateLimiter::<SlidingWindowLog, _>::with_clock(
            Quota::per_second(3).unwrap(),
            clock.clone(),
        )
        .unwrap();
        assert!(limiter.check().is_allowed());
        clock.advance(Duration::from_millis(400));
        assert!(limiter.check_n(2).unwrap().is_allowed());
        let denied = limiter.check();
        assert_eq!(denied.retry_after(), Duration::from_millis(600));
        clock.advance(Duration::from_millis(600));
        assert!(limiter.check().is_allowed());
        assert!(limiter.check().is_denied());
        clock.advance(Duration::from_secs(1));
        assert!(limiter.is_idle());
    }

    #[test]
    fn log_retry_after_waits_for_every_cell_above_a_lowered_limit() {
        let clock = ManualClock::new();
        let limiter = RateLimiter::<SlidingWindowLog, _>::with_clock(
            Quota::per_second(4).unwrap(),
            clock.clone(),
        )
        .unwrap();
        for _ in 0..4 {
            assert!(limiter.check().is_allowed());
            clock.advance(Duration::from_millis(100));
        }
        // Cells at 0, 100, 200 and 300 ms; under a limit of 2, three must leave before one
        // more fits: the third leaves at 1.2 s.
        limiter.set_quota(Quota::per_second(2).unwrap()).unwrap();
        let denied = limiter.check();
        assert!(denied.is_denied());
        assert_eq!(denied.retry_after(), Duration::from_millis(800));
        clock.advance(denied.retry_after() - Duration::from_nanos(1));
        assert!(limiter.check().is_denied());
        clock.advance(Duration::from_nanos(1));
        assert!(limiter.check().is_allowed());
    }
}
