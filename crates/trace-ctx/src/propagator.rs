//! The [`Propagator`] trait and [`CompositePropagator`], which speaks several formats at once.

use std::fmt;

use crate::carrier::{Extractor, Injector};
use crate::{Baggage, Context, SamplingState, SpanContext};

/// One propagation format: reads a [`Context`] from a carrier and writes one into it.
///
/// The one trait in the crate meant for swapping implementations: W3C Trace Context, W3C
/// Baggage, B3 and Jaeger implement it, and [`CompositePropagator`] combines them.
pub trait Propagator: Send + Sync + fmt::Debug {
    /// The span context carried by `carrier`, or `None` if it holds none or an invalid one.
    /// Never a partially read context.
    fn extract_span(&self, carrier: &dyn Extractor) -> Option<SpanContext> {
        let _ = carrier;
        None
    }

    /// A sampling decision `carrier` holds without a span context (B3's `b3: 0`), if any.
    /// Formats that cannot express one return `None`.
    fn extract_sampling_state(&self, carrier: &dyn Extractor) -> Option<SamplingState> {
        let _ = carrier;
        None
    }

    /// Adds the baggage carried by `carrier` to `baggage`. Formats without baggage do
    /// nothing; an invalid header adds nothing.
    fn extract_baggage(&self, carrier: &dyn Extractor, baggage: &mut Baggage) {
        let _ = (carrier, baggage);
    }

    /// Writes `cx` into `carrier` in this format. A context without a span writes no span
    /// fields.
    fn inject(&self, cx: &Context, carrier: &mut dyn Injector);

    /// The field names this format reads and writes (prefixes end in `-`).
    fn fields(&self) -> &[&'static str];

    /// The span context and baggage carried by `carrier`; without a span context, the
    /// sampling decision sent alone, if any ([`Context::sampling_state`]).
    fn extract(&self, carrier: &dyn Extractor) -> Context {
        let mut cx = Context::new();
        let span = self.extract_span(carrier);
        if span.is_none() {
            cx.set_sampling_state(self.extract_sampling_state(carrier));
        }
        cx.set_span(span);
        self.extract_baggage(carrier, cx.baggage_mut());
        cx
    }
}

/// Several formats in a priority order: extraction takes the span context from the first
/// format that finds a valid one and merges the baggage of all; injection writes every format
/// (B3's two forms count as one: list
/// [`B3Propagator::single_and_multi_header`](crate::B3Propagator::single_and_multi_header) to send
/// both).
///
/// ```
/// use infra_trace_ctx::{
///     B3Propagator, BaggagePropagator, CompositePropagator, Propagator, TraceContextPropagator,
/// };
///
/// let propagator = CompositePropagator::new(vec![
///     Box::new(TraceContextPropagator),
///     Box::new(B3Propagator::single_header()),
///     Box::new(BaggagePropagator),
/// ]);
/// // A service behind a B3-only proxy still joins the trace.
/// let carrier = vec![("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")];
/// let cx = propagator.extract(&carrier);
/// assert!(cx.span().is_some_and(|span| span.is_sampled()));
///
/// let mut out: Vec<(String, String)> = Vec::new();
/// propagator.inject(&cx, &mut out);
/// assert!(out.iter().any(|(name, _)| name == "traceparent"));
/// assert!(out.iter().any(|(name, _)| name == "b3"));
/// ```
#[derive(Debug, Default)]
pub struct CompositePropagator {
    formats: Vec<Box<dyn Propagator>>,
    fields: Vec<&'static str>,
}

impl CompositePropagator {
    /// Formats in priority order (the first one's span context wins on extraction).
    pub fn new(formats: Vec<Box<dyn Propagator>>) -> Self {
        let mut fields: Vec<&'static str> = Vec::new();
        for field in formats.iter().flat_map(|f| f.fields().iter().copied()) {
            if !fields.contains(&field) {
                fields.push(field);
            }
        }
        Self { formats, fields }
    }

    /// The configured formats, in priority order.
    pub fn formats(&self) -> &[Box<dyn Propagator>] {
        &self.formats
    }
}

impl Propagator for CompositePropagator {
    fn extract_span(&self, carrier: &dyn Extractor) -> Option<SpanContext> {
        self.formats.iter().find_map(|f| f.extract_span(carrier))
    }

    fn extract_sampling_state(&self, carrier: &dyn Extractor) -> Option<SamplingState> {
        self.formats
            .iter()
            .find_map(|f| f.extract_sampling_state(carrier))
    }

