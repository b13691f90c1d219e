//! The assignment solver against two references that share no code with it: an exhaustive
//! search over every assignment of tiny instances, and `pathfinding`'s Kuhn-Munkres on dense
//! integer matrices.

use infra_geomatch::matching::{Assignment, CandidateGraph, Edge, WorkBudget};
use pathfinding::prelude::{Matrix, kuhn_munkres_min};
use proptest::prelude::*;

/// A random instance: `requests × drivers` pairs, each present with an integer cost.
#[derive(Clone, Debug)]
struct Instance {
    requests: u32,
    drivers: u32,
    edges: Vec<Edge>,
}

fn instance(max_side: u32, max_cost: u32) -> impl Strategy<Value = Instance> {
    instance_of(max_side, (0..=max_cost).prop_map(f64::from))
}

/// Costs across magnitudes: zeros and ties, small ones a half apart, and ones of 10^12 to
/// 4 × 10^13 (with or without a few units on top). The small ones differ by more than the last
/// digit of the largest (about 0.008), below which the solver may decide either way.
// `prop_oneof!` expands to a std `Arc`, which the workspace clippy.toml bans outside
// infra_common::sync; this is test code, not shared state.
#[allow(clippy::disallowed_types)]
fn mixed_cost() -> impl Strategy<Value = f64> + Clone {
    prop_oneof![
        Just(0.0),
        (0u32..5).prop_map(f64::from),
        (0u32..3).prop_map(|half| 1.0 + 0.5 * f64::from(half)),
        (1u64..4).prop_map(|k| k as f64 * 1e12),
        (1u64..4, 0u32..5).prop_map(|(k, units)| k as f64 * 1e13 + f64::from(units)),
    ]
}

/// Costs that no float sum holds exactly: meters with decimals, tenths, and millions.
#[allow(clippy::disallowed_types)]
fn inexact_cost() -> impl Strategy<Value = f64> + Clone {
    prop_oneof![
        0.0f64..1_000.0,
        1e6f64..1e7,
        Just(0.1),
        Just(0.2),
        Just(0.3),
    ]
}

/// Prices among and far above the inexact costs.
#[allow(clippy::disallowed_types)]
fn inexact_price() -> impl Strategy<Value = f64> {
    prop_oneof![0.0f64..2_000.0, Just(0.3), Just(1e9), Just(1e15)]
}

/// A random instance as [`instance`], its costs drawn from `cost`.
fn instance_of<S>(max_side: u32, cost: S) -> impl Strategy<Value = Instance>
where
    S: Strategy<Value = f64> + Clone + 'static,
{
    (0..=max_side, 0..=max_side).prop_flat_map(move |(requests, drivers)| {
        let pairs = (requests * drivers) as usize;
        proptest::collection::vec(proptest::option::weighted(0.6, cost.clone()), pairs).prop_map(
            move |costs| {
                let edges = costs
                    .iter()
                    .enumerate()
                    .filter_map(|(at, cost)| {
                        let at = u32::try_from(at).expect("small");
                        cost.map(|cost| Edge {
                            request: at / drivers,
                            driver: at % drivers,
                            cost,
                        })
                    })
                    .collect();
                Instance {
                    requests,
                    drivers,
                    edges,
                }
            },
        )
    })
}

/// The instance with only its requests that have an edge, renumbered in order: what a
/// solve's quality counts.
fn requests_with_edges(instance: &Instance) -> Instance {
    let mut with: Vec<u32> = instance.edges.iter().map(|edge| edge.request).collect();
    with.sort_unstable();
    with.dedup();
    let edges = instance
        .edges
        .iter()
        .map(|edge| Edge {
            request: u32::try_from(with.binary_search(&edge.request).expect("listed"))
                .expect("small"),
            ..*edge
        })
        .collect();
    Instance {
        requests: u32::try_from(with.len()).expect("small"),
        drivers: instance.drivers,
        edges,
    }
}

/// The least cost over the assignments of most matches, by exhaustive search: the optimum at
/// any price above every sum of costs.
fn cheapest_maximum_matching(instance: &Instance) -> (usize, f64) {
    fn go(
        instance: &Instance,
        request: u32,
        used: &mut Vec<bool>,
        matched: usize,
        cost: f64,
        best: &mut (usize, f64),
    ) {
        if request == instance.requests {
            if matched > best.0 || (matched == best.0 && cost < best.1) {
                *best = (matched, cost);
            }
            return;
        }
        go(instance, request + 1, used, matched, cost, best);
        for edge in instance.edges.iter().filter(|edge| edge.request == request) {
            if !used[edge.driver as usize] {
                used[edge.driver as usize] = true;
                go(
                    instance,
                    request + 1,
                    used,
                    matched + 1,
                    cost + edge.cost,
                    best,
                );
                used[edge.driver as usize] = false;
            }
        }
    }
    let mut best = (0, 0.0);
    go(
        instance,
        0,
        &mut vec![false; instance.drivers as usize],
        0,
        0.0,
        &mut best,
    );
    best
}

