//! The propagated state of one request ([`SpanContext`], [`Context`]) and the current context
//! of a thread, set with scope guards.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use infra_common::sync::thread::thread_local;

use crate::{Baggage, SpanId, TraceFlags, TraceId, TraceState};

/// A caller's sampling decision, as the propagation formats carry it.
///
/// W3C `traceparent` carries two states, its sampled flag set or not ([`Accept`], [`Deny`]).
/// B3 has four: it adds [`Defer`] (ids without a decision: the receiver decides) and
/// [`Debug`] (sample, and ask the backend to keep the trace); Jaeger adds [`Debug`].
/// Each propagator writes back the state it read, so a service in the middle changes none.
///
/// [`Accept`]: SamplingState::Accept
/// [`Deny`]: SamplingState::Deny
/// [`Defer`]: SamplingState::Defer
/// [`Debug`]: SamplingState::Debug
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SamplingState {
    /// Do not sample (B3 `0`, sampled flag clear).
    Deny,
    /// Sample (B3 `1`, sampled flag set).
    Accept,
    /// No decision was made: the receiver decides (B3 ids without a sampling field).
    Defer,
    /// Sample and force the trace to be kept (B3 `d` / `X-B3-Flags: 1`, Jaeger flag `0x02`).
    Debug,
}

impl SamplingState {
    /// Whether the state means "sampled" (accept or debug).
    pub const fn is_sampled(self) -> bool {
        matches!(self, Self::Accept | Self::Debug)
    }
}

/// The identity of one span as it crosses a process boundary: ids, flags, vendor state.
///
/// Always valid: its ids are non-zero by type, so a parser either yields a whole context or
/// none. Cloning one whose trace state is empty does not allocate.
///
/// ```
/// use infra_trace_ctx::{SpanContext, SpanId, TraceFlags, TraceId};
///
/// let cx = SpanContext::new(TraceId::random(), SpanId::random(), TraceFlags::SAMPLED);
/// assert!(cx.is_sampled());
/// assert!(!cx.is_remote());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SpanContext {
    trace_id: TraceId,
    span_id: SpanId,
    flags: TraceFlags,
    trace_state: TraceState,
    /// Kept consistent with the sampled flag: accept/debug iff it is set.
    sampling: SamplingState,
    remote: bool,
}

const fn state_of(flags: TraceFlags) -> SamplingState {
    if flags.is_sampled() {
        SamplingState::Accept
    } else {
        SamplingState::Deny
    }
}

impl SpanContext {
    /// A local context with an empty trace state.
    #[inline]
    pub const fn new(trace_id: TraceId, span_id: SpanId, flags: TraceFlags) -> Self {
        Self::local(trace_id, span_id, flags, TraceState::new(), state_of(flags))
    }

    /// A local context with every part given; `sampling` must agree with the sampled flag.
    pub(crate) const fn local(
        trace_id: TraceId,
        span_id: SpanId,
        flags: TraceFlags,
        trace_state: TraceState,
        sampling: SamplingState,
    ) -> Self {
        debug_assert!(flags.is_sampled() == sampling.is_sampled());
        Self {
            trace_id,
            span_id,
            flags,
            trace_state,
            sampling,
            remote: false,
        }
    }

    /// A context received from another process (what the propagators return).
    pub const fn remote(trace_id: TraceId, span_id: SpanId, flags: TraceFlags) -> Self {
        Self {
            trace_id,
            span_id,
            flags,
            trace_state: TraceState::new(),
            sampling: state_of(flags),
            remote: true,
        }
    }

    /// This context with `trace_state` attached.
    #[must_use]
    pub fn with_trace_state(mut self, trace_state: TraceState) -> Self {
        self.trace_state = trace_state;
        self
    }

    /// This context with the sampling state `sampling`; the sampled flag follows it (set for
    /// accept and debug, clear for deny and defer).
    #[must_use]
    pub const fn with_sampling_state(mut self, sampling: SamplingState) -> Self {
        self.sampling = sampling;
        self.flags = self.flags.with_sampled(sampling.is_sampled());
        self
    }

    /// The sampling state: [`SamplingState::Accept`] or [`SamplingState::Deny`] from the
    /// sampled flag, unless a B3 or Jaeger header said defer or debug.
    pub const fn sampling_state(&self) -> SamplingState {
        self.sampling
    }

    /// The trace this span belongs to.
    pub const fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// This span's id (the `parent-id` of whatever it calls).
    pub const fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The trace flags.
    pub const fn flags(&self) -> TraceFlags {
        self.flags
    }

    /// Whether the sampled flag is set.
    pub const fn is_sampled(&self) -> bool {
        self.flags.is_sampled()
    }

    /// Whether the context was received from another process.
    pub const fn is_remote(&self) -> bool {
        self.remote
    }

    /// The vendor entries carried with the trace.
    pub const fn trace_state(&self) -> &TraceState {
        &self.trace_state
    }

    /// Mutable access to the vendor entries, for a vendor updating its own entry.
    pub fn trace_state_mut(&mut self) -> &mut TraceState {
        &mut self.trace_state
    }
}