    fn extract_baggage(&self, carrier: &dyn Extractor, baggage: &mut Baggage) {
        for format in &self.formats {
            format.extract_baggage(carrier, baggage);
        }
    }

    fn inject(&self, cx: &Context, carrier: &mut dyn Injector) {
        for format in &self.formats {
            format.inject(cx, carrier);
        }
    }

    /// The fields of every format, in priority order, each once.
    fn fields(&self) -> &[&'static str] {
        &self.fields
    }
}

/// A shared propagator is a propagator, so one that is not `Clone` (such as
/// [`CompositePropagator`]) can sit behind layers that copy theirs per service.
// Users share propagators in `std`'s `Arc`; this impl holds no shared state of its own.
#[allow(clippy::disallowed_types)]
impl<P: Propagator + ?Sized> Propagator for std::sync::Arc<P> {
    fn extract_span(&self, carrier: &dyn Extractor) -> Option<SpanContext> {
        (**self).extract_span(carrier)
    }

    fn extract_sampling_state(&self, carrier: &dyn Extractor) -> Option<SamplingState> {
        (**self).extract_sampling_state(carrier)
    }

    fn extract_baggage(&self, carrier: &dyn Extractor, baggage: &mut Baggage) {
        (**self).extract_baggage(carrier, baggage);
    }

    fn inject(&self, cx: &Context, carrier: &mut dyn Injector) {
        (**self).inject(cx, carrier);
    }

    fn fields(&self) -> &[&'static str] {
        (**self).fields()
    }

