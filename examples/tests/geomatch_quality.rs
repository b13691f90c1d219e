//! infra-geomatch: a batch of the benchmark's size (1,000 requests, 5,000 drivers, 8
//! candidates each, the synthetic city of the examples) is optimal on its candidate edges.
//!
//! The reference shares nothing with the solver: an assignment is a minimum-cost flow
//! (source → request → driver → sink, plus request → sink at the unmatched price), and a flow
//! is of minimum cost exactly when its residual graph has no negative cycle. The test builds
//! that residual graph from the batch's own pairings and searches it for a negative cycle
//! with Bellman-Ford (queue form). None means the batch's total cost is the optimum on the
//! same edges: a ratio of exactly 1, inside the 1 %.

use std::collections::{HashMap, VecDeque};

use infra_geomatch::matching::{BatchConfig, BatchMatcher, CandidateGraph, Edge};
use infra_geomatch::{Config, DriverId, DriverProfile, Filter, Index};

#[path = "../geomatch/city.rs"]
mod city;

const CANDIDATES: usize = 8;

/// Whether the graph with `nodes` nodes and weighted arcs has a cycle of negative total
/// weight (beyond `tolerance` of rounding).
fn has_negative_cycle(nodes: usize, arcs: &[(usize, usize, f64)], tolerance: f64) -> bool {
    let mut outgoing = vec![Vec::new(); nodes];
    for &(from, to, weight) in arcs {
        outgoing[from].push((to, weight));
    }
    // Distances from a virtual source joined to every node at weight 0.
    let mut distance = vec![0.0f64; nodes];
    let mut edges_on_path = vec![0usize; nodes];
    let mut queued = vec![true; nodes];
    let mut queue: VecDeque<usize> = (0..nodes).collect();
    while let Some(node) = queue.pop_front() {
        queued[node] = false;
        for &(next, weight) in &outgoing[node] {
            if distance[node] + weight < distance[next] - tolerance {
                distance[next] = distance[node] + weight;
                edges_on_path[next] = edges_on_path[node] + 1;
                // A shortest path has fewer edges than there are nodes; a longer one loops.
                if edges_on_path[next] >= nodes {
                    return true;
                }
                if !queued[next] {
                    queued[next] = true;
                    queue.push_back(next);
                }
            }
        }
    }
    false
}

