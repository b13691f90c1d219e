//! How much work an assignment may spend, and what it proves about its result.
//!
//! The exact searches of [`CandidateGraph::solve`](super::CandidateGraph::solve) are cheap
//! when most drivers are free, but near-equal costs can make every search walk the whole
//! chain of matched drivers: quadratic in the batch. A [`WorkBudget`] caps the edges those
//! searches scan; past it, a request whose search runs long is placed greedily, and the
//! [`SolveQuality`] of the result states its objective beside a lower bound on the optimum,
//! certified by the linear-programming dual of the assignment.
//!
//! # The lower bound
//!
//! The assignment, with a private unmatched column of price P per request, is the linear
//! program: minimise `sum(cost[r][c] x[r][c]) + P sum(y[r])` with every row's `x` and `y`
//! summing to one and every column's `x` to at most one. Its dual: maximise
//! `sum(u[r]) + sum(v[c])` subject to `u[r] + v[c] <= cost[r][c]` on every edge,
//! `u[r] <= P` and `v[c] <= 0`. Any feasible `(u, v)` bounds the program's optimum from
//! below (weak duality), and so every assignment's objective, since an assignment is one of
//! the program's solutions.
//!
//! The exact searches keep such a dual for the requests they placed (their potentials). The
//! bound takes those row potentials, gives each greedily placed request the largest value
//! the column potentials allow it, then sets every column to the largest value the rows
//! allow it: feasible by construction, whatever rounding did to the potentials.

use super::CandidateGraph;

/// The most edges the exact searches of one assignment may scan, as a multiple of the
/// graph's edges or an absolute count.
///
/// A search scans each request's edges at most once, so n requests on E edges never need
/// more than n × E scans, and the exact searches of ordinary batches need far fewer. The
/// default, [`WorkBudget::DEFAULT_PER_EDGE`] scans per edge and at least
/// [`WorkBudget::MIN_SCANS`], is more than they use: the benchmark's city batch (1,000
/// requests, 8,000 edges) scans each edge six times on average; the benchmark's dense
/// 200 × 200 graph of distances needs 1.8 million scans in all (45 per edge), and one with
/// the requests crowded into a hot spot 3.3 million (84 per edge), within the floor. Raise it
/// for an exact answer on batches the default cuts short, lower it to bound the time more
/// tightly.
///
/// ```
/// use infra_geomatch::matching::WorkBudget;
///
/// assert_eq!(WorkBudget::default(), WorkBudget::PerEdge(WorkBudget::DEFAULT_PER_EDGE));
/// assert_eq!(WorkBudget::PerEdge(32).scans(1_000_000), 32_000_000);
/// // Small graphs always get at least the floor.
/// assert_eq!(WorkBudget::PerEdge(32).scans(10), WorkBudget::MIN_SCANS);
/// assert_eq!(WorkBudget::Scans(10).scans(1_000_000), 10);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkBudget {
    /// This many edge scans per edge of the graph, and at least [`WorkBudget::MIN_SCANS`].
    PerEdge(u32),
    /// Exactly this many edge scans, whatever the graph's size. With zero, each search still
    /// has its fallback ([`WorkBudget::FALLBACK_SCANS_PER_EDGE`] times its request's edges),
    /// so a request is still placed exactly when its search ends within that.
    Scans(u64),
    /// No limit: always the exact optimum, in up to requests × edges scans.
    Unlimited,
}

impl WorkBudget {
    /// The default scans per edge.
    pub const DEFAULT_PER_EDGE: u32 = 32;
    /// The least budget [`WorkBudget::PerEdge`] gives (2²², tens of milliseconds of scans),
    /// so that small graphs, dense ones of 200 requests included, are solved exactly: any
    /// graph whose requests times edges is at most this always is.
    pub const MIN_SCANS: u64 = 1 << 22;
    /// Once the budget is spent, the edges each later search may still scan, per edge of its
    /// own request (its own scan included): enough to move a few matched requests along.
    pub const FALLBACK_SCANS_PER_EDGE: u64 = 4;

    /// The edge scans this budget allows on a graph of `edges` edges.
    pub fn scans(self, edges: usize) -> u64 {
        match self {
            Self::PerEdge(per_edge) => u64::from(per_edge)
                .saturating_mul(edges as u64)
                .max(Self::MIN_SCANS),
            Self::Scans(scans) => scans,
            Self::Unlimited => u64::MAX,
        }
    }
}

impl Default for WorkBudget {
    fn default() -> Self {
        Self::PerEdge(Self::DEFAULT_PER_EDGE)
    }
}

