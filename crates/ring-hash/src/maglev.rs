//! Maglev: a lookup table filled from per-node permutations.

use crate::Error;
use crate::engine::{Disruption, DistinctSlots, Engine, MAX_NODES, Relocation, SlotTable};
use crate::hashing::{mix, reduce};

/// Default table size per node: the table is the smallest prime at least this many times the
/// node count.
pub const DEFAULT_ENTRIES_PER_NODE: u64 = 100;

/// The largest Maglev table: 16,777,213 entries (the largest prime below 2^24, 64 MiB). Both
/// [`MaglevConfig`] settings are at most this, and a table that would be larger is refused
/// with [`Error::TooManyNodes`].
pub const MAX_TABLE_SIZE: u64 = 16_777_213;

/// Maglev hashing (Eisenbud et al., NSDI 2016, section 3.4), with weights.
///
/// Each node with hash `h` walks its own permutation of the `m` table entries,
/// `offset = mix(h, 1) mod m`, `skip = mix(h, 2) mod (m - 1) + 1`, entry `(offset + j·skip) mod m`,
/// and the nodes take turns claiming their next free entry until the table is full. Turns are
/// weighted: in every round each node earns its weight in credit and claims one entry per
/// `max_weight` credit, so shares follow weights. Nodes take turns in node-hash order, so the
/// table depends only on the membership. A key with hash `k` reads entry `reduce(k, m)`.
///
/// The table size `m` is by default the smallest prime at or above `100 × nodes` rounded up to a
/// power of two (so between 100 and 200 entries per node), and every node's share of entries is
/// within about 1% of its ideal share. A lookup is one multiplication and one array read,
/// whatever the number of nodes.
///
/// Disruption is near-minimal, not minimal: a membership change repopulates the table and a few
/// keys move between nodes that did not change (the paper measures a few percent of the table
/// for a 1% change). **The table size must not change** for that to hold, since every key's
/// entry depends on it: the default size only changes when the node count crosses a power of
/// two over 100 (at 11, 21, 41, … 656, 1311 nodes), and then nearly every key moves. Clusters
/// that grow or shrink across such a point should fix [`MaglevConfig::table_size`]. `get_n` walks the table forward from the key's entry and collects distinct
/// nodes.
#[derive(Debug, Clone)]
pub struct Maglev {
    config: MaglevConfig,
    slots: SlotTable,
    table: Vec<u32>,
}

/// Serializable Maglev settings, checked by [`Maglev::with_config`] and when deserialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "MaglevConfigFields"))]
pub struct MaglevConfig {
    /// Minimum table entries per node; the table is the next prime at or above
    /// `entries_per_node × nodes` rounded up to a power of two (default 100; 1 to
    /// [`MAX_TABLE_SIZE`]).
    pub entries_per_node: u64,
    /// A fixed table size instead (rounded up to a prime and to at least the node count; 1 to
    /// [`MAX_TABLE_SIZE`]).
    pub table_size: Option<u64>,
}

impl MaglevConfig {
    /// Checks the settings against their documented ranges.
    ///
    /// # Errors
    ///
    /// [`Error::SettingOutOfRange`] for `entries_per_node` or `table_size` outside 1 to
    /// [`MAX_TABLE_SIZE`].
    pub fn validate(self) -> Result<Self, Error> {
        let check = |setting, value: u64| {
            if (1..=MAX_TABLE_SIZE).contains(&value) {
                Ok(())
            } else {
                Err(Error::SettingOutOfRange {
                    setting,
                    value,
                    min: 1,
                    max: MAX_TABLE_SIZE,
                })
            }
        };
        check("MaglevConfig.entries_per_node", self.entries_per_node)?;
        if let Some(size) = self.table_size {
            check("MaglevConfig.table_size", size)?;
        }
        Ok(self)
    }
}

/// What a configuration file holds, checked into a [`MaglevConfig`].
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct MaglevConfigFields {
    entries_per_node: u64,
    table_size: Option<u64>,
}

#[cfg(feature = "serde")]
impl Default for MaglevConfigFields {
    fn default() -> Self {
        let MaglevConfig {
            entries_per_node,
            table_size,
        } = MaglevConfig::default();
        Self {
            entries_per_node,
            table_size,
        }
    }
}

#[cfg(feature = "serde")]
impl TryFrom<MaglevConfigFields> for MaglevConfig {
    type Error = Error;

    fn try_from(fields: MaglevConfigFields) -> Result<Self, Error> {
        Self {
            entries_per_node: fields.entries_per_node,
            table_size: fields.table_size,
        }
        .validate()
    }
}

