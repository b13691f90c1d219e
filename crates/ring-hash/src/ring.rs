//! Ketama-style ring: virtual points per node, proportional to weight.

use crate::Error;
use crate::engine::{Disruption, Engine, Relocation, SlotTable};
use crate::hashing::mix;

/// Points per unit of weight when none is configured: the classic ketama figure.
pub const DEFAULT_POINTS_PER_WEIGHT: u32 = 160;

/// The largest [`RingConfig::points_per_weight`] (65,536).
pub const MAX_POINTS_PER_WEIGHT: u32 = 1 << 16;

/// The most points a ring holds (2^22, 4,194,304: 64 MiB of points and 16 MiB of index), and
/// so the most nodes. When `points_per_weight × total weight` would exceed it, weights are
/// normalised: each node gets `⌊weight × MAX_RING_POINTS / total weight⌋` points (at least
/// one), so shares still follow weights and the ring never holds more than `MAX_RING_POINTS`
/// plus one point per node.
pub const MAX_RING_POINTS: u64 = 1 << 22;

/// A consistent-hash ring (Karger et al. 1997, as popularised by ketama).
///
/// A node with hash `h` and weight `w` owns the `points_per_weight × w` points
/// `mix(h, 0), mix(h, 1), …` on a 64-bit circle; a key with hash `k` belongs to the first point
/// at or after `k`, wrapping around (ties between equal points go to the smaller node hash).
/// `get_n` walks on clockwise and collects distinct nodes.
///
/// # Lookup structure
///
/// Points live in one sorted array of 16-byte `(point, slot)` entries, so the entry compared
/// and the owner read share a cache line. Instead of a binary search (about `log2(points)`
/// dependent cache misses), a direct index of `2^b >= points` entries maps the top `b` bits of
/// the key hash to the first point with those bits; the lookup then scans forward, on average
/// about one entry. A lookup therefore touches two cache lines in the common case, whatever the
/// ring size.
///
/// Disruption is minimal: a new node only takes the arcs in front of its own points, and a
/// removed node's arcs go to the next points. This holds while the ring is within
/// [`MAX_RING_POINTS`]; above it every node's point count is normalised to the total weight, so
/// a change also moves a few keys between other nodes.
///
/// ```
/// use infra_ring_hash::{Placement, Ring};
///
/// let mut placement = Placement::new(Ring::new());
/// placement.add("cache-a", 1)?;
/// placement.add("cache-b", 2)?; // twice the points, about twice the keys
/// assert!(placement.node("user:42").is_some());
/// # Ok::<(), infra_ring_hash::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Ring {
    points_per_weight: u32,
    slots: SlotTable,
    points: Vec<Point>,
    /// `index[b]` is the position of the first point whose top bits are `>= b`.
    index: Vec<u32>,
    /// `64 - log2(index.len())`; the index has at least two entries so this stays below 64.
    shift: u32,
}

#[derive(Debug, Clone, Copy)]
struct Point {
    hash: u64,
    slot: u32,
}

/// Serializable ring settings, checked by [`Ring::with_config`] and when deserialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "RingConfigFields"))]
pub struct RingConfig {
    /// Virtual points per unit of weight: 1 to [`MAX_POINTS_PER_WEIGHT`] (default 160).
    pub points_per_weight: u32,
}

impl RingConfig {
    /// Checks the settings against their documented ranges.
    ///
    /// # Errors
    ///
    /// [`Error::SettingOutOfRange`] for `points_per_weight` outside 1 to
    /// [`MAX_POINTS_PER_WEIGHT`].
    pub fn validate(self) -> Result<Self, Error> {
        if (1..=MAX_POINTS_PER_WEIGHT).contains(&self.points_per_weight) {
            Ok(self)
        } else {
            Err(Error::SettingOutOfRange {
                setting: "RingConfig.points_per_weight",
                value: u64::from(self.points_per_weight),
                min: 1,
                max: u64::from(MAX_POINTS_PER_WEIGHT),
            })
        }
    }
}

/// What a configuration file holds, checked into a [`RingConfig`].
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RingConfigFields {
    points_per_weight: u32,
}

#[cfg(feature = "serde")]
impl Default for RingConfigFields {
    fn default() -> Self {
        Self {
            points_per_weight: DEFAULT_POINTS_PER_WEIGHT,
        }
    }
}

#[cfg(feature = "serde")]
impl TryFrom<RingConfigFields> for RingConfig {
    type Error = Error;

    fn try_from(fields: RingConfigFields) -> Result<Self, Error> {
        Self {
            points_per_weight: fields.points_per_weight,
        }
        .validate()
    }
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            points_per_weight: DEFAULT_POINTS_PER_WEIGHT,
        }
    }
}

impl Ring {
    /// A ring with [`DEFAULT_POINTS_PER_WEIGHT`] points per unit of weight.
    pub fn new() -> Self {
        Self {
            points_per_weight: DEFAULT_POINTS_PER_WEIGHT,
            slots: SlotTable::default(),
            points: Vec::new(),
            index: vec![0; 2],
            shift: 63,
        }
    }

    /// A ring with the given settings.
    ///
    /// # Errors
    ///
    /// [`Error::SettingOutOfRange`] (see [`RingConfig::validate`]).
    pub fn with_config(config: RingConfig) -> Result<Self, Error> {
        Ok(Self {
            points_per_weight: config.validate()?.points_per_weight,
            ..Self::new()
        })
    }

    /// The settings this ring was built with.
    pub fn config(&self) -> RingConfig {
        RingConfig {
            points_per_weight: self.points_per_weight,
        }
    }

    /// Number of virtual points on the ring.
    pub fn point_count(&self) -> usize {
        self.points.len()
    }

