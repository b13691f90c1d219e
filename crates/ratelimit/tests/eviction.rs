//! A flood of distinct keys against a keyed limiter with a key cap: the flood cannot lock other
//! users out, cannot reset its own limits, and every decision, the attacker's and everyone
//! else's, is the one an unbounded limiter would make.
//!
//! The limiter finds room for a new key by examining the next `KeyedOptions::RECLAIM_SAMPLE`
//! (128) keys at its CLOCK hand. When most tracked keys are active, those may all be, and the
//! new key is refused (`TooManyKeys`, asking for a retry soon) while the hand moves on; within
//! one turn of the hand the key finds any idle key there is. A refusal is allowed here only at
//! the cap and for at most 1 % of the new keys that find the limiter full, and the same request
//! retried at the same instant must get in within one turn.
//!
//! The reference is a token bucket per key written from the definition, `tokens = min(burst,
//! tokens + limit × elapsed / period)`, in exact integers (tokens counted in units of
//! `1 / period`). It never forgets a key, so it is what a limiter without any cap decides.
#![cfg(not(infra_loom))]

use std::collections::HashMap;
use std::time::Duration;

use infra_common::{Clock, ManualClock};
use infra_ratelimit::{Decision, Error, Gcra, KeyedOptions, KeyedRateLimiter, Quota};

const LIMIT: u128 = 100;
const PERIOD: u128 = 3_600_000_000_000; // one hour, in nanoseconds

/// One key's bucket: `scaled` is tokens × `PERIOD`.
#[derive(Clone, Copy)]
struct Bucket {
    scaled: u128,
    last: u128,
}

impl Bucket {
    const FULL: Bucket = Bucket {
        scaled: LIMIT * PERIOD,
        last: 0,
    };

    /// Takes one token at `now` if there is one; returns whether it did and the whole tokens
    /// left.
    fn take(&mut self, now: u64) -> (bool, u32) {
        let now = u128::from(now);
        if now > self.last {
            self.scaled = (self.scaled + LIMIT * (now - self.last)).min(LIMIT * PERIOD);
            self.last = now;
        }
        let admitted = self.scaled >= PERIOD;
        if admitted {
            self.scaled -= PERIOD;
        }
        (admitted, u32::try_from(self.scaled / PERIOD).unwrap())
    }
}

struct Replay {
    clock: ManualClock,
    limiter: KeyedRateLimiter<u64, Gcra, ManualClock>,
    reference: HashMap<u64, Bucket>,
    max_keys: usize,
    checks: u64,
    /// Checks made while the limiter was at its cap.
    at_cap: u64,
    /// Checks refused, each then retried until admitted.
    refused: u64,
    /// Requests refused on their first try.
    refused_first: u64,
    /// Requests for keys never seen before, made while the limiter was at its cap.
    new_at_cap: u64,
}

impl Replay {
    fn at(&mut self, nanos: u64) {
        self.clock.set(Duration::from_nanos(nanos));
    }

    /// One request for `key` now; the limiter must decide as the reference does.
    fn request(&mut self, key: u64) -> bool {
        let now = self.clock.now_nanos();
        if self.limiter.len() == self.max_keys {
            self.at_cap += 1;
            self.new_at_cap += u64::from(!self.reference.contains_key(&key));
        }
        let want = self.reference.entry(key).or_insert(Bucket::FULL).take(now);
        // Each refused attempt moves the hand a sample on: one turn is `max_keys / sample` of
        // them.
        let turn = self.max_keys.div_ceil(KeyedOptions::RECLAIM_SAMPLE) + 1;
        let mut attempts = 0;
        let got = loop {
            match self.limiter.check(&key) {
                Ok(decision) => break (decision.is_allowed(), decision.remaining()),
                Err(Error::TooManyKeys { retry_after, .. }) if attempts < turn => {
                    assert_eq!(self.limiter.len(), self.max_keys, "refused below the cap");
                    // The same request retried at this instant gets in (or the test fails
                    // below): a refusal that named a longer wait would keep an obedient client
                    // out for nothing.
                    assert_eq!(
                        retry_after,
                        Decision::RETRY_SOON,
                        "key {key} refused at {now} ns after {attempts} tries"
                    );
                    self.refused_first += u64::from(attempts == 0);
                    self.refused += 1;
                    attempts += 1;
                }
                Err(error) => panic!(
                    "key {key} refused {attempts} times at {now} ns with {} keys tracked: {error}",
                    self.limiter.len()
                ),
            }
        };
        assert_eq!(got, want, "key {key} at {now} ns: (admitted, remaining)");
        assert!(self.limiter.len() <= self.max_keys);
        self.checks += 1;
        got.0
    }

