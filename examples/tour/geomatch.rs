//! infra-geomatch: a city at rush hour — riders crowd five hot spots while drivers
//! are spread over the city; what a rider's app sees around it; the same requests matched one
//! by one and as a batch, then the surge map of the busiest cells.

use std::collections::HashSet;
use std::error::Error;

use infra_common::ManualClock;
use infra_geomatch::matching::{BatchConfig, BatchMatcher};
use infra_geomatch::surge::{Surge, SurgeConfig};
use infra_geomatch::{Config, DriverId, DriverProfile, Filter, Index, MAX_K, Point};

// The synthetic city of the geomatch examples: drivers spread evenly, requests crowding into
// five hot spots, all from a seed.
#[path = "../geomatch/city.rs"]
mod city;

const DRIVERS: usize = 3_000;
const REQUESTS: usize = 600;
/// Candidates each rider looks at, one by one as in the batch.
const CANDIDATES: usize = 8;

pub(crate) fn run() -> Result<(), Box<dyn Error>> {
    let city::City { drivers, requests } = city::City::new(7, DRIVERS, REQUESTS);

    // What the first rider's app shows: the 5 nearest free drivers within 2 km, however many
    // more are inside (the limit bounds the answer whatever radius the app sends).
    let index = city_index(&drivers)?;
    let around = index.within(requests[0], 2_000.0, 5, &Filter::any())?;
    let inside = index
        .within(requests[0], 2_000.0, MAX_K, &Filter::any())?
        .len();
    println!(
        "first rider: {inside} free drivers within 2 km; the app shows the {} nearest, the \
         closest {:.0} m away",
        around.len(),
        around.first().map_or(0.0, |driver| driver.distance_m)
    );

    // One by one, in arrival order: each rider gets the nearest driver still free.
    let mut one_by_one = Vec::with_capacity(REQUESTS);
    for &rider in &requests {
        if let Some((candidate, claim)) = index.claim_nearest(rider, CANDIDATES, &Filter::any())? {
            index.accept(&claim)?;
            one_by_one.push(candidate.distance_m);
        }
    }

    // The same riders in batches: each the assignment with the least total pickup distance
    // over every rider's nearest candidates; riders a batch could not serve wait for the next.
    let index = city_index(&drivers)?;
    let config = BatchConfig {
        candidates: CANDIDATES,
        ..BatchConfig::default()
    };
    let matcher = BatchMatcher::new(config)?;
    let mut batched = Vec::with_capacity(REQUESTS);
    let mut taken = HashSet::new();
    let mut waiting = requests.clone();
    let mut batches = 0;
    // Each assignment states what it proves: optimal on its candidate edges, or a bound.
    let mut proven_optimal = 0;
    while !waiting.is_empty() {
        let outcome = matcher.match_batch(&index, &waiting, &Filter::any())?;
        batches += 1;
        if outcome.solves.iter().all(|solve| solve.optimal) {
            proven_optimal += 1;
        }
        if outcome.matches.is_empty() {
            break;
        }
        for matched in &outcome.matches {
            index.accept(&matched.claim)?;
            batched.push(matched.candidate.distance_m);
            taken.insert(matched.candidate.driver);
        }
        waiting = outcome.unmatched.iter().map(|&at| waiting[at]).collect();
    }
    let side_km = 2.0 * city::HALF_SIDE_M / 1000.0;
    println!(
        "{REQUESTS} requests, mostly around 5 hot spots; {DRIVERS} drivers over {side_km:.0} km x {side_km:.0} km"
    );
    println!(
        "one by one: {} matched, mean pickup {:.0} m, p95 {:.0} m",
        one_by_one.len(),
        mean(&one_by_one),
        p95(&mut one_by_one)
    );
    println!(
        "in batches: {} matched in {batches} batches ({proven_optimal} proven optimal on their candidate edges), mean pickup {:.0} m, p95 {:.0} m",
        batched.len(),
        mean(&batched),
        p95(&mut batched)
    );

    // Surge over the default 5-minute window: every request is demand, every driver left
    // free is supply.
    let surge = Surge::new(SurgeConfig::default(), ManualClock::new())?;
    for &rider in &requests {
        surge.record_demand(rider)?;
    }
    for (id, &point) in (0..).zip(&drivers) {
        if !taken.contains(&DriverId(id)) {
            surge.record_supply(point)?;
        }
    }
    // The busiest cells: the highest multipliers, and among those the most requests.
    let mut cells = surge.snapshot();
    cells.sort_by(|a, b| {
        (b.multiplier.total_cmp(&a.multiplier)).then(b.counts.demand.cmp(&a.counts.demand))
    });
    println!("busiest cells (H3 resolution 8): requests, free drivers, multiplier");
    for cell in cells.iter().take(3) {
        println!(
            "  {}  {:>4} {:>4}  x{:.2}",
            cell.cell, cell.counts.demand, cell.counts.supply, cell.multiplier
        );
    }
    Ok(())
}

/// An index holding every driver, available.
fn city_index(drivers: &[Point]) -> Result<Index, Box<dyn Error>> {
    let index = Index::new(Config::default())?;
    for (id, &point) in (0..).zip(drivers) {
        index.insert(DriverId(id), point, DriverProfile::default())?;
    }
    Ok(index)
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// The 95th percentile (nearest rank).
fn p95(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = (values.len() * 95).div_ceil(100).saturating_sub(1);
    values.get(rank).copied().unwrap_or(0.0)
}
