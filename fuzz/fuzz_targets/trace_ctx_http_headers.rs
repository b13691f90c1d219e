//! An arbitrary header block read through `http::HeaderMap` (the `http` feature) gives every
//! propagator exactly the context it gives through a plain model of the documented carrier
//! rules, whatever bytes the values hold; and a context written into a `HeaderMap` reads back
//! with the same trace id, span id and sampling decision.
//!
//! The input is text, one `name: value` header per line, so seeds are ordinary header blocks.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use infra_trace_ctx::{
    B3Propagator, BaggagePropagator, CompositePropagator, Context, Extractor, JaegerPropagator,
    Propagator, SpanId, TraceContextPropagator, TraceId,
};
use libfuzzer_sys::fuzz_target;

/// The `HeaderMap` rules over plain pairs: `get` is the first value of a name if it is UTF-8,
/// `get_all` is every value in order with bytes that are not UTF-8 replaced, and `names`
/// lists each name once, in the order first received.
struct Model(Vec<(String, Vec<u8>)>);

impl Extractor for Model {
    fn get(&self, name: &str) -> Option<&str> {
        let (_, value) = self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))?;
        std::str::from_utf8(value).ok()
    }

    fn get_all(&self, name: &str, each: &mut dyn FnMut(&str)) {
        for (n, value) in &self.0 {
            if n.eq_ignore_ascii_case(name) {
                each(&String::from_utf8_lossy(value));
            }
        }
    }

    fn names(&self, each: &mut dyn FnMut(&str)) {
        for (i, (name, _)) in self.0.iter().enumerate() {
            if !self.0[..i].iter().any(|(earlier, _)| earlier == name) {
                each(name);
            }
        }
    }
}

fn propagators() -> Vec<Box<dyn Propagator>> {
    vec![
        Box::new(TraceContextPropagator),
        Box::new(BaggagePropagator),
        Box::new(B3Propagator::single_header()),
        Box::new(B3Propagator::multi_header()),
        Box::new(JaegerPropagator),
        Box::new(CompositePropagator::new(vec![
            Box::new(TraceContextPropagator),
            Box::new(B3Propagator::multi_header()),
            Box::new(JaegerPropagator),
            Box::new(BaggagePropagator),
        ])),
    ]
}

fn span_ids(cx: &Context) -> Option<(TraceId, SpanId, bool)> {
    cx.span()
        .map(|span| (span.trace_id(), span.span_id(), span.is_sampled()))
}

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    let mut model = Model(Vec::new());
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        // What a server would have refused never reaches a carrier.
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        model
            .0
            .push((name.as_str().to_owned(), value.as_bytes().to_vec()));
        headers.append(name, value);
    }

    for propagator in propagators() {
        let cx = propagator.extract(&headers);
        assert_eq!(cx, propagator.extract(&model), "{propagator:?}");

        let mut out = HeaderMap::new();
        propagator.inject(&cx, &mut out);
        let back = propagator.extract(&out);
        assert_eq!(span_ids(&back), span_ids(&cx), "{propagator:?}: {out:?}");
    }
});
