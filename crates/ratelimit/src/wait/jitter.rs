//! Random delays for waiters, so many of them due at one instant do not all wake at it.

use std::fmt;
use std::hash::BuildHasher;
use std::time::Duration;

use infra_common::clock::duration_to_nanos;
use infra_common::hash::RandomState;
use infra_common::sync::atomic::{AtomicU64, Ordering};

/// A bounded random delay added to each wake-up of a waiter
/// ([`AsyncRateLimiter::with_jitter`](crate::AsyncRateLimiter::with_jitter),
/// [`AsyncKeyedRateLimiter::with_jitter`](crate::AsyncKeyedRateLimiter::with_jitter)).
///
/// Limiters that all replenish at one instant (every key of a keyed limiter after an outage,
/// every instance of a service after a deploy) would otherwise wake all their waiters at that
/// instant, and those would hit the service behind the limiter together. Each sleep until
/// capacity is back is lengthened by a delay drawn uniformly from `0..=max`, so they arrive
/// spread over `max`. A waiter never wakes earlier than without jitter, so no limit is
/// exceeded; it may wait up to `max` longer.
///
/// The delays come from a small generator (SplitMix64) shared by the limiter's waiters:
/// [`Jitter::seeded`] makes them reproducible, for tests.
///
/// ```
/// use infra_ratelimit::Jitter;
/// use std::time::Duration;
///
/// let jitter = Jitter::up_to(Duration::from_millis(50));
/// assert_eq!(jitter.max(), Duration::from_millis(50));
/// let (a, b) = (Jitter::seeded(Duration::from_millis(50), 7), Jitter::seeded(Duration::from_millis(50), 7));
/// assert_eq!(format!("{a:?}"), format!("{b:?}")); // same seed, same delays
/// ```
pub struct Jitter {
    max_nanos: u64,
    /// The generator's state: advanced by a fixed odd step on every draw, so concurrent draws
    /// each take a distinct state with one `fetch_add`, no lock.
    state: AtomicU64,
}

/// SplitMix64's increment (the golden ratio's fraction in 64 bits) and output mix, after
/// Steele, Lea and Flood, "Fast splittable pseudorandom number generators" (OOPSLA 2014).
const STEP: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Jitter {
    /// Delays of up to `max`, seeded from the operating system's randomness.
    pub fn up_to(max: Duration) -> Self {
        Self::seeded(max, RandomState::new().hash_one(0_u8))
    }

    /// Delays of up to `max` from a fixed seed: the same seed gives the same sequence of delays.
    pub fn seeded(max: Duration, seed: u64) -> Self {
        Self {
            max_nanos: duration_to_nanos(max),
            state: AtomicU64::new(seed),
        }
    }

    /// The longest delay added.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_nanos)
    }

    /// The next delay, uniform in `0..=max` (to within 2^-64).
    pub(crate) fn next(&self) -> Duration {
        let random = mix(self
            .state
            .fetch_add(STEP, Ordering::Relaxed)
            .wrapping_add(STEP));
        // The high half of a 64×64-bit product scales `random` to `0..=max` without a
        // division.
        let scaled = (u128::from(random) * (u128::from(self.max_nanos) + 1)) >> 64;
        Duration::from_nanos(u64::try_from(scaled).unwrap_or(self.max_nanos))
    }
}

impl fmt::Debug for Jitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jitter")
            .field("max", &self.max())
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_the_bound_and_cover_it() {
        let max = Duration::from_micros(1_000);
        let jitter = Jitter::seeded(max, 42);
        let delays: Vec<_> = (0..10_000).map(|_| jitter.next()).collect();
        assert!(delays.iter().all(|&d| d <= max));
        // Spread over the whole range: every tenth of it is hit.
        let mut tenths = [0_u32; 10];
        for d in &delays {
            let tenth = (d.as_nanos() * 10 / (max.as_nanos() + 1)) as usize;
            tenths[tenth] += 1;
        }
        assert!(
            tenths.iter().all(|&n| (800..1_200).contains(&n)),
            "{tenths:?}"
        );
    }

    #[test]
    fn a_seed_fixes_the_sequence_and_zero_adds_nothing() {
        let max = Duration::from_secs(1);
        let (a, b) = (Jitter::seeded(max, 9), Jitter::seeded(max, 9));
        let first: Vec<_> = (0..100).map(|_| a.next()).collect();
        let second: Vec<_> = (0..100).map(|_| b.next()).collect();
        assert_eq!(first, second);
        let other = Jitter::seeded(max, 10);
        assert_ne!(first, (0..100).map(|_| other.next()).collect::<Vec<_>>());
        let none = Jitter::seeded(Duration::ZERO, 1);
        assert!((0..100).all(|_| none.next() == Duration::ZERO));
        let longest = Jitter::seeded(Duration::MAX, 1);
        assert!(longest.max() >= Duration::from_secs(500 * 365 * 86_400));
        let _ = longest.next();
    }
}
