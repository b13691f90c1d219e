//! Many threads updating positions and many matching at once never assign a driver twice.

use std::collections::HashSet;

use infra_common::sync::atomic::{AtomicBool, Ordering};
use infra_common::sync::{Arc, Mutex, thread};
use infra_geomatch::{Config, DriverId, DriverProfile, DriverState, Filter, Index, Point};

const DRIVERS: u64 = 400;
const UPDATERS: u64 = 3;
const MATCHERS: u64 = 4;
const ROUNDS: u64 = 3_000;

/// A small deterministic generator per thread.
fn next(state: &mut u64) -> f64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

/// A point in a 3 km square: a few dozen resolution-9 cells, so updates change cells often.
fn somewhere(state: &mut u64) -> Point {
    Point::new(52.50 + 0.027 * next(state), 13.40 + 0.044 * next(state)).unwrap()
}

#[test]
fn concurrent_updates_and_matches_never_double_assign() {
    let index = Arc::new(Index::new(Config::default().shards(4)).unwrap());
    let mut seed = 7;
    for id in 0..DRIVERS {
        index
            .insert(DriverId(id), somewhere(&mut seed), DriverProfile::default())
            .unwrap();
    }
    let assigned = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for t in 0..UPDATERS {
        let index = Arc::clone(&index);
        threads.push(thread::spawn(move || {
            let mut seed = 100 + t;
            for round in 0..ROUNDS * 4 {
                let id = DriverId((round * 7 + t * 13) % DRIVERS);
                index.update(id, somewhere(&mut seed)).unwrap();
            }
        }));
    }
    for t in 0..MATCHERS {
        let (index, assigned) = (Arc::clone(&index), Arc::clone(&assigned));
        threads.push(thread::spawn(move || {
            let mut seed = 1_000 + t;
            let mut mine = Vec::new();
            for _ in 0..ROUNDS {
                let rider = somewhere(&mut seed);
                if let Some((candidate, claim)) =
                    index.claim_nearest(rider, 8, &Filter::any()).unwrap()
                {
                    assert_eq!(candidate.driver, claim.driver());
                    // Half the offers are declined and go back to the pool; the others are
                    // trips, and a busy driver must never be offered again.
                    if next(&mut seed) < 0.5 {
                        index.decline(claim).unwrap();
                    } else {
                        index.accept(&claim).unwrap();
                        mine.push(claim.driver());
                    }
                }
            }
            assigned.lock().extend(mine);
        }));
    }
    for thread in threads {
        thread.join().unwrap();
    }
    let assigned = assigned.lock();
    let distinct: HashSet<_> = assigned.iter().collect();
    assert_eq!(
        distinct.len(),
        assigned.len(),
        "a driver was assigned twice"
    );
    assert!(
        assigned.len() > DRIVERS as usize / 2,
        "too few matches to mean anything: {}",
        assigned.len()
    );
    for id in 0..DRIVERS {
        let state = index.driver(DriverId(id)).unwrap().state;
        assert_eq!(
            state == DriverState::Busy,
            distinct.contains(&DriverId(id)),
            "driver {id}: {state:?}"
        );
    }
}

/// A pass over the index's records while drivers keep crossing cells lists every driver
/// exactly once: the pass a node makes after a change of membership, to hand each driver
/// whose partition moved to its new owner, must neither skip a driver (it would stay on a
/// node no query asks) nor list one twice.
#[test]
fn records_list_each_driver_once_while_drivers_cross_cells() {
    const MOVERS: u64 = 200;
    const PASSES: usize = 200;
    let index = Arc::new(Index::new(Config::default()).unwrap());
    // Each driver flips between two places about 20 km apart: cells whose parts of the cell
    // table differ for most drivers.
    let place = |id: u64, far: bool| {
        let (row, column) = ((id / 20) as f64, (id % 20) as f64);
        let lng = 13.0 + 0.01 * column + if far { 0.3 } else { 0.0 };
        Point::new(52.3 + 0.01 * row, lng).unwrap()
    };
    for id in 0..MOVERS {
        index
            .insert(DriverId(id), place(id, false), DriverProfile::default())
            .unwrap();
    }
    let done = Arc::new(AtomicBool::new(false));
    let mover = {
        let (index, done) = (Arc::clone(&index), Arc::clone(&done));
        thread::spawn(move || {
            let mut far = false;
            while !done.load(Ordering::Acquire) {
                far = !far;
                for id in 0..MOVERS {
                    index.update(DriverId(id), place(id, far)).unwrap();
                }
            }
        })
    };
    let mut bad_passes = Vec::new();
    for pass in 0..PASSES {
        let mut ids: Vec<u64> = index.records().iter().map(|record| record.id.0).collect();
        ids.sort_unstable();
        if ids != (0..MOVERS).collect::<Vec<_>>() {
            bad_passes.push((pass, ids.len()));
        }
    }
    done.store(true, Ordering::Release);
    mover.join().unwrap();
    assert!(
        bad_passes.is_empty(),
        "{} of {PASSES} passes did not list each driver once (pass, listed): {:?}",
        bad_passes.len(),
        &bad_passes[..bad_passes.len().min(5)]
    );
}
