//! OpenTelemetry consistent probability sampling through `tracestate` (`ot=th:…`, `rv:…`):
//! the specification's worked examples, a reference model of the threshold encoding, and the
//! samplers' reading and writing of the state.
#![cfg(not(infra_loom))]

use std::collections::HashMap;

use infra_trace_ctx::{
    AlwaysOn, MemoryExporter, ParentBased, Propagator, RateLimited, Sampler, SamplingDecision,
    SpanContext, SpanId, SpanKind, Threshold, TraceContextPropagator, TraceFlags, TraceId,
    TraceIdRatio, TraceState, Tracer,
};
use proptest::prelude::*;

/// The specification's table of 1-in-N thresholds ("Converting floating-point probability to
/// threshold value"), at precision 3, 4 and 5, copied as published.
const SPEC_TABLE: &[(u64, [&str; 3])] = &[
    (1, ["0", "0", "0"]),
    (2, ["8", "8", "8"]),
    (3, ["aab", "aaab", "aaaab"]),
    (4, ["c", "c", "c"]),
    (5, ["ccd", "cccd", "ccccd"]),
    (8, ["e", "e", "e"]),
    (10, ["e66", "e666", "e6666"]),
    (16, ["f", "f", "f"]),
    (100, ["fd71", "fd70a", "fd70a4"]),
    (1000, ["ffbe7", "ffbe77", "ffbe76d"]),
    (10000, ["fff972", "fff9724", "fff97247"]),
    (100_000, ["ffff584", "ffff583a", "ffff583a5"]),
    (1_000_000, ["ffffef4", "ffffef39", "ffffef391"]),
];

#[test]
fn the_specification_table_of_thresholds() {
    for (n, expected) in SPEC_TABLE {
        let probability = one_in(*n);
        for (precision, th) in [3u8, 4, 5].into_iter().zip(expected) {
            let threshold = Threshold::from_probability_with_precision(probability, precision)
                .unwrap_or_else(|| panic!("1/{n} has a threshold"));
            assert_eq!(threshold.to_string(), *th, "1/{n} at precision {precision}");
            assert_eq!(Threshold::parse(th).unwrap(), threshold, "{th} parses back");
        }
        // The default precision is the table's middle column.
        let default = TraceIdRatio::new(one_in(*n)).threshold().unwrap();
        assert_eq!(default.to_string(), expected[1]);
    }
}

#[test]
fn the_specification_worked_values() {
    // 1 %, with 5 digits: (1 - 0.01) * 2^56 ≈ 0xfd70a400000000, written `fd70a4`.
    let one_percent = Threshold::from_probability_with_precision(0.01, 5).unwrap();
    assert_eq!(one_percent.bits(), 0xfd_70a4_0000_0000);
    // 100 % is `th:0`; 50 % is `th:8`.
    assert_eq!(Threshold::parse("0").unwrap().probability(), 1.0);
    assert_eq!(Threshold::parse("8").unwrap().probability(), 0.5);
    // Exact adjusted counts from the table: 1/3 at precision 4 stands for 3.00004577706569.
    let third = Threshold::parse("aaab").unwrap();
    assert!((third.adjusted_count() - 3.000_045_777_065_69).abs() < 1e-12);
    assert!((third.probability() - 0.333_328_247_070_312_5).abs() < 1e-15);
}

