//! Batched matching over the driver index: candidates from kNN queries, an assignment
//! (exact within its work budget), then atomic claims with a fallback for claims lost to
//! races.

use std::collections::HashMap;
use std::collections::HashSet;
use std::time::Duration;

use infra_common::{Clock, RandomState, SystemClock};

use super::{CandidateGraph, Edge, MatchError, SolveQuality, WorkBudget};
use crate::{Candidate, Claim, DriverId, Drivers, Error, Filter, Point, Version};

/// How a [`BatchMatcher`] builds and settles a batch.
///
/// ```
/// use infra_geomatch::matching::{BatchConfig, BatchMatcher, MatchError};
///
/// // Never pick a pairing costlier than 3 km: leave the request for the next batch instead.
/// let config = BatchConfig { candidates: 16, unmatched_cost: 3_000.0, ..BatchConfig::default() };
/// let matcher = BatchMatcher::new(config)?;
/// assert_eq!(matcher.config().candidates, 16);
/// assert!(matches!(
///     BatchMatcher::new(BatchConfig { candidates: 0, ..BatchConfig::default() }),
///     Err(MatchError::InvalidCandidates { candidates: 0, .. })
/// ));
/// # Ok::<(), MatchError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct BatchConfig {
    /// Candidate drivers per request: the `k` of each request's nearest-driver query
    /// (default 8). Only these edges enter the assignment, which is what keeps a batch of
    /// thousands of requests fast; an assignment is optimal *on these edges* (when its work
    /// budget suffices, see [`BatchConfig::work_budget`]). Requests crowded at one spot (a
    /// stadium gate) share their nearest drivers: a batch serves no more of them than they
    /// have distinct candidates (`candidates`, for requests at one point), and leaves the
    /// rest unmatched though free drivers wait just beyond; batch those again (their queries
    /// then find the drivers beyond) or raise this for hot spots.
    pub candidates: usize,
    /// The price of leaving a request unmatched, in cost units (default 1e9). The assignment
    /// minimises the matched costs plus this price per unmatched request; a price above the
    /// sum of all candidate costs (with distances in meters, 1e9 is above any batch whose
    /// candidate edges sum to less than 1,000,000 km) serves as many requests as possible.
    pub unmatched_cost: f64,
    /// The most assignment rounds (default 4): the first, and one more each time claims
    /// were lost, for the requests that lost them.
    pub max_rounds: u32,
    /// The work each round's assignment may spend before placing the rest of its requests
    /// greedily (default [`WorkBudget::PerEdge`] of [`WorkBudget::DEFAULT_PER_EDGE`]); see
    /// [`CandidateGraph::solve_within`]. [`BatchOutcome::solves`] says whether it sufficed.
    pub work_budget: WorkBudget,
}

impl BatchConfig {
    /// The most candidates per request.
    pub const MAX_CANDIDATES: usize = 64;
    /// The most requests in one batch.
    pub const MAX_REQUESTS: usize = 100_000;
    /// The most rounds.
    pub const MAX_ROUNDS: u32 = 64;
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            candidates: 8,
            unmatched_cost: 1e9,
            max_rounds: 4,
            work_budget: WorkBudget::default(),
        }
    }
}

/// One request of a batch matched to a driver, whose claim this batch holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchMatch {
    /// The request's position in the batch.
    pub request: usize,
    /// The driver as the request's query found it (distance), with the version the batch
    /// claimed it at: the newest any of the batch's queries saw.
    pub candidate: Candidate,
    /// The claim: the driver is offered to this request until accepted or declined.
    pub claim: Claim,
    /// The pairing's cost (the distance in meters, or the cost function's value).
    pub cost: f64,
}

/// What a batch achieved.
#[derive(Clone, Debug, PartialEq)]
#[must_use = "the matches hold claims that must be accepted or declined"]
pub struct BatchOutcome {
    /// The matched requests, in ascending request order.
    pub matches: Vec<BatchMatch>,
    /// Requests left unmatched, ascending: no candidate, every candidate taken by a cheaper
    /// pairing, or claims still lost after the last round.
    pub unmatched: Vec<usize>,
    /// Claims this batch lost to races (another claimer won, or the driver changed state,
    /// went stale or was removed after the query).
    pub claims_lost: usize,
    /// A claim that failed for another reason (the shared index's server failed or timed
    /// out), after which the batch made no more claims. Such a claim may or may not have
    /// run: the driver may now be offered to nobody. Read it back
    /// ([`Drivers::driver`](crate::Drivers::driver)) and set its state
    /// ([`Drivers::set_state`](crate::Drivers::set_state)) once the server answers. Its
    /// request, and every request whose claim was not tried, are in `unmatched`.
    pub claim_failed: Option<FailedClaim>,
    /// Assignment rounds run.
    pub rounds: u32,
    /// What each round's assignment proved, in round order (`rounds` of them): whether it
    /// is optimal on its candidate edges or, when the work budget ran out, its objective and
    /// a lower bound on the optimum. The first round assigns the whole batch; later ones
    /// only the requests that lost their claims.
    pub solves: Vec<SolveQuality>,
    /// Time from the first query to the last claim, on the matcher's clock.
    pub elapsed: Duration,
}

