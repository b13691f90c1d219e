//! Surge pricing from demand and supply per H3 cell.
//!
//! A [`Surge`] counts two kinds of events per cell over a sliding window on a [`Clock`]:
//! **demand** (a ride request) and **supply** (an available driver seen in the cell). From
//! them it derives a price multiplier per cell:
//!
//! 1. **Window.** The window of length `window` is cut into `slices` equal slices, one
//!    bucket of counts each: `slice_length` is `window / slices` rounded down to a whole
//!    nanosecond, so the window spans `slices × slice_length`, up to `slices - 1` nanoseconds
//!    less than `window`. An event recorded at time t (nanoseconds on the clock) belongs to
//!    slice `t / slice_length` and is counted while the current slice is less than `slices`
//!    slices later; at the start of slice `t / slice_length + slices` it leaves the window.
//!    Only `slices` buckets exist, so memory does not grow with time.
//! 2. **Smoothing.** A cell's smoothed demand is its own demand plus `neighbour_weight` times
//!    the demand of each of its neighbours (the ring `grid_disk(1)` minus the cell: six cells,
//!    five around a pentagon), and likewise for supply. Smoothing spreads a hot spot onto the
//!    streets around it, so prices do not jump at a cell's edge.
//! 3. **Curve.** The ratio smoothed demand / smoothed supply is mapped through a
//!    piecewise-linear [`SurgeCurve`] that starts at 1, never decreases, and is capped. A cell
//!    with demand and no supply is at the cap; one with neither is at 1.
//! 4. **Roll-up.** [`Surge::rollup`] sums the raw counts of all cells under each coarser
//!    parent cell and applies the curve to the sums (no smoothing at the coarse level), for
//!    dashboards and for the metrics. A roll-up cell is the H3 *parent* of the counting
//!    cells, and H3 children do not tile their parent exactly: a counting cell near a
//!    parent's edge may cover ground of the next coarse cell. The
//!    [`Partitioner`](crate::Partitioner) assigns a point by the coarse cell containing the
//!    point itself, so near a coarse edge a roll-up cell's counts can include events that
//!    partitioning sends to the neighbouring partition. Do not read a roll-up cell as one
//!    partition's load.
//!
//! **Time.** The window moves with the surge's own time: the sum of the clock's forward
//! movements, read under the surge's lock at every record and read. A clock that steps back
//! (an operator or NTP correcting a wall clock, a [`Clock`] that is not monotonic) adds no
//! time, and the window slides on from where it was as soon as the clock moves forward again:
//! no event is dropped or counted twice, events recorded before the step stay in the window
//! with those recorded after it, and each leaves the window once the clock has moved forward
//! by a window's length since it was recorded (tests
//! `after_a_clock_steps_back_the_window_slides_on_at_once`, and
//! `a_clock_going_back_and_forth_counts_as_its_forward_movement` against a model). A clock
//! that jumps forward moves the window by the jump, as if that much time had passed. The
//! surge's time stops at 2^64 ns (584 years of forward movement, or one jump of a clock to
//! the end of its range), and from there on nothing leaves the window (test
//! `readings_at_the_ends_of_the_clocks_range_do_not_panic`). On a
//! monotonic clock the surge's time is the clock's reading.
//!
//! Supply is whatever the caller reports: a driver coming online or finishing a trip, or one
//! observation per available driver per snapshot. Demand and supply are counted the same
//! way, so the curve's ratios should be chosen for the caller's notion of supply.
//!
//! ```
//! use infra_common::ManualClock;
//! use infra_geomatch::Point;
//! use infra_geomatch::surge::{Surge, SurgeConfig};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let surge = Surge::new(SurgeConfig::default(), clock.clone())?;
//! let station = Point::new(37.7749, -122.4194)?;
//! let cell = surge.record_supply(station)?;
//! for _ in 0..4 {
//!     surge.record_demand(station)?;
//! }
//! assert!(surge.multiplier(cell) > 1.0);
//! // Five minutes later the window has moved past every event.
//! clock.advance(Duration::from_secs(300));
//! assert_eq!(surge.multiplier(cell), 1.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::time::Duration;

use h3o::{CellIndex, Resolution};
use infra_common::clock::duration_to_nanos;
use infra_common::sync::Mutex;
use infra_common::{Clock, RandomState};

use crate::Point;

/// The finest resolution whose cells `Surge::publish_metrics` (feature `metrics`) publishes
/// (6: cells of about 36 km², a few dozen over a large city), so the number of metric series
/// stays small.
pub const MAX_METRICS_RESOLUTION: Resolution = Resolution::Six;

/// Why a surge configuration or an event was refused.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum SurgeError {
    /// A configuration value is out of range; the message names it.
    InvalidConfig(&'static str),
    /// A cell coarser than the counting resolution cannot be counted in one finer cell.
    CellTooCoarse {
        /// The cell given.
        cell: CellIndex,
        /// The resolution the surge counts at.
        resolution: Resolution,
    },
    /// A roll-up asked for a resolution finer than the counting resolution.
    RollupTooFine {
        /// The resolution asked for.
        asked: Resolution,
        /// The resolution the surge counts at.
        resolution: Resolution,
    },
    /// Surge metrics were asked for at a resolution finer than
    /// [`MAX_METRICS_RESOLUTION`]: each cell is a metric series, so only coarse cells are
    /// published.
    MetricsTooFine {
        /// The resolution asked for.
        asked: Resolution,
    },
    /// The current slice already holds counts for `max_cells_per_slice` cells; an event in
    /// a new cell is refused until the slice ends. Raise the limit if this is real traffic.
    TooManyCells {
        /// The configured limit.
        max: usize,
    },
}

impl fmt::Display for SurgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig(what) => write!(f, "invalid surge configuration: {what}"),
            Self::CellTooCoarse { cell, resolution } => write!(
                f,
                "cell {cell} is coarser than the counting resolution {resolution}"
            ),
            Self::RollupTooFine { asked, resolution } => write!(
                f,
                "roll-up to resolution {asked} asked, finer than the counting resolution {resolution}"
            ),
            Self::MetricsTooFine { asked } => write!(
                f,
                "surge metrics asked at resolution {asked}; at most {MAX_METRICS_RESOLUTION} is published"
            ),
            Self::TooManyCells { max } => write!(
                f,
                "the current slice already counts {max} cells; a new cell is refused until it ends"
            ),
        }
    }
}

impl std::error::Error for SurgeError {}

/// A piecewise-linear map from the demand/supply ratio to a price multiplier, with a cap.
///
/// The curve starts at (ratio 0, multiplier 1): between it and the first point, and between
/// two points, the multiplier is interpolated linearly, so it never jumps; beyond the last
/// point it stays at the last point's multiplier. A first point at ratio 0 applies from 0 (a
/// step up from the 1 of a cell without demand).
/// The result is never more than the cap (test `the_curve_interpolates_from_one_to_its_points`). Points must have strictly increasing, non-negative ratios and non-decreasing
/// multipliers of at least 1, so the multiplier never decreases as demand grows.
///
/// ```
/// use infra_geomatch::surge::SurgeCurve;
///
/// let curve = SurgeCurve::new(&[(1.0, 1.0), (3.0, 2.0)], 1.8)?;
/// assert_eq!(curve.multiplier(0.5), 1.0);
/// assert_eq!(curve.multiplier(2.0), 1.5);
/// assert_eq!(curve.multiplier(10.0), 1.8); // capped
/// // From (0, 1) up to a first point above 1: half way there at half its ratio.
/// let steep = SurgeCurve::new(&[(2.0, 1.5)], 3.0)?;
/// assert_eq!(steep.multiplier(1.0), 1.25);
/// # Ok::<(), infra_geomatch::surge::SurgeError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SurgeCurve {
    points: Vec<(f64, f64)>,
    cap: f64,
}

