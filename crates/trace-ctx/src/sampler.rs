//! Sampling: which traces are recorded.
//!
//! - [`AlwaysOn`], [`AlwaysOff`];
//! - [`ParentBased`]: follow the parent's sampled flag, ask a root sampler for new traces;
//! - [`TraceIdRatio`]: keep a fraction of traces, decided from the trace id's random bits so
//!   every service that uses the same ratio makes the same decision for the same trace;
//! - [`RateLimited`]: at most N new traces per second, for a ceiling on cost.

use std::fmt;

use infra_common::sync::atomic::{AtomicU64, Ordering};
use infra_common::{Clock, SystemClock};

use crate::{SamplingState, SpanContext, SpanKind, TraceId};

/// Whether a span is recorded and exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SamplingDecision {
    /// Not recorded; the sampled flag is propagated as 0. Costs no allocation.
    Drop,
    /// Recorded, exported, and propagated with the sampled flag set.
    RecordAndSample,
}

impl SamplingDecision {
    /// Whether the span is sampled.
    pub const fn is_sampled(self) -> bool {
        matches!(self, Self::RecordAndSample)
    }

    const fn from_bool(sampled: bool) -> Self {
        if sampled {
            Self::RecordAndSample
        } else {
            Self::Drop
        }
    }
}

/// Decides whether a new span is sampled. Called once per span start, so it must be cheap
/// and must not allocate.
pub trait Sampler: Send + Sync + fmt::Debug {
    /// The decision for a span named `name` of `kind` in trace `trace_id`, whose parent (if
    /// any) is `parent`.
    fn should_sample(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
        kind: SpanKind,
    ) -> SamplingDecision;
}

impl<S: Sampler + ?Sized> Sampler for Box<S> {
    fn should_sample(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
        kind: SpanKind,
    ) -> SamplingDecision {
        (**self).should_sample(parent, trace_id, name, kind)
    }
}

/// Samples everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysOn;

impl Sampler for AlwaysOn {
    fn should_sample(
        &self,
        _: Option<&SpanContext>,
        _: TraceId,
        _: &str,
        _: SpanKind,
    ) -> SamplingDecision {
        SamplingDecision::RecordAndSample
    }
}

/// Samples nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysOff;

impl Sampler for AlwaysOff {
    fn should_sample(
        &self,
        _: Option<&SpanContext>,
        _: TraceId,
        _: &str,
        _: SpanKind,
    ) -> SamplingDecision {
        SamplingDecision::Drop
    }
}

/// Follows the parent's sampled flag; asks `root` when there is no parent, or when the
/// parent deferred the decision ([`SamplingState::Defer`], B3 ids without a sampling state).
///
/// The four parent cases (remote or local, sampled or not) can each get their own sampler;
/// by default sampled parents are followed with [`AlwaysOn`] and unsampled with [`AlwaysOff`].
///
/// ```
/// use infra_trace_ctx::{ParentBased, Sampler, SpanKind, TraceId, TraceIdRatio};
///
/// let sampler = ParentBased::new(TraceIdRatio::new(0.25));
/// let decision = sampler.should_sample(None, TraceId::random(), "GET /cart", SpanKind::Server);
/// # let _ = decision;
/// ```
#[derive(Debug)]
pub struct ParentBased {
    root: Box<dyn Sampler>,
    remote_sampled: Box<dyn Sampler>,
    remote_not_sampled: Box<dyn Sampler>,
    local_sampled: Box<dyn Sampler>,
    local_not_sampled: Box<dyn Sampler>,
}

impl ParentBased {
    /// Follows parents, samples new traces with `root`.
    pub fn new(root: impl Sampler + 'static) -> Self {
        Self {
            root: Box::new(root),
            remote_sampled: Box::new(AlwaysOn),
            remote_not_sampled: Box::new(AlwaysOff),
            local_sampled: Box::new(AlwaysOn),
            local_not_sampled: Box::new(AlwaysOff),
        }
    }

    /// The sampler for spans whose parent came from another process and was sampled.
    #[must_use]
    pub fn remote_sampled(mut self, sampler: impl Sampler + 'static) -> Self {
        self.remote_sampled = Box::new(sampler);
        self
    }

    /// The sampler for spans whose parent came from another process and was not sampled.
    #[must_use]
    pub fn remote_not_sampled(mut self, sampler: impl Sampler + 'static) -> Self {
        self.remote_not_sampled = Box::new(sampler);
        self
    }

    /// The sampler for spans whose parent is in this process and was sampled.
    #[must_use]
    pub fn local_sampled(mut self, sampler: impl Sampler + 'static) -> Self {
        self.local_sampled = Box::new(sampler);
        self
    }

    /// The sampler for spans whose parent is in this process and was not sampled.
    #[must_use]
    pub fn local_not_sampled(mut self, sampler: impl Sampler + 'static) -> Self {
        self.local_not_sampled = Box::new(sampler);
        self
    }
}

