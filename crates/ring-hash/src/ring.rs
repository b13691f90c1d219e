//! Ketama-style ring: virtual points per node, proportional to weight.

use crate::Error;
use crate::engine::{Disruption, DistinctSlots, Engine, Relocation, SlotTable};
use crate::hashing::mix;

/// Points per unit of weight when none is configured: the classic ketama figure.
pub const DEFAULT_POINTS_PER_WEIGHT: u32 = 160;

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
/// removed node's arcs go to the next points.
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

/// Serializable ring settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct RingConfig {
    /// Virtual points per unit of weight (default 160).
    pub points_per_weight: u32,
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
        Self::with_config(RingConfig::default())
    }

    /// A ring with the given settings; `points_per_weight` of 0 is treated as 1.
    pub fn with_config(config: RingConfig) -> Self {
        Self {
            points_per_weight: config.points_per_weight.max(1),
            slots: SlotTable::default(),
            points: Vec::new(),
            index: vec![0; 2],
            shift: 63,
        }
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

    fn total_points(&self, extra_weight: u64) -> u64 {
        (self.slots.total_weight() + extra_weight) * u64::from(self.points_per_weight)
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

    fn add(&mut self, node_hash: u64, weight: u32) -> Result<usize, Error> {
        if self.total_points(u64::from(weight)) > u64::from(u32::MAX) {
            return Err(Error::TooManyNodes { engine: "ring" });
        }
        Ok(self.slots.insert(node_hash, weight))
    }

    fn remove(&mut self, slot: usize) -> Option<Relocation> {
        self.slots.remove(slot);
        None
    }

    fn set_weight(&mut self, slot: usize, weight: u32) -> Result<(), Error> {
        let extra = u64::from(weight).saturating_sub(u64::from(self.slots.weight(slot)));
        if self.total_points(extra) > u64::from(u32::MAX) {
            return Err(Error::TooManyNodes { engine: "ring" });
        }
        self.slots.set_weight(slot, weight);
        Ok(())
    }

    #[allow(clippy::cast_possible_truncation)] // slots and point counts are checked to fit u32
    fn rebuild(&mut self) {
        let nodes = self.slots.sorted_by_hash();
        let mut points: Vec<(u64, u64, u32)> = Vec::new();
        for &(slot, hash, weight) in &nodes {
            let count = u64::from(weight) * u64::from(self.points_per_weight);
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

    fn get_n(&self, key_hash: u64, n: usize, out: &mut Vec<usize>) {
        let want = n.min(self.slots.live());
        let mut picked = DistinctSlots::new(out, want, self.slots.bound());
        if picked.is_full() || self.points.is_empty() {
            return;
        }
        let start = self.position(key_hash);
        let len = self.points.len();
        for step in 0..len {
            let point = self.points[(start + step) % len];
            if picked.push(point.slot as usize) {
                return;
            }
        }
    }
}
