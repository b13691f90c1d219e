//! Arbitrary sequences of inserts, position updates, removals, state changes, claims (with
//! fresh and with remembered versions), accepts, declines, clock advances, nearest, radius and
//! greedy-claim queries on the driver index agree step by step with the crate's brute-force
//! model: same errors for bad coordinates, radii and unknown drivers, the same drivers at the
//! same great-circle distances, and claims that win exactly when the model says nothing changed.
//! Positions cluster around a city, the antimeridian, both poles and a pentagon, so queries
//! cross cells, wrap around the globe and meet distorted cells; raw floats reach validation.
#![no_main]
// `derive(Arbitrary)` declares a std thread-local (its recursion guard), a type the workspace
// clippy.toml keeps behind infra_common::sync; a fuzz target is single-threaded test code.
#![allow(clippy::disallowed_types)]

use arbitrary::Arbitrary;
use infra_geomatch::reference::{Op, run};
use infra_geomatch::{Config, DriverState, MAX_K};
use libfuzzer_sys::fuzz_target;

/// Places the positions cluster around: a city, the antimeridian, near each pole, and the
/// pentagon of base cell 4 (its center, 64.7° N 10.536° E, is a pentagon at every resolution).
const PLACES: [(f64, f64); 5] = [
    (52.52, 13.405),
    (0.0, 180.0),
    (89.99, 0.0),
    (-89.99, 45.0),
    (64.7, 10.536_199),
];

#[derive(Debug, Arbitrary)]
enum Coordinate {
    /// Near place `place % 5`, offset by up to about ±0.033 degrees each way.
    Near { place: u8, dlat: i16, dlng: i16 },
    /// Any two floats: NaN, infinities and out-of-range values must be refused.
    Raw(f64, f64),
}

impl Coordinate {
    fn get(&self) -> (f64, f64) {
        match *self {
            Self::Near { place, dlat, dlng } => {
                let (lat, lng) = PLACES[usize::from(place) % PLACES.len()];
                let lat = (lat + f64::from(dlat) * 1e-6).clamp(-90.0, 90.0);
                let mut lng = lng + f64::from(dlng) * 1e-6;
                if lng > 180.0 {
                    lng -= 360.0;
                }
                (lat, lng)
            }
            Self::Raw(lat, lng) => (lat, lng),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum FuzzState {
    Available,
    Offered,
    Busy,
    Offline,
}

#[derive(Debug, Arbitrary)]
enum FuzzOp {
    Insert {
        id: u8,
        at: Coordinate,
        class: u8,
        capacity: u8,
    },
    Update {
        id: u8,
        at: Coordinate,
    },
    Remove {
        id: u8,
    },
    SetState {
        id: u8,
        state: FuzzState,
    },
    Claim {
        id: u8,
    },
    ClaimSeen {
        id: u8,
    },
    Accept {
        slot: u8,
    },
    Decline {
        slot: u8,
    },
    Advance(u32),
    Nearest {
        at: Coordinate,
        k: u8,
        class: Option<u8>,
        min_capacity: u8,
    },
    Within {
        at: Coordinate,
        radius_m: f64,
        limit: u8,
    },
    WithinMeters {
        at: Coordinate,
        radius_m: u16,
        limit: u8,
    },
    ClaimNearest {
        at: Coordinate,
        k: u8,
    },
}

/// The bucket resolutions: the default, a fine one where a query crosses many cells, and the
/// three coarsest, where the rings of cells wrap around the globe.
const RESOLUTIONS: [h3o::Resolution; 5] = [
    h3o::Resolution::Nine,
    h3o::Resolution::Eleven,
    h3o::Resolution::Zero,
    h3o::Resolution::One,
    h3o::Resolution::Two,
];

/// A radius query's limit: mostly small (so that it cuts answers), sometimes the largest
/// allowed or one above it (which must be refused).
fn within_limit(byte: u8) -> usize {
    match byte {
        255 => MAX_K + 1,
        254 => MAX_K,
        small => usize::from(small % 8),
    }
}

/// The locator's sizes: none, one slot that every square shares (its guess mostly wrong),
/// and a few that squares share less often. The default's 2^18 slots would make each run
/// mostly the table's allocation.
const LOCATOR_SLOTS: [usize; 3] = [0, 1, 64];

#[derive(Debug, Arbitrary)]
struct Input {
    /// `RESOLUTIONS[resolution % 5]`.
    resolution: u8,
    /// `LOCATOR_SLOTS[locator % 3]`.
    locator: u8,
    ops: Vec<FuzzOp>,
}

fuzz_target!(|input: Input| {
    let ops: Vec<Op> = input
        .ops
        .iter()
        .take(200)
        .map(|op| match *op {
            FuzzOp::Insert {
                id,
                ref at,
                class,
                capacity,
            } => {
                let (lat, lng) = at.get();
                Op::Insert {
                    id: id % 16,
                    lat,
                    lng,
                    class: class % 3,
                    capacity: capacity % 8,
                }
            }
            FuzzOp::Update { id, ref at } => {
                let (lat, lng) = at.get();
                Op::Update {
                    id: id % 16,
                    lat,
                    lng,
                }
            }
            FuzzOp::Remove { id } => Op::Remove { id: id % 16 },
            FuzzOp::SetState { id, ref state } => Op::SetState {
                id: id % 16,
                state: match state {
                    FuzzState::Available => DriverState::Available,
                    FuzzState::Offered => DriverState::Offered,
                    FuzzState::Busy => DriverState::Busy,
                    FuzzState::Offline => DriverState::Offline,
                },
            },
            FuzzOp::Claim { id } => Op::Claim { id: id % 16 },
            FuzzOp::ClaimSeen { id } => Op::ClaimSeen { id: id % 16 },
            FuzzOp::Accept { slot } => Op::Accept {
                slot: usize::from(slot),
            },
            FuzzOp::Decline { slot } => Op::Decline {
                slot: usize::from(slot),
            },
            // Up to about 43 s: across the 30 s staleness window in one or two steps.
            FuzzOp::Advance(by) => Op::Advance(u64::from(by) * 10),
            FuzzOp::Nearest {
                ref at,
                k,
                class,
                min_capacity,
            } => {
                let (lat, lng) = at.get();
                Op::Nearest {
                    lat,
                    lng,
                    k: usize::from(k % 64),
                    class: class.map(|c| c % 3),
                    min_capacity: min_capacity % 8,
                }
            }
            FuzzOp::Within {
                ref at,
                radius_m,
                limit,
            } => {
                let (lat, lng) = at.get();
                Op::Within {
                    lat,
                    lng,
                    radius_m,
                    limit: within_limit(limit),
                }
            }
            FuzzOp::WithinMeters {
                ref at,
                radius_m,
                limit,
            } => {
                let (lat, lng) = at.get();
                Op::Within {
                    lat,
                    lng,
                    radius_m: f64::from(radius_m),
                    limit: within_limit(limit),
                }
            }
            FuzzOp::ClaimNearest { ref at, k } => {
                let (lat, lng) = at.get();
                Op::ClaimNearest {
                    lat,
                    lng,
                    k: usize::from(k % 32),
                }
            }
        })
        .collect();
    let resolution = RESOLUTIONS[usize::from(input.resolution) % RESOLUTIONS.len()];
    let locator_slots = LOCATOR_SLOTS[usize::from(input.locator) % LOCATOR_SLOTS.len()];
    let config = Config::default()
        .resolution(resolution)
        .shards(4)
        .locator_slots(locator_slots);
    if let Err(disagreement) = run(config, &ops) {
        panic!("{disagreement}");
    }
});
