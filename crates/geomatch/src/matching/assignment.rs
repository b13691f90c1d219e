//! Minimum-cost assignment of requests to drivers over sparse candidate edges.
//!
//! The objective, stated once: with an `unmatched_cost` P, choose a set of edges in which every
//! request and every driver appears at most once, minimising
//!
//! ```text
//! sum of the chosen edges' costs  +  P × (number of requests left without a driver)
//! ```
//!
//! over the requests that appear in the graph. An edge costlier than P is never worth taking
//! (dropping it and leaving its request unmatched is cheaper and frees a driver). When P is
//! larger than the sum of all edge costs, every extra match outweighs any possible saving, so
//! the optimum has maximum cardinality and, among maximum matchings, minimum total cost.
//!
//! The exact solver is the shortest-augmenting-path form of the Hungarian method on a sparse
//! graph (Jonker and Volgenant, "A shortest augmenting path algorithm for dense and sparse
//! linear assignment problems", Computing 38, 1987): requests are added one at a time, each
//! by a Dijkstra search over reduced costs that stops at the first free driver, after which the
//! dual potentials are updated so every reduced cost stays non-negative. Each request also has
//! a private "unmatched" column of cost P, so a request can always be placed and the search
//! may instead end by pushing a previously matched request to its unmatched column when that
//! is cheaper. Because most drivers are free in a typical batch, most searches end after a few
//! steps. Near-equal costs can make each search walk every matched driver instead, so the
//! searches scan edges within a [`WorkBudget`], past which a request whose search runs long is
//! placed greedily (see [`CandidateGraph::solve_within`] and [`SolveQuality`]).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;

use super::bound::{self, SolveQuality, WorkBudget};

/// A candidate pairing of one request with one driver at a cost (distance, ETA, ...).
///
/// `request` and `driver` are indices into the caller's own arrays of requests and drivers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Edge {
    /// Index of the request.
    pub request: u32,
    /// Index of the driver.
    pub driver: u32,
    /// The cost of this pairing: finite and not negative.
    pub cost: f64,
}

/// One pairing of an [`Assignment`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pairing {
    /// Index of the request.
    pub request: u32,
    /// Index of the driver assigned to it.
    pub driver: u32,
    /// The cost of the edge between them.
    pub cost: f64,
}

/// Why a set of candidate edges, a solver parameter or a batch was refused.
///
/// ```
/// use infra_geomatch::matching::{CandidateGraph, Edge, MatchError};
///
/// let edges = [Edge { request: 0, driver: 0, cost: f64::NAN }];
/// assert!(matches!(
///     CandidateGraph::new(1, 1, &edges),
///     Err(MatchError::InvalidCost { request: 0, driver: 0, .. })
/// ));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum MatchError {
    /// An edge's cost is NaN, infinite or negative. Costs must be finite and at least zero.
    InvalidCost {
        /// The edge's request.
        request: u32,
        /// The edge's driver.
        driver: u32,
        /// The cost given.
        cost: f64,
    },
    /// An edge names a request at or past the number of requests given.
    RequestOutOfRange {
        /// The request index on the edge.
        request: u32,
        /// The number of requests.
        requests: u32,
    },
    /// An edge names a driver at or past the number of drivers given.
    DriverOutOfRange {
        /// The driver index on the edge.
        driver: u32,
        /// The number of drivers.
        drivers: u32,
    },
    /// Two edges join the same request and driver. Keep one (the cheaper) per pair.
    DuplicateEdge {
        /// The request of both edges.
        request: u32,
        /// The driver of both edges.
        driver: u32,
    },
    /// The cost of leaving a request unmatched is NaN, infinite or negative.
    InvalidUnmatchedCost(f64),
    /// A batch configuration asked for zero candidate drivers per request, or more than the
    /// most allowed.
    InvalidCandidates {
        /// Candidates per request asked for.
        candidates: usize,
        /// The most allowed.
        max: usize,
    },
    /// A batch configuration allowed zero assignment rounds, or more than the most allowed.
    InvalidRounds {
        /// Rounds asked for.
        rounds: u32,
        /// The most allowed.
        max: u32,
    },
    /// A batch has more requests than one assignment takes. Split it.
    BatchTooLarge {
        /// Requests in the batch.
        requests: usize,
        /// The most allowed.
        max: usize,
    },
    /// A batch's cost function returned NaN, an infinity or a negative value for a candidate.
    InvalidCandidateCost {
        /// The request's position in the batch.
        request: usize,
        /// The candidate driver.
        driver: crate::DriverId,
        /// The value returned.
        cost: f64,
    },
    /// The driver index refused a query of the batch.
    Index(crate::Error),
}

