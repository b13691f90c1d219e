//! Sampling: which traces are recorded.
//!
//! - [`AlwaysOn`], [`AlwaysOff`];
//! - [`ParentBased`]: follow the parent's sampled flag, ask a root sampler for new traces;
//! - [`TraceIdRatio`]: keep a fraction of traces, decided from the trace id's random bits so
//!   every service that uses the same ratio makes the same decision for the same trace;
//! - [`RateLimited`]: at most N new traces per second, for a ceiling on cost.
//!
//! A sampler decides ([`Sampler::should_sample`]) and may also change the new span's
//! `tracestate` ([`Sampler::sample`]): the consistent probability samplers write their
//! threshold (`ot=th:…`, see [`Threshold`](crate::Threshold)) on the spans they keep, and
//! erase a threshold that no longer describes the span.

use std::fmt;

use infra_common::sync::atomic::{AtomicU64, Ordering};
use infra_common::{Clock, SystemClock};

use crate::{SamplingState, SpanContext, SpanKind, Threshold, TraceId, TraceState};

/// Whether a span is recorded and exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SamplingDecision {
    /// Not recorded; the sampled flag is propagated as 0. Costs no allocation.
    Drop,
    /// Recorded (attributes, events and timing are kept, and the span reaches
    /// [`Exporter::record_only`](crate::Exporter::record_only) when it ends) but not
    /// exported, and propagated with the sampled flag clear.
    RecordOnly,
    /// Recorded, exported, and propagated with the sampled flag set.
    RecordAndSample,
}

impl SamplingDecision {
    /// Whether the span is sampled (exported, and propagated with the sampled flag).
    pub const fn is_sampled(self) -> bool {
        matches!(self, Self::RecordAndSample)
    }

    /// Whether the span is recorded ([`SamplingDecision::RecordOnly`] or
    /// [`SamplingDecision::RecordAndSample`]).
    pub const fn is_recording(self) -> bool {
        matches!(self, Self::RecordOnly | Self::RecordAndSample)
    }

    const fn from_bool(sampled: bool) -> Self {
        if sampled {
            Self::RecordAndSample
        } else {
            Self::Drop
        }
    }
}

/// A sampler's decision and the new span's `tracestate`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SamplingResult {
    /// Whether the span is recorded and sampled.
    pub decision: SamplingDecision,
    /// The new span's trace state; `None` keeps the parent's (shared, not copied).
    pub trace_state: Option<TraceState>,
}

impl SamplingResult {
    /// `decision`, with the parent's trace state unchanged.
    pub const fn keep(decision: SamplingDecision) -> Self {
        Self {
            decision,
            trace_state: None,
        }
    }

    /// `decision`, with `trace_state` as the new span's trace state.
    pub const fn with_trace_state(decision: SamplingDecision, trace_state: TraceState) -> Self {
        Self {
            decision,
            trace_state: Some(trace_state),
        }
    }
}

/// Decides whether a new span is sampled. Called once per span start, so it must be cheap
/// and should not allocate when it drops a span.
///
/// Implement [`Sampler::should_sample`]; implement [`Sampler::sample`] too to change the new
/// span's `tracestate`. The default `sample` keeps the parent's state, except that a span
/// it keeps loses the parent's OpenTelemetry threshold (`ot=th:…`): a sampler that knows
/// nothing of probabilities yields spans of unknown probability, and the specification asks
/// such a sampler to erase the threshold.
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

    /// The decision and the new span's trace state. This is what a [`Tracer`](crate::Tracer)
    /// calls.
    fn sample(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
        kind: SpanKind,
    ) -> SamplingResult {
        let decision = self.should_sample(parent, trace_id, name, kind);
        if decision.is_recording() {
            threshold_result(decision, parent, None)
        } else {
            SamplingResult::keep(decision)
        }
    }
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

    fn sample(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
        kind: SpanKind,
    ) -> SamplingResult {
        (**self).sample(parent, trace_id, name, kind)
    }
}

/// `decision` with the parent's trace state carrying `threshold` (`None`: no threshold).
/// Copies the state only when the threshold changes.
fn threshold_result(
    decision: SamplingDecision,
    parent: Option<&SpanContext>,
    threshold: Option<Threshold>,
) -> SamplingResult {
    let state = parent.map(SpanContext::trace_state);
    let current = state.and_then(TraceState::ot_threshold);
    // A `th` that does not parse is no threshold, but it is erased or replaced all the same:
    // passed on, it would travel beside a decision it does not describe.
    let malformed = current.is_none() && state.is_some_and(TraceState::has_ot_threshold_key);
    if current == threshold && !malformed {
        return SamplingResult::keep(decision);
    }
    let mut state = state.cloned().unwrap_or_default();
    if state.set_ot_threshold(threshold).is_err() {
        // The `ot` entry cannot take the new threshold (it would exceed 256 characters): a
        // span must not carry a threshold that does not describe it, so only the parent's
        // `th` goes. The other sub-keys stay, `rv` above all: without it, services further
        // down would decide from the trace id and disagree with this one. Removing a
        // sub-key shortens a valid entry, so it cannot fail.
        state.set_ot_threshold(None).ok();
    }
    SamplingResult::with_trace_state(decision, state)
}