    fn extract(&self, carrier: &dyn Extractor) -> Context {
        (**self).extract(carrier)
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::{
        B3Propagator, BaggagePropagator, JaegerPropagator, SpanId, TraceContextPropagator,
        TraceFlags, TraceId,
    };
    use std::collections::HashMap;

    fn composite() -> CompositePropagator {
        CompositePropagator::new(vec![
            Box::new(TraceContextPropagator),
            Box::new(B3Propagator::multi_header()),
            Box::new(JaegerPropagator),
            Box::new(BaggagePropagator),
        ])
    }

    #[test]
    fn first_valid_format_wins() {
        let carrier = vec![
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("uber-trace-id", "1:2:0:1"),
        ];
        let cx = composite().extract(&carrier);
        assert_eq!(
            cx.span().unwrap().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );

        // An invalid traceparent falls through to the next format.
        let carrier = vec![("traceparent", "00-zz"), ("uber-trace-id", "1:2:0:1")];
        let cx = composite().extract(&carrier);
        assert_eq!(cx.span().unwrap().trace_id().to_u128(), 1);
    }

    #[test]
    fn baggage_of_every_format_is_merged() {
        let carrier = vec![("baggage", "a=1"), ("uberctx-b", "2")];
        let cx = composite().extract(&carrier);
        assert_eq!(cx.baggage().get("a"), Some("1"));
        assert_eq!(cx.baggage().get("b"), Some("2"));
        assert!(cx.span().is_none());
    }

    /// (propagator, headers of a first request, header names left after injecting a second
    /// context without trace state or baggage into the same map).
    type ReuseRow = (
        Box<dyn Propagator>,
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    );

    fn reuse_rows() -> Vec<ReuseRow> {
        vec![
            (
                Box::new(TraceContextPropagator),
                &[
                    (
                        "traceparent",
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    ),
                    ("tracestate", "rojo=1"),
                ],
                &["traceparent"],
            ),
            (
                Box::new(BaggagePropagator),
                &[("baggage", "user=alice")],
                &[],
            ),
            (
                Box::new(JaegerPropagator),
                &[("uber-trace-id", "1:2:0:1"), ("uberctx-tenant", "acme")],
                &["uber-trace-id"],
            ),
            (
                Box::new(B3Propagator::multi_header()),
                &[
                    ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
                    ("x-b3-spanid", "e457b5a2e4d86bd1"),
                    ("x-b3-flags", "1"),
                ],
                &["x-b3-sampled", "x-b3-spanid", "x-b3-traceid"],
            ),
        ]
    }

    /// Injects into one reused carrier each row's extracted context, then a context with a
    /// fresh span, then an empty one: each leaves only what it wrote beside `base`, the
    /// fields the carrier held before (`fields` lists a carrier's names, one per value).
    fn check_reuse<C: Injector + std::fmt::Debug>(
        mut carrier: C,
        base: &[&str],
        fields: impl Fn(&C) -> Vec<String>,
    ) {
        let sorted = |names: &[&str]| {
            let mut names: Vec<String> = names.iter().map(|&name| name.to_owned()).collect();
            names.extend(base.iter().map(|&name| name.to_owned()));
            names.sort_unstable();
            names
        };
        for (propagator, first, left) in reuse_rows() {
            propagator.inject(&propagator.extract(&first.to_vec()), &mut carrier);
            assert_eq!(
                fields(&carrier).len(),
                first.len() + base.len(),
                "{propagator:?} wrote {carrier:?}"
            );

            let second = Context::new().with_span(SpanContext::new(
                TraceId::random(),
                SpanId::random(),
                TraceFlags::SAMPLED,
            ));
            propagator.inject(&second, &mut carrier);
            let mut names = fields(&carrier);
            names.sort_unstable();
            assert_eq!(names, sorted(left), "{propagator:?}");

            propagator.inject(&Context::new(), &mut carrier);
            assert_eq!(
                fields(&carrier),
                sorted(&[]),
                "{propagator:?} left {carrier:?}"
            );
        }
    }

    #[test]
    fn a_reused_carrier_keeps_nothing_of_the_previous_request() {
        check_reuse(HashMap::<String, String>::new(), &[], |carrier| {
            carrier.keys().cloned().collect()
        });
    }

    /// The same with a `HeaderMap`, whose carrier removes prefixed fields and stores values
    /// its own way; and a Jaeger context with baggage keeps the `uberctx-*` field it writes
    /// again and loses the others.
    #[cfg(feature = "http")]
    #[test]
    fn a_reused_header_map_keeps_nothing_of_the_previous_request() {
        let mut carrier = http::HeaderMap::new();
        carrier.insert("host", http::HeaderValue::from_static("cart.internal"));
        check_reuse(carrier, &["host"], |carrier| {
            carrier
                .iter()
                .map(|(name, _)| name.as_str().to_owned())
                .collect()
        });

        let mut carrier = http::HeaderMap::new();
        let first = vec![
            ("uber-trace-id", "1:2:0:1"),
            ("uberctx-tenant", "acme"),
            ("uberctx-user", "alice"),
        ];
        JaegerPropagator.inject(&JaegerPropagator.extract(&first), &mut carrier);
        let mut baggage = Baggage::new();
        baggage.insert("tenant", "globex").unwrap();
        JaegerPropagator.inject(&Context::new().with_baggage(baggage), &mut carrier);
        assert_eq!(carrier.len(), 1, "{carrier:?}");
        assert_eq!(carrier["uberctx-tenant"], "globex");
    }

    proptest::proptest! {
        /// Whatever baggage and trace state a context holds, every format writes into a
        /// `HeaderMap` (which stores the values unchecked) what it writes into a carrier of
        /// strings, and each value is one `http` itself accepts.
        #[cfg(feature = "http")]
        #[test]
        fn every_format_writes_valid_header_values(
            members in proptest::collection::vec(
                ("[a-z0-9!#$&'*+.^_`|~-]{1,8}", proptest::prelude::any::<String>()), 0..6),
            state in proptest::collection::vec(("[a-z][a-z0-9_*/-]{0,6}", "[ -+--<>-~]{0,8}[!-+--<>-~]"), 0..4),
            flags in 0u8..=3,
        ) {
            let mut baggage = Baggage::new();
            for (key, value) in &members {
                let _ = baggage.insert(key, value);
            }
            let mut trace_state = crate::TraceState::new();
            for (key, value) in &state {
                let _ = trace_state.insert(key, value);
            }
            let span = SpanContext::new(TraceId::random(), SpanId::random(), TraceFlags::from_wire(flags))
                .with_trace_state(trace_state);
            let encoded = baggage.to_string();
            let cx = Context::new().with_span(span).with_baggage(baggage);
            let propagator = CompositePropagator::new(vec![
                Box::new(TraceContextPropagator),
                Box::new(B3Propagator::single_and_multi_header()),
                Box::new(JaegerPropagator),
                Box::new(BaggagePropagator),
            ]);
            let mut strings: Vec<(String, String)> = Vec::new();
            propagator.inject(&cx, &mut strings);
            let mut headers = http::HeaderMap::new();
            propagator.inject(&cx, &mut headers);
            proptest::prop_assert_eq!(headers.len(), strings.len());
            for (name, value) in &strings {
                proptest::prop_assert!(http::HeaderValue::from_str(value).is_ok(), "{name}: {value:?}");
                proptest::prop_assert_eq!(headers.get(name.as_str()).map(http::HeaderValue::as_bytes), Some(value.as_bytes()));
            }
            // The header written is the baggage's `Display` form.
            let written = strings.iter().find(|(name, _)| name == "baggage").map(|(_, value)| value.as_str());
            proptest::prop_assert_eq!(written.unwrap_or_default(), encoded);
        }
    }

    #[test]
    fn inject_writes_every_format() {
        let carrier = vec![("uber-trace-id", "abc:def:0:3")];
        let cx = composite().extract(&carrier);
        let mut out: Vec<(String, String)> = Vec::new();
        composite().inject(&cx, &mut out);
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "traceparent",
                "x-b3-traceid",
                "x-b3-spanid",
                "x-b3-flags",
                "uber-trace-id"
            ]
        );
        assert_eq!(composite().formats().len(), 4);
    }

