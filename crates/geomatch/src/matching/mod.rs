//! Assignment of requests to drivers: greedy nearest and batched minimum-cost matching.
//!
//! [`CandidateGraph`] holds the candidate edges of one batch (request, driver, cost) and
//! solves them two ways: [`CandidateGraph::solve`], the exact minimum of the total cost with a
//! fixed price for each request left unmatched, and [`CandidateGraph::greedy`], each request
//! in arrival order taking its cheapest free driver. The objective is stated exactly below.
//!
//! [`BatchMatcher`] runs a batch against any [`Drivers`](crate::Drivers) backend (the
//! in-process [`Index`](crate::Index), or the shared index on Redis): each request's
//! `k` nearest available drivers become its candidate edges (cost: the great-circle pickup
//! distance, or any cost function such as an ETA), the assignment is solved exactly on those
//! edges, and every assigned driver is claimed atomically; requests whose claim was lost to
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