impl Default for MaglevConfig {
    fn default() -> Self {
        Self {
            entries_per_node: DEFAULT_ENTRIES_PER_NODE,
            table_size: None,
        }
    }
}

/// The smallest prime `>= n` (and `>= 2`), for `n <= MAX_TABLE_SIZE` (`None` above): trial
/// division up to `sqrt(n)`, so at most about 2,000 divisions per candidate.
fn next_prime(n: u64) -> Option<u64> {
    if n > MAX_TABLE_SIZE {
        return None;
    }
    // MAX_TABLE_SIZE is prime, so the search stops at it.
    (n.max(2)..=MAX_TABLE_SIZE).find(|&candidate| is_prime(candidate))
}

fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut d = 3u64;
    // `d <= n / d` rather than `d * d <= n`, which overflows near u64::MAX.
    while d <= n / d {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

impl Maglev {
    /// A Maglev engine with the default table size (see the type's documentation).
    pub fn new() -> Self {
        Self {
            config: MaglevConfig::default(),
            slots: SlotTable::default(),
            table: Vec::new(),
        }
    }

    /// A Maglev engine with the given settings.
    ///
    /// # Errors
    ///
    /// [`Error::SettingOutOfRange`] (see [`MaglevConfig::validate`]).
    pub fn with_config(config: MaglevConfig) -> Result<Self, Error> {
        Ok(Self {
            config: config.validate()?,
            ..Self::new()
        })
    }

    /// The settings this engine was built with.
    pub fn config(&self) -> MaglevConfig {
        self.config
    }

    /// Entries in the lookup table (0 with no node).
    pub fn table_size(&self) -> usize {
        self.table.len()
    }

    /// How many table entries each slot owns, indexed by slot.
    pub fn entry_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.slots.bound()];
        for &slot in &self.table {
            counts[slot as usize] += 1;
        }
        counts
    }

    /// The table size for `nodes` nodes, `None` beyond [`MAX_TABLE_SIZE`].
    fn size_for(&self, nodes: u64) -> Option<u64> {
        let wanted = match self.config.table_size {
            Some(size) => size.max(nodes),
            // Rounded up to a power of two first, so the size (and with it every key's entry)
            // stays put while the node count moves within a factor of two.
            None => self
                .config
                .entries_per_node
                .checked_mul(nodes)?
                .checked_next_power_of_two()?,
        };
        next_prime(wanted)
    }
}

impl Default for Maglev {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine for Maglev {
    fn name(&self) -> &'static str {
        "maglev"
    }

    fn disruption(&self) -> Disruption {
        Disruption::NearMinimal
    }

    fn add(&mut self, node_hash: u64, weight: u32) -> Result<usize, Error> {
        self.slots.check_room(MAX_NODES, "maglev")?;
        let nodes = self.slots.live() as u64 + 1;
        if self.size_for(nodes).is_none() {
            return Err(Error::TooManyNodes { engine: "maglev" });
        }
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

    #[allow(clippy::cast_possible_truncation)] // table size and slots are checked to fit u32
    fn rebuild(&mut self) {
        let nodes = self.slots.sorted_by_hash();
        self.table.clear();
        if nodes.is_empty() {
            return;
        }
        // `add` refused every node that would make the table too large.
        let Some(size) = self.size_for(nodes.len() as u64) else {
            return;
        };
        let max_weight = nodes.iter().map(|n| u64::from(n.2)).max().unwrap_or(1);
        // Per node: (offset, skip, next permutation index, credit).
        let mut walkers: Vec<(u64, u64, u64, u64)> = nodes
            .iter()
            .map(|&(_, hash, _)| {
                let offset = reduce(mix(hash, 1), size);
                let skip = if size > 1 {
                    reduce(mix(hash, 2), size - 1) + 1
                } else {
                    1
                };
                (offset, skip, 0, 0)
            })
            .collect();
        let mut table = vec![u32::MAX; size as usize];
        let mut filled = 0u64;
        'rounds: loop {
            for (walker, &(slot, _, weight)) in walkers.iter_mut().zip(&nodes) {
                walker.3 += u64::from(weight);
                while walker.3 >= max_weight {
                    walker.3 -= max_weight;
                    let entry = loop {
                        let entry = ((walker.0 + walker.2 * walker.1) % size) as usize;
                        walker.2 += 1;
                        if table[entry] == u32::MAX {
                            break entry;
                        }
                    };
                    table[entry] = slot as u32;
                    filled += 1;
                    if filled == size {
                        break 'rounds;
                    }
                }
            }
        }
        self.table = table;
    }