impl fmt::Display for MatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidCost {
                request,
                driver,
                cost,
            } => write!(
                f,
                "edge (request {request}, driver {driver}) has cost {cost}: costs must be finite and not negative"
            ),
            Self::RequestOutOfRange { request, requests } => write!(
                f,
                "edge names request {request} but there are only {requests} requests"
            ),
            Self::DriverOutOfRange { driver, drivers } => write!(
                f,
                "edge names driver {driver} but there are only {drivers} drivers"
            ),
            Self::DuplicateEdge { request, driver } => write!(
                f,
                "two edges join request {request} and driver {driver}: keep one per pair"
            ),
            Self::InvalidUnmatchedCost(cost) => write!(
                f,
                "unmatched cost {cost}: it must be finite and not negative"
            ),
            Self::InvalidCandidates { candidates, max } => write!(
                f,
                "{candidates} candidates per request asked for: between 1 and {max} are allowed"
            ),
            Self::InvalidRounds { rounds, max } => write!(
                f,
                "{rounds} assignment rounds asked for: between 1 and {max} are allowed"
            ),
            Self::BatchTooLarge { requests, max } => write!(
                f,
                "a batch of {requests} requests is more than the {max} one assignment takes: split it"
            ),
            Self::InvalidCandidateCost {
                request,
                driver,
                cost,
            } => write!(
                f,
                "the cost function gave {cost} for request {request} and driver {driver}: costs must be finite and not negative"
            ),
            Self::Index(error) => write!(f, "driver index query failed: {error}"),
        }
    }
}

impl std::error::Error for MatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Index(error) => Some(error),
            _ => None,
        }
    }
}

/// Validated candidate edges in compact adjacency form, ready for [`CandidateGraph::solve`] or
/// [`CandidateGraph::greedy`].
///
/// Memory is proportional to the number of edges, whatever the counts of requests and drivers:
/// only requests and drivers that appear on an edge get a slot.
///
/// ```
/// use infra_geomatch::matching::{CandidateGraph, Edge};
///
/// let edges = [
///     Edge { request: 0, driver: 0, cost: 1.0 },
///     Edge { request: 0, driver: 1, cost: 2.0 },
///     Edge { request: 1, driver: 0, cost: 1.5 },
/// ];
/// let graph = CandidateGraph::new(2, 2, &edges)?;
/// // Greedy in arrival order gives request 0 its nearest driver and leaves request 1 nothing;
/// let greedy = graph.greedy(100.0)?;
/// assert_eq!(greedy.len(), 1);
/// // the exact solver sends driver 1 to request 0 and serves both for 3.5.
/// let best = graph.solve(100.0)?;
/// assert_eq!(best.driver_of(0), Some(1));
/// assert_eq!(best.driver_of(1), Some(0));
/// assert_eq!(best.total_cost(), 3.5);
/// # Ok::<(), infra_geomatch::matching::MatchError>(())
/// ```
#[derive(Clone, Debug)]
pub struct CandidateGraph {
    requests: u32,
    /// The request index of each row, ascending.
    row_request: Vec<u32>,
    /// The driver index of each column, ascending.
    column_driver: Vec<u32>,
    /// Edges of row `r` are `row_start[r]..row_start[r + 1]` in `edge_column`/`edge_cost`.
    row_start: Vec<usize>,
    edge_column: Vec<u32>,
    edge_cost: Vec<f64>,
}

impl CandidateGraph {
    /// Validates `edges` between `requests` requests and `drivers` drivers.
    ///
    /// # Errors
    ///
    /// [`MatchError::InvalidCost`] for a NaN, infinite or negative cost,
    /// [`MatchError::RequestOutOfRange`] / [`MatchError::DriverOutOfRange`] for an index past
    /// its count, [`MatchError::DuplicateEdge`] when two edges join the same pair.
    pub fn new(requests: u32, drivers: u32, edges: &[Edge]) -> Result<Self, MatchError> {
        for edge in edges {
            if !(edge.cost.is_finite() && edge.cost >= 0.0) {
                return Err(MatchError::InvalidCost {
                    request: edge.request,
                    driver: edge.driver,
                    cost: edge.cost,
                });
            }
            if edge.request >= requests {
                return Err(MatchError::RequestOutOfRange {
                    request: edge.request,
                    requests,
                });
            }
            if edge.driver >= drivers {
                return Err(MatchError::DriverOutOfRange {
                    driver: edge.driver,
                    drivers,
                });
            }
        }
        let mut sorted: Vec<Edge> = edges.to_vec();
        sorted.sort_unstable_by_key(|edge| (edge.request, edge.driver));
        if let Some(pair) = sorted
            .windows(2)
            .find(|pair| (pair[0].request, pair[0].driver) == (pair[1].request, pair[1].driver))
        {
            return Err(MatchError::DuplicateEdge {
                request: pair[0].request,
                driver: pair[0].driver,
            });
        }

        let mut column_driver: Vec<u32> = sorted.iter().map(|edge| edge.driver).collect();
        column_driver.sort_unstable();
        column_driver.dedup();

        let mut row_request = Vec::new();
        let mut row_start = Vec::new();
        let mut edge_column = Vec::with_capacity(sorted.len());
        let mut edge_cost = Vec::with_capacity(sorted.len());
        for (position, edge) in sorted.iter().enumerate() {
            if row_request.last() != Some(&edge.request) {
                row_request.push(edge.request);
                row_start.push(position);
            }
            // Present by construction: `column_driver` holds every edge's driver.
            let column = column_driver
                .binary_search(&edge.driver)
                .unwrap_or_default();
            edge_column.push(u32::try_from(column).unwrap_or(u32::MAX));
            // -0.0 becomes 0.0: the orders here are `total_cmp`, which puts -0.0 first and
            // would break a tie between the two by sign rather than by driver.
            edge_cost.push(if edge.cost == 0.0 { 0.0 } else { edge.cost });
        }
        row_start.push(sorted.len());
        Ok(Self {
            requests,
            row_request,
            column_driver,
            row_start,
            edge_column,
            edge_cost,
        })
    }

