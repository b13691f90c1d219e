//! Matching quality on a synthetic city: greedy nearest in arrival order against batched
//! minimum-cost matching, by mean and 95th-percentile pickup distance, printed as a Markdown
//! table.
//!
//! `cargo run --release -p examples --example geomatch_city`
//!
//! 5,000 drivers wait spread evenly over a 20 km square; 1,000 requests arrive, three
//! quarters of them around five hot spots, so drivers near the hot spots run out. Greedy
//! gives each request, as it arrives, its nearest available driver
//! (`Index::claim_nearest`). Batched collects the requests of a window and assigns them
//! together (`BatchMatcher`, 8 candidates per request); requests a window leaves unmatched
//! (all their candidates went to others) join the next window, and after the last window the
//! leftovers are batched again until no more can be served. The seed is fixed, so every run
//! prints the same city.

use std::error::Error;
use std::time::Instant;

use infra_geomatch::matching::{BatchConfig, BatchMatcher};
use infra_geomatch::{Config, DriverId, DriverProfile, Filter, Index, Point};

#[path = "city.rs"]
mod city;

use city::City;

const SEED: u64 = 14;
const DRIVERS: usize = 5_000;
const REQUESTS: usize = 1_000;
const CANDIDATES: usize = 8;

fn index_of(city: &City) -> Result<Index, Box<dyn Error>> {
    let index = Index::new(Config::default())?;
    for (id, &at) in city.drivers.iter().enumerate() {
        index.insert(DriverId(id as u64), at, DriverProfile::default())?;
    }
    Ok(index)
}

/// One strategy's pickup distances (meters) of the served requests, and its wall time.
struct Run {
    name: String,
    pickups: Vec<f64>,
    millis: f64,
}

fn greedy(city: &City) -> Result<Run, Box<dyn Error>> {
    let index = index_of(city)?;
    let started = Instant::now();
    let mut pickups = Vec::new();
    for &request in &city.requests {
        if let Some((candidate, claim)) =
            index.claim_nearest(request, CANDIDATES, &Filter::any())?
        {
            pickups.push(candidate.distance_m);
            index.accept(&claim)?;
        }
    }
    Ok(Run {
        name: "greedy nearest, in arrival order".into(),
        pickups,
        millis: started.elapsed().as_secs_f64() * 1e3,
    })
}

fn batched(city: &City, window: usize) -> Result<Run, Box<dyn Error>> {
    let index = index_of(city)?;
    let matcher = BatchMatcher::new(BatchConfig {
        candidates: CANDIDATES,
        ..BatchConfig::default()
    })?;
    let started = Instant::now();
    let mut pickups = Vec::new();
    let mut carried: Vec<Point> = Vec::new();
    let mut settle = |batch: &[Point]| -> Result<Vec<Point>, Box<dyn Error>> {
        let outcome = matcher.match_batch(&index, batch, &Filter::any())?;
        for matched in &outcome.matches {
            pickups.push(matched.cost);
            index.accept(&matched.claim)?;
        }
        Ok(outcome.unmatched.iter().map(|&at| batch[at]).collect())
    };
    for window in city.requests.chunks(window) {
        carried.extend_from_slice(window);
        carried = settle(&carried)?;
    }
    while !carried.is_empty() {
        let left = settle(&carried)?;
        if left.len() == carried.len() {
            break;
        }
        carried = left;
    }
    Ok(Run {
        name: if window >= city.requests.len() {
            format!("batched, all {} at once", city.requests.len())
        } else {
            format!("batched, windows of {window}")
        },
        pickups,
        millis: started.elapsed().as_secs_f64() * 1e3,
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let city = City::new(SEED, DRIVERS, REQUESTS);
    println!(
        "{} drivers spread evenly, {} requests ({}% around 5 hot spots), seed {SEED}, {CANDIDATES} candidates per request\n",
        DRIVERS,
        REQUESTS,
        (city::HOT_SHARE * 100.0).round()
    );
    println!(
        "| strategy | served | mean pickup (m) | P95 pickup (m) | total pickup (km) | time (ms) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for run in [
        greedy(&city)?,
        batched(&city, 50)?,
        batched(&city, 200)?,
        batched(&city, REQUESTS)?,
    ] {
        let (mean, p95) = mean_and_p95(&run.pickups);
        println!(
            "| {} | {} | {mean:.0} | {p95:.0} | {:.1} | {:.1} |",
            run.name,
            run.pickups.len(),
            run.pickups.iter().sum::<f64>() / 1e3,
            run.millis
        );
    }
    Ok(())
}

/// Mean and 95th percentile (nearest rank) of `values`; zeros when empty.
fn mean_and_p95(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
    let rank = (0.95 * sorted.len() as f64).ceil() as usize;
    (mean, sorted[rank.clamp(1, sorted.len()) - 1])
}