impl SurgeCurve {
    /// The most points a curve may have.
    pub const MAX_POINTS: usize = 64;

    /// A curve through `points` (ratio, multiplier), capped at `cap`.
    ///
    /// # Errors
    ///
    /// [`SurgeError::InvalidConfig`] if there are no points or more than
    /// [`SurgeCurve::MAX_POINTS`], if a value is not finite, if ratios are negative or not
    /// strictly increasing, if multipliers are below 1 or decrease, or if `cap` is below 1 or
    /// not finite.
    pub fn new(points: &[(f64, f64)], cap: f64) -> Result<Self, SurgeError> {
        if points.is_empty() || points.len() > Self::MAX_POINTS {
            return Err(SurgeError::InvalidConfig(
                "a surge curve needs between 1 and 64 points",
            ));
        }
        if !(cap.is_finite() && cap >= 1.0) {
            return Err(SurgeError::InvalidConfig(
                "the surge cap must be finite and at least 1",
            ));
        }
        let mut previous: Option<(f64, f64)> = None;
        for &(ratio, multiplier) in points {
            if !(ratio.is_finite() && ratio >= 0.0 && multiplier.is_finite() && multiplier >= 1.0) {
                return Err(SurgeError::InvalidConfig(
                    "surge curve points need finite ratios of at least 0 and multipliers of at least 1",
                ));
            }
            if let Some((last_ratio, last_multiplier)) = previous
                && (ratio <= last_ratio || multiplier < last_multiplier)
            {
                return Err(SurgeError::InvalidConfig(
                    "surge curve ratios must increase strictly and multipliers must not decrease",
                ));
            }
            previous = Some((ratio, multiplier));
        }
        Ok(Self {
            points: points.to_vec(),
            cap,
        })
    }

    /// The cap: no multiplier is above it.
    pub fn cap(&self) -> f64 {
        self.cap
    }

    /// The multiplier at a demand/supply `ratio` (an infinite ratio gives the last point's
    /// multiplier, capped; NaN and ratios below zero are read as a ratio of 0).
    pub fn multiplier(&self, ratio: f64) -> f64 {
        // `max` takes 0 for NaN; below 0, the interpolation from (0, 1) would multiply an
        // infinite share by a zero rise at -inf, which is NaN.
        let ratio = ratio.max(0.0);
        let mut value = 1.0;
        // The curve's implicit start: no demand, no surge.
        let mut previous = (0.0, 1.0);
        for &(point_ratio, point_multiplier) in &self.points {
            if ratio >= point_ratio {
                value = point_multiplier;
                previous = (point_ratio, point_multiplier);
                continue;
            }
            // `ratio` lies below this point, and at or above the previous one (or the start,
            // which is below every point but one at ratio 0, which `ratio` is never below):
            // interpolate between the two.
            let (from_ratio, from_multiplier) = previous;
            let share = (ratio - from_ratio) / (point_ratio - from_ratio);
            value = from_multiplier + share * (point_multiplier - from_multiplier);
            break;
        }
        value.clamp(1.0, self.cap)
    }
}

impl Default for SurgeCurve {
    /// 1 up to one request per unit of supply, then linear to 2 at a ratio of 3 and to the
    /// cap, 3, at a ratio of 5.
    fn default() -> Self {
        Self {
            points: vec![(1.0, 1.0), (3.0, 2.0), (5.0, 3.0)],
            cap: 3.0,
        }
    }
}

/// How a [`Surge`] counts and prices.
///
/// ```
/// use std::time::Duration;
/// use infra_common::ManualClock;
/// use infra_geomatch::surge::{Surge, SurgeConfig, SurgeCurve, SurgeError};
///
/// let config = SurgeConfig {
///     window: Duration::from_secs(120),
///     slices: 12, // the window moves 10 s at a time
///     neighbour_weight: 0.0, // no smoothing
///     curve: SurgeCurve::new(&[(1.0, 1.0), (2.0, 2.0)], 2.0)?,
///     ..SurgeConfig::default()
/// };
/// let surge = Surge::new(config, ManualClock::new())?;
/// assert_eq!(surge.config().slices, 12);
/// let zero = SurgeConfig { window: Duration::ZERO, ..SurgeConfig::default() };
/// assert!(matches!(Surge::new(zero, ManualClock::new()), Err(SurgeError::InvalidConfig(_))));
/// # Ok::<(), SurgeError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SurgeConfig {
    /// The H3 resolution events are counted at (default 8, cells of about 0.7 km²).
    pub resolution: Resolution,
    /// The sliding window's length (default five minutes).
    pub window: Duration,
    /// How many slices the window is cut into (default 10): the window moves a slice at a
    /// time, and memory holds this many buckets.
    pub slices: u32,
    /// The weight of each neighbour's counts in a cell's smoothed counts, the cell's own
    /// weighing 1 (default 0.5; 0 turns smoothing off). Finite, in [0, 1].
    pub neighbour_weight: f64,
    /// The curve from smoothed demand/supply ratio to multiplier.
    pub curve: SurgeCurve,
    /// The most cells one slice holds counts for (default 100,000): bounds memory against a
    /// flood of events from scattered coordinates.
    pub max_cells_per_slice: usize,
}

impl Default for SurgeConfig {
    fn default() -> Self {
        Self {
            resolution: Resolution::Eight,
            window: Duration::from_secs(300),
            slices: 10,
            neighbour_weight: 0.5,
            curve: SurgeCurve::default(),
            max_cells_per_slice: 100_000,
        }
    }
}

/// Demand and supply counted in one cell over the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CellCounts {
    /// Requests.
    pub demand: u64,
    /// Available-driver observations.
    pub supply: u64,
}

impl CellCounts {
    fn add(&mut self, other: Self) {
        self.demand = self.demand.saturating_add(other.demand);
        self.supply = self.supply.saturating_add(other.supply);
    }
}

/// One cell's counts and multiplier, as [`Surge::snapshot`] and [`Surge::rollup`] list them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CellSurge {
    /// The cell.
    pub cell: CellIndex,
    /// Its raw (unsmoothed) counts in the window.
    pub counts: CellCounts,
    /// Its multiplier.
    pub multiplier: f64,
}

