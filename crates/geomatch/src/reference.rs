//! A brute-force model of the driver index, written from the definitions, and a driver that
//! runs the same operations on an [`Index`] and on the model and compares every answer.
//!
//! The model shares nothing with the implementation: it keeps drivers in a list, measures
//! distance with the spherical Vincenty formula written out below, and answers every query by scanning
//! and sorting the whole list.
//!
//! - A coordinate is valid iff latitude is finite in [-90, 90] and longitude finite in
//!   [-180, 180].
//! - A driver is *eligible* for a query iff it is available, passes the filter, and was heard
//!   from no longer ago than the staleness window.
//! - `nearest(k)` is the `k` eligible drivers of least distance; `within(r, limit)` every
//!   eligible driver at distance ≤ r, or the `limit` of least distance when there are more. Distances are compared to a tolerance of a micrometer per
//!   kilometer, so ties and round-off may order equal-distance drivers differently.
//! - Every state change (claim, accept, decline, set) and every insertion gives the driver a
//!   new version, never one it had before, not even before a removal; a claim succeeds iff the
//!   driver is known, the version read is current and available, and the driver is fresh;
//!   accept and decline succeed iff nothing changed since the claim, so a claim held across a
//!   removal and a new insertion of the driver fails. A failed
//!   claim reports, first that applies: not available (the version was read in another
//!   state), unknown driver, stale, lost (the version changed).
//!
//! Only available to tests and fuzzing (`cfg(test)` or `cfg(fuzzing)`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use infra_common::ManualClock;

use crate::{
    Claim, Config, DriverId, DriverProfile, DriverState, Error, Filter, Index, MAX_K, Point,
    VehicleClass, Version,
};

/// The sphere's radius, meters (the IUGG mean Earth radius).
const RADIUS_M: f64 = 6_371_008.8;

/// The staleness window of the scenarios.
pub const STALENESS: Duration = Duration::from_secs(30);

/// Great-circle distance by the spherical Vincenty formula, in meters: the haversine's arc
/// sine loses about half its digits near the antipodes (tenths of a meter), this `atan2` form
/// does not.
pub fn great_circle_m(lat1: f64, lng1: f64, lat2: f64, lng2: f64) -> f64 {
    let (phi1, phi2) = (lat1.to_radians(), lat2.to_radians());
    let dlambda = (lng2 - lng1).to_radians();
    let y = ((phi2.cos() * dlambda.sin()).powi(2)
        + (phi1.cos() * phi2.sin() - phi1.sin() * phi2.cos() * dlambda.cos()).powi(2))
    .sqrt();
    let x = phi1.sin() * phi2.sin() + phi1.cos() * phi2.cos() * dlambda.cos();
    RADIUS_M * y.atan2(x)
}

fn valid(lat: f64, lng: f64) -> bool {
    lat.is_finite() && lng.is_finite() && lat.abs() <= 90.0 && lng.abs() <= 180.0
}

/// One driver as the model keeps it.
#[derive(Clone, Debug)]
struct ModelDriver {
    lat: f64,
    lng: f64,
    class: u8,
    capacity: u8,
    state: DriverState,
    /// The harness's change count when this driver last changed (or entered): a stamp no
    /// other change of any driver shares.
    changes: u64,
    seen: u64,
}

