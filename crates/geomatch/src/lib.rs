//! Real-time rider/driver matching on H3 cells.
//!
//! - [`Index`]: drivers keyed by [`DriverId`] in per-cell buckets at an H3 resolution
//!   (default 9), shared by many threads; [`Index::nearest`] and [`Index::within`] answer by
//!   exact great-circle distance, looking at rings of cells only as far as needed;
//!   [`Index::claim`] moves a driver from available to offered atomically, so a driver is
//!   never matched twice, and [`Index::claim_nearest`] is greedy nearest for one request.
//! - [`Partitioner`]: point → cell at a coarse resolution → node, so a fleet of nodes
//!   can split the world, with the hand-off of drivers crossing partitions.
//! - [`matching`] and [`surge`]: batched assignment and pricing on top of the index.
//!
//! # Quick start
//!
//! ```
//! use infra_geomatch::{Config, DriverId, DriverProfile, Error, Filter, Index, Point, VehicleClass};
//!
//! let index = Index::new(Config::default())?;
//! let van = DriverProfile { class: VehicleClass(1), capacity: 6 };
//! index.insert(DriverId(1), Point::new(51.5074, -0.1278)?, DriverProfile::default())?;
//! index.insert(DriverId(2), Point::new(51.5080, -0.1290)?, van)?;
//!
//! let rider = Point::new(51.5076, -0.1280)?;
//! let nearest = index.nearest(rider, 10, &Filter::any())?;
//! assert_eq!(nearest.len(), 2);
//! // Up to 20 drivers with 5 seats or more within 1 km, nearest first.
//! let vans = index.within(rider, 1_000.0, 20, &Filter::any().min_capacity(5))?;
//! assert_eq!(vans[0].driver, DriverId(2));
//!
//! // Two matchers saw the same candidate: exactly one claim wins.
//! let first = index.claim(vans[0].driver, vans[0].version);
//! let second = index.claim(vans[0].driver, vans[0].version);
//! assert!(first.is_ok());
//! assert_eq!(second, Err(Error::ClaimLost(DriverId(2))));
//! index.accept(&first?)?;
//!
//! // Bad input is an error, never a panic.
//! assert!(Point::new(f64::NAN, 0.0).is_err());
//! assert_eq!(index.update(DriverId(99), rider), Err(Error::UnknownDriver(DriverId(99))));
//! # Ok::<(), Error>(())
//! ```
//!
//! # Features
//!
//! * `metrics`: drivers by state and claim outcomes through the `metrics` facade; names in
//!   the `metrics` module.
#![forbid(unsafe_code)]

mod best;
mod driver;
mod driver_table;
mod drivers;
mod error;
mod geo;
mod index;
mod locator;
#[cfg(feature = "metrics")]
pub mod metrics;
mod partition;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(test, fuzzing))]
pub mod reference;

pub mod matching;
pub mod surge;

pub use driver::{
    Candidate, Claim, DriverId, DriverProfile, DriverRecord, DriverState, Filter, VehicleClass,
    Version,
};
pub use drivers::{BackendFailure, Drivers};
pub use error::Error;
pub use geo::{EARTH_RADIUS_M, Point};
pub use index::{Config, Index, MAX_K};
pub use partition::{Handoff, MAX_PARTITIONS_ASKED, Partitioner};

/// Compiles and runs the README's examples as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
