//! A clock read from a cache that one upkeep thread refreshes: a reading costs one atomic load.

use std::fmt;
use std::time::{Duration, SystemTime};

use super::{Clock, SystemClock};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::thread::{self, JoinHandle};
use crate::sync::{Arc, Condvar, Mutex};

/// A [`SystemClock`] reading cached by a thread that refreshes it every `precision`: reading it
/// is one atomic load, for hot paths that accept a reading up to about `precision` old.
///
/// Opt-in, for services that check a rate limit (or stamp a deadline) millions of times a
/// second and can accept coarse time: a limiter on it admits exactly as on the system clock
/// whose readings it caches, only decided as of a moment up to about `precision` earlier
/// (plus however late the operating system runs the upkeep thread).
///
/// - **Readings** are [`SystemClock`] readings, so the two can be compared: a coarse reading is
///   not ahead of a system reading taken after it (by more than the counters of two cores can
///   differ: the upkeep thread reads its core's), and lags it by the precision plus the upkeep
///   thread's scheduling delay.
/// - **Monotonic**: readings never decrease, on one handle or across clones.
/// - **One thread per [`CoarseClock::new`]**: clones share it (build one per process and
///   clone it); it stops, and is joined, when the last clone is dropped.
/// - [`Clock::wall_time`] is not cached: it is the system's calendar time.
///
/// ```
/// use infra_common::{Clock, CoarseClock, SystemClock};
/// use std::time::Duration;
///
/// let clock = CoarseClock::new(); // refreshed every millisecond
/// assert_eq!(clock.precision(), Duration::from_millis(1));
/// let first = clock.now_nanos();
/// assert!(clock.clone().now_nanos() >= first);
/// assert!(first <= SystemClock::new().now_nanos());
/// ```
#[derive(Clone)]
pub struct CoarseClock {
    cache: Arc<Cache>,
    /// Dropped with the last clone, which stops the upkeep thread.
    _upkeep: Arc<Upkeep>,
}

/// What the upkeep thread and every reader share.
struct Cache {
    nanos: AtomicU64,
    source: Box<dyn Clock>,
    precision: Duration,
    /// Set, under its lock, when the last handle drops; the upkeep thread checks it under the
    /// same lock before each wait, so the wake-up that follows cannot be lost.
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Cache {
    /// Copies the source's reading into the cache. `fetch_max`, so the cache never goes
    /// backwards even if a source reading were older than the cached one.
    fn tick(&self) {
        self.nanos
            .fetch_max(self.source.now_nanos(), Ordering::Relaxed);
    }

    /// The upkeep thread: refresh every `precision` until stopped.
    fn keep_up(&self) {
        let mut stopped = self.stopped.lock();
        while !*stopped {
            self.wake.wait_timeout(&mut stopped, self.precision);
            self.tick();
        }
    }
}

/// Owns the upkeep thread: stops and joins it on drop.
struct Upkeep {
    cache: Arc<Cache>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Upkeep {
    fn drop(&mut self) {
        *self.cache.stopped.lock() = true;
        self.cache.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // The thread only ticks and waits; it cannot panic, and if it did there would be
            // nothing left to clean up.
            let _ = thread.join();
        }
    }
}

/// The precision asked of a [`CoarseClock`] is outside what it accepts
/// ([`CoarseClock::MIN_PRECISION`]`..=`[`CoarseClock::MAX_PRECISION`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrecisionOutOfRange {
    /// The precision asked for.
    pub given: Duration,
}

impl fmt::Display for PrecisionOutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "coarse clock precision {:?} is outside {:?}..={:?}",
            self.given,
            CoarseClock::MIN_PRECISION,
            CoarseClock::MAX_PRECISION
        )
    }
}

impl std::error::Error for PrecisionOutOfRange {}

impl CoarseClock {
    /// The default precision: the cache is refreshed every millisecond.
    pub const DEFAULT_PRECISION: Duration = Duration::from_millis(1);
    /// The finest precision accepted: finer would keep a core busy refreshing.
    pub const MIN_PRECISION: Duration = Duration::from_micros(100);
    /// The coarsest precision accepted.
    pub const MAX_PRECISION: Duration = Duration::from_secs(1);

    /// A clock refreshed every millisecond, with its own upkeep thread.
    ///
    /// # Panics
    ///
    /// If the operating system cannot start a thread.
    pub fn new() -> Self {
        Self::start(Self::DEFAULT_PRECISION)
    }

    /// A clock refreshed every `precision`, with its own upkeep thread.
    ///
    /// ```
    /// use infra_common::CoarseClock;
    /// use std::time::Duration;
    ///
    /// let clock = CoarseClock::with_precision(Duration::from_millis(10))?;
    /// assert_eq!(clock.precision(), Duration::from_millis(10));
    /// assert!(CoarseClock::with_precision(Duration::ZERO).is_err());
    /// # Ok::<(), infra_common::clock::PrecisionOutOfRange>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`PrecisionOutOfRange`] unless `MIN_PRECISION <= precision <= MAX_PRECISION`.
    ///
    /// # Panics
    ///
    /// If the operating system cannot start a thread.
    pub fn with_precision(precision: Duration) -> Result<Self, PrecisionOutOfRange> {
        if !(Self::MIN_PRECISION..=Self::MAX_PRECISION).contains(&precision) {
            return Err(PrecisionOutOfRange { given: precision });
        }
        Ok(Self::start(precision))
    }