/// An independent reading of the specification's rounding, in exact integer arithmetic:
/// the threshold (as its 14 hex digits' value) for `probability` at `precision`.
///
/// The specification: the threshold is 2^56 minus `probability * 2^56` rounded to an integer;
/// it is then rounded (halves up) to `precision` hex digits, plus one digit for every power
/// of 16 the probability is below, or for every power of 16 one minus the probability is
/// below (whichever is more), at most 14 digits.
fn reference_threshold(probability: f64, precision: u32) -> u64 {
    if probability >= 1.0 {
        return 0;
    }
    // Every probability from 2^-56 to 1 is a multiple of 2^-108 (52 fraction bits below
    // its leading bit), so `numerator / 2^108` is exact.
    const ONE: u128 = 1 << 108;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let numerator = (probability * 2f64.powi(108)) as u128;
    assert_eq!(numerator as f64, probability * 2f64.powi(108), "exact");
    let powers_of_16_below = |value: u128| (1..=14u32).filter(|k| value < ONE >> (4 * k)).count();
    let extra = powers_of_16_below(numerator).max(powers_of_16_below(ONE - numerator));
    let digits = (precision as usize + extra).min(14);
    let kept = (numerator + (1 << 51)) >> 52;
    let exact = (1u128 << 56) - kept;
    let unit = 16u128.pow(14 - digits as u32);
    let rounded = (exact + unit / 2) / unit * unit;
    u64::try_from(rounded).unwrap()
}

/// `reference_threshold` as a `th` value: 14 hex digits, trailing zeros removed.
fn reference_th(probability: f64, precision: u32) -> String {
    let text = format!("{:014x}", reference_threshold(probability, precision));
    let trimmed = text.trim_end_matches('0');
    if trimmed.is_empty() { "0" } else { trimmed }.to_owned()
}

#[allow(clippy::cast_precision_loss)]
fn one_in(n: u64) -> f64 {
    1.0 / n as f64
}

#[test]
fn the_reference_model_reproduces_the_table() {
    for (n, expected) in SPEC_TABLE {
        for (precision, th) in [3, 4, 5].into_iter().zip(expected) {
            assert_eq!(
                reference_th(one_in(*n), precision),
                *th,
                "1/{n} at {precision}"
            );
        }
    }
}

/// Probabilities near 1 and below 16^-12 keep extra digits: without them 99.9999 % would
/// be written as `th:0`, a claim of 100 %.
#[test]
fn probabilities_near_one_and_tiny_ones_keep_their_digits() {
    for (probability, th) in [
        (0.99, "028f6"),
        (0.999, "004189"),
        (0.9999, "00068dc"),
        (0.999_999, "000010c7"),
        (1e-15, "ffffffffffffb8"),
    ] {
        let threshold = Threshold::from_probability(probability).unwrap();
        assert_eq!(threshold.to_string(), th, "p = {probability}");
        assert_eq!(reference_th(probability, 4), th, "model, p = {probability}");
        assert!(threshold > Threshold::ALWAYS);
    }
    // The largest probability below 1 is still not 100 %.
    let just_below_one = 1.0 - f64::EPSILON / 2.0;
    assert_eq!(
        Threshold::from_probability(just_below_one).unwrap().bits(),
        8
    );
}

/// A trace id whose low 56 bits are `randomness`.
fn trace_with_randomness(randomness: u64) -> TraceId {
    TraceId::from_u128((0x5eed_u128 << 64) | u128::from(randomness)).unwrap()
}

fn sample(
    sampler: &dyn Sampler,
    parent: Option<&SpanContext>,
    trace_id: TraceId,
) -> (SamplingDecision, Option<TraceState>) {
    let result = sampler.sample(parent, trace_id, "op", SpanKind::Server);
    (result.decision, result.trace_state)
}

/// Probabilities spread over the whole range: 1/N, tiny ones (down to 2^-56), ones within
/// 2^-53 of 1, and any in between.
fn probabilities() -> impl Strategy<Value = f64> {
    (0u8..4, 1u64..=4096, 0.0..1.0f64).prop_map(|(kind, n, unit)| match kind {
        0 => one_in(n),
        1 => (-56.0 + 55.0 * unit).exp2(),
        2 => 1.0 - (-53.0 + 52.0 * unit).exp2(),
        _ => unit.max(2f64.powi(-56)),
    })
}

