//! Assignment of requests to drivers: greedy nearest and batched minimum-cost matching.
//!
//! [`CandidateGraph`] holds the candidate edges of one batch (request, driver, cost) and
//! solves them two ways: [`CandidateGraph::solve`], the exact minimum of the total cost with a
//! fixed price for each request left unmatched, and [`CandidateGraph::greedy`], each request
//! in arrival order taking its cheapest free driver. The objective is stated exactly below.
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

pub use assignment::{Assignment, CandidateGraph, Edge, MatchError, Pairing};
pub use batch::{BatchConfig, BatchMatch, BatchMatcher, BatchOutcome};
