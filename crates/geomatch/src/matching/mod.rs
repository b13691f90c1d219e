//! Assignment of requests to drivers: greedy nearest and batched minimum-cost matching.
//!
//! [`CandidateGraph`] holds the candidate edges of one batch (request, driver, cost) and
//! solves them two ways: [`CandidateGraph::solve`], the minimum of the total cost with a
//! fixed price for each request left unmatched, and [`CandidateGraph::greedy`], each request
//! in arrival order taking its cheapest free driver. The objective is stated exactly below.
//!
//! `solve` is exact within a [`WorkBudget`] on the edges its searches scan (default
//! [`WorkBudget::DEFAULT_PER_EDGE`] per edge), which ordinary batches stay far inside. Inputs
//! that make exact searches long (a sliding window of candidates whose costs differ by a
//! millionth, whole-minute ETAs) could otherwise cost work quadratic in the batch; past the
//! budget, requests whose searches run long take their cheapest free driver instead. Every
//! result carries a [`SolveQuality`]: proven optimal, or its objective beside a lower bound
//! on the optimum certified by a dual solution, for the caller to judge the gap.
//!
//! [`BatchMatcher`] runs a batch against any [`Drivers`](crate::Drivers) backend (the
//! in-process [`Index`](crate::Index), or the shared index on Redis): each request's
//! `k` nearest available drivers become its candidate edges (cost: the great-circle pickup
//! distance, or any cost function such as an ETA), the assignment is solved on those edges
//! (exactly, within the budget; [`BatchOutcome::solves`] says), and every assigned driver is
//! claimed atomically; requests whose claim was lost to
//! a race are re-solved on their remaining candidates. Greedy nearest for one request at a
//! time is [`Drivers::claim_nearest`](crate::Drivers::claim_nearest).
//!
//! # Objective
//!
//! With an `unmatched_cost` P, the solver picks pairings in which every request and every
//! driver appears at most once and minimises *the sum of the chosen edges' costs plus P for
//! each request left unmatched*. An edge costlier than P is never taken. With P above the sum
//! of all edge costs the optimum is a maximum matching, and the cheapest among maximum
//! matchings.

mod assignment;
mod batch;
mod bound;
#[cfg(feature = "metrics")]
pub mod metrics;

pub use assignment::{Assignment, CandidateGraph, Edge, MatchError, Pairing};
pub use batch::{BatchConfig, BatchMatch, BatchMatcher, BatchOutcome, FailedClaim};
pub use bound::{SolveQuality, WorkBudget};
