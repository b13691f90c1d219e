//! infra-geomatch's batched matching on the synthetic city of the examples (5,000 drivers
//! spread evenly, 1,000 requests around five hot spots, seed 14), 8 candidates per request.
//!
//! `geomatch/batch` rows:
//! - `infra`: `BatchMatcher::match_batch`, the call users make: 1,000 nearest-driver
//!   queries, the exact assignment over their 8,000 edges, 1,000 claims. Each iteration gets
//!   a freshly filled index (built outside the timing), since the batch claims its drivers.
//! - `infra/candidates`: the 1,000 nearest-driver queries alone (k = 8), the part of `infra`
//!   before the assignment.
//! - `infra/solve`: the exact assignment alone, `CandidateGraph::new` + `solve`, on the same
//!   8,000 edges.
//! - `infra/greedy`: arrival-order greedy on the same edges, for scale.
//!
//! `geomatch/dense` compares the exact solver with `pathfinding`'s Kuhn-Munkres (O(n³), dense
//! only) on a dense 200 × 200 instance: every request to every driver, distances in meters,
//! rounded to whole millimeters for Kuhn-Munkres, which needs integer weights.

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use infra_geomatch::matching::{BatchConfig, BatchMatcher, CandidateGraph, Edge};
use infra_geomatch::{Config, DriverId, DriverProfile, Filter, Index};
use pathfinding::prelude::{Matrix, kuhn_munkres_min};

#[path = "../examples/geomatch/city.rs"]
mod city;

const CANDIDATES: usize = 8;
const UNMATCHED_COST: f64 = 1e9;

fn filled_index(city: &city::City) -> Index {
    let index = Index::new(Config::default()).expect("valid config");
    for (id, &at) in city.drivers.iter().enumerate() {
        index
            .insert(DriverId(id as u64), at, DriverProfile::default())
            .expect("new driver");
    }
    index
}

fn batch(c: &mut Criterion) {
    let city = city::City::new(14, 5_000, 1_000);
    let matcher = BatchMatcher::new(BatchConfig {
        candidates: CANDIDATES,
        unmatched_cost: UNMATCHED_COST,
        ..BatchConfig::default()
    })
    .expect("valid config");
    let index = filled_index(&city);
    let mut edges = Vec::new();
    for (request, &at) in city.requests.iter().enumerate() {
        for candidate in index
            .nearest(at, CANDIDATES, &Filter::any())
            .expect("valid k")
        {
            edges.push(Edge {
                request: request as u32,
                driver: candidate.driver.0 as u32,
                cost: candidate.distance_m,
            });
        }
    }

    let mut group = c.benchmark_group("geomatch/batch");
    group.sample_size(20);
    group.bench_function("infra", |b| {
        b.iter_batched(
            || filled_index(&city),
            |index| {
                let outcome = matcher
                    .match_batch(&index, black_box(&city.requests), &Filter::any())
                    .expect("valid batch");
                black_box(outcome.matches.len());
                index
            },
            BatchSize::PerIteration,
        );
    });
    group.bench_function("infra/candidates", |b| {
        b.iter(|| {
            let mut found = 0;
            for &at in black_box(&city.requests) {
                found += index
                    .nearest(at, CANDIDATES, &Filter::any())
                    .expect("valid k")
                    .len();
            }
            black_box(found)
        });
    });
    group.bench_function("infra/solve", |b| {
        b.iter(|| {
            let graph = CandidateGraph::new(1_000, 5_000, black_box(&edges)).expect("valid");
            black_box(graph.solve(UNMATCHED_COST).expect("valid").len())
        });
    });
    group.bench_function("infra/greedy", |b| {
        b.iter(|| {
            let graph = CandidateGraph::new(1_000, 5_000, black_box(&edges)).expect("valid");
            black_box(graph.greedy(UNMATCHED_COST).expect("valid").len())
        });
    });
    group.finish();
}

fn dense(c: &mut Criterion) {
    let city = city::City::new(15, 200, 200);
    let mut edges = Vec::new();
    let mut millimeters = Matrix::new(200, 200, 0i64);
    for (request, at) in city.requests.iter().enumerate() {
        for (driver, &from) in city.drivers.iter().enumerate() {
            let meters = at.distance_m(from);
            edges.push(Edge {
                request: request as u32,
                driver: driver as u32,
                cost: meters,
            });
            millimeters[(request, driver)] = (meters * 1e3).round() as i64;
        }
    }
    let mut group = c.benchmark_group("geomatch/dense");
    group.sample_size(20);
    group.bench_function("infra", |b| {
        b.iter(|| {
            let graph = CandidateGraph::new(200, 200, black_box(&edges)).expect("valid");
            black_box(graph.solve(UNMATCHED_COST).expect("valid").total_cost())
        });
    });
    group.bench_function("pathfinding", |b| {
        b.iter(|| black_box(kuhn_munkres_min(black_box(&millimeters)).0));
    });
    group.finish();
}

criterion_group!(benches, batch, dense);
criterion_main!(benches);
