//! What the in-process [`Index`] and the shared index on Redis have in common, so a matcher
//! can run over either.

use std::fmt;

use infra_common::Clock;

use crate::{
    Candidate, Claim, DriverId, DriverProfile, DriverRecord, DriverState, Error, Filter, Index,
    Point, Version,
};

/// A driver index: positions, states and claims of drivers, and nearest and radius queries
/// over the available ones.
///
/// Implemented by [`Index`] (one process) and, with the `redis` feature, by
/// `redis::RedisIndex` (many processes sharing one Redis). Each method means what the
/// [`Index`] method of the same name means; the inherent methods of both types are the same,
/// so code that names the concrete type needs no trait import.
///
/// ```
/// use infra_geomatch::{Config, DriverId, DriverProfile, Drivers, Error, Filter, Index, Point};
///
/// /// Greedy dispatch that works on any backend.
/// fn dispatch(drivers: &impl Drivers, rider: Point) -> Result<Option<DriverId>, Error> {
///     Ok(drivers
///         .claim_nearest(rider, 8, &Filter::any())?
///         .map(|(candidate, _claim)| candidate.driver))
/// }
///
/// let index = Index::new(Config::default())?;
/// index.insert(DriverId(1), Point::new(0.0, 0.001)?, DriverProfile::default())?;
/// assert_eq!(dispatch(&index, Point::new(0.0, 0.0)?)?, Some(DriverId(1)));
/// assert_eq!(dispatch(&index, Point::new(0.0, 0.0)?)?, None);
/// # Ok::<(), Error>(())
/// ```
pub trait Drivers {
    /// Adds a driver, `Available`, heard from now ([`Index::insert`]).
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateDriver`] if the id is taken; a backend's own errors.
    fn insert(&self, id: DriverId, point: Point, profile: DriverProfile) -> Result<(), Error>;

    /// Adds a driver exactly as recorded elsewhere ([`Index::restore`]).
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateDriver`] if the id is taken; a backend's own errors.
    fn restore(&self, record: DriverRecord) -> Result<(), Error>;

    /// Records a driver's new position, heard from now ([`Index::update`]).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDriver`] if the id is not in the index; a backend's own errors.
    fn update(&self, id: DriverId, point: Point) -> Result<(), Error>;

    /// Takes a driver out and returns what was held ([`Index::remove`]).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDriver`] if the id is not in the index; a backend's own errors.
    fn remove(&self, id: DriverId) -> Result<DriverRecord, Error>;

    /// A copy of what is held about a driver ([`Index::driver`]).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDriver`] if the id is not in the index; a backend's own errors.
    fn driver(&self, id: DriverId) -> Result<DriverRecord, Error>;

    /// Sets a driver's state whatever it was; the new version ([`Index::set_state`]).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDriver`] if the id is not in the index; a backend's own errors.
    fn set_state(&self, id: DriverId, state: DriverState) -> Result<Version, Error>;

    /// Claims a driver found at `version`, atomically ([`Index::claim`]).
    ///
    /// # Errors
    ///
    /// [`Error::ClaimLost`], [`Error::NotAvailable`], [`Error::Stale`],
    /// [`Error::UnknownDriver`] as for [`Index::claim`]; a backend's own errors.
    fn claim(&self, id: DriverId, version: Version) -> Result<Claim, Error>;

    /// The driver accepted: `Offered → Busy` ([`Index::accept`]).
    ///
    /// # Errors
    ///
    /// [`Error::ClaimInvalid`], [`Error::UnknownDriver`]; a backend's own errors.
    fn accept(&self, claim: &Claim) -> Result<(), Error>;

    /// The driver declined or the offer timed out: `Offered → Available`
    /// ([`Index::decline`]).
    ///
    /// # Errors
    ///
    /// [`Error::ClaimInvalid`], [`Error::UnknownDriver`]; a backend's own errors.
    fn decline(&self, claim: Claim) -> Result<(), Error>;

    /// The `k` nearest available, fresh drivers passing `filter`, nearest first
    /// ([`Index::nearest`]).
    ///
    /// # Errors
    ///
    /// [`Error::TooManyResults`] above [`MAX_K`](crate::MAX_K); a backend's own errors.
    fn nearest(&self, point: Point, k: usize, filter: &Filter) -> Result<Vec<Candidate>, Error>;

    /// The available, fresh drivers passing `filter` within `radius_m`, nearest first, at most
    /// `limit` of them (the nearest) ([`Index::within`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRadius`]; [`Error::TooManyResults`] above [`MAX_K`](crate::MAX_K); a
    /// backend's own errors.
    fn within(
        &self,
        point: Point,
        radius_m: f64,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<Candidate>, Error>;

    /// Claims the first of the `k` nearest candidates whose claim wins
    /// ([`Index::claim_nearest`]).
    ///
    /// # Errors
    ///
    /// As [`Drivers::nearest`], and a backend's own errors.
    fn claim_nearest(
        &self,
        point: Point,
        k: usize,
        filter: &Filter,
    ) -> Result<Option<(Candidate, Claim)>, Error>;
}