/// A claim of a batch that failed for a reason other than a race; see
/// [`BatchOutcome::claim_failed`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FailedClaim {
    /// The request the driver was assigned to.
    pub request: usize,
    /// The driver whose claim failed.
    pub driver: DriverId,
    /// What the index answered.
    pub error: Error,
}

/// Batched matching: for each request its `k` nearest available drivers, one minimum-cost
/// assignment over all those edges (exact within [`BatchConfig::work_budget`]), then an
/// atomic claim of every assigned driver.
///
/// # Claims lost to races
///
/// Claiming is [`Drivers::claim`], a compare-and-swap on the driver's state version, so a
/// driver is never matched twice however many matchers run at once. A driver found by several
/// of the batch's queries is claimed at the newest version they saw, whether or not the cost
/// function ruled out their pairings (a version read before a state change that another query
/// saw undone would lose the driver for nothing). When a
/// claim is lost (another matcher won the driver, or it changed state since the query), that
/// driver is dropped from the batch and the requests that lost their claims are **re-solved
/// together** on their remaining candidates, excluding every driver this batch has claimed or
/// lost, for up to [`BatchConfig::max_rounds`] rounds. No new queries are made: a request whose
/// candidates all went is reported unmatched, to be retried in the next batch. A request
/// the first assignment left unmatched is not retried, since the later rounds only have
/// fewer drivers.
///
/// Only refusals that mean the driver is no longer available count as lost
/// ([`Error::ClaimLost`], [`Error::NotAvailable`], [`Error::Stale`],
/// [`Error::UnknownDriver`]). Any other error (a shared index whose server failed or timed
/// out) stops the claiming: it is reported in [`BatchOutcome::claim_failed`], with the
/// driver to read back, and the requests not yet claimed for are unmatched, so a batch never
/// spends its rounds against a failing server nor hides the failure as a race.
///
/// For one request on its own, greedy nearest is [`Drivers::claim_nearest`].
///
/// ```
/// use infra_geomatch::matching::{BatchConfig, BatchMatcher};
/// use infra_geomatch::{Config, DriverId, DriverProfile, Filter, Index, Point};
///
/// let index = Index::new(Config::default())?;
/// index.insert(DriverId(1), Point::new(0.0, 0.001)?, DriverProfile::default())?;
/// index.insert(DriverId(2), Point::new(0.0, 0.004)?, DriverProfile::default())?;
/// // Request 0 is a little closer to driver 1 (156 m) than to driver 2 (178 m); request 1
/// // stands on driver 1 and is 334 m from driver 2. Greedy in arrival order would give
/// // driver 1 to request 0, for 490 m in all; the batch pays 178 m.
/// let requests = [Point::new(0.0, 0.0024)?, Point::new(0.0, 0.001)?];
///
/// let matcher = BatchMatcher::new(BatchConfig::default())?;
/// let outcome = matcher.match_batch(&index, &requests, &Filter::any())?;
/// let drivers: Vec<DriverId> = outcome.matches.iter().map(|m| m.candidate.driver).collect();
/// assert_eq!(drivers, [DriverId(2), DriverId(1)]);
/// assert!((outcome.matches.iter().map(|m| m.cost).sum::<f64>() - 178.0).abs() < 1.0);
/// for matched in &outcome.matches {
///     index.accept(&matched.claim)?;
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct BatchMatcher<C = SystemClock> {
    config: BatchConfig,
    clock: C,
    #[cfg(feature = "metrics")]
    metrics: super::metrics::MatchMetrics,
}

impl BatchMatcher<SystemClock> {
    /// A matcher timing its batches on the system clock.
    ///
    /// # Errors
    ///
    /// As [`BatchMatcher::with_clock`].
    pub fn new(config: BatchConfig) -> Result<Self, MatchError> {
        Self::with_clock(config, SystemClock::new())
    }
}

impl<C: Clock> BatchMatcher<C> {
    /// A matcher timing its batches on `clock`.
    ///
    /// # Errors
    ///
    /// [`MatchError::InvalidCandidates`] for zero candidates or more than
    /// [`BatchConfig::MAX_CANDIDATES`], [`MatchError::InvalidUnmatchedCost`] for a price that
    /// is NaN, infinite or negative, [`MatchError::InvalidRounds`] for zero rounds or more
    /// than [`BatchConfig::MAX_ROUNDS`].
    pub fn with_clock(config: BatchConfig, clock: C) -> Result<Self, MatchError> {
        if config.candidates == 0 || config.candidates > BatchConfig::MAX_CANDIDATES {
            return Err(MatchError::InvalidCandidates {
                candidates: config.candidates,
                max: BatchConfig::MAX_CANDIDATES,
            });
        }
        if !(config.unmatched_cost.is_finite() && config.unmatched_cost >= 0.0) {
            return Err(MatchError::InvalidUnmatchedCost(config.unmatched_cost));
        }
        if config.max_rounds == 0 || config.max_rounds > BatchConfig::MAX_ROUNDS {
            return Err(MatchError::InvalidRounds {
                rounds: config.max_rounds,
                max: BatchConfig::MAX_ROUNDS,
            });
        }
        Ok(Self {
            config,
            clock,
            #[cfg(feature = "metrics")]
            metrics: super::metrics::MatchMetrics::new(std::borrow::Cow::Borrowed(
                super::metrics::DEFAULT_MATCHER_NAME,
            )),
        })
    }