/// Gauge of the multiplier of coarse cells, labelled `surge` and `cell` (feature `metrics`),
/// set by [`Surge::publish_metrics`].
#[cfg(feature = "metrics")]
pub const SURGE_MULTIPLIER: &str = "infra_geomatch_surge_multiplier";
/// The label naming the surge instance.
#[cfg(feature = "metrics")]
pub const SURGE_LABEL: &str = "surge";
/// The label naming a coarse cell (its H3 index in hexadecimal).
#[cfg(feature = "metrics")]
pub const CELL_LABEL: &str = "cell";
/// The `surge` label of a surge that was given no name.
#[cfg(feature = "metrics")]
pub const DEFAULT_SURGE_NAME: &str = "default";

/// The surge's time: the clock's forward movements summed, so a clock that steps back stands
/// still instead of moving the window back. Starts at the clock's reading, so on a monotonic
/// clock it is the clock's reading.
#[derive(Debug)]
struct ForwardTime {
    last_reading: u64,
    nanos: u64,
}

impl ForwardTime {
    fn new(reading: u64) -> Self {
        Self {
            last_reading: reading,
            nanos: reading,
        }
    }

    /// Takes in a clock reading; returns the surge's time.
    fn advance(&mut self, reading: u64) -> u64 {
        self.nanos = self
            .nanos
            .saturating_add(reading.saturating_sub(self.last_reading));
        self.last_reading = reading;
        self.nanos
    }
}

/// The buckets and the time they are counted by, under one lock.
#[derive(Debug)]
struct Window {
    slices: Vec<Slice>,
    time: ForwardTime,
}

/// One slice's counts; `number` is the slice it holds (`time / slice_length`).
#[derive(Debug)]
struct Slice {
    number: u64,
    cells: HashMap<CellIndex, CellCounts, RandomState>,
}

/// Demand and supply per H3 cell over a sliding window, and the surge multiplier they give.
/// See the [module documentation](self) for the exact rules. Shared by reference between
/// threads: each call takes an internal lock for the time of one update or read.
///
/// ```
/// use h3o::Resolution;
/// use infra_common::ManualClock;
/// use infra_geomatch::Point;
/// use infra_geomatch::surge::{CellCounts, Surge, SurgeConfig};
///
/// let surge = Surge::new(SurgeConfig::default(), ManualClock::new())?;
/// let stadium = Point::new(48.9245, 2.3602)?;
/// let cell = surge.record_demand(stadium)?;
/// surge.record_supply(stadium)?;
/// assert_eq!(surge.counts(cell), CellCounts { demand: 1, supply: 1 });
/// assert_eq!(surge.multiplier(cell), 1.0); // one request per driver: no surge
/// let coarse = surge.rollup(Resolution::Six)?;
/// assert_eq!(coarse[0].counts, CellCounts { demand: 1, supply: 1 });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Surge<C> {
    config: SurgeConfig,
    slice_nanos: u64,
    clock: C,
    window: Mutex<Window>,
    #[cfg(feature = "metrics")]
    metrics_name: metrics::SharedString,
    /// The coarse cells whose gauges the last publication set.
    #[cfg(feature = "metrics")]
    published: Mutex<Vec<CellIndex>>,
}

enum Event {
    Demand,
    Supply,
}

/// The gauge of `cell`'s multiplier for the surge named `name`.
#[cfg(feature = "metrics")]
fn multiplier_gauge(name: &metrics::SharedString, cell: CellIndex) -> metrics::Gauge {
    metrics::gauge!(
        SURGE_MULTIPLIER,
        SURGE_LABEL => name.clone(),
        CELL_LABEL => cell.to_string()
    )
}

/// A surge that is gone prices nothing: the cells its last publication set go back to 1
/// rather than keep their last multiplier for as long as the process runs.
#[cfg(feature = "metrics")]
impl<C> Drop for Surge<C> {
    fn drop(&mut self) {
        for &cell in self.published.lock().iter() {
            multiplier_gauge(&self.metrics_name, cell).set(1.0);
        }
    }
}

impl<C: Clock> Surge<C> {
    /// A surge with no events yet, reading time from `clock`.
    ///
    /// # Errors
    ///
    /// [`SurgeError::InvalidConfig`] for a zero window, zero slices or more than 10,000, a
    /// window shorter than one nanosecond per slice, a neighbour weight that is not finite in
    /// [0, 1], or a zero cell limit.
    pub fn new(config: SurgeConfig, clock: C) -> Result<Self, SurgeError> {
        if config.window.is_zero() {
            return Err(SurgeError::InvalidConfig(
                "the surge window must be positive",
            ));
        }
        if config.slices == 0 || config.slices > 10_000 {
            return Err(SurgeError::InvalidConfig(
                "the surge window needs between 1 and 10,000 slices",
            ));
        }
        let slice_nanos = duration_to_nanos(config.window) / u64::from(config.slices);
        if slice_nanos == 0 {
            return Err(SurgeError::InvalidConfig(
                "the surge window is shorter than one nanosecond per slice",
            ));
        }
        if !(config.neighbour_weight.is_finite() && (0.0..=1.0).contains(&config.neighbour_weight))
        {
            return Err(SurgeError::InvalidConfig(
                "the neighbour weight must be finite in [0, 1]",
            ));
        }
        if config.max_cells_per_slice == 0 {
            return Err(SurgeError::InvalidConfig(
                "the cell limit per slice must be positive",
            ));
        }
        let slices = (0..config.slices)
            .map(|_| Slice {
                // No slice number is ever this large, so the bucket reads as empty.
                number: u64::MAX,
                cells: HashMap::with_hasher(RandomState::new()),
            })
            .collect();
        let time = ForwardTime::new(clock.now_nanos());
        Ok(Self {
            config,
            slice_nanos,
            clock,
            window: Mutex::new(Window { slices, time }),
            #[cfg(feature = "metrics")]
            metrics_name: metrics::SharedString::const_str(DEFAULT_SURGE_NAME),
            #[cfg(feature = "metrics")]
            published: Mutex::new(Vec::new()),
        })
    }

    /// Names the surge in its metrics (feature `metrics`): the `surge` label of
    /// [`SURGE_MULTIPLIER`].
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn with_metrics_name(mut self, name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.metrics_name = metrics::SharedString::from(name.into());
        self
    }

    /// Sets the gauge [`SURGE_MULTIPLIER`] of every coarse cell of [`Surge::rollup`] at
    /// `resolution`, and back to 1 for each cell the previous publication set that now has
    /// no events; returns the number of cells set. Call it periodically (each slice, say):
    /// it looks each gauge up by name, unlike the hot-path handles of the index and matcher.
    /// When the surge is dropped, the cells of its last publication go back to 1. Publications
    /// from several threads are serialised, roll-up included, so the gauges end on the newest.
    ///
    /// # Errors
    ///
    /// [`SurgeError::MetricsTooFine`] for a resolution finer than
    /// [`MAX_METRICS_RESOLUTION`]; [`SurgeError::RollupTooFine`] for one finer than the
    /// counting resolution.
    #[cfg(feature = "metrics")]
    pub fn publish_metrics(&self, resolution: Resolution) -> Result<usize, SurgeError> {
        if resolution > MAX_METRICS_RESOLUTION {
            return Err(SurgeError::MetricsTooFine { asked: resolution });
        }
        // Held from the roll-up to the last gauge written, so two publications running at
        // once cannot finish in the other order and leave the older roll-up's multipliers.
        let mut published = self.published.lock();
        let rolled = self.rollup(resolution)?;
        metrics::describe_gauge!(
            SURGE_MULTIPLIER,
            metrics::Unit::Count,
            "Surge multiplier of each coarse H3 cell with events in the window (1 is no surge)."
        );
        let gauge = |cell: CellIndex| multiplier_gauge(&self.metrics_name, cell);
        for &cell in published.iter() {
            if rolled
                .binary_search_by_key(&cell, |surge| surge.cell)
                .is_err()
            {
                gauge(cell).set(1.0);
            }
        }
        for surge in &rolled {
            gauge(surge.cell).set(surge.multiplier);
        }
        *published = rolled.iter().map(|surge| surge.cell).collect();
        Ok(rolled.len())
    }

