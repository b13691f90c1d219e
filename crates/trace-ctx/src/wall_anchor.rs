//! A span's wall-clock start without a system call per span.
//!
//! A span is timed on the monotonic clock (a counter read, a few nanoseconds) and stamped with
//! the wall time it started at, which the operating system's calendar clock gives through a
//! call that cost about a sixth of a sampled span (`trace_ctx/span_sampled`). The anchor reads
//! the calendar clock at most once per [`REFRESH_NANOS`] of monotonic time and keeps the
//! offset between the two clocks; a span's wall start is its monotonic start plus that offset,
//! as OpenTelemetry's Java SDK anchors the spans of a trace on its root's calendar reading.
//!
//! What that costs in accuracy: a step of the calendar clock (set by hand, or by NTP for a
//! large error) shows in new spans within [`REFRESH_NANOS`]; a slewed clock (NTP slews by at
//! most 500 parts per million) drifts from the offset by at most 50 µs before it is read again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use infra_common::Clock;
use infra_common::clock::duration_to_nanos;
use infra_common::sync::atomic::{AtomicU64, Ordering};

/// How long, in monotonic nanoseconds, an offset is used before the calendar clock is read
/// again: 100 ms.
pub(crate) const REFRESH_NANOS: u64 = 100_000_000;

/// The `taken_at` of an anchor that has no offset yet.
const NEVER: u64 = u64::MAX;

/// The offset between a clock's calendar and monotonic readings, read again when it is older
/// than [`REFRESH_NANOS`].
#[derive(Debug)]
pub(crate) struct WallAnchor {
    /// Calendar nanoseconds since the Unix epoch minus monotonic nanoseconds (wrapping).
    offset: AtomicU64,
    /// The monotonic reading the offset was taken at, or [`NEVER`]. Stored after the offset
    /// (release) and loaded before it (acquire), so an anchor seen taken has its offset.
    taken_at: AtomicU64,
}

impl WallAnchor {
    pub(crate) fn new() -> Self {
        Self {
            offset: AtomicU64::new(0),
            taken_at: AtomicU64::new(NEVER),
        }
    }

    /// The calendar time at `now`, a reading of `clock`'s monotonic clock just taken.
    ///
    /// Two threads may read the calendar at once and store their offsets in either order;
    /// either offset is recent, so a reader pairing one's offset with the other's time is
    /// still within the bounds above.
    #[inline]
    pub(crate) fn wall_at(&self, clock: &dyn Clock, now: u64) -> SystemTime {
        let taken_at = self.taken_at.load(Ordering::Acquire);
        // A reading just before the anchor's (another thread's, taken later) is as close.
        if taken_at != NEVER && now.abs_diff(taken_at) < REFRESH_NANOS {
            let offset = self.offset.load(Ordering::Relaxed);
            return UNIX_EPOCH + Duration::from_nanos(now.wrapping_add(offset));
        }
        self.read(clock, now)
    }

    /// Reads the calendar clock and, where its reading fits in nanoseconds since the epoch
    /// (from 1970 to 2554), keeps the offset.
    #[cold]
    fn read(&self, clock: &dyn Clock, now: u64) -> SystemTime {
        let wall = clock.wall_time();
        let since_epoch = wall.duration_since(UNIX_EPOCH).map(duration_to_nanos);
        // A calendar before the epoch or past 2554 is used as read, every time.
        if let Ok(since_epoch) = since_epoch
            && since_epoch != u64::MAX
        {
            self.offset
                .store(since_epoch.wrapping_sub(now), Ordering::Relaxed);
            self.taken_at.store(now, Ordering::Release);
        }
        wall
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use infra_common::ManualClock;

    fn at(clock: &ManualClock, anchor: &WallAnchor) -> SystemTime {
        anchor.wall_at(clock, clock.now_nanos())
    }

    #[test]
    fn follows_the_calendar_while_both_clocks_run_together() {
        let clock = ManualClock::new();
        let anchor = WallAnchor::new();
        for step in [0, 1, 999, 99_999_999, 1, 100_000_000, 7_000_000_000] {
            clock.advance(Duration::from_nanos(step));
            assert_eq!(at(&clock, &anchor), clock.wall_time());
        }
    }

    #[test]
    fn a_calendar_step_shows_once_the_offset_is_refreshed() {
        let clock = ManualClock::new();
        let anchor = WallAnchor::new();
        let before = at(&clock, &anchor);
        let stepped = before + Duration::from_secs(3600);
        clock.set_wall_time(stepped);
        clock.advance(Duration::from_nanos(REFRESH_NANOS - 1));
        // Within the refresh interval the old offset stands.
        assert_eq!(
            at(&clock, &anchor),
            before + Duration::from_nanos(REFRESH_NANOS - 1)
        );
        clock.advance(Duration::from_nanos(1));
        assert_eq!(at(&clock, &anchor), clock.wall_time());
        assert_eq!(
            clock.wall_time(),
            stepped + Duration::from_nanos(REFRESH_NANOS)
        );
    }

    /// A calendar ten seconds before the epoch, running with the monotonic clock.
    #[derive(Debug)]
    struct BeforeTheEpoch(ManualClock);

    impl Clock for BeforeTheEpoch {
        fn now_nanos(&self) -> u64 {
            self.0.now_nanos()
        }

        fn wall_time(&self) -> SystemTime {
            UNIX_EPOCH - Duration::from_secs(10) + Duration::from_nanos(self.0.now_nanos())
        }
    }

    #[test]
    fn a_calendar_before_the_epoch_is_used_as_read() {
        let clock = BeforeTheEpoch(ManualClock::new());
        let anchor = WallAnchor::new();
        for _ in 0..3 {
            assert_eq!(anchor.wall_at(&clock, clock.now_nanos()), clock.wall_time());
            clock.0.advance(Duration::from_millis(1));
        }
    }
}

#[cfg(all(test, infra_loom))]
mod loom_models {
    use super::*;
    use infra_common::ManualClock;
    use infra_common::sync::{Arc, model, thread};

    /// Two threads stamp spans at once on a fresh anchor: whichever takes the offset, neither
    /// may pair an anchor it sees taken with an offset not yet stored.
    #[test]
    fn a_taken_anchor_is_seen_with_its_offset() {
        model(|| {
            let clock = Arc::new(ManualClock::new());
            let anchor = Arc::new(WallAnchor::new());
            let (other_clock, other_anchor) = (Arc::clone(&clock), Arc::clone(&anchor));
            let expected = clock.wall_time();
            let worker = thread::spawn(move || {
                let there = other_anchor.wall_at(&*other_clock, other_clock.now_nanos());
                assert_eq!(there, other_clock.wall_time());
            });
            let here = anchor.wall_at(&*clock, clock.now_nanos());
            assert_eq!(here, expected);
            worker.join().expect("worker finished");
            assert_eq!(anchor.wall_at(&*clock, clock.now_nanos()), expected);
        });
    }
}