/// One step of a scenario. Driver ids are small so that operations meet.
#[derive(Clone, Debug)]
pub enum Op {
    /// Insert driver `id` at a position with a class and capacity.
    Insert {
        /// Driver id.
        id: u8,
        /// Latitude, degrees (any value: invalid ones must be refused).
        lat: f64,
        /// Longitude, degrees.
        lng: f64,
        /// Vehicle class.
        class: u8,
        /// Seats.
        capacity: u8,
    },
    /// Report a new position.
    Update {
        /// Driver id.
        id: u8,
        /// Latitude.
        lat: f64,
        /// Longitude.
        lng: f64,
    },
    /// Remove a driver.
    Remove {
        /// Driver id.
        id: u8,
    },
    /// Set a driver's state.
    SetState {
        /// Driver id.
        id: u8,
        /// The state.
        state: DriverState,
    },
    /// Read the driver's current version and claim it with that version.
    Claim {
        /// Driver id.
        id: u8,
    },
    /// Claim with the version seen by the last query that returned the driver.
    ClaimSeen {
        /// Driver id.
        id: u8,
    },
    /// Accept the held claim in slot `slot % held`.
    Accept {
        /// Which held claim.
        slot: usize,
    },
    /// Decline the held claim in slot `slot % held`.
    Decline {
        /// Which held claim.
        slot: usize,
    },
    /// Move the clock forward, nanoseconds.
    Advance(u64),
    /// The `k` nearest.
    Nearest {
        /// Latitude.
        lat: f64,
        /// Longitude.
        lng: f64,
        /// How many.
        k: usize,
        /// Only this class, if any.
        class: Option<u8>,
        /// At least this many seats.
        min_capacity: u8,
    },
    /// Everything within a radius.
    Within {
        /// Latitude.
        lat: f64,
        /// Longitude.
        lng: f64,
        /// Meters (any value: invalid ones must be refused).
        radius_m: f64,
        /// The most drivers wanted (above `MAX_K` must be refused).
        limit: usize,
    },
    /// Greedy nearest claim.
    ClaimNearest {
        /// Latitude.
        lat: f64,
        /// Longitude.
        lng: f64,
        /// How many candidates.
        k: usize,
    },
}

/// The model and the index side by side.
#[derive(Debug)]
pub struct Harness {
    clock: ManualClock,
    index: Index<ManualClock>,
    model: HashMap<u8, ModelDriver>,
    /// Version seen by the last query that returned the driver: ours and the model's count.
    seen: HashMap<u8, (Version, u64)>,
    /// Claims held: ours, and the driver's model change count right after the claim.
    held: Vec<(Claim, u8, u64)>,
    /// Changes of any driver so far, insertions included; never goes back.
    stamp: u64,
}

impl Harness {
    /// An empty index at `config` (its staleness replaced by [`STALENESS`]) beside an empty model.
    ///
    /// # Panics
    ///
    /// If `config` is invalid.
    pub fn new(config: Config) -> Self {
        let clock = ManualClock::new();
        Self {
            index: Index::with_clock(config.staleness(STALENESS), clock.clone())
                .expect("valid configuration"),
            clock,
            model: HashMap::new(),
            seen: HashMap::new(),
            held: Vec::new(),
            stamp: 0,
        }
    }

    fn now(&self) -> u64 {
        use infra_common::Clock as _;
        self.clock.now_nanos()
    }

    fn fresh(&self, driver: &ModelDriver) -> bool {
        self.now() - driver.seen <= u64::try_from(STALENESS.as_nanos()).expect("small")
    }

    /// Eligible drivers and their distances from (lat, lng), unsorted.
    fn eligible(&self, lat: f64, lng: f64, class: Option<u8>, min_capacity: u8) -> Vec<(f64, u8)> {
        self.model
            .iter()
            .filter(|(_, d)| {
                d.state == DriverState::Available
                    && self.fresh(d)
                    && d.capacity >= min_capacity
                    && class.is_none_or(|c| c == d.class)
            })
            .map(|(id, d)| (great_circle_m(lat, lng, d.lat, d.lng), *id))
            .collect()
    }

    fn change(&mut self, id: u8, state: DriverState) {
        self.stamp += 1;
        let driver = self.model.get_mut(&id).expect("known");
        driver.state = state;
        driver.changes = self.stamp;
    }

