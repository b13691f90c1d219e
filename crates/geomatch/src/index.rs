//! The concurrent driver index: per-cell buckets, exact nearest and radius queries, claims.

use std::collections::{HashMap, HashSet};
use std::f64::consts::PI;
use std::hash::BuildHasher;
use std::time::Duration;

use h3o::{CellIndex, Resolution};
use infra_common::clock::duration_to_nanos;
use infra_common::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use infra_common::sync::{RwLock, RwLockReadGuard};
use infra_common::{Clock, RandomState, SystemClock};

use crate::best::{Best, CoarseFound, Found, least_first};
use crate::driver::{STATE_BITS, STATE_MASK};
use crate::driver_table::DriverTable;
use crate::geo::{
    CellGeometry, Circumcircle, CoarseCircle, EARTH_RADIUS_M, LocalFrame, LocalUnit, SeenCells,
    Unit, angle_to_chord2, chord2, distance_m, local_chord2, neighbours,
};
use crate::locator::Locator;
use crate::{
    Candidate, Claim, DriverId, DriverProfile, DriverRecord, DriverState, Error, Filter, Point,
    Version,
};
use infra_common::prefetch;

/// The most drivers one [`Index::nearest`] or [`Index::within`] query returns, which bounds
/// the results it holds (besides them, a query holds 16 bytes for each driver of the largest
/// bucket it scans).
pub const MAX_K: usize = 10_000;

/// The most walks one [`Index::nearest`] query makes when drivers moving meanwhile were met
/// twice in a walk (see [`drop_repeats`]); the last walk's answer stands, its repeats dropped.
const MAX_WALKS: usize = 3;

/// Up to this many results, [`has_repeats`] compares every pair of them.
const REPEATS_BY_PAIRS: usize = 32;

/// What a walk's look at an empty cell costs, counted in buckets a scan of every bucket would
/// check instead: the neighbours of an empty cell and their outlines come from H3 (about 2 µs
/// a cell), where a scan checks a bucket's circle and its drivers in tens of nanoseconds.
const EMPTY_CELL_COST: usize = 32;

/// How far past a radius's squared chord a radius query's walk reaches, and how far short of
/// it a driver's squared chord says nothing of which side of the radius the driver is: about
/// twenty units in the last place of a squared chord near its largest value, 4 (a unit is
/// 4.4e-16 there), well beyond what computing a driver's and the radius's can be off by. Near
/// the antipode of the query point that is up to tens of meters of arc; the drivers in that
/// band are held to the radius by their exact distances (see [`Reach`]).
const RADIUS_CHORD2_SLACK: f64 = 1e-14;

/// How far a query reaches: a radius in meters (infinite for none) and the squared chords
/// that stand in for it while drivers are ranked.
#[derive(Clone, Copy, Debug)]
struct Reach {
    /// The squared chord beyond which no driver is wanted (infinite for no bound).
    chord2: f64,
    /// The squared chord up to which a driver is surely within the radius; past it, up to
    /// `chord2`, the driver's exact distance decides, before it can take a place of the best.
    sure_chord2: f64,
    radius_m: f64,
}

impl Reach {
    fn of(radius_m: f64) -> Self {
        if radius_m == f64::INFINITY {
            return Self {
                chord2: f64::INFINITY,
                sure_chord2: f64::INFINITY,
                radius_m,
            };
        }
        let angle = radius_m / EARTH_RADIUS_M;
        // Squared chords rank drivers, but near the point's antipode they resolve only tenths
        // of a meter (a chord hardly changes with the arc there): the walk reaches a few
        // roundings of a squared chord past the radius, and the exact distances decide there.
        // A driver beyond the radius must not take a place of the limit from one inside it.
        let chord2 = angle_to_chord2(angle);
        Self {
            chord2: if angle >= PI {
                f64::INFINITY
            } else {
                chord2 + RADIUS_CHORD2_SLACK
            },
            sure_chord2: chord2 - RADIUS_CHORD2_SLACK,
            radius_m,
        }
    }

    /// Whether a driver at `chord2` (within [`Reach::chord2`]) at `unit` is within the radius
    /// of `query`, by the distance a result reports.
    #[inline]
    fn holds(&self, chord2: f64, query: &Unit, unit: &Unit) -> bool {
        chord2 <= self.sure_chord2 || self.holds_exactly(query, unit)
    }

    /// [`holds`](Self::holds) for a driver within a rounding of the radius: rare, so kept out
    /// of line, where its arc tangent does not weigh on a scan's loop.
    #[cold]
    #[inline(never)]
    fn holds_exactly(&self, query: &Unit, unit: &Unit) -> bool {
        distance_m(query, unit) <= self.radius_m
    }
}

/// How an [`Index`] is laid out and when a driver counts as gone.
///
/// ```
/// use std::time::Duration;
/// use infra_geomatch::Config;
///
/// let config = Config::default()
///     .resolution(h3o::Resolution::Eight)
///     .staleness(Duration::from_secs(60))
///     .shards(64);
/// assert_eq!(config.staleness_window(), Duration::from_secs(60));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    resolution: Resolution,
    staleness: Duration,
    shards: usize,
    locator_slots: usize,
}

impl Default for Config {
    /// Resolution 9 (cells of about 0.1 km²), a 30 s staleness window, 256 shards, a locator
    /// of 2^18 slots (2 MiB).
    fn default() -> Self {
        Self {
            resolution: Resolution::Nine,
            staleness: Duration::from_secs(30),
            shards: 256,
            locator_slots: 1 << 18,
        }
    }
}

impl Config {
    /// The most shards an index may have.
    pub const MAX_SHARDS: usize = 65_536;

    /// The H3 resolution of the buckets. Finer cells mean fewer drivers scanned per cell
    /// but more cells per query; pick one whose cells hold a few dozen drivers.
    #[must_use]
    pub const fn resolution(mut self, resolution: Resolution) -> Self {
        self.resolution = resolution;
        self
    }

    /// Drivers whose last report is older than this are left out of queries and claims.
    #[must_use]
    pub const fn staleness(mut self, window: Duration) -> Self {
        self.staleness = window;
        self
    }

    /// How many independently locked parts the driver table and the cell table each have
    /// (1 to [`Config::MAX_SHARDS`]).
    #[must_use]
    pub const fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// The most slots a locator may have (2^24: 128 MiB).
    pub const MAX_LOCATOR_SLOTS: usize = 1 << 24;

    /// How many slots the locator has (rounded up to a power of two, 8 bytes each; 0 for
    /// none): a table from squares of latitude and longitude, each a cell's edge tall and as
    /// many degrees wide (narrower on the ground by the cosine of the latitude), to the cell
    /// last found in the square by an insert, a move H3 placed, or a query. A query whose
    /// square names a cell with drivers, and whose point that cell's geometry shows inside it
    /// or inside the neighbour nearest the point, skips H3's point-to-cell projection, about a
    /// quarter of a query's instructions at a million drivers (a smaller share of its time);
    /// any other query asks H3, as every query does without a locator. Answers are the same
    /// either way. A city of 2,500 km² at resolution 9 has about 82,000 squares on the
    /// equator and about 107,000 at 40° of latitude: give a fleet spread wider more slots.
    /// The table is allocated and zeroed when the index is built (2 MiB by default): an
    /// application building many small indexes may want fewer slots, or none.
    ///
    /// ```
    /// use infra_geomatch::{Config, Index};
    /// assert!(Index::new(Config::default().locator_slots(0)).is_ok());
    /// assert!(Index::new(Config::default().locator_slots(Config::MAX_LOCATOR_SLOTS + 1)).is_err());
    /// ```
    #[must_use]
    pub const fn locator_slots(mut self, slots: usize) -> Self {
        self.locator_slots = slots;
        self
    }

    /// The bucket resolution.
    pub const fn bucket_resolution(&self) -> Resolution {
        self.resolution
    }

    /// The locator's slots as asked for (before rounding up to a power of two).
    pub const fn locator_slot_count(&self) -> usize {
        self.locator_slots
    }

    /// The staleness window.
    pub const fn staleness_window(&self) -> Duration {
        self.staleness
    }
}

/// What a query reads of a driver its coarse look keeps: written by every update (with the
/// coarse position) and by state changes. One cache line, aligned: a query reads all of it.
#[derive(Debug)]
#[repr(align(64))]
struct Detail {
    /// The id and the exact position are here rather than in the array a scan walks: a scan
    /// reads them only for the drivers its coarse look keeps, whose row it reads anyway, so
    /// that array holds 6 bytes a driver.
    id: DriverId,
    unit: Unit,
    seen: u64,
    /// `version << STATE_BITS | state`: changed only by compare-and-swap, so two claims of
    /// one driver cannot both see it available.
    word: AtomicU64,
    profile: DriverProfile,
}

/// A cell sharing an edge with a bucket's, and the circle that holds it.
#[derive(Clone, Copy, Debug)]
struct Adjacent {
    cell: CellIndex,
    circle: CoarseCircle,
}

/// One cell's drivers: three arrays of rows, the slot of a driver being its index in each.
///
/// Laid out in the order written (`repr(C)`), what an update reads first: the arrays' headers
/// and then the geometry that says whether the position is still in the cell, side by side, so
/// an update in place reads few of the bucket's lines.
#[derive(Debug)]
#[repr(C)]
struct Bucket {
    /// What a scan reads of every driver: its position in the bucket's frame.
    coarse: Vec<LocalUnit>,
    /// The frame of `coarse`, which a scan reads with it.
    frame: LocalFrame,
    /// Whether a driver's position did not fit the frame (never seen: no point of the cell
    /// is that far out, `index::tests::every_position_fits_its_buckets_frame`), in which
    /// case a scan reads every row.
    loose: bool,
    details: Vec<Detail>,
    /// The positions as reported, which no query reads: apart from the details, whose row then
    /// fits one cache line.
    points: Vec<Point>,
    geometry: CellGeometry,
    /// How many of `around` are neighbours: six, five around a pentagon.
    around_len: usize,
    /// The cell's neighbours with their circles, so a query's next ring, and the bounds that
    /// decide whether it is worth a look, come from here rather than from H3 or from looking
    /// the cells up. Kept in the bucket itself, not behind a pointer: a query reads them
    /// right after finding the bucket, and a second cache miss in a row would cost more than
    /// the reading.
    around: [Adjacent; 6],
    /// Driver → slot, for when the driver table's slot is out of date (another driver of the
    /// bucket left and the last row took its slot).
    slots: HashMap<DriverId, usize, RandomState>,
}

/// How a driver enters the index, which decides its first version.
#[derive(Clone, Copy)]
enum Entry {
    /// A new driver: `Available`, at the index's version floor.
    Inserted,
    /// A record from [`Index::remove`] (here or elsewhere): its state, and its version if
    /// that is at or above the floor, else the floor.
    Restored(u64),
}

/// A driver's row, while it moves between buckets.
#[derive(Clone, Copy)]
struct Row {
    id: DriverId,
    point: Point,
    seen: u64,
    profile: DriverProfile,
    word: u64,
}

impl Bucket {
    fn new(cell: CellIndex) -> Self {
        let mut cells = Vec::with_capacity(7);
        neighbours(cell, &mut cells);
        let geometry = CellGeometry::of(cell);
        // Places past `around_len` hold the cell itself, never read.
        let mut around = [Adjacent {
            cell,
            circle: CoarseCircle::of(&geometry.circumcircle()),
        }; 6];
        let mut around_len = 0;
        for neighbour in cells.into_iter().filter(|&neighbour| neighbour != cell) {
            around[around_len] = Adjacent {
                cell: neighbour,
                circle: CoarseCircle::of(&Circumcircle::of(neighbour)),
            };
            around_len += 1;
        }
        Self {
            frame: LocalFrame::of(&geometry.circumcircle()),
            loose: false,
            geometry,
            around,
            around_len,
            coarse: Vec::new(),
            points: Vec::new(),
            details: Vec::new(),
            slots: HashMap::default(),
        }
    }

