//! Points on the sphere and exact great-circle distance.
//!
//! Distances are on a sphere of radius [`EARTH_RADIUS_M`], the mean Earth radius of the
//! IUGG. Inside the crate a point is also kept as a unit vector: comparing two candidates
//! then needs only the squared chord `|a - b|²`, which orders points as the great-circle
//! distance does (the arc increases with the chord), so the trigonometry runs once per result
//! rather than once per driver scanned. A returned distance is computed from the two vectors
//! as `atan2(|a × b|, a · b)`, which keeps its digits near the antipodes, where
//! `2·asin(chord / 2)` loses them (the chord's derivative vanishes there). At short range the
//! arc tangent comes from its series (see `exact_angle`).

use std::collections::HashSet;
use std::f64::consts::PI;

use h3o::{CellIndex, LatLng, Resolution};
use infra_common::RandomState;

use crate::Error;

/// The sphere's radius for every distance: the mean Earth radius, 6,371,008.8 m.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A validated position: latitude in [-90, 90] and longitude in [-180, 180] degrees, finite.
///
/// ```
/// use infra_geomatch::{Error, Point};
///
/// let paris = Point::new(48.8566, 2.3522)?;
/// let london = Point::new(51.5074, -0.1278)?;
/// assert!((paris.distance_m(london) - 343_560.0).abs() < 1_000.0);
/// assert!(matches!(Point::new(f64::NAN, 0.0), Err(Error::InvalidCoordinate { .. })));
/// assert!(Point::new(0.0, 180.5).is_err());
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    lat: f64,
    lng: f64,
}

impl Point {
    /// A point from degrees.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCoordinate`] if either value is not finite or out of range.
    pub fn new(lat: f64, lng: f64) -> Result<Self, Error> {
        if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lng) {
            Ok(Self { lat, lng })
        } else {
            // NaN fails `contains` too, so every non-finite value lands here.
            Err(Error::InvalidCoordinate { lat, lng })
        }
    }

    /// Latitude in degrees.
    ///
    /// ```
    /// # use infra_geomatch::Point;
    /// assert_eq!(Point::new(10.0, 20.0)?.lat(), 10.0);
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn lat(self) -> f64 {
        self.lat
    }

    /// Longitude in degrees.
    ///
    /// ```
    /// # use infra_geomatch::Point;
    /// assert_eq!(Point::new(10.0, 20.0)?.lng(), 20.0);
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn lng(self) -> f64 {
        self.lng
    }

    /// Great-circle distance in meters on the sphere of radius [`EARTH_RADIUS_M`].
    ///
    /// ```
    /// # use infra_geomatch::Point;
    /// // Across the antimeridian: 0.2 degrees of longitude on the equator.
    /// let west = Point::new(0.0, 179.9)?;
    /// let east = Point::new(0.0, -179.9)?;
    /// assert!((west.distance_m(east) - 22_239.0).abs() < 1.0);
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn distance_m(self, other: Self) -> f64 {
        distance_m(&self.unit(), &other.unit())
    }

    /// The H3 cell containing the point at `resolution`.
    ///
    /// ```
    /// # use infra_geomatch::Point;
    /// let cell = Point::new(48.8566, 2.3522)?.cell(h3o::Resolution::Nine);
    /// assert_eq!(cell.resolution(), h3o::Resolution::Nine);
    /// # Ok::<(), infra_geomatch::Error>(())
    /// ```
    pub fn cell(self, resolution: Resolution) -> CellIndex {
        self.lat_lng().to_cell(resolution)
    }

    fn lat_lng(self) -> LatLng {
        // Validated finite degrees always convert: h3o refuses only non-finite values.
        LatLng::new(self.lat, self.lng).expect("a validated point is finite")
    }

    pub(crate) fn unit(self) -> Unit {
        unit_from_radians(self.lat.to_radians(), self.lng.to_radians())
    }
}

/// A point of the unit sphere.
pub(crate) type Unit = [f64; 3];

/// The great-circle distance between two unit vectors in meters: what [`Point::distance_m`]
/// and every query result report, so both indexes and a caller's own reckoning agree to the
/// bit.
#[inline]
pub(crate) fn distance_m(a: &Unit, b: &Unit) -> f64 {
    exact_angle(a, b) * EARTH_RADIUS_M
}

pub(crate) fn unit_from_radians(lat: f64, lng: f64) -> Unit {
    let (sin_lat, cos_lat) = lat.sin_cos();
    let (sin_lng, cos_lng) = lng.sin_cos();
    [cos_lat * cos_lng, cos_lat * sin_lng, sin_lat]
}

pub(crate) fn unit_of(ll: LatLng) -> Unit {
    unit_from_radians(ll.lat_radians(), ll.lng_radians())
}

/// A unit vector in single precision, half the bytes of a [`Unit`]: the centers of the
/// neighbour circles a bucket keeps ([`CoarseCircle`]).
pub(crate) type CoarseUnit = [f32; 3];

/// `unit` rounded to single precision.
pub(crate) fn coarse(unit: &Unit) -> CoarseUnit {
    // `as` rounds to nearest, which the error bound of `CoarseCircle` assumes.
    [unit[0] as f32, unit[1] as f32, unit[2] as f32]
}

/// A driver's position as its bucket keeps it for a scan's coarse look: its offset from the
/// cell's center in units of the bucket's [`LocalFrame`], rounded to 16-bit integers. Six
/// bytes, half of three `f32`s, so a scan of a bucket reads half the cache lines; and in a
/// cell's own units the rounding is finer than single precision's (a unit is about 1 cm at
/// resolution 9, where a unit vector's `f32` steps are tens of centimeters). Decisions are
/// taken on the exact [`Unit`].
pub(crate) type LocalUnit = [i16; 3];

/// Frame units from a cell's center to the rim of its circumcircle: half the 16-bit range, so
/// a point twice as far, which no point of the cell is, still fits.
const FRAME_REACH: f64 = 16_384.0;

/// How far a [`LocalUnit`] may be from the offset it rounds, in frame units: half a unit per
/// component, √3/2 in all, rounded up.
const LOCAL_ROUNDING: f64 = 0.87;

/// The frame a bucket keeps its drivers' [`LocalUnit`]s in: its cell's circumcircle center,
/// and a scale putting the circle's rim [`FRAME_REACH`] units out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LocalFrame {
    center: Unit,
    /// Frame units per unit of chord.
    scale: f64,
}