fn cost_of(instance: &Instance, request: u32, driver: u32) -> Option<f64> {
    instance
        .edges
        .iter()
        .find(|edge| edge.request == request && edge.driver == driver)
        .map(|edge| edge.cost)
}

/// The objective of an assignment, after checking it uses real edges at their costs and no
/// driver twice.
fn objective(instance: &Instance, assignment: &Assignment, unmatched_cost: f64) -> f64 {
    let mut used = vec![false; instance.drivers as usize];
    for pairing in assignment.pairings() {
        assert!(
            !used[pairing.driver as usize],
            "driver {} used twice",
            pairing.driver
        );
        used[pairing.driver as usize] = true;
        assert_eq!(
            cost_of(instance, pairing.request, pairing.driver),
            Some(pairing.cost),
            "pairing {pairing:?} is not an edge"
        );
    }
    let requests: Vec<u32> = assignment.pairings().iter().map(|p| p.request).collect();
    let mut unique = requests.clone();
    unique.dedup();
    assert_eq!(requests, unique, "a request matched twice");
    let unmatched = f64::from(instance.requests) - requests.len() as f64;
    assignment.total_cost() + unmatched_cost * unmatched
}

/// The best (objective, matched count) over every assignment, by trying each request
/// unmatched and with each free driver in turn.
fn exhaustive(instance: &Instance, unmatched_cost: f64) -> (f64, usize) {
    fn go(
        instance: &Instance,
        unmatched_cost: f64,
        request: u32,
        used: &mut Vec<bool>,
        best: &mut (f64, usize),
        cost: f64,
        matched: usize,
    ) {
        if request == instance.requests {
            if cost < best.0 || (cost == best.0 && matched > best.1) {
                *best = (cost, matched);
            }
            return;
        }
        go(
            instance,
            unmatched_cost,
            request + 1,
            used,
            best,
            cost + unmatched_cost,
            matched,
        );
        for driver in 0..instance.drivers {
            if let (false, Some(edge)) = (used[driver as usize], cost_of(instance, request, driver))
            {
                used[driver as usize] = true;
                go(
                    instance,
                    unmatched_cost,
                    request + 1,
                    used,
                    best,
                    cost + edge,
                    matched + 1,
                );
                used[driver as usize] = false;
            }
        }
    }
    let mut best = (f64::INFINITY, 0);
    let mut used = vec![false; instance.drivers as usize];
    go(instance, unmatched_cost, 0, &mut used, &mut best, 0.0, 0);
    best
}

/// The most requests any assignment can serve, by exhaustive search.
fn maximum_cardinality(instance: &Instance) -> usize {
    fn go(instance: &Instance, request: u32, used: &mut Vec<bool>) -> usize {
        if request == instance.requests {
            return 0;
        }
        let mut best = go(instance, request + 1, used);
        for driver in 0..instance.drivers {
            if !used[driver as usize] && cost_of(instance, request, driver).is_some() {
                used[driver as usize] = true;
                best = best.max(1 + go(instance, request + 1, used));
                used[driver as usize] = false;
            }
        }
        best
    }
    go(instance, 0, &mut vec![false; instance.drivers as usize])
}

/// Kuhn-Munkres on the square-or-wider matrix `requests × (drivers + requests)`: column
/// `drivers + r` is request r's "unmatched" column at `unmatched_cost`; a missing edge, and
/// another request's unmatched column, cost more than any assignment avoiding them can.
fn kuhn_munkres_objective(instance: &Instance, unmatched_cost: i64) -> i64 {
    let rows = instance.requests as usize;
    if rows == 0 {
        return 0;
    }
    let columns = instance.drivers as usize + rows;
    let max_edge = instance
        .edges
        .iter()
        .map(|e| e.cost as i64)
        .max()
        .unwrap_or(0);
    let forbidden = (i64::from(instance.requests) + 1) * (max_edge.max(unmatched_cost) + 1);
    let mut matrix = Matrix::new(rows, columns, forbidden);
    for edge in &instance.edges {
        matrix[(edge.request as usize, edge.driver as usize)] = edge.cost as i64;
    }
    for row in 0..rows {
        matrix[(row, instance.drivers as usize + row)] = unmatched_cost;
    }
    let (total, _) = kuhn_munkres_min(&matrix);
    assert!(total < forbidden, "the reference used a forbidden cell");
    total
}