    /// The points of a node of `weight`, normalised when the ring would exceed
    /// [`MAX_RING_POINTS`] (see there).
    fn points_of(&self, weight: u32) -> u64 {
        let unscaled = u64::from(weight) * u64::from(self.points_per_weight);
        // Weights are u32 and there are at most MAX_NODES of them, so this cannot overflow.
        let total = u128::from(self.slots.total_weight()) * u128::from(self.points_per_weight);
        if total <= u128::from(MAX_RING_POINTS) {
            return unscaled;
        }
        let scaled = u128::from(weight) * u128::from(MAX_RING_POINTS)
            / u128::from(self.slots.total_weight());
        // At most MAX_RING_POINTS, since weight <= total weight.
        u64::try_from(scaled).unwrap_or(MAX_RING_POINTS).max(1)
    }

    #[inline]
    fn position(&self, key_hash: u64) -> usize {
        let mut pos = self.index[(key_hash >> self.shift) as usize] as usize;
        while pos < self.points.len() && self.points[pos].hash < key_hash {
            pos += 1;
        }
        if pos == self.points.len() { 0 } else { pos }
    }
}

impl Default for Ring {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine for Ring {
    fn name(&self) -> &'static str {
        "ring"
    }

    fn disruption(&self) -> Disruption {
        Disruption::Minimal
    }

    #[allow(clippy::cast_possible_truncation)] // MAX_RING_POINTS fits usize
    fn add(&mut self, node_hash: u64, weight: u32) -> Result<usize, Error> {
        // Every node keeps at least one point.
        self.slots.check_room(MAX_RING_POINTS as usize, "ring")?;
        Ok(self.slots.insert(node_hash, weight))
    }

    fn remove(&mut self, slot: usize) -> Option<Relocation> {
        self.slots.remove(slot);
        None
    }

    fn set_weight(&mut self, slot: usize, weight: u32) -> Result<(), Error> {
        self.slots.set_weight(slot, weight);
        Ok(())
    }

    #[allow(clippy::cast_possible_truncation)] // slots and point counts are checked to fit u32
    fn rebuild(&mut self) {
        let nodes = self.slots.sorted_by_hash();
        let mut points: Vec<(u64, u64, u32)> = Vec::new();
        for &(slot, hash, weight) in &nodes {
            let count = self.points_of(weight);
            points.extend((0..count).map(|i| (mix(hash, i), hash, slot as u32)));
        }
        points.sort_unstable_by_key(|&(point, node, _)| (point, node));
        self.points = points
            .into_iter()
            .map(|(hash, _, slot)| Point { hash, slot })
            .collect();
        let bits = self
            .points
            .len()
            .next_power_of_two()
            .trailing_zeros()
            .max(1);
        self.shift = 64 - bits;
        let buckets = 1usize << bits;
        self.index = Vec::with_capacity(buckets);
        let mut pos = 0usize;
        for bucket in 0..buckets as u64 {
            let start = bucket << self.shift;
            while pos < self.points.len() && self.points[pos].hash < start {
                pos += 1;
            }
            self.index.push(pos as u32);
        }
    }

    #[inline]
    fn lookup(&self, key_hash: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        Some(self.points[self.position(key_hash)].slot as usize)
    }

    fn candidates(&self, key_hash: u64) -> impl Iterator<Item = usize> + '_ {
        // Clockwise from the key's point, once round the ring.
        let len = self.points.len();
        let start = if len == 0 { 0 } else { self.position(key_hash) };
        (0..len).map(move |step| self.points[(start + step) % len].slot as usize)
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::{Member, Placement};

    #[test]
    fn points_per_weight_out_of_range_is_refused() {
        for value in [0, MAX_POINTS_PER_WEIGHT + 1, u32::MAX] {
            assert_eq!(
                Ring::with_config(RingConfig {
                    points_per_weight: value
                })
                .unwrap_err(),
                Error::SettingOutOfRange {
                    setting: "RingConfig.points_per_weight",
                    value: u64::from(value),
                    min: 1,
                    max: u64::from(MAX_POINTS_PER_WEIGHT),
                }
            );
        }
        let ring = Ring::with_config(RingConfig {
            points_per_weight: MAX_POINTS_PER_WEIGHT,
        })
        .unwrap();
        assert_eq!(ring.config().points_per_weight, MAX_POINTS_PER_WEIGHT);
    }

    #[test]
    fn huge_weights_are_normalised_to_the_point_cap() {
        // 2^32 × 65,536 points unnormalised: a 4 TiB ring.
        let ring = Ring::with_config(RingConfig {
            points_per_weight: MAX_POINTS_PER_WEIGHT,
        })
        .unwrap();
        let members = [
            Member::weighted(1u32, u32::MAX / 4),
            Member::weighted(2, u32::MAX / 4 * 3),
        ];
        let mut placement = Placement::from_members(ring, members).unwrap();
        let points = placement.engine().point_count() as u64;
        assert!(points <= MAX_RING_POINTS + 2, "{points} points");
        assert!(points >= MAX_RING_POINTS - 2, "{points} points");
        let heavy = (0..20_000u64)
            .filter(|k| *placement.node(k).unwrap() == 2)
            .count();
        // The heavy node holds 3/4 of the circle up to the ring's own unevenness.
        assert!(
            (14_000..16_000).contains(&heavy),
            "heavy node got {heavy} of 20000"
        );
        placement.set_weight(&1, u32::MAX).unwrap();
        assert!(placement.engine().point_count() as u64 <= MAX_RING_POINTS + 2);
        // Within the cap nothing is normalised: a node gets weight × points_per_weight points.
        let small =
            Placement::from_members(Ring::new(), [Member::weighted(1u32, 3), Member::new(2)])
                .unwrap();
        assert_eq!(small.engine().point_count(), 4 * 160);
    }
}
