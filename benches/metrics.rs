//! What the `metrics` feature costs on the calls users make: a direct GCRA check, a
//! bounded-load lease taken and released, and a sampled span started and ended.
//!
//! Each call runs twice in one group: on an instance built with no recorder installed (the
//! feature compiled in, reporting to nothing) and on one built under a real Prometheus
//! recorder (built without its HTTP listener, so the bench opens no socket). The cost with the
//! feature compiled out is the matching row of the per-crate benches built without the
//! feature; BENCHMARKS.md puts the three side by side.

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use infra_common::hash::stable_hash;
use infra_ratelimit::{Quota, RateLimiter};
use infra_ring_hash::{BoundedLoad, Member, Placement, Ring};
use infra_trace_ctx::{AlwaysOn, NoopExporter, Tracer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

/// Keys per iteration of the bounded-load rows, as in benches/ring_hash.rs.
const KEYS: usize = 1024;

/// Builds one instance with no recorder installed (`no_recorder`) and one under `recorder`
/// (`prometheus`).
fn both<T>(recorder: &PrometheusRecorder, make: impl Fn() -> T) -> [(&'static str, T); 2] {
    let recorded = metrics::with_local_recorder(recorder, &make);
    [("no_recorder", make()), ("prometheus", recorded)]
}

fn addr(i: u32) -> SocketAddr {
    let [_, a, b, c] = i.to_be_bytes();
    SocketAddr::from(([10, a, b, c], 11211))
}

/// Each row repeats the matching row of the per-crate bench (same setup, same call), so the
/// `no_recorder` row here and that row run without the feature compare like for like.
fn overhead(c: &mut Criterion) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let mut group = c.benchmark_group("metrics/overhead");

    // benches/ratelimit.rs `ratelimit/direct/infra`: every measured check is admitted.
    for (label, limiter) in both(&recorder, || {
        let quota = Quota::per_second(100_000_000)
            .and_then(|q| q.with_burst(1_000_000))
            .expect("valid quota");
        RateLimiter::new(quota)
            .expect("valid quota")
            .with_metrics_name("bench")
    }) {
        group.bench_function(format!("ratelimit_check/{label}"), |b| {
            b.iter(|| black_box(&limiter).check().is_allowed());
        });
    }

    // benches/trace_ctx.rs `trace_ctx/span_sampled/infra`: start, one attribute, end.
    for (label, tracer) in both(&recorder, || {
        Tracer::builder()
            .sampler(AlwaysOn)
            .exporter(NoopExporter)
            .build()
    }) {
        group.bench_function(format!("span_sampled/{label}"), |b| {
            b.iter(|| {
                let mut span = tracer.span(black_box("checkout")).start();
                span.set_attribute("items", 3);
                span.end();
            });
        });
    }

    // benches/ring_hash.rs `ring_hash/bounded/100/infra_take_release`: 100 nodes, c = 1.25,
    // 10,000 leases held so the bound is active, then 1,024 leases taken and released.
    let keys: Vec<String> = (0..KEYS).map(|i| format!("user:{i:08}")).collect();
    group.throughput(Throughput::Elements(KEYS as u64));
    for (label, bounded) in both(&recorder, || {
        let placement =
            Placement::from_members(Ring::new(), (0..100).map(|i| Member::new(addr(i))))
                .expect("distinct members")
                .with_metrics_name("bench");
        BoundedLoad::new(placement, 1.25).expect("valid factor")
    }) {
        let held: Vec<_> = (0..10_000u64)
            .map(|k| bounded.take(&k).expect("members"))
            .collect();
        group.bench_function(format!("bounded_take_release/{label}"), |b| {
            b.iter(|| {
                for key in &keys {
                    let lease = bounded
                        .take_for_hash(stable_hash(key.as_bytes()))
                        .expect("members");
                    black_box(lease.node());
                }
            });
        });
        drop(held);
    }

    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