    /// The number of requests the graph was built for, with or without edges.
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// The number of edges.
    pub fn edges(&self) -> usize {
        self.edge_cost.len()
    }

    /// The number of edges of `row`.
    fn row_degree(&self, row: usize) -> u64 {
        (self.row_start[row + 1] - self.row_start[row]) as u64
    }

    pub(super) fn row_edges(&self, row: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let range = self.row_start[row]..self.row_start[row + 1];
        self.edge_column[range.clone()]
            .iter()
            .zip(&self.edge_cost[range])
            .map(|(&column, &cost)| (column as usize, cost))
    }

    /// Greedy assignment in arrival order: request by request, in ascending index, each takes
    /// its cheapest edge to a driver not yet taken, if that edge costs at most `unmatched_cost`
    /// (ties go to the lower driver index).
    ///
    /// This is what a dispatcher that matches each request the moment it arrives achieves,
    /// and the baseline the batched [`CandidateGraph::solve`] is measured against.
    ///
    /// # Errors
    ///
    /// [`MatchError::InvalidUnmatchedCost`] if `unmatched_cost` is NaN, infinite or negative.
    pub fn greedy(&self, unmatched_cost: f64) -> Result<Assignment, MatchError> {
        check_unmatched_cost(unmatched_cost)?;
        let mut taken = vec![false; self.column_driver.len()];
        let mut pairings = Vec::new();
        for row in 0..self.row_request.len() {
            let best = self
                .row_edges(row)
                .filter(|&(column, cost)| !taken[column] && cost <= unmatched_cost)
                .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            if let Some((column, cost)) = best {
                taken[column] = true;
                pairings.push(Pairing {
                    request: self.row_request[row],
                    driver: self.column_driver[column],
                    cost,
                });
            }
        }
        Ok(Assignment::new(pairings, None))
    }

    /// The minimum of the [objective](super#objective) (the edge costs of the matched pairs
    /// plus `unmatched_cost` for every request left unmatched) within the default
    /// [`WorkBudget`]: exact whenever the budget suffices, which it does on ordinary batches.
    /// [`Assignment::quality`] says whether it did, and bounds the optimum when it did not.
    ///
    /// When several assignments reach the minimum, which one is returned is deterministic for a
    /// given input but otherwise unspecified; a tie between matching a request and leaving it
    /// unmatched is resolved by matching it.
    ///
    /// Time: one Dijkstra search per request that stops at the first free driver, far less
    /// than the budget when most drivers are free; see [`CandidateGraph::solve_within`].
    ///
    /// # Errors
    ///
    /// [`MatchError::InvalidUnmatchedCost`] if `unmatched_cost` is NaN, infinite or negative.
    pub fn solve(&self, unmatched_cost: f64) -> Result<Assignment, MatchError> {
        self.solve_within(unmatched_cost, WorkBudget::default())
    }

    /// As [`CandidateGraph::solve`], with `budget` for the exact searches.
    ///
    /// Requests are placed in ascending index, each by an exact search. A search that would
    /// scan edges past its limit is abandoned (nothing it explored is kept) and its request
    /// takes its cheapest free driver, as in [`CandidateGraph::greedy`]; that driver is
    /// then out of every later search, which stays exact on the requests and drivers left.
    /// Near-equal costs (a sliding window of candidates all within a millionth of each other,
    /// ETAs in whole minutes) make an exact search walk the whole chain of matched drivers
    /// before it reaches a free one, so without a budget a batch of n requests can cost on
    /// the order of n² edge scans.
    ///
    /// The edges the searches scan are at most the budget plus
    /// [`WorkBudget::FALLBACK_SCANS_PER_EDGE`] times the graph's edges, reported in
    /// [`SolveQuality::edges_scanned`]: each search may scan up to the budget, or up to that
    /// many times its own request's edges past what was scanned before it, whichever is more.
    /// Placing a request greedily and the lower bound read each edge once more.
    ///
    /// # Errors
    ///
    /// [`MatchError::InvalidUnmatchedCost`] if `unmatched_cost` is NaN, infinite or negative.
    pub fn solve_within(
        &self,
        unmatched_cost: f64,
        budget: WorkBudget,
    ) -> Result<Assignment, MatchError> {
        check_unmatched_cost(unmatched_cost)?;
        let price = self.effective_unmatched_cost(unmatched_cost);
        let budget = budget.scans(self.edges());
        // An infinite price would take any edge, and one above `unmatched_cost` is in no
        // optimum: such edges are dropped here rather than tested on every scan.
        if price.is_infinite() && self.edge_cost.iter().any(|&cost| cost > unmatched_cost) {
            return Ok(self.without_edges_above(unmatched_cost).solve_priced(
                unmatched_cost,
                price,
                budget,
            ));
        }
        Ok(self.solve_priced(unmatched_cost, price, budget))
    }