impl LocalFrame {
    pub(crate) fn of(circle: &Circumcircle) -> Self {
        Self {
            center: circle.center,
            scale: FRAME_REACH / circle.chord,
        }
    }

    /// `unit` in the frame; `None` if it is too far from the center to be held, which no
    /// point of the cell is (`geo::tests::the_local_bound_holds`).
    pub(crate) fn encode(&self, unit: &Unit) -> Option<LocalUnit> {
        let mut local = [0; 3];
        for (axis, value) in local.iter_mut().enumerate() {
            let scaled = (unit[axis] - self.center[axis]) * self.scale;
            // Checked (a NaN fails too): `as` would saturate, and a saturated offset would lie.
            if scaled.abs() < f64::from(i16::MAX) {
                // Rounded to nearest by moving half a unit away from zero and truncating:
                // `round` is a library call on x86-64's baseline, and an update encodes three.
                *value = (scaled + 0.5f64.copysign(scaled)) as i16;
            } else {
                return None;
            }
        }
        Some(local)
    }

    /// A query point's offset in the frame, in single precision, for [`local_chord2`].
    #[inline]
    pub(crate) fn query(&self, unit: &Unit) -> [f32; 3] {
        std::array::from_fn(|axis| ((unit[axis] - self.center[axis]) * self.scale) as f32)
    }

    /// A bound on [`local_chord2`] that every pair of points at most `chord2` apart (an exact
    /// squared chord, infinite for no bound) stays within: a local chord above it rules the
    /// driver out, one at or below it says nothing.
    ///
    /// The local chord of a query at distance `D` (frame units) from a driver is off by the
    /// driver's rounding ([`LOCAL_ROUNDING`]), the query offset's rounding to single precision
    /// (2^-24 of each component, which are at most `D` plus the 16-bit range: under
    /// 1.1e-7 `D` + 0.01 in all), and the single-precision sum (a few units in its last
    /// place); the bound allows ten times the relative errors and one more unit.
    #[inline]
    pub(crate) fn bound(&self, chord2: f64) -> f32 {
        let reach = chord2.sqrt() * self.scale * (1.0 + 1e-6) + LOCAL_ROUNDING + 1.0;
        (reach * reach * (1.0 + 1e-5)) as f32
    }
}

/// Squared distance, in frame units, between a query's offset ([`LocalFrame::query`]) and a
/// driver's ([`LocalFrame::encode`]).
#[inline]
pub(crate) fn local_chord2(query: &[f32; 3], local: &LocalUnit) -> f32 {
    let dx = query[0] - f32::from(local[0]);
    let dy = query[1] - f32::from(local[1]);
    let dz = query[2] - f32::from(local[2]);
    dx * dx + dy * dy + dz * dz
}

/// Squared chord length between two unit vectors: 0 (same point) to 4 (antipodes).
///
/// Computed from the difference rather than as `2 - 2·a·b`, which would lose every digit
/// for points a few meters apart.
#[inline]
pub(crate) fn chord2(a: &Unit, b: &Unit) -> f64 {
    let dx = a[0] - b[0];
    let dy = a[1] - b[1];
    let dz = a[2] - b[2];
    dx * dx + dy * dy + dz * dz
}

/// The central angle, in radians, of a squared chord.
#[inline]
pub(crate) fn chord2_to_angle(chord2: f64) -> f64 {
    2.0 * (chord2.sqrt() * 0.5).min(1.0).asin()
}

/// Below this ratio of the sine of an angle to its cosine (an angle under about 1/64 rad,
/// 100 km on Earth), [`exact_angle`] sums the arc tangent's series, to terms in `t⁹`: the first
/// term left out, `t¹¹/11`, is under 1e-19 of the sum, far below its rounding.
const SERIES_TAN: f64 = 1.0 / 64.0;

/// The central angle, in radians, between two unit vectors: `atan2(|a × b|, a · b)`, which
/// keeps its digits near π, where the asin of the chord loses about half of them.
#[inline]
pub(crate) fn exact_angle(a: &Unit, b: &Unit) -> f64 {
    let c = cross(a, b);
    let (sin, cos) = (dot(&c, &c).sqrt(), dot(a, b));
    if sin < SERIES_TAN * cos {
        // The arc tangent of a small `t` by its series, in fewer instructions than the
        // library's `atan2`, and within a unit or two in the last place of it (three
        // roundings: the quotient, the sum and the product; the terms after the first
        // contribute under 1e-4 of the result, so their roundings do not show).
        let t = sin / cos;
        let u = t * t;
        t * (1.0 - u * (1.0 / 3.0 - u * (1.0 / 5.0 - u * (1.0 / 7.0 - u * (1.0 / 9.0)))))
    } else {
        sin.atan2(cos)
    }
}

/// The squared chord of a central angle, clamped to [0, π].
pub(crate) fn angle_to_chord2(angle: f64) -> f64 {
    let angle = angle.clamp(0.0, PI);
    let chord = 2.0 * (angle * 0.5).sin();
    chord * chord
}

pub(crate) fn angle(a: &Unit, b: &Unit) -> f64 {
    chord2_to_angle(chord2(a, b))
}

fn cross(a: &Unit, b: &Unit) -> Unit {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: &Unit, b: &Unit) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn normalized(v: Unit) -> Option<Unit> {
    let norm = dot(&v, &v).sqrt();
    (norm > 1e-15).then(|| [v[0] / norm, v[1] / norm, v[2] / norm])
}

/// The angle from `c` to the great-circle arc from `a` to `b` (shorter than π).
fn angle_to_arc(c: &Unit, a: &Unit, b: &Unit) -> f64 {
    let endpoints = angle(c, a).min(angle(c, b));
    let Some(normal) = normalized(cross(a, b)) else {
        return endpoints;
    };
    let off_plane = dot(c, &normal);
    let foot = [
        c[0] - off_plane * normal[0],
        c[1] - off_plane * normal[1],
        c[2] - off_plane * normal[2],
    ];
    // The foot of the perpendicular lies on the arc iff it is between a and b going the
    // same way round as the arc itself.
    if dot(&cross(a, &foot), &normal) >= 0.0 && dot(&cross(&foot, b), &normal) >= 0.0 {
        off_plane.abs().min(1.0).asin().min(endpoints)
    } else {
        endpoints
    }
}

