//! The byte cap on the lines of an `AsyncKeyedRateLimiter` against the memory they really
//! hold, counted by the test kit's allocator: the lines' charge must be at least what they
//! hold, or `max_waiting_bytes` caps an estimate instead of the memory.
//!
//! One test per binary file would measure nothing else's allocations; this file keeps to one.
#![cfg(all(not(infra_loom), feature = "tokio"))]

use std::future::Future;
use std::mem::{size_of, size_of_val};
use std::task::{Context, Waker};

use infra_ratelimit::{AsyncKeyedRateLimiter, Gcra, KeyedRateLimiter, Quota, TokioClock};
use infra_testkit::allocator::{self, CountingAllocator};
use tokio::sync::Notify;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Each key with a waiter has a line: an entry in a hash table that grows to twice its slots at
/// a time, and the queue's first buffer. What each waiter holds besides (its future, here
/// boxed, and its wake-up signal) is capped by the count of waiters, not by these bytes.
#[test]
fn lines_of_waiting_keys_hold_no_more_memory_than_they_are_charged() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let limiter = AsyncKeyedRateLimiter::new(
            KeyedRateLimiter::<u64, Gcra, _>::with_clock(
                Quota::per_hour(1).unwrap(),
                TokioClock::new(),
            )
            .unwrap(),
        );
        let keys: Vec<u64> = (0..5_000).collect();
        for key in &keys {
            assert!(limiter.until_ready(key).await.unwrap().is_allowed());
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut waiters = Vec::with_capacity(keys.len());
        // A waiter's signal: an `Arc<Notify>`, its two counts and the `Notify`.
        let signal = 2 * size_of::<usize>() + size_of::<Notify>();
        let before = allocator::live_bytes();
        for key in &keys {
            let mut waiter = Box::pin(limiter.until_ready(key));
            assert!(
                waiter.as_mut().poll(&mut cx).is_pending(),
                "key {key} waits"
            );
            let own = size_of_val(&*waiter) + signal;
            waiters.push(waiter);
            let held = usize::try_from(allocator::live_bytes() - before).unwrap_or(0);
            let lines = held.saturating_sub(waiters.len() * own);
            assert!(
                lines <= limiter.waiting_bytes(),
                "{} lines hold {lines} bytes, charged {}",
                key + 1,
                limiter.waiting_bytes()
            );
        }
        assert_eq!(limiter.waiting_keys(), keys.len());
        drop(waiters);
        assert_eq!(limiter.waiting_bytes(), 0);
    });
}
