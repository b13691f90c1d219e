//! The assignment's work on inputs that make exact shortest-path searches long: a sliding
//! window of candidates whose costs are all nearly the same, or in whole minutes. Every
//! request r may take drivers r - 7 to r, so the only way to serve all of them is request r
//! with driver r: the optimum is known without a solver. Without a work budget each search
//! walks the chain of matched drivers behind it, n² / 2 scans in all (8,000 requests: 2.6e8
//! edge scans); the budget keeps the scans proportional to the edges.

use infra_geomatch::matching::{Assignment, CandidateGraph, Edge, SolveQuality, WorkBudget};

const WINDOW: u32 = 8;
const PRICE: f64 = 1e9;

fn window(requests: u32, cost: impl Fn(u32, u32) -> f64) -> Vec<Edge> {
    (0..requests)
        .flat_map(|r| (r.saturating_sub(WINDOW - 1)..=r).map(move |d| (r, d)))
        .map(|(request, driver)| Edge {
            request,
            driver,
            cost: cost(request, driver),
        })
        .collect()
}

/// Solves within `budget`, checks the assignment serves every request with a distinct driver
/// and that its stated bound brackets the optimum (every request r with driver r), and
/// returns its quality.
fn solve_and_check(
    requests: u32,
    cost: impl Fn(u32, u32) -> f64,
    budget: WorkBudget,
) -> (Assignment, SolveQuality) {
    let edges = window(requests, &cost);
    let graph = CandidateGraph::new(requests, requests, &edges).expect("valid");
    let assignment = graph.solve_within(PRICE, budget).expect("valid price");
    let quality = *assignment.quality().expect("solve states its quality");
    assert_eq!(assignment.len(), requests as usize, "every request served");
    let mut drivers: Vec<u32> = assignment.pairings().iter().map(|p| p.driver).collect();
    drivers.sort_unstable();
    drivers.dedup();
    assert_eq!(drivers.len(), requests as usize, "no driver twice");
    let optimum: f64 = (0..requests).map(|r| cost(r, r)).sum();
    assert!(
        quality.lower_bound <= optimum,
        "bound {} above the optimum {optimum}",
        quality.lower_bound
    );
    assert!(
        optimum <= quality.objective * (1.0 + 1e-12),
        "objective {} below the optimum {optimum}",
        quality.objective
    );
    let scans_allowed = budget
        .scans(edges.len())
        .saturating_add(WorkBudget::FALLBACK_SCANS_PER_EDGE * edges.len() as u64);
    assert!(
        quality.edges_scanned <= scans_allowed,
        "{} edge scans, more than {scans_allowed}",
        quality.edges_scanned
    );
    (assignment, quality)
}

fn near_equal(_request: u32, driver: u32) -> f64 {
    600.0 + 1e-6 * f64::from(driver)
}

fn whole_minutes(request: u32, driver: u32) -> f64 {
    60.0 * f64::from(1 + (request + driver) % 3)
}

#[test]
fn near_equal_costs_in_a_sliding_window_take_work_proportional_to_the_edges() {
    let requests = 100_000;
    let (_, quality) = solve_and_check(requests, near_equal, WorkBudget::default());
    // 36 scans per edge at most, where the exact searches would make n² / 2.
    assert!(quality.edges_scanned <= 36 * 8 * u64::from(requests));
    assert!(!quality.optimal && quality.greedy_requests > 0);
    // The greedy completion loses little here, and the bound proves it: within 1 %.
    assert!(
        quality.gap() <= 0.01 * quality.lower_bound,
        "gap {} on {}",
        quality.gap(),
        quality.lower_bound
    );
}

#[test]
fn whole_minute_costs_in_a_sliding_window_take_work_proportional_to_the_edges() {
    let requests = 100_000;
    let (_, quality) = solve_and_check(requests, whole_minutes, WorkBudget::default());
    assert!(quality.edges_scanned <= 36 * 8 * u64::from(requests));
    assert!(!quality.optimal && quality.greedy_requests > 0);
    // Every request served with its own driver, the optimum: the greedy completion found
    // it, though the bound (about half of it here) cannot prove it.
    let optimum: f64 = (0..requests).map(|r| whole_minutes(r, r)).sum();
    assert_eq!(quality.objective, optimum);
}

#[test]
fn a_flat_price_is_solved_exactly_with_one_scan_per_edge() {
    // Among drivers as near, a free one ends a search before the matched ones are walked.
    let requests = 100_000;
    let (_, quality) = solve_and_check(requests, |_, _| 60.0, WorkBudget::default());
    assert!(quality.optimal);
    assert_eq!(
        quality.edges_scanned,
        window(requests, |_, _| 60.0).len() as u64
    );
    assert_eq!(quality.objective, 60.0 * f64::from(requests));
}

#[test]
fn within_the_budget_the_optimum_is_found_and_proven() {
    // Small enough for the default budget's floor, and for no budget at all.
    for budget in [WorkBudget::default(), WorkBudget::Unlimited] {
        for cost in [near_equal, whole_minutes] {
            let (assignment, quality) = solve_and_check(100, cost, budget);
            assert!(quality.optimal, "{budget:?}");
            assert_eq!(quality.greedy_requests, 0);
            assert_eq!(quality.lower_bound, quality.objective);
            assert!(assignment.pairings().iter().all(|p| p.request == p.driver));
        }
    }
    let (_, quality) = solve_and_check(2_000, near_equal, WorkBudget::Unlimited);
    assert!(quality.optimal);
    // The quadratic work the budget saves: about n² / 2 rows of 8 edges.
    assert!(quality.edges_scanned > 2_000 * 2_000);
}

#[test]
fn a_dense_graph_of_200_requests_is_solved_exactly_within_the_default_budget() {
    // Every request to every driver, distances in meters: drivers spread evenly over a 20 km
    // square, requests crowding into a 2 km square inside it (SplitMix64 from a fixed seed),
    // so that many requests want the same drivers and the searches are long.
    let mut state = 15_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1_u64 << 53) as f64 * 20_000.0
    };
    let side = 200;
    let drivers: Vec<(f64, f64)> = (0..side).map(|_| (next(), next())).collect();
    let requests: Vec<(f64, f64)> = (0..side)
        .map(|_| (9_000.0 + next() / 10.0, 9_000.0 + next() / 10.0))
        .collect();
    let mut edges = Vec::new();
    for (request, at) in (0_u32..).zip(&requests) {
        for (driver, from) in (0_u32..).zip(&drivers) {
            edges.push(Edge {
                request,
                driver,
                cost: (at.0 - from.0).hypot(at.1 - from.1),
            });
        }
    }
    let graph = CandidateGraph::new(side, side, &edges).expect("valid");
    let budgeted = graph.solve(PRICE).expect("valid price");
    let quality = budgeted.quality().expect("solve states its quality");
    assert!(quality.optimal, "{quality:?}");
    // Long searches: more than the per-edge budget alone allows, well within the floor.
    let per_edge = u64::from(WorkBudget::DEFAULT_PER_EDGE) * edges.len() as u64;
    assert!(quality.edges_scanned > per_edge);
    assert!(
        quality.edges_scanned <= WorkBudget::MIN_SCANS,
        "{quality:?}"
    );
    let unlimited = graph
        .solve_within(PRICE, WorkBudget::Unlimited)
        .expect("valid price");
    assert_eq!(budgeted, unlimited);
}