    /// The cells sharing an edge with the bucket's.
    #[inline]
    fn adjacent(&self) -> &[Adjacent] {
        &self.around[..self.around_len]
    }

    /// The neighbour whose center is nearest `unit`: where a position that left the cell
    /// across an edge most likely is (H3 cells are nearly those of the nearest center).
    fn nearest_adjacent(&self, unit: &Unit) -> Option<CellIndex> {
        self.adjacent()
            .iter()
            .min_by(|a, b| {
                a.circle
                    .chord2_to_center(unit)
                    .total_cmp(&b.circle.chord2_to_center(unit))
            })
            .map(|adjacent| adjacent.cell)
    }

    /// Asks for the lines a query's scan of the bucket reads first: every driver's coarse
    /// position and the neighbours.
    #[inline]
    fn prefetch(&self) {
        prefetch::read_all(&self.coarse);
        prefetch::read_all(self.adjacent());
    }

    /// Asks for the lines an update in place of `slot` writes besides its detail row (if
    /// `slot` is still the driver's: else a useless fetch), while the row is read.
    #[inline]
    fn prefetch_writes(&self, slot: usize) {
        prefetch::write(self.coarse.as_ptr().wrapping_add(slot));
        prefetch::write(self.points.as_ptr().wrapping_add(slot));
    }

    /// `unit` in the bucket's frame; a position that does not fit marks the bucket loose.
    fn local(&mut self, unit: &Unit) -> LocalUnit {
        self.frame.encode(unit).unwrap_or_else(|| {
            self.loose = true;
            [0; 3]
        })
    }

    /// Adds a row; its slot.
    fn push(&mut self, row: Row) -> usize {
        let slot = self.coarse.len();
        let unit = row.point.unit();
        self.slots.insert(row.id, slot);
        let local = self.local(&unit);
        self.coarse.push(local);
        self.points.push(row.point);
        self.details.push(Detail {
            id: row.id,
            unit,
            seen: row.seen,
            word: AtomicU64::new(row.word),
            profile: row.profile,
        });
        slot
    }

    /// The slot of `id`, which the bucket holds: `hint` if that is still it (one compare),
    /// else the slot map's.
    #[inline]
    fn slot_of(&self, id: DriverId, hint: usize) -> usize {
        if self.details.get(hint).is_some_and(|detail| detail.id == id) {
            hint
        } else {
            self.slots[&id]
        }
    }

    fn take(&mut self, id: DriverId, hint: usize) -> Row {
        let slot = self.slot_of(id, hint);
        self.slots.remove(&id);
        self.coarse.swap_remove(slot);
        let point = self.points.swap_remove(slot);
        let detail = self.details.swap_remove(slot);
        if let Some(moved) = self.details.get(slot) {
            self.slots.insert(moved.id, slot);
        }
        Row {
            id,
            point,
            seen: detail.seen,
            profile: detail.profile,
            word: detail.word.load(Ordering::Acquire),
        }
    }

    /// The record of the driver in `slot`, read at `now` on the index's timeline.
    fn record(&self, slot: usize, now: u64) -> DriverRecord {
        let detail = &self.details[slot];
        let word = detail.word.load(Ordering::Acquire);
        DriverRecord {
            id: detail.id,
            point: self.points[slot],
            profile: detail.profile,
            state: DriverState::from_code(word),
            version: Version(word),
            seen_nanos: clock_reading(detail.seen),
            age: Duration::from_nanos(now.saturating_sub(detail.seen)),
        }
    }

    fn set_position(&mut self, slot: usize, point: Point, unit: Unit, now: u64) {
        self.coarse[slot] = self.local(&unit);
        let detail = &mut self.details[slot];
        detail.unit = unit;
        detail.seen = now;
        self.points[slot] = point;
    }
}

/// Where the driver table says a driver is: its cell, and its slot in the cell's bucket as of
/// the driver's last move (checked before use, see [`Bucket::slot_of`]).
#[derive(Clone, Copy, Debug)]
struct Place {
    cell: CellIndex,
    slot: usize,
    lines: Lines,
}

/// Where a driver's bucket and its detail row were in memory when the driver last entered the
/// index or was updated: an update asks for the bucket's first line and the row's as soon as
/// it has read the driver's place, so their misses overlap instead of following one another
/// (the cell table's lookup finds the bucket, the bucket the row). Addresses only, never
/// dereferenced: a bucket the cell table moved (it grew) or dropped, or a row that moved since
/// (it took the slot of a driver that left, or an arrival grew the bucket's arrays), costs a
/// useless fetch, nothing else.
#[derive(Clone, Copy, Debug)]
struct Lines {
    bucket: usize,
    row: usize,
}

impl Lines {
    /// Where `bucket` and its row `slot` are now.
    fn of(bucket: &Bucket, slot: usize) -> Self {
        Self {
            bucket: std::ptr::from_ref(bucket).addr(),
            row: bucket.details.as_ptr().wrapping_add(slot).addr(),
        }
    }

    /// Asks for the line the bucket starts in (the coarse array's header and the frame; the
    /// other headers and the geometry an update reads lie in the next lines, not asked for)
    /// and the row's.
    #[inline]
    fn prefetch(self) {
        prefetch::read(std::ptr::without_provenance::<Bucket>(self.bucket));
        prefetch::write(std::ptr::without_provenance::<Detail>(self.row));
    }
}

/// The word after a change to `state`: the next version, so older versions stop matching.
fn next_word(word: u64, state: DriverState) -> u64 {
    ((word >> STATE_BITS).wrapping_add(1) << STATE_BITS) | state.code()
}

type DriverShard = RwLock<DriverTable<Place>>;

/// The keys of the hash that picks a driver's part of the driver table: random per index.
#[cfg(not(infra_loom))]
type PartKeys = RandomState;
/// Fixed under loom: a model replays its interleavings, each of which must take the same locks
/// in the same order, so a driver must be in the same part in every run.
#[cfg(infra_loom)]
type PartKeys = std::hash::BuildHasherDefault<std::hash::DefaultHasher>;
type CellShard = RwLock<HashMap<CellIndex, Bucket, RandomState>>;
type CellShardGuard<'a> = RwLockReadGuard<'a, HashMap<CellIndex, Bucket, RandomState>>;

/// Where the index's timeline (last reports, staleness, idleness) places its clock's zero:
/// 2^62 ns, about 146 years, in. A restored driver's last report lies its age before now,
/// and a node that has just started (`SystemClock` counts from its process's start) must
/// still place it that far back: pinned at the clock's zero, a driver silent for an hour
/// would be fresh on a node up for ten seconds, and never idle for `remove_idle`.
const CLOCK_ZERO: u64 = 1 << 62;

/// A last report on the index's timeline as the clock read it (0 for one before the clock's
/// zero, which only a restored record can be).
fn clock_reading(seen: u64) -> u64 {
    seen.saturating_sub(CLOCK_ZERO)
}

/// How many resolutions above a bucket's cell the ancestor lies that picks the bucket's part
/// of the cell table: 2, so the 49 or so cells under one ancestor share a part.
const SHARD_LEVELS: u8 = 2;

/// Drivers in per-cell buckets on an H3 grid, shared by many threads.
///
/// Updates, queries and claims all take `&self`. The driver table (id → cell) and the cell
/// table (cell → bucket) are each split into [`Config::shards`] read-write-locked parts; an
/// update locks its driver's part, then one cell's part at a time (never two cells at once),
/// and a query takes read locks on one cell part at a time. A driver's state is an atomic word
/// changed only by compare-and-swap, so claims need read locks only.
///
/// ```
/// use infra_geomatch::{Config, DriverId, DriverProfile, Filter, Index, Point};
///
/// let index = Index::new(Config::default())?;
/// index.insert(DriverId(1), Point::new(40.7128, -74.0060)?, DriverProfile::default())?;
/// index.insert(DriverId(2), Point::new(40.7306, -73.9352)?, DriverProfile::default())?;
/// index.update(DriverId(2), Point::new(40.7130, -74.0050)?)?; // moved near the rider
///
/// let rider = Point::new(40.7127, -74.0059)?;
/// let nearest = index.nearest(rider, 2, &Filter::any())?;
/// assert_eq!(nearest[0].driver, DriverId(1));
///
/// // Claim the nearest driver that nobody else claims first.
/// let (candidate, claim) = index.claim_nearest(rider, 2, &Filter::any())?.expect("two free");
/// assert_eq!(candidate.driver, DriverId(1));
/// index.accept(&claim)?;
/// # Ok::<(), infra_geomatch::Error>(())
/// ```
pub struct Index<C = SystemClock> {
    config: Config,
    /// Random, never 0: names this index in its claims, so a claim cannot be settled on
    /// another index where the same driver may hold the same version.
    id: u64,
    /// Every version this index gave a driver that has since left it is below this (versions
    /// counted without the state bits). A driver entering the index starts here, so its
    /// versions never repeat ones an earlier stay issued, and neither do claims.
    version_floor: AtomicU64,
    staleness_nanos: u64,
    clock: C,
    /// Keys the hash that picks a driver's part of the driver table: ids may come from users,
    /// who must not be able to choose many that share a part (and its lock).
    driver_parts: PartKeys,
    drivers: Box<[DriverShard]>,
    cells: Box<[CellShard]>,
    /// Buckets that hold at least one driver; decides when scanning every bucket is cheaper
    /// than another ring.
    occupied: AtomicUsize,
    /// Guesses at a query point's cell ([`Config::locator_slots`]).
    locator: Locator,
    /// How many times the index asked H3 for a point's cell, for the tests of the locator.
    #[cfg(all(test, not(infra_loom)))]
    h3_asked: AtomicUsize,
    /// Where cells are grouped into parts of the cell table (see `cell_shard_index`); `None`
    /// at resolutions 0 and 1, where each cell is its own key.
    shard_resolution: Option<Resolution>,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::IndexMetrics,
}

