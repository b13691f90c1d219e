//! infra-ratelimit: a burst of requests against a per-user quota, on a manual clock.

use std::error::Error;
use std::time::Duration;

use infra_common::{Clock, ManualClock};
use infra_ratelimit::{Error as LimitError, Gcra, KeyedOptions, KeyedRateLimiter, Quota};

/// How many requests alice's script fires, one a millisecond.
const BURST_REQUESTS: u32 = 8;
/// How many admissions to watch once alice waits as she is told.
const PACED_ADMISSIONS: usize = 4;

fn describe(quota: Quota) -> String {
    format!(
        "{} per {:?}, burst {}",
        quota.limit(),
        quota.period(),
        quota.burst()
    )
}

fn list(durations: &[Duration]) -> String {
    let items: Vec<String> = durations.iter().map(|d| format!("{d:?}")).collect();
    items.join(", ")
}

pub(crate) fn run() -> Result<(), Box<dyn Error>> {
    let clock = ManualClock::new();
    // Every user: 5 requests per second, at most 3 back to back. One partner gets 50 per second.
    let quota = Quota::per_second(5)?.with_burst(3)?;
    let partner_quota = Quota::per_second(50)?;
    let limiter = KeyedRateLimiter::<String, Gcra, _>::with_clock(quota, clock.clone())?;
    limiter.set_key_quota("partner", partner_quota)?;

    let first_request = clock.now_nanos();
    let mut last_request = first_request;
    let mut admitted = 0;
    let mut first_denial = None;
    for i in 0..BURST_REQUESTS {
        if i > 0 {
            clock.advance(Duration::from_millis(1));
        }
        last_request = clock.now_nanos();
        let decision = limiter.check("alice")?;
        if decision.is_allowed() {
            admitted += 1;
        } else if first_denial.is_none() {
            first_denial = Some(decision);
        }
    }
    let denied = first_denial.ok_or("the burst should have been limited")?;
    let headers: Vec<String> = denied
        .headers()
        .map(|(name, value)| format!("{name}: {value}"))
        .collect();
    println!("per-user quota: {}", describe(quota));
    println!(
        "alice sent {BURST_REQUESTS} requests in {:?}: {admitted} admitted, {} denied (HTTP 429 with {})",
        Duration::from_nanos(last_request - first_request),
        BURST_REQUESTS - admitted,
        headers.join(", ")
    );

    // The same burst from the partner and from bob is unaffected by alice.
    let partner = (0..BURST_REQUESTS)
        .filter(|_| limiter.check("partner").is_ok_and(|d| d.is_allowed()))
        .count();
    let bob = limiter.check("bob")?;
    println!(
        "partner (own quota: {}): {partner} of {BURST_REQUESTS} admitted; bob: admitted = {}",
        describe(partner_quota),
        bob.is_allowed()
    );

    // alice now waits exactly what each denial tells her, without anybody sleeping: the clock
    // is manual. When she is let through shows the pace the limiter holds her to.
    let mut admitted_at = Vec::with_capacity(PACED_ADMISSIONS);
    let mut waits = Vec::new();
    while admitted_at.len() < PACED_ADMISSIONS {
        let decision = limiter.check("alice")?;
        if decision.is_allowed() {
            admitted_at.push(clock.elapsed_since(first_request));
        } else if waits.len() > 2 * PACED_ADMISSIONS {
            return Err("alice keeps being denied after waiting her retry-after".into());
        } else {
            waits.push(decision.retry_after());
            clock.advance(decision.retry_after());
        }
    }
    let gaps: Vec<Duration> = admitted_at.windows(2).map(|w| w[1] - w[0]).collect();
    let gap = gaps[0];
    if gaps.iter().any(|&g| g != gap) {
        return Err(format!("alice's admissions are unevenly spaced: {gaps:?}").into());
    }
    println!(
        "alice waits each retry-after ({}): admitted at {} after her first request, one every {gap:?}",
        list(&waits),
        list(&admitted_at)
    );

    let idle = Duration::from_secs(1);
    clock.advance(idle);
    let forgotten = limiter.sweep();
    println!(
        "{idle:?} idle later: {forgotten} fully refilled keys forgotten, {} tracked",
        limiter.len()
    );
    flood_of_new_keys()
}

/// Distinct keys the flood sends, one request each, one a millisecond.
const FLOOD_KEYS: u32 = 10_000;
/// The key cap the flood meets.
const FLOOD_MAX_KEYS: usize = 1_000;
/// How often carol, a steady user, asks during the flood, in the flood's milliseconds.
const STEADY_EVERY_MS: u32 = 50;

/// A flood of one-off keys through a small key table: keys it used and that have replenished
/// are forgotten to make room, while carol, active throughout, keeps her state (a forgotten
/// carol would start with a fresh burst and be admitted more).
fn flood_of_new_keys() -> Result<(), Box<dyn Error>> {
    let clock = ManualClock::new();
    let quota = Quota::per_second(1)?;
    let options = KeyedOptions::default().max_keys(FLOOD_MAX_KEYS);
    let limiter = KeyedRateLimiter::<String, Gcra, _>::with_options(quota, clock.clone(), options)?;
    let mut refused = 0;
    let (mut carol_asked, mut carol_admitted) = (0, 0);
    let start = clock.now_nanos();
    for i in 0..FLOOD_KEYS {
        if i > 0 {
            clock.advance(Duration::from_millis(1));
        }
        // Carol asks first in her milliseconds: she is full again (replenished, so as idle as
        // a key gets) exactly a second after each admission, one of her asking times, and is
        // admitted then before the flood's key of that millisecond could reclaim her.
        if i.is_multiple_of(STEADY_EVERY_MS) {
            carol_asked += 1;
            carol_admitted += u32::from(limiter.check("carol")?.is_allowed());
        }
        match limiter.check(format!("flood-{i}").as_str()) {
            Ok(_) => {}
            Err(LimitError::TooManyKeys { .. }) => refused += 1,
            Err(other) => return Err(other.into()),
        }
    }
    let elapsed = clock.elapsed_since(start);
    // Her burst of 1, then 1 a second: what the quota allows her over the flood.
    let carol_allowed = 1 + elapsed.as_millis() / 1_000;
    if u128::from(carol_admitted) > carol_allowed {
        return Err(
            format!("carol was admitted {carol_admitted} times, beyond {carol_allowed}").into(),
        );
    }
    println!(
        "a flood of {FLOOD_KEYS} one-off keys in {elapsed:?} through a {FLOOD_MAX_KEYS}-key table ({}): \
         {refused} refused, {} tracked at the end; carol, asking every {STEADY_EVERY_MS}ms, \
         admitted {carol_admitted} of {carol_asked} (her quota allows {carol_allowed}: never forgotten)",
        describe(quota),
        limiter.len()
    );
    Ok(())
}
