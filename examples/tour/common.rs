//! infra-common: the pieces every primitive stands on.

use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use infra_common::hash::{STABLE_SEED, stable_hash};
use infra_common::{Clock, ManualClock, SystemClock};

pub(crate) fn run() -> Result<(), Box<dyn Error>> {
    let system = SystemClock::new();

    let clock = ManualClock::new();
    let (manual_before, real_before) = (clock.now_nanos(), system.now_nanos());
    clock.advance(Duration::from_secs(90));
    let real = system.elapsed_since(real_before);
    let moved = clock.elapsed_since(manual_before);
    println!(
        "manual clock: moved {moved:?} forward in {real:?} of real time; its wall time now reads {} s after the epoch",
        clock.wall_time().duration_since(UNIX_EPOCH)?.as_secs()
    );

    const READS: u32 = 1_000_000;
    let start = system.now_nanos();
    for _ in 0..READS {
        black_box(system.now_nanos());
    }
    let per_read = system.elapsed_since(start) / READS;
    println!("system clock: {per_read:?} per monotonic reading ({READS} readings)");

    let key = "user:42";
    println!(
        "stable hash: xxh3-64(seed {STABLE_SEED:#x}) of {key:?} = {:#018x}, the same in every process",
        stable_hash(key.as_bytes())
    );
    Ok(())
}