#[test]
fn a_benchmark_sized_batch_is_optimal_on_its_candidate_edges() {
    let city = city::City::new(14, 5_000, 1_000);
    let index = Index::new(Config::default()).expect("valid config");
    for (id, &at) in city.drivers.iter().enumerate() {
        index
            .insert(DriverId(id as u64), at, DriverProfile::default())
            .expect("new driver");
    }
    // The candidate edges, read before the batch claims anyone.
    let mut edges: HashMap<(usize, DriverId), f64> = HashMap::new();
    for (request, &at) in city.requests.iter().enumerate() {
        for candidate in index
            .nearest(at, CANDIDATES, &Filter::any())
            .expect("valid k")
        {
            edges.insert((request, candidate.driver), candidate.distance_m);
        }
    }
    let config = BatchConfig {
        candidates: CANDIDATES,
        ..BatchConfig::default()
    };
    let unmatched_cost = config.unmatched_cost;
    let outcome = BatchMatcher::new(config)
        .expect("valid config")
        .match_batch(&index, &city.requests, &Filter::any())
        .expect("valid batch");
    assert_eq!(outcome.claims_lost, 0, "nobody else claims in this test");
    // Well within the default work budget: the solver proves its own optimum (six scans
    // per edge), which the check below confirms independently.
    let solve = outcome.solves[0];
    assert!(solve.optimal, "{solve:?}");
    assert!(solve.edges_scanned <= 8 * edges.len() as u64, "{solve:?}");

    // Nodes: requests, then drivers, then the sink.
    let requests = city.requests.len();
    let drivers: Vec<DriverId> = {
        let mut all: Vec<DriverId> = edges.keys().map(|&(_, driver)| driver).collect();
        all.sort_unstable();
        all.dedup();
        all
    };
    let driver_node = |driver: DriverId| requests + drivers.binary_search(&driver).expect("seen");
    let sink = requests + drivers.len();
    let mut driver_of = vec![None; requests];
    let mut driver_taken = vec![false; drivers.len()];
    for matched in &outcome.matches {
        let cost = edges[&(matched.request, matched.candidate.driver)];
        assert_eq!(
            matched.cost, cost,
            "a pairing is a candidate edge at its cost"
        );
        assert!(driver_of[matched.request].is_none());
        driver_of[matched.request] = Some(matched.candidate.driver);
        let taken = &mut driver_taken[driver_node(matched.candidate.driver) - requests];
        assert!(!*taken, "a driver matched twice");
        *taken = true;
    }
    let mut arcs = Vec::new();
    for (&(request, driver), &cost) in &edges {
        if driver_of[request] == Some(driver) {
            arcs.push((driver_node(driver), request, -cost));
        } else {
            arcs.push((request, driver_node(driver), cost));
        }
    }
    for (offset, &taken) in driver_taken.iter().enumerate() {
        let node = requests + offset;
        arcs.push(if taken {
            (sink, node, 0.0)
        } else {
            (node, sink, 0.0)
        });
    }
    for (request, driver) in driver_of.iter().enumerate() {
        arcs.push(if driver.is_some() {
            (request, sink, unmatched_cost)
        } else {
            (sink, request, -unmatched_cost)
        });
    }
    assert!(
        !has_negative_cycle(sink + 1, &arcs, 1e-6),
        "a cheaper assignment exists on the same edges"
    );

    // The same edges solved without the index agree on the total, and greedy in arrival
    // order is no cheaper.
    let driver_index = |driver: DriverId| drivers.binary_search(&driver).expect("seen") as u32;
    let list: Vec<Edge> = edges
        .iter()
        .map(|(&(request, driver), &cost)| Edge {
            request: request as u32,
            driver: driver_index(driver),
            cost,
        })
        .collect();
    let graph = CandidateGraph::new(requests as u32, drivers.len() as u32, &list).expect("valid");
    let batch_total: f64 = outcome.matches.iter().map(|m| m.cost).sum();
    let solved = graph.solve(unmatched_cost).expect("valid");
    assert_eq!(solved.len(), outcome.matches.len());
    assert!((solved.total_cost() - batch_total).abs() < 1e-6 * batch_total);
    let greedy = graph.greedy(unmatched_cost).expect("valid");
    let objective =
        |matched: usize, total: f64| total + unmatched_cost * (requests - matched) as f64;
    assert!(objective(greedy.len(), greedy.total_cost()) >= objective(solved.len(), batch_total));
}

#[test]
fn the_certificate_finds_a_cheaper_assignment_when_there_is_one() {
    // Two requests, two drivers: r0-d0 1, r0-d1 5, r1-d0 2, r1-d1 10. The assignment
    // {r0-d1, r1-d0} costs 7 and {r0-d0, r1-d1} 11: the first is optimal, the second not.
    let (r0, r1, d0, d1, sink) = (0, 1, 2, 3, 4);
    let unmatched = 100.0;
    let residual = |pairs: [(usize, usize, f64); 2], others: [(usize, usize, f64); 2]| {
        let mut arcs: Vec<(usize, usize, f64)> =
            pairs.iter().map(|&(r, d, c)| (d, r, -c)).collect();
        arcs.extend(others);
        arcs.extend([
            (sink, d0, 0.0),
            (sink, d1, 0.0),
            (r0, sink, unmatched),
            (r1, sink, unmatched),
        ]);
        arcs
    };
    let optimal = residual(
        [(r0, d1, 5.0), (r1, d0, 2.0)],
        [(r0, d0, 1.0), (r1, d1, 10.0)],
    );
    let worse = residual(
        [(r0, d0, 1.0), (r1, d1, 10.0)],
        [(r0, d1, 5.0), (r1, d0, 2.0)],
    );
    assert!(!has_negative_cycle(5, &optimal, 1e-9));
    assert!(has_negative_cycle(5, &worse, 1e-9));
}