impl<C> std::fmt::Debug for Index<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("config", &self.config)
            .field("occupied_cells", &self.occupied.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<C> Index<C> {
    /// Calls `f` with the state of every driver in the index.
    #[cfg(feature = "metrics")]
    fn each_driver_state(&self, mut f: impl FnMut(DriverState)) {
        for shard in &*self.cells {
            for bucket in shard.read().values() {
                for detail in &bucket.details {
                    f(DriverState::from_code(detail.word.load(Ordering::Acquire)));
                }
            }
        }
    }
}

/// The gauges of drivers by state are shared by every index of the same name, built before
/// or after this one: its drivers leave them with it.
#[cfg(feature = "metrics")]
impl<C> Drop for Index<C> {
    fn drop(&mut self) {
        self.each_driver_state(|state| self.metrics.left(state));
    }
}

fn shard_of(key: u64, shards: usize) -> usize {
    // Fibonacci hashing: cell indexes are far from uniform in their low bits.
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % shards
}

impl Index<SystemClock> {
    /// An empty index on the system clock.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if the shard count is 0 or above [`Config::MAX_SHARDS`], or the
    /// locator has more than [`Config::MAX_LOCATOR_SLOTS`] slots.
    ///
    /// ```
    /// use infra_geomatch::{Config, Index};
    /// assert!(Index::new(Config::default().shards(0)).is_err());
    /// assert!(Index::new(Config::default()).unwrap().is_empty());
    /// ```
    pub fn new(config: Config) -> Result<Self, Error> {
        Self::with_clock(config, SystemClock::new())
    }
}

impl<C: Clock> Index<C> {
    /// An empty index reading time from `clock` (a `ManualClock` in tests).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if the shard count is 0 or above [`Config::MAX_SHARDS`], or the
    /// locator has more than [`Config::MAX_LOCATOR_SLOTS`] slots.
    ///
    /// ```
    /// use std::time::Duration;
    /// use infra_common::ManualClock;
    /// use infra_geomatch::{Config, DriverId, DriverProfile, Error, Filter, Index, Point};
    ///
    /// let clock = ManualClock::new();
    /// let config = Config::default().staleness(Duration::from_secs(30));
    /// let index = Index::with_clock(config, clock.clone())?;
    /// let here = Point::new(35.68, 139.69)?;
    /// index.insert(DriverId(1), here, DriverProfile::default())?;
    /// clock.advance(Duration::from_secs(31));
    /// assert!(index.nearest(here, 1, &Filter::any())?.is_empty()); // not heard from: left out
    /// index.update(DriverId(1), here)?;
    /// assert_eq!(index.nearest(here, 1, &Filter::any())?.len(), 1);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn with_clock(config: Config, clock: C) -> Result<Self, Error> {
        if config.shards == 0 || config.shards > Config::MAX_SHARDS {
            return Err(Error::InvalidConfig("shards must be 1 to 65,536"));
        }
        if config.locator_slots > Config::MAX_LOCATOR_SLOTS {
            return Err(Error::InvalidConfig("locator slots must be at most 2^24"));
        }
        Ok(Self {
            config,
            // A fresh random key per index; `| 1` keeps 0 free for claims no index issued.
            id: RandomState::new().hash_one(0u8) | 1,
            version_floor: AtomicU64::new(0),
            staleness_nanos: duration_to_nanos(config.staleness),
            clock,
            driver_parts: PartKeys::default(),
            drivers: (0..config.shards)
                .map(|_| RwLock::new(DriverTable::with_hasher(RandomState::new())))
                .collect(),
            cells: (0..config.shards)
                .map(|_| RwLock::new(HashMap::default()))
                .collect(),
            occupied: AtomicUsize::new(0),
            locator: Locator::new(config.resolution, config.locator_slots),
            #[cfg(all(test, not(infra_loom)))]
            h3_asked: AtomicUsize::new(0),
            shard_resolution: u8::from(config.resolution)
                .checked_sub(SHARD_LEVELS)
                .and_then(|r| Resolution::try_from(r).ok()),
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::IndexMetrics::new(std::borrow::Cow::Borrowed(
                crate::metrics::DEFAULT_INDEX_NAME,
            )),
        })
    }

    /// Names the index in its metrics (the `index` label; default `default`).
    ///
    /// Drivers already in the index move to the new name in the gauges (a pass over them:
    /// name the index before inserting drivers).
    ///
    /// ```
    /// use infra_geomatch::{Config, Index};
    /// let index = Index::new(Config::default())?.with_metrics_name("berlin");
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn with_metrics_name(mut self, name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        let renamed = crate::metrics::IndexMetrics::new(name.into());
        self.each_driver_state(|state| {
            self.metrics.left(state);
            renamed.entered(state);
        });
        self.metrics = renamed;
        self
    }

    /// The configuration.
    ///
    /// ```
    /// # use infra_geomatch::{Config, Index};
    /// let index = Index::new(Config::default())?;
    /// assert_eq!(index.config().bucket_resolution(), h3o::Resolution::Nine);
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How many drivers the index holds, in any state.
    ///
    /// ```
    /// # use infra_geomatch::{Config, DriverId, DriverProfile, Index, Point};
    /// let index = Index::new(Config::default())?;
    /// index.insert(DriverId(1), Point::new(0.0, 0.0)?, DriverProfile::default())?;
    /// assert_eq!(index.len(), 1);
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.drivers.iter().map(|shard| shard.read().len()).sum()
    }

    /// Whether the index holds no driver.
    ///
    /// ```
    /// # use infra_geomatch::{Config, Index};
    /// assert!(Index::new(Config::default())?.is_empty());
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.drivers.iter().all(|shard| shard.read().is_empty())
    }

    fn driver_shard(&self, id: DriverId) -> &DriverShard {
        &self.drivers[shard_of(self.driver_parts.hash_one(id), self.drivers.len())]
    }

    fn cell_shard(&self, cell: CellIndex) -> &CellShard {
        &self.cells[self.cell_shard_index(cell)]
    }

    /// A cell's part of the cell table, chosen by its ancestor [`SHARD_LEVELS`] resolutions
    /// up, so the cells around a query mostly share a part and it takes few locks; a city
    /// still spreads over many parts (at resolution 9, one part per 5 km² or so).
    fn cell_shard_index(&self, cell: CellIndex) -> usize {
        let key = self
            .shard_resolution
            .and_then(|r| cell.parent(r))
            .unwrap_or(cell);
        shard_of(u64::from(key), self.cells.len())
    }

    /// The clock's reading on the index's timeline, which starts [`CLOCK_ZERO`] before the
    /// clock's zero.
    fn now(&self) -> u64 {
        self.clock.now_nanos().saturating_add(CLOCK_ZERO)
    }

    fn fresh(&self, now: u64, seen: u64) -> bool {
        now.saturating_sub(seen) <= self.staleness_nanos
    }

    /// Adds a driver, `Available`, heard from now, at a version above any it had in this
    /// index before (so claims from an earlier stay do not hold).
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateDriver`] if the id is already in the index.
    ///
    /// ```
    /// # use infra_geomatch::{Config, DriverId, DriverProfile, Error, Index, Point};
    /// let index = Index::new(Config::default())?;
    /// let at = Point::new(0.0, 0.0)?;
    /// index.insert(DriverId(1), at, DriverProfile::default())?;
    /// assert_eq!(index.insert(DriverId(1), at, DriverProfile::default()), Err(Error::DuplicateDriver(DriverId(1))));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn insert(&self, id: DriverId, point: Point, profile: DriverProfile) -> Result<(), Error> {
        let row = Row {
            id,
            point,
            seen: self.now(),
            profile,
            word: 0,
        };
        self.insert_row(row, Entry::Inserted)
    }

    /// Adds a driver as recorded elsewhere (position, profile, state, version, how long ago it
    /// reported): the receiving side of a hand-off between partitions (see
    /// [`Partitioner`](crate::Partitioner)).
    ///
    /// The last report is placed [`DriverRecord::age`] before this index's clock reads now, so
    /// records move between indexes whose clocks differ; `seen_nanos` is not used. The state
    /// is kept. The version is kept if it is at or above every version this index has given a
    /// driver that since left it; otherwise the driver gets a new one, so no version repeats
    /// for a driver within an index. A claim made on another index never holds here
    /// ([`Error::ForeignClaim`]): an offer outstanding at the hand-off arrives `Offered`, and
    /// the new node ends it with [`Index::set_state`].
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateDriver`] if the id is already in the index;
    /// [`Error::InconsistentRecord`] if the record's state is not the one its version encodes,
    /// or its version is past any an index gives (2^61 and above: counting on from it, the
    /// versions would wrap round to ones given before).
    ///
    /// ```
    /// # use infra_geomatch::{Config, DriverId, DriverProfile, DriverState, Index, Point};
    /// let here = Index::new(Config::default())?;
    /// let there = Index::new(Config::default())?;
    /// here.insert(DriverId(1), Point::new(0.0, 0.0)?, DriverProfile::default())?;
    /// here.set_state(DriverId(1), DriverState::Busy)?;
    /// let record = here.remove(DriverId(1))?;
    /// there.restore(record)?;
    /// assert_eq!(there.driver(DriverId(1))?.state, DriverState::Busy);
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn restore(&self, record: DriverRecord) -> Result<(), Error> {
        crate::driver::check_record(&record)?;
        let row = Row {
            id: record.id,
            point: record.point,
            seen: self.now().saturating_sub(duration_to_nanos(record.age)),
            profile: record.profile,
            word: 0,
        };
        self.insert_row(row, Entry::Restored(record.version.0))
    }

    fn insert_row(&self, mut row: Row, entry: Entry) -> Result<(), Error> {
        let id = row.id;
        let cell = self.cell_of(row.point);
        let mut drivers = self.driver_shard(id).write();
        if drivers.contains_key(id) {
            return Err(Error::DuplicateDriver(id));
        }
        // Read under the driver's lock: a removal of this id raised the floor under it.
        let floor = self.version_floor.load(Ordering::Acquire);
        row.word = match entry {
            Entry::Inserted => (floor << STATE_BITS) | DriverState::Available.code(),
            Entry::Restored(word) if word >> STATE_BITS >= floor => word,
            Entry::Restored(word) => (floor << STATE_BITS) | (word & STATE_MASK),
        };
        #[cfg(feature = "metrics")]
        self.metrics.entered(DriverState::from_code(row.word));
        let slot = self.push_row(cell, row);
        let (slot, lines) = slot;
        drivers.insert(id, Place { cell, slot, lines });
        Ok(())
    }

    /// Adds a row to `cell`'s bucket; its slot.
    fn push_row(&self, cell: CellIndex, row: Row) -> (usize, Lines) {
        {
            let mut cells = self.cell_shard(cell).write();
            if let Some(bucket) = cells.get_mut(&cell) {
                let slot = bucket.push(row);
                return (slot, Lines::of(bucket, slot));
            }
        }
        // A new bucket's shapes come from H3, outside the cell lock (the slow part); if
        // another update made the bucket meanwhile, this one is dropped.
        let new = Bucket::new(cell);
        let mut cells = self.cell_shard(cell).write();
        let bucket = cells.entry(cell).or_insert_with(|| {
            self.occupied.fetch_add(1, Ordering::Relaxed);
            new
        });
        let slot = bucket.push(row);
        (slot, Lines::of(bucket, slot))
    }

    fn take_row(&self, place: Place, id: DriverId) -> Row {
        let cell = place.cell;
        let mut cells = self.cell_shard(cell).write();
        let bucket = cells
            .get_mut(&cell)
            .expect("the driver table names a bucket that holds the driver");
        let row = bucket.take(id, place.slot);
        if bucket.coarse.is_empty() {
            cells.remove(&cell);
            self.occupied.fetch_sub(1, Ordering::Relaxed);
        }
        row
    }

    /// Records a driver's new position and that it was heard from now.
    ///
    /// Inside its cell this rewrites the driver's row in place, usually without asking H3 for
    /// the cell (a position well inside the cell's inscribed circle, or inside every edge plane
    /// of a hexagon on one icosahedron face, is in the cell); a cell change moves the row to
    /// the new cell's bucket.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDriver`] if the id is not in the index.
    ///
    /// ```
    /// # use infra_geomatch::{Config, DriverId, DriverProfile, Error, Index, Point};
    /// let index = Index::new(Config::default())?;
    /// index.insert(DriverId(1), Point::new(0.0, 0.0)?, DriverProfile::default())?;
    /// index.update(DriverId(1), Point::new(0.5, 0.5)?)?;
    /// assert_eq!(index.driver(DriverId(1))?.point, Point::new(0.5, 0.5)?);
    /// assert_eq!(index.update(DriverId(2), Point::new(0.0, 0.0)?), Err(Error::UnknownDriver(DriverId(2))));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn update(&self, id: DriverId, point: Point) -> Result<(), Error> {
        let now = self.now();
        let unit = point.unit();
        let mut drivers = self.driver_shard(id).write();
        let place = drivers.get_mut(id).ok_or(Error::UnknownDriver(id))?;
        place.lines.prefetch();
        let across = {
            let mut cells = self.cell_shard(place.cell).write();
            let bucket = cells
                .get_mut(&place.cell)
                .expect("the driver table names a bucket that holds the driver");
            bucket.prefetch_writes(place.slot);
            place.slot = bucket.slot_of(id, place.slot);
            place.lines = Lines::of(bucket, place.slot);
            if bucket.geometry.surely_contains(&unit) {
                bucket.set_position(place.slot, point, unit, now);
                return Ok(());
            }
            bucket.nearest_adjacent(&unit)
        };
        // Out of the cell or near its edge. A driver that crossed an edge is usually well inside
        // the neighbour across it, which its bucket's geometry shows; else ask H3, outside any
        // cell lock (it is the slow part).
        let new_cell = match across {
            Some(cell) if self.surely_in(cell, &unit) => cell,
            _ => self.cell_of(point),
        };
        if new_cell == place.cell {
            let mut cells = self.cell_shard(new_cell).write();
            let bucket = cells
                .get_mut(&new_cell)
                .expect("the driver table names a bucket that holds the driver");
            place.slot = bucket.slot_of(id, place.slot);
            place.lines = Lines::of(bucket, place.slot);
            bucket.set_position(place.slot, point, unit, now);
            return Ok(());
        }
        // The row leaves one bucket before it enters the other, never holding two cell locks;
        // a query in between may miss this one driver, as if its report came a moment later.
        let mut row = self.take_row(*place, id);
        row.point = point;
        row.seen = now;
        let (slot, lines) = self.push_row(new_cell, row);
        *place = Place {
            cell: new_cell,
            slot,
            lines,
        };
        Ok(())
    }

    /// The cell of `point`, from H3, remembered for the queries that follow.
    fn cell_of(&self, point: Point) -> CellIndex {
        #[cfg(all(test, not(infra_loom)))]
        self.h3_asked.fetch_add(1, Ordering::Relaxed);
        let cell = point.cell(self.config.resolution);
        self.locator.remember(point, cell);
        cell
    }

    /// The cell of a query's `point` (at `unit`): the locator's guess, or the neighbour of the
    /// guess nearest the point, when the bucket of that cell proves the point inside; else
    /// H3's answer. A guess is checked against the bucket's geometry alone, so a cell with no
    /// bucket (no driver) is always asked of H3.
    fn origin(&self, point: Point, unit: &Unit) -> CellIndex {
        let guess = self.locator.guess(point).and_then(|guess| {
            let cells = self.cell_shard(guess).read();
            let bucket = cells.get(&guess)?;
            if bucket.geometry.surely_contains(unit) {
                return Some(guess);
            }
            let across = bucket.nearest_adjacent(unit)?;
            drop(cells);
            self.surely_in(across, unit).then(|| {
                self.locator.remember(point, across);
                across
            })
        });
        guess.unwrap_or_else(|| self.cell_of(point))
    }

    /// Whether `cell` has a bucket whose geometry shows `unit` is surely in it.
    fn surely_in(&self, cell: CellIndex, unit: &Unit) -> bool {
        self.cell_shard(cell)
            .read()
            .get(&cell)
            .is_some_and(|bucket| bucket.geometry.surely_contains(unit))
    }

    /// Takes a driver out of the index and returns what it held, for
    /// [`Index::restore`] elsewhere. An outstanding claim on it stops holding, here and
    /// anywhere: if the driver is inserted or restored here again, it gets versions above any
    /// it had, and claims name the index that issued them.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDriver`] if the id is not in the index.
    ///
    /// ```
    /// # use infra_geomatch::{Config, DriverId, DriverProfile, Index, Point};
    /// let index = Index::new(Config::default())?;
    /// index.insert(DriverId(1), Point::new(0.0, 0.0)?, DriverProfile::default())?;
    /// assert_eq!(index.remove(DriverId(1))?.id, DriverId(1));
    /// assert!(index.remove(DriverId(1)).is_err());
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn remove(&self, id: DriverId) -> Result<DriverRecord, Error> {
        self.remove_unless(id, |_| false)?
            .ok_or(Error::UnknownDriver(id))
    }

    /// Takes out every driver not heard from (inserted, restored or updated) for `idle` or
    /// longer, whatever its state, and returns what each held (as [`Index::remove`] does), so
    /// a fleet can hand the records elsewhere or drop them. Stale drivers are already left
    /// out of queries; this drops the buckets they leave empty, gives back the driver table's
    /// places as it empties, and saves the time scans spend passing over them. A bucket that
    /// keeps drivers keeps the capacity of its arrays, and the cell table keeps its own.
    ///
    /// One pass over the cell table, one part at a time under its read lock; each removal
    /// then checks the driver again under its own lock, so a driver that reported meanwhile
    /// stays. It reads every driver: meant for a periodic maintenance call, not for every
    /// request.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use infra_common::ManualClock;
    /// # use infra_geomatch::{Config, DriverId, DriverProfile, Index, Point};
    /// let clock = ManualClock::new();
    /// let index = Index::with_clock(Config::default(), clock.clone())?;
    /// index.insert(DriverId(1), Point::new(0.0, 0.0)?, DriverProfile::default())?;
    /// index.insert(DriverId(2), Point::new(0.0, 0.001)?, DriverProfile::default())?;
    /// clock.advance(Duration::from_secs(600));
    /// index.update(DriverId(2), Point::new(0.0, 0.002)?)?;
    /// let gone = index.remove_idle(Duration::from_secs(300));
    /// assert_eq!(gone.iter().map(|record| record.id).collect::<Vec<_>>(), [DriverId(1)]);
    /// assert_eq!(index.len(), 1);
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn remove_idle(&self, idle: Duration) -> Vec<DriverRecord> {
        let idle = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
        // One reading for the whole pass: idle means last heard from at or before `cutoff`.
        let Some(cutoff) = self.now().checked_sub(idle) else {
            return Vec::new();
        };
        let is_idle = |seen: u64| seen <= cutoff;
        let mut candidates = Vec::new();
        for shard in &*self.cells {
            for bucket in shard.read().values() {
                candidates.extend(
                    bucket
                        .details
                        .iter()
                        .filter(|detail| is_idle(detail.seen))
                        .map(|detail| detail.id),
                );
            }
        }
        candidates.sort_unstable();
        candidates
            .into_iter()
            .filter_map(|id| self.remove_unless(id, |seen| !is_idle(seen)).ok().flatten())
            .collect()
    }

    /// Takes a driver out unless `keep` says otherwise of its last report's time; `Ok(None)`
    /// if kept. The driver's lock is held from the check to the removal, so no update of its
    /// position comes between them.
    fn remove_unless(
        &self,
        id: DriverId,
        keep: impl FnOnce(u64) -> bool,
    ) -> Result<Option<DriverRecord>, Error> {
        let mut drivers = self.driver_shard(id).write();
        let place = *drivers.get(id).ok_or(Error::UnknownDriver(id))?;
        let seen = {
            let cells = self.cell_shard(place.cell).read();
            let bucket = cells
                .get(&place.cell)
                .expect("the driver table names a bucket that holds the driver");
            bucket.details[bucket.slot_of(id, place.slot)].seen
        };
        if keep(seen) {
            return Ok(None);
        }
        drivers.remove(id);
        let row = self.take_row(place, id);
        // Still under the driver's lock, so a later insert of this id reads the raised floor.
        self.version_floor
            .fetch_max((row.word >> STATE_BITS) + 1, Ordering::AcqRel);
        #[cfg(feature = "metrics")]
        self.metrics.left(DriverState::from_code(row.word));
        Ok(Some(DriverRecord {
            id,
            point: row.point,
            profile: row.profile,
            state: DriverState::from_code(row.word),
            version: Version(row.word),
            seen_nanos: clock_reading(row.seen),
            age: Duration::from_nanos(self.now().saturating_sub(row.seen)),
        }))
    }

    /// Runs `f` on the driver's bucket and slot, under read locks of its driver and cell.
    fn with_slot<R>(&self, id: DriverId, f: impl FnOnce(&Bucket, usize) -> R) -> Result<R, Error> {
        let drivers = self.driver_shard(id).read();
        let place = *drivers.get(id).ok_or(Error::UnknownDriver(id))?;
        let cells = self.cell_shard(place.cell).read();
        let bucket = cells
            .get(&place.cell)
            .expect("the driver table names a bucket that holds the driver");
        Ok(f(bucket, bucket.slot_of(id, place.slot)))
    }

    /// A copy of what the index holds about a driver.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDriver`] if the id is not in the index.
    ///
    /// ```
    /// # use infra_geomatch::{Config, DriverId, DriverProfile, DriverState, Index, Point};
    /// let index = Index::new(Config::default())?;
    /// index.insert(DriverId(1), Point::new(0.0, 0.0)?, DriverProfile::default())?;
    /// assert_eq!(index.driver(DriverId(1))?.state, DriverState::Available);
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn driver(&self, id: DriverId) -> Result<DriverRecord, Error> {
        let now = self.now();
        self.with_slot(id, |bucket, slot| bucket.record(slot, now))
    }

    /// A copy of every driver's record, for a pass over the index's drivers: after a change
    /// of membership moved partitions to other nodes, the node hands each driver whose
    /// position another node now owns to that node (see [`Partitioner`](crate::Partitioner)).
    ///
    /// Not one snapshot: a driver inserted or removed meanwhile may be listed or not. But every
    /// driver in the index throughout the pass is listed exactly once, also one crossing cells
    /// meanwhile (a pass that skipped it would leave it on a node no query asks). The pass goes
    /// through the driver table one part at a time, under its read lock, which a driver's
    /// move between buckets waits for. It reads every driver: meant for rare maintenance, not
    /// for every request.
    ///
    /// ```
    /// # use infra_geomatch::{Config, DriverId, DriverProfile, Index, Point};
    /// let index = Index::new(Config::default())?;
    /// index.insert(DriverId(1), Point::new(0.0, 0.0)?, DriverProfile::default())?;
    /// index.insert(DriverId(2), Point::new(10.0, 10.0)?, DriverProfile::default())?;
    /// let mut ids: Vec<DriverId> = index.records().iter().map(|record| record.id).collect();
    /// ids.sort();
    /// assert_eq!(ids, [DriverId(1), DriverId(2)]);
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn records(&self) -> Vec<DriverRecord> {
        let now = self.now();
        let mut records = Vec::new();
        let mut places: Vec<(usize, DriverId, Place)> = Vec::new();
        // By the driver table, not the cell table: a driver stays in its part of the driver
        // table whatever cell it is in, and cannot change cells while the part is read-locked.
        // A walk of the cell table would skip a driver moving from a part not yet read to one
        // already read, and list one moving the other way twice.
        for shard in &*self.drivers {
            let drivers = shard.read();
            places.clear();
            places.extend(
                drivers
                    .iter()
                    .map(|(id, &place)| (self.cell_shard_index(place.cell), id, place)),
            );
            // Grouped by part of the cell table, so each part's lock is taken once.
            places.sort_unstable_by_key(|&(part, ..)| part);
            let mut reader = CellReader::new(self);
            for &(_, id, place) in &places {
                let bucket = reader
                    .bucket(place.cell)
                    .expect("the driver table names a bucket that holds the driver");
                records.push(bucket.record(bucket.slot_of(id, place.slot), now));
            }
        }
        records
    }

    /// Sets a driver's state whatever it was (a trip ended, the app went offline) and returns
    /// the new version. Any outstanding claim on the driver stops holding.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownDriver`] if the id is not in the index.
    ///
    /// ```
    /// # use infra_geomatch::{Config, DriverId, DriverProfile, DriverState, Error, Index, Point};
    /// let index = Index::new(Config::default())?;
    /// index.insert(DriverId(1), Point::new(0.0, 0.0)?, DriverProfile::default())?;
    /// let seen = index.driver(DriverId(1))?.version;
    /// index.set_state(DriverId(1), DriverState::Offline)?;
    /// assert_eq!(index.claim(DriverId(1), seen), Err(Error::ClaimLost(DriverId(1))));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn set_state(&self, id: DriverId, state: DriverState) -> Result<Version, Error> {
        self.with_slot(id, |bucket, slot| {
            let word = &bucket.details[slot].word;
            let mut current = word.load(Ordering::Acquire);
            loop {
                let next = next_word(current, state);
                match word.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        #[cfg(feature = "metrics")]
                        self.metrics.changed(DriverState::from_code(current), state);
                        return Version(next);
                    }
                    Err(seen) => current = seen,
                }
            }
        })
    }

    /// Claims a driver found at `version`: moves it from `Available` to `Offered` if nothing
    /// changed since, atomically, so two claimers of one driver never both win.
    ///
    /// # Errors
    ///
    /// - [`Error::ClaimLost`]: the driver's state changed since `version` was read (another
    ///   claim won, or it went busy or offline). Move on to the next candidate.
    /// - [`Error::NotAvailable`]: `version` was read while the driver was not available.
    /// - [`Error::Stale`]: the driver has not reported within the staleness window.
    /// - [`Error::UnknownDriver`]: the id is not in the index.
    ///
    /// ```
    /// # use infra_geomatch::{Config, DriverId, DriverProfile, Error, Filter, Index, Point};
    /// let index = Index::new(Config::default())?;
    /// let at = Point::new(0.0, 0.0)?;
    /// index.insert(DriverId(1), at, DriverProfile::default())?;
    /// let found = index.nearest(at, 1, &Filter::any())?[0];
    /// let won = index.claim(found.driver, found.version)?;
    /// // A second matcher that saw the same candidate loses, and says so.
    /// assert_eq!(index.claim(found.driver, found.version), Err(Error::ClaimLost(DriverId(1))));
    /// index.decline(won)?; // available again
    /// # Ok::<(), Error>(())
    /// ```
    pub fn claim(&self, id: DriverId, version: Version) -> Result<Claim, Error> {
        let now = self.now();
        let expected = version.0;
        let seen_state = DriverState::from_code(expected);
        if seen_state != DriverState::Available {
            return Err(Error::NotAvailable {
                driver: id,
                state: seen_state,
            });
        }
        self.with_slot(id, |bucket, slot| {
            let detail = &bucket.details[slot];
            if !self.fresh(now, detail.seen) {
                return Err(Error::Stale(id));
            }
            let offered = next_word(expected, DriverState::Offered);
            match detail.word.compare_exchange(
                expected,
                offered,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    #[cfg(feature = "metrics")]
                    {
                        self.metrics.claim_won();
                        self.metrics
                            .changed(DriverState::Available, DriverState::Offered);
                    }
                    Ok(Claim {
                        driver: id,
                        version: Version(offered),
                        issuer: self.id,
                    })
                }
                Err(_) => {
                    #[cfg(feature = "metrics")]
                    self.metrics.claim_lost();
                    Err(Error::ClaimLost(id))
                }
            }
        })?
    }

    fn settle(&self, claim: &Claim, to: DriverState) -> Result<(), Error> {
        let id = claim.driver;
        if claim.issuer != self.id {
            return Err(Error::ForeignClaim(id));
        }
        self.with_slot(id, |bucket, slot| {
            bucket.details[slot]
                .word
                .compare_exchange(
                    claim.version.0,
                    next_word(claim.version.0, to),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .map(|_| {
                    #[cfg(feature = "metrics")]
                    self.metrics.changed(DriverState::Offered, to);
                })
                .map_err(|_| Error::ClaimInvalid(id))
        })?
    }

    /// The driver accepted the offer: `Offered → Busy`.
    ///
    /// # Errors
    ///
    /// [`Error::ClaimInvalid`] if the claim no longer holds (already settled, the state was
    /// set since, or the driver was removed and entered again); [`Error::UnknownDriver`] if
    /// the driver was removed; [`Error::ForeignClaim`] if another index issued the claim.
    ///
    /// ```
    /// # use infra_geomatch::{Config, DriverId, DriverProfile, Error, Index, Point};
    /// let index = Index::new(Config::default())?;
    /// index.insert(DriverId(1), Point::new(0.0, 0.0)?, DriverProfile::default())?;
    /// let claim = index.claim(DriverId(1), index.driver(DriverId(1))?.version)?;
    /// index.accept(&claim)?;
    /// assert_eq!(index.accept(&claim), Err(Error::ClaimInvalid(DriverId(1))));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn accept(&self, claim: &Claim) -> Result<(), Error> {
        self.settle(claim, DriverState::Busy)
    }

    /// The driver declined, or the offer timed out: `Offered → Available`.
    ///
    /// # Errors
    ///
    /// [`Error::ClaimInvalid`] if the claim no longer holds; [`Error::UnknownDriver`] if the
    /// driver was removed; [`Error::ForeignClaim`] if another index issued the claim.
    ///
    /// ```
    /// # use infra_geomatch::{Config, DriverId, DriverProfile, DriverState, Index, Point};
    /// let index = Index::new(Config::default())?;
    /// index.insert(DriverId(1), Point::new(0.0, 0.0)?, DriverProfile::default())?;
    /// let claim = index.claim(DriverId(1), index.driver(DriverId(1))?.version)?;
    /// index.decline(claim)?;
    /// assert_eq!(index.driver(DriverId(1))?.state, DriverState::Available);
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn decline(&self, claim: Claim) -> Result<(), Error> {
        self.settle(&claim, DriverState::Available)
    }

    /// The `k` nearest available, fresh drivers that pass `filter`, nearest first, by exact
    /// great-circle distance. Fewer if fewer exist.
    ///
    /// Drivers are chosen by the squared straight-line distance between their unit vectors
    /// (ties by id), which orders them as the great-circle distance does up to rounding, or,
    /// beyond an arc of about 174° (toward the point's antipode, where a squared chord
    /// resolves only tenths of a meter), by the distance a result reports: two drivers whose
    /// reported distances are equal to the last bit, or differ by a rounding of their squared
    /// chords (nanometers), can come out in either order, and the `k`-th place between them is
    /// not decided by id.
    ///
    /// Scans the query's cell, then rings of cells around it, and stops after the first ring
    /// whose every cell is provably farther than the `k`-th driver found (the crate README
    /// states the bound).
    ///
    /// A driver that crosses cells while the query runs may be missed, or met in both cells:
    /// it is then returned once, at the nearer position, and the query walks again (up to
    /// three walks) so that it does not take the place of another driver.
    ///
    /// # Errors
    ///
    /// [`Error::TooManyResults`] if `k` exceeds [`MAX_K`].
    ///
    /// ```
    /// # use infra_geomatch::{Config, DriverId, DriverProfile, Filter, Index, Point};
    /// let index = Index::new(Config::default())?;
    /// for i in 0..5u32 {
    ///     let at = Point::new(0.0, 0.001 * f64::from(i))?;
    ///     index.insert(DriverId(u64::from(i)), at, DriverProfile::default())?;
    /// }
    /// let found = index.nearest(Point::new(0.0, 0.0021)?, 2, &Filter::any())?;
    /// assert_eq!([found[0].driver, found[1].driver], [DriverId(2), DriverId(3)]);
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn nearest(
        &self,
        point: Point,
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<Candidate>, Error> {
        self.nearest_within(point, k, Reach::of(f64::INFINITY), filter)
    }

    /// The available, fresh drivers within `radius_m` meters (great-circle) that pass `filter`,
    /// nearest first (ties by id, as [`nearest`](Self::nearest) orders them), at most `limit`
    /// of them: the `limit` nearest when more are inside, so a full answer (`limit` drivers)
    /// may leave some out. The limit bounds the answer (and the results the query holds, see
    /// [`MAX_K`]) whatever the radius a caller sends. The radius is held to the distance a
    /// result reports: a driver is in when that distance would be at most `radius_m`, never
    /// when it is beyond, to the millimeter even at the far side of the Earth, and only drivers
    /// in take places of the limit. A driver met twice, as it crossed cells while the
    /// query ran, is returned once, at the nearer position; as for `nearest`, drivers met twice
    /// in each of the query's walks (constant churn) leave the answer that much shorter.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRadius`] if the radius is negative or not finite;
    /// [`Error::TooManyResults`] if `limit` exceeds [`MAX_K`].
    ///
    /// ```
    /// # use infra_geomatch::{Config, DriverId, DriverProfile, Filter, Index, Point};
    /// let index = Index::new(Config::default())?;
    /// index.insert(DriverId(1), Point::new(0.0, 0.001)?, DriverProfile::default())?; // 111 m
    /// index.insert(DriverId(2), Point::new(0.0, 0.002)?, DriverProfile::default())?; // 222 m
    /// index.insert(DriverId(3), Point::new(0.0, 0.01)?, DriverProfile::default())?;  // 1.1 km
    /// let rider = Point::new(0.0, 0.0)?;
    /// assert_eq!(index.within(rider, 500.0, 100, &Filter::any())?.len(), 2);
    /// let first = index.within(rider, 500.0, 1, &Filter::any())?;
    /// assert_eq!(first[0].driver, DriverId(1));
    /// assert!(index.within(rider, f64::NAN, 100, &Filter::any()).is_err());
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn within(
        &self,
        point: Point,
        radius_m: f64,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<Candidate>, Error> {
        if !(radius_m.is_finite() && radius_m >= 0.0) {
            return Err(Error::InvalidRadius(radius_m));
        }
        self.nearest_within(point, limit, Reach::of(radius_m), filter)
    }

    /// Greedy nearest for one request: walks the `k` nearest candidates in order and claims
    /// the first whose claim wins; `None` if every one was lost or none exists.
    ///
    /// # Errors
    ///
    /// [`Error::TooManyResults`] if `k` exceeds [`MAX_K`].
    ///
    /// ```
    /// # use infra_geomatch::{Config, DriverId, DriverProfile, DriverState, Filter, Index, Point};
    /// let index = Index::new(Config::default())?;
    /// index.insert(DriverId(1), Point::new(0.0, 0.001)?, DriverProfile::default())?;
    /// index.insert(DriverId(2), Point::new(0.0, 0.002)?, DriverProfile::default())?;
    /// let rider = Point::new(0.0, 0.0)?;
    /// let (first, _claim) = index.claim_nearest(rider, 5, &Filter::any())?.unwrap();
    /// let (second, _claim) = index.claim_nearest(rider, 5, &Filter::any())?.unwrap();
    /// assert_eq!((first.driver, second.driver), (DriverId(1), DriverId(2)));
    /// assert!(index.claim_nearest(rider, 5, &Filter::any())?.is_none());
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn claim_nearest(
        &self,
        point: Point,
        k: usize,
        filter: &Filter,
    ) -> Result<Option<(Candidate, Claim)>, Error> {
        crate::drivers::claim_first(self, self.nearest(point, k, filter)?)
    }

    /// The `k` nearest admissible drivers within `reach`: [`nearest`](Self::nearest) and
    /// [`within`](Self::within).
    fn nearest_within(
        &self,
        point: Point,
        k: usize,
        reach: Reach,
        filter: &Filter,
    ) -> Result<Vec<Candidate>, Error> {
        if k > MAX_K {
            return Err(Error::TooManyResults { k, max: MAX_K });
        }
        if k == 0 {
            return Ok(Vec::new());
        }
        self.locator.prefetch(point);
        let query = point.unit();
        let now = self.now();
        let mut walks = 0;
        loop {
            walks += 1;
            let mut nearest = Nearest::new(self, query, filter, now, k, reach);
            self.walk(point, &query, &mut nearest);
            // A driver met twice took a place of the best `k` from a driver that did not
            // move: walk again. A repeat needs a driver to cross cells while the walk passes
            // both, so walks are bounded only against constant churn.
            let answer = nearest.best.with_sorted(|best| {
                let kept = drop_repeats(best);
                (kept == best.len() || walks == MAX_WALKS)
                    .then(|| into_candidates(&query, &best[..kept]))
            });
            if let Some(answer) = answer {
                return Ok(answer);
            }
        }
    }

    /// Visits buckets ring by ring around `point`'s cell until every cell not visited is
    /// provably out of the collector's reach.
    ///
    /// Ring 0 is the query point's cell; ring `d + 1` is the neighbours, not met before, of the
    /// cells of ring `d` that were within reach. Each ring is scanned nearest bound first while
    /// the bounds are within the reach (which only shrinks), and the walk stops at the first
    /// ring none of whose cells is within it. Why that misses nothing: take a point within the
    /// final reach and the great-circle path from the query point to it. Every point of the
    /// path is as near as that point or nearer, so every cell the path crosses has a bound
    /// within the reach; and consecutive cells along it are neighbours (adjacent cells share
    /// an edge, and the three cells at a vertex are mutually adjacent). Going along the path
    /// from the query's cell, each cell is met from the one before it, in the next ring or an
    /// earlier one, and scanned there, being within reach; so the cell of the point is
    /// scanned, and no ring after the last one scanned can hold a cell of the path. A cell
    /// beyond the reach is thus never looked up: a bucket keeps its cell's neighbours with
    /// their circles, so the next ring and its bounds come from the buckets scanned, and H3 is
    /// asked only around empty cells. Cells are met once each ([`SeenCells`]), however the
    /// rings wrap around the globe or around a pentagon. Bounds and the reach are chords, which
    /// order points as arcs do: no arc sine per cell.
    ///
    /// Returns how many cells its rings held (looked up, or passed over for their bounds),
    /// before any scan of every bucket.
    fn walk(&self, point: Point, query: &Unit, collector: &mut impl Collector) -> usize {
        let origin = self.origin(point, query);
        let mut seen = SeenCells::new(origin);
        // The current ring's cells, each with a lower bound on its chord from the query point,
        // and the next ring's as they are found; the origin holds the point.
        let mut ring: Vec<(f64, CellIndex)> = Vec::with_capacity(32);
        ring.push((f64::NEG_INFINITY, origin));
        let mut next: Vec<(f64, CellIndex)> = Vec::with_capacity(32);
        let mut empty: Vec<CellIndex> = Vec::new();
        let mut around = Vec::new();
        let mut distance = 0usize;
        let mut visited = 0usize;
        let mut empties = 0usize;
        loop {
            if ring.is_empty() {
                // No cell within reach has a neighbour not met, or the globe is covered.
                return visited;
            }
            visited += ring.len();
            next.clear();
            empty.clear();
            // Whether a cell of the ring is within reach once it is scanned says whether the
            // next ring may hold one.
            let ring_bound = ring
                .iter()
                .fold(f64::INFINITY, |least, &(bound, _)| least.min(bound));
            // The cells within reach, nearest first: the reach shrinks as early as it can, and
            // farther cells it then leaves out are not looked up, nor their neighbours met. (A
            // bucket emptied or filled since its neighbour was read is skipped or missed, as a
            // report a moment later would have been.) The reach only shrinks, so the cells
            // beyond it now are left out before the sort.
            let reach = collector.reach();
            ring.retain(|&(bound, _)| bound <= reach);
            ring.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            let mut reader = CellReader::new(self);
            // Every bucket of the ring within reach is asked for before any is scanned: each
            // is a chain of cache misses (its place in the table, then its arrays), and chains
            // started together are waited for side by side rather than one after another. A cell
            // the shrinking reach then leaves out costs one needless fetch.
            for &(_, cell) in &ring {
                if let Some(bucket) = reader.bucket(cell) {
                    bucket.prefetch();
                }
            }
            let mut scanned = 0;
            while let Some(&(bound, cell)) = ring.get(scanned)
                && bound <= collector.reach()
            {
                scanned += 1;
                match reader.bucket(cell) {
                    Some(bucket) => {
                        collector.visit(bucket);
                        ring_after(bucket, query, &mut seen, &mut next);
                    }
                    None => empty.push(cell),
                }
            }
            drop(reader);
            empties += empty.len();
            if ring_bound > collector.reach() {
                return visited;
            }
            distance += 1;
            // Ring `d` has up to 6d cells. Once the cells visited (an empty one weighing
            // EMPTY_CELL_COST buckets) and the next ring would be more than there are buckets,
            // one pass over every bucket costs less, and needs no bound at all; so a query does
            // no more than about twice the work of that pass, even when few drivers qualify (all
            // stale, say) or the query is far from every driver, and the rings would otherwise
            // grow until they covered the planet or reached the fleet through empty cells.
            let cost = visited + (EMPTY_CELL_COST - 1) * empties;
            if cost + 6 * distance > self.occupied.load(Ordering::Relaxed) {
                collector.restart();
                for shard in &*self.cells {
                    for bucket in shard.read().values() {
                        if bucket.geometry.min_chord_from(query) <= collector.reach() {
                            collector.visit(bucket);
                        }
                    }
                }
                return visited;
            }
            // An empty cell's neighbours and their shapes come from H3, outside any lock (the
            // slow part), for the cells no bucket named.
            for &cell in &empty {
                neighbours(cell, &mut around);
                for &neighbour in &around {
                    if seen.first_sight(neighbour) {
                        let bound = Circumcircle::of(neighbour).min_chord_from(query);
                        next.push((bound, neighbour));
                    }
                }
            }
            std::mem::swap(&mut ring, &mut next);
        }
    }
}

/// Adds the neighbours of `bucket`'s cell not seen before to the next ring, with their bounds.
#[inline]
fn ring_after(
    bucket: &Bucket,
    query: &Unit,
    seen: &mut SeenCells,
    next: &mut Vec<(f64, CellIndex)>,
) {
    for adjacent in bucket.adjacent() {
        if seen.first_sight(adjacent.cell) {
            next.push((adjacent.circle.min_chord_from(query), adjacent.cell));
        }
    }
}

/// Looks cells up one at a time, each under its part's read lock. Neighbouring cells mostly
/// share a part (`cell_shard_index`): the lock is kept from one cell to the next rather than
/// taken again, and given up before another part's is taken, so a reader never holds two.
struct CellReader<'a, C> {
    index: &'a Index<C>,
    held: Option<(usize, CellShardGuard<'a>)>,
}

impl<'a, C: Clock> CellReader<'a, C> {
    fn new(index: &'a Index<C>) -> Self {
        Self { index, held: None }
    }

    /// The bucket of `cell`, if it has one.
    fn bucket(&mut self, cell: CellIndex) -> Option<&Bucket> {
        let shard = self.index.cell_shard_index(cell);
        if self.held.as_ref().is_some_and(|(part, _)| *part != shard) {
            self.held = None;
        }
        let (_, guard) = self
            .held
            .get_or_insert_with(|| (shard, self.index.cells[shard].read()));
        guard.get(&cell)
    }
}

/// Drops the later sightings of a driver found more than once in `found` (nearest first), so
/// each driver is kept at its nearest: those kept are moved to the front, in order; how many
/// they are.
///
/// A walk holds one cell's lock at a time, so a driver that moves from a cell it has scanned
/// to one it has yet to scan is met twice, at its old position and its new one: both are
/// positions it reported during the query, but it is one driver.
fn drop_repeats(found: &mut [Found]) -> usize {
    if !has_repeats(found) {
        return found.len();
    }
    let mut met: HashSet<DriverId, RandomState> =
        HashSet::with_capacity_and_hasher(found.len(), RandomState::new());
    let mut kept = 0;
    for i in 0..found.len() {
        if met.insert(found[i].id) {
            found[kept] = found[i];
            kept += 1;
        }
    }
    kept
}

/// Whether a driver is in `found` more than once.
fn has_repeats(found: &[Found]) -> bool {
    // For the usual few results, comparing every pair costs less than sorting a copy.
    if found.len() <= REPEATS_BY_PAIRS {
        return found
            .iter()
            .enumerate()
            .any(|(i, f)| found[..i].iter().any(|earlier| earlier.id == f.id));
    }
    let mut ids: Vec<DriverId> = found.iter().map(|f| f.id).collect();
    ids.sort_unstable();
    ids.windows(2).any(|pair| pair[0] == pair[1])
}

/// The results from the drivers `found`, nearest first by squared chord.
fn into_candidates(query: &Unit, found: &[Found]) -> Vec<Candidate> {
    let mut candidates: Vec<Candidate> = Vec::with_capacity(found.len());
    for f in found {
        let candidate = Candidate {
            driver: f.id,
            distance_m: distance_m(query, &f.unit),
            version: Version(f.word),
        };
        // The squared chord and the exact arc can order two nearly equidistant drivers
        // differently by a rounding; results are nearest first by the distance they report.
        // Taken in the chords' order, a result nearly always goes last: one comparison.
        let mut place = candidates.len();
        while place > 0 && reported_before(&candidate, &candidates[place - 1]) {
            place -= 1;
        }
        candidates.insert(place, candidate);
    }
    candidates
}

/// Up to this squared chord (an arc of about 174°), a query ranks drivers by their squared
/// chords, which order them as their distances do to within nanometers of arc; beyond it, by
/// the distance a result reports. A squared chord hardly changes with the arc near the
/// antipode of the query point: there a rounding of one is up to tenths of a meter of arc.
const FAR_CHORD2: f64 = 3.99;

/// The ranks of drivers beyond [`FAR_CHORD2`] start here, above the bits of every squared
/// chord (at most 4).
const FAR_RANKS: u64 = 4.0_f64.to_bits();

/// The rank of a driver at squared chord `chord2` from the query point `query`, at `unit`: the
/// squared chord's bits up to [`FAR_CHORD2`], else [`FAR_RANKS`] plus the bits of the distance
/// a result reports (computed only then). Both are non-negative numbers, whose bits order as
/// their values do, and integers compare more cheaply.
#[inline]
fn rank(chord2: f64, query: &Unit, unit: &Unit) -> u64 {
    if chord2 <= FAR_CHORD2 {
        chord2.to_bits()
    } else {
        far_rank(query, unit)
    }
}

/// [`rank`] beyond [`FAR_CHORD2`]: rare, out of line.
#[cold]
#[inline(never)]
fn far_rank(query: &Unit, unit: &Unit) -> u64 {
    FAR_RANKS + distance_m(query, unit).to_bits()
}

/// Whether `a` comes before `b` in an answer: nearer by its distance, or as near with a
/// smaller id.
#[inline]
fn reported_before(a: &Candidate, b: &Candidate) -> bool {
    a.distance_m
        .total_cmp(&b.distance_m)
        .then(a.driver.cmp(&b.driver))
        .is_lt()
}

/// What a ring walk collects.
trait Collector {
    /// The chord beyond which nothing more is wanted (a straight 3D distance between unit
    /// vectors: it grows with the arc, so it orders drivers as the arc does).
    fn reach(&self) -> f64;
    /// Looks at every driver of a bucket.
    fn visit(&mut self, bucket: &Bucket);
    /// Forgets everything collected: the walk starts over on every bucket.
    fn restart(&mut self);
}

/// Reads one driver for a query: `Some(word)` if it is available, fresh and passes.
#[inline]
fn admissible<C: Clock>(
    index: &Index<C>,
    detail: &Detail,
    filter: &Filter,
    now: u64,
) -> Option<u64> {
    if !filter.admits(&detail.profile) || !index.fresh(now, detail.seen) {
        return None;
    }
    let word = detail.word.load(Ordering::Acquire);
    (word & STATE_MASK == DriverState::Available.code()).then_some(word)
}

/// How many drivers of a bucket a query's coarse look takes at a time (see
/// [`Nearest::visit`]): four single-precision chords fill a 128-bit vector register, which
/// every x86-64 and AArch64 processor has. Four measured fewer instructions than eight or
/// sixteen, whose groups leave more of a bucket to the one-at-a-time tail.
const COARSE_LANES: usize = 4;

struct Nearest<'a, C> {
    query: Unit,
    filter: &'a Filter,
    now: u64,
    index: &'a Index<C>,
    k: usize,
    /// The best `k` so far.
    best: Best,
    /// How far drivers are wanted.
    reach: Reach,
    /// The squared chord of the worst of the best once there are `k`, else the reach's.
    worst_chord2: f64,
    /// One bucket's drivers within reach by the coarse look, reused.
    nearer: Vec<CoarseFound>,
}

