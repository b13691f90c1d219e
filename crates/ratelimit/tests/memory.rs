//! The byte cap of a keyed limiter against the memory its maps really hold, counted by the
//! test kit's allocator: what a limiter is charged must be at least what it holds, or
//! `max_bytes` caps an estimate instead of the memory.
//!
//! One test per binary file would measure nothing else's allocations; this file keeps to one.
#![cfg(not(infra_loom))]

use infra_common::ManualClock;
use infra_ratelimit::{Gcra, KeyedRateLimiter, Quota};
use infra_testkit::allocator::{self, CountingAllocator};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Per-key quotas live in a hash table of their own, which grows to twice its slots at a time:
/// just after it grows (and for the first quota of each shard, in a table of four slots) it
/// holds several slots per quota. Their charge covers that, as a tracked key's does.
#[test]
fn per_key_quotas_and_keys_hold_no_more_memory_than_they_are_charged() {
    let limiter = KeyedRateLimiter::<u64, Gcra, _>::with_clock(
        Quota::per_second(10).unwrap(),
        ManualClock::new(),
    )
    .unwrap();
    let quota = Quota::per_second(100).unwrap();
    let before = allocator::live_bytes();
    for key in 0..20_000_u64 {
        limiter.set_key_quota(&key, quota).unwrap();
        let held = usize::try_from(allocator::live_bytes() - before).unwrap_or(0);
        assert!(
            held <= limiter.bytes(),
            "{} quotas hold {held} bytes, charged {}",
            key + 1,
            limiter.bytes()
        );
    }
    // Tracked keys beside them: both tables together stay within the charge.
    for key in 0..20_000_u64 {
        assert!(limiter.check(&(key + 1_000_000)).unwrap().is_allowed());
        let held = usize::try_from(allocator::live_bytes() - before).unwrap_or(0);
        assert!(
            held <= limiter.bytes(),
            "{} keys and 20,000 quotas hold {held} bytes, charged {}",
            key + 1,
            limiter.bytes()
        );
    }
}