impl Sampler for ParentBased {
    fn should_sample(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
        kind: SpanKind,
    ) -> SamplingDecision {
        let delegate = match parent {
            // A deferred parent (B3 ids without a decision) leaves the decision to us.
            None => &self.root,
            Some(p) if p.sampling_state() == SamplingState::Defer => &self.root,
            Some(p) => match (p.is_remote(), p.is_sampled()) {
                (true, true) => &self.remote_sampled,
                (true, false) => &self.remote_not_sampled,
                (false, true) => &self.local_sampled,
                (false, false) => &self.local_not_sampled,
            },
        };
        delegate.should_sample(parent, trace_id, name, kind)
    }
}

/// Samples a fixed fraction of traces, consistently across services.
///
/// The decision compares the trace id's 56 random bits (its rightmost 7 bytes, random by
/// the W3C Level 2 promise) with a threshold: sampled if `randomness >= (1 - ratio) * 2^56`.
/// This is the rule of OpenTelemetry's consistent probability sampling, so every service
/// using it with the same ratio keeps the same traces, and a service with a higher ratio
/// keeps a superset of what a lower one keeps.
///
/// ```
/// use infra_trace_ctx::{Sampler, SpanKind, TraceId, TraceIdRatio};
///
/// let gateway = TraceIdRatio::new(0.1);
/// let payment = TraceIdRatio::new(0.1);
/// let trace = TraceId::random();
/// assert_eq!(
///     gateway.should_sample(None, trace, "checkout", SpanKind::Server),
///     payment.should_sample(None, trace, "charge", SpanKind::Client),
/// );
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TraceIdRatio {
    ratio: f64,
    /// Randomness values at or above this are sampled; `2^56` samples nothing.
    threshold: u64,
}

impl TraceIdRatio {
    const RANGE: u64 = 1 << 56;

    /// Samples `ratio` of all traces; values outside `0.0..=1.0` (and NaN) are clamped.
    pub fn new(ratio: f64) -> Self {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        // (1 - ratio) * 2^56 is in 0..=2^56, which f64 and u64 both represent exactly at the
        // ends; rounding in between moves the ratio by at most 2^-56.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let threshold = ((1.0 - ratio) * Self::RANGE as f64).round() as u64;
        Self {
            ratio,
            threshold: threshold.min(Self::RANGE),
        }
    }

    /// The configured ratio.
    pub const fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Whether `trace_id` falls in the sampled fraction.
    pub const fn samples(&self, trace_id: TraceId) -> bool {
        trace_id.randomness() >= self.threshold
    }
}

impl Sampler for TraceIdRatio {
    fn should_sample(
        &self,
        _: Option<&SpanContext>,
        trace_id: TraceId,
        _: &str,
        _: SpanKind,
    ) -> SamplingDecision {
        SamplingDecision::from_bool(self.samples(trace_id))
    }
}

/// Samples at most `per_second` traces per second, evenly: a generic cell rate algorithm
/// on one atomic, with a burst of one second's worth.
///
/// The state is the theoretical arrival time of the next allowed trace, in clock
/// nanoseconds. A decision moves it forward by one emission interval if that keeps it within
/// one second of now; a compare-and-swap loop makes concurrent decisions count exactly once
/// each. Time comes from an [`infra_common::Clock`], so tests use a manual clock.
///
/// ```
/// use infra_common::ManualClock;
/// use infra_trace_ctx::{RateLimited, Sampler, SpanKind, TraceId};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let sampler = RateLimited::with_clock(2, clock.clone());
/// let decide = || sampler.should_sample(None, TraceId::random(), "op", SpanKind::Server).is_sampled();
/// assert_eq!((decide(), decide(), decide()), (true, true, false));
/// clock.advance(Duration::from_millis(500));
/// assert!(decide());
/// ```
pub struct RateLimited<C = SystemClock> {
    clock: C,
    interval_nanos: u64,
    burst_nanos: u64,
    next_allowed: AtomicU64,
}

impl RateLimited<SystemClock> {
    /// At most `per_second` traces per second, on the system clock.
    pub fn new(per_second: u32) -> Self {
        Self::with_clock(per_second, SystemClock::new())
    }
}

impl<C: Clock> RateLimited<C> {
    const SECOND: u64 = 1_000_000_000;

    /// At most `per_second` traces per second, on `clock`. Zero samples nothing.
    pub fn with_clock(per_second: u32, clock: C) -> Self {
        let interval_nanos = if per_second == 0 {
            u64::MAX
        } else {
            Self::SECOND / u64::from(per_second)
        };
        // Times inside the sampler are clock readings plus one burst window, so "one burst
        // before now" never underflows, even on a clock that starts at zero. Starting at the
        // unshifted reading gives a full burst right away.
        let start = clock.now_nanos();
        Self {
            clock,
            interval_nanos,
            burst_nanos: Self::SECOND,
            next_allowed: AtomicU64::new(start),
        }
    }