proptest! {
    #[test]
    fn thresholds_match_the_reference(probability in probabilities(), precision in 1u8..=14) {
        let threshold = Threshold::from_probability_with_precision(probability, precision).unwrap();
        prop_assert_eq!(threshold.bits(), reference_threshold(probability, u32::from(precision)));
    }

    #[test]
    fn root_decisions_follow_rv_at_or_above_th(
        probability in probabilities(),
        randomness in 0u64..(1 << 56),
    ) {
        let sampler = TraceIdRatio::new(probability);
        let reference = reference_th(probability, 4);
        let threshold = reference_threshold(probability, 4);
        let (decision, state) = sample(&sampler, None, trace_with_randomness(randomness));
        prop_assert_eq!(decision.is_sampled(), randomness >= threshold);
        let expected = decision.is_sampled().then(|| format!("ot=th:{reference}"));
        prop_assert_eq!(state.map(|s| s.as_str().to_owned()), expected);
    }
}

#[test]
fn explicit_randomness_replaces_the_trace_id_bits() {
    // The specification's example: rv 6e6d1a75832a2f is kept at rejection thresholds
    // 0x6e6d1a75832a2f through 0, i.e. probabilities from 1 - 0x6e6d1a75832a2f / 2^56
    // (about 56.9 %; the text's "41.1 %" does not match its own threshold) through 100 %.
    let state = TraceState::parse("ot=rv:6e6d1a75832a2f").unwrap();
    assert_eq!(state.ot_randomness(), Some(0x6e_6d1a_7583_2a2f));
    // The trace id's own bits say the opposite of rv in both cases below, and its random
    // flag is clear: rv alone decides.
    let parent = |trace_id| {
        SpanContext::remote(trace_id, SpanId::random(), TraceFlags::SAMPLED)
            .with_trace_state(state.clone())
    };
    let low = trace_with_randomness(0);
    let high = trace_with_randomness((1 << 56) - 1);
    let keeps = TraceIdRatio::new(0.57);
    let drops = TraceIdRatio::new(0.56);
    let (decision, written) = sample(&keeps, Some(&parent(low)), low);
    assert!(decision.is_sampled());
    let written = written.expect("a threshold is written");
    assert_eq!(
        written.ot_randomness(),
        Some(0x6e_6d1a_7583_2a2f),
        "rv travels on"
    );
    assert_eq!(written.ot_threshold(), keeps.threshold());
    assert!(!sample(&drops, Some(&parent(high)), high).0.is_sampled());
    // The boundary: threshold == rv keeps, one more drops.
    let rv = 0x6e_6d1a_7583_2a2f;
    assert!(Threshold::from_bits(rv).unwrap().samples(rv));
    assert!(!Threshold::from_bits(rv + 1).unwrap().samples(rv));
}

#[test]
fn thresholds_are_written_only_for_promised_randomness() {
    let half = TraceIdRatio::new(0.5);
    let kept = trace_with_randomness(1 << 55);
    // A new trace: random by construction.
    let (decision, state) = sample(&half, None, kept);
    assert!(decision.is_sampled());
    assert_eq!(state.unwrap().as_str(), "ot=th:8");
    // A parent with the Level 2 random flag: the trace id's bits are promised random.
    let random_parent = SpanContext::remote(
        kept,
        SpanId::random(),
        TraceFlags::SAMPLED.with_random(true),
    )
    .with_trace_state(TraceState::parse("rojo=1").unwrap());
    let (_, state) = sample(&half, Some(&random_parent), kept);
    assert_eq!(state.unwrap().as_str(), "ot=th:8,rojo=1");
    // Without the flag and without rv, the decision is the same (services agree) but no
    // probability is claimed: the state stays the parent's.
    let plain_parent = SpanContext::remote(kept, SpanId::random(), TraceFlags::SAMPLED)
        .with_trace_state(TraceState::parse("rojo=1,ot=th:c").unwrap());
    let (decision, state) = sample(&half, Some(&plain_parent), kept);
    assert!(decision.is_sampled());
    assert_eq!(
        state.unwrap().as_str(),
        "rojo=1",
        "the parent's th is erased"
    );
    // A dropped span leaves the state alone (no copy).
    let (decision, state) = sample(&half, None, trace_with_randomness((1 << 55) - 1));
    assert_eq!((decision, state), (SamplingDecision::Drop, None));
    // 100 % is th:0; 0 % samples nothing and writes nothing.
    assert_eq!(
        sample(&TraceIdRatio::new(1.0), None, kept)
            .1
            .unwrap()
            .as_str(),
        "ot=th:0"
    );
    assert_eq!(
        sample(&TraceIdRatio::new(0.0), None, kept),
        (SamplingDecision::Drop, None)
    );
}

