//! Model-checked claims: every interleaving of two threads on one driver.
//!
//! `RUSTFLAGS="--cfg infra_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p infra-geomatch --test loom`
#![cfg(infra_loom)]

use infra_common::ManualClock;
use infra_common::sync::{Arc, model, thread};
use infra_geomatch::{Config, DriverId, DriverProfile, DriverState, Error, Index, MAX_K, Point};

const DRIVER: DriverId = DriverId(1);

fn index_with_one_driver() -> Arc<Index<ManualClock>> {
    // One slot in the locator: a loom atomic apiece, and every guess shares it.
    let config = Config::default().shards(2).locator_slots(1);
    let index = Index::with_clock(config, ManualClock::new()).unwrap();
    index
        .insert(
            DRIVER,
            Point::new(52.52, 13.405).unwrap(),
            DriverProfile::default(),
        )
        .unwrap();
    Arc::new(index)
}

/// Two matchers claim the driver they both found: exactly one wins, the other is told it lost.
///
/// Guards: the compare-and-swap of the state word in `Index::claim`.
#[test]
fn two_claimers_of_one_driver_one_wins() {
    model(|| {
        let index = index_with_one_driver();
        let seen = index.driver(DRIVER).unwrap().version;
        let claimers: Vec<_> = (0..2)
            .map(|_| {
                let index = Arc::clone(&index);
                thread::spawn(move || index.claim(DRIVER, seen))
            })
            .collect();
        let outcomes: Vec<_> = claimers.into_iter().map(|t| t.join().unwrap()).collect();
        let won = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(won, 1, "{outcomes:?}");
        assert!(
            outcomes.contains(&Err(Error::ClaimLost(DRIVER))),
            "{outcomes:?}"
        );
        assert_eq!(index.driver(DRIVER).unwrap().state, DriverState::Offered);
    });
}

/// A driver goes offline and back online while a matcher claims it with the version it read
/// before: the claim may win only before the flip, and then the flip cancels it, so the driver
/// is never offered on a state it no longer has.
///
/// Guards: the version bump of every state change (`next_word`), which makes a version read
/// before the flip differ from the one after it although the state is the same.
#[test]
fn a_claim_from_before_a_state_flip_never_survives_it() {
    model(|| {
        let index = index_with_one_driver();
        let seen = index.driver(DRIVER).unwrap().version;
        let claimer = {
            let index = Arc::clone(&index);
            thread::spawn(move || index.claim(DRIVER, seen))
        };
        index.set_state(DRIVER, DriverState::Offline).unwrap();
        index.set_state(DRIVER, DriverState::Available).unwrap();
        if let Ok(claim) = claimer.join().unwrap() {
            assert_eq!(index.accept(&claim), Err(Error::ClaimInvalid(DRIVER)));
        }
        assert_eq!(index.driver(DRIVER).unwrap().state, DriverState::Available);
    });
}

/// The driver crosses into another cell while a matcher claims it: the claim finds it in one
/// bucket or the other, never in neither, and the state moves with the row.
///
/// Guards: the claim holds its driver's table lock from the cell lookup to the state change, so
/// the move (which holds it for writing) cannot run in between.
#[test]
fn a_claim_racing_a_cell_change_finds_the_driver() {
    model(|| {
        let index = index_with_one_driver();
        let seen = index.driver(DRIVER).unwrap().version;
        let claimer = {
            let index = Arc::clone(&index);
            thread::spawn(move || index.claim(DRIVER, seen))
        };
        // About 2 km east: another resolution-9 cell.
        index
            .update(DRIVER, Point::new(52.52, 13.435).unwrap())
            .unwrap();
        let claim = claimer.join().unwrap().expect("the only claimer wins");
        index.accept(&claim).unwrap();
        assert_eq!(index.driver(DRIVER).unwrap().state, DriverState::Busy);
    });
}

/// A matcher claims with the version it read while the driver is removed and inserted again
/// (an app restart, or a hand-off out and back): the claim may win only on the stay it read,
/// and then that stay's end cancels it, so the new stay is never offered on an old reading.
///
/// Guards: the version floor raised by `Index::remove`, which starts the new stay above every
/// version of the old one.
#[test]
fn a_claim_from_before_a_removal_never_holds_after_reinsertion() {
    model(|| {
        let index = index_with_one_driver();
        let seen = index.driver(DRIVER).unwrap().version;
        let claimer = {
            let index = Arc::clone(&index);
            thread::spawn(move || index.claim(DRIVER, seen))
        };
        let record = index.remove(DRIVER).unwrap();
        index
            .insert(DRIVER, record.point, DriverProfile::default())
            .unwrap();
        if let Ok(claim) = claimer.join().unwrap() {
            assert_eq!(index.accept(&claim), Err(Error::ClaimInvalid(DRIVER)));
        }
        assert_eq!(index.driver(DRIVER).unwrap().state, DriverState::Available);
    });
}