/// Up to this many cells, [`SeenCells`] keeps them in a small table of its own, with no
/// allocation: for the two or three rings a query in a dense city walks (under 40 cells) that
/// costs less than a general hash set, and than searching a list from end to end.
const LISTED_CELLS: usize = 64;

/// The places of that table: twice the cells it takes, so a probe is short.
const TABLE_SLOTS: usize = 2 * LISTED_CELLS;

/// The cells a breadth-first walk has met, so each is taken once.
pub(crate) struct SeenCells {
    /// Every cell met so far, while there are at most [`LISTED_CELLS`], by open addressing
    /// (linear probing): 0, which no cell index is, marks a free place.
    table: [u64; TABLE_SLOTS],
    listed: usize,
    /// Every cell met so far, once there are more (`table` is then out of use).
    hashed: Option<HashSet<u64, RandomState>>,
}

impl SeenCells {
    /// Only `origin` seen.
    #[inline]
    pub(crate) fn new(origin: CellIndex) -> Self {
        let mut seen = Self {
            table: [0; TABLE_SLOTS],
            listed: 0,
            hashed: None,
        };
        seen.first_sight(origin);
        seen
    }

    /// Records `cell` as seen; whether it was not seen before.
    #[inline]
    pub(crate) fn first_sight(&mut self, cell: CellIndex) -> bool {
        let key = u64::from(cell);
        if let Some(hashed) = &mut self.hashed {
            return hashed.insert(key);
        }
        // Fibonacci hashing: the top bits of the product mix every bit of the index, where
        // neighbouring cells differ only in a few digits.
        let mut place = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            >> (u64::BITS - TABLE_SLOTS.trailing_zeros())) as usize;
        loop {
            match self.table[place] {
                0 => break,
                held if held == key => return false,
                _ => place = (place + 1) % TABLE_SLOTS,
            }
        }
        if self.listed < LISTED_CELLS {
            self.table[place] = key;
            self.listed += 1;
        } else {
            let mut hashed: HashSet<u64, RandomState> = self
                .table
                .iter()
                .copied()
                .filter(|&held| held != 0)
                .collect();
            hashed.insert(key);
            self.hashed = Some(hashed);
        }
        true
    }
}

/// The rings of cells around an origin, ring `d` being the cells at grid distance `d`.
///
/// Built breadth-first: ring `d + 1` is the neighbours of ring `d` not seen before. H3's fast
/// ring walk goes round a hexagonal path of fixed length and does not notice when, at coarse
/// resolutions or large distances, that path wraps around the globe: it then returns cells
/// twice and misses others. Breadth-first over a visited set cannot: each cell comes exactly
/// once, in the ring of its true grid distance, and the rings end when the globe is covered.
pub(crate) struct Rings {
    seen: SeenCells,
    ring: Vec<CellIndex>,
    /// The neighbours of one cell, reused.
    around: Vec<CellIndex>,
}

impl Rings {
    /// Ring 0: the origin alone.
    pub(crate) fn new(origin: CellIndex) -> Self {
        Self {
            seen: SeenCells::new(origin),
            ring: vec![origin],
            around: Vec::with_capacity(7),
        }
    }

    /// The current ring (empty once every cell has been returned).
    pub(crate) fn current(&self) -> &[CellIndex] {
        &self.ring
    }

    /// Moves to the next ring.
    pub(crate) fn advance(&mut self) {
        let ring = std::mem::take(&mut self.ring);
        let mut next = Vec::with_capacity(ring.len() + 6);
        let mut around = std::mem::take(&mut self.around);
        for cell in &ring {
            neighbours(*cell, &mut around);
            for &neighbour in &around {
                if self.seen.first_sight(neighbour) {
                    next.push(neighbour);
                }
            }
        }
        self.around = around;
        self.ring = next;
    }
}

/// `cell` and the cells sharing an edge with it, into `out` (cleared first).
pub(crate) fn neighbours(cell: CellIndex, out: &mut Vec<CellIndex>) {
    out.clear();
    // The fast walk gives up (`None`) where a pentagon distorts the grid; one step from a
    // cell it cannot wrap around the globe, so when it does not give up it is exact.
    for neighbour in cell.grid_disk_fast(1) {
        let Some(neighbour) = neighbour else {
            out.clear();
            out.extend(cell.grid_disk_safe(1));
            return;
        };
        out.push(neighbour);
    }
}

/// Slack added to every geometric bound, in radians (about 6 mm): a million times the rounding
/// of h3o's cell boundaries and of our vector arithmetic (a few units in the last place of
/// values near 1), so a point a rounding error outside its cell's polygon still counts as inside
/// the outer bound, and yet well below the inscribed radius of the finest cells (resolution 15
/// pentagons: about 0.3 m). It only ever makes a query look at more cells, never fewer.
const SLACK_RAD: f64 = 1e-9;

/// A circle holding a whole cell, as a center and a chord: what bounds the distance from a
/// point to the cell from below.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Circumcircle {
    center: Unit,
    /// The chord of the circle's radius: no point of the cell is farther from the center in
    /// 3D.
    chord: f64,
}

impl Circumcircle {
    /// The circle of `cell` (see [`CellGeometry`]): its center, and a radius of its largest
    /// center-to-vertex angle plus slack.
    pub(crate) fn of(cell: CellIndex) -> Self {
        let center = unit_of(LatLng::from(cell));
        let outer = cell
            .boundary()
            .iter()
            .map(|vertex| angle(&center, &unit_of(*vertex)))
            .fold(0.0, f64::max);
        Self::around(center, outer)
    }

    /// The circle about `center` reaching `angle` plus slack.
    fn around(center: Unit, angle: f64) -> Self {
        Self {
            center,
            chord: angle_to_chord2(angle + SLACK_RAD).sqrt(),
        }
    }

    /// A lower bound on the chord (straight 3D distance between unit vectors) from `p` to any
    /// point of the cell: by the triangle inequality in 3D, the chord to the center less the
    /// largest chord from the center to a point of the cell. The chord grows with the arc, so
    /// comparing chords orders points as comparing arcs does, without an arc sine.
    #[inline]
    pub(crate) fn min_chord_from(&self, p: &Unit) -> f64 {
        chord2(p, &self.center).sqrt() - self.chord
    }
}

