//! Batches whose claims race with rivals, state changes and removals between the queries and
//! the claims: every request is answered once, no driver is matched twice, and the drivers
//! left offered are exactly those the batch and its rivals hold.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};

use infra_common::ManualClock;
use infra_geomatch::matching::{BatchConfig, BatchMatcher};
use infra_geomatch::{
    Candidate, Config, DriverId, DriverProfile, DriverState, Filter, Index, Point,
};
use proptest::prelude::*;

/// What happens to a candidate while the batch prices it.
#[derive(Clone, Copy, Debug)]
enum Race {
    /// A rival matcher claims it.
    Claimed,
    /// It goes offline and comes back: a new version.
    Flipped,
    /// It leaves the index.
    Removed,
    /// Nothing.
    Calm,
}

fn race() -> impl Strategy<Value = Race> {
    proptest::sample::select(vec![
        Race::Claimed,
        Race::Flipped,
        Race::Removed,
        Race::Calm,
        Race::Calm,
        Race::Calm,
    ])
}

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

/// Runs `race` on `candidate`; returns the driver if a rival now holds it.
fn run(index: &Index<ManualClock>, candidate: &Candidate, race: Race) -> Option<DriverId> {
    match race {
        Race::Claimed => index
            .claim(candidate.driver, candidate.version)
            .ok()
            .map(|claim| claim.driver()),
        Race::Flipped => {
            let _gone = index.set_state(candidate.driver, DriverState::Offline);
            let _back = index.set_state(candidate.driver, DriverState::Available);
            None
        }
        Race::Removed => {
            let _gone = index.remove(candidate.driver);
            None
        }
        Race::Calm => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_024))]

    #[test]
    fn races_never_drop_a_request_nor_match_a_driver_twice(
        drivers in proptest::collection::vec((0.0f64..0.02, 0.0f64..0.02), 0..8),
        requests in proptest::collection::vec((0.0f64..0.02, 0.0f64..0.02), 0..8),
        races in proptest::collection::vec(race(), 64),
        candidates in 1usize..5,
        max_rounds in 1u32..4,
    ) {
        let index = index_with(&drivers);
        let points: Vec<Point> =
            requests.iter().map(|&(lat, lng)| Point::new(lat, lng).expect("valid")).collect();
        let priced = Cell::new(0_usize);
        let rivals = RefCell::new(Vec::new());
        let config = BatchConfig { candidates, max_rounds, ..BatchConfig::default() };
        let outcome = BatchMatcher::with_clock(config, ManualClock::new())
            .expect("valid")
            .match_batch_by(&index, &points, &Filter::any(), |_, candidate| {
                priced.set(priced.get() + 1);
                if let Some(driver) = run(&index, candidate, races[priced.get() % races.len()]) {
                    rivals.borrow_mut().push(driver);
                }
                Some(candidate.distance_m)
            })
            .expect("valid batch");

        let mut answered: Vec<usize> = outcome
            .matches
            .iter()
            .map(|matched| matched.request)
            .chain(outcome.unmatched.iter().copied())
            .collect();
        answered.sort_unstable();
        prop_assert_eq!(answered, (0..points.len()).collect::<Vec<_>>());
        let mut ours: Vec<DriverId> =
            outcome.matches.iter().map(|matched| matched.candidate.driver).collect();
        ours.sort_unstable();
        let held = ours.len();
        ours.dedup();
        prop_assert_eq!(held, ours.len(), "a driver matched twice");
        prop_assert!(outcome.rounds <= max_rounds);
        prop_assert_eq!(outcome.solves.len(), outcome.rounds as usize);
        let rivals = rivals.into_inner();
        for id in (0..drivers.len() as u64).map(DriverId) {
            let Ok(record) = index.driver(id) else { continue };
            let held = ours.contains(&id) || rivals.contains(&id);
            prop_assert_eq!(record.state == DriverState::Offered, held, "{:?}", id);
        }
        for matched in &outcome.matches {
            prop_assert!(!rivals.contains(&matched.candidate.driver));
            index.accept(&matched.claim).expect("the batch holds its claims");
        }
    }
}

#[test]
fn a_cost_function_that_panics_leaves_every_driver_available() {
    let index = index_with(&[(0.0, 0.001), (0.0, 0.002)]);
    let requests = [
        Point::new(0.0, 0.0).expect("valid"),
        Point::new(0.0, 0.003).expect("valid"),
    ];
    let matcher =
        BatchMatcher::with_clock(BatchConfig::default(), ManualClock::new()).expect("valid");
    let unwound = catch_unwind(AssertUnwindSafe(|| {
        matcher.match_batch_by(&index, &requests, &Filter::any(), |request, candidate| {
            assert!(request == 0, "the ETA service is down");
            Some(candidate.distance_m)
        })
    }));
    assert!(unwound.is_err());
    for id in [DriverId(0), DriverId(1)] {
        assert_eq!(
            index.driver(id).expect("present").state,
            DriverState::Available
        );
    }
}
