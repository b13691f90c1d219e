//! Model-checked claims: every interleaving of two threads on one driver.
//!
//! `RUSTFLAGS="--cfg infra_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p infra-geomatch --test loom`
#![cfg(infra_loom)]

use infra_common::ManualClock;
use infra_common::sync::{Arc, model, thread};
use infra_geomatch::{Config, DriverId, DriverProfile, DriverState, Error, Index, Point};

const DRIVER: DriverId = DriverId(1);

fn index_with_one_driver() -> Arc<Index<ManualClock>> {
    let index = Index::with_clock(Config::default().shards(2), ManualClock::new()).unwrap();
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