/// A [`Circumcircle`] in single precision, 16 bytes rather than 32: what a bucket keeps of
/// each neighbour, so its six neighbours take fewer cache lines for a query to read. Its bound
/// is lower than the exact circle's by the rounding, never higher.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CoarseCircle {
    center: CoarseUnit,
    /// The exact circle's chord rounded up.
    chord: f32,
}

/// How far a [`CoarseUnit`] lies from the unit vector it rounds: √3 · 6e-8, rounded up.
const COARSE_UNIT_ERROR: f64 = 1.1e-7;

impl CoarseCircle {
    pub(crate) fn of(circle: &Circumcircle) -> Self {
        let chord = circle.chord as f32;
        Self {
            center: coarse(&circle.center),
            chord: if f64::from(chord) < circle.chord {
                chord.next_up()
            } else {
                chord
            },
        }
    }

    /// The squared chord from `p` to the center.
    #[inline]
    pub(crate) fn chord2_to_center(&self, p: &Unit) -> f64 {
        chord2(p, &self.center.map(f64::from))
    }

    /// A lower bound on the chord from `p` to any point of the cell: that of the exact circle
    /// ([`Circumcircle::min_chord_from`]) less the rounding of the center, so never above it.
    #[inline]
    pub(crate) fn min_chord_from(&self, p: &Unit) -> f64 {
        self.chord2_to_center(p).sqrt() - f64::from(self.chord) - COARSE_UNIT_ERROR
    }
}

/// What the queries need to know of a cell's shape: its center and two circles around it.
///
/// H3 cell edges are great-circle arcs (straight lines in the gnomonic projection of an
/// icosahedron face), so a cell is the spherical polygon of its boundary vertices, star-shaped
/// around its center. Every point of the cell is then within `outer` of the center (the farthest
/// point of an arc shorter than π from a point is one of its ends), and every point within
/// `inner` of the center is in the cell.
///
/// Laid out in the order written (`repr(C)`): the center and the inner circle, which every
/// update reads, come first; the edge planes, read near the edges only, after them.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct CellGeometry {
    /// The center, and the chord of `outer`.
    circumcircle: Circumcircle,
    /// Squared chord of the smallest center-to-edge angle, less slack (0 if degenerate).
    inner_chord2: f64,
    /// Largest center-to-vertex angle, plus slack.
    outer: f64,
    /// For a hexagon on one icosahedron face: the unit normals of its six edges' planes,
    /// pointing inwards. Such a cell is a straight hexagon in the face's gnomonic projection,
    /// hence convex on the sphere: the points on the inner side of every edge plane are the
    /// cell. The inner circle misses the corners, about a tenth of the cell, and every update
    /// there would otherwise ask H3 for the cell. `None` for pentagons and for hexagons that
    /// cross a face edge (whose edges bend there); they keep the circle alone.
    edges: Option<[Unit; 6]>,
}

impl CellGeometry {
    pub(crate) fn of(cell: CellIndex) -> Self {
        let center = unit_of(LatLng::from(cell));
        let vertices: Vec<Unit> = cell.boundary().iter().map(|v| unit_of(*v)).collect();
        let mut outer: f64 = 0.0;
        let mut inner = f64::INFINITY;
        for (i, a) in vertices.iter().enumerate() {
            let b = &vertices[(i + 1) % vertices.len()];
            outer = outer.max(angle(&center, a));
            inner = inner.min(angle_to_arc(&center, a, b));
        }
        Self {
            circumcircle: Circumcircle::around(center, outer),
            outer: outer + SLACK_RAD,
            inner_chord2: angle_to_chord2(inner - SLACK_RAD),
            edges: edge_planes(cell, &center, &vertices),
        }
    }

    /// The circle holding the cell.
    pub(crate) fn circumcircle(&self) -> Circumcircle {
        self.circumcircle
    }

    /// A lower bound on the angle from `p` to any point of the cell. The angle to the center
    /// is the arc tangent's: half the globe away, the arc sine of the chord would keep only
    /// half its digits (tenths of a meter), and the bound could rise above a point of the cell.
    #[inline]
    pub(crate) fn min_angle_from(&self, p: &Unit) -> f64 {
        exact_angle(p, &self.circumcircle.center) - self.outer
    }

    /// A lower bound on the chord from `p` to any point of the cell
    /// ([`Circumcircle::min_chord_from`]).
    #[inline]
    pub(crate) fn min_chord_from(&self, p: &Unit) -> f64 {
        self.circumcircle.min_chord_from(p)
    }

    /// Whether `p` is certainly inside the cell (false says nothing): inside the inner circle,
    /// or farther than the slack inside every edge plane.
    #[inline]
    pub(crate) fn surely_contains(&self, p: &Unit) -> bool {
        chord2(p, &self.circumcircle.center) < self.inner_chord2
            || self
                .edges
                .as_ref()
                .is_some_and(|normals| normals.iter().all(|normal| dot(p, normal) > SLACK_RAD))
    }
}

