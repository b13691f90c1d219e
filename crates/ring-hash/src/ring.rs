//! Ketama-style ring: virtual points per node, proportional to weight.

use crate::Error;
use crate::engine::{Disruption, Engine, Relocation, SlotTable};
use crate::hashing::mix;

/// Points per unit of weight when none is configured: the classic ketama figure.
pub const DEFAULT_POINTS_PER_WEIGHT: u32 = 160;

/// The largest [`RingConfig::points_per_weight`] (65,536).
pub const MAX_POINTS_PER_WEIGHT: u32 = 1 << 16;

/// The most points a ring holds (2^22, 4,194,304: 64 MiB of points and 16 MiB of index), and
/// so the most nodes. A change that would make `points_per_weight × total weight` exceed it is
/// refused with [`Error::SettingOutOfRange`]: at the default 160 points per unit of weight, a
/// total weight of 26,214. Scaling every node's points down instead would move keys between
/// nodes that did not change; for larger totals, lower [`RingConfig::points_per_weight`] or
/// the weights.
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
/// removed node's arcs go to the next points. A node's points depend only on its own hash and
/// weight: a change that would take the ring past [`MAX_RING_POINTS`] is refused rather than
/// rescaling the others.
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

    /// The points of a node of `weight`.
    fn points_of(&self, weight: u32) -> u64 {
        u64::from(weight) * u64::from(self.points_per_weight)
    }

    /// Refuses a change that would leave the ring with `total_weight` when its points would
    /// exceed [`MAX_RING_POINTS`].
    fn check_points(&self, total_weight: u64) -> Result<(), Error> {
        // Weights are u32 and there are at most MAX_NODES of them, so this cannot overflow.
        let points = u128::from(total_weight) * u128::from(self.points_per_weight);
        if points <= u128::from(MAX_RING_POINTS) {
            return Ok(());
        }
        Err(Error::SettingOutOfRange {
            setting: "Ring points (total weight × points_per_weight)",
            value: u64::try_from(points).unwrap_or(u64::MAX),
            min: 1,
            max: MAX_RING_POINTS,
        })
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
        // Every node has at least one point.
        self.slots.check_room(MAX_RING_POINTS as usize, "ring")?;
        self.check_points(self.slots.total_weight() + u64::from(weight))?;
        Ok(self.slots.insert(node_hash, weight))
    }

    fn remove(&mut self, slot: usize) -> Option<Relocation> {
        self.slots.remove(slot);
        None
    }

    fn set_weight(&mut self, slot: usize, weight: u32) -> Result<(), Error> {
        let others = self.slots.total_weight() - u64::from(self.slots.weight(slot));
        self.check_points(others + u64::from(weight))?;
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
        // From a borrowing iterator: collecting the owned buffer would keep its allocation, 24
        // bytes per point (and its spare capacity) where a point needs 16.
        self.points = points
            .iter()
            .map(|&(hash, _, slot)| Point { hash, slot })
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

    fn past_the_cap(points: u64) -> Error {
        Error::SettingOutOfRange {
            setting: "Ring points (total weight × points_per_weight)",
            value: points,
            min: 1,
            max: MAX_RING_POINTS,
        }
    }

    /// The README's memory figure: 16 bytes per point, plus an index of 4-byte entries whose
    /// count is the point count rounded up to a power of two.
    #[test]
    fn a_point_takes_16_bytes_and_at_most_8_of_index() {
        assert_eq!(std::mem::size_of::<Point>(), 16);
        assert_eq!(std::mem::size_of_val(&Ring::new().index[0]), 4);
        for nodes in [1u32, 3, 100, 1000] {
            let placement = Placement::from_members(Ring::new(), (0..nodes).map(Member::new));
            let ring = placement.unwrap().engine().clone();
            assert_eq!(ring.points.len(), 160 * nodes as usize);
            assert!(ring.index.len() >= ring.points.len());
            assert!(ring.index.len() < 2 * ring.points.len());
        }
    }

    #[test]
    fn huge_weights_are_refused_not_rescaled() {
        // 2^32 × 65,536 points: a 4 TiB ring.
        let ring = Ring::with_config(RingConfig {
            points_per_weight: MAX_POINTS_PER_WEIGHT,
        })
        .unwrap();
        let refused = Placement::from_members(ring, [Member::weighted(1u32, u32::MAX)]);
        assert_eq!(
            refused.unwrap_err(),
            past_the_cap(u64::from(u32::MAX) * u64::from(MAX_POINTS_PER_WEIGHT))
        );
        // Within the cap a node gets weight × points_per_weight points.
        let small =
            Placement::from_members(Ring::new(), [Member::weighted(1u32, 3), Member::new(2)])
                .unwrap();
        assert_eq!(small.engine().point_count(), 4 * 160);
    }

    /// Above the cap the ring used to rescale every node's points, so adding a 27th node of
    /// weight 1,000 to 26 moved keys between the 26 (3.2% of all keys with a 28th node).
    #[test]
    fn adds_up_to_the_point_cap_move_keys_only_onto_the_new_node_and_past_it_are_refused() {
        let members = (0..26u32).map(|node| Member::weighted(node, 1000));
        let mut placement = Placement::from_members(Ring::new(), members).unwrap();
        let owners = |placement: &Placement<u32, Ring>| -> Vec<u32> {
            (0..20_000u32)
                .map(|k| *placement.node(&k).unwrap())
                .collect()
        };
        let before = owners(&placement);

        // 26 × 1,000 + 1,000 units of weight at 160 points each: past 2^22 points.
        assert_eq!(
            placement.add(26, 1000).unwrap_err(),
            past_the_cap(27_000 * 160)
        );
        assert_eq!(
            placement.set_weight(&0, 2000).unwrap_err(),
            past_the_cap(27_000 * 160)
        );
        assert_eq!(owners(&placement), before, "a refused change moved keys");
        assert_eq!(placement.len(), 26);

        // Up to the cap (26,214 units of weight), an add moves keys only onto the new node.
        placement.add(26, 214).unwrap();
        assert_eq!(placement.engine().point_count(), 26_214 * 160);
        let after = owners(&placement);
        let moved = before.iter().zip(&after).filter(|(old, new)| old != new);
        let mut onto_new = 0;
        for (old, new) in moved {
            assert_eq!(
                *new, 26,
                "key moved from {old} to {new}, not onto the new node"
            );
            onto_new += 1;
        }
        assert!(onto_new > 0, "the new node got no key");
    }
}