    /// The graph's rows and columns with only the edges costing at most `most`.
    fn without_edges_above(&self, most: f64) -> Self {
        let mut row_start = Vec::with_capacity(self.row_start.len());
        let (mut edge_column, mut edge_cost) = (Vec::new(), Vec::new());
        for row in 0..self.row_request.len() {
            row_start.push(edge_cost.len());
            for (column, cost) in self.row_edges(row).filter(|&(_, cost)| cost <= most) {
                edge_column.push(u32::try_from(column).unwrap_or(u32::MAX));
                edge_cost.push(cost);
            }
        }
        row_start.push(edge_cost.len());
        Self {
            requests: self.requests,
            row_request: self.row_request.clone(),
            column_driver: self.column_driver.clone(),
            row_start,
            edge_column,
            edge_cost,
        }
    }

    /// [`CandidateGraph::solve_within`] at the solver's `price` and within `budget` scans.
    fn solve_priced(&self, unmatched_cost: f64, price: f64, budget: u64) -> Assignment {
        let mut solver = Solver::new(self, price);
        let rows = self.row_request.len();
        let mut greedy = vec![false; rows];
        for (row, greedy) in greedy.iter_mut().enumerate() {
            let fallback = WorkBudget::FALLBACK_SCANS_PER_EDGE * self.row_degree(row);
            let limit = budget.max(solver.work.saturating_add(fallback));
            if !solver.add_row(row, limit) {
                solver.place_greedily(row);
                *greedy = true;
            }
        }
        let greedy_requests = greedy.iter().filter(|&&greedy| greedy).count();
        let pairings: Vec<Pairing> = solver
            .row_match
            .iter()
            .enumerate()
            .filter_map(|(row, &column)| {
                let column = column?;
                let cost = self
                    .row_edges(row)
                    .find(|&(c, _)| c == column)
                    .map_or(0.0, |(_, cost)| cost);
                Some(Pairing {
                    request: self.row_request[row],
                    driver: self.column_driver[column],
                    cost,
                })
            })
            .collect();
        let unmatched = rows - pairings.len();
        let cost: f64 = pairings.iter().map(|pairing| pairing.cost).sum();
        let objective = cost + unmatched_cost * unmatched as f64;
        let lower_bound = if greedy_requests == 0 {
            // Every request was placed by an exact search: the assignment is the optimum.
            objective
        } else {
            bound::lower_bound(
                self,
                &solver.row_potential,
                &solver.column_potential,
                &greedy,
                unmatched_cost,
            )
        };
        let quality = SolveQuality {
            optimal: greedy_requests == 0,
            objective,
            lower_bound,
            greedy_requests,
            edges_scanned: solver.work,
        };
        Assignment::new(pairings, Some(quality))
    }

    /// The price the solver works with: `unmatched_cost`, or, when it is above twice the sum
    /// `S` of the edge costs that are not above it, `2 S` or infinity. Any price above `S` has
    /// the same optima (a maximum matching, the cheapest among them). `2 S` keeps the searches
    /// short (a request that cannot be matched stops at its unmatched column instead of
    /// walking every alternating path), but the potentials take its scale, so it is used only
    /// while that scale keeps the costs' digits to a few ten-thousandths (`2 S` at most
    /// [`FINITE_PRICE_MAX`]); above, an infinite price keeps the price out of the potentials,
    /// where a cost difference below the last digit of a far larger price (a few hundred
    /// meters beside one edge of 1e18) would round away, leaving a costlier maximum matching.
    fn effective_unmatched_cost(&self, unmatched_cost: f64) -> f64 {
        let within: f64 = self
            .edge_cost
            .iter()
            .filter(|&&cost| cost <= unmatched_cost)
            .sum();
        let lowered = 2.0 * within;
        if within <= 0.0 || lowered >= unmatched_cost {
            unmatched_cost
        } else if lowered <= FINITE_PRICE_MAX {
            lowered
        } else {
            f64::INFINITY
        }
    }
}

/// The largest price kept finite when lowered: 2^40 (about 1.1e12), whose last digit is 2^-12
/// (about 0.00024), so costs in meters or seconds keep their sub-millimetre differences.
const FINITE_PRICE_MAX: f64 = (1_u64 << 40) as f64;

fn check_unmatched_cost(cost: f64) -> Result<(), MatchError> {
    if cost.is_finite() && cost >= 0.0 {
        Ok(())
    } else {
        Err(MatchError::InvalidUnmatchedCost(cost))
    }
}

/// Requests paired with drivers, sorted by request.
///
/// ```
/// use infra_geomatch::matching::{CandidateGraph, Edge, Pairing};
///
/// let edges = [Edge { request: 3, driver: 9, cost: 120.0 }];
/// let assignment = CandidateGraph::new(5, 10, &edges)?.solve(1_000.0)?;
/// assert_eq!(assignment.pairings(), &[Pairing { request: 3, driver: 9, cost: 120.0 }]);
/// assert_eq!((assignment.driver_of(3), assignment.driver_of(4)), (Some(9), None));
/// assert_eq!((assignment.len(), assignment.total_cost()), (1, 120.0));
/// # Ok::<(), infra_geomatch::matching::MatchError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assignment {
    pairings: Vec<Pairing>,
    quality: Option<SolveQuality>,
}

