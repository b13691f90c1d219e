//! Time as a parameter.
//!
//! Everything time-based in the workspace (rate limiters, leases, visibility timeouts, cache
//! freshness, span timing) takes a [`Clock`] rather than reading the system time itself. Production
//! code uses [`SystemClock`]; tests use [`ManualClock`] and move time forward explicitly, so they
//! are deterministic and never sleep.
//!
//! A clock has two readings:
//! - **monotonic nanoseconds** ([`Clock::now_nanos`]): never decrease, unaffected by NTP steps
//!   or an operator changing the date. Use them for every duration and deadline.
//! - **wall-clock time** ([`Clock::wall_time`]): the calendar date, which can jump. Use it only
//!   where a protocol speaks in dates (HTTP `Date`/`Expires`, span timestamps).
//!
//! [`CoarseClock`] is an opt-in third implementation for the hottest paths: [`SystemClock`]
//! readings cached by an upkeep thread, one atomic load per reading, at a documented precision.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::sync::Arc;
use crate::sync::atomic::{AtomicI64, AtomicU64, Ordering};

mod coarse;

pub use coarse::{CoarseClock, PrecisionOutOfRange};

/// A source of monotonic and wall-clock time.
///
/// Implemented for [`SystemClock`], [`ManualClock`], and for references, `Box`es and `Arc`s of
/// any clock, so a limiter can hold whichever form its owner prefers.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Nanoseconds since this clock's origin. Never decreases between two calls.
    ///
    /// Readings are only comparable with readings of the same clock (for [`SystemClock`]: the
    /// same process).
    fn now_nanos(&self) -> u64;

    /// The calendar time. Unlike [`Clock::now_nanos`] it may jump in either direction.
    fn wall_time(&self) -> SystemTime;

    /// Time elapsed since an earlier [`Clock::now_nanos`] reading, zero if `earlier` is in the
    /// future.
    fn elapsed_since(&self, earlier: u64) -> Duration {
        Duration::from_nanos(self.now_nanos().saturating_sub(earlier))
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now_nanos(&self) -> u64 {
        (**self).now_nanos()
    }

    fn wall_time(&self) -> SystemTime {
        (**self).wall_time()
    }
}

impl<C: Clock + ?Sized> Clock for Box<C> {
    fn now_nanos(&self) -> u64 {
        (**self).now_nanos()
    }

    fn wall_time(&self) -> SystemTime {
        (**self).wall_time()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_nanos(&self) -> u64 {
        (**self).now_nanos()
    }

    fn wall_time(&self) -> SystemTime {
        (**self).wall_time()
    }
}

/// Converts a duration to whole nanoseconds, saturating at `u64::MAX` (about 584 years).
pub fn duration_to_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The machine's clocks: a calibrated monotonic counter and the system's calendar time.
///
/// The monotonic reading comes from [`quanta`], which reads the CPU's invariant time-stamp
/// counter where one exists (a few nanoseconds, no system call) and falls back to the operating
/// system's monotonic clock elsewhere. All `SystemClock` values in a process share one origin,
/// so their readings are comparable with each other.
///
/// ```
/// use infra_common::{Clock, SystemClock};
///
/// let clock = SystemClock::new();
/// let start = clock.now_nanos();
/// assert!(clock.now_nanos() >= start);
/// ```
///
/// [`quanta`]: https://docs.rs/quanta
#[derive(Clone, Copy)]
pub struct SystemClock {
    // Resolved once in `new`, so a reading skips the once-cell check: measurable on the
    // direct rate-limit check, where the clock is half the cost.
    counter: &'static (quanta::Clock, u64),
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

/// The process-wide calibrated counter and its raw reading at the origin.
// A `std` `OnceLock`: loom has no equivalent, and this one-time calibration holds no state a
// model could race on (every thread reads the same immutable pair).
#[allow(clippy::disallowed_types)]
fn process_counter() -> &'static (quanta::Clock, u64) {
    static COUNTER: std::sync::OnceLock<(quanta::Clock, u64)> = std::sync::OnceLock::new();
    COUNTER.get_or_init(|| {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        (clock, origin)
    })
}

impl SystemClock {
    /// Returns the system clock. Cheap: the counter is calibrated once per process.
    pub fn new() -> Self {
        Self {
            counter: process_counter(),
        }
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        // Scaling the raw counter delta straight to nanoseconds is one multiply and shift;
        // going through `quanta::Instant` and `Duration` costs several times more, on the
        // hottest path of every rate limiter.
        // The origin is loaded after the counter is read: loaded before, it would be held in a
        // callee-saved register across the (out-of-line) read, saved and restored every time.
        let (clock, origin) = self.counter;
        let raw = clock.raw();
        clock.delta_as_nanos(*origin, raw)
    }

