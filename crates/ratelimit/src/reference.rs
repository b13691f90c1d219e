//! Simple, obviously correct models of every algorithm, and a driver that runs a limiter and
//! its model side by side. Used by the property tests and the fuzz targets.
//!
//! The models keep absolute times and exact wide integers, recompute everything from scratch,
//! and find `retry_after` and `reset_after` by searching for the first instant at which the
//! request would be admitted (or the state idle), so they share no formula with the limiters.

use std::collections::BTreeMap;
use std::time::Duration;

use infra_common::{Clock, ManualClock};

use crate::algorithm::Algorithm;
use crate::{
    Decision, Error, FixedWindow, Gcra, KeyedOptions, KeyedRateLimiter, Quota, RateLimiter,
    SlidingWindowCounter, SlidingWindowLog, TokenBucket,
};

/// A model of one limited thing.
pub trait Model: Clone {
    /// Decides on `n` cells at `now` (never earlier than the previous call): admitted and the
    /// single cells remaining afterwards.
    fn decide(&mut self, now: u64, n: u32) -> (bool, u32);
    /// Whether the state equals a new one at `now`.
    fn is_idle(&self, now: u64) -> bool;
}

/// The token bucket from its definition, `tokens = min(burst, tokens + limit × elapsed /
/// period)`, in exact rationals: tokens are counted in units of `1 / period`. GCRA is the same
/// rule stored differently, so it is the model of both.
#[derive(Clone, Debug)]
pub struct BucketModel {
    limit: u128,
    period: u128,
    burst: u128,
    scaled_tokens: u128,
    last: u64,
}

impl BucketModel {
    /// A full model for `quota`.
    pub fn new(quota: &Quota) -> Self {
        let period = u128::from(quota.period_nanos());
        Self {
            limit: u128::from(quota.limit()),
            period,
            burst: u128::from(quota.burst()),
            scaled_tokens: u128::from(quota.burst()) * period,
            last: 0,
        }
    }

    fn refill(&mut self, now: u64) {
        let gained = self.limit * u128::from(now - self.last);
        self.scaled_tokens = (self.scaled_tokens + gained).min(self.burst * self.period);
        self.last = now;
    }
}

impl Model for BucketModel {
    fn decide(&mut self, now: u64, n: u32) -> (bool, u32) {
        self.refill(now);
        let need = u128::from(n) * self.period;
        let admitted = need <= self.scaled_tokens;
        if admitted {
            self.scaled_tokens -= need;
        }
        (admitted, to_u32(self.scaled_tokens / self.period))
    }

    fn is_idle(&self, now: u64) -> bool {
        let mut copy = self.clone();
        copy.refill(now);
        copy.scaled_tokens == self.burst * self.period
    }
}

/// Admitted cells per window index.
#[derive(Clone, Debug)]
pub struct WindowCounts {
    window: u64,
    limit: u64,
    counts: BTreeMap<u64, u64>,
    sliding: bool,
}

impl WindowCounts {
    /// A fixed-window model.
    pub fn fixed(quota: &Quota) -> Self {
        Self::new(quota, false)
    }

    /// A sliding-window-counter model.
    pub fn sliding(quota: &Quota) -> Self {
        Self::new(quota, true)
    }

    fn new(quota: &Quota, sliding: bool) -> Self {
        Self {
            window: quota.period_nanos(),
            limit: u64::from(quota.limit()),
            counts: BTreeMap::new(),
            sliding,
        }
    }

    fn count(&self, index: u64) -> u128 {
        u128::from(self.counts.get(&index).copied().unwrap_or(0))
    }

    /// Used capacity, scaled by the window length.
    fn used(&self, now: u64) -> u128 {
        let index = now / self.window;
        let w = u128::from(self.window);
        let current = self.count(index) * w;
        if !self.sliding || index == 0 {
            return current;
        }
        let elapsed = u128::from(now % self.window);
        current + self.count(index - 1) * (w - elapsed)
    }
}

impl Model for WindowCounts {
    fn decide(&mut self, now: u64, n: u32) -> (bool, u32) {
        let w = u128::from(self.window);
        let capacity = u128::from(self.limit) * w;
        let used = self.used(now);
        let admitted = used + u128::from(n) * w <= capacity;
        if admitted {
            *self.counts.entry(now / self.window).or_insert(0) += u64::from(n);
        }
        let used = self.used(now);
        (admitted, to_u32(capacity.saturating_sub(used) / w))
    }