/// A driver crosses from the query's cell into a neighbouring one while a nearest query walks
/// the rings: the query may see it in either cell, or in neither (as if its report came a
/// moment later), but it returns it at most once, and always returns the nearest driver that
/// did not move; so does a radius query.
///
/// Guards: `drop_repeats` in `Index::nearest` and `Index::within`, and the walk `nearest` makes
/// again for the place a repeat took, so a move during the walk neither repeats a driver nor
/// pushes another out of the best `k`.
#[test]
fn a_driver_moving_during_a_query_is_returned_at_most_once() {
    use infra_geomatch::Filter;
    model(|| {
        // No locator: its guesses, checked at the query's start, are the library's model; here
        // their locks would only multiply the interleavings past what the model explores.
        let config = Config::default().shards(2).locator_slots(0);
        let index = Index::with_clock(config, ManualClock::new()).unwrap();
        let resolution = index.config().bucket_resolution();
        let query = Point::new(52.52, 13.405).unwrap();
        let origin = query.cell(resolution);
        let neighbours: Vec<h3o::CellIndex> = origin
            .grid_disk::<Vec<_>>(1)
            .into_iter()
            .filter(|&cell| cell != origin)
            .collect();
        // The point `t` of the way from the query to the center of `cell`.
        let toward = |cell: h3o::CellIndex, t: f64| {
            let to = h3o::LatLng::from(cell);
            let at = Point::new(
                query.lat() + t * (to.lat() - query.lat()),
                query.lng() + t * (to.lng() - query.lng()),
            )
            .unwrap();
            assert_eq!(at.cell(resolution), cell);
            at
        };
        // The moving driver starts a few meters from the query and ends just across the
        // edge, nearer than the driver that stays in the cell it enters; a third is farther
        // in that cell.
        let (moving, staying, farther) = (DRIVER, DriverId(2), DriverId(3));
        let start = Point::new(52.520_05, 13.405).unwrap();
        assert_eq!(start.cell(resolution), origin);
        let end = toward(neighbours[0], 0.6);
        let (stays_at, farther_at) = (toward(neighbours[0], 0.8), toward(neighbours[0], 1.0));
        assert!(query.distance_m(end) < query.distance_m(stays_at));
        assert!(query.distance_m(stays_at) < query.distance_m(farther_at));
        assert!(query.distance_m(stays_at) < 350.0);
        let profile = DriverProfile::default();
        index.insert(moving, start, profile).unwrap();
        index.insert(staying, stays_at, profile).unwrap();
        index.insert(farther, farther_at, profile).unwrap();
        // Busy drivers: one in each cell of the query's first two rings (an empty cell would
        // weigh on the walk's choice to scan every bucket instead, in an order that depends
        // on hashing), and far away, one per cell, enough that the query walks its rings.
        for (i, cell) in origin.grid_disk::<Vec<_>>(2).into_iter().enumerate() {
            let id = DriverId(2_000 + i as u64);
            index.insert(id, toward(cell, 1.0), profile).unwrap();
            index.set_state(id, DriverState::Busy).unwrap();
        }
        for i in 0..40u64 {
            let id = DriverId(1_000 + i);
            let far = Point::new(48.0 + 0.05 * i as f64, 2.0).unwrap();
            index.insert(id, far, profile).unwrap();
            index.set_state(id, DriverState::Busy).unwrap();
        }
        let index = Arc::new(index);
        let querier = {
            let index = Arc::clone(&index);
            thread::spawn(move || {
                let nearest = index.nearest(query, 2, &Filter::any()).unwrap();
                let within = index.within(query, 350.0, MAX_K, &Filter::any()).unwrap();
                (nearest, within)
            })
        };
        index.update(moving, end).unwrap();
        let (nearest, within) = querier.join().unwrap();
        for found in [nearest, within] {
            let found: Vec<DriverId> = found.iter().map(|candidate| candidate.driver).collect();
            assert!(found.contains(&staying), "{found:?}");
            let mut distinct = found.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), found.len(), "a driver twice: {found:?}");
        }
    });
}

/// A pass over the index's records while the driver crosses into another cell and back lists
/// it exactly once: the pass a node makes after a change of membership would otherwise skip a
/// driver, leaving it on a node no query asks, or hand it over twice.
///
/// Guards: `Index::records` walks the driver table, whose part a move holds for writing,
/// rather than the cell table, where a moving driver can be met twice or not at all.
#[test]
fn records_during_a_cell_change_list_the_driver_once() {
    model(|| {
        let index = index_with_one_driver();
        let home = index.driver(DRIVER).unwrap().point;
        let mover = {
            let index = Arc::clone(&index);
            thread::spawn(move || {
                // About 20 km east, in another part of the cell table, and back.
                index
                    .update(DRIVER, Point::new(52.52, 13.7).unwrap())
                    .unwrap();
                index.update(DRIVER, home).unwrap();
            })
        };
        let listed: Vec<DriverId> = index.records().iter().map(|record| record.id).collect();
        mover.join().unwrap();
        assert_eq!(listed, [DRIVER]);
    });
}