    fn wall_time(&self) -> SystemTime {
        SystemTime::now()
    }
}

impl fmt::Debug for SystemClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SystemClock")
    }
}

/// A clock that moves only when told to: deterministic, instant tests of time-based code.
///
/// Clones share the same time, so a test keeps one handle and gives another to the code under
/// test. It starts at monotonic zero and wall time 2024-01-01T00:00:00Z
/// ([`ManualClock::DEFAULT_WALL_START`]); [`ManualClock::advance`] moves both readings,
/// [`ManualClock::set_wall_time`] jumps the wall reading alone, as an NTP step would.
///
/// ```
/// use infra_common::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let seen_by_limiter = clock.clone();
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(seen_by_limiter.now_nanos(), 2_000_000_000);
/// ```
#[derive(Clone)]
pub struct ManualClock {
    state: Arc<ManualState>,
}

struct ManualState {
    monotonic: AtomicU64,
    /// Nanoseconds since the Unix epoch at monotonic zero; `wall = epoch + base + monotonic`.
    /// Negative once the wall reading is set nearer the epoch than monotonic time has run.
    wall_base: AtomicI64,
}

impl ManualClock {
    /// The wall time a new manual clock reads: 2024-01-01T00:00:00Z, in seconds since the Unix
    /// epoch.
    pub const DEFAULT_WALL_START: u64 = 1_704_067_200;

    /// A clock at monotonic zero and wall time [`ManualClock::DEFAULT_WALL_START`].
    pub fn new() -> Self {
        Self::with_wall_time(UNIX_EPOCH + Duration::from_secs(Self::DEFAULT_WALL_START))
    }

    /// A clock at monotonic zero whose wall reading starts at `wall` (clamped to the Unix epoch
    /// and to 2^63 ns after it, in the year 2262).
    pub fn with_wall_time(wall: SystemTime) -> Self {
        Self {
            state: Arc::new(ManualState {
                monotonic: AtomicU64::new(0),
                wall_base: AtomicI64::new(wall_base(nanos_since_epoch(wall), 0)),
            }),
        }
    }

    /// Moves time forward by `by`, saturating at the largest reading.
    pub fn advance(&self, by: Duration) {
        let by = duration_to_nanos(by);
        // fetch_update retries if a concurrent `advance` raced us, so no step is lost.
        let _ = self
            .state
            .monotonic
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                Some(now.saturating_add(by))
            });
    }

    /// Sets the monotonic reading to `since_origin`.
    ///
    /// # Panics
    ///
    /// If that would move the clock backwards: a monotonic clock never does, and code under
    /// test is entitled to rely on it.
    pub fn set(&self, since_origin: Duration) {
        let target = duration_to_nanos(since_origin);
        let previous = self.state.monotonic.fetch_max(target, Ordering::AcqRel);
        assert!(
            previous <= target,
            "ManualClock::set would move monotonic time backwards ({previous} ns -> {target} ns)"
        );
    }

    /// Jumps the wall-clock reading to `wall` without moving monotonic time (clamped to the Unix
    /// epoch, and to within 2^63 ns, 292 years, of the monotonic reading).
    pub fn set_wall_time(&self, wall: SystemTime) {
        let monotonic = self.state.monotonic.load(Ordering::Acquire);
        let base = wall_base(nanos_since_epoch(wall), monotonic);
        self.state.wall_base.store(base, Ordering::Release);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now_nanos(&self) -> u64 {
        self.state.monotonic.load(Ordering::Acquire)
    }

    fn wall_time(&self) -> SystemTime {
        let base = self.state.wall_base.load(Ordering::Acquire);
        let nanos = i128::from(base) + i128::from(self.now_nanos());
        // Within the epoch and the largest reading, as wall times past either are clamped.
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos.max(0)).unwrap_or(u64::MAX))
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now_nanos", &self.now_nanos())
            .finish_non_exhaustive()
    }
}

