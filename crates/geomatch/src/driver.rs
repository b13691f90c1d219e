//! What the index knows of a driver, and what queries and claims hand back.

use std::fmt;

use crate::Point;

/// A driver's id, chosen by the caller.
///
/// ```
/// use infra_geomatch::DriverId;
/// assert_eq!(DriverId(7).to_string(), "7");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DriverId(pub u64);

impl fmt::Display for DriverId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Where a driver is in the matching cycle.
///
/// `Available → Offered` by [`Index::claim`](crate::Index::claim); `Offered → Busy` by
/// [`Index::accept`](crate::Index::accept); `Offered → Available` by
/// [`Index::decline`](crate::Index::decline) (also the path for an offer that timed out);
/// any state to any other by [`Index::set_state`](crate::Index::set_state) (trip over, app
/// closed). Only `Available` drivers are found by queries.
///
/// ```
/// use infra_geomatch::DriverState;
/// assert_ne!(DriverState::Available, DriverState::Offered);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DriverState {
    /// Can be offered a ride.
    Available,
    /// Offered a ride by a claim, waiting for the driver's answer.
    Offered,
    /// On a trip.
    Busy,
    /// Not working.
    Offline,
}

impl DriverState {
    /// Every state, in `code` order (one gauge each).
    #[cfg(feature = "metrics")]
    pub(crate) const ALL: [Self; 4] = [Self::Available, Self::Offered, Self::Busy, Self::Offline];

    pub(crate) const fn code(self) -> u64 {
        match self {
            Self::Available => 0,
            Self::Offered => 1,
            Self::Busy => 2,
            Self::Offline => 3,
        }
    }

    pub(crate) const fn from_code(code: u64) -> Self {
        match code & STATE_MASK {
            0 => Self::Available,
            1 => Self::Offered,
            2 => Self::Busy,
            _ => Self::Offline,
        }
    }
}

/// The low bits of a state word hold the state, the rest the version.
pub(crate) const STATE_BITS: u32 = 2;
pub(crate) const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

/// A driver's state version: it changes with every state change, so a claim made on a version
/// read earlier fails if anything happened to the driver since. Within one index it never
/// repeats for a driver, not even after the driver is removed and inserted again.
///
/// ```
/// use infra_geomatch::{DriverId, DriverProfile, Filter, Index, Config, Point};
///
/// let index = Index::new(Config::default())?;
/// let here = Point::new(52.52, 13.405)?;
/// index.insert(DriverId(1), here, DriverProfile::default())?;
/// let found = index.nearest(here, 1, &Filter::any())?;
/// let claim = index.claim(found[0].driver, found[0].version)?;
/// assert_ne!(claim.version(), found[0].version);
/// # Ok::<(), infra_geomatch::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(pub(crate) u64);

impl Version {
    /// The version as one integer, to carry a [`DriverRecord`] to a node in another process
    /// (a hand-off between partitions); [`Version::from_bits`] takes it back. The bits also
    /// encode the state the version was issued with: carry them unchanged.
    ///
    /// ```
    /// use infra_geomatch::{Config, DriverId, DriverProfile, Index, Point, Version};
    ///
    /// let index = Index::new(Config::default())?;
    /// index.insert(DriverId(1), Point::new(45.0, 7.0)?, DriverProfile::default())?;
    /// let version = index.driver(DriverId(1))?.version;
    /// assert_eq!(Version::from_bits(version.to_bits()), version);
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub const fn to_bits(self) -> u64 {
        self.0
    }

    /// A version from [`Version::to_bits`]. A made-up one claims nothing a query could not:
    /// a claim still needs the driver's current version, and a record restored with a
    /// version that does not match its state, or past any version an index gives, is refused
    /// ([`Error::InconsistentRecord`](crate::Error::InconsistentRecord)).
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }
}

/// Versions a restored record may carry are below this (2^61, a quarter of what a state
/// word's version bits hold): an index counts on from a restored version, and from there it
/// has more state changes, and removals raising its floor, than any fleet makes before its
/// versions would wrap round to ones it gave before.
const RECORD_VERSION_LIMIT: u64 = 1 << 61;

/// Refuses a record, before it enters an index, whose state is not the one its version
/// encodes or whose version is at or past [`RECORD_VERSION_LIMIT`].
pub(crate) fn check_record(record: &DriverRecord) -> Result<(), crate::Error> {
    let word = record.version.0;
    if DriverState::from_code(word) != record.state || word >> STATE_BITS >= RECORD_VERSION_LIMIT {
        return Err(crate::Error::InconsistentRecord(record.id));
    }
    Ok(())
}

/// A vehicle class (car, van, bike, ...), numbered by the caller.
///
/// ```
/// use infra_geomatch::VehicleClass;
/// const VAN: VehicleClass = VehicleClass(2);
/// assert_eq!(VAN.0, 2);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VehicleClass(pub u8);

/// What a driver's vehicle offers: its class and how many passengers it seats.
///
/// ```
/// use infra_geomatch::{DriverProfile, VehicleClass};
/// let van = DriverProfile { class: VehicleClass(2), capacity: 6 };
/// assert_eq!(DriverProfile::default().capacity, 4);
/// # let _ = van;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DriverProfile {
    /// The vehicle class.
    pub class: VehicleClass,
    /// Seats for passengers.
    pub capacity: u8,
}

