//! infra-ratelimit: a burst of requests against a per-user quota, on a manual clock.

use std::error::Error;
use std::time::Duration;

use infra_common::ManualClock;
use infra_ratelimit::{Gcra, KeyedRateLimiter, Quota};

pub(crate) fn run() -> Result<(), Box<dyn Error>> {
    let clock = ManualClock::new();
    // Every user: 5 requests per second, at most 3 back to back. One partner gets 50 per second.
    let quota = Quota::per_second(5)?.with_burst(3)?;
    let limiter = KeyedRateLimiter::<String, Gcra, _>::with_clock(quota, clock.clone())?;
    limiter.set_key_quota("partner".to_owned(), Quota::per_second(50)?)?;

    // alice's script fires 8 requests within 10 ms.
    let mut admitted = 0;
    let mut first_denial = None;
    for _ in 0..8 {
        let decision = limiter.check("alice")?;
        if decision.is_allowed() {
            admitted += 1;
        } else if first_denial.is_none() {
            first_denial = Some(decision);
        }
        clock.advance(Duration::from_millis(1));
    }
    let denied = first_denial.ok_or("the burst should have been limited")?;
    let headers: Vec<String> = denied
        .headers()
        .map(|(name, value)| format!("{name}: {value}"))
        .collect();
    println!(
        "alice sent 8 requests in 8 ms: {admitted} admitted, {} denied (HTTP 429 with {})",
        8 - admitted,
        headers.join(", ")
    );
    println!(
        "retry-after {:?}: one request is back every 200 ms after the burst of 3",
        denied.retry_after()
    );

    // The same burst from the partner and from bob is unaffected by alice.
    let partner = (0..8)
        .filter(|_| limiter.check("partner").is_ok_and(|d| d.is_allowed()))
        .count();
    let bob = limiter.check("bob")?;
    println!(
        "partner (own quota of 50/s): {partner} of 8 admitted; bob: admitted = {}",
        bob.is_allowed()
    );

    // alice waits exactly what she was told, without anybody sleeping: the clock is manual.
    clock.advance(denied.retry_after());
    println!(
        "after waiting the retry-after, alice's next request: admitted = {}",
        limiter.check("alice")?.is_allowed()
    );

    clock.advance(Duration::from_secs(1));
    let forgotten = limiter.sweep();
    println!(
        "one idle second later: {forgotten} fully refilled keys forgotten, {} tracked",
        limiter.len()
    );
    Ok(())
}