    /// The configuration.
    pub fn config(&self) -> &SurgeConfig {
        &self.config
    }

    /// Counts one request at a pickup point; returns the cell it was counted in.
    ///
    /// # Errors
    ///
    /// [`SurgeError::TooManyCells`] at the cell limit.
    pub fn record_demand(&self, point: Point) -> Result<CellIndex, SurgeError> {
        let cell = point.cell(self.config.resolution);
        self.record(cell, &Event::Demand)?;
        Ok(cell)
    }

    /// Counts one available-driver observation at a driver's position; returns its cell.
    ///
    /// # Errors
    ///
    /// As [`Surge::record_demand`].
    pub fn record_supply(&self, point: Point) -> Result<CellIndex, SurgeError> {
        let cell = point.cell(self.config.resolution);
        self.record(cell, &Event::Supply)?;
        Ok(cell)
    }

    /// Counts one request in `cell`, or in its parent at the counting resolution if it is
    /// finer; returns the cell counted.
    ///
    /// # Errors
    ///
    /// [`SurgeError::CellTooCoarse`] for a cell coarser than the counting resolution,
    /// [`SurgeError::TooManyCells`] at the cell limit.
    pub fn record_demand_in(&self, cell: CellIndex) -> Result<CellIndex, SurgeError> {
        let cell = self.counting_cell(cell)?;
        self.record(cell, &Event::Demand)?;
        Ok(cell)
    }

    /// Counts one available-driver observation in `cell` (see [`Surge::record_demand_in`]).
    ///
    /// # Errors
    ///
    /// As [`Surge::record_demand_in`].
    pub fn record_supply_in(&self, cell: CellIndex) -> Result<CellIndex, SurgeError> {
        let cell = self.counting_cell(cell)?;
        self.record(cell, &Event::Supply)?;
        Ok(cell)
    }

    fn counting_cell(&self, cell: CellIndex) -> Result<CellIndex, SurgeError> {
        cell.parent(self.config.resolution)
            .ok_or(SurgeError::CellTooCoarse {
                cell,
                resolution: self.config.resolution,
            })
    }

    /// The cell a read of `cell` looks at: its counting cell if it has one (a rider's fine
    /// cell is read where its requests were counted), else `cell` itself, which holds no counts.
    fn read_cell(&self, cell: CellIndex) -> CellIndex {
        self.counting_cell(cell).unwrap_or(cell)
    }

    /// The current slice of the surge's time, taking in the clock's reading: called under the
    /// lock, so of two callers the later reading is never taken in first.
    fn current_slice(&self, window: &mut Window) -> u64 {
        window.time.advance(self.clock.now_nanos()) / self.slice_nanos
    }

    fn record(&self, cell: CellIndex, event: &Event) -> Result<(), SurgeError> {
        let mut window = self.window.lock();
        let number = self.current_slice(&mut window);
        let slot = (number % u64::from(self.config.slices)) as usize;
        let slice = &mut window.slices[slot];
        if slice.number != number {
            // The surge's time never goes back, so the bucket holds an older slice (one that
            // has left the window) or none: reuse it.
            slice.number = number;
            slice.cells.clear();
        }
        let at_limit = slice.cells.len() >= self.config.max_cells_per_slice;
        let counts = match slice.cells.entry(cell) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(_) if at_limit => {
                return Err(SurgeError::TooManyCells {
                    max: self.config.max_cells_per_slice,
                });
            }
            Entry::Vacant(entry) => entry.insert(CellCounts::default()),
        };
        match event {
            Event::Demand => counts.demand = counts.demand.saturating_add(1),
            Event::Supply => counts.supply = counts.supply.saturating_add(1),
        }
        Ok(())
    }

    /// Every cell's raw counts over the window, summed across its live slices.
    fn window_counts(&self) -> HashMap<CellIndex, CellCounts, RandomState> {
        let mut window = self.window.lock();
        let current = self.current_slice(&mut window);
        let mut totals: HashMap<CellIndex, CellCounts, RandomState> =
            HashMap::with_hasher(RandomState::new());
        for slice in window
            .slices
            .iter()
            .filter(|slice| self.is_live(slice, current))
        {
            for (&cell, &counts) in &slice.cells {
                totals.entry(cell).or_default().add(counts);
            }
        }
        totals
    }

    fn is_live(&self, slice: &Slice, current: u64) -> bool {
        slice.number <= current && current - slice.number < u64::from(self.config.slices)
    }

    /// The raw (unsmoothed) counts of `cell` in the window. A cell finer than the counting
    /// resolution reads as its parent there, the cell [`Surge::record_demand_in`] counts it
    /// in; a coarser one reads as empty (its sums are [`Surge::rollup`]'s).
    pub fn counts(&self, cell: CellIndex) -> CellCounts {
        let cell = self.read_cell(cell);
        let mut window = self.window.lock();
        let current = self.current_slice(&mut window);
        let mut total = CellCounts::default();
        for slice in window
            .slices
            .iter()
            .filter(|slice| self.is_live(slice, current))
        {
            if let Some(&counts) = slice.cells.get(&cell) {
                total.add(counts);
            }
        }
        total
    }

    /// The multiplier of `cell` now: smoothed over its neighbours, through the curve. A cell
    /// finer than the counting resolution is priced as its parent there; a coarser one is at
    /// 1 (price coarse cells with [`Surge::rollup`]).
    pub fn multiplier(&self, cell: CellIndex) -> f64 {
        let cell = self.read_cell(cell);
        let mut window = self.window.lock();
        let current = self.current_slice(&mut window);
        let live: Vec<&Slice> = window
            .slices
            .iter()
            .filter(|slice| self.is_live(slice, current))
            .collect();
        let read = |cell: CellIndex| {
            let mut total = CellCounts::default();
            for slice in &live {
                if let Some(&counts) = slice.cells.get(&cell) {
                    total.add(counts);
                }
            }
            total
        };
        self.smoothed_multiplier(cell, read)
    }

    fn smoothed_multiplier(&self, cell: CellIndex, read: impl Fn(CellIndex) -> CellCounts) -> f64 {
        let own = read(cell);
        let mut demand = own.demand as f64;
        let mut supply = own.supply as f64;
        if self.config.neighbour_weight > 0.0 {
            for neighbour in cell.grid_disk::<Vec<_>>(1) {
                if neighbour != cell {
                    let counts = read(neighbour);
                    demand += self.config.neighbour_weight * counts.demand as f64;
                    supply += self.config.neighbour_weight * counts.supply as f64;
                }
            }
        }
        self.price(demand, supply)
    }

    /// The two ends are fixed whatever the curve: no demand is no surge, and demand without
    /// supply is the cap (a curve may start above 1 at ratio 0, or end below its cap).
    fn price(&self, demand: f64, supply: f64) -> f64 {
        if demand == 0.0 {
            1.0
        } else if supply == 0.0 {
            self.config.curve.cap()
        } else {
            self.config.curve.multiplier(demand / supply)
        }
    }

    /// Every cell with events in the window, and every neighbour such a cell's smoothing
    /// reaches, with its counts and multiplier, sorted by cell.
    pub fn snapshot(&self) -> Vec<CellSurge> {
        let totals = self.window_counts();
        let read = |cell: CellIndex| totals.get(&cell).copied().unwrap_or_default();
        let mut cells: Vec<CellIndex> = if self.config.neighbour_weight > 0.0 {
            totals
                .keys()
                .flat_map(|cell| cell.grid_disk::<Vec<_>>(1))
                .collect()
        } else {
            totals.keys().copied().collect()
        };
        cells.sort_unstable();
        cells.dedup();
        cells
            .into_iter()
            .map(|cell| CellSurge {
                cell,
                counts: read(cell),
                multiplier: self.smoothed_multiplier(cell, read),
            })
            .collect()
    }

    /// The window's counts summed under each parent cell at the coarser `resolution`, with
    /// the multiplier of each sum (no smoothing), sorted by cell.
    ///
    /// # Errors
    ///
    /// [`SurgeError::RollupTooFine`] if `resolution` is finer than the counting resolution.
    pub fn rollup(&self, resolution: Resolution) -> Result<Vec<CellSurge>, SurgeError> {
        if resolution > self.config.resolution {
            return Err(SurgeError::RollupTooFine {
                asked: resolution,
                resolution: self.config.resolution,
            });
        }
        let mut parents: HashMap<CellIndex, CellCounts, RandomState> =
            HashMap::with_hasher(RandomState::new());
        for (cell, counts) in self.window_counts() {
            // Every counted cell is at the counting resolution, at least as fine as `resolution`.
            if let Some(parent) = cell.parent(resolution) {
                parents.entry(parent).or_default().add(counts);
            }
        }
        let mut rolled: Vec<CellSurge> = parents
            .into_iter()
            .map(|(cell, counts)| CellSurge {
                cell,
                counts,
                multiplier: self.price(counts.demand as f64, counts.supply as f64),
            })
            .collect();
        rolled.sort_unstable_by_key(|surge| surge.cell);
        Ok(rolled)
    }
}