#[test]
fn parent_based_keeps_a_consistent_threshold_and_erases_an_inconsistent_one() {
    let sampler = ParentBased::new(TraceIdRatio::new(0.25));
    let flags = TraceFlags::SAMPLED.with_random(true);
    let state = TraceState::parse("ot=th:8;rv:90000000000000,congo=2").unwrap();
    // rv 0x90.. >= th 0x80..: consistent, kept as it is (shared, not rewritten).
    let parent = SpanContext::remote(trace_with_randomness(0), SpanId::random(), flags)
        .with_trace_state(state);
    let (decision, written) = sample(&sampler, Some(&parent), parent.trace_id());
    assert_eq!(
        (decision, written),
        (SamplingDecision::RecordAndSample, None)
    );
    // Trace id randomness below th: the parent's sampled flag does not match `rv >= th`.
    let inconsistent = SpanContext::remote(trace_with_randomness(1), SpanId::random(), flags)
        .with_trace_state(TraceState::parse("ot=th:8;k1:13,congo=2").unwrap());
    let (decision, written) = sample(&sampler, Some(&inconsistent), inconsistent.trace_id());
    assert!(decision.is_sampled());
    assert_eq!(written.unwrap().as_str(), "ot=k1:13,congo=2");
    // An unsampled parent: followed, state untouched.
    let unsampled =
        SpanContext::remote(trace_with_randomness(1), SpanId::random(), TraceFlags::NONE)
            .with_trace_state(TraceState::parse("ot=th:8").unwrap());
    assert_eq!(
        sample(&sampler, Some(&unsampled), unsampled.trace_id()),
        (SamplingDecision::Drop, None)
    );
}

#[test]
fn samplers_without_a_probability_erase_the_threshold() {
    let parent = SpanContext::remote(
        trace_with_randomness(7),
        SpanId::random(),
        TraceFlags::SAMPLED,
    )
    .with_trace_state(TraceState::parse("ot=th:c,b=1").unwrap());
    // RateLimited knows no probability: the default `sample` erases th on a kept span.
    let limited = RateLimited::new(1000);
    let (decision, written) = sample(&limited, Some(&parent), parent.trace_id());
    assert!(decision.is_sampled());
    assert_eq!(written.unwrap().as_str(), "b=1");
    // AlwaysOn keeps everything: th:0.
    let (_, written) = sample(&AlwaysOn, Some(&parent), parent.trace_id());
    assert_eq!(written.unwrap().as_str(), "ot=th:0,b=1");
    // ... and adds nothing to a state without a threshold.
    assert_eq!(sample(&AlwaysOn, None, parent.trace_id()).1, None);
}