    fn is_idle(&self, now: u64) -> bool {
        let index = now / self.window;
        self.count(index) == 0 && (!self.sliding || index == 0 || self.count(index - 1) == 0)
    }
}

/// One admission time per admitted cell.
#[derive(Clone, Debug)]
pub struct LogModel {
    window: u64,
    limit: usize,
    admitted: Vec<u64>,
}

impl LogModel {
    /// A sliding-window-log model.
    pub fn new(quota: &Quota) -> Self {
        Self {
            window: quota.period_nanos(),
            limit: usize::try_from(quota.limit()).unwrap_or(usize::MAX),
            admitted: Vec::new(),
        }
    }

    fn in_window(&self, now: u64) -> usize {
        self.admitted
            .iter()
            .filter(|&&at| at.saturating_add(self.window) > now)
            .count()
    }
}

impl Model for LogModel {
    fn decide(&mut self, now: u64, n: u32) -> (bool, u32) {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        let admitted = self.in_window(now) + n <= self.limit;
        if admitted {
            self.admitted.extend(std::iter::repeat_n(now, n));
        }
        let left = self.limit - self.in_window(now).min(self.limit);
        (admitted, to_u32(u128::try_from(left).unwrap_or(0)))
    }

    fn is_idle(&self, now: u64) -> bool {
        self.in_window(now) == 0
    }
}

fn to_u32(value: u128) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// Searches horizon for the search of retry and reset times: 2^62 ns.
const HORIZON: u64 = 1 << 62;

/// The first `t ≥ 0` at which `holds(now + t)`, assuming it is monotone; `None` past the
/// horizon.
fn first_instant(now: u64, holds: impl Fn(u64) -> bool) -> Option<u64> {
    if holds(now) {
        return Some(0);
    }
    let (mut low, mut high) = (0u64, HORIZON);
    if !holds(now.saturating_add(high)) {
        return None;
    }
    // holds(now + low) is false, holds(now + high) is true.
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if holds(now + mid) {
            high = mid;
        } else {
            low = mid;
        }
    }
    Some(high)
}

/// One step of a random scenario.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// Move the clock forward.
    Advance(u64),
    /// Ask for `n` cells (for keyed runs, of key `key`).
    Check {
        /// Which key (keyed runs only).
        key: u8,
        /// Cells.
        n: u32,
    },
    /// Forget idle keys (keyed runs only).
    Sweep,
}

/// Which algorithm a scenario exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// [`Gcra`].
    Gcra,
    /// [`TokenBucket`].
    TokenBucket,
    /// [`FixedWindow`].
    FixedWindow,
    /// [`SlidingWindowCounter`].
    SlidingWindowCounter,
    /// [`SlidingWindowLog`].
    SlidingWindowLog,
}

impl Kind {
    /// Every algorithm.
    pub const ALL: [Kind; 5] = [
        Kind::Gcra,
        Kind::TokenBucket,
        Kind::FixedWindow,
        Kind::SlidingWindowCounter,
        Kind::SlidingWindowLog,
    ];
}

fn compare<M: Model>(
    step: usize,
    model: &M,
    before: &M,
    now: u64,
    n: u32,
    real: Decision,
) -> Result<(), String> {
    let mut expected = before.clone();
    let (admitted, remaining) = expected.decide(now, n);
    let fail = |what: &str, got: String, want: String| {
        Err(format!(
            "step {step} (t={now} n={n}): {what} was {got}, model says {want}"
        ))
    };
    if real.is_allowed() != admitted {
        return fail(
            "admitted",
            real.is_allowed().to_string(),
            admitted.to_string(),
        );
    }
    if real.remaining() != remaining {
        return fail(
            "remaining",
            real.remaining().to_string(),
            remaining.to_string(),
        );
    }
    if real.is_denied() {
        let retry = first_instant(now, |t| before.clone().decide(t, n).0)
            .map_or(Duration::MAX, Duration::from_nanos);
        if real.retry_after() != retry {
            return fail(
                "retry_after",
                format!("{:?}", real.retry_after()),
                format!("{retry:?}"),
            );
        }
    }
    let reset =
        first_instant(now, |t| model.is_idle(t)).map_or(Duration::MAX, Duration::from_nanos);
    if real.reset_after() != reset {
        return fail(
            "reset_after",
            format!("{:?}", real.reset_after()),
            format!("{reset:?}"),
        );
    }
    Ok(())
}

