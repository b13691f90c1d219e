//! A guided run through every primitive, on embedded defaults, in a few seconds.
//!
//! `cargo run --release --example tour`. Each chapter lives in its own module, prints a few
//! plain lines (what it did and the figure that matters) and returns an error rather than
//! panicking if something is off.

mod common;
mod dlock;
mod edgecache;
mod geomatch;
mod mqueue;
mod ratelimit;
mod ring_hash;
mod trace_ctx;

use std::error::Error;
use std::time::Instant;

/// One chapter of the tour: its title and the function that runs it.
type Chapter = (&'static str, fn() -> Result<(), Box<dyn Error>>);

const CHAPTERS: &[Chapter] = &[
    ("infra-common: clocks and hashing", common::run),
    (
        "infra-ring-hash: a node joins, a node fails and returns",
        ring_hash::run,
    ),
    (
        "infra-ratelimit: one user bursts past a per-user quota",
        ratelimit::run,
    ),
    (
        "infra-trace-ctx: one trace across every hop of a checkout",
        trace_ctx::run,
    ),
    (
        "infra-dlock: a paused lock holder and a fenced account",
        dlock::run,
    ),
    ("infra-geomatch: a city at rush hour", geomatch::run),
    (
        "infra-mqueue: an order fans out, a consumer crashes, a poison message",
        mqueue::run,
    ),
    (
        "infra-edgecache: a shopper in Tokyo, an origin in Virginia",
        edgecache::run,
    ),
];

fn main() -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    for (title, run) in CHAPTERS {
        println!("== {title}");
        run()?;
        println!();
    }
    println!(
        "tour finished: {} chapters in {:.2?}",
        CHAPTERS.len(),
        started.elapsed()
    );
    Ok(())
}