    /// Names the matcher in its metrics (feature `metrics`; see
    /// [`matching::metrics`](super::metrics)).
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn with_metrics_name(mut self, name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.metrics = super::metrics::MatchMetrics::new(name.into());
        self
    }

    /// The configuration.
    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Matches `requests` (pickup points) to available drivers passing `filter`, minimising
    /// the total great-circle pickup distance in meters. `index` is any [`Drivers`]: the
    /// in-process [`Index`](crate::Index) or, with the `redis` feature, the shared
    /// `redis::RedisIndex`; the batch uses only its `nearest` and `claim`, so both give the
    /// same outcome on the same drivers wherever their `nearest` answers agree (test
    /// `a_batch_on_redis_matches_as_on_the_in_process_index` in `tests/redis.rs`; they differ
    /// only between drivers as near as each other to a rounding, see the `redis` module).
    ///
    /// # Errors
    ///
    /// [`MatchError::BatchTooLarge`] for more than [`BatchConfig::MAX_REQUESTS`] requests,
    /// [`MatchError::Index`] if a query fails. Both are returned before any claim is made.
    pub fn match_batch<D: Drivers + ?Sized>(
        &self,
        index: &D,
        requests: &[Point],
        filter: &Filter,
    ) -> Result<BatchOutcome, MatchError> {
        self.match_batch_by(index, requests, filter, |_, candidate| {
            Some(candidate.distance_m)
        })
    }

    /// As [`BatchMatcher::match_batch`], with the cost of each candidate pairing from `cost`:
    /// called with the request's position in the batch and the candidate (driver, distance),
    /// it returns the cost (an ETA in seconds, say), or `None` to rule the pairing out.
    ///
    /// # Errors
    ///
    /// As [`BatchMatcher::match_batch`], and [`MatchError::InvalidCandidateCost`] if `cost`
    /// returns a NaN, infinite or negative value; all before any claim is made.
    pub fn match_batch_by<D: Drivers + ?Sized>(
        &self,
        index: &D,
        requests: &[Point],
        filter: &Filter,
        mut cost: impl FnMut(usize, &Candidate) -> Option<f64>,
    ) -> Result<BatchOutcome, MatchError> {
        if requests.len() > BatchConfig::MAX_REQUESTS {
            return Err(MatchError::BatchTooLarge {
                requests: requests.len(),
                max: BatchConfig::MAX_REQUESTS,
            });
        }
        let started = self.clock.now_nanos();

        // Every request's candidates, with the driver numbered once across the batch.
        let mut driver_numbers: HashMap<DriverId, u32, RandomState> =
            HashMap::with_hasher(RandomState::new());
        let mut options: Vec<Vec<CandidateEdge>> = Vec::with_capacity(requests.len());
        // The newest version the batch saw of each driver (by number), which its claim uses: a
        // driver whose state changed and changed back between two requests' queries is found at
        // two versions, and a claim at the older one would lose it to the batch's own reading.
        let mut newest: Vec<Version> = Vec::new();
        for (request, &point) in requests.iter().enumerate() {
            let found = index
                .nearest(point, self.config.candidates, filter)
                .map_err(MatchError::Index)?;
            let mut mine: Vec<CandidateEdge> = Vec::with_capacity(found.len());
            for candidate in found {
                // Every sighting counts towards the newest version, also one whose pairing the
                // cost function rules out: the driver was seen available at that version all
                // the same, and another request's claim of it must not go by an older one.
                let next = u32::try_from(driver_numbers.len()).unwrap_or(u32::MAX);
                let driver = *driver_numbers.entry(candidate.driver).or_insert(next);
                match newest.get_mut(driver as usize) {
                    Some(version) => *version = (*version).max(candidate.version),
                    None => newest.push(candidate.version),
                }
                let Some(value) = cost(request, &candidate) else {
                    continue;
                };
                if !(value.is_finite() && value >= 0.0) {
                    return Err(MatchError::InvalidCandidateCost {
                        request,
                        driver: candidate.driver,
                        cost: value,
                    });
                }
                // A backend that names a driver twice for one request (the index never does)
                // gets it counted once, at the cheaper cost: the solver takes one edge a pair.
                match mine.iter_mut().find(|option| option.driver == driver) {
                    Some(option) if value < option.cost => {
                        option.cost = value;
                        option.candidate = candidate;
                    }
                    Some(_) => {}
                    None => mine.push(CandidateEdge {
                        driver,
                        candidate,
                        cost: value,
                    }),
                }
            }
            options.push(mine);
        }
        let drivers = u32::try_from(driver_numbers.len()).unwrap_or(u32::MAX);

        let mut matches = Vec::new();
        let mut unmatched = Vec::new();
        let mut claims_lost = 0;
        let mut claim_failed = None;
        let mut gone: HashSet<u32, RandomState> = HashSet::with_hasher(RandomState::new());
        let mut pending: Vec<usize> = (0..requests.len()).collect();
        let mut rounds = 0;
        let mut solves = Vec::new();
        while !pending.is_empty() && rounds < self.config.max_rounds && claim_failed.is_none() {
            rounds += 1;
            let mut edges = Vec::new();
            for (row, &request) in pending.iter().enumerate() {
                let row = u32::try_from(row).unwrap_or(u32::MAX);
                edges.extend(
                    options[request]
                        .iter()
                        .filter(|option| !gone.contains(&option.driver))
                        .map(|option| Edge {
                            request: row,
                            driver: option.driver,
                            cost: option.cost,
                        }),
                );
            }
            let rows = u32::try_from(pending.len()).unwrap_or(u32::MAX);
            let assignment = CandidateGraph::new(rows, drivers, &edges)?
                .solve_within(self.config.unmatched_cost, self.config.work_budget)?;
            solves.extend(assignment.quality().copied());

            let mut lost = Vec::new();
            let mut assigned = vec![false; pending.len()];
            for pairing in assignment.pairings() {
                if claim_failed.is_some() {
                    // No claim is tried after a failure: the request stays unassigned.
                    break;
                }
                let request = pending[pairing.request as usize];
                assigned[pairing.request as usize] = true;
                let Some(option) = options[request]
                    .iter()
                    .find(|option| option.driver == pairing.driver)
                else {
                    continue;
                };
                gone.insert(option.driver);
                let candidate = Candidate {
                    version: newest[option.driver as usize],
                    ..option.candidate
                };
                match index.claim(candidate.driver, candidate.version) {
                    Ok(claim) => matches.push(BatchMatch {
                        request,
                        candidate,
                        claim,
                        cost: option.cost,
                    }),
                    // The driver is no longer ours to take (lost to another claimer, offered,
                    // busy, offline, stale or removed): move on without it.
                    Err(error) if error.is_lost_race() => {
                        claims_lost += 1;
                        lost.push(request);
                    }
                    Err(error) => {
                        claim_failed = Some(FailedClaim {
                            request,
                            driver: option.candidate.driver,
                            error,
                        });
                        unmatched.push(request);
                    }
                }
            }
            unmatched.extend(
                pending
                    .iter()
                    .zip(&assigned)
                    .filter(|&(_, &assigned)| !assigned)
                    .map(|(&request, _)| request),
            );
            pending = lost;
        }
        unmatched.extend(pending);
        unmatched.sort_unstable();
        matches.sort_unstable_by_key(|matched| matched.request);
        let elapsed = self.clock.elapsed_since(started);
        #[cfg(feature = "metrics")]
        self.metrics.record(
            elapsed,
            matches.len(),
            unmatched.len(),
            solves.iter().map(|solve| solve.greedy_requests).sum(),
        );
        Ok(BatchOutcome {
            matches,
            unmatched,
            claims_lost,
            claim_failed,
            rounds,
            solves,
            elapsed,
        })
    }
}