    /// Applies one operation to both and compares the answers.
    ///
    /// # Errors
    ///
    /// A description of the first disagreement.
    pub fn step(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Insert {
                id,
                lat,
                lng,
                class,
                capacity,
            } => {
                let profile = DriverProfile {
                    class: VehicleClass(class),
                    capacity,
                };
                let ours = Point::new(lat, lng)
                    .and_then(|p| self.index.insert(DriverId(id.into()), p, profile));
                let expected = if !valid(lat, lng) {
                    Err(Error::InvalidCoordinate { lat, lng })
                } else if self.model.contains_key(&id) {
                    Err(Error::DuplicateDriver(DriverId(id.into())))
                } else {
                    let now = self.now();
                    self.stamp += 1;
                    self.model.insert(
                        id,
                        ModelDriver {
                            lat,
                            lng,
                            class,
                            capacity,
                            state: DriverState::Available,
                            changes: self.stamp,
                            seen: now,
                        },
                    );
                    Ok(())
                };
                same_error(&ours, &expected)
            }
            Op::Update { id, lat, lng } => {
                let ours =
                    Point::new(lat, lng).and_then(|p| self.index.update(DriverId(id.into()), p));
                let now = self.now();
                let expected = if !valid(lat, lng) {
                    Err(Error::InvalidCoordinate { lat, lng })
                } else if let Some(driver) = self.model.get_mut(&id) {
                    (driver.lat, driver.lng, driver.seen) = (lat, lng, now);
                    Ok(())
                } else {
                    Err(Error::UnknownDriver(DriverId(id.into())))
                };
                same_error(&ours, &expected)
            }
            Op::Remove { id } => {
                let ours = self
                    .index
                    .remove(DriverId(id.into()))
                    .map(|r| (r.point.lat(), r.point.lng()));
                let expected = match self.model.remove(&id) {
                    Some(d) => Ok((d.lat, d.lng)),
                    None => Err(Error::UnknownDriver(DriverId(id.into()))),
                };
                self.seen.remove(&id);
                if ours == expected {
                    Ok(())
                } else {
                    Err(format!("remove {id}: ours {ours:?}, model {expected:?}"))
                }
            }
            Op::SetState { id, state } => {
                let ours = self.index.set_state(DriverId(id.into()), state).map(|_| ());
                let expected = if self.model.contains_key(&id) {
                    self.change(id, state);
                    Ok(())
                } else {
                    Err(Error::UnknownDriver(DriverId(id.into())))
                };
                same_error(&ours, &expected)
            }
            Op::Claim { id } => {
                let ours = self
                    .index
                    .driver(DriverId(id.into()))
                    .and_then(|r| self.index.claim(r.id, r.version));
                let current = self.model.get(&id).map(|d| d.changes);
                self.claim_against(id, ours, current)
            }
            Op::ClaimSeen { id } => {
                let Some(&(version, changes)) = self.seen.get(&id) else {
                    return Ok(());
                };
                let ours = self.index.claim(DriverId(id.into()), version);
                self.claim_against(id, ours, Some(changes))
            }
            Op::Accept { slot } | Op::Decline { slot } => {
                if self.held.is_empty() {
                    return Ok(());
                }
                let (claim, id, changes) = self.held.remove(slot % self.held.len());
                let accept = matches!(op, Op::Accept { .. });
                let ours = if accept {
                    self.index.accept(&claim)
                } else {
                    self.index.decline(claim)
                };
                let expected = match self.model.get(&id) {
                    None => Err(Error::UnknownDriver(DriverId(id.into()))),
                    Some(d) if d.changes == changes => {
                        self.change(
                            id,
                            if accept {
                                DriverState::Busy
                            } else {
                                DriverState::Available
                            },
                        );
                        Ok(())
                    }
                    Some(_) => Err(Error::ClaimInvalid(DriverId(id.into()))),
                };
                same_error(&ours, &expected)
            }
            Op::Advance(nanos) => {
                self.clock.advance(Duration::from_nanos(nanos));
                Ok(())
            }
            Op::Nearest {
                lat,
                lng,
                k,
                class,
                min_capacity,
            } => {
                let mut filter = Filter::any().min_capacity(min_capacity);
                if let Some(class) = class {
                    filter = filter.class(VehicleClass(class));
                }
                let ours = Point::new(lat, lng).and_then(|p| self.index.nearest(p, k, &filter));
                if !valid(lat, lng) {
                    return same_error(
                        &ours.map(|_| ()),
                        &Err(Error::InvalidCoordinate { lat, lng }),
                    );
                }
                let ours = ours.map_err(|e| format!("nearest refused: {e}"))?;
                let mut model = self.eligible(lat, lng, class, min_capacity);
                model.sort_by(|a, b| a.0.total_cmp(&b.0));
                model.truncate(k);
                self.check_found(&ours, &model, lat, lng, "nearest")?;
                for (i, c) in ours.iter().enumerate() {
                    let tolerance = tolerance(model[i].0);
                    if (c.distance_m - model[i].0).abs() > tolerance {
                        return Err(format!(
                            "nearest #{i} from ({lat}, {lng}): ours {} at {} m, model {} at {} m",
                            c.driver, c.distance_m, model[i].1, model[i].0
                        ));
                    }
                }
                Ok(())
            }
            Op::Within {
                lat,
                lng,
                radius_m,
                limit,
            } => {
                let ours = Point::new(lat, lng)
                    .and_then(|p| self.index.within(p, radius_m, limit, &Filter::any()));
                if !valid(lat, lng) {
                    return same_error(
                        &ours.map(|_| ()),
                        &Err(Error::InvalidCoordinate { lat, lng }),
                    );
                }
                if !(radius_m.is_finite() && radius_m >= 0.0) {
                    return same_error(&ours.map(|_| ()), &Err(Error::InvalidRadius(radius_m)));
                }
                if limit > MAX_K {
                    let refused = Err(Error::TooManyResults {
                        k: limit,
                        max: MAX_K,
                    });
                    return same_error(&ours.map(|_| ()), &refused);
                }
                let ours = ours.map_err(|e| format!("within refused: {e}"))?;
                let model = self.eligible(lat, lng, None, 0);
                self.check_found(&ours, &model, lat, lng, "within")?;
                if ours.len() > limit {
                    return Err(format!(
                        "within: {} results for a limit of {limit}",
                        ours.len()
                    ));
                }
                for c in &ours {
                    if c.distance_m > radius_m + tolerance(radius_m) {
                        return Err(format!(
                            "within {radius_m} m: {} at {} m",
                            c.driver, c.distance_m
                        ));
                    }
                }
                // A full answer holds the nearest: nothing nearer than its last may be missing.
                let reach = match ours.last() {
                    // Nothing is wanted, and nothing came (checked above).
                    _ if limit == 0 => return Ok(()),
                    Some(last) if ours.len() == limit => last.distance_m.min(radius_m),
                    _ => radius_m,
                };
                for (distance, id) in model {
                    if distance < reach - tolerance(reach)
                        && !ours.iter().any(|c| c.driver == DriverId(id.into()))
                    {
                        return Err(format!(
                            "within {radius_m} m (limit {limit}) of ({lat}, {lng}): {id} at \
                             {distance} m missing"
                        ));
                    }
                }
                Ok(())
            }
            Op::ClaimNearest { lat, lng, k } => {
                let Ok(point) = Point::new(lat, lng) else {
                    return Ok(());
                };
                let ours = self
                    .index
                    .claim_nearest(point, k, &Filter::any())
                    .map_err(|e| format!("claim_nearest refused: {e}"))?;
                let mut model = self.eligible(lat, lng, None, 0);
                model.sort_by(|a, b| a.0.total_cmp(&b.0));
                match (ours, model.first()) {
                    (None, None) => Ok(()),
                    (None, Some(_)) if k == 0 => Ok(()),
                    (Some((candidate, claim)), Some(&(best, _))) if k > 0 => {
                        if (candidate.distance_m - best).abs() > tolerance(best) {
                            return Err(format!(
                                "claim_nearest took {} at {} m, nearest is {best} m",
                                candidate.driver, candidate.distance_m
                            ));
                        }
                        let id = u8::try_from(candidate.driver.0).map_err(|_| "unknown id")?;
                        self.change(id, DriverState::Offered);
                        let changes = self.model[&id].changes;
                        self.held.push((claim, id, changes));
                        Ok(())
                    }
                    (ours, model) => Err(format!(
                        "claim_nearest k={k}: ours {ours:?}, model {model:?}"
                    )),
                }
            }
        }
    }

    /// Checks that every driver `ours` returned is eligible at the distance it reports, and
    /// counts match; remembers the versions seen.
    fn check_found(
        &mut self,
        ours: &[crate::Candidate],
        model: &[(f64, u8)],
        lat: f64,
        lng: f64,
        what: &str,
    ) -> Result<(), String> {
        let mut ours_count = ours.len();
        if what == "within" {
            // Drivers at the radius may be in or out by round-off; counts are checked by the
            // two inclusions instead.
            ours_count = model.len().min(ours_count);
        }
        if ours_count != ours.len().min(model.len())
            || (what == "nearest" && ours.len() != model.len())
        {
            return Err(format!(
                "{what} from ({lat}, {lng}): ours {} results, model {}",
                ours.len(),
                model.len()
            ));
        }
        let mut ids = Vec::with_capacity(ours.len());
        for c in ours {
            let id =
                u8::try_from(c.driver.0).map_err(|_| format!("{what}: unknown id {}", c.driver))?;
            let Some(&(distance, _)) = self
                .eligible(lat, lng, None, 0)
                .iter()
                .find(|(_, m)| *m == id)
            else {
                return Err(format!("{what}: {id} is not eligible"));
            };
            if (distance - c.distance_m).abs() > tolerance(distance) {
                return Err(format!(
                    "{what}: {id} at {} m, model {distance} m",
                    c.distance_m
                ));
            }
            if ids.contains(&id) {
                return Err(format!("{what}: {id} twice"));
            }
            ids.push(id);
            self.seen.insert(id, (c.version, self.model[&id].changes));
        }
        Ok(())
    }

    fn claim_against(
        &mut self,
        id: u8,
        ours: Result<Claim, Error>,
        seen_changes: Option<u64>,
    ) -> Result<(), String> {
        let driver = DriverId(id.into());
        // The order in which the index reports: a version read while the driver was not
        // available, an unknown driver, a stale one, then a change since the version was read.
        let expected = match self.model.get(&id) {
            None => Err(Error::UnknownDriver(driver)),
            Some(d) if seen_changes == Some(d.changes) && d.state != DriverState::Available => {
                Err(Error::NotAvailable {
                    driver,
                    state: d.state,
                })
            }
            Some(d) if !self.fresh(d) => Err(Error::Stale(driver)),
            Some(d) if seen_changes != Some(d.changes) => Err(Error::ClaimLost(driver)),
            Some(_) => Ok(()),
        };
        let compared = same_error(&ours.as_ref().map(|_| ()).map_err(Clone::clone), &expected);
        if let (Ok(claim), Ok(())) = (ours, &expected) {
            self.change(id, DriverState::Offered);
            let changes = self.model[&id].changes;
            self.held.push((claim, id, changes));
        }
        compared
    }
}