    fn start(precision: Duration) -> Self {
        let cache = Self::cache(Box::new(SystemClock::new()), precision);
        let thread = {
            let cache = Arc::clone(&cache);
            thread::spawn(move || cache.keep_up())
        };
        Self {
            _upkeep: Arc::new(Upkeep {
                cache: Arc::clone(&cache),
                thread: Some(thread),
            }),
            cache,
        }
    }

    fn cache(source: Box<dyn Clock>, precision: Duration) -> Arc<Cache> {
        let cache = Cache {
            nanos: AtomicU64::new(0),
            source,
            precision,
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        };
        cache.tick();
        Arc::new(cache)
    }

    /// How often the cached reading is refreshed.
    pub fn precision(&self) -> Duration {
        self.cache.precision
    }
}

impl Default for CoarseClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for CoarseClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        // Relaxed: the reading is a number, not a publication of other memory, and loads of one
        // atomic never go back to an older value (read-read coherence), so it is monotonic.
        self.cache.nanos.load(Ordering::Relaxed)
    }

    fn wall_time(&self) -> SystemTime {
        self.cache.source.wall_time()
    }
}

impl fmt::Debug for CoarseClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoarseClock")
            .field("now_nanos", &self.now_nanos())
            .field("precision", &self.cache.precision)
            .finish()
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::ManualClock;

    /// A clock over `source` with no upkeep thread: the test ticks it by hand.
    fn ticked_by_hand(source: ManualClock) -> (CoarseClock, Arc<Cache>) {
        let cache = CoarseClock::cache(Box::new(source), Duration::from_millis(1));
        let clock = CoarseClock {
            _upkeep: Arc::new(Upkeep {
                cache: Arc::clone(&cache),
                thread: None,
            }),
            cache: Arc::clone(&cache),
        };
        (clock, cache)
    }

    #[test]
    fn a_reading_is_the_source_as_of_the_last_tick() {
        let source = ManualClock::new();
        source.advance(Duration::from_secs(5));
        let (clock, cache) = ticked_by_hand(source.clone());
        assert_eq!(clock.now_nanos(), 5_000_000_000, "ticked when built");
        source.advance(Duration::from_micros(700));
        assert_eq!(clock.now_nanos(), 5_000_000_000, "not refreshed yet");
        cache.tick();
        assert_eq!(clock.now_nanos(), 5_000_700_000);
        assert_eq!(clock.clone().now_nanos(), 5_000_700_000, "clones share it");
        assert_eq!(clock.wall_time(), source.wall_time());
    }

    #[test]
    fn a_reading_never_goes_backwards() {
        let (clock, cache) = ticked_by_hand(ManualClock::new());
        cache.nanos.store(10, Ordering::Relaxed); // a later reading than the source's 0
        cache.tick();
        assert_eq!(clock.now_nanos(), 10);
    }

    #[test]
    fn precision_is_validated() {
        for bad in [
            Duration::ZERO,
            Duration::from_micros(99),
            Duration::from_millis(1_001),
        ] {
            let error = CoarseClock::with_precision(bad).unwrap_err();
            assert_eq!(error, PrecisionOutOfRange { given: bad });
            assert!(error.to_string().contains("outside"), "{error}");
        }
    }

    /// How far one core's counter may run ahead of another's, as the test allows it.
    const CORE_SKEW_NANOS: u64 = 100_000;

    /// Against the real thread: the cache is behind the system clock and never moves back. The
    /// lag bound is a second, far above the millisecond precision, so a loaded machine cannot
    /// fail it; how fresh the cache is on an idle machine is not something a test can assert.
    #[test]
    fn the_upkeep_thread_keeps_the_reading_behind_the_system_clock_and_close_to_it() {
        let clock = CoarseClock::new();
        let system = SystemClock::new();
        let mut last = 0;
        for _ in 0..100_000 {
            let before = system.now_nanos();
            let coarse = clock.now_nanos();
            let after = system.now_nanos();
            assert!(coarse >= last, "went backwards: {coarse} < {last}");
            // The upkeep thread reads the counter on another core, whose counter may run a
            // little ahead of this one's (seen once in a CI run of this test).
            assert!(
                coarse <= after + CORE_SKEW_NANOS,
                "ahead of the system clock by {} ns",
                coarse - after
            );
            assert!(
                before.saturating_sub(coarse) < 1_000_000_000,
                "lags by {} ns",
                before - coarse
            );
            last = coarse;
        }
        let clone = clock.clone();
        drop(clock);
        assert!(clone.now_nanos() >= last, "a clone keeps the thread");
    }
}