/// One candidate pairing of a request, as the batch numbers it.
#[derive(Clone, Copy, Debug)]
struct CandidateEdge {
    driver: u32,
    candidate: Candidate,
    cost: f64,
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use std::cell::Cell;

    use infra_common::ManualClock;
    use infra_common::sync::{Arc, thread};

    use super::*;
    use crate::{Config, DriverProfile, DriverState, Index};

    fn index_with(drivers: &[(f64, f64)]) -> Index<ManualClock> {
        let index = Index::with_clock(Config::default(), ManualClock::new()).expect("valid");
        for (id, &(lat, lng)) in drivers.iter().enumerate() {
            let at = Point::new(lat, lng).expect("valid");
            index
                .insert(DriverId(id as u64), at, DriverProfile::default())
                .expect("new driver");
        }
        index
    }

    fn points(coordinates: &[(f64, f64)]) -> Vec<Point> {
        coordinates
            .iter()
            .map(|&(lat, lng)| Point::new(lat, lng).expect("valid"))
            .collect()
    }

    fn matcher(config: BatchConfig) -> BatchMatcher<ManualClock> {
        BatchMatcher::with_clock(config, ManualClock::new()).expect("valid")
    }

    /// The least total distance over every way of serving as many requests as possible, by
    /// trying every driver for every request (all drivers are candidates in these tests).
    fn exhaustive(requests: &[Point], drivers: &[Point]) -> (usize, f64) {
        fn go(
            requests: &[Point],
            drivers: &[Point],
            used: &mut Vec<bool>,
            matched: usize,
            total: f64,
            best: &mut (usize, f64),
        ) {
            let Some((first, rest)) = requests.split_first() else {
                if matched > best.0 || (matched == best.0 && total < best.1) {
                    *best = (matched, total);
                }
                return;
            };
            go(rest, drivers, used, matched, total, best);
            for (driver, at) in drivers.iter().enumerate() {
                if !used[driver] {
                    used[driver] = true;
                    let distance = first.distance_m(*at);
                    go(rest, drivers, used, matched + 1, total + distance, best);
                    used[driver] = false;
                }
            }
        }
        let mut best = (0, f64::INFINITY);
        go(
            requests,
            drivers,
            &mut vec![false; drivers.len()],
            0,
            0.0,
            &mut best,
        );
        best
    }