#[cfg(test)]
mod tests {
    use h3o::LatLng;
    use infra_common::ManualClock;
    use proptest::prelude::*;

    use super::*;

    const LAT: f64 = 37.7749;
    const LNG: f64 = -122.4194;

    fn at(lat: f64, lng: f64) -> Point {
        Point::new(lat, lng).expect("valid")
    }

    fn surge(config: SurgeConfig) -> (Surge<ManualClock>, ManualClock) {
        let clock = ManualClock::new();
        (Surge::new(config, clock.clone()).expect("valid"), clock)
    }

    #[test]
    fn bad_input_is_refused() {
        let (surge, _) = surge(SurgeConfig::default());
        let zero_window = SurgeConfig {
            window: Duration::ZERO,
            ..SurgeConfig::default()
        };
        assert!(matches!(
            Surge::new(zero_window, ManualClock::new()),
            Err(SurgeError::InvalidConfig(_))
        ));
        for config in [
            SurgeConfig {
                slices: 0,
                ..SurgeConfig::default()
            },
            SurgeConfig {
                window: Duration::from_nanos(5),
                slices: 10,
                ..SurgeConfig::default()
            },
            SurgeConfig {
                neighbour_weight: f64::NAN,
                ..SurgeConfig::default()
            },
            SurgeConfig {
                neighbour_weight: 1.5,
                ..SurgeConfig::default()
            },
            SurgeConfig {
                max_cells_per_slice: 0,
                ..SurgeConfig::default()
            },
        ] {
            assert!(matches!(
                Surge::new(config, ManualClock::new()),
                Err(SurgeError::InvalidConfig(_))
            ));
        }
        for (points, cap) in [
            (vec![], 2.0),
            (vec![(1.0, 1.0)], 0.5),
            (vec![(1.0, 1.0)], f64::INFINITY),
            (vec![(1.0, 0.9)], 2.0),
            (vec![(f64::NAN, 1.0)], 2.0),
            (vec![(-1.0, 1.0)], 2.0),
            (vec![(1.0, 1.0), (1.0, 2.0)], 2.0),
            (vec![(1.0, 2.0), (2.0, 1.5)], 2.0),
        ] {
            assert!(
                SurgeCurve::new(&points, cap).is_err(),
                "{points:?} capped at {cap}"
            );
        }
        let coarse = LatLng::new(LAT, LNG)
            .expect("valid")
            .to_cell(Resolution::Five);
        assert!(matches!(
            surge.record_demand_in(coarse),
            Err(SurgeError::CellTooCoarse { .. })
        ));
        assert!(matches!(
            surge.rollup(Resolution::Nine),
            Err(SurgeError::RollupTooFine { .. })
        ));
    }