/// A `th` that does not parse is no threshold, but the samplers that erase or replace a
/// threshold erase or replace it too: it must not travel on beside a decision it does not
/// describe.
#[test]
fn a_malformed_threshold_is_erased_or_replaced_like_a_valid_one() {
    let parent = SpanContext::remote(
        trace_with_randomness((1 << 56) - 1),
        SpanId::random(),
        TraceFlags::SAMPLED.with_random(true),
    )
    .with_trace_state(TraceState::parse("ot=th:zz;p:1,b=1").unwrap());
    // A sampler that knows no probability erases it on a span it keeps.
    let (decision, written) = sample(&RateLimited::new(1000), Some(&parent), parent.trace_id());
    assert!(decision.is_sampled());
    assert_eq!(written.unwrap().as_str(), "ot=p:1,b=1");
    // A ratio that keeps the span writes its own threshold in its place...
    let (decision, written) = sample(&TraceIdRatio::new(0.5), Some(&parent), parent.trace_id());
    assert!(decision.is_sampled());
    assert_eq!(written.unwrap().as_str(), "ot=th:8;p:1,b=1");
    // AlwaysOn writes th:0 in its place, as it does for a valid threshold...
    let (_, written) = sample(&AlwaysOn, Some(&parent), parent.trace_id());
    assert_eq!(written.unwrap().as_str(), "ot=th:0;p:1,b=1");
    // ... and a ratio that drops the span passes on the state without it.
    let dropped = SpanContext::remote(
        trace_with_randomness(1),
        SpanId::random(),
        TraceFlags::SAMPLED.with_random(true),
    )
    .with_trace_state(TraceState::parse("ot=th:zz,b=1").unwrap());
    let (decision, written) = sample(&TraceIdRatio::new(0.5), Some(&dropped), dropped.trace_id());
    assert!(!decision.is_sampled());
    assert_eq!(written.unwrap().as_str(), "b=1");
}

#[derive(Debug)]
struct RecordEverythingLocally;

impl Sampler for RecordEverythingLocally {
    fn should_sample(
        &self,
        _: Option<&SpanContext>,
        _: TraceId,
        _: &str,
        _: SpanKind,
    ) -> SamplingDecision {
        SamplingDecision::RecordOnly
    }
}

#[test]
fn record_only_spans_are_recorded_not_exported_nor_propagated_as_sampled() {
    let exporter = MemoryExporter::new();
    let tracer = Tracer::builder()
        .sampler(RecordEverythingLocally)
        .exporter(exporter.clone())
        .build();
    let mut span = tracer.span("local").start();
    assert!(span.is_recording());
    assert!(!span.context().is_sampled());
    span.set_attribute("k", 1);
    span.end();
    assert!(exporter.spans().is_empty());
    let recorded = exporter.record_only_spans();
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0].attribute("k").is_some());
    assert!(SamplingDecision::RecordOnly.is_recording());
    assert!(!SamplingDecision::RecordOnly.is_sampled());
}

#[test]
fn a_tracer_propagates_the_threshold_it_sampled_with() {
    let tracer = Tracer::builder()
        .sampler(ParentBased::new(TraceIdRatio::new(1.0)))
        .build();
    let root = tracer.span("root").start();
    assert_eq!(root.context().trace_state().as_str(), "ot=th:0");
    let _guard = root.attach();
    let child = tracer.span("child").start();
    assert_eq!(child.context().trace_state().as_str(), "ot=th:0");
    let mut outgoing: HashMap<String, String> = HashMap::new();
    TraceContextPropagator.inject(
        &infra_trace_ctx::Context::current().with_span(child.context().clone()),
        &mut outgoing,
    );
    assert_eq!(outgoing["tracestate"], "ot=th:0");
    let back = TraceContextPropagator.extract(&outgoing);
    assert_eq!(
        back.span().unwrap().trace_state().ot_threshold(),
        Some(Threshold::ALWAYS)
    );
}