impl<'a, C: Clock> Nearest<'a, C> {
    #[inline]
    fn new(
        index: &'a Index<C>,
        query: Unit,
        filter: &'a Filter,
        now: u64,
        k: usize,
        reach: Reach,
    ) -> Self {
        Self {
            query,
            filter,
            now,
            index,
            k,
            best: Best::new(k),
            reach,
            worst_chord2: reach.chord2,
            nearer: Vec::with_capacity(64),
        }
    }

    /// Reads the row of the driver in `slot` of `bucket` and keeps it if it is among the best
    /// so far and admissible (ranked by [`rank`]).
    #[inline]
    fn consider(&mut self, bucket: &Bucket, slot: usize) {
        let detail = &bucket.details[slot];
        let chord2 = chord2(&self.query, &detail.unit);
        if chord2 > self.worst_chord2 {
            return;
        }
        let found = Found {
            chord2,
            rank: rank(chord2, &self.query, &detail.unit),
            id: detail.id,
            word: 0,
            unit: detail.unit,
        };
        // As far as the worst: it stays worse unless its id is smaller.
        if self.best.full_worst().is_some_and(|worst| found >= *worst) {
            return;
        }
        if !self.reach.holds(chord2, &self.query, &detail.unit) {
            return;
        }
        let Some(word) = admissible(self.index, detail, self.filter, self.now) else {
            return;
        };
        self.best.offer(Found { word, ..found });
        if let Some(worst) = self.best.full_worst() {
            // A far driver nearer than the worst by its exact distance can be a rounding
            // farther by its squared chord: the reach allows for it.
            self.worst_chord2 = if worst.rank >= FAR_RANKS {
                worst.chord2 + RADIUS_CHORD2_SLACK
            } else {
                worst.chord2
            };
        }
    }
}