    /// Requests for `key` until one is denied; returns how many were admitted.
    fn drain(&mut self, key: u64) -> u32 {
        let mut admitted = 0;
        while self.request(key) {
            admitted += 1;
        }
        admitted
    }
}

/// An attack of 10 × `max_keys` distinct keys, each draining its whole hourly burst at once, in
/// waves of 50 keys 10 ms apart every 200 s, interleaved with ten legitimate users; 100 s after
/// each wave, one key of each of the 17 previous waves comes back for one more request (which
/// keeps it active 36 s longer). At most 18 waves' keys plus those 17 are active at once, 917,
/// so with the ten users there are always idle keys among the 950 tracked; but the limiter is
/// full from the nineteenth wave on, with fewer spare places than a wave has keys, so new keys,
/// the users' included, need idle ones reclaimed at once, milliseconds apart: a few among
/// hundreds of active ones (as few as 3.5 %), which a sample of 128 rarely misses (about 1 in
/// 96 when the idle keys are fewest, `0.965^128`) and a turn of the hand never.
#[test]
fn a_flood_of_distinct_keys_locks_nobody_out_and_resets_nobody() {
    let max_keys = 950;
    let clock = ManualClock::new();
    let limiter = KeyedRateLimiter::<u64, Gcra, _>::with_options(
        Quota::per_hour(100).unwrap(),
        clock.clone(),
        KeyedOptions::default().max_keys(max_keys),
    )
    .unwrap();
    let mut replay = Replay {
        clock,
        limiter,
        reference: HashMap::new(),
        max_keys,
        checks: 0,
        at_cap: 0,
        refused: 0,
        refused_first: 0,
        new_at_cap: 0,
    };
    let ms = 1_000_000u64;
    let wave_every = 200_000 * ms;
    let wave_size = 50u64;
    let attackers = 10 * max_keys as u64;
    let users = 10u64;
    let attacker = |i: u64| 1_000_000 + i;
    for wave in 0..attackers / wave_size {
        let start = wave * wave_every;
        for i in 0..wave_size {
            replay.at(start + i * 10 * ms);
            let key = attacker(wave * wave_size + i);
            assert_eq!(replay.drain(key), 100, "attacker {key} gets its burst once");
            // Mid-wave, a user sends a few requests, and another one drains its own quota.
            if i == 25 {
                replay.at(start + i * 10 * ms + 5 * ms);
                for _ in 0..3 {
                    replay.request(wave % users);
                }
                replay.drain((wave + 5) % users);
            }
        }
        // Later, earlier attackers come back: still limited, never reset by the churn.
        replay.at(start + 100_000 * ms);
        for back in 1..=17u64.min(wave) {
            let key = attacker((wave - back) * wave_size + back % wave_size);
            replay.request(key);
        }
    }
    assert_eq!(replay.reference.len() as u64, attackers + users);
    assert!(replay.checks > attackers * 101);
    assert!(
        replay.at_cap > replay.checks / 10 && replay.new_at_cap > 1_000,
        "{} of {} checks at the cap, {} of them for new keys",
        replay.at_cap,
        replay.checks,
        replay.new_at_cap
    );
    // What `KeyedOptions::RECLAIM_SAMPLE` documents: refusals are rare.
    assert!(
        replay.refused_first * 100 <= replay.new_at_cap,
        "{} of {} new keys at the cap refused at first",
        replay.refused_first,
        replay.new_at_cap
    );
    println!(
        "{} checks, {} at the cap, {} refusals retried, {} of {} new keys at the cap refused at first",
        replay.checks, replay.at_cap, replay.refused, replay.refused_first, replay.new_at_cap
    );
}