impl fmt::Debug for SpanContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanContext")
            .field("trace_id", &format_args!("{}", self.trace_id))
            .field("span_id", &format_args!("{}", self.span_id))
            .field("flags", &format_args!("{:02x}", self.flags.bits()))
            .field("trace_state", &self.trace_state.as_str())
            .field("sampling", &self.sampling)
            .field("remote", &self.remote)
            .finish()
    }
}

/// Everything that travels with a request: the current span's context, if any, and baggage.
///
/// A `Context` is a plain value. Each thread also has a *current* context, which spans pick
/// up as their parent: [`Context::attach`] makes a context current until the returned guard
/// is dropped.
///
/// ```
/// use infra_trace_ctx::{Context, SpanContext, SpanId, TraceFlags, TraceId};
///
/// let cx = Context::new().with_span(SpanContext::new(
///     TraceId::random(),
///     SpanId::random(),
///     TraceFlags::SAMPLED,
/// ));
/// let trace_id = cx.span().map(SpanContext::trace_id);
/// {
///     let _guard = cx.attach();
///     assert_eq!(Context::current().span().map(SpanContext::trace_id), trace_id);
/// }
/// assert!(Context::current().span().is_none());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    span: Option<SpanContext>,
    baggage: Baggage,
    sampling: Option<SamplingState>,
}

thread_local! {
    static CURRENT: RefCell<Current> = const {
        RefCell::new(Current {
            context: Context::new(),
            attached: Vec::new(),
        })
    };
}

/// A thread's current context, and what each attachment still alive replaced.
struct Current {
    context: Context,
    /// One entry per [`Context::attach`] not yet undone, oldest first.
    attached: Vec<Attachment>,
}

struct Attachment {
    /// The context that was current before this attachment.
    previous: Context,
    /// Whether its guard is still alive.
    live: bool,
}

impl Current {
    /// Undoes the attachment at `depth`. The newest live attachment's context stays current:
    /// a guard dropped before a newer one only marks its entry, which is undone when every
    /// newer one is.
    fn detach(&mut self, depth: usize) {
        if let Some(attachment) = self.attached.get_mut(depth) {
            attachment.live = false;
        }
        while self.attached.last().is_some_and(|top| !top.live) {
            if let Some(top) = self.attached.pop() {
                self.context = top.previous;
            }
        }
    }
}

impl Context {
    /// An empty context: no span, no baggage.
    pub const fn new() -> Self {
        Self {
            span: None,
            baggage: Baggage::new(),
            sampling: None,
        }
    }

    /// This context with `span` as its span.
    #[must_use]
    pub fn with_span(mut self, span: SpanContext) -> Self {
        self.span = Some(span);
        self
    }

    /// This context with `baggage`.
    #[must_use]
    pub fn with_baggage(mut self, baggage: Baggage) -> Self {
        self.baggage = baggage;
        self
    }

    /// The span context, if a span is active or one was extracted.
    pub const fn span(&self) -> Option<&SpanContext> {
        self.span.as_ref()
    }

    /// Sets or clears the span context.
    #[inline]
    pub fn set_span(&mut self, span: Option<SpanContext>) {
        self.span = span;
    }

    /// A sampling decision the caller sent without a span context, such as B3's `b3: 0`
    /// (which means "do not sample" and carries no ids); `None` if it sent none. A span
    /// started with [`SpanBuilder::remote`](crate::SpanBuilder::remote) on this context, or
    /// while it is the current context, hands it to the tracer's sampler as a remote
    /// parent's decision (the default [`ParentBased`](crate::ParentBased) follows it); a
    /// context with a span uses the span's own state.
    pub const fn sampling_state(&self) -> Option<SamplingState> {
        self.sampling
    }

    /// Sets or clears the sampling decision received without a span context.
    #[inline]
    pub fn set_sampling_state(&mut self, sampling: Option<SamplingState>) {
        self.sampling = sampling;
    }

    /// The baggage.
    pub const fn baggage(&self) -> &Baggage {
        &self.baggage
    }

    /// Mutable access to the baggage.
    #[inline]
    pub fn baggage_mut(&mut self) -> &mut Baggage {
        &mut self.baggage
    }

    /// A copy of the calling thread's current context.
    pub fn current() -> Self {
        Self::map_current(Clone::clone)
    }

    /// Runs `f` on the calling thread's current context without copying it.
    #[inline]
    pub fn map_current<T>(f: impl FnOnce(&Self) -> T) -> T {
        CURRENT.with(|current| f(&current.borrow().context))
    }