impl<C: Clock> Collector for Nearest<'_, C> {
    fn reach(&self) -> f64 {
        self.worst_chord2.sqrt()
    }

    /// Takes a coarse look at every driver of the bucket (its position in the bucket's frame,
    /// 6 bytes each) and reads the rest of a driver's row (another array: a cache miss apiece), with its
    /// exact position, only for a driver the coarse look cannot rule out of the best `k`. The
    /// `k` coarsely nearest drivers within reach are taken first, then the rest, so the first
    /// bucket, seen while the reach is unbounded, reads about `k` rows and not all of them.
    fn visit(&mut self, bucket: &Bucket) {
        // The query point, and the bound that passes a driver over without reading its row,
        // in the bucket's frame (every driver, for a bucket that holds one out of it).
        let query = bucket.frame.query(&self.query);
        let bound = |worst_chord2| {
            if bucket.loose {
                f32::INFINITY
            } else {
                bucket.frame.bound(worst_chord2)
            }
        };
        let mut worst = bound(self.worst_chord2);
        let mut nearer = std::mem::take(&mut self.nearer);
        nearer.clear();
        nearer.resize(bucket.coarse.len(), CoarseFound::new(0.0, 0));
        let mut within = 0;
        // A few drivers at a time: their chords computed side by side (the compiler puts them
        // in vector registers) and the lot passed over with one test when none is within
        // reach, as in most of the buckets after the first. A driver's chord is written down
        // whatever it is, and kept by moving past it only when it is within reach: no branch
        // per driver, whose outcome no predictor could learn (a bucket's drivers come in no
        // order).
        let mut keep = |coarse2: f32, slot: usize| {
            nearer[within] = CoarseFound::new(coarse2, slot);
            within += usize::from(coarse2 <= worst);
        };
        let mut groups = bucket.coarse.chunks_exact(COARSE_LANES);
        for (group_at, group) in groups.by_ref().enumerate() {
            let chords: [f32; COARSE_LANES] =
                std::array::from_fn(|i| local_chord2(&query, &group[i]));
            if chords.iter().all(|&coarse2| coarse2 > worst) {
                continue;
            }
            for (i, coarse2) in chords.into_iter().enumerate() {
                keep(coarse2, group_at * COARSE_LANES + i);
            }
        }
        let rest_at = bucket.coarse.len() - groups.remainder().len();
        for (i, unit) in groups.remainder().iter().enumerate() {
            keep(local_chord2(&query, unit), rest_at + i);
        }
        nearer.truncate(within);
        // The `k` nearest first, in order, so the best fill nearest first (each one placed
        // last), the rest after them in any order. The order decides only which rows are
        // read, not the answer (the best `k` are chosen by their ranks, ties by id), so
        // integers stand in for the chords: cheaper to compare.
        if nearer.len() > self.k {
            least_first(&mut nearer, self.k);
        }
        // The rows of the `k` first are read unless the best improve past them meanwhile: all
        // asked for before the first is read, so their cache misses are waited for together.
        for slot in nearer.iter().take(self.k).map(|found| found.slot()) {
            prefetch::read(&bucket.details[slot]);
        }
        for found in &nearer {
            if found.coarse2() <= worst {
                let before = self.worst_chord2;
                self.consider(bucket, found.slot());
                if self.worst_chord2 != before {
                    worst = bound(self.worst_chord2);
                }
            }
        }
        self.nearer = nearer;
    }

    fn restart(&mut self) {
        self.best.clear();
        self.worst_chord2 = self.reach.chord2;
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h3_asked(index: &Index) -> usize {
        index.h3_asked.load(Ordering::Relaxed)
    }

    fn center(cell: CellIndex) -> Point {
        let center = h3o::LatLng::from(cell);
        Point::new(center.lat(), center.lng()).unwrap()
    }

    /// A query in a square whose cell is known and has drivers asks H3 nothing; with no
    /// locator, every query asks.
    #[test]
    fn a_query_in_a_known_square_skips_h3() {
        for (slots, asked_per_query) in [(1 << 10, 0), (0, 1)] {
            let index = Index::new(Config::default().locator_slots(slots)).unwrap();
            let at = center(Point::new(48.8566, 2.3522).unwrap().cell(Resolution::Nine));
            index
                .insert(DriverId(1), at, DriverProfile::default())
                .unwrap();
            let before = h3_asked(&index);
            for _ in 0..3 {
                let found = index.nearest(at, 1, &Filter::any()).unwrap();
                assert_eq!(found[0].driver, DriverId(1));
            }
            assert_eq!(
                h3_asked(&index) - before,
                3 * asked_per_query,
                "{slots} slots"
            );
        }
    }

    /// A guess of the cell next to the point's is corrected by the guessed bucket's nearest
    /// neighbour, without H3, and the point's own cell is remembered.
    #[test]
    fn a_guess_of_the_neighbouring_cell_is_corrected_without_h3() {
        let index = Index::new(Config::default().locator_slots(1)).unwrap();
        let cell = Point::new(-33.8688, 151.2093)
            .unwrap()
            .cell(Resolution::Nine);
        let next = cell.grid_disk::<Vec<_>>(1)[1];
        let (at, there) = (center(cell), center(next));
        index
            .insert(DriverId(1), at, DriverProfile::default())
            .unwrap();
        // The one slot now names the neighbour.
        index
            .insert(DriverId(2), there, DriverProfile::default())
            .unwrap();
        assert_eq!(index.locator.guess(at), Some(next));
        let before = h3_asked(&index);
        assert_eq!(index.origin(at, &at.unit()), cell);
        assert_eq!(h3_asked(&index), before);
        assert_eq!(index.locator.guess(at), Some(cell));
    }

    proptest! {
        /// Whatever cell the locator guesses (far away, next door, empty, the right one), a
        /// query starts from the cell H3 gives its point.
        #[test]
        fn any_guess_gives_the_cell_h3_gives(
            drivers in proptest::collection::vec((-0.02f64..0.02, -0.02f64..0.02), 1..40),
            queries in proptest::collection::vec(((-0.03f64..0.03, -0.03f64..0.03), (-0.03f64..0.03, -0.03f64..0.03)), 1..40),
            resolution in (8u8..=10).prop_map(|r| Resolution::try_from(r).unwrap()),
        ) {
            let index = Index::new(Config::default().resolution(resolution).locator_slots(1)).unwrap();
            let near = |(dlat, dlng): (f64, f64)| Point::new(35.6762 + dlat, 139.6503 + dlng).unwrap();
            for (i, &offset) in drivers.iter().enumerate() {
                index.insert(DriverId(i as u64), near(offset), DriverProfile::default()).unwrap();
            }
            for &(query, guessed) in &queries {
                let (query, guessed) = (near(query), near(guessed));
                index.locator.remember(query, guessed.cell(resolution));
                prop_assert_eq!(index.origin(query, &query.unit()), query.cell(resolution));
            }
        }
    }

    /// The locator's guesses worldwide, at every resolution: at the poles, on the antimeridian
    /// at exactly ±180, at and beside pentagons, on cell vertices and edge midpoints, and far
    /// from the guess. Every cell two rings around each point has a bucket (so each guess is
    /// checked by geometry, not refused for want of a bucket), and whichever of them, or a far
    /// cell, the one slot holds, a query starts from H3's cell.
    #[test]
    fn any_guess_gives_the_cell_h3_gives_worldwide_at_every_resolution() {
        let mut seed = 0x5EED_u64;
        let mut unit = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        for res in Resolution::range(Resolution::Zero, Resolution::Fifteen) {
            let mut points = vec![
                Point::new(90.0, 0.0).unwrap(),
                Point::new(90.0, 180.0).unwrap(),
                Point::new(-90.0, -180.0).unwrap(),
                Point::new(-90.0, 33.0).unwrap(),
                Point::new(12.5, 180.0).unwrap(),
                Point::new(12.5, -180.0).unwrap(),
                Point::new(-71.0, 180.0).unwrap(),
                Point::new(0.0, 0.0).unwrap(),
            ];
            for _ in 0..6 {
                points.push(Point::new(180.0 * unit() - 90.0, 360.0 * unit() - 180.0).unwrap());
            }
            for pentagon in res.pentagons().take(4) {
                points.push(center(pentagon));
                for vertex in pentagon.boundary().iter() {
                    points.push(Point::new(vertex.lat(), vertex.lng()).unwrap());
                }
            }
            let vertex_of = points[12].cell(res).boundary()[0];
            points.push(Point::new(vertex_of.lat(), vertex_of.lng()).unwrap());
            let index = Index::new(Config::default().resolution(res).locator_slots(1)).unwrap();
            let mut guesses = Vec::new();
            let mut id = 0;
            for p in &points {
                for cell in p.cell(res).grid_disk_safe(2) {
                    if index.cell_shard(cell).read().contains_key(&cell) {
                        continue;
                    }
                    id += 1;
                    index
                        .insert(DriverId(id), center(cell), DriverProfile::default())
                        .unwrap();
                    guesses.push(cell);
                }
            }
            for p in &points {
                let h3 = p.cell(res);
                let far = guesses.iter().copied().step_by(37);
                for guess in h3.grid_disk_safe(2).chain(far) {
                    index.locator.remember(*p, guess);
                    assert_eq!(
                        index.origin(*p, &p.unit()),
                        h3,
                        "({}, {}) at {res}, guess {guess}",
                        p.lat(),
                        p.lng()
                    );
                }
            }
        }
    }

    /// The driver table's entry, as the memory figures in BENCHMARKS.md count it: the id, the
    /// cell (whose zero the empty place takes), the slot and the two addresses.
    #[test]
    fn a_driver_table_entry_is_40_bytes() {
        assert_eq!(size_of::<Option<(DriverId, Place)>>(), 40);
    }

    /// A driver met twice is found, and dropped once, among a few results (every pair
    /// compared) and among many (sorted).
    #[test]
    fn repeats_are_dropped_among_few_results_and_many() {
        for len in [2, REPEATS_BY_PAIRS, REPEATS_BY_PAIRS + 1, 200] {
            let mut found: Vec<Found> = (0..len)
                .map(|i| Found {
                    chord2: i as f64,
                    rank: (i as f64).to_bits(),
                    id: DriverId(i as u64),
                    word: 0,
                    unit: [1.0, 0.0, 0.0],
                })
                .collect();
            assert!(!has_repeats(&found), "{len}");
            assert_eq!(drop_repeats(&mut found), len, "{len}");
            found[len - 1].id = DriverId(0);
            assert_eq!(drop_repeats(&mut found), len - 1, "{len}");
            assert!(found[..len - 1].iter().all(|f| f.chord2 < (len - 1) as f64));
        }
    }

    /// Ids that differ only in their high bits, which a multiply alone sends to one part of
    /// the driver table, spread over its parts like any others: a service may take driver ids
    /// from its users, who must not be able to put every update behind one lock.
    #[test]
    fn ids_chosen_to_share_a_part_spread_over_the_driver_table() {
        let index = Index::new(Config::default().shards(256)).unwrap();
        let at = Point::new(52.52, 13.405).unwrap();
        for i in 1..=1_024u64 {
            index
                .insert(DriverId(i << 40), at, DriverProfile::default())
                .unwrap();
        }
        let fullest = index
            .drivers
            .iter()
            .map(|shard| shard.read().len())
            .max()
            .unwrap();
        // Four a part on average; a keyed hash puts more than 32 in one part with odds
        // below 1e-16.
        assert!(fullest <= 32, "{fullest} of 1,024 drivers in one part");
    }

    /// `remove_idle` gives back what the drivers it takes out held: the buckets they leave
    /// empty, and the driver table's places, down to the fewest.
    #[test]
    fn remove_idle_gives_back_the_buckets_and_places_of_the_drivers_it_takes() {
        let clock = infra_common::ManualClock::new();
        let index = Index::with_clock(Config::default().shards(1), clock.clone()).unwrap();
        let at = |i: u32| {
            let (row, column) = (f64::from(i / 50), f64::from(i % 50));
            Point::new(48.85 + 0.001 * row, 2.35 + 0.0015 * column).unwrap()
        };
        for i in 0..2_000u32 {
            index
                .insert(DriverId(u64::from(i)), at(i), DriverProfile::default())
                .unwrap();
        }
        assert!(index.drivers[0].read().capacity() >= 2_048);
        clock.advance(Duration::from_secs(600));
        index.update(DriverId(0), at(0)).unwrap();
        assert_eq!(index.remove_idle(Duration::from_secs(300)).len(), 1_999);
        assert_eq!(index.cells[0].read().len(), 1);
        assert_eq!(index.occupied.load(Ordering::Relaxed), 1);
        assert_eq!(index.drivers[0].read().capacity(), 8);
        assert_eq!(index.driver(DriverId(0)).unwrap().point, at(0));
    }

    /// A driver that crosses an edge is placed in the neighbour across it from that
    /// neighbour's bucket, without H3, and where H3 places it.
    #[test]
    fn a_crossing_is_placed_from_the_neighbours_bucket() {
        let index = Index::new(Config::default()).unwrap();
        let home = Point::new(40.7128, -74.006).unwrap();
        let origin = home.cell(Resolution::Nine);
        let center = h3o::LatLng::from(origin);
        let mut around = Vec::new();
        neighbours(origin, &mut around);
        around.retain(|&cell| cell != origin);
        for (i, &cell) in around.iter().enumerate() {
            let at = h3o::LatLng::from(cell);
            let at = Point::new(at.lat(), at.lng()).unwrap();
            index
                .insert(DriverId(100 + i as u64), at, DriverProfile::default())
                .unwrap();
        }
        index
            .insert(DriverId(1), home, DriverProfile::default())
            .unwrap();
        for &cell in &around {
            // Three fifths of the way to the neighbour's center: past the shared edge.
            let to = h3o::LatLng::from(cell);
            let crossed = Point::new(
                center.lat() + 0.6 * (to.lat() - center.lat()),
                center.lng() + 0.6 * (to.lng() - center.lng()),
            )
            .unwrap();
            assert_eq!(crossed.cell(Resolution::Nine), cell);
            let unit = crossed.unit();
            let nearest = index.cell_shard(origin).read()[&origin].nearest_adjacent(&unit);
            assert_eq!(nearest, Some(cell));
            assert!(index.surely_in(cell, &unit));
            index.update(DriverId(1), crossed).unwrap();
            let place = index
                .driver_shard(DriverId(1))
                .read()
                .get(DriverId(1))
                .copied()
                .unwrap();
            assert_eq!(place.cell, cell);
            assert_eq!(index.driver(DriverId(1)).unwrap().point, crossed);
            index.update(DriverId(1), home).unwrap();
            assert_eq!(
                index
                    .driver_shard(DriverId(1))
                    .read()
                    .get(DriverId(1))
                    .unwrap()
                    .cell,
                origin
            );
        }
    }

    /// A fleet of a few hundred cells and a query 50 km away: the rings would cross thousands
    /// of empty cells, asking H3 about each, before reaching it. The walk gives up for one
    /// scan of every bucket after about `occupied / EMPTY_CELL_COST` empty cells, and the
    /// answer is the same.
    #[test]
    fn a_query_far_from_the_fleet_crosses_few_empty_cells() {
        let index = Index::new(Config::default()).unwrap();
        for i in 0..2_000u32 {
            let (row, column) = (f64::from(i / 50), f64::from(i % 50));
            let at = Point::new(48.85 + 0.001 * row, 2.35 + 0.0015 * column).unwrap();
            index
                .insert(DriverId(u64::from(i)), at, DriverProfile::default())
                .unwrap();
        }
        let occupied = index.occupied.load(Ordering::Relaxed);
        assert!(occupied > 250, "{occupied} buckets");
        let far = Point::new(48.4, 2.35).unwrap();
        let query = far.unit();
        let any = Filter::any();
        let mut nearest = Nearest::new(
            &index,
            query,
            &any,
            index.now(),
            1,
            Reach::of(f64::INFINITY),
        );
        let cells = index.walk(far, &query, &mut nearest);
        assert!(
            cells < occupied / 4,
            "{cells} empty cells for {occupied} buckets"
        );
        let found = nearest.best.with_sorted(|found| found.to_vec());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, DriverId(0));
    }

    /// Where a move of `at` goes: a vertex of its cell at `resolution` (the farthest a point of
    /// the cell gets from the center, where placements are decided by edge planes, circles and
    /// H3), pushed off by up to a third of an edge either way.
    fn near_a_corner(at: Point, resolution: Resolution, vertex: usize, off: (f64, f64)) -> Point {
        let vertices = at.cell(resolution).boundary();
        let corner = vertices[vertex % vertices.len()];
        let edge = resolution.edge_length_rads().to_degrees() / 3.0;
        let lat = (corner.lat() + off.0 * edge).clamp(-90.0, 90.0);
        let mut lng = corner.lng() + off.1 * edge;
        if lng > 180.0 {
            lng -= 360.0;
        } else if lng < -180.0 {
            lng += 360.0;
        }
        Point::new(lat, lng).unwrap()
    }

    proptest::proptest! {
        /// Every driver's position fits its bucket's frame, so no bucket is ever loose: after
        /// inserts anywhere (near the poles and the antimeridian included), updates to the
        /// corners of the cell and past them (placed by the inner circle, the edge planes, a
        /// neighbour's geometry or H3), and removals restored, at every resolution.
        #[test]
        fn every_position_fits_its_buckets_frame(
            resolution in 0u8..16,
            start in (-90.0f64..=90.0, -180.0f64..=180.0),
            moves in proptest::collection::vec((0usize..6, -1.0f64..=1.0, -1.0f64..=1.0, 0u8..8), 1..40),
        ) {
            let resolution = Resolution::try_from(resolution).unwrap();
            let index = Index::new(Config::default().resolution(resolution)).unwrap();
            let id = DriverId(1);
            let mut at = Point::new(start.0, start.1).unwrap();
            index.insert(id, at, DriverProfile::default()).unwrap();
            // A second driver keeps the first one's bucket from being dropped as it leaves.
            index.insert(DriverId(2), at, DriverProfile::default()).unwrap();
            for (vertex, dlat, dlng, action) in moves {
                at = near_a_corner(at, resolution, vertex, (dlat, dlng));
                if action == 0 {
                    let mut record = index.remove(id).unwrap();
                    record.point = at;
                    index.restore(record).unwrap();
                } else {
                    index.update(id, at).unwrap();
                }
                for shard in &*index.cells {
                    for (cell, bucket) in shard.read().iter() {
                        proptest::prop_assert!(!bucket.loose, "{cell} loose after a move to {at:?}");
                        for detail in &bucket.details {
                            proptest::prop_assert!(bucket.frame.encode(&detail.unit).is_some());
                        }
                    }
                }
            }
        }
    }
}