/// The base that makes `monotonic` read as `wall` nanoseconds since the epoch, clamped to what
/// an `i64` holds: exact while the two are less than 2^63 ns (292 years) apart.
fn wall_base(wall: u64, monotonic: u64) -> i64 {
    let base = i128::from(wall) - i128::from(monotonic);
    i64::try_from(base).unwrap_or(if base < 0 { i64::MIN } else { i64::MAX })
}

fn nanos_since_epoch(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH)
        .map(duration_to_nanos)
        .unwrap_or(0)
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_monotonic_and_shared_across_instances() {
        let a = SystemClock::new();
        let b = SystemClock::new();
        let mut last = 0;
        for _ in 0..10_000 {
            let now = if last % 2 == 0 {
                a.now_nanos()
            } else {
                b.now_nanos()
            };
            assert!(now >= last, "{now} < {last}");
            last = now;
        }
    }

    #[test]
    fn system_clock_wall_time_is_the_calendar() {
        let before = SystemTime::now();
        let seen = SystemClock::new().wall_time();
        assert!(seen >= before);
        assert!(seen.duration_since(before).unwrap() < Duration::from_secs(5));
    }

    #[test]
    fn manual_clock_clones_share_time() {
        let clock = ManualClock::new();
        let other = clock.clone();
        clock.advance(Duration::from_millis(1500));
        assert_eq!(other.now_nanos(), 1_500_000_000);
        assert_eq!(other.elapsed_since(500_000_000), Duration::from_secs(1));
        assert_eq!(other.elapsed_since(u64::MAX), Duration::ZERO);
    }

    #[test]
    fn manual_clock_wall_time_follows_advance_and_jumps_alone() {
        let clock = ManualClock::new();
        let start = UNIX_EPOCH + Duration::from_secs(ManualClock::DEFAULT_WALL_START);
        assert_eq!(clock.wall_time(), start);
        clock.advance(Duration::from_secs(10));
        assert_eq!(clock.wall_time(), start + Duration::from_secs(10));

        let jumped = UNIX_EPOCH + Duration::from_secs(1_000);
        clock.set_wall_time(jumped);
        assert_eq!(clock.wall_time(), jumped);
        assert_eq!(
            clock.now_nanos(),
            10_000_000_000,
            "monotonic time did not move"
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.wall_time(), jumped + Duration::from_secs(1));
    }

    #[test]
    fn manual_clock_wall_time_jumps_to_a_time_closer_to_the_epoch_than_monotonic_time() {
        let clock = ManualClock::with_wall_time(UNIX_EPOCH);
        clock.advance(Duration::from_secs(10));
        let jumped = UNIX_EPOCH + Duration::from_secs(5);
        clock.set_wall_time(jumped);
        assert_eq!(clock.wall_time(), jumped);
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.wall_time(), jumped + Duration::from_secs(1));
        assert_eq!(clock.now_nanos(), 11_000_000_000);
        // Past 2^63 ns the wall reading is clamped, as the docs say.
        let far = ManualClock::with_wall_time(UNIX_EPOCH + Duration::from_nanos(u64::MAX));
        let limit = UNIX_EPOCH + Duration::from_nanos(i64::MAX.unsigned_abs());
        assert_eq!(far.wall_time(), limit);
    }

    #[test]
    fn manual_clock_saturates_instead_of_overflowing() {
        let clock = ManualClock::new();
        clock.advance(Duration::MAX);
        assert_eq!(clock.now_nanos(), u64::MAX);
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.now_nanos(), u64::MAX);
    }

    #[test]
    fn manual_clock_set_moves_forward() {
        let clock = ManualClock::new();
        clock.set(Duration::from_secs(3));
        assert_eq!(clock.now_nanos(), 3_000_000_000);
        clock.set(Duration::from_secs(3));
        assert_eq!(clock.now_nanos(), 3_000_000_000);
    }

    #[test]
    #[should_panic(expected = "backwards")]
    fn manual_clock_set_refuses_to_go_backwards() {
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(5));
        clock.set(Duration::from_secs(1));
    }

    #[test]
    fn clock_is_usable_through_references_boxes_and_arcs() {
        fn read(clock: impl Clock) -> u64 {
            clock.now_nanos()
        }
        let clock = ManualClock::new();
        clock.advance(Duration::from_nanos(42));
        assert_eq!(read(&clock), 42);
        assert_eq!(read(Arc::new(clock.clone())), 42);
        let boxed: Box<dyn Clock> = Box::new(clock);
        assert_eq!(read(boxed), 42);
    }
}