/// A micrometer per kilometer, and never less than a micrometer.
fn tolerance(distance_m: f64) -> f64 {
    (distance_m * 1e-9).max(1e-6)
}

fn same_error(ours: &Result<(), Error>, expected: &Result<(), Error>) -> Result<(), String> {
    let agree = match (ours, expected) {
        (Ok(()), Ok(())) => true,
        // NaN coordinates make the two errors unequal by `==`; compare what they say.
        (Err(a), Err(b)) => a == b || a.to_string() == b.to_string(),
        _ => false,
    };
    if agree {
        Ok(())
    } else {
        Err(format!("ours {ours:?}, model {expected:?}"))
    }
}

/// Runs `ops` on a fresh index at `config` and on the model.
///
/// # Errors
///
/// The first disagreement, with the step that caused it.
pub fn run(config: Config, ops: &[Op]) -> Result<(), String> {
    let mut harness = Harness::new(config);
    for (i, op) in ops.iter().enumerate() {
        harness.step(op).map_err(|e| {
            let mut message = format!("step {i} ({op:?}): {e}");
            let _ = write!(message, " after {i} steps");
            message
        })?;
    }
    Ok(())
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use h3o::Resolution;
    use proptest::prelude::*;

    use super::*;

    /// Coordinates near a few places (a city, the antimeridian, a pole, a pentagon), plus
    /// the occasional invalid value.
    // `prop_oneof!` expands to a std `Arc`, which the workspace clippy.toml bans outside
    // infra_common::sync; this is test code, not shared state.
    #[allow(clippy::disallowed_types)]
    fn coordinate() -> impl Strategy<Value = (f64, f64)> {
        let places = [
            (52.52, 13.405),
            (0.0, 179.999),
            (89.99, 0.0),
            (-89.99, 45.0),
            (64.7, 10.536_199),
        ];
        prop_oneof![
            10 => (proptest::sample::select(places.to_vec()), -0.02f64..0.02, -0.02f64..0.02)
                .prop_map(|((lat, lng), dlat, dlng)| {
                    let lng = lng + dlng;
                    (
                        (lat + dlat).clamp(-90.0, 90.0),
                        if lng > 180.0 { lng - 360.0 } else { lng },
                    )
                }),
            1 => prop_oneof![
                Just((f64::NAN, 0.0)),
                Just((0.0, f64::INFINITY)),
                Just((91.0, 0.0)),
                Just((0.0, -180.5)),
            ],
        ]
    }

    // `prop_oneof!` expands to a std `Arc`, which the workspace clippy.toml bans outside
    // infra_common::sync; this is test code, not shared state.
    #[allow(clippy::disallowed_types)]
    fn op() -> impl Strategy<Value = Op> {
        let id = 0u8..12;
        prop_oneof![
            3 => (id.clone(), coordinate(), 0u8..2, 1u8..6).prop_map(|(id, (lat, lng), class, capacity)| Op::Insert { id, lat, lng, class, capacity }),
            4 => (id.clone(), coordinate()).prop_map(|(id, (lat, lng))| Op::Update { id, lat, lng }),
            1 => id.clone().prop_map(|id| Op::Remove { id }),
            1 => (id.clone(), prop_oneof![Just(DriverState::Available), Just(DriverState::Busy), Just(DriverState::Offline), Just(DriverState::Offered)]).prop_map(|(id, state)| Op::SetState { id, state }),
            2 => id.clone().prop_map(|id| Op::Claim { id }),
            2 => id.prop_map(|id| Op::ClaimSeen { id }),
            1 => any::<usize>().prop_map(|slot| Op::Accept { slot }),
            1 => any::<usize>().prop_map(|slot| Op::Decline { slot }),
            1 => (0u64..20_000_000_000).prop_map(Op::Advance),
            3 => (coordinate(), 0usize..16, proptest::option::of(0u8..2), 0u8..4).prop_map(|((lat, lng), k, class, min_capacity)| Op::Nearest { lat, lng, k, class, min_capacity }),
            2 => (coordinate(), prop_oneof![0.0f64..3_000.0, Just(-1.0), Just(f64::NAN), Just(1e8)], prop_oneof![0usize..6, Just(MAX_K), Just(MAX_K + 1)]).prop_map(|((lat, lng), radius_m, limit)| Op::Within { lat, lng, radius_m, limit }),
            2 => (coordinate(), 0usize..4).prop_map(|((lat, lng), k)| Op::ClaimNearest { lat, lng, k }),
        ]
    }

    /// A claim held while its driver is removed and inserted again: the model refuses it,
    /// and so must the index (a version counted from zero on insertion would accept it, and
    /// the driver's new offer with it).
    #[test]
    fn a_claim_held_across_reinsertion_is_refused() {
        let insert = Op::Insert {
            id: 1,
            lat: 52.52,
            lng: 13.405,
            class: 0,
            capacity: 4,
        };
        let ops = [
            insert.clone(),
            Op::Claim { id: 1 },
            Op::Remove { id: 1 },
            insert,
            Op::Claim { id: 1 },
            Op::Accept { slot: 0 },
            Op::Decline { slot: 0 },
        ];
        assert_eq!(run(Config::default().shards(4), &ops), Ok(()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Operation sequences agree with the model step by step, at the default resolution,
        /// at a fine one where a query crosses many cells, and at the three coarsest, where
        /// rings of cells wrap around the globe.
        #[test]
        fn operations_agree_with_the_model(ops in proptest::collection::vec(op(), 1..120), resolution in proptest::sample::select(vec![Resolution::Nine, Resolution::Eleven, Resolution::Zero, Resolution::One, Resolution::Two])) {
            if let Err(disagreement) = run(Config::default().resolution(resolution).shards(4), &ops) {
                return Err(TestCaseError::fail(disagreement));
            }
        }
    }
}