    #[cfg(all(feature = "metrics", not(infra_loom)))]
    #[test]
    fn published_gauges_follow_the_coarse_cells_and_cool_back_to_one() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};

        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let (surge, clock) = surge(SurgeConfig::default());
        let surge = surge.with_metrics_name("city");
        surge.record_supply(at(LAT, LNG)).expect("valid");
        for _ in 0..8 {
            surge.record_demand(at(LAT, LNG)).expect("valid");
        }
        let coarse = at(LAT, LNG).cell(Resolution::Eight).parent(Resolution::Six);
        let gauges = || -> Vec<(String, f64)> {
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .filter_map(|(key, _, _, value)| {
                    let key = key.key();
                    let DebugValue::Gauge(value) = value else {
                        return None;
                    };
                    assert_eq!(key.name(), SURGE_MULTIPLIER);
                    let mut labels: Vec<String> = key
                        .labels()
                        .map(|label| format!("{}={}", label.key(), label.value()))
                        .collect();
                    labels.sort();
                    Some((labels.join(","), value.into_inner()))
                })
                .collect()
        };
        let expected_label = format!("cell={},surge=city", coarse.expect("a parent"));
        let published =
            metrics::with_local_recorder(&recorder, || surge.publish_metrics(Resolution::Six));
        assert_eq!(published, Ok(1));
        // 8 requests against 1 driver, unsmoothed at the coarse level: ratio 8, the cap.
        assert_eq!(gauges(), [(expected_label.clone(), 3.0)]);
        clock.advance(Duration::from_secs(300));
        let published =
            metrics::with_local_recorder(&recorder, || surge.publish_metrics(Resolution::Six));
        assert_eq!(published, Ok(0));
        assert_eq!(gauges(), [(expected_label, 1.0)]);
        assert_eq!(
            surge.publish_metrics(Resolution::Seven),
            Err(SurgeError::MetricsTooFine {
                asked: Resolution::Seven
            })
        );
    }

    /// A surge dropped (a service rebuilding it with a new configuration) leaves no cell at
    /// its last multiplier: the cells it published go back to 1.
    #[cfg(all(feature = "metrics", not(infra_loom)))]
    #[test]
    fn a_dropped_surge_sets_its_published_cells_back_to_one() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};

        let recorder = DebuggingRecorder::new();
        let (surge, _) = surge(SurgeConfig::default());
        let surge = surge.with_metrics_name("city");
        surge.record_supply(at(LAT, LNG)).expect("valid");
        for _ in 0..8 {
            surge.record_demand(at(LAT, LNG)).expect("valid");
        }
        metrics::with_local_recorder(&recorder, || {
            assert_eq!(surge.publish_metrics(Resolution::Six), Ok(1));
            drop(surge);
        });
        // One snapshot: the debugging recorder's reads reset what they read.
        let gauges: Vec<f64> = recorder
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(_, _, _, value)| match value {
                DebugValue::Gauge(value) => Some(value.into_inner()),
                _ => None,
            })
            .collect();
        assert_eq!(gauges, [1.0]);
    }

    /// A pricing call with the rider's fine cell reads the cell that counted its requests:
    /// what `record_demand_in` counts a fine cell in is what `counts` and `multiplier` read
    /// for it, not an empty cell at no surge.
    #[test]
    fn a_finer_cell_reads_as_the_parent_it_was_counted_in() {
        let (surge, _) = surge(SurgeConfig::default());
        let fine = LatLng::new(LAT, LNG)
            .expect("valid")
            .to_cell(Resolution::Ten);
        let counted = surge.record_supply_in(fine).expect("fine enough");
        for _ in 0..4 {
            surge.record_demand_in(fine).expect("fine enough");
        }
        assert!(surge.multiplier(counted) > 1.0);
        assert_eq!(surge.counts(fine), surge.counts(counted));
        assert_eq!(surge.multiplier(fine), surge.multiplier(counted));
        // A coarser cell is no one counting cell: it reads as empty (see `rollup`).
        let coarse = counted.parent(Resolution::Six).expect("coarser");
        assert_eq!(surge.counts(coarse), CellCounts::default());
        assert_eq!(surge.multiplier(coarse), 1.0);
    }

    #[test]
    fn a_finer_cell_is_counted_in_its_parent() {
        let (surge, _) = surge(SurgeConfig::default());
        let fine = LatLng::new(LAT, LNG)
            .expect("valid")
            .to_cell(Resolution::Eleven);
        let counted = surge.record_demand_in(fine).expect("fine enough");
        assert_eq!(counted.resolution(), Resolution::Eight);
        assert_eq!(counted, surge.record_supply(at(LAT, LNG)).expect("valid"));
        assert_eq!(
            surge.counts(counted),
            CellCounts {
                demand: 1,
                supply: 1
            }
        );
    }

    #[test]
    fn the_cell_limit_refuses_new_cells_until_the_slice_ends() {
        let config = SurgeConfig {
            max_cells_per_slice: 1,
            ..SurgeConfig::default()
        };
        let (surge, clock) = surge(config);
        surge.record_demand(at(LAT, LNG)).expect("first cell");
        surge.record_demand(at(LAT, LNG)).expect("same cell");
        assert_eq!(
            surge.record_demand(at(LAT + 0.1, LNG)),
            Err(SurgeError::TooManyCells { max: 1 })
        );
        clock.advance(Duration::from_secs(30));
        surge
            .record_demand(at(LAT + 0.1, LNG))
            .expect("a new slice");
    }

    #[test]
    fn smoothing_around_a_pentagon_reaches_its_five_neighbours() {
        let (surge, _) = surge(SurgeConfig::default());
        let pentagon = CellIndex::base_cells()
            .find(|cell| cell.is_pentagon())
            .and_then(|base| base.center_child(Resolution::Eight))
            .expect("a pentagon at the counting resolution");
        assert!(pentagon.is_pentagon());
        surge.record_demand_in(pentagon).expect("valid");
        let snapshot = surge.snapshot();
        assert_eq!(snapshot.len(), 6);
        for cell in &snapshot {
            assert_eq!(cell.multiplier, 3.0, "{}", cell.cell);
            if cell.cell != pentagon {
                // Each neighbour's smoothed demand is half the pentagon's request.
                assert_eq!(surge.multiplier(cell.cell), 3.0);
                assert_eq!(pentagon.grid_distance(cell.cell), Ok(1));
            }
        }
    }

    #[test]
    fn smoothing_at_every_pentagon_at_the_coarsest_and_finest_resolutions() {
        for resolution in [Resolution::Zero, Resolution::Fifteen] {
            for pentagon in resolution.pentagons() {
                let (surge, _) = surge(SurgeConfig {
                    resolution,
                    ..SurgeConfig::default()
                });
                let neighbours: Vec<CellIndex> = pentagon
                    .grid_disk::<Vec<_>>(1)
                    .into_iter()
                    .filter(|&cell| cell != pentagon)
                    .collect();
                assert_eq!(neighbours.len(), 5, "{pentagon}");
                for _ in 0..5 {
                    surge.record_demand_in(pentagon).expect("valid");
                }
                for &neighbour in &neighbours {
                    surge.record_supply_in(neighbour).expect("valid");
                }
                // Demand 5 against supply 5 × 0.5: a ratio of 2, half way from 1 to 2.
                assert_eq!(surge.multiplier(pentagon), 1.5, "{pentagon}");
                let listed: Vec<CellIndex> =
                    surge.snapshot().iter().map(|cell| cell.cell).collect();
                for cell in neighbours.iter().chain([&pentagon]) {
                    assert!(listed.contains(cell), "{pentagon}: {cell} not listed");
                }
            }
        }
    }

    #[test]
    fn smoothing_lifts_the_neighbours_of_a_hot_cell() {
        let (surge, _) = surge(SurgeConfig::default());
        let hot = surge.record_supply(at(LAT, LNG)).expect("valid");
        for _ in 0..8 {
            surge.record_demand(at(LAT, LNG)).expect("valid");
        }
        let neighbour = hot
            .grid_disk::<Vec<_>>(1)
            .into_iter()
            .find(|&cell| cell != hot)
            .expect("a hexagon has neighbours");
        // The neighbour has no events of its own; half the hot cell's 8 requests against half
        // its one driver is still a ratio of 8, at the cap.
        assert_eq!(surge.multiplier(neighbour), 3.0);
        assert_eq!(surge.multiplier(hot), 3.0);
        let far = hot.grid_disk::<Vec<_>>(2);
        let two_away = far
            .iter()
            .find(|cell| hot.grid_distance(**cell).ok() == Some(2))
            .expect("a ring at distance 2");
        assert_eq!(surge.multiplier(*two_away), 1.0);
        let snapshot = surge.snapshot();
        assert_eq!(snapshot.len(), 7);
        assert!(snapshot.iter().all(|cell| cell.multiplier == 3.0));
    }

    proptest! {
        #[test]
        fn the_curve_is_monotone_capped_and_at_least_one(
            steps in proptest::collection::vec((0.01f64..5.0, 0.0f64..2.0), 1..8),
            cap in 1.0f64..6.0,
            a in 0.0f64..40.0,
            b in 0.0f64..40.0,
        ) {
            let mut points = Vec::new();
            let (mut ratio, mut multiplier) = (0.0, 1.0);
            for (step, rise) in steps {
                ratio += step;
                multiplier += rise;
                points.push((ratio, multiplier));
            }
            let curve = SurgeCurve::new(&points, cap).expect("valid curve");
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            let (at_low, at_high) = (curve.multiplier(low), curve.multiplier(high));
            prop_assert!(at_low <= at_high, "{at_low} at {low} > {at_high} at {high}");
            prop_assert!((1.0..=cap).contains(&at_low) && (1.0..=cap).contains(&at_high));
            prop_assert!(curve.multiplier(f64::INFINITY) <= cap);
        }

        #[test]
        fn more_demand_never_lowers_a_multiplier(
            supply in 0u32..6,
            demand in 0u32..30,
            extra in 1u32..10,
            neighbour_supply in 0u32..4,
        ) {
            let (surge, _) = surge(SurgeConfig::default());
            let cell = LatLng::new(LAT, LNG).expect("valid").to_cell(Resolution::Eight);
            let neighbour = cell
                .grid_disk::<Vec<_>>(1)
                .into_iter()
                .find(|&other| other != cell)
                .expect("a hexagon has neighbours");
            for _ in 0..supply {
                surge.record_supply_in(cell).expect("valid");
            }
            for _ in 0..neighbour_supply {
                surge.record_supply_in(neighbour).expect("valid");
            }
            for _ in 0..demand {
                surge.record_demand_in(cell).expect("valid");
            }
            let before = surge.multiplier(cell);
            let before_neighbour = surge.multiplier(neighbour);
            for _ in 0..extra {
                surge.record_demand_in(cell).expect("valid");
            }
            prop_assert!(surge.multiplier(cell) >= before);
            prop_assert!(surge.multiplier(neighbour) >= before_neighbour);
            prop_assert!((1.0..=3.0).contains(&surge.multiplier(cell)));
        }

        #[test]
        fn counts_leave_the_window_exactly_on_time(
            window_secs in 1u64..600,
            slices in 1u32..20,
            events in proptest::collection::vec(0u64..2_000_000, 1..40),
            probes in proptest::collection::vec(0u64..3_000_000, 1..20),
        ) {
            // Times in milliseconds; the model: an event at t is counted at time now iff
            // floor(t / slice) <= floor(now / slice) < floor(t / slice) + slices.
            let window = Duration::from_secs(window_secs);
            let slice_nanos = duration_to_nanos(window) / u64::from(slices);
            let mut times: Vec<u64> = events.iter().map(|ms| ms * 1_000_000).collect();
            times.sort_unstable();
            let mut probes: Vec<u64> = probes.iter().map(|ms| ms * 1_000_000).collect();
            probes.sort_unstable();
            let config = SurgeConfig { window, slices, ..SurgeConfig::default() };
            let (surge, clock) = surge(config);
            let cell = LatLng::new(LAT, LNG).expect("valid").to_cell(Resolution::Eight);
            let mut recorded: Vec<u64> = Vec::new();
            let mut next_event = 0;
            for probe in probes {
                while next_event < times.len() && times[next_event] <= probe {
                    clock.set(Duration::from_nanos(times[next_event]));
                    surge.record_demand_in(cell).expect("valid");
                    recorded.push(times[next_event]);
                    next_event += 1;
                }
                clock.set(Duration::from_nanos(probe));
                let now_slice = probe / slice_nanos;
                let expected = recorded
                    .iter()
                    .filter(|&&t| now_slice < t / slice_nanos + u64::from(slices))
                    .count() as u64;
                prop_assert_eq!(surge.counts(cell).demand, expected, "at {} ns", probe);
            }
        }

        #[test]
        fn rollup_sums_equal_the_children_sums(
            points in proptest::collection::vec((37.6f64..37.9, -122.6f64..-122.3, any::<bool>()), 0..200),
            coarse in 4u8..=8,
        ) {
            let (surge, _) = surge(SurgeConfig::default());
            for &(lat, lng, is_demand) in &points {
                if is_demand {
                    surge.record_demand(at(lat, lng)).expect("valid");
                } else {
                    surge.record_supply(at(lat, lng)).expect("valid");
                }
            }
            let resolution = Resolution::try_from(coarse).expect("valid resolution");
            let rolled = surge.rollup(resolution).expect("coarser");
            // The model: each coarse cell's children at the counting resolution, read one by one.
            for rolled_cell in &rolled {
                let mut sum = CellCounts::default();
                for child in rolled_cell.cell.children(Resolution::Eight) {
                    sum.add(surge.counts(child));
                }
                prop_assert_eq!(rolled_cell.counts, sum);
                let expected = surge.config().curve.multiplier(if sum.supply == 0 {
                    f64::INFINITY
                } else {
                    sum.demand as f64 / sum.supply as f64
                });
                prop_assert_eq!(rolled_cell.multiplier, expected);
            }
            let total: u64 = rolled.iter().map(|s| s.counts.demand + s.counts.supply).sum();
            prop_assert_eq!(total, points.len() as u64);
        }
    }

    /// A clock set by hand that, unlike `ManualClock`, may be set back: a clock stepped back
    /// by an operator, or readings taken before a lock and applied after a later one.
    #[derive(Debug, Default)]
    struct SteppingClock(infra_common::sync::atomic::AtomicU64);

    impl SteppingClock {
        fn set(&self, at: Duration) {
            let nanos = u64::try_from(at.as_nanos()).expect("within u64 nanoseconds");
            self.0
                .store(nanos, infra_common::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Clock for SteppingClock {
        fn now_nanos(&self) -> u64 {
            self.0.load(infra_common::sync::atomic::Ordering::SeqCst)
        }

        fn wall_time(&self) -> std::time::SystemTime {
            std::time::UNIX_EPOCH + Duration::from_nanos(self.now_nanos())
        }
    }

    #[test]
    fn a_window_of_uneven_slices_spans_its_whole_slices() {
        // 10 ns in 3 slices: slices of 3 ns, a window of 9 ns.
        let config = SurgeConfig {
            window: Duration::from_nanos(10),
            slices: 3,
            ..SurgeConfig::default()
        };
        let (surge, clock) = surge(config);
        let cell = LatLng::new(LAT, LNG)
            .expect("valid")
            .to_cell(Resolution::Eight);
        surge.record_demand_in(cell).expect("valid");
        clock.set(Duration::from_nanos(8));
        assert_eq!(surge.counts(cell).demand, 1);
        clock.set(Duration::from_nanos(9));
        assert_eq!(surge.counts(cell).demand, 0);
    }

    /// A clock corrected back by an hour, far more than the window: the surge counts and reads
    /// on at once, the events from before the step with the rest, and every event leaves the
    /// window after a window of the clock's forward movement, wherever it was recorded.
    #[test]
    fn after_a_clock_steps_back_the_window_slides_on_at_once() {
        // Two slices of 10 s.
        let config = SurgeConfig {
            window: Duration::from_secs(20),
            slices: 2,
            ..SurgeConfig::default()
        };
        let clock = SteppingClock::default();
        let surge = Surge::new(config, &clock).expect("valid");
        let point = at(LAT, LNG);
        clock.set(Duration::from_secs(3_605));
        let cell = surge.record_demand(point).expect("counted");
        clock.set(Duration::from_secs(5));
        surge.record_demand(point).expect("counted");
        assert_eq!(surge.counts(cell).demand, 2);
        assert_eq!(surge.multiplier(cell), surge.config().curve.cap());
        assert_eq!(
            surge
                .snapshot()
                .iter()
                .map(|s| s.counts.demand)
                .sum::<u64>(),
            2
        );
        // 10 s of the clock later both are still in the window (the slice after theirs)...
        clock.set(Duration::from_secs(15));
        assert_eq!(surge.counts(cell).demand, 2);
        // ...and 15 s later both have left it (two slices after theirs).
        clock.set(Duration::from_secs(20));
        assert_eq!(surge.counts(cell).demand, 0);
        surge.record_demand(point).expect("counted");
        assert_eq!(surge.counts(cell).demand, 1);
    }

    /// Readings at the ends of the clock's range, forward and back: no overflow, and the
    /// surge's time stops at the end of its range rather than wrapping.
    #[test]
    fn readings_at_the_ends_of_the_clocks_range_do_not_panic() {
        let clock = SteppingClock::default();
        let surge = Surge::new(SurgeConfig::default(), &clock).expect("valid");
        let point = at(LAT, LNG);
        let mut cell = None;
        for nanos in [u64::MAX, 0, u64::MAX, 1, u64::MAX] {
            clock.set(Duration::from_nanos(nanos));
            cell = Some(surge.record_demand(point).expect("counted"));
        }
        let cell = cell.expect("recorded");
        assert_eq!(surge.counts(cell).demand, 5);
        assert_eq!(
            surge.rollup(Resolution::Six).expect("coarser")[0]
                .counts
                .demand,
            5
        );
    }

    /// One step of a clock that goes forward and back: record a request in one of two cells,
    /// or move the clock to a reading.
    #[derive(Clone, Debug)]
    enum Step {
        Request(bool),
        SetClock(u64),
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        let step = (any::<bool>(), any::<bool>(), 0u64..120).prop_map(|(request, second, secs)| {
            if request {
                Step::Request(second)
            } else {
                Step::SetClock(secs)
            }
        });
        proptest::collection::vec(step, 1..60)
    }

    proptest! {
        /// The rule of a clock that steps back, against a model: the window moves by the
        /// clock's forward movements only (a step back is no time), an event belongs to the
        /// slice of that time, and is counted until `slices` slices later. After every step,
        /// each cell's count is the model's: nothing lost, nothing counted twice.
        #[test]
        fn a_clock_going_back_and_forth_counts_as_its_forward_movement(
            slices in 1u32..5,
            slice_secs in 1u64..20,
            steps in steps(),
        ) {
            let config = SurgeConfig {
                window: Duration::from_secs(slice_secs * u64::from(slices)),
                slices,
                neighbour_weight: 0.0,
                ..SurgeConfig::default()
            };
            let clock = SteppingClock::default();
            let surge = Surge::new(config, &clock).expect("valid");
            let cells = [at(LAT, LNG), at(LAT + 0.1, LNG)]
                .map(|point| point.cell(Resolution::Eight));
            let (mut reading, mut moved) = (0u64, 0u64);
            let mut events: Vec<(u64, usize)> = Vec::new();
            for step in steps {
                match step {
                    Step::Request(second) => {
                        let which = usize::from(second);
                        surge.record_demand_in(cells[which]).expect("counted");
                        events.push((moved / slice_secs, which));
                    }
                    Step::SetClock(secs) => {
                        moved += secs.saturating_sub(reading);
                        reading = secs;
                        clock.set(Duration::from_secs(secs));
                    }
                }
                let now = moved / slice_secs;
                for (which, &cell) in cells.iter().enumerate() {
                    let expected = events
                        .iter()
                        .filter(|&&(slice, of)| of == which && now - slice < u64::from(slices))
                        .count() as u64;
                    prop_assert_eq!(surge.counts(cell).demand, expected);
                }
            }
        }
    }

    #[test]
    fn no_demand_is_one_and_demand_without_supply_is_the_cap_whatever_the_curve() {
        // A curve that starts above 1 and ends below its cap.
        let curve = SurgeCurve::new(&[(0.0, 1.2), (2.0, 1.5)], 3.0).expect("valid");
        let (surge, _) = surge(SurgeConfig {
            curve,
            neighbour_weight: 0.0,
            ..SurgeConfig::default()
        });
        let supplied = surge.record_supply(at(LAT, LNG)).expect("valid");
        let wanted = surge.record_demand(at(LAT + 0.05, LNG)).expect("valid");
        let quiet = surge.record_supply(at(LAT - 0.05, LNG)).expect("valid");
        assert_ne!(supplied, wanted);
        assert_eq!(surge.multiplier(supplied), 1.0, "supply, no demand");
        assert_eq!(surge.multiplier(quiet), 1.0, "supply, no demand");
        assert_eq!(surge.multiplier(wanted), 3.0, "demand, no supply");
        let empty = at(LAT + 0.1, LNG).cell(surge.config().resolution);
        assert_eq!(surge.multiplier(empty), 1.0, "no events at all");
        surge.record_demand(at(LAT, LNG)).expect("valid");
        let on_curve = surge.multiplier(supplied);
        assert!(
            (on_curve - 1.35).abs() < 1e-12,
            "ratio 1 on the curve: {on_curve}"
        );
    }

    #[test]
    fn the_curve_interpolates_from_one_to_its_points() {
        let curve = SurgeCurve::new(&[(2.0, 1.5), (4.0, 2.5)], 3.0).expect("valid");
        let cases = [
            (0.0, 1.0),
            (1.0, 1.25), // below the first point: from (0, 1) to (2, 1.5)
            (2.0, 1.5),  // at a point
            (3.0, 2.0),  // between points
            (4.0, 2.5),
            (9.0, 2.5), // beyond the last point
            (f64::INFINITY, 2.5),
            (f64::NAN, 1.0),
        ];
        for (ratio, expected) in cases {
            assert_eq!(curve.multiplier(ratio), expected, "ratio {ratio}");
        }
        // A first point at ratio 0 applies from 0; the cap bounds every value.
        let flat = SurgeCurve::new(&[(0.0, 1.2), (1.0, 4.0)], 2.0).expect("valid");
        assert_eq!(flat.multiplier(0.0), 1.2);
        assert_eq!(flat.multiplier(0.5), 2.0);
    }

    #[test]
    fn a_ratio_below_zero_reads_as_zero() {
        let from_zero = SurgeCurve::new(&[(0.0, 1.0), (1.0, 2.0)], 3.0).expect("valid");
        for curve in [SurgeCurve::default(), from_zero] {
            for ratio in [-1.0, -1e300, f64::NEG_INFINITY] {
                assert_eq!(curve.multiplier(ratio), 1.0, "{curve:?} at {ratio}");
            }
        }
    }
}