impl Assignment {
    fn new(mut pairings: Vec<Pairing>, quality: Option<SolveQuality>) -> Self {
        pairings.sort_unstable_by_key(|pairing| pairing.request);
        Self { pairings, quality }
    }

    /// What [`CandidateGraph::solve`] or [`CandidateGraph::solve_within`] proved of this
    /// assignment: optimal, or its objective and a lower bound on the optimum. `None` for
    /// [`CandidateGraph::greedy`], which proves nothing.
    pub fn quality(&self) -> Option<&SolveQuality> {
        self.quality.as_ref()
    }

    /// The pairings, in ascending request order.
    pub fn pairings(&self) -> &[Pairing] {
        &self.pairings
    }

    /// The number of matched requests.
    pub fn len(&self) -> usize {
        self.pairings.len()
    }

    /// Whether no request was matched.
    pub fn is_empty(&self) -> bool {
        self.pairings.is_empty()
    }

    /// The driver assigned to `request`, if any.
    pub fn driver_of(&self, request: u32) -> Option<u32> {
        self.pairings
            .binary_search_by_key(&request, |pairing| pairing.request)
            .ok()
            .map(|at| self.pairings[at].driver)
    }

    /// The sum of the matched edges' costs (the unmatched penalty not included).
    pub fn total_cost(&self) -> f64 {
        self.pairings.iter().map(|pairing| pairing.cost).sum()
    }
}

/// A column (driver) candidate in the Dijkstra heap, smallest distance first.
#[derive(Clone, Copy, Debug)]
struct Entry {
    distance: f64,
    /// The column in the low 32 bits, above them 1 if a row holds it (0 if it is free: a
    /// search that pops it ends there), so one comparison orders columns as near.
    order: u64,
}

impl Entry {
    fn new(distance: f64, column: usize, free: bool) -> Self {
        let column = u32::try_from(column).unwrap_or(u32::MAX);
        Self {
            distance,
            order: (u64::from(!free) << 32) | u64::from(column),
        }
    }

    fn column(self) -> usize {
        (self.order & u64::from(u32::MAX)) as usize
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    // Reversed, so std's max-heap pops the nearest column. Among columns as near, a free one
    // first: the search ends there rather than walking every matched column at that distance
    // (with equal costs, the whole chain of earlier requests). Then the lower column, so the
    // result does not depend on the heap's internal order.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .distance
            .total_cmp(&self.distance)
            .then(other.order.cmp(&self.order))
    }
}

/// Where a search ended: at a free driver, or at the unmatched column of a row.
#[derive(Clone, Copy, Debug)]
enum Sink {
    Column(usize),
    Unmatched(usize),
}

/// The state of the shortest-augmenting-path solver.
///
/// Dual feasibility, kept after every added row: for every edge (r, c),
/// `cost - row_potential[r] - column_potential[c] >= 0`, with equality on matched edges; for
/// every added row, `unmatched_cost - row_potential[r] >= 0`, with equality if the row is
/// unmatched (with an infinite price, a row left unmatched is never reached again, and its
/// potential no longer matters). Column potentials are never positive and stay zero on free columns; unmatched
/// columns keep potential zero because each is reachable only from its own row, which is
/// never reached once it sits there. With these, an assignment of all added rows is optimal
/// (complementary slackness of the assignment LP).
///
/// A row placed greedily (`place_greedily`) and its column are outside all of this: its edge
/// need not be tight, so its column is marked done for good and no search reaches either.
/// The invariants then hold on the rows placed by searches and the columns not taken
/// greedily, and each later search is exact there.
struct Solver<'g> {
    graph: &'g CandidateGraph,
    /// The price of each unmatched column. Infinite when any maximum matching beats every
    /// smaller one (and no edge is above the caller's price): a search then ends at a free
    /// driver if it can reach one, else leaves unmatched the reached request (or the start)
    /// whose unmatched column is nearest.
    unmatched_cost: f64,
    /// Edges scanned by the searches so far.
    work: u64,
    row_potential: Vec<f64>,
    column_potential: Vec<f64>,
    row_match: Vec<Option<usize>>,
    column_match: Vec<Option<usize>>,
    // Per-search scratch, reset through `touched` so a search costs what it explores.
    distance: Vec<f64>,
    predecessor: Vec<usize>,
    done: Vec<bool>,
    touched: Vec<usize>,
    finished: Vec<usize>,
    heap: BinaryHeap<Entry>,
}

impl<'g> Solver<'g> {
    fn new(graph: &'g CandidateGraph, unmatched_cost: f64) -> Self {
        let rows = graph.row_request.len();
        let columns = graph.column_driver.len();
        Self {
            graph,
            unmatched_cost,
            work: 0,
            row_potential: vec![0.0; rows],
            column_potential: vec![0.0; columns],
            row_match: vec![None; rows],
            column_match: vec![None; columns],
            distance: vec![f64::INFINITY; columns],
            predecessor: vec![0; columns],
            done: vec![false; columns],
            touched: Vec::new(),
            finished: Vec::new(),
            heap: BinaryHeap::new(),
        }
    }