fn run_direct<A: Algorithm, M: Model>(
    quota: Quota,
    mut model: M,
    ops: &[Op],
) -> Result<(), String> {
    let clock = ManualClock::new();
    let limiter =
        RateLimiter::<A, _>::with_clock(quota, clock.clone()).map_err(|e| e.to_string())?;
    let capacity = limiter.capacity();
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Advance(nanos) => clock.advance(Duration::from_nanos(nanos)),
            Op::Check { n, .. } => {
                let now = clock.now_nanos();
                let result = limiter.check_n(n);
                if n > capacity {
                    if result.is_ok() {
                        return Err(format!(
                            "step {step}: n={n} above capacity {capacity} was not an error"
                        ));
                    }
                    continue;
                }
                let real = result.map_err(|e| e.to_string())?;
                let before = model.clone();
                model.decide(now, n);
                compare(step, &model, &before, now, n, real)?;
            }
            Op::Sweep => {
                let idle = model.is_idle(clock.now_nanos());
                if limiter.is_idle() != idle {
                    return Err(format!(
                        "step {step}: is_idle was {}, model says {idle}",
                        !idle
                    ));
                }
            }
        }
    }
    Ok(())
}

fn run_keyed<A: Algorithm, M: Model>(
    quota: Quota,
    max_keys: usize,
    make: impl Fn() -> M,
    ops: &[Op],
) -> Result<(), String> {
    let clock = ManualClock::new();
    // With at most `KeyedOptions::RECLAIM_SAMPLE` keys, the eviction hand examines every
    // tracked key before refusing one, so a refusal happens only when `max_keys` keys are
    // genuinely not idle.
    let options = KeyedOptions::default().max_keys(max_keys);
    let limiter = KeyedRateLimiter::<u8, A, _>::with_options(quota, clock.clone(), options)
        .map_err(|e| e.to_string())?;
    let mut models: BTreeMap<u8, M> = BTreeMap::new();
    let busy = |models: &BTreeMap<u8, M>, now| models.values().filter(|m| !m.is_idle(now)).count();
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Advance(nanos) => clock.advance(Duration::from_nanos(nanos)),
            Op::Check { key, n } => {
                let now = clock.now_nanos();
                let real = match limiter.check_n(&key, n) {
                    Ok(real) => real,
                    Err(Error::TooManyKeys { .. }) => {
                        let busy = busy(&models, now);
                        if busy < max_keys {
                            return Err(format!(
                                "step {step}: key {key} refused with only {busy} busy keys"
                            ));
                        }
                        continue; // refused: nothing consumed, the model does not move
                    }
                    Err(_) => continue, // above capacity: covered by the direct runs
                };
                let model = models.entry(key).or_insert_with(&make);
                let before = model.clone();
                model.decide(now, n);
                compare(step, model, &before, now, n, real)?;
            }
            Op::Sweep => {
                limiter.sweep();
                // Forgetting idle keys is invisible to decisions (checked at every step above);
                // what is left is exactly the keys whose state still matters.
                let busy = busy(&models, clock.now_nanos());
                if limiter.len() != busy {
                    return Err(format!(
                        "step {step}: {} keys tracked after the sweep, {busy} busy",
                        limiter.len()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Runs `ops` against a direct limiter (`max_keys: None`) or a keyed limiter of `u8` keys
/// tracking at most `max_keys` keys, of algorithm `kind`, and the matching model (one per key);
/// the first disagreement is the error.
///
/// # Errors
///
/// A description of the first step at which limiter and model disagree.
pub fn run(kind: Kind, quota: Quota, max_keys: Option<usize>, ops: &[Op]) -> Result<(), String> {
    match kind {
        // GCRA and the bucket refill one token per whole nanosecond interval (see
        // `Quota::emission_interval`); where the period is not a multiple of the limit they run
        // up to one part per interval fast, and decisions are compared exactly only where it is
        // (tests/bounds.rs bounds the others within 1 %).
        Kind::Gcra | Kind::TokenBucket
            if !quota
                .period_nanos()
                .is_multiple_of(u64::from(quota.limit())) =>
        {
            Ok(())
        }
        Kind::Gcra => dispatch::<Gcra, _>(quota, max_keys, || BucketModel::new(&quota), ops),
        Kind::TokenBucket => {
            dispatch::<TokenBucket, _>(quota, max_keys, || BucketModel::new(&quota), ops)
        }
        Kind::FixedWindow => {
            dispatch::<FixedWindow, _>(quota, max_keys, || WindowCounts::fixed(&quota), ops)
        }
        Kind::SlidingWindowCounter => dispatch::<SlidingWindowCounter, _>(
            quota,
            max_keys,
            || WindowCounts::sliding(&quota),
            ops,
        ),
        Kind::SlidingWindowLog => {
            dispatch::<SlidingWindowLog, _>(quota, max_keys, || LogModel::new(&quota), ops)
        }
    }
}

fn dispatch<A: Algorithm, M: Model>(
    quota: Quota,
    max_keys: Option<usize>,
    make: impl Fn() -> M,
    ops: &[Op],
) -> Result<(), String> {
    match max_keys {
        None => run_direct::<A, M>(quota, make(), ops),
        Some(max_keys) => run_keyed::<A, M>(quota, max_keys, make, ops),
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // proptest's `prop_oneof!` expands to `std::sync::Arc`; this test-only strategy is not loom code.
    #[allow(clippy::disallowed_types)]
    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            // Mostly small steps around the interval, sometimes long idle periods.
            3 => (0u64..3_000_000_000).prop_map(Op::Advance),
            1 => (0u64..50_000_000_000).prop_map(Op::Advance),
            1 => (0u64..2_000).prop_map(Op::Advance),
            6 => (0u8..8, 0u32..8).prop_map(|(key, n)| Op::Check { key, n }),
            1 => Just(Op::Sweep),
        ]
    }

    fn quota() -> impl Strategy<Value = Quota> {
        // Mostly periods that the limit divides, where GCRA and the bucket match the model
        // exactly (see `run`).
        (1u64..12, 1u64..5_000, 1u64..12, 0u8..4).prop_filter_map(
            "representable",
            |(limit, ms, burst, divisible)| {
                let nanos = ms * 1_000_000;
                let nanos = if divisible > 0 {
                    nanos - nanos % limit
                } else {
                    nanos
                };
                Quota::new(limit, Duration::from_nanos(nanos))
                    .ok()?
                    .with_burst(burst)
                    .ok()
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn every_algorithm_matches_its_model(
            quota in quota(),
            ops in proptest::collection::vec(op(), 1..80),
        ) {
            for kind in Kind::ALL {
                if let Err(error) = run(kind, quota, None, &ops) {
                    return Err(TestCaseError::fail(format!("{kind:?} {quota:?}: {error}")));
                }
            }
        }

        // `prop_oneof!` expands to `std::sync::Arc`; test-only, not loom code.
        #[allow(clippy::disallowed_types)]
        #[test]
        fn keyed_limiters_match_one_model_per_key(
            quota in quota(),
            max_keys in prop_oneof![Just(256usize), 1usize..4],
            ops in proptest::collection::vec(op(), 1..80),
        ) {
            for kind in Kind::ALL {
                if let Err(error) = run(kind, quota, Some(max_keys), &ops) {
                    return Err(TestCaseError::fail(format!("{kind:?} {quota:?}: {error}")));
                }
            }
        }
    }

    #[test]
    fn the_driver_reports_a_wrong_answer() {
        // A model with half the burst must disagree with the limiter.
        let quota = Quota::per_second(4).unwrap();
        let half = Quota::per_second(4).unwrap().with_burst(2).unwrap();
        let ops = [Op::Check { key: 0, n: 3 }];
        assert!(run_direct::<Gcra, _>(quota, BucketModel::new(&half), &ops).is_err());
        assert!(run(Kind::Gcra, quota, None, &ops).is_ok());
    }
}