    /// Takes one trace from the budget if there is one left.
    pub fn try_acquire(&self) -> bool {
        if self.interval_nanos == u64::MAX {
            return false;
        }
        let now = self.clock.now_nanos().saturating_add(self.burst_nanos);
        // Relaxed suffices: the atomic is the whole state, and the CAS orders competing
        // updates of it; no other memory is published through it.
        let mut current = self.next_allowed.load(Ordering::Relaxed);
        loop {
            let start = current.max(now.saturating_sub(self.burst_nanos));
            let next = start.saturating_add(self.interval_nanos);
            if next > now {
                return false;
            }
            match self.next_allowed.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

impl<C: Clock> Sampler for RateLimited<C> {
    fn should_sample(
        &self,
        _: Option<&SpanContext>,
        _: TraceId,
        _: &str,
        _: SpanKind,
    ) -> SamplingDecision {
        SamplingDecision::from_bool(self.try_acquire())
    }
}

impl<C: Clock> fmt::Debug for RateLimited<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimited")
            .field("interval_nanos", &self.interval_nanos)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::{SpanId, TraceFlags};
    use infra_common::ManualClock;
    use std::time::Duration;

    fn decide(sampler: &dyn Sampler, parent: Option<&SpanContext>) -> bool {
        sampler
            .should_sample(parent, TraceId::random(), "op", SpanKind::Internal)
            .is_sampled()
    }

    #[test]
    fn parent_based_follows_each_parent_case() {
        let sampler = ParentBased::new(AlwaysOff).remote_not_sampled(AlwaysOn);
        let id = |f| SpanContext::remote(TraceId::random(), SpanId::random(), f);
        assert!(!decide(&sampler, None));
        assert!(decide(&sampler, Some(&id(TraceFlags::SAMPLED))));
        assert!(decide(&sampler, Some(&id(TraceFlags::NONE))), "overridden");
        let local = |f| SpanContext::new(TraceId::random(), SpanId::random(), f);
        assert!(decide(&sampler, Some(&local(TraceFlags::SAMPLED))));
        assert!(!decide(&sampler, Some(&local(TraceFlags::NONE))));
        let sampler = ParentBased::new(AlwaysOn)
            .local_sampled(AlwaysOff)
            .local_not_sampled(AlwaysOn);
        assert!(decide(&sampler, None));
        assert!(!decide(&sampler, Some(&local(TraceFlags::SAMPLED))));
        assert!(decide(&sampler, Some(&local(TraceFlags::NONE))));
    }

    #[test]
    fn ratio_uses_the_random_bits_and_nests() {
        let with_randomness =
            |r: u64| TraceId::from_u128((0xdead_u128 << 64) | u128::from(r)).unwrap();
        let half = TraceIdRatio::new(0.5);
        assert!(!half.samples(with_randomness((1 << 55) - 1)));
        assert!(half.samples(with_randomness(1 << 55)));
        // The byte above the random ones does not matter.
        assert!(half.samples(with_randomness((0xff << 56) | (1 << 55))));
        assert!(!TraceIdRatio::new(0.0).samples(with_randomness((1 << 56) - 1)));
        assert!(TraceIdRatio::new(1.0).samples(with_randomness(1)));
        assert_eq!(TraceIdRatio::new(f64::NAN).ratio(), 0.0);
        assert_eq!(TraceIdRatio::new(7.0).ratio(), 1.0);

        let low = TraceIdRatio::new(0.1);
        let mut kept = 0;
        for _ in 0..50_000 {
            let id = TraceId::random();
            if low.samples(id) {
                kept += 1;
                assert!(half.samples(id), "a higher ratio keeps a superset");
            }
        }
        assert!(
            (4_300..5_700).contains(&kept),
            "kept {kept} of 50000 at 10%"
        );
    }

    #[test]
    fn rate_limited_allows_n_per_second() {
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(10));
        let sampler = RateLimited::with_clock(100, clock.clone());
        let burst = (0..150).filter(|_| sampler.try_acquire()).count();
        assert_eq!(burst, 100, "a full second's budget at start");
        clock.advance(Duration::from_millis(100));
        assert_eq!((0..50).filter(|_| sampler.try_acquire()).count(), 10);
        let mut total = 0;
        for _ in 0..1000 {
            clock.advance(Duration::from_millis(1));
            total += (0..5).filter(|_| sampler.try_acquire()).count();
        }
        assert_eq!(total, 100, "steady state is the configured rate");
        let never = RateLimited::with_clock(0, clock);
        assert!(!never.try_acquire());
        assert!(format!("{never:?}").contains("RateLimited"));
    }

    #[test]
    fn rate_limited_at_clock_zero_still_has_its_burst() {
        let sampler = RateLimited::with_clock(3, ManualClock::new());
        assert_eq!((0..10).filter(|_| sampler.try_acquire()).count(), 3);
    }
}