    /// Makes this context the thread's current one until the guard is dropped.
    ///
    /// The current context is always the one of the newest attachment whose guard is still
    /// alive (or the thread's base context when none is). Guards dropped in reverse order of
    /// creation, as scoping drops them, each restore the context before them; a guard dropped
    /// while a newer one lives changes nothing until the newer one goes too, so dropping
    /// guards out of order never leaves a stale context current. A guard that is leaked
    /// (`mem::forget`) keeps its context attached until the thread ends.
    ///
    /// ```
    /// use infra_trace_ctx::{Baggage, Context};
    ///
    /// let tagged = |tenant: &str| {
    ///     let mut baggage = Baggage::new();
    ///     baggage.insert("tenant", tenant).unwrap();
    ///     Context::new().with_baggage(baggage)
    /// };
    /// let tenant = || Context::current().baggage().get("tenant").map(str::to_owned);
    ///
    /// let outer = tagged("outer").attach();
    /// let inner = tagged("inner").attach();
    /// drop(outer); // out of order: the inner context stays current
    /// assert_eq!(tenant().as_deref(), Some("inner"));
    /// drop(inner); // both gone: back to the thread's base context
    /// assert_eq!(tenant(), None);
    /// ```
    pub fn attach(self) -> ContextGuard {
        let depth = CURRENT.with(|current| {
            let mut current = current.borrow_mut();
            let previous = std::mem::replace(&mut current.context, self);
            current.attached.push(Attachment {
                previous,
                live: true,
            });
            current.attached.len() - 1
        });
        ContextGuard {
            depth,
            _not_send: PhantomData,
        }
    }
}

/// Replaces the thread's current context, returning the old one.
#[cfg(feature = "tokio")]
pub(crate) fn swap_current(cx: Context) -> Context {
    CURRENT.with(|current| std::mem::replace(&mut current.borrow_mut().context, cx))
}

/// Restores the previous current context when dropped; returned by [`Context::attach`].
///
/// Not `Send`: the context it restores belongs to the thread that attached it.
#[must_use = "the context is detached as soon as the guard is dropped"]
pub struct ContextGuard {
    /// Its entry among the thread's attachments.
    depth: usize,
    _not_send: PhantomData<*const ()>,
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        // During thread teardown the thread-local may be gone; nothing to restore then.
        let _ = CURRENT.try_with(|current| current.borrow_mut().detach(self.depth));
    }
}

impl fmt::Debug for ContextGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextGuard").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    fn span() -> SpanContext {
        SpanContext::new(TraceId::random(), SpanId::random(), TraceFlags::SAMPLED)
    }

    #[test]
    fn guards_nest_and_restore() {
        let outer = span();
        let inner = span();
        assert!(Context::current().span().is_none());
        let g1 = Context::new().with_span(outer.clone()).attach();
        {
            let _g2 = Context::new().with_span(inner.clone()).attach();
            assert_eq!(Context::current().span(), Some(&inner));
        }
        assert_eq!(Context::current().span(), Some(&outer));
        drop(g1);
        assert!(Context::current().span().is_none());
    }

    #[test]
    fn guards_dropped_out_of_order_never_leave_a_stale_context_current() {
        let [a, b, c] = [span(), span(), span()];
        let ga = Context::new().with_span(a.clone()).attach();
        let gb = Context::new().with_span(b.clone()).attach();
        let gc = Context::new().with_span(c.clone()).attach();
        // The middle guard first: the newest live attachment (c) stays current.
        drop(gb);
        assert_eq!(Context::current().span(), Some(&c));
        // c goes: b is already gone, so a, the newest live one, is current.
        drop(gc);
        assert_eq!(Context::current().span(), Some(&a));
        drop(ga);
        assert!(Context::current().span().is_none());

        // The oldest first: nothing changes until the newer one goes too.
        let ga = Context::new().with_span(a.clone()).attach();
        let gb = Context::new().with_span(b.clone()).attach();
        drop(ga);
        assert_eq!(Context::current().span(), Some(&b));
        drop(gb);
        assert!(Context::current().span().is_none());
    }

    proptest::proptest! {
        /// Any order of attaches and drops: the current span is the newest attached one whose
        /// guard is alive, per a model that only keeps the list of live attachments.
        #[test]
        fn the_current_context_is_the_newest_live_attachment(
            ops in proptest::collection::vec((proptest::bool::ANY, 0usize..8), 1..40),
        ) {
            let mut guards: Vec<(ContextGuard, SpanContext)> = Vec::new();
            for (attach, pick) in ops {
                if attach || guards.is_empty() {
                    let s = span();
                    guards.push((Context::new().with_span(s.clone()).attach(), s));
                } else {
                    let at = pick % guards.len();
                    drop(guards.remove(at));
                }
                let expected = guards.last().map(|(_, s)| s.clone());
                proptest::prop_assert_eq!(Context::current().span().cloned(), expected);
            }
            while let Some(guard) = guards.pop() {
                drop(guard);
            }
            proptest::prop_assert!(Context::current().span().is_none());
        }
    }

    #[test]
    fn current_context_is_per_thread() {
        let _guard = Context::new().with_span(span()).attach();
        let seen = infra_common::sync::thread::spawn(|| Context::current().span().is_some())
            .join()
            .unwrap();
        assert!(!seen);
        assert!(Context::current().span().is_some());
    }

    #[test]
    fn debug_shows_hex_ids() {
        let cx = SpanContext::remote(
            TraceId::from_u128(1).unwrap(),
            SpanId::from_u64(2).unwrap(),
            TraceFlags::SAMPLED,
        );
        let text = format!("{cx:?}");
        assert!(text.contains("00000000000000000000000000000001"), "{text}");
        assert!(text.contains("remote: true"), "{text}");
    }
}