/// Models of the locator's guesses, run with
/// `RUSTFLAGS="--cfg infra_loom" cargo test --release -p infra-geomatch --lib loom_models`.
#[cfg(all(test, infra_loom))]
mod loom_models {
    use infra_common::ManualClock;
    use infra_common::sync::{Arc, model, thread};

    use super::*;

    /// Guards: `Index::origin` proves a guess by the guessed bucket's geometry before a query
    /// starts from it. An insert elsewhere writes its cell into the slot the query reads (one
    /// slot: every square shares it), before or after its bucket exists.
    #[test]
    fn a_guess_written_meanwhile_is_proved_before_a_query_starts_from_it() {
        model(|| {
            let config = Config::default().shards(2).locator_slots(1);
            let index = Arc::new(Index::with_clock(config, ManualClock::new()).unwrap());
            let rider = Point::new(52.52, 13.405).unwrap();
            index
                .insert(DriverId(1), rider, DriverProfile::default())
                .unwrap();
            let elsewhere = Point::new(52.53, 13.45).unwrap();
            let writer = {
                let index = Arc::clone(&index);
                thread::spawn(move || {
                    index
                        .insert(DriverId(2), elsewhere, DriverProfile::default())
                        .unwrap();
                })
            };
            let origin = index.origin(rider, &rider.unit());
            assert_eq!(origin, rider.cell(Resolution::Nine));
            writer.join().unwrap();
        });
    }
}