/// The 56-bit randomness the specification lets a sampler rely on: the parent's explicit
/// `rv`, else the trace id's low 56 bits when they are promised random (a new trace, or a
/// parent with the W3C Level 2 random flag). `None` when neither holds.
fn known_randomness(parent: Option<&SpanContext>, trace_id: TraceId) -> Option<u64> {
    match parent {
        None => Some(trace_id.randomness()),
        Some(parent) => parent
            .trace_state()
            .ot_randomness()
            .or_else(|| parent.flags().is_random().then(|| trace_id.randomness())),
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

    /// Keeps everything: a parent's threshold becomes `th:0`. A state without a threshold
    /// gets none (writing `ot=th:0` would add a `tracestate` header to every request; use
    /// `TraceIdRatio::new(1.0)` for that).
    fn sample(
        &self,
        parent: Option<&SpanContext>,
        _: TraceId,
        _: &str,
        _: SpanKind,
    ) -> SamplingResult {
        let decision = SamplingDecision::RecordAndSample;
        // A malformed `th` is replaced too.
        if parent.is_some_and(|p| p.trace_state().has_ot_threshold_key()) {
            threshold_result(decision, parent, Some(Threshold::ALWAYS))
        } else {
            SamplingResult::keep(decision)
        }
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
/// The four parent cases (remote or local, sampled or not) can each get their own sampler.
/// By default a sampled parent is followed with its trace state, threshold included, unless
/// the threshold is inconsistent with the randomness (`rv < th`), in which case it is erased;
/// an unsampled parent is followed with its trace state unchanged (shared, no allocation).
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
            remote_sampled: Box::new(FollowParent),
            remote_not_sampled: Box::new(AlwaysOff),
            local_sampled: Box::new(FollowParent),
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

impl ParentBased {
    fn delegate(&self, parent: Option<&SpanContext>) -> &dyn Sampler {
        match parent {
            // A deferred parent (B3 ids without a decision) leaves the decision to us.
            None => &self.root,
            Some(p) if p.sampling_state() == SamplingState::Defer => &self.root,
            Some(p) => match (p.is_remote(), p.is_sampled()) {
                (true, true) => &self.remote_sampled,
                (true, false) => &self.remote_not_sampled,
                (false, true) => &self.local_sampled,
                (false, false) => &self.local_not_sampled,
            },
        }
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
        self.delegate(parent)
            .should_sample(parent, trace_id, name, kind)
    }

    fn sample(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        name: &str,
        kind: SpanKind,
    ) -> SamplingResult {
        self.delegate(parent).sample(parent, trace_id, name, kind)
    }
}

/// [`ParentBased`]'s default for a sampled parent: keeps the span, and the parent's
/// threshold with it when the threshold is consistent with the known randomness.
#[derive(Clone, Copy, Debug)]
struct FollowParent;

impl Sampler for FollowParent {
    fn should_sample(
        &self,
        _: Option<&SpanContext>,
        _: TraceId,
        _: &str,
        _: SpanKind,
    ) -> SamplingDecision {
        SamplingDecision::RecordAndSample
    }

    fn sample(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        _: &str,
        _: SpanKind,
    ) -> SamplingResult {
        let decision = SamplingDecision::RecordAndSample;
        let Some(threshold) = parent.and_then(|p| p.trace_state().ot_threshold()) else {
            return SamplingResult::keep(decision);
        };
        let consistent = parent.is_some_and(SpanContext::is_sampled)
            && known_randomness(parent, trace_id).is_none_or(|r| threshold.samples(r));
        if consistent {
            SamplingResult::keep(decision)
        } else {
            threshold_result(decision, parent, None)
        }
    }
}

/// Samples a fixed fraction of traces, consistently across services.
///
/// The decision compares 56 random bits with a threshold: sampled if `randomness >=
/// (1 - ratio) * 2^56`, the threshold rounded to 4 significant hex digits
/// ([`Threshold::from_probability`]). This is OpenTelemetry's consistent probability
/// sampling, so every service using it with the same ratio keeps the same traces, and a
/// service with a higher ratio keeps a superset of what a lower one keeps.
///
/// The randomness is the parent's explicit `ot=rv:…` when present, else the trace id's
/// rightmost 7 bytes. A span it keeps carries its threshold as `ot=th:…` in `tracestate`
/// ([`Sampler::sample`]), unless the randomness is not known to be random (a parent without
/// `rv` whose W3C Level 2 random flag is clear): then the decision is still made from the
/// trace id, so services agree, but no threshold is written, since the probability it
/// states would not be promised (the SDK specification instead presumes the trace id random
/// and writes the threshold with a warning). A span it drops keeps the parent's state without its
/// threshold. A ratio of 0 samples nothing and writes nothing.
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
    /// Randomness values at or above this are sampled; `None` samples nothing.
    threshold: Option<Threshold>,
}

impl TraceIdRatio {
    /// Samples `ratio` of all traces; values outside `0.0..=1.0` (and NaN) are clamped.
    pub fn new(ratio: f64) -> Self {
        Self::with_precision(ratio, Threshold::DEFAULT_PRECISION)
    }

    /// [`TraceIdRatio::new`] with the threshold rounded to `precision` significant hex digits
    /// (1..=14, see [`Threshold::from_probability_with_precision`]).
    pub fn with_precision(ratio: f64, precision: u8) -> Self {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        Self {
            ratio,
            threshold: Threshold::from_probability_with_precision(ratio, precision),
        }
    }

    /// The configured ratio.
    pub const fn ratio(&self) -> f64 {
        self.ratio
    }

    /// The rejection threshold, `None` for a ratio of 0 (or below `2^-56`).
    pub const fn threshold(&self) -> Option<Threshold> {
        self.threshold
    }

    /// Whether `trace_id` falls in the sampled fraction, by its own low 56 bits.
    pub const fn samples(&self, trace_id: TraceId) -> bool {
        self.samples_randomness(trace_id.randomness())
    }

    const fn samples_randomness(&self, randomness: u64) -> bool {
        match self.threshold {
            Some(threshold) => threshold.samples(randomness),
            None => false,
        }
    }
}

impl Sampler for TraceIdRatio {
    fn should_sample(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        _: &str,
        _: SpanKind,
    ) -> SamplingDecision {
        let randomness = known_randomness(parent, trace_id).unwrap_or(trace_id.randomness());
        SamplingDecision::from_bool(self.samples_randomness(randomness))
    }

    fn sample(
        &self,
        parent: Option<&SpanContext>,
        trace_id: TraceId,
        _: &str,
        _: SpanKind,
    ) -> SamplingResult {
        let known = known_randomness(parent, trace_id);
        let randomness = known.unwrap_or(trace_id.randomness());
        if !self.samples_randomness(randomness) {
            // A parent's `th` passed on with the sampled flag clear would claim a decision the
            // flag contradicts (the specification calls that inconsistent): it goes. Copies
            // the state only when the parent has one.
            return threshold_result(SamplingDecision::Drop, parent, None);
        }
        // Only a promised randomness makes the threshold a true statement of probability.
        let written = known.and(self.threshold);
        threshold_result(SamplingDecision::RecordAndSample, parent, written)
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

    /// At most `per_second` traces per second, on `clock`. Zero samples nothing; a rate
    /// above 10^9 per second is held to 10^9 (one trace per nanosecond of the clock).
    pub fn with_clock(per_second: u32, clock: C) -> Self {
        let interval_nanos = if per_second == 0 {
            u64::MAX
        } else {
            // At least one: an interval of zero would never move the state forward, and
            // every decision would sample.
            (Self::SECOND / u64::from(per_second)).max(1)
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

    /// Above 10^9 per second the interval would round to zero nanoseconds, which limited
    /// nothing: every decision sampled. The rate is held to one trace per nanosecond instead
    /// (its one-second burst, 10^9 decisions, is too many to count here).
    #[test]
    fn a_rate_above_one_per_nanosecond_is_held_to_one_per_nanosecond() {
        for per_second in [1_000_000_000, 1_000_000_001, u32::MAX] {
            let sampler = RateLimited::with_clock(per_second, ManualClock::new());
            assert_eq!(sampler.interval_nanos, 1, "{per_second} per second");
        }
    }

    #[test]
    fn rate_limited_at_clock_zero_still_has_its_burst() {
        let sampler = RateLimited::with_clock(3, ManualClock::new());
        assert_eq!((0..10).filter(|_| sampler.try_acquire()).count(), 3);
    }
}