/// The arrival-order greedy from its definition: each request, in index order, takes the
/// cheapest (then lowest-index) untaken driver whose edge costs at most `unmatched_cost`.
fn greedy_reference(instance: &Instance, unmatched_cost: f64) -> Vec<(u32, u32)> {
    let mut taken = vec![false; instance.drivers as usize];
    let mut pairs = Vec::new();
    for request in 0..instance.requests {
        let mut best: Option<(f64, u32)> = None;
        for driver in 0..instance.drivers {
            if taken[driver as usize] {
                continue;
            }
            if let Some(cost) = cost_of(instance, request, driver)
                && cost <= unmatched_cost
                && best.is_none_or(|(c, _)| cost < c)
            {
                best = Some((cost, driver));
            }
        }
        if let Some((_, driver)) = best {
            taken[driver as usize] = true;
            pairs.push((request, driver));
        }
    }
    pairs
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn solve_matches_exhaustive_search(instance in instance(5, 20), penalty in 0u32..=60) {
        let unmatched_cost = f64::from(penalty);
        let graph = CandidateGraph::new(instance.requests, instance.drivers, &instance.edges)
            .expect("valid instance");
        let best = graph.solve(unmatched_cost).expect("valid penalty");
        let (expected, _) = exhaustive(&instance, unmatched_cost);
        prop_assert_eq!(objective(&instance, &best, unmatched_cost), expected);
        let greedy = graph.greedy(unmatched_cost).expect("valid penalty");
        prop_assert!(objective(&instance, &greedy, unmatched_cost) >= expected);
    }

    #[test]
    fn a_large_penalty_gives_a_maximum_matching_of_least_cost(instance in instance(5, 20)) {
        let total: f64 = instance.edges.iter().map(|edge| edge.cost).sum();
        let unmatched_cost = total + 1.0;
        let graph = CandidateGraph::new(instance.requests, instance.drivers, &instance.edges)
            .expect("valid instance");
        let best = graph.solve(unmatched_cost).expect("valid penalty");
        prop_assert_eq!(best.len(), maximum_cardinality(&instance));
        let (expected, matched) = exhaustive(&instance, unmatched_cost);
        prop_assert_eq!(best.len(), matched);
        prop_assert_eq!(objective(&instance, &best, unmatched_cost), expected);
    }

    #[test]
    fn solve_matches_kuhn_munkres(instance in instance(24, 1_000), penalty in 0u32..=2_000) {
        let graph = CandidateGraph::new(instance.requests, instance.drivers, &instance.edges)
            .expect("valid instance");
        let best = graph.solve(f64::from(penalty)).expect("valid penalty");
        let expected = kuhn_munkres_objective(&instance, i64::from(penalty));
        prop_assert_eq!(objective(&instance, &best, f64::from(penalty)), expected as f64);
    }

    #[test]
    fn greedy_is_arrival_order_nearest(instance in instance(8, 10), penalty in 0u32..=12) {
        let graph = CandidateGraph::new(instance.requests, instance.drivers, &instance.edges)
            .expect("valid instance");
        let greedy = graph.greedy(f64::from(penalty)).expect("valid penalty");
        let pairs: Vec<(u32, u32)> =
            greedy.pairings().iter().map(|p| (p.request, p.driver)).collect();
        prop_assert_eq!(pairs, greedy_reference(&instance, f64::from(penalty)));
    }

    #[test]
    fn edge_order_does_not_change_the_optimum(instance in instance(6, 20), seed in any::<u64>()) {
        let graph = CandidateGraph::new(instance.requests, instance.drivers, &instance.edges)
            .expect("valid instance");
        let mut shuffled = instance.edges.clone();
        // A fixed permutation from the seed: reverse, then rotate.
        shuffled.reverse();
        if !shuffled.is_empty() {
            let by = (seed % shuffled.len() as u64) as usize;
            shuffled.rotate_left(by);
        }
        let other = CandidateGraph::new(instance.requests, instance.drivers, &shuffled)
            .expect("valid instance");
        prop_assert_eq!(graph.solve(30.0).expect("valid"), other.solve(30.0).expect("valid"));
    }
}