    #[test]
    fn a_small_batch_is_optimal_and_holds_its_claims() {
        let drivers = [
            (51.500, -0.120),
            (51.502, -0.121),
            (51.505, -0.118),
            (51.499, -0.125),
            (51.510, -0.130),
        ];
        let requests = points(&[
            (51.501, -0.120),
            (51.500, -0.121),
            (51.504, -0.119),
            (51.498, -0.124),
        ]);
        let index = index_with(&drivers);
        let outcome = matcher(BatchConfig {
            candidates: drivers.len(),
            ..BatchConfig::default()
        })
        .match_batch(&index, &requests, &Filter::any())
        .expect("valid batch");
        let (served, least) = exhaustive(&requests, &points(&drivers));
        assert_eq!(outcome.matches.len(), served);
        let total: f64 = outcome.matches.iter().map(|m| m.cost).sum();
        assert!((total - least).abs() < 1e-6, "{total} vs {least}");
        for matched in &outcome.matches {
            let record = index.driver(matched.candidate.driver).expect("present");
            assert_eq!(record.state, DriverState::Offered);
            let exact = requests[matched.request].distance_m(record.point);
            assert!((matched.cost - exact).abs() < 1e-6);
        }
        assert_eq!(outcome.claims_lost, 0);
        assert_eq!(outcome.rounds, 1);
        assert!(outcome.unmatched.is_empty());
        assert_eq!(outcome.solves.len(), 1);
        assert!(outcome.solves[0].optimal);
        assert!((outcome.solves[0].objective - least).abs() < 1e-6);
    }

    #[test]
    fn a_batch_whose_work_budget_runs_out_says_so_and_bounds_the_optimum() {
        // Requests 0 to 39 may take driver r at 1 or driver r + 1 at 2; request 40 only
        // driver 0. Serving all 41 moves every request up a driver (1 + 40 × 2 = 81), which
        // the last search finds only by walking all of them.
        let chain: u32 = 40;
        let drivers: Vec<(f64, f64)> = (0..=chain).map(|d| (0.0, 0.0001 * f64::from(d))).collect();
        let index = index_with(&drivers);
        let requests = points(&vec![(0.0, 0.0); chain as usize + 1]);
        let cost = |request: usize, candidate: &Candidate| {
            let (request, driver) = (request as u64, candidate.driver.0);
            match () {
                () if request == u64::from(chain) => (driver == 0).then_some(1.0),
                () if driver == request => Some(1.0),
                () if driver == request + 1 => Some(2.0),
                () => None,
            }
        };
        let config = BatchConfig {
            candidates: BatchConfig::MAX_CANDIDATES,
            ..BatchConfig::default()
        };
        let optimum = 1.0 + 2.0 * f64::from(chain);

        let exact = matcher(config.clone())
            .match_batch_by(&index, &requests, &Filter::any(), cost)
            .expect("valid batch");
        assert_eq!(exact.matches.len(), chain as usize + 1);
        assert!(exact.solves[0].optimal);
        assert_eq!(exact.solves[0].objective, optimum);

        let index = index_with(&drivers);
        let rushed = matcher(BatchConfig {
            work_budget: WorkBudget::Scans(0),
            ..config
        })
        .match_batch_by(&index, &requests, &Filter::any(), cost)
        .expect("valid batch");
        assert_eq!(rushed.unmatched, [chain as usize]);
        let quality = &rushed.solves[0];
        assert!(!quality.optimal);
        assert_eq!(quality.greedy_requests, 1);
        assert_eq!(quality.objective, f64::from(chain) + config.unmatched_cost);
        assert!(quality.lower_bound <= optimum, "{quality:?}");
    }

    #[test]
    fn a_claim_lost_to_a_race_moves_the_request_to_its_next_candidate() {
        // Request 0's nearest driver is 0, then 1, then 2; a rival claims driver 0 between
        // the query and the batch's claim.
        let drivers = [(0.0, 0.001), (0.0, 0.002), (0.0, 0.003)];
        let index = index_with(&drivers);
        let requests = points(&[(0.0, 0.0), (0.0, 0.0031)]);
        let rival = Cell::new(None);
        let outcome = matcher(BatchConfig::default())
            .match_batch_by(&index, &requests, &Filter::any(), |request, candidate| {
                if request == 0 && candidate.driver == DriverId(0) && rival.get().is_none() {
                    rival.set(Some(
                        index.claim(candidate.driver, candidate.version).is_ok(),
                    ));
                }
                Some(candidate.distance_m)
            })
            .expect("valid batch");
        assert_eq!(rival.get(), Some(true), "the rival won driver 0");
        assert_eq!(outcome.claims_lost, 1);
        assert_eq!(outcome.rounds, 2);
        let pairs: Vec<(usize, DriverId)> = outcome
            .matches
            .iter()
            .map(|m| (m.request, m.candidate.driver))
            .collect();
        assert_eq!(pairs, [(0, DriverId(1)), (1, DriverId(2))]);
    }