    /// Relaxes the edges of `row`, reached at `row_distance`, and offers its unmatched column;
    /// returns false, having done nothing, if that would take the edges scanned past `limit`.
    fn scan_row(
        &mut self,
        row: usize,
        row_distance: f64,
        best_unmatched: &mut (f64, usize),
        limit: u64,
    ) -> bool {
        let range = self.graph.row_start[row]..self.graph.row_start[row + 1];
        let scanned = self.work + range.len() as u64;
        if scanned > limit {
            return false;
        }
        self.work = scanned;
        let base = row_distance - self.row_potential[row];
        let graph = self.graph;
        for (&column, &cost) in graph.edge_column[range.clone()]
            .iter()
            .zip(&graph.edge_cost[range])
        {
            let column = column as usize;
            if self.done[column] {
                continue;
            }
            // Rounding can push a reduced cost a hair below zero; Dijkstra needs it non-negative.
            let candidate = row_distance.max(base + cost - self.column_potential[column]);
            if candidate < self.distance[column] {
                if self.distance[column] == f64::INFINITY {
                    self.touched.push(column);
                }
                self.distance[column] = candidate;
                self.predecessor[column] = row;
                self.heap.push(Entry::new(
                    candidate,
                    column,
                    self.column_match[column].is_none(),
                ));
            }
        }
        // With an infinite price every unmatched column is that price plus `base`: compare
        // the `base` alone, which keeps the differences the price would round away.
        let unmatched = if self.unmatched_cost.is_finite() {
            row_distance.max(base + self.unmatched_cost)
        } else {
            base
        };
        if unmatched < best_unmatched.0 {
            *best_unmatched = (unmatched, row);
        }
        true
    }

    /// Places row `start` by an exact search; returns false, with nothing changed, if the
    /// search would have to scan a matched driver's request past `limit` edges scanned in
    /// all (the start row's own scan is always made).
    fn add_row(&mut self, start: usize, limit: u64) -> bool {
        let mut best_unmatched = (f64::INFINITY, start);
        // The start row's own scan always runs (`solve_within`'s limits leave room for it).
        self.scan_row(start, 0.0, &mut best_unmatched, u64::MAX);
        let ended = loop {
            let Some(entry) = self.heap.pop() else {
                break Some((Sink::Unmatched(best_unmatched.1), best_unmatched.0));
            };
            let column = entry.column();
            if self.done[column] || entry.distance > self.distance[column] {
                continue;
            }
            // Strictly less: on a tie, matching beats leaving a request unmatched.
            if self.unmatched_cost.is_finite() && best_unmatched.0 < entry.distance {
                break Some((Sink::Unmatched(best_unmatched.1), best_unmatched.0));
            }
            self.done[column] = true;
            self.finished.push(column);
            match self.column_match[column] {
                None => break Some((Sink::Column(column), entry.distance)),
                Some(row) => {
                    if !self.scan_row(row, entry.distance, &mut best_unmatched, limit) {
                        break None;
                    }
                }
            }
        };
        self.heap.clear();
        let Some((sink, sink_distance)) = ended else {
            self.end_search();
            return false;
        };
        // An infinite price's unmatched sink is beyond every finished column: moving them
        // all by the slack to the farthest of them keeps the reduced costs non-negative and
        // the path tight just as well, and the rows left unmatched are never reached again.
        let sink_distance = match sink {
            Sink::Unmatched(_) if !self.unmatched_cost.is_finite() => self
                .finished
                .last()
                .map_or(0.0, |&column| self.distance[column]),
            _ => sink_distance,
        };

        // Potentials: every finished column (distance at most the sink's) and its matched row
        // move by the slack to the sink, which keeps all reduced costs non-negative and makes
        // the shortest path's edges tight.
        self.row_potential[start] += sink_distance;
        for &column in &self.finished {
            let slack = sink_distance - self.distance[column];
            self.column_potential[column] -= slack;
            if let Some(row) = self.column_match[column] {
                self.row_potential[row] += slack;
            }
        }

        let mut column = match sink {
            Sink::Column(column) => Some(column),
            Sink::Unmatched(row) => {
                let freed = self.row_match[row].take();
                // A matched row reached by the search gives up its column; the search's own
                // start row simply stays unmatched.
                if row == start { None } else { freed }
            }
        };
        while let Some(current) = column {
            let row = self.predecessor[current];
            let previous = self.row_match[row];
            self.row_match[row] = Some(current);
            self.column_match[current] = Some(row);
            column = if row == start { None } else { previous };
        }
        self.end_search();
        true
    }

    /// Resets the per-search scratch, at the cost of what the search explored.
    fn end_search(&mut self) {
        for &column in &self.touched {
            self.distance[column] = f64::INFINITY;
            self.done[column] = false;
        }
        self.touched.clear();
        self.finished.clear();
    }

