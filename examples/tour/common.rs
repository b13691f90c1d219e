//! infra-common: the pieces every primitive stands on.

use std::error::Error;
use std::hint::black_box;
use std::time::Duration;

use infra_common::hash::{STABLE_SEED, stable_hash};
use infra_common::{Clock, ManualClock, SystemClock};

pub(crate) fn run() -> Result<(), Box<dyn Error>> {
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(90));
    println!(
        "manual clock: advanced 90 s without sleeping; monotonic = {} ns, wall = {} s after the epoch",
        clock.now_nanos(),
        clock
            .wall_time()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );

    let system = SystemClock::new();
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