    #[test]
    fn requests_at_one_spot_share_their_k_candidates_and_the_next_batch_serves_the_rest() {
        // Four riders at one gate, six free drivers along the road, two candidates each: every
        // rider's query names the same two drivers, so the batch serves two riders and leaves
        // two for the next batch, whose queries find the drivers beyond.
        let index = index_with(&[
            (0.0, 0.001),
            (0.0, 0.002),
            (0.0, 0.003),
            (0.0, 0.004),
            (0.0, 0.005),
            (0.0, 0.006),
        ]);
        let gate = points(&[(0.0, 0.0); 4]);
        let matcher = matcher(BatchConfig {
            candidates: 2,
            ..BatchConfig::default()
        });
        let first = matcher
            .match_batch(&index, &gate, &Filter::any())
            .expect("valid batch");
        assert_eq!((first.matches.len(), first.unmatched.len()), (2, 2));
        let left: Vec<Point> = first
            .unmatched
            .iter()
            .map(|&request| gate[request])
            .collect();
        let second = matcher
            .match_batch(&index, &left, &Filter::any())
            .expect("valid batch");
        let mut drivers: Vec<DriverId> = second
            .matches
            .iter()
            .map(|matched| matched.candidate.driver)
            .collect();
        drivers.sort_unstable();
        assert_eq!(drivers, [DriverId(2), DriverId(3)]);
        assert!(second.unmatched.is_empty());
    }

    /// Request 0 finds driver 0 at 111 m; the driver then goes offline and comes back (a new
    /// version) before request 1's query finds it at 222 m, where the cost function prices
    /// the pairing if `second_priced`, else rules it out. The assignment gives the driver to
    /// request 0, found at the older version: the batch holds a newer one for the same driver
    /// either way, and claims with that rather than losing the driver to itself.
    fn claimed_at_the_newer_sighting(second_priced: bool) {
        let index = index_with(&[(0.0, 0.001)]);
        let requests = points(&[(0.0, 0.0), (0.0, 0.003)]);
        let flipped = Cell::new(false);
        let seen_second = Cell::new(None);
        let outcome = matcher(BatchConfig::default())
            .match_batch_by(&index, &requests, &Filter::any(), |request, candidate| {
                if request == 1 {
                    seen_second.set(Some(candidate.version));
                    if !second_priced {
                        return None;
                    }
                }
                if request == 0 && !flipped.replace(true) {
                    index
                        .set_state(candidate.driver, DriverState::Offline)
                        .unwrap();
                    index
                        .set_state(candidate.driver, DriverState::Available)
                        .unwrap();
                }
                Some(candidate.distance_m)
            })
            .expect("valid batch");
        assert_eq!(outcome.claims_lost, 0, "{outcome:?}");
        assert_eq!(outcome.unmatched, [1]);
        let matched = &outcome.matches[..];
        assert_eq!(matched.len(), 1, "{outcome:?}");
        assert_eq!(
            (matched[0].request, matched[0].candidate.driver),
            (0, DriverId(0))
        );
        assert_eq!(Some(matched[0].candidate.version), seen_second.get());
        index.accept(&matched[0].claim).unwrap();
    }

    #[test]
    fn a_driver_seen_again_after_a_state_flip_is_claimed_at_its_newer_version() {
        claimed_at_the_newer_sighting(true);
    }

    /// Request 1's cost function rules driver 0 out (say, the wrong side of a river): its
    /// query still saw the driver available at the newer version.
    #[test]
    fn a_newer_sighting_ruled_out_by_the_cost_function_still_sets_the_claimed_version() {
        claimed_at_the_newer_sighting(false);
    }

    /// An index that misbehaves as a backend might: its claims run but their answers are lost
    /// after the first `answered` ones (what a shared index reports as a timeout, when the
    /// command may have run), and with `repeats` each nearest answer names its first driver
    /// twice.
    struct Faulty {
        index: Index<ManualClock>,
        answered: Cell<usize>,
        repeats: bool,
    }