    #[inline]
    fn lookup(&self, key_hash: u64) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let entry = reduce(key_hash, self.table.len() as u64) as usize;
        Some(self.table[entry] as usize)
    }

    fn get_n(&self, key_hash: u64, n: usize, out: &mut Vec<usize>) {
        let want = n.min(self.slots.live());
        let mut picked = DistinctSlots::new(out, want, self.slots.bound());
        if picked.is_full() || self.table.is_empty() {
            return;
        }
        let len = self.table.len();
        let start = reduce(key_hash, len as u64) as usize;
        for step in 0..len {
            if picked.push(self.table[(start + step) % len] as usize) {
                return;
            }
        }
        // A node whose weight is tiny next to the others may own no entry at all.
        for (slot, _, _) in self.slots.sorted_by_hash() {
            if picked.push(slot) {
                return;
            }
        }
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::{Member, Placement};

    /// Primality by every divisor up to the square root, in u128 so nothing overflows.
    fn slow_is_prime(n: u64) -> bool {
        n >= 2
            && (2..)
                .take_while(|&d: &u128| d * d <= u128::from(n))
                .all(|d| u128::from(n) % d != 0)
    }

    #[test]
    fn the_largest_table_is_prime_and_bounds_the_search() {
        assert!(slow_is_prime(MAX_TABLE_SIZE));
        const { assert!(MAX_TABLE_SIZE < 1 << 24) };
        assert_eq!(next_prime(MAX_TABLE_SIZE), Some(MAX_TABLE_SIZE));
        assert_eq!(next_prime(MAX_TABLE_SIZE - 1), Some(MAX_TABLE_SIZE));
        for n in [MAX_TABLE_SIZE + 1, 2_999_919_999_999_999_996, u64::MAX] {
            assert_eq!(next_prime(n), None, "{n}");
        }
        for n in [0, 1, 2, 4, 100, 4096, 65_536, 1_000_000] {
            let p = next_prime(n).unwrap();
            assert!(p >= n && slow_is_prime(p));
            assert!((n.max(2)..p).all(|c| !slow_is_prime(c)));
        }
        // Numbers whose square root is above 2^32: `d * d` would overflow there.
        assert!(!is_prime(u64::MAX));
        assert!(!is_prime(u64::MAX - 1));
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        for (config, setting, value) in [
            (
                MaglevConfig {
                    table_size: Some(u64::MAX),
                    ..MaglevConfig::default()
                },
                "MaglevConfig.table_size",
                u64::MAX,
            ),
            (
                MaglevConfig {
                    table_size: Some(2_999_919_999_999_999_996),
                    ..MaglevConfig::default()
                },
                "MaglevConfig.table_size",
                2_999_919_999_999_999_996,
            ),
            (
                MaglevConfig {
                    table_size: Some(0),
                    ..MaglevConfig::default()
                },
                "MaglevConfig.table_size",
                0,
            ),
            (
                MaglevConfig {
                    entries_per_node: u64::MAX,
                    table_size: None,
                },
                "MaglevConfig.entries_per_node",
                u64::MAX,
            ),
            (
                MaglevConfig {
                    entries_per_node: 0,
                    table_size: None,
                },
                "MaglevConfig.entries_per_node",
                0,
            ),
        ] {
            let error = Maglev::with_config(config).unwrap_err();
            assert_eq!(
                error,
                Error::SettingOutOfRange {
                    setting,
                    value,
                    min: 1,
                    max: MAX_TABLE_SIZE
                }
            );
            assert!(error.to_string().contains(setting));
        }
        assert!(
            Maglev::with_config(MaglevConfig {
                table_size: Some(MAX_TABLE_SIZE),
                ..MaglevConfig::default()
            })
            .is_ok()
        );
    }

    #[test]
    fn a_table_beyond_the_largest_is_refused_when_the_node_is_added() {
        let engine = Maglev::with_config(MaglevConfig {
            entries_per_node: MAX_TABLE_SIZE,
            table_size: None,
        })
        .unwrap();
        let mut placement = Placement::new(engine);
        assert_eq!(
            placement.add(1u32, 1),
            Err(Error::TooManyNodes { engine: "maglev" })
        );
        assert!(placement.is_empty());
        assert_eq!(placement.engine().table_size(), 0);
        let small = Maglev::with_config(MaglevConfig {
            entries_per_node: 1,
            table_size: Some(7),
        })
        .unwrap();
        let placement = Placement::from_members(small, (0..7u32).map(Member::new)).unwrap();
        assert_eq!(placement.engine().table_size(), 7);
    }
}