proptest! {
    // Most small instances are solved exactly even on a budget of zero (a search may still
    // scan a few times its own edges); 2,048 cases give about a hundred greedy ones.
    #![proptest_config(ProptestConfig::with_cases(2_048))]

    #[test]
    fn a_budgeted_solve_states_a_true_bound_and_leaves_no_free_candidate_unused(
        instance in instance(6, 20),
        penalty in 0u32..=60,
        budget in 0u64..=48,
    ) {
        let unmatched_cost = f64::from(penalty);
        let graph = CandidateGraph::new(instance.requests, instance.drivers, &instance.edges)
            .expect("valid instance");
        let budgeted = graph
            .solve_within(unmatched_cost, WorkBudget::Scans(budget))
            .expect("valid penalty");
        let quality = *budgeted.quality().expect("solve states its quality");
        // The objective (checking real edges, no driver or request twice) over every request,
        // and over the requests with an edge, which is what the quality counts.
        let all = objective(&instance, &budgeted, unmatched_cost);
        let without_edges = (0..instance.requests)
            .filter(|&r| !instance.edges.iter().any(|edge| edge.request == r))
            .count();
        let offset = unmatched_cost * without_edges as f64;
        prop_assert_eq!(quality.objective, all - offset);
        let (optimum, _) = exhaustive(&instance, unmatched_cost);
        prop_assert!(
            quality.lower_bound <= optimum - offset && optimum <= all,
            "bound {} optimum {} objective {}", quality.lower_bound, optimum - offset, all - offset
        );
        prop_assert_eq!(quality.optimal, quality.greedy_requests == 0);
        if quality.optimal {
            prop_assert_eq!(all, optimum);
        }
        prop_assert!(
            quality.edges_scanned
                <= budget + WorkBudget::FALLBACK_SCANS_PER_EDGE * instance.edges.len() as u64
        );
        // Exact or greedy, a request left unmatched had no driver free at a cost within the
        // price: drivers taken stay taken, so every such driver is in the final assignment.
        for request in 0..instance.requests {
            if budgeted.driver_of(request).is_some() {
                continue;
            }
            for edge in instance.edges.iter().filter(|edge| edge.request == request) {
                prop_assert!(
                    edge.cost > unmatched_cost
                        || budgeted.pairings().iter().any(|p| p.driver == edge.driver),
                    "request {} left unmatched beside free driver {}", request, edge.driver
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_048))]

    /// Prices far above any matching's total are solved as an infinite price, and ones a
    /// little above as twice the sum of the costs (paths the integer instances above never
    /// take): both give the cheapest maximum matching, with zeros, ties and costs of 10^13
    /// beside ones of a few units.
    #[test]
    fn a_price_above_every_sum_gives_the_cheapest_maximum_matching_across_magnitudes(
        instance in instance_of(5, mixed_cost()),
        unmatched_cost in proptest::sample::select(vec![f64::MAX, 1e300, 1e18, 2e14]),
    ) {
        let graph = CandidateGraph::new(instance.requests, instance.drivers, &instance.edges)
            .expect("valid instance");
        let best = graph.solve_within(unmatched_cost, WorkBudget::Unlimited).expect("valid");
        objective(&instance, &best, unmatched_cost);
        prop_assert_eq!((best.len(), best.total_cost()), cheapest_maximum_matching(&instance));
    }

    /// At prices among the costs, from zero to 3 × 10^13, the optimum across magnitudes.
    #[test]
    fn solve_matches_exhaustive_search_across_magnitudes(
        instance in instance_of(5, mixed_cost()),
        unmatched_cost in proptest::sample::select(vec![0.0, 0.5, 2.0, 1e12, 3e13]),
    ) {
        let graph = CandidateGraph::new(instance.requests, instance.drivers, &instance.edges)
            .expect("valid instance");
        let best = graph.solve_within(unmatched_cost, WorkBudget::Unlimited).expect("valid");
        let (expected, _) = exhaustive(&instance, unmatched_cost);
        prop_assert_eq!(objective(&instance, &best, unmatched_cost), expected);
    }

    /// With costs whose sums round, a budgeted solve's lower bound (lowered by its rounding
    /// allowance) is still at most the optimum, and the exact solve is the optimum to a
    /// rounding.
    #[test]
    fn a_budgeted_bound_holds_when_sums_round(
        instance in instance_of(6, inexact_cost()),
        unmatched_cost in inexact_price(),
        budget in 0u64..=40,
    ) {
        let graph = CandidateGraph::new(instance.requests, instance.drivers, &instance.edges)
            .expect("valid instance");
        let budgeted = graph
            .solve_within(unmatched_cost, WorkBudget::Scans(budget))
            .expect("valid penalty");
        let quality = *budgeted.quality().expect("solve states its quality");
        let (optimum, _) = exhaustive(&requests_with_edges(&instance), unmatched_cost);
        // An optimal result states its own objective, rounded as that sum is.
        prop_assert!(
            quality.optimal || quality.lower_bound <= optimum,
            "bound {} above the optimum {optimum}: {quality:?}", quality.lower_bound
        );
        let exact = graph.solve_within(unmatched_cost, WorkBudget::Unlimited).expect("valid");
        let (expected, _) = exhaustive(&instance, unmatched_cost);
        let found = objective(&instance, &exact, unmatched_cost);
        prop_assert!(found <= expected + 1e-9 * expected.max(1.0), "{found} vs {expected}");
    }
}