    impl Drivers for Faulty {
        fn insert(&self, id: DriverId, point: Point, profile: DriverProfile) -> Result<(), Error> {
            self.index.insert(id, point, profile)
        }
        fn restore(&self, record: crate::DriverRecord) -> Result<(), Error> {
            self.index.restore(record)
        }
        fn update(&self, id: DriverId, point: Point) -> Result<(), Error> {
            self.index.update(id, point)
        }
        fn remove(&self, id: DriverId) -> Result<crate::DriverRecord, Error> {
            self.index.remove(id)
        }
        fn driver(&self, id: DriverId) -> Result<crate::DriverRecord, Error> {
            self.index.driver(id)
        }
        fn set_state(&self, id: DriverId, state: DriverState) -> Result<crate::Version, Error> {
            self.index.set_state(id, state)
        }
        fn claim(&self, id: DriverId, version: crate::Version) -> Result<Claim, Error> {
            let claim = self.index.claim(id, version)?;
            match self.answered.get() {
                0 => Err(Error::Backend(crate::BackendFailure::Timeout)),
                left => {
                    self.answered.set(left - 1);
                    Ok(claim)
                }
            }
        }
        fn accept(&self, claim: &Claim) -> Result<(), Error> {
            self.index.accept(claim)
        }
        fn decline(&self, claim: Claim) -> Result<(), Error> {
            self.index.decline(claim)
        }
        fn nearest(
            &self,
            point: Point,
            k: usize,
            filter: &Filter,
        ) -> Result<Vec<Candidate>, Error> {
            let mut found = self.index.nearest(point, k, filter)?;
            if self.repeats
                && let Some(&first) = found.first()
            {
                found.push(first);
            }
            Ok(found)
        }
        fn within(
            &self,
            point: Point,
            radius_m: f64,
            limit: usize,
            filter: &Filter,
        ) -> Result<Vec<Candidate>, Error> {
            self.index.within(point, radius_m, limit, filter)
        }
        fn claim_nearest(
            &self,
            point: Point,
            k: usize,
            filter: &Filter,
        ) -> Result<Option<(Candidate, Claim)>, Error> {
            self.index.claim_nearest(point, k, filter)
        }
    }

    /// A backend naming a driver twice for one request: the batch counts the driver once, at
    /// its cheaper cost, where the solver refused the two edges with its own numbering of the
    /// batch's rows and drivers.
    #[test]
    fn a_driver_a_backend_names_twice_for_a_request_counts_once() {
        let index = Faulty {
            index: index_with(&[(0.0, 0.0), (0.0, 0.01)]),
            answered: Cell::new(usize::MAX),
            repeats: true,
        };
        let requests = points(&[(0.0, 0.0), (0.0, 0.01)]);
        // A pair costs a meter more the first time it is priced: the repeat is the cheaper.
        let priced: std::cell::RefCell<Vec<(usize, DriverId)>> = std::cell::RefCell::default();
        let outcome = matcher(BatchConfig::default())
            .match_batch_by(&index, &requests, &Filter::any(), |request, candidate| {
                let pair = (request, candidate.driver);
                let again = priced.borrow().contains(&pair);
                priced.borrow_mut().push(pair);
                Some(candidate.distance_m + if again { 0.0 } else { 1.0 })
            })
            .expect("valid batch");
        let pairs: Vec<(usize, DriverId, f64)> = outcome
            .matches
            .iter()
            .map(|m| (m.request, m.candidate.driver, m.cost))
            .collect();
        assert_eq!(pairs, [(0, DriverId(0), 0.0), (1, DriverId(1), 0.0)]);
    }

    fn offered(index: &Index<ManualClock>, drivers: u64) -> Vec<DriverId> {
        (0..drivers)
            .map(DriverId)
            .filter(|&id| index.driver(id).expect("known").state == DriverState::Offered)
            .collect()
    }

    #[test]
    fn a_failed_claim_is_reported_and_ends_the_claiming() {
        // Requests 0 and 1 stand on drivers 0 and 1; drivers 2 and 3 are spare candidates.
        let drivers = [(0.0, 0.0), (0.0, 0.01), (0.0, 0.001), (0.0, 0.011)];
        let index = Faulty {
            index: index_with(&drivers),
            answered: Cell::new(1),
            repeats: false,
        };
        let requests = points(&[(0.0, 0.0), (0.0, 0.01)]);
        let outcome = matcher(BatchConfig::default())
            .match_batch(&index, &requests, &Filter::any())
            .expect("valid batch");
        // Request 0's claim was answered; request 1's ran but its answer was lost.
        let pairs: Vec<(usize, DriverId)> = outcome
            .matches
            .iter()
            .map(|m| (m.request, m.candidate.driver))
            .collect();
        assert_eq!(pairs, [(0, DriverId(0))]);
        assert_eq!(
            outcome.claim_failed,
            Some(FailedClaim {
                request: 1,
                driver: DriverId(1),
                error: Error::Backend(crate::BackendFailure::Timeout),
            })
        );
        // Not a race, and no other driver was tried: the only drivers offered are the
        // matched one and the one the failure names.
        assert_eq!((outcome.claims_lost, outcome.rounds), (0, 1));
        assert_eq!(outcome.unmatched, [1]);
        assert_eq!(offered(&index.index, 4), [DriverId(0), DriverId(1)]);
        // The remedy the failure asks for: read the driver back and make it available.
        index
            .set_state(DriverId(1), DriverState::Available)
            .expect("known");
        assert_eq!(offered(&index.index, 4), [DriverId(0)]);
    }

    #[test]
    fn a_failure_on_the_first_claim_tries_no_other_driver() {
        let index = Faulty {
            index: index_with(&[(0.0, 0.001), (0.0, 0.002), (0.0, 0.003)]),
            answered: Cell::new(0),
            repeats: false,
        };
        let outcome = matcher(BatchConfig::default())
            .match_batch(&index, &points(&[(0.0, 0.0)]), &Filter::any())
            .expect("valid batch");
        assert!(outcome.matches.is_empty());
        assert_eq!(outcome.unmatched, [0]);
        assert_eq!((outcome.claims_lost, outcome.rounds), (0, 1));
        assert_eq!(
            outcome.claim_failed.map(|failed| failed.driver),
            Some(DriverId(0))
        );
        assert_eq!(offered(&index.index, 3), [DriverId(0)]);
    }

