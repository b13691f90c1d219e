//! The byte cap of a keyed sliding-window log against the memory its logs really hold after the
//! quota is raised, counted by the test kit's allocator.
//!
//! One test per binary file would measure nothing else's allocations; this file keeps to one.
#![cfg(not(infra_loom))]

use std::time::Duration;

use infra_common::ManualClock;
use infra_ratelimit::{KeyedRateLimiter, Quota, SlidingWindowLog};
use infra_testkit::allocator::{self, CountingAllocator};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Keys tracked under a small limit and then filled under a raised one: each log grows to the
/// raised limit's entries, and what the limiter is charged must grow with it, or `max_bytes`
/// no longer bounds the memory the logs hold.
#[test]
fn logs_grown_under_a_raised_quota_hold_no_more_memory_than_they_are_charged() {
    let clock = ManualClock::new();
    let limiter = KeyedRateLimiter::<u64, SlidingWindowLog, _>::with_clock(
        Quota::per_second(2).unwrap(),
        clock.clone(),
    )
    .unwrap();
    let before = allocator::live_bytes();
    for key in 0..20_u64 {
        assert!(limiter.check(&key).unwrap().is_allowed());
    }
    limiter
        .set_quota(Quota::per_second(4_000).unwrap())
        .unwrap();
    // Every cell at its own instant, so no two share a log entry.
    for _ in 0..3_000 {
        clock.advance(Duration::from_micros(100));
        for key in 0..20_u64 {
            assert!(limiter.check(&key).unwrap().is_allowed());
        }
    }
    let held = usize::try_from(allocator::live_bytes() - before).unwrap_or(0);
    assert!(
        held <= limiter.bytes(),
        "20 logs of 3,000 cells hold {held} bytes, charged {}",
        limiter.bytes()
    );
}
