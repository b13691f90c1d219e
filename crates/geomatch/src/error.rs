//! The crate's one error type.

use std::fmt;

use crate::{DriverId, DriverState};

/// Everything the index, the claims and the partitioner refuse.
///
/// Bad input (a coordinate that is not a place on Earth, a negative radius, an unknown driver)
/// is refused before anything changes. The claim errors tell a matcher what to do next:
/// [`Error::ClaimLost`] and [`Error::NotAvailable`] mean "try the next candidate".
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A latitude outside [-90, 90], a longitude outside [-180, 180], or either not finite.
    InvalidCoordinate {
        /// The latitude given, in degrees.
        lat: f64,
        /// The longitude given, in degrees.
        lng: f64,
    },
    /// No driver with this id is in the index. Insert it first (or it was removed).
    UnknownDriver(DriverId),
    /// A driver with this id is already in the index; update it instead.
    DuplicateDriver(DriverId),
    /// A radius that is negative or not finite, in meters.
    InvalidRadius(f64),
    /// More nearest drivers were asked for than [`MAX_K`](crate::MAX_K).
    TooManyResults {
        /// How many were asked for.
        k: usize,
        /// The most one query returns.
        max: usize,
    },
    /// The driver's state changed since the candidate was read (another claim won, or the
    /// driver went busy or offline): move on to the next candidate.
    ClaimLost(DriverId),
    /// The driver is not available (it is offered, busy or offline).
    NotAvailable {
        /// The driver.
        driver: DriverId,
        /// Its state.
        state: DriverState,
    },
    /// The driver has not reported a position within the staleness window.
    Stale(DriverId),
    /// The claim no longer holds: the offer was already accepted or declined, or the driver's
    /// state was set since.
    ClaimInvalid(DriverId),
    /// The claim was issued by another index (a claim names the index that made it, and the
    /// same driver may hold the same version elsewhere): settle it where it was made.
    ForeignClaim(DriverId),
    /// A [`DriverRecord`](crate::DriverRecord) whose `state` is not the state its `version`
    /// encodes, or whose version is past any an index gives (2^61 and above): it was altered
    /// after it was read, and is refused rather than guessed at.
    InconsistentRecord(DriverId),
    /// A query near more partitions than [`MAX_PARTITIONS_ASKED`](crate::MAX_PARTITIONS_ASKED):
    /// ask every node instead.
    TooManyPartitions {
        /// The most partitions one call names.
        max: usize,
    },
    /// A configuration value out of range; the message names it.
    InvalidConfig(&'static str),
    /// The partitioner has no nodes to place cells on.
    NoNodes,
    /// A point the shared index cannot hold: Redis GEO takes latitudes within ±85.05112878
    /// only (the `redis` feature's index). Keep polar drivers in an in-process index.
    OutsideGeoRange {
        /// The latitude given, in degrees.
        lat: f64,
        /// The longitude given, in degrees.
        lng: f64,
    },
    /// The shared index's server failed; [`BackendFailure`](crate::BackendFailure) says how.
    Backend(crate::BackendFailure),
}

impl Error {
    /// Whether a claim refused with this error was lost to a race: another claimer won the
    /// driver, or it changed state, went stale or was removed since the query. Such a driver
    /// is simply not this claimer's to take; any other error is a failure to report.
    pub(crate) const fn is_lost_race(&self) -> bool {
        matches!(
            self,
            Self::ClaimLost(_)
                | Self::NotAvailable { .. }
                | Self::Stale(_)
                | Self::UnknownDriver(_)
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidCoordinate { lat, lng } => write!(
                f,
                "invalid coordinate ({lat}, {lng}): latitude must be finite in [-90, 90] and longitude finite in [-180, 180]"
            ),
            Self::UnknownDriver(id) => write!(f, "unknown driver {id}"),
            Self::DuplicateDriver(id) => write!(f, "driver {id} is already in the index"),
            Self::InvalidRadius(r) => {
                write!(
                    f,
                    "invalid radius {r} m: it must be finite and not negative"
                )
            }
            Self::TooManyResults { k, max } => {
                write!(f, "{k} nearest drivers asked for; at most {max} per query")
            }
            Self::ClaimLost(id) => write!(
                f,
                "claim of driver {id} lost: its state changed since it was found"
            ),
            Self::NotAvailable { driver, state } => {
                write!(f, "driver {driver} is not available (it is {state:?})")
            }
            Self::Stale(id) => write!(
                f,
                "driver {id} has not reported within the staleness window"
            ),
            Self::ClaimInvalid(id) => write!(
                f,
                "the claim of driver {id} no longer holds: its state changed since"
            ),
            Self::ForeignClaim(id) => write!(
                f,
                "the claim of driver {id} was made on another index; settle it there"
            ),
            Self::InconsistentRecord(id) => write!(
                f,
                "the record of driver {id} names a state its version does not encode, or a version no index gives"
            ),
            Self::TooManyPartitions { max } => write!(
                f,
                "more than {max} partitions lie within the radius; ask every node instead"
            ),
            Self::InvalidConfig(what) => write!(f, "invalid configuration: {what}"),
            Self::NoNodes => f.write_str("the partitioner has no nodes"),
            Self::OutsideGeoRange { lat, lng } => write!(
                f,
                "({lat}, {lng}) is outside Redis GEO's latitudes, -85.05112878 to 85.05112878"
            ),
            Self::Backend(failure) => write!(f, "the shared index's server failed: {failure}"),
        }
    }
}

impl std::error::Error for Error {}
