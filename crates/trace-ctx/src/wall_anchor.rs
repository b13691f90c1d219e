//! A span's wall-clock start without a system call per span.
//!
//! A span is timed on the monotonic clock (a counter read, a few nanoseconds) and stamped with
//! the wall time it started at, which the operating system's calendar clock gives through a
//! call per reading. The anchor reads the calendar clock at most once per [`REFRESH_NANOS`] of
//! monotonic time and keeps the offset between the two clocks; a span's wall start is its
//! monotonic start plus that offset, as OpenTelemetry's Java SDK anchors the spans of a trace
//! on its root's calendar reading.
//!
//! What that costs in accuracy: a step of the calendar clock (set by hand, or by NTP for a
//! large error) shows in new spans within [`REFRESH_NANOS`]; a slewed clock (NTP slews by at
//! most 500 parts per million) drifts from the offset by at most 50 µs before it is read again,
//! for readings taken up to [`REFRESH_NANOS`] before the anchor's as after it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use infra_common::Clock;
use infra_common::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// How long, in monotonic nanoseconds, an offset is used before the calendar clock is read
/// again: 100 ms.
pub(crate) const REFRESH_NANOS: u64 = 100_000_000;

/// The `taken_at` of an anchor that has no offset yet.
const NEVER: u64 = u64::MAX;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// The offset between a clock's calendar and monotonic readings, read again when it is older
/// than [`REFRESH_NANOS`].
#[derive(Debug)]
pub(crate) struct WallAnchor {
    /// Calendar nanoseconds since the Unix epoch (negative before it) minus monotonic
    /// nanoseconds. Signed, so a reading taken before or after the anchor's lands on either
    /// side of the epoch or past 2554 without wrapping around.
    offset: AtomicI64,
    /// The monotonic reading the offset was taken at, or [`NEVER`]. Stored after the offset
    /// (release) and loaded before it (acquire), so an anchor seen taken has its offset.
    taken_at: AtomicU64,
}

impl WallAnchor {
    pub(crate) fn new() -> Self {
        Self {
            offset: AtomicI64::new(0),
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
            if let Some(wall) = calendar_at(now, offset) {
                return wall;
            }
        }
        self.read(clock, now)
    }

    /// Reads the calendar clock and, where its offset from the monotonic clock fits in 64
    /// signed bits (within 292 years of the monotonic clock's zero), keeps the offset and
    /// applies it to `now`.
    #[cold]
    fn read(&self, clock: &dyn Clock, now: u64) -> SystemTime {
        let wall = clock.wall_time();
        // The offset pairs the calendar with a monotonic reading taken with it, not with
        // `now`: a thread stalled since reading `now` would otherwise add its stall to the
        // offset every other span uses.
        let taken_at = clock.now_nanos();
        let offset = i64::try_from(nanos_since_epoch(wall) - i128::from(taken_at));
        // A calendar too far from the monotonic clock is used as read, every time.
        let Ok(offset) = offset else {
            return wall;
        };
        self.offset.store(offset, Ordering::Relaxed);
        self.taken_at.store(taken_at, Ordering::Release);
        calendar_at(now, offset).unwrap_or(wall)
    }
}

/// `wall` in nanoseconds from the Unix epoch, negative before it.
fn nanos_since_epoch(wall: SystemTime) -> i128 {
    // Any `Duration` holds fewer than 2^94 nanoseconds: the casts cannot wrap.
    #[allow(clippy::cast_possible_wrap)]
    match wall.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    }
}