    #[test]
    fn a_composite_lists_the_fields_of_every_format_once() {
        let twice = CompositePropagator::new(vec![
            Box::new(composite()),
            Box::new(TraceContextPropagator),
        ]);
        let mut expected: Vec<&str> = Vec::new();
        for format in [
            &TraceContextPropagator as &dyn Propagator,
            &B3Propagator::multi_header(),
            &JaegerPropagator,
            &BaggagePropagator,
        ] {
            for field in format.fields() {
                if !expected.contains(field) {
                    expected.push(field);
                }
            }
        }
        assert!(expected.contains(&"traceparent") && expected.contains(&"baggage"));
        assert_eq!(composite().fields(), expected);
        assert_eq!(twice.fields(), expected);
    }

    #[test]
    #[allow(clippy::disallowed_types)] // the impl under test is for users' `std` `Arc`s
    fn a_shared_propagator_behaves_as_the_one_it_shares() {
        let shared = std::sync::Arc::new(composite());
        let carrier = vec![("uber-trace-id", "abc:def:0:3"), ("baggage", "a=1")];
        let cx = shared.extract(&carrier);
        assert_eq!(cx, composite().extract(&carrier));
        let mut via_arc: Vec<(String, String)> = Vec::new();
        let mut direct: Vec<(String, String)> = Vec::new();
        shared.inject(&cx, &mut via_arc);
        composite().inject(&cx, &mut direct);
        assert_eq!(via_arc, direct);
        assert_eq!(shared.fields(), composite().fields());
    }

    /// B3's two forms each remove the other's fields (a reused carrier keeps nothing of an
    /// earlier request), so a composite listing both keeps only the last one's, as its docs
    /// say; `B3Propagator::single_and_multi_header` sends both, and what it writes reads
    /// back to the same context through either form alone.
    #[test]
    fn both_b3_forms_are_sent_by_the_propagator_made_for_it_and_read_back_alone() {
        let header = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";
        let names = |propagator: &dyn Propagator| {
            let mut out: Vec<(String, String)> = Vec::new();
            propagator.inject(&propagator.extract(&vec![("b3", header)]), &mut out);
            out
        };
        let listed = |first: B3Propagator, second: B3Propagator| {
            let composite = CompositePropagator::new(vec![Box::new(first), Box::new(second)]);
            let out = names(&composite);
            let single = out.iter().any(|(name, _)| name == "b3");
            let multi = out.iter().any(|(name, _)| name == "x-b3-traceid");
            (single, multi)
        };
        // Two one-form propagators: the one listed last wins.
        let (single, multi) = (B3Propagator::single_header(), B3Propagator::multi_header());
        assert_eq!(listed(multi, single), (true, false));
        assert_eq!(listed(single, multi), (false, true));

        let both = B3Propagator::single_and_multi_header();
        let out = names(&both);
        let (single_form, multi_form): (Vec<_>, Vec<_>) =
            out.into_iter().partition(|(name, _)| name == "b3");
        assert_eq!(single_form.len(), 1);
        assert_eq!(multi_form.len(), 3, "{multi_form:?}");
        let cx = both.extract(&vec![("b3", header)]);
        assert!(cx.span().is_some());
        assert_eq!(single.extract(&single_form).span(), cx.span());
        assert_eq!(multi.extract(&multi_form).span(), cx.span());
    }
}