impl Default for DriverProfile {
    /// Class 0, four seats.
    fn default() -> Self {
        Self {
            class: VehicleClass(0),
            capacity: 4,
        }
    }
}

/// Which available drivers a query may return.
///
/// ```
/// use infra_geomatch::{DriverProfile, Filter, VehicleClass};
///
/// let vans_for_five = Filter::any().class(VehicleClass(2)).min_capacity(5);
/// assert!(vans_for_five.admits(&DriverProfile { class: VehicleClass(2), capacity: 6 }));
/// assert!(!vans_for_five.admits(&DriverProfile { class: VehicleClass(2), capacity: 4 }));
/// assert!(!vans_for_five.admits(&DriverProfile { class: VehicleClass(0), capacity: 8 }));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    class: Option<VehicleClass>,
    min_capacity: u8,
}

impl Filter {
    /// Every available driver.
    pub const fn any() -> Self {
        Self {
            class: None,
            min_capacity: 0,
        }
    }

    /// Only drivers of this class.
    #[must_use]
    pub const fn class(mut self, class: VehicleClass) -> Self {
        self.class = Some(class);
        self
    }

    /// Only drivers with at least this many seats.
    #[must_use]
    pub const fn min_capacity(mut self, seats: u8) -> Self {
        self.min_capacity = seats;
        self
    }

    /// Whether a driver with this profile passes.
    #[inline]
    pub fn admits(&self, profile: &DriverProfile) -> bool {
        profile.capacity >= self.min_capacity && self.class.is_none_or(|c| c == profile.class)
    }
}

/// One query result: an available driver and its great-circle distance from the query point.
///
/// `version` is what [`Index::claim`](crate::Index::claim) takes to claim exactly the driver
/// state the query saw.
///
/// ```
/// use infra_geomatch::{Config, DriverId, DriverProfile, Filter, Index, Point};
///
/// let index = Index::new(Config::default())?;
/// index.insert(DriverId(9), Point::new(0.0, 0.001)?, DriverProfile::default())?;
/// let found = index.nearest(Point::new(0.0, 0.0)?, 5, &Filter::any())?;
/// assert_eq!(found.len(), 1);
/// assert!((found[0].distance_m - 111.2).abs() < 0.1);
/// # Ok::<(), infra_geomatch::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// The driver.
    pub driver: DriverId,
    /// Great-circle distance from the query point, in meters.
    pub distance_m: f64,
    /// The driver's state version when found.
    pub version: Version,
}

/// A successful claim: the driver is `Offered` to the claimer until it
/// [accepts](crate::Index::accept) or [declines](crate::Index::decline).
///
/// ```
/// use infra_geomatch::{Config, DriverId, DriverProfile, DriverState, Index, Point};
///
/// let index = Index::new(Config::default())?;
/// let at = Point::new(1.0, 1.0)?;
/// index.insert(DriverId(3), at, DriverProfile::default())?;
/// let version = index.driver(DriverId(3))?.version;
/// let claim = index.claim(DriverId(3), version)?;
/// assert_eq!(claim.driver(), DriverId(3));
/// index.accept(&claim)?;
/// assert_eq!(index.driver(DriverId(3))?.state, DriverState::Busy);
/// # Ok::<(), infra_geomatch::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a claim leaves the driver offered until it is accepted or declined"]
pub struct Claim {
    pub(crate) driver: DriverId,
    pub(crate) version: Version,
    /// The id of the index that issued the claim; only that index settles it.
    pub(crate) issuer: u64,
}

impl Claim {
    /// The claimed driver.
    pub fn driver(&self) -> DriverId {
        self.driver
    }

    /// The driver's state version while offered.
    pub fn version(&self) -> Version {
        self.version
    }
}

/// Everything the index holds about one driver: a copy, for reading and for handing the
/// driver to another partition ([`Index::restore`](crate::Index::restore)).
///
/// ```
/// use infra_geomatch::{Config, DriverId, DriverProfile, DriverState, Index, Point};
///
/// let index = Index::new(Config::default())?;
/// index.insert(DriverId(4), Point::new(1.0, 2.0)?, DriverProfile::default())?;
/// let record = index.driver(DriverId(4))?;
/// assert_eq!((record.point.lat(), record.state), (1.0, DriverState::Available));
/// # Ok::<(), infra_geomatch::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DriverRecord {
    /// The driver.
    pub id: DriverId,
    /// Its last reported position.
    pub point: Point,
    /// Its vehicle.
    pub profile: DriverProfile,
    /// Its state.
    pub state: DriverState,
    /// Its state version.
    pub version: Version,
    /// The index clock's reading at its last report, in nanoseconds: comparable only with
    /// that index's clock (`SystemClock` counts from its process's start); 0 for a driver
    /// restored with an age longer than that clock had run.
    pub seen_nanos: u64,
    /// How long before the record was read the driver last reported: what
    /// [`Index::restore`](crate::Index::restore) goes by, whatever the clocks of the two indexes.
    pub age: std::time::Duration,
}
