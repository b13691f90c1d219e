//! A synthetic city for the geomatch examples, their quality test and the matching benchmark:
//! drivers spread evenly over a 20 km × 20 km square, requests crowding into five hot spots.
//!
//! Everything comes from a seed through a small fixed generator (SplitMix64), so a seed is
//! the same city on every machine and in every release.

use std::f64::consts::PI;

use infra_geomatch::Point;

/// The city's centre (degrees).
pub(crate) const CENTRE: (f64, f64) = (52.52, 13.405);
/// Half the side of the city's square, in meters.
pub(crate) const HALF_SIDE_M: f64 = 10_000.0;
/// Meters per degree of latitude (mean).
const M_PER_DEGREE: f64 = 111_320.0;

/// Hot spots: offset from the centre in meters (east, north), spread (standard deviation)
/// in meters, and share of the hot-spot demand.
pub(crate) const HOT_SPOTS: [((f64, f64), f64, f64); 5] = [
    ((0.0, 0.0), 700.0, 0.30),           // central station
    ((3_000.0, -2_000.0), 600.0, 0.20),  // stadium
    ((-4_000.0, 1_500.0), 800.0, 0.20),  // old town
    ((1_500.0, 5_000.0), 500.0, 0.15),   // airport
    ((-2_500.0, -4_500.0), 600.0, 0.15), // university
];
/// The share of requests drawn from the hot spots; the rest are spread evenly.
pub(crate) const HOT_SHARE: f64 = 0.75;

/// A deterministic generator (SplitMix64, Steele, Lea and Flood 2014).
#[derive(Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub(crate) fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit(); // (0, 1]: the logarithm stays finite
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * PI * v).cos()
    }
}

/// The point `east` and `north` meters from the centre.
pub(crate) fn offset(east: f64, north: f64) -> Point {
    let lat = CENTRE.0 + north / M_PER_DEGREE;
    let lng = CENTRE.1 + east / (M_PER_DEGREE * CENTRE.0.to_radians().cos());
    Point::new(lat, lng).expect("the city is far from the poles and the antimeridian")
}

/// A synthetic city: where its drivers wait and where its requests come from, in order of
/// arrival.
#[derive(Clone, Debug)]
pub(crate) struct City {
    /// Available drivers.
    pub(crate) drivers: Vec<Point>,
    /// Pickup points, in order of arrival.
    pub(crate) requests: Vec<Point>,
}

impl City {
    /// `drivers` drivers spread evenly and `requests` requests, [`HOT_SHARE`] of them around
    /// the hot spots, from `seed`.
    pub(crate) fn new(seed: u64, drivers: usize, requests: usize) -> Self {
        let mut rng = Rng::new(seed);
        let anywhere = |rng: &mut Rng| {
            offset(
                (rng.unit() * 2.0 - 1.0) * HALF_SIDE_M,
                (rng.unit() * 2.0 - 1.0) * HALF_SIDE_M,
            )
        };
        let drivers = (0..drivers).map(|_| anywhere(&mut rng)).collect();
        let requests = (0..requests)
            .map(|_| {
                if rng.unit() >= HOT_SHARE {
                    return anywhere(&mut rng);
                }
                let mut pick = rng.unit();
                let mut spot = HOT_SPOTS[HOT_SPOTS.len() - 1];
                for candidate in HOT_SPOTS {
                    if pick < candidate.2 {
                        spot = candidate;
                        break;
                    }
                    pick -= candidate.2;
                }
                let ((east, north), spread, _) = spot;
                let east = (east + spread * rng.normal()).clamp(-HALF_SIDE_M, HALF_SIDE_M);
                let north = (north + spread * rng.normal()).clamp(-HALF_SIDE_M, HALF_SIDE_M);
                offset(east, north)
            })
            .collect();
        Self { drivers, requests }
    }
}
