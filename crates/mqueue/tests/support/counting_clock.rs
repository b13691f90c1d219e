//! A clock that counts its readings: what a queue's hot path asks of it, and how many looks
//! its waiters take (each look under the lock reads the clock).

use infra_common::ManualClock;
use infra_common::sync::atomic::{AtomicU64, Ordering};

/// A [`ManualClock`] that counts its monotonic and wall readings.
#[derive(Debug, Default)]
pub(crate) struct CountingClock {
    inner: ManualClock,
    monotonic: AtomicU64,
    wall: AtomicU64,
}

impl infra_common::Clock for CountingClock {
    fn now_nanos(&self) -> u64 {
        self.monotonic.fetch_add(1, Ordering::Relaxed);
        self.inner.now_nanos()
    }

    fn wall_time(&self) -> std::time::SystemTime {
        self.wall.fetch_add(1, Ordering::Relaxed);
        self.inner.wall_time()
    }
}

impl CountingClock {
    /// Readings since the last call: (monotonic, wall).
    pub(crate) fn take(&self) -> (u64, u64) {
        (
            self.monotonic.swap(0, Ordering::Relaxed),
            self.wall.swap(0, Ordering::Relaxed),
        )
    }
}