    /// Gives `row` its cheapest edge to a driver still free if that edge costs at most the
    /// price (ties to the lower driver), as [`CandidateGraph::greedy`] does, and takes that
    /// driver out of every later search. The match need not be tight, so the searches must
    /// never reach it; without it, the requests and drivers they can reach keep the
    /// invariants, and each later search is exact on them.
    fn place_greedily(&mut self, row: usize) {
        let mut best: Option<(usize, f64)> = None;
        for (column, cost) in self.graph.row_edges(row) {
            if self.column_match[column].is_none()
                && cost <= self.unmatched_cost
                && best.is_none_or(|(_, least)| cost < least)
            {
                best = Some((column, cost));
            }
        }
        if let Some((column, _)) = best {
            self.row_match[row] = Some(column);
            self.column_match[column] = Some(row);
            // Never reset: `end_search` resets only the columns a search touched, and a
            // search skips a done column before touching it.
            self.done[column] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(request: u32, driver: u32, cost: f64) -> Edge {
        Edge {
            request,
            driver,
            cost,
        }
    }

    #[test]
    fn bad_edges_are_refused_with_the_offending_edge() {
        for cost in [f64::NAN, f64::INFINITY, -1.0] {
            let result = CandidateGraph::new(2, 2, &[edge(1, 0, cost)]);
            assert!(
                matches!(
                    result,
                    Err(MatchError::InvalidCost {
                        request: 1,
                        driver: 0,
                        ..
                    })
                ),
                "{cost}: {result:?}"
            );
        }
        assert_eq!(
            CandidateGraph::new(2, 2, &[edge(2, 0, 1.0)]).unwrap_err(),
            MatchError::RequestOutOfRange {
                request: 2,
                requests: 2
            }
        );
        assert_eq!(
            CandidateGraph::new(2, 2, &[edge(0, 5, 1.0)]).unwrap_err(),
            MatchError::DriverOutOfRange {
                driver: 5,
                drivers: 2
            }
        );
        assert_eq!(
            CandidateGraph::new(2, 2, &[edge(1, 1, 1.0), edge(0, 1, 1.0), edge(1, 1, 2.0)])
                .unwrap_err(),
            MatchError::DuplicateEdge {
                request: 1,
                driver: 1
            }
        );
        let graph = CandidateGraph::new(1, 1, &[edge(0, 0, 1.0)]).expect("valid");
        for cost in [f64::NAN, f64::INFINITY, -0.5] {
            assert!(matches!(
                graph.solve(cost),
                Err(MatchError::InvalidUnmatchedCost(_))
            ));
            assert!(matches!(
                graph.greedy(cost),
                Err(MatchError::InvalidUnmatchedCost(_))
            ));
        }
    }

    #[test]
    fn memory_follows_the_edges_not_the_counts() {
        let graph =
            CandidateGraph::new(u32::MAX, u32::MAX, &[edge(u32::MAX - 1, 7, 2.0)]).expect("valid");
        assert_eq!(graph.row_request.len(), 1);
        assert_eq!(graph.column_driver.len(), 1);
        let best = graph.solve(10.0).expect("valid");
        assert_eq!(best.driver_of(u32::MAX - 1), Some(7));
    }

    #[test]
    fn an_edge_costlier_than_leaving_unmatched_is_not_taken() {
        let graph = CandidateGraph::new(1, 1, &[edge(0, 0, 5.0)]).expect("valid");
        assert!(graph.solve(4.0).expect("valid").is_empty());
        assert!(graph.greedy(4.0).expect("valid").is_empty());
        assert_eq!(
            graph.solve(5.0).expect("valid").len(),
            1,
            "a tie is matched"
        );
        // However far below the price the other costs are, an edge above it is not taken.
        let graph =
            CandidateGraph::new(2, 2, &[edge(0, 0, 1.0), edge(1, 1, 500.0)]).expect("valid");
        let best = graph.solve(100.0).expect("valid");
        assert_eq!((best.driver_of(0), best.driver_of(1)), (Some(0), None));
    }

    #[test]
    fn a_price_far_above_every_cost_still_serves_the_cheapest_requests() {
        // One driver, two requests: either is a maximum matching, and the cheaper one is the
        // optimum, however far above the costs the price of an unmatched request is.
        let graph =
            CandidateGraph::new(2, 1, &[edge(0, 0, 305.5), edge(1, 0, 261.5)]).expect("valid");
        for unmatched_cost in [1e18, 1e300, f64::MAX] {
            let best = graph.solve(unmatched_cost).expect("valid");
            assert_eq!(best.driver_of(1), Some(0), "price {unmatched_cost}");
            assert_eq!(best.total_cost(), 261.5, "price {unmatched_cost}");
        }
    }

    #[test]
    fn a_far_costlier_request_elsewhere_does_not_cost_the_cheaper_ones_their_driver() {
        // Request 2's only driver is far off (an ETA used as "hardly reachable"), and the
        // optimum still serves it; requests 0 and 1 want driver 0, and the nearer one gets
        // it, however far above the costs the price of an unmatched request is.
        let graph = CandidateGraph::new(
            3,
            2,
            &[edge(0, 0, 1_000.25), edge(1, 0, 885.0), edge(2, 1, 1e18)],
        )
        .expect("valid");
        for unmatched_cost in [1e19, 1e300, f64::MAX] {
            let best = graph.solve(unmatched_cost).expect("valid");
            assert_eq!(best.driver_of(1), Some(0), "price {unmatched_cost}");
            assert_eq!(best.driver_of(2), Some(1), "price {unmatched_cost}");
            assert_eq!(best.total_cost(), 1e18 + 885.0, "price {unmatched_cost}");
        }
    }

    #[test]
    fn an_edge_the_searches_cross_keeps_the_digits_of_its_magnitude() {
        // Request 0 may take driver 1 (600) or the far driver 0; request 1 only driver 1
        // (650); request 2 only driver 0 (0). Two can be served, and leaving request 1
        // unmatched (600) beats leaving request 0 (650); the searches reach that choice through
        // the far edge, whose cost the potentials then carry, so the 50 between the two
        // survives while it is above that cost's last digit (2 for 1e16).
        for far in [1e9, 1e12, 1e15, 1e16] {
            let graph = CandidateGraph::new(
                3,
                2,
                &[
                    edge(0, 1, 600.0),
                    edge(0, 0, far),
                    edge(1, 1, 650.0),
                    edge(2, 0, 0.0),
                ],
            )
            .expect("valid");
            for unmatched_cost in [far * 10.0, 1e300, f64::MAX] {
                let best = graph.solve(unmatched_cost).expect("valid");
                assert_eq!(
                    best.driver_of(0),
                    Some(1),
                    "far {far}, price {unmatched_cost}"
                );
                assert_eq!(
                    best.total_cost(),
                    600.0,
                    "far {far}, price {unmatched_cost}"
                );
            }
        }
    }

    #[test]
    fn costs_near_the_largest_float_give_a_bound_that_proves_nothing_rather_than_nan() {
        // The dual's terms overflow: the bound cannot be computed, and must not read as a
        // proof (a NaN bound made `gap()` zero).
        let big = 1.5e308;
        let mut edges = vec![edge(4, 0, big)];
        for r in 0..4 {
            edges.push(edge(r, r, big));
            edges.push(edge(r, r + 1, big * 1.1));
        }
        let graph = CandidateGraph::new(5, 5, &edges).expect("valid");
        let rushed = graph
            .solve_within(f64::MAX, WorkBudget::Scans(0))
            .expect("valid");
        let quality = rushed.quality().expect("solve states its quality");
        assert!(!quality.optimal);
        assert_eq!(quality.lower_bound, f64::NEG_INFINITY, "{quality:?}");
        assert_eq!(quality.gap(), f64::INFINITY, "{quality:?}");
    }

    #[test]
    fn a_free_driver_as_cheap_as_the_matched_ones_ends_the_search() {
        // Every pairing costs the same (a flat price, or ETAs in whole minutes): request r
        // may take drivers r - 7 to r, and driver r is still free when r is placed. Its
        // search ends at that free driver, however many matched ones are as cheap.
        let requests: u32 = 400;
        let edges: Vec<Edge> = (0..requests)
            .flat_map(|r| (r.saturating_sub(7)..=r).map(move |d| edge(r, d, 60.0)))
            .collect();
        let graph = CandidateGraph::new(requests, requests, &edges).expect("valid");
        let mut solver = Solver::new(&graph, 1e9);
        for row in 0..graph.row_request.len() {
            let before = solver.work;
            assert!(solver.add_row(row, u64::MAX));
            let scanned = solver.work - before;
            assert_eq!(
                scanned,
                graph.row_degree(row),
                "request {row} scanned {scanned} edges, not only its own"
            );
        }
        assert!(solver.row_match.iter().all(Option::is_some));
    }

    #[test]
    fn greedy_ties_go_to_the_lower_driver_whatever_the_sign_of_zero() {
        // A cost function may return -0.0 (a product or difference that rounds to zero): it
        // is the same cost as 0.0, so the tie goes to the lower driver index.
        let graph = CandidateGraph::new(1, 2, &[edge(0, 0, 0.0), edge(0, 1, -0.0)]).expect("valid");
        assert_eq!(graph.greedy(1.0).expect("valid").driver_of(0), Some(0));
    }

    #[test]
    fn a_later_request_can_push_an_earlier_one_out() {
        // One driver; the second request is much closer to it. Only one can be served, and
        // the cheaper pairing wins even though the first request was placed first.
        let graph = CandidateGraph::new(2, 1, &[edge(0, 0, 10.0), edge(1, 0, 1.0)]).expect("valid");
        let best = graph.solve(1_000.0).expect("valid");
        assert_eq!(
            best.pairings(),
            &[Pairing {
                request: 1,
                driver: 0,
                cost: 1.0
            }]
        );
        let greedy = graph.greedy(1_000.0).expect("valid");
        assert_eq!(greedy.driver_of(0), Some(0));
    }

    #[test]
    fn a_long_chain_of_displacements_is_followed() {
        // Request i's cheapest driver is i, and i+1 is slightly worse; the last request has
        // only driver 0. The optimum shifts everyone up by one driver.
        let n = 50;
        let mut edges = Vec::new();
        for i in 0..n {
            edges.push(edge(i, i, 1.0));
            edges.push(edge(i, i + 1, 2.0));
        }
        edges.push(edge(n, 0, 1.0));
        let graph = CandidateGraph::new(n + 1, n + 1, &edges).expect("valid");
        let best = graph.solve(1_000.0).expect("valid");
        assert_eq!(best.len(), n as usize + 1);
        assert_eq!(best.total_cost(), 1.0 + 2.0 * f64::from(n));
        assert_eq!(graph.greedy(1_000.0).expect("valid").len(), n as usize);
    }
}