    #[test]
    fn requests_that_keep_losing_are_unmatched_after_the_last_round() {
        let index = index_with(&[(0.0, 0.001), (0.0, 0.002)]);
        let requests = points(&[(0.0, 0.0)]);
        // The cost function claims every candidate for a rival: every claim of the batch loses.
        let outcome = matcher(BatchConfig {
            max_rounds: 2,
            ..BatchConfig::default()
        })
        .match_batch_by(&index, &requests, &Filter::any(), |_, candidate| {
            let _rival = index.claim(candidate.driver, candidate.version);
            Some(candidate.distance_m)
        })
        .expect("valid batch");
        assert!(outcome.matches.is_empty());
        assert_eq!(outcome.unmatched, [0]);
        assert_eq!((outcome.claims_lost, outcome.rounds), (2, 2));
        assert_eq!(outcome.solves.len(), 2, "one statement per round");
    }

    #[test]
    fn the_cost_function_rules_out_and_prices_pairings() {
        let index = index_with(&[(0.0, 0.001), (0.0, 0.002)]);
        let requests = points(&[(0.0, 0.0)]);
        let outcome = matcher(BatchConfig::default())
            .match_batch_by(&index, &requests, &Filter::any(), |_, candidate| {
                // Driver 0 is nearer but ruled out (say, the wrong side of a river).
                (candidate.driver != DriverId(0)).then_some(60.0)
            })
            .expect("valid batch");
        assert_eq!(outcome.matches.len(), 1);
        assert_eq!(outcome.matches[0].candidate.driver, DriverId(1));
        assert_eq!(outcome.matches[0].cost, 60.0);
        for bad in [f64::NAN, -1.0, f64::INFINITY] {
            let result = matcher(BatchConfig::default()).match_batch_by(
                &index,
                &requests,
                &Filter::any(),
                |_, _| Some(bad),
            );
            assert!(
                matches!(
                    result,
                    Err(MatchError::InvalidCandidateCost { request: 0, driver: DriverId(0), cost })
                        if cost.to_bits() == bad.to_bits()
                ),
                "{bad}: {result:?}"
            );
        }
        // Nothing was claimed by the refused batches.
        assert_eq!(
            index.driver(DriverId(0)).expect("present").state,
            DriverState::Available
        );
    }

    #[test]
    fn bad_configurations_are_refused() {
        for config in [
            BatchConfig {
                candidates: 0,
                ..BatchConfig::default()
            },
            BatchConfig {
                candidates: BatchConfig::MAX_CANDIDATES + 1,
                ..BatchConfig::default()
            },
        ] {
            assert!(matches!(
                BatchMatcher::new(config),
                Err(MatchError::InvalidCandidates { .. })
            ));
        }
        assert!(matches!(
            BatchMatcher::new(BatchConfig {
                unmatched_cost: f64::NAN,
                ..BatchConfig::default()
            }),
            Err(MatchError::InvalidUnmatchedCost(_))
        ));
        assert!(matches!(
            BatchMatcher::new(BatchConfig {
                max_rounds: 0,
                ..BatchConfig::default()
            }),
            Err(MatchError::InvalidRounds { .. })
        ));
        let index = index_with(&[]);
        let requests = vec![Point::new(0.0, 0.0).expect("valid"); BatchConfig::MAX_REQUESTS + 1];
        assert!(matches!(
            matcher(BatchConfig::default()).match_batch(&index, &requests, &Filter::any()),
            Err(MatchError::BatchTooLarge { .. })
        ));
    }

    #[test]
    fn concurrent_batches_never_match_a_driver_twice() {
        // Four matchers on overlapping requests over the same 40 drivers.
        let drivers: Vec<(f64, f64)> = (0..40)
            .map(|i| (0.001 * f64::from(i % 8), 0.001 * f64::from(i / 8)))
            .collect();
        let index = Arc::new(index_with(&drivers));
        let handles: Vec<_> = (0..4)
            .map(|worker| {
                let index = Arc::clone(&index);
                thread::spawn(move || {
                    let requests: Vec<Point> = (0..20)
                        .map(|i| {
                            let lat = 0.0005 * f64::from((i + worker) % 16);
                            Point::new(lat, 0.0005 * f64::from(i % 9)).expect("valid")
                        })
                        .collect();
                    let outcome = matcher(BatchConfig::default())
                        .match_batch(&*index, &requests, &Filter::any())
                        .expect("valid batch");
                    outcome
                        .matches
                        .iter()
                        .map(|m| m.candidate.driver)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<DriverId> = handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("the worker did not panic"))
            .collect();
        let matched = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), matched, "a driver was matched twice");
        assert!(matched > 0);
        // Every driver a batch reports is offered, and no other driver is.
        let offered = (0..40)
            .filter(|&id| {
                index.driver(DriverId(id)).expect("present").state == DriverState::Offered
            })
            .count();
        assert_eq!(offered, matched);
    }
}