/// The inward unit normals of a hexagon's edge planes ([`CellGeometry::edges`]), if the cell
/// lies on one icosahedron face.
fn edge_planes(cell: CellIndex, center: &Unit, vertices: &[Unit]) -> Option<[Unit; 6]> {
    if cell.is_pentagon() || cell.icosahedron_faces().len() != 1 || vertices.len() != 6 {
        return None;
    }
    let mut normals = [[0.0; 3]; 6];
    for (i, a) in vertices.iter().enumerate() {
        let b = &vertices[(i + 1) % vertices.len()];
        // `a × (b - a)` is `a × b` without the cancellation of two nearly parallel vectors: the
        // normal of a short edge keeps full precision at every resolution.
        let normal = normalized(cross(a, &[b[0] - a[0], b[1] - a[1], b[2] - a[2]]))?;
        // The center is inside, well away from every edge: it fixes the inner side.
        let side = dot(center, &normal);
        if side.abs() <= SLACK_RAD {
            return None;
        }
        normals[i] = if side > 0.0 {
            normal
        } else {
            [-normal[0], -normal[1], -normal[2]]
        };
    }
    Some(normals)
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Haversine from the textbook formula, independent of the vector form above.
    fn haversine_m(a: (f64, f64), b: (f64, f64)) -> f64 {
        let (lat1, lat2) = (a.0.to_radians(), b.0.to_radians());
        let dlat = lat2 - lat1;
        let dlng = (b.1 - a.1).to_radians();
        let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlng / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
    }

    #[test]
    fn bad_coordinates_are_refused() {
        for (lat, lng) in [
            (f64::NAN, 0.0),
            (0.0, f64::NAN),
            (f64::INFINITY, 0.0),
            (0.0, f64::NEG_INFINITY),
            (90.000_001, 0.0),
            (-90.5, 0.0),
            (0.0, 180.000_001),
            (0.0, -181.0),
        ] {
            assert!(
                matches!(Point::new(lat, lng), Err(Error::InvalidCoordinate { .. })),
                "({lat}, {lng}) accepted"
            );
        }
        for (lat, lng) in [(90.0, 180.0), (-90.0, -180.0), (0.0, 0.0)] {
            assert!(Point::new(lat, lng).is_ok());
        }
    }

    fn anywhere() -> impl Strategy<Value = Point> {
        (-90.0f64..=90.0, -180.0f64..=180.0).prop_map(|(lat, lng)| Point::new(lat, lng).unwrap())
    }

    /// A point near a cell's center, near its edges or just outside.
    fn near_cells() -> impl Strategy<Value = (Point, Resolution)> {
        (anywhere(), 0u8..=15).prop_map(|(p, r)| (p, Resolution::try_from(r).unwrap()))
    }

    /// Anywhere, or within a degree of a pole or of the antimeridian, where longitudes and
    /// cells wrap.
    fn anywhere_or_where_it_wraps() -> impl Strategy<Value = Point> {
        (0u8..3, anywhere(), -1.0f64..=1.0).prop_map(|(place, p, offset)| match place {
            0 => p,
            1 => Point::new((90.0 - offset.abs()).copysign(p.lat()), p.lng()).unwrap(),
            _ => {
                let lng = if offset < 0.0 {
                    180.0 + offset
                } else {
                    -180.0 + offset
                };
                Point::new(p.lat(), lng).unwrap()
            }
        })
    }

    /// A point of `cell`'s polygon: in the spherical triangle of its center and the edge from
    /// vertex `edge` to the next, at weights `a` and `b` of the two vertices.
    fn point_of(cell: CellIndex, edge: usize, a: f64, b: f64) -> Unit {
        let center = unit_of(LatLng::from(cell));
        let boundary = cell.boundary();
        let vertices: Vec<Unit> = boundary.iter().map(|v| unit_of(*v)).collect();
        let (v, w) = (
            vertices[edge % vertices.len()],
            vertices[(edge + 1) % vertices.len()],
        );
        let (a, b) = if a + b > 1.0 {
            (1.0 - a, 1.0 - b)
        } else {
            (a, b)
        };
        let c = 1.0 - a - b;
        normalized([
            c * center[0] + a * v[0] + b * w[0],
            c * center[1] + a * v[1] + b * w[1],
            c * center[2] + a * v[2] + b * w[2],
        ])
        .expect("a cell's triangle does not hold the origin")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn distance_is_the_haversine(a in anywhere(), b in anywhere()) {
            let ours = a.distance_m(b);
            let reference = haversine_m((a.lat(), a.lng()), (b.lat(), b.lng()));
            prop_assert!((ours - reference).abs() <= 1e-6 * reference.max(1.0), "{ours} vs {reference}");
        }

        /// The two circles hold for points H3 puts in a cell: the outer one contains them, and
        /// points inside the inner one are put in the cell.
        #[test]
        fn cell_circles_bound_the_cell((p, res) in near_cells(), bearing in 0.0f64..std::f64::consts::TAU, frac in 0.0f64..1.0) {
            let cell = p.cell(res);
            let geometry = CellGeometry::of(cell);
            prop_assert!(angle(&p.unit(), &geometry.circumcircle.center) <= geometry.outer);
            // A point at `frac` of the inner radius, in direction `bearing`.
            let inner = chord2_to_angle(geometry.inner_chord2) * frac;
            let center = LatLng::from(cell);
            let (lat, lng) = destination(center.lat_radians(), center.lng_radians(), bearing, inner);
            let q = unit_from_radians(lat, lng);
            let ll = LatLng::from_radians(lat, lng).unwrap();
            prop_assert!(geometry.surely_contains(&q) || frac > 0.999);
            prop_assert_eq!(ll.to_cell(res), cell);
        }

        /// What `surely_contains` accepts, H3 puts in the cell: points anywhere in the cell and
        /// in its neighbours (near their shared edges when the weights add up to about 1).
        #[test]
        fn a_sure_point_is_in_the_cell((p, res) in near_cells(), edge in 0usize..6, a in 0.0f64..=1.0, b in 0.0f64..=1.0) {
            let cell = p.cell(res);
            let geometry = CellGeometry::of(cell);
            let mut around = Vec::new();
            neighbours(cell, &mut around);
            for &owner in &around {
                let q = point_of(owner, edge, a, b);
                if geometry.surely_contains(&q) {
                    prop_assert_eq!(lat_lng_of(&q).to_cell(res), cell, "a point of {}", owner);
                }
            }
        }

        /// The coarse look never rules out a point within reach: a point of a cell (at every
        /// resolution, and wherever on the globe) fits its bucket's frame, and its local squared
        /// chord from a query point stays within the bound of the exact squared chord, for
        /// query points anywhere and a few meters to a few kilometers away.
        #[test]
        fn the_local_bound_holds(p in anywhere_or_where_it_wraps(), q in anywhere_or_where_it_wraps(), resolution in 0u8..16, near in 0.0f64..1.0, scale in 0i32..6) {
            let resolution = Resolution::try_from(resolution).unwrap();
            let frame = LocalFrame::of(&Circumcircle::of(p.cell(resolution)));
            let (p, q) = (p.unit(), q.unit());
            let local = frame.encode(&p);
            prop_assert!(local.is_some(), "a point of the cell out of its frame");
            let local = local.unwrap();
            // `q` pulled toward `p`, to `near` of 10^-scale of the way.
            let t = near * 10f64.powi(-scale);
            let close = normalized([
                p[0] + t * (q[0] - p[0]),
                p[1] + t * (q[1] - p[1]),
                p[2] + t * (q[2] - p[2]),
            ]).unwrap_or(p);
            for query in [q, close] {
                let exact = chord2(&p, &query);
                let rough = local_chord2(&frame.query(&query), &local);
                prop_assert!(rough <= frame.bound(exact), "{rough} above {} for {exact}", frame.bound(exact));
            }
        }

        /// The squared chord orders points as the great-circle distance does: whenever the
        /// haversine tells two points apart by more than its own rounding, the chord agrees.
        #[test]
        fn chords_order_points_as_arcs_do(q in anywhere_or_where_it_wraps(), a in anywhere_or_where_it_wraps(), near in 0.0f64..1.0, b in anywhere_or_where_it_wraps()) {
            // Half the cases compare two points close to the query, as a city's drivers are.
            let blend = |p: Point| if near < 0.5 {
                Point::new(q.lat() + (p.lat() - q.lat()) * 1e-4, q.lng() + (p.lng() - q.lng()) * 1e-4).unwrap()
            } else {
                p
            };
            let (a, b) = (blend(a), blend(b));
            let da = haversine_m((q.lat(), q.lng()), (a.lat(), a.lng()));
            let db = haversine_m((q.lat(), q.lng()), (b.lat(), b.lng()));
            let (ca, cb) = (chord2(&q.unit(), &a.unit()), chord2(&q.unit(), &b.unit()));
            if da + 1e-6 * da.max(1.0) < db {
                prop_assert!(ca < cb, "{da} m < {db} m but chords {ca} >= {cb}");
            }
            if db + 1e-6 * db.max(1.0) < da {
                prop_assert!(cb < ca, "{db} m < {da} m but chords {cb} >= {ca}");
            }
        }

        /// The bound a query puts on a cell it has not looked at (from the circle a neighbour's
        /// bucket keeps) is never above the chord to any point of the cell, for the cells up
        /// to two rings around the query's, poles, antimeridian and pentagons included.
        #[test]
        fn a_cell_bound_is_never_above_the_true_distance(q in anywhere_or_where_it_wraps(), res in 0u8..=15, pick in 0usize..19, edge in 0usize..6, a in 0.0f64..=1.0, b in 0.0f64..=1.0) {
            let res = Resolution::try_from(res).unwrap();
            let mut rings = Rings::new(q.cell(res));
            let mut cells = Vec::new();
            for _ in 0..3 {
                cells.extend_from_slice(rings.current());
                rings.advance();
            }
            let cell = cells[pick % cells.len()];
            let circle = Circumcircle::of(cell);
            let bound = circle.min_chord_from(&q.unit());
            let p = point_of(cell, edge, a, b);
            prop_assert!(bound <= chord2(&q.unit(), &p).sqrt(), "bound {bound} above the chord to a point of {cell}");
            // The single-precision circle a bucket keeps of a neighbour bounds lower still.
            let kept = CoarseCircle::of(&circle).min_chord_from(&q.unit());
            prop_assert!(kept <= bound, "kept bound {kept} above {bound} for {cell}");
            // The cell's own geometry has the very circle its neighbours' buckets round.
            let own = CellGeometry::of(cell).circumcircle();
            prop_assert_eq!(own.center, circle.center);
            prop_assert_eq!(own.chord.to_bits(), circle.chord.to_bits());
        }
    }

    /// The series that stands in for `atan2` at short range differs from it by at most two
    /// units in the last place, on both sides of where it takes over and down to millimeters.
    #[test]
    fn the_short_range_angle_is_the_arc_tangent() {
        let mut worst: f64 = 0.0;
        for i in 0..20_000u32 {
            let t = f64::from(i);
            let lat = -85.0 + (t * 0.618_033_988_7).fract() * 170.0;
            let lng = -180.0 + (t * 0.414_213_562_3).fract() * 360.0;
            // From about 1e-8 to 2e-1 rad (6 cm to 1,300 km), in any direction.
            let angle = 10f64.powf(-8.0 + (t * 0.732_050_807_5).fract() * 7.3);
            let bearing = (t * 0.236_067_977_5).fract() * std::f64::consts::TAU;
            let (lat2, lng2) = destination(lat.to_radians(), lng.to_radians(), bearing, angle);
            let (a, b) = (
                unit_from_radians(lat.to_radians(), lng.to_radians()),
                unit_from_radians(lat2, lng2),
            );
            let c = cross(&a, &b);
            let library = dot(&c, &c).sqrt().atan2(dot(&a, &b));
            let ours = exact_angle(&a, &b);
            worst = worst.max((ours - library).abs() / (library * f64::EPSILON));
        }
        assert!(worst <= 2.0, "{worst} units in the last place");
    }

    /// Each cell is a first sight once, whether the walk met it while the cells were in the
    /// small table or after they moved to a hash set, and cells met before the move stay seen.
    #[test]
    fn each_cell_is_seen_once() {
        let origin = Point::new(40.7128, -74.006).unwrap().cell(Resolution::Nine);
        let disk: Vec<CellIndex> = origin.grid_disk_safe(9).collect();
        assert!(disk.len() > 4 * LISTED_CELLS);
        let mut seen = SeenCells::new(origin);
        let mut first = 1;
        for round in 0..2 {
            for (i, &cell) in disk.iter().enumerate() {
                let new = seen.first_sight(cell);
                assert_eq!(
                    new,
                    round == 0 && cell != origin,
                    "{cell}, {i} in round {round}"
                );
                first += usize::from(new);
                // Every cell met so far is still seen, before and after the move.
                if round == 0 && i % 16 == 0 {
                    assert!(disk[..=i].iter().all(|&met| !seen.first_sight(met)));
                }
            }
            assert!(seen.hashed.is_some());
        }
        assert_eq!(first, disk.len());
    }

    /// The point at `angle` from (lat, lng) in direction `bearing` (radians).
    fn destination(lat: f64, lng: f64, bearing: f64, angle: f64) -> (f64, f64) {
        let lat2 = (lat.sin() * angle.cos() + lat.cos() * angle.sin() * bearing.cos()).asin();
        let lng2 = lng
            + (bearing.sin() * angle.sin() * lat.cos()).atan2(angle.cos() - lat.sin() * lat2.sin());
        (lat2, lng2)
    }

    /// The spherical Vincenty formula from latitudes and longitudes: well conditioned at
    /// every angle, antipodes included, and independent of the vector form above.
    fn vincenty_m(a: (f64, f64), b: (f64, f64)) -> f64 {
        let (p1, p2) = (a.0.to_radians(), b.0.to_radians());
        let dl = (b.1 - a.1).to_radians();
        let y = ((p2.cos() * dl.sin()).powi(2)
            + (p1.cos() * p2.sin() - p1.sin() * p2.cos() * dl.cos()).powi(2))
        .sqrt();
        let x = p1.sin() * p2.sin() + p1.cos() * p2.cos() * dl.cos();
        EARTH_RADIUS_M * y.atan2(x)
    }

    /// Near the antipodes the arc from the chord (`2·asin(c / 2)`) loses about half its
    /// digits, tenths of a meter at Earth's radius; the returned distance must not.
    #[test]
    fn near_antipodal_distances_are_exact() {
        let mut worst: f64 = 0.0;
        for i in 0..2_000u32 {
            let t = f64::from(i);
            let lat = -80.0 + (t * 0.618_033_988_7).fract() * 160.0;
            let lng = -170.0 + (t * 0.414_213_562_3).fract() * 340.0;
            // Within about 1e-7 to 1e-3 degrees of the exact antipode.
            let off = 10f64.powf(-7.0 + (t * 0.732_050_807_5).fract() * 4.0);
            let b_lng = if lng > 0.0 { lng - 180.0 } else { lng + 180.0 };
            let (a, b) = ((lat, lng), (-lat + off, b_lng - off * 0.7));
            let ours = Point::new(a.0, a.1)
                .unwrap()
                .distance_m(Point::new(b.0, b.1).unwrap());
            worst = worst.max((ours - vincenty_m(a, b)).abs());
        }
        assert!(worst < 1e-6, "worst difference {worst} m");
    }

    /// The circles a pentagon's bucket keeps for its five neighbours, and theirs for it, hold
    /// every vertex of those cells.
    #[test]
    fn circles_around_pentagons_hold_their_cells() {
        let mut around = Vec::new();
        for res in 0..=15u8 {
            let res = Resolution::try_from(res).unwrap();
            for pentagon in res.pentagons() {
                neighbours(pentagon, &mut around);
                assert_eq!(around.len(), 6, "{pentagon} and its five neighbours");
                for &cell in &around {
                    let circle = Circumcircle::of(cell);
                    for vertex in cell.boundary().iter() {
                        let v = unit_of(*vertex);
                        assert!(chord2(&v, &circle.center).sqrt() <= circle.chord);
                        assert!(circle.min_chord_from(&v) <= 0.0);
                    }
                }
            }
        }
    }

    /// The walk's two facts about the grid: `neighbours` gives exactly H3's cells at grid
    /// distance one (its fast path included), and the cells meeting at any vertex are all
    /// neighbours of each other, so a path from cell to cell steps only between neighbours.
    /// Every cell of resolutions 0 to 2, and the cells around every pentagon at every
    /// resolution.
    #[test]
    fn neighbours_are_the_cells_sharing_an_edge_or_a_vertex() {
        let mut cells: Vec<CellIndex> = Vec::new();
        for res in 0..=2u8 {
            let res = Resolution::try_from(res).unwrap();
            cells.extend(CellIndex::base_cells().flat_map(|base| base.children(res)));
        }
        for res in 0..=15u8 {
            for pentagon in Resolution::try_from(res).unwrap().pentagons() {
                cells.extend(pentagon.grid_disk_safe(2));
            }
        }
        let mut around = Vec::new();
        // Cells by vertex, to about 6 mm (far below the shortest edge, 0.5 m at resolution 15).
        let mut at_vertex: std::collections::HashMap<(Resolution, [i64; 3]), Vec<CellIndex>> =
            std::collections::HashMap::new();
        for &cell in &cells {
            neighbours(cell, &mut around);
            let mut ours = around.clone();
            let mut theirs: Vec<CellIndex> = cell.grid_disk_safe(1).collect();
            ours.sort_unstable();
            theirs.sort_unstable();
            assert_eq!(ours, theirs, "{cell}");
            for vertex in cell.boundary().iter() {
                let key = unit_of(*vertex).map(|x| (x * 1e9).round() as i64);
                let cells = at_vertex.entry((cell.resolution(), key)).or_default();
                if !cells.contains(&cell) {
                    cells.push(cell);
                }
            }
        }
        let shared = at_vertex.values().filter(|cells| cells.len() > 1).count();
        assert!(shared > 10_000, "only {shared} shared vertices found");
        for cells in at_vertex.values() {
            for &a in cells {
                for &b in cells {
                    assert!(
                        a == b || a.is_neighbor_with(b).unwrap(),
                        "{a} and {b} share a vertex"
                    );
                }
            }
        }
    }

    /// A unit vector back to latitude and longitude, for H3.
    fn lat_lng_of(u: &Unit) -> LatLng {
        LatLng::from_radians(u[2].clamp(-1.0, 1.0).asin(), u[1].atan2(u[0])).unwrap()
    }

    /// Near a hexagon's corners, outside its inner circle, a position is known to be in the
    /// cell from the edge planes, without H3.
    #[test]
    fn hexagon_corners_are_sure_from_the_edge_planes() {
        for (lat, lng) in [
            (40.7128, -74.006),
            (-33.86, 151.2),
            (64.1, -21.9),
            (0.0, 179.99),
        ] {
            for res in [5u8, 9, 12, 15] {
                let cell = Point::new(lat, lng)
                    .unwrap()
                    .cell(Resolution::try_from(res).unwrap());
                let geometry = CellGeometry::of(cell);
                assert!(geometry.edges.is_some(), "{cell} has no edge planes");
                for vertex in 0..6 {
                    let corner = point_of(cell, vertex, 0.95, 0.0);
                    assert!(chord2(&corner, &geometry.circumcircle.center) > geometry.inner_chord2);
                    assert!(geometry.surely_contains(&corner), "{cell} corner {vertex}");
                    assert_eq!(lat_lng_of(&corner).to_cell(cell.resolution()), cell);
                }
            }
        }
    }

    #[test]
    fn pentagons_have_sound_circles() {
        for res in 0..=15u8 {
            let res = Resolution::try_from(res).unwrap();
            for pentagon in res.pentagons() {
                let geometry = CellGeometry::of(pentagon);
                assert!(chord2_to_angle(geometry.inner_chord2) > 0.0);
                for vertex in pentagon.boundary().iter() {
                    let v = unit_of(*vertex);
                    assert!(angle(&v, &geometry.circumcircle.center) <= geometry.outer);
                    assert!(!geometry.surely_contains(&v));
                }
            }
        }
    }

    /// `unit` as the index takes a query point: degrees, then a unit vector and H3's cell.
    fn as_point(u: &Unit) -> Point {
        let ll = lat_lng_of(u);
        Point::new(ll.lat().clamp(-90.0, 90.0), ll.lng().clamp(-180.0, 180.0)).unwrap()
    }

    /// Fails unless every cell of `candidates` that `surely_contains` a point of `points`
    /// is the cell H3 gives that point.
    fn check_sure_points(res: Resolution, candidates: &[CellIndex], points: &[Point]) {
        for &cell in candidates {
            let geometry = CellGeometry::of(cell);
            for &p in points {
                if geometry.surely_contains(&p.unit()) {
                    assert_eq!(p.cell(res), cell, "({}, {}) at {res}", p.lat(), p.lng());
                }
            }
        }
    }

    /// Points on and just off `cell`'s vertices and edges, and its center.
    fn outline_points(cell: CellIndex) -> Vec<Point> {
        let vertices: Vec<Unit> = cell.boundary().iter().map(|v| unit_of(*v)).collect();
        let mut points = vec![as_point(&unit_of(LatLng::from(cell)))];
        for (i, a) in vertices.iter().enumerate() {
            let b = &vertices[(i + 1) % vertices.len()];
            for t in [0.0, 1e-9, 0.25, 0.5, 0.999_999] {
                if let Some(u) = normalized([
                    a[0] + t * (b[0] - a[0]),
                    a[1] + t * (b[1] - a[1]),
                    a[2] + t * (b[2] - a[2]),
                ]) {
                    points.push(as_point(&u));
                }
            }
        }
        points
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// What the locator offers `surely_contains` is any point whose square shares a slot
        /// with the guessed cell's: a point anywhere, not only near the cell. Whatever cell it
        /// is asked about (the point's own, its neighbours two rings out, a far point's), a
        /// cell that surely contains a point is H3's cell of it: points anywhere, near the
        /// poles and the antimeridian, on cell vertices and edges, at every resolution.
        #[test]
        fn a_sure_point_is_in_the_cell_wherever_it_lies(p in anywhere_or_where_it_wraps(), q in anywhere(), res in 0u8..=15) {
            let res = Resolution::try_from(res).unwrap();
            let own = p.cell(res);
            let mut candidates: Vec<CellIndex> = own.grid_disk_safe(2).collect();
            candidates.push(q.cell(res));
            let mut points = vec![p, q];
            for &cell in &candidates[..7.min(candidates.len())] {
                points.extend(outline_points(cell));
            }
            check_sure_points(res, &candidates, &points);
        }
    }

    /// The poles, the antimeridian at exactly ±180, and every pentagon with the cells two
    /// rings around it, at every resolution: points on their outlines and the special points
    /// against every cell around.
    #[test]
    fn sure_points_hold_at_poles_antimeridian_and_pentagons() {
        let mut special = Vec::new();
        for lng in [-180.0, -179.999_999, -90.0, 0.0, 45.0, 179.999_999, 180.0] {
            special.push(Point::new(90.0, lng).unwrap());
            special.push(Point::new(-90.0, lng).unwrap());
        }
        for lat in [-89.999_999, -60.0, -1e-12, 0.0, 33.3, 89.999_999] {
            special.push(Point::new(lat, 180.0).unwrap());
            special.push(Point::new(lat, -180.0).unwrap());
        }
        for res in 0..=15u8 {
            let res = Resolution::try_from(res).unwrap();
            let mut candidates: Vec<CellIndex> = Vec::new();
            for p in &special {
                candidates.extend(p.cell(res).grid_disk_safe(1));
            }
            for pentagon in res.pentagons() {
                candidates.extend(pentagon.grid_disk_safe(2));
            }
            candidates.sort_unstable();
            candidates.dedup();
            let mut points = special.clone();
            for &cell in &candidates {
                points.extend(outline_points(cell));
            }
            // Each cell against the points near it (all pairs would be quadratic).
            for &cell in &candidates {
                let center = unit_of(LatLng::from(cell));
                let near: Vec<Point> = points
                    .iter()
                    .copied()
                    .filter(|p| chord2(&p.unit(), &center) < 0.5)
                    .collect();
                check_sure_points(res, &[cell], &near);
            }
        }
    }

    /// Cells on and beside the edges of the icosahedron's faces, where H3 changes the face it
    /// projects on and a hexagon's edges bend: points along each face edge (between two of
    /// the twelve pentagon centers of resolution 0 a face's side apart), and the outlines of
    /// the cells around them, against every cell two rings around, at every resolution.
    #[test]
    fn sure_points_hold_along_icosahedron_edges() {
        let vertices: Vec<Unit> = Resolution::Zero
            .pentagons()
            .map(|cell| unit_of(LatLng::from(cell)))
            .collect();
        let mut along = Vec::new();
        for (i, a) in vertices.iter().enumerate() {
            for b in &vertices[i + 1..] {
                // Neighbouring vertices of an icosahedron are about 63.4° apart.
                if angle(a, b) > 1.2 {
                    continue;
                }
                for t in [0.05, 0.23, 0.5, 0.77] {
                    along.push(
                        normalized([
                            a[0] + t * (b[0] - a[0]),
                            a[1] + t * (b[1] - a[1]),
                            a[2] + t * (b[2] - a[2]),
                        ])
                        .unwrap(),
                    );
                }
            }
        }
        assert_eq!(along.len(), 30 * 4, "an icosahedron has 30 edges");
        for res in 0..=15u8 {
            let res = Resolution::try_from(res).unwrap();
            for u in &along {
                let p = as_point(u);
                let candidates: Vec<CellIndex> = p.cell(res).grid_disk_safe(2).collect();
                let mut points = vec![p];
                for &cell in &candidates {
                    points.extend(outline_points(cell));
                }
                check_sure_points(res, &candidates, &points);
            }
        }
    }
}