/// The calendar time at the monotonic reading `now` given an anchor's `offset`, computed in
/// 128 bits; `None` where the platform's `SystemTime` cannot hold it.
fn calendar_at(now: u64, offset: i64) -> Option<SystemTime> {
    let nanos = i128::from(now) + i128::from(offset);
    let magnitude = nanos.unsigned_abs();
    let magnitude = Duration::new(
        u64::try_from(magnitude / NANOS_PER_SECOND).ok()?,
        u32::try_from(magnitude % NANOS_PER_SECOND).ok()?,
    );
    if nanos < 0 {
        UNIX_EPOCH.checked_sub(magnitude)
    } else {
        UNIX_EPOCH.checked_add(magnitude)
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

    /// A calendar a fixed number of nanoseconds (either sign) from the monotonic clock's
    /// reading since the epoch, so it can sit anywhere against the monotonic clock.
    #[derive(Debug)]
    struct ShiftedCalendar {
        monotonic: ManualClock,
        shift: i128,
    }

    impl ShiftedCalendar {
        /// A clock whose monotonic reading is `now` and whose calendar then reads `wall`
        /// nanoseconds from the epoch.
        fn reading(now: u64, wall: i128) -> Self {
            let monotonic = ManualClock::new();
            monotonic.advance(Duration::from_nanos(now));
            Self {
                monotonic,
                shift: wall - i128::from(now),
            }
        }

        /// The calendar time at the monotonic reading `now`.
        fn calendar_at(&self, now: u64) -> SystemTime {
            let nanos = i128::from(now) + self.shift;
            let magnitude = nanos.unsigned_abs();
            let magnitude = Duration::new(
                u64::try_from(magnitude / 1_000_000_000).unwrap(),
                u32::try_from(magnitude % 1_000_000_000).unwrap(),
            );
            if nanos < 0 {
                UNIX_EPOCH - magnitude
            } else {
                UNIX_EPOCH + magnitude
            }
        }
    }

    impl Clock for ShiftedCalendar {
        fn now_nanos(&self) -> u64 {
            self.monotonic.now_nanos()
        }

        fn wall_time(&self) -> SystemTime {
            self.calendar_at(self.now_nanos())
        }
    }

    const SECOND: u64 = 1_000_000_000;
    const MILLISECOND: u64 = 1_000_000;

    #[test]
    fn a_calendar_before_the_epoch_is_followed() {
        let clock = ShiftedCalendar::reading(0, -10 * i128::from(SECOND));
        let anchor = WallAnchor::new();
        for _ in 0..3 {
            assert_eq!(anchor.wall_at(&clock, clock.now_nanos()), clock.wall_time());
            clock.monotonic.advance(Duration::from_millis(1));
        }
    }

    /// A calendar running 500 parts per million fast (the most NTP slews a clock).
    #[derive(Debug)]
    struct SlewedCalendar(ManualClock);

    impl Clock for SlewedCalendar {
        fn now_nanos(&self) -> u64 {
            self.0.now_nanos()
        }

        fn wall_time(&self) -> SystemTime {
            let now = self.now_nanos();
            UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_nanos(now + now / 2000)
        }
    }

    /// Readings up to the refresh interval before or after the anchor's stay within 50 µs
    /// of a calendar slewed at NTP's largest rate.
    #[test]
    fn a_slewed_calendar_stays_within_50_microseconds() {
        let clock = SlewedCalendar(ManualClock::new());
        clock.0.advance(Duration::from_secs(1));
        let anchor = WallAnchor::new();
        let taken_at = clock.now_nanos();
        assert_eq!(anchor.wall_at(&clock, taken_at), clock.wall_time());
        clock.0.advance(Duration::from_nanos(REFRESH_NANOS - 1));
        let ahead = clock.wall_time();
        let stamped = anchor.wall_at(&clock, clock.now_nanos());
        let drift = ahead.duration_since(stamped).unwrap();
        assert!(drift > Duration::from_micros(49), "{drift:?}");
        assert!(drift <= Duration::from_micros(50), "{drift:?}");
        let before = taken_at - (REFRESH_NANOS - 1);
        let calendar_before = UNIX_EPOCH
            + Duration::from_secs(1_700_000_000)
            + Duration::from_nanos(before + before / 2000);
        let drift = anchor
            .wall_at(&clock, before)
            .duration_since(calendar_before)
            .unwrap();
        assert!(drift <= Duration::from_micros(50), "{drift:?}");
    }

    /// A thread that read the monotonic clock, then stalled (preempted, or throttled by its
    /// cgroup) until the anchor was more than the refresh interval newer, refreshes it: the
    /// offset it keeps pairs the calendar with a monotonic reading taken with it, so neither
    /// its span nor another stalled thread's is stamped with the stall added.
    #[test]
    fn a_stalled_reading_does_not_skew_the_offset() {
        let clock = ShiftedCalendar::reading(0, 1_700_000_000 * i128::from(SECOND));
        let anchor = WallAnchor::new();
        let stalled = clock.now_nanos();
        let other_stalled = stalled + 40 * MILLISECOND;
        clock.monotonic.advance(Duration::from_millis(150));
        assert_eq!(anchor.wall_at(&clock, clock.now_nanos()), clock.wall_time());
        let stamped = anchor.wall_at(&clock, stalled);
        assert_eq!(
            anchor.wall_at(&clock, other_stalled),
            clock.calendar_at(other_stalled)
        );
        assert_eq!(stamped, clock.calendar_at(stalled));
    }

    /// A calendar just after the epoch (a device that boots at 1970 until NTP sets it) and a
    /// span that started, on another thread, before the anchor was taken: its start is just
    /// before the epoch, not a wrapped-around time in 2554.
    #[test]
    fn a_reading_before_the_anchor_may_fall_before_the_epoch() {
        let clock = ShiftedCalendar::reading(SECOND, i128::from(10 * MILLISECOND));
        let anchor = WallAnchor::new();
        assert_eq!(anchor.wall_at(&clock, SECOND), clock.wall_time());
        let earlier = SECOND - 50 * MILLISECOND;
        assert_eq!(anchor.wall_at(&clock, earlier), clock.calendar_at(earlier));
        assert!(clock.calendar_at(earlier) < UNIX_EPOCH);
    }

    /// A calendar just before the end of nanoseconds since the epoch (2554) and a later
    /// reading: the start is past it, not a wrapped-around time in 1970.
    #[test]
    fn a_reading_after_the_anchor_may_pass_the_nanosecond_range() {
        let clock = ShiftedCalendar::reading(SECOND, i128::from(u64::MAX - 10 * MILLISECOND));
        let anchor = WallAnchor::new();
        assert_eq!(anchor.wall_at(&clock, SECOND), clock.wall_time());
        clock.monotonic.advance(Duration::from_millis(50));
        assert_eq!(anchor.wall_at(&clock, clock.now_nanos()), clock.wall_time());
        assert!(clock.wall_time() > UNIX_EPOCH + Duration::from_nanos(u64::MAX));
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
