//! Timing an operation on two threads at once, shared by the benchmarks that measure
//! contention.

use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Runs `op(thread, i)` for `i` in `0..iters` on each of two threads started together
/// (`thread` is 0 or 1); the time of the slower thread, from the common start.
pub(crate) fn two_threads(iters: u64, op: &(dyn Fn(u64, u64) + Sync)) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..2_u64)
            .map(|thread| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        op(thread, i);
                    }
                    start.elapsed()
                })
            })
            .collect();
        runs.into_iter()
            .map(|run| run.join().expect("bench thread"))
            .max()
            .unwrap_or_default()
    })
}