/// Claims the first of `candidates` (nearest first) whose claim wins, passing over drivers
/// lost to a race since the query: the claim-nearest loop of every backend.
pub(crate) fn claim_first<D: Drivers + ?Sized>(
    drivers: &D,
    candidates: Vec<Candidate>,
) -> Result<Option<(Candidate, Claim)>, Error> {
    for candidate in candidates {
        match drivers.claim(candidate.driver, candidate.version) {
            Ok(claim) => return Ok(Some((candidate, claim))),
            Err(error) if error.is_lost_race() => {}
            Err(error) => return Err(error),
        }
    }
    Ok(None)
}

// Each method calls the inherent method of the same name: inherent methods take precedence
// over trait methods, so these are not recursive.
impl<C: Clock> Drivers for Index<C> {
    fn insert(&self, id: DriverId, point: Point, profile: DriverProfile) -> Result<(), Error> {
        Index::insert(self, id, point, profile)
    }

    fn restore(&self, record: DriverRecord) -> Result<(), Error> {
        Index::restore(self, record)
    }

    fn update(&self, id: DriverId, point: Point) -> Result<(), Error> {
        Index::update(self, id, point)
    }

    fn remove(&self, id: DriverId) -> Result<DriverRecord, Error> {
        Index::remove(self, id)
    }

    fn driver(&self, id: DriverId) -> Result<DriverRecord, Error> {
        Index::driver(self, id)
    }

    fn set_state(&self, id: DriverId, state: DriverState) -> Result<Version, Error> {
        Index::set_state(self, id, state)
    }

    fn claim(&self, id: DriverId, version: Version) -> Result<Claim, Error> {
        Index::claim(self, id, version)
    }

    fn accept(&self, claim: &Claim) -> Result<(), Error> {
        Index::accept(self, claim)
    }

    fn decline(&self, claim: Claim) -> Result<(), Error> {
        Index::decline(self, claim)
    }

    fn nearest(&self, point: Point, k: usize, filter: &Filter) -> Result<Vec<Candidate>, Error> {
        Index::nearest(self, point, k, filter)
    }

    fn within(
        &self,
        point: Point,
        radius_m: f64,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<Candidate>, Error> {
        Index::within(self, point, radius_m, limit, filter)
    }

    fn claim_nearest(
        &self,
        point: Point,
        k: usize,
        filter: &Filter,
    ) -> Result<Option<(Candidate, Claim)>, Error> {
        Index::claim_nearest(self, point, k, filter)
    }
}

/// How the server of a shared index failed ([`Error::Backend`]).
///
/// After [`Connection`](Self::Connection) or [`Timeout`](Self::Timeout) the command may or
/// may not have run: read the driver back before acting on it (a claim that timed out may
/// have left the driver offered; [`Drivers::set_state`] resets it).
///
/// ```
/// use infra_geomatch::{BackendFailure, Error};
/// let error = Error::Backend(BackendFailure::Timeout);
/// assert!(error.to_string().contains("no answer"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendFailure {
    /// No connection could be made, or it broke during the command.
    Connection,
    /// No answer within the timeout.
    Timeout,
    /// The server refused the command: out of memory, a read-only replica, or a key under the
    /// index's prefix that holds another type.
    Refused,
    /// The server's answer is not one this crate writes: another program changed keys under
    /// the index's prefix.
    Malformed,
}

impl fmt::Display for BackendFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connection => "no connection, or it broke: the command may or may not have run",
            Self::Timeout => "no answer within the timeout: the command may or may not have run",
            Self::Refused => "the server refused the command",
            Self::Malformed => "the server's answer is not one this index writes",
        })
    }
}