/// What an assignment proves about itself: see [`Assignment::quality`](super::Assignment::quality).
///
/// The objective is over the requests that have at least one edge: their matched costs plus
/// the unmatched price for each of them left unmatched.
///
/// ```
/// use infra_geomatch::matching::{CandidateGraph, Edge, WorkBudget};
///
/// // Requests 0 to 3 each have driver r at 1 and driver r + 1 at 2; request 4 has only
/// // driver 0. The optimum moves everyone up a driver: 1 + 4 × 2 = 9.
/// let mut edges = vec![Edge { request: 4, driver: 0, cost: 1.0 }];
/// for r in 0..4 {
///     edges.push(Edge { request: r, driver: r, cost: 1.0 });
///     edges.push(Edge { request: r, driver: r + 1, cost: 2.0 });
/// }
/// let graph = CandidateGraph::new(5, 5, &edges)?;
/// let exact = graph.solve(100.0)?;
/// let quality = exact.quality().expect("solve states its quality");
/// assert!(quality.optimal);
/// assert_eq!((quality.objective, quality.lower_bound), (9.0, 9.0));
///
/// // No budget: request 4's search may scan only a few edges, too few to move the chain,
/// // so it takes its cheapest free driver; there is none, and it pays the price of 100.
/// let rushed = graph.solve_within(100.0, WorkBudget::Scans(0))?;
/// let quality = rushed.quality().expect("solve states its quality");
/// assert!(!quality.optimal);
/// assert_eq!((quality.objective, quality.greedy_requests), (104.0, 1));
/// assert!(quality.lower_bound <= 9.0);
/// # Ok::<(), infra_geomatch::matching::MatchError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SolveQuality {
    /// Whether every request was placed by an exact search: the assignment is then the
    /// optimum up to rounding, and `lower_bound` equals `objective`. The rounding is that of
    /// the searches' potentials, which carry the costs of the edges the searches crossed:
    /// past an edge of cost C, differences below about 2.2e-16 × C may be decided either way.
    pub optimal: bool,
    /// The assignment's objective: its matched costs plus the unmatched price for each
    /// request (with an edge) it left unmatched.
    pub objective: f64,
    /// No assignment of the same edges has a lower objective. Certified by a dual solution,
    /// lowered by a bound on its rounding, when the budget ran out; the objective itself
    /// when the result is optimal, and so rounded as that sum is (the sum of 0.1 and 0.2
    /// rounds a hair above both costs' exact sum).
    pub lower_bound: f64,
    /// Requests whose search would have run past its limit, placed greedily instead (zero
    /// if optimal).
    pub greedy_requests: usize,
    /// Edges the exact searches scanned: the work the budget limits.
    pub edges_scanned: u64,
}

impl SolveQuality {
    /// How far the objective may be above the optimum: `objective - lower_bound`, at least
    /// zero.
    pub fn gap(&self) -> f64 {
        (self.objective - self.lower_bound).max(0.0)
    }
}

/// A lower bound on the optimum objective at price `price`, from a dual solution built on the
/// exact searches' potentials: `row_potential` for the rows not placed `greedy`,
/// `column_potential` for every column (never positive).
///
/// Row potentials above `price` (the searches may run at an infinite price) are lowered to
/// it, which keeps the dual feasible. The result is lowered by a bound on the rounding of
/// the sums.
pub(super) fn lower_bound(
    graph: &CandidateGraph,
    row_potential: &[f64],
    column_potential: &[f64],
    greedy: &[bool],
    price: f64,
) -> f64 {
    let rows = row_potential.len();
    let mut row_value = Vec::with_capacity(rows);
    for (row, &potential) in row_potential.iter().enumerate() {
        let value = if !greedy[row] {
            potential.min(price)
        } else {
            graph
                .row_edges(row)
                .map(|(column, cost)| cost - column_potential[column])
                .fold(price, f64::min)
        };
        row_value.push(value);
    }
    let mut column_value = vec![0.0_f64; column_potential.len()];
    for (row, &value) in row_value.iter().enumerate() {
        for (column, cost) in graph.row_edges(row) {
            column_value[column] = column_value[column].min(cost - value);
        }
    }
    let (mut sum, mut magnitude) = (0.0_f64, 0.0_f64);
    for &value in row_value.iter().chain(&column_value) {
        sum += value;
        magnitude += value.abs();
    }
    // Terms near the largest float overflow the sums (infinity, or NaN from infinities of
    // both signs): no rounding bound holds then, and only minus infinity is sure.
    if !magnitude.is_finite() {
        return f64::NEG_INFINITY;
    }
    // Each column value and each partial sum rounds once, by at most EPSILON relative to
    // the magnitudes summed; the bound gives up that much per term.
    let terms = (rows + column_value.len() + 1) as f64;
    sum - terms * f64::EPSILON * magnitude
}