#[test]
fn a_threshold_that_does_not_fit_leaves_the_parents_rv() {
    // A parent `ot` entry of exactly 256 characters: no room for `th:0;`.
    let padding = "x".repeat(256 - "rv:00000000000001;k:".len());
    let state = TraceState::parse(&format!("ot=rv:00000000000001;k:{padding},b=1")).unwrap();
    assert_eq!(state.get("ot").map(str::len), Some(256));
    let all_ones = TraceId::from_u128(u128::MAX).unwrap();
    let parent = SpanContext::remote(all_ones, SpanId::random(), TraceFlags::SAMPLED)
        .with_trace_state(state.clone());
    for sampler in [&TraceIdRatio::new(1.0) as &dyn Sampler, &AlwaysOn] {
        let (decision, written) = sample(sampler, Some(&parent), all_ones);
        assert!(decision.is_sampled());
        let written = written.unwrap_or_else(|| parent.trace_state().clone());
        assert_eq!(written.ot_randomness(), Some(1), "rv survives");
        assert_eq!(written.ot_threshold(), None, "no th that was not written");
        assert_eq!(written.get("ot"), state.get("ot"));
        assert_eq!(written.get("b"), Some("1"));
        // Further down, a 50 % sampler still decides from rv (1: dropped), not from the
        // trace id (all ones: kept).
        let child = SpanContext::remote(all_ones, SpanId::random(), TraceFlags::SAMPLED)
            .with_trace_state(written);
        assert!(
            !TraceIdRatio::new(0.5)
                .should_sample(Some(&child), all_ones, "next", SpanKind::Internal)
                .is_sampled()
        );
    }
    // A parent `th` that no longer describes the span is removed, the rest stays.
    let with_th = format!("ot=th:8;rv:ffffffffffffff;k:{}", &padding[5..]);
    let parent = parent.with_trace_state(TraceState::parse(&with_th).unwrap());
    let (decision, written) = sample(&TraceIdRatio::new(0.3), Some(&parent), all_ones);
    assert!(decision.is_sampled());
    let written = written.expect("th changes");
    assert_eq!(
        (written.ot_threshold(), written.ot_randomness()),
        (None, Some((1 << 56) - 1))
    );
}

#[test]
fn a_span_the_ratio_drops_does_not_pass_on_the_parents_threshold() {
    // The parent was kept at 50 % (th:8) with randomness 0x90…: consistent. A 10 % sampler
    // below it drops the span (0x90… < 0xe666…). Passing th:8 on with the unsampled flag
    // would state a decision ("rv >= th: sampled") the flag contradicts, which the
    // specification asks the next stages to treat as inconsistent; the threshold goes, the
    // rest of the state stays.
    let randomness = 0x90_0000_0000_0000;
    let parent = SpanContext::remote(
        trace_with_randomness(randomness),
        SpanId::random(),
        TraceFlags::SAMPLED,
    )
    .with_trace_state(TraceState::parse("ot=th:8;rv:90000000000000,b=1").unwrap());
    let (decision, written) = sample(&TraceIdRatio::new(0.1), Some(&parent), parent.trace_id());
    assert_eq!(decision, SamplingDecision::Drop);
    let written = written.expect("the parent's th is erased");
    assert_eq!(written.ot_threshold(), None);
    assert_eq!(written.ot_randomness(), Some(randomness), "rv stays");
    assert_eq!(written.get("b"), Some("1"));

    // Through a tracer, what reaches the next service.
    let tracer = Tracer::builder().sampler(TraceIdRatio::new(0.1)).build();
    let span = tracer.span("dropped").parent(&parent).start();
    assert!(!span.context().is_sampled());
    let mut outgoing: HashMap<String, String> = HashMap::new();
    TraceContextPropagator.inject(
        &infra_trace_ctx::Context::current().with_span(span.context().clone()),
        &mut outgoing,
    );
    assert_eq!(outgoing["tracestate"], "ot=rv:90000000000000,b=1");

    // A parent without a threshold: nothing to erase, the state is shared, not copied.
    let plain = parent.with_trace_state(TraceState::parse("b=1").unwrap());
    let (decision, written) = sample(&TraceIdRatio::new(0.1), Some(&plain), plain.trace_id());
    assert_eq!((decision, written), (SamplingDecision::Drop, None));
}
