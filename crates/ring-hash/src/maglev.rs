//! Maglev: a lookup table filled from per-node permutations.

use std::collections::BTreeMap;

use crate::Error;
use crate::engine::{Disruption, Engine, MAX_NODES, Relocation, SlotTable};
use crate::hashing::{mix, reduce};

/// Default minimum table entries per node: a table of `m` entries holds at most
/// `m / entries_per_node` nodes (6,553 for the default table).
pub const DEFAULT_ENTRIES_PER_NODE: u64 = 100;

/// Default table size: 655,373, the prime the paper uses for large clusters. It stays fixed
/// whatever the node count, so membership changes move near-minimal numbers of keys.
pub const DEFAULT_TABLE_SIZE: u64 = 655_373;

/// Table entries per squared node count in [`MaglevConfig::for_max_nodes`]: a table of
/// `5·n²` entries keeps the keys an add moves at `n` nodes within 2× of the ideal.
///
/// Why the square: repopulating the table after a change reshuffles about the last rounds of
/// the population, a few entries per node, `c·n` entries in all, on top of the new node's
/// `m / n`; the ratio to the ideal is then roughly `1 + c·n² / m`. Measured on the table's entries
/// when this was chosen: `4·n²` gives 1.72× at 100 nodes, 1.81× at 300 and 1.85× at 1,000;
/// `5·n²` gives 1.62×, 1.71× and 1.74×.
const ENTRIES_PER_SQUARED_NODE: u64 = 5;

/// The largest Maglev table: 16,777,213 entries (the largest prime below 2^24, 64 MiB). Both
/// [`MaglevConfig`] settings are at most this, and a table that would be larger is refused
/// with [`Error::TooManyNodes`].
pub const MAX_TABLE_SIZE: u64 = 16_777_213;

/// The largest ratio between two Maglev members' weights (64): an `add` or `set_weight` that
/// would make the heaviest member more than 64 times the lightest is refused with
/// [`Error::SettingOutOfRange`], whose range says which weights fit.
///
/// Why: the population gives every node one turn per round and the heaviest node one entry per
/// round, so filling the table takes about `table size × heaviest / average weight` node
/// turns. With no bound, one node of weight 1,000 among a thousand of weight 1 makes that 500
/// turns per entry, and every membership change pays it; the cap keeps it at most 64 per
/// entry.
pub const MAX_MAGLEV_WEIGHT_RATIO: u32 = 64;

/// Maglev hashing (Eisenbud et al., NSDI 2016, section 3.4), with weights.
///
/// Each node with hash `h` walks its own permutation of the `m` table entries,
/// `offset = mix(h, 1) mod m`, `skip = mix(h, 2) mod (m - 1) + 1`, entry `(offset + j·skip) mod m`,
/// and the nodes take turns claiming their next free entry until the table is full. Turns are
/// weighted: in every round each node earns its weight in credit and claims one entry per
/// `max_weight` credit, so shares follow weights. Nodes take turns in node-hash order, so the
/// table depends only on the membership. A key with hash `k` reads entry `reduce(k, m)`.
///
/// The table size `m` is fixed, as in the paper: [`DEFAULT_TABLE_SIZE`] (655,373 entries,
/// 2.6 MB) unless [`MaglevConfig::table_size`] says otherwise, rounded up to a prime. It holds
/// at most `m / entries_per_node` nodes ([`DEFAULT_ENTRIES_PER_NODE`] = 100: 6,553 nodes by
/// default); one more is refused with [`Error::TooManyNodes`]. A lookup is one multiplication
/// and one array read, whatever the number of nodes.
///
/// Disruption is near-minimal, not minimal: a membership change repopulates the table and a few
/// keys move between nodes that did not change (the paper measures a few percent of the table
/// for a 1% change). Every key's entry depends on the table size, so the size never changes on
/// its own; [`crate::Placement::resize_table`] changes it explicitly and moves most
/// keys. `get_n` walks the table forward from the key's entry and collects distinct nodes.
///
/// Weights are 1 to `u32::MAX`, but members' weights stay within [`MAX_MAGLEV_WEIGHT_RATIO`]
/// of each other, which bounds the work of a rebuild.
#[derive(Debug, Clone)]
pub struct Maglev {
    config: MaglevConfig,
    slots: SlotTable,
    /// How many live nodes have each weight, for the weight-ratio check.
    weights: BTreeMap<u32, usize>,
    table: Vec<u32>,
}

/// Serializable Maglev settings, checked by [`Maglev::with_config`] and when deserialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "MaglevConfigFields"))]
pub struct MaglevConfig {
    /// Minimum table entries per node: the table holds at most `table size / entries_per_node`
    /// nodes (default 100; 1 to [`MAX_TABLE_SIZE`]).
    pub entries_per_node: u64,
    /// The table size, rounded up to a prime (default [`DEFAULT_TABLE_SIZE`]; 1 to
    /// [`MAX_TABLE_SIZE`]).
    pub table_size: Option<u64>,
}

impl MaglevConfig {
    /// Settings for a cluster of at most `max_nodes` nodes (1 to 1,831) that keeps an add
    /// within 2× of the ideal moved share up to that count: a table of `5 · max_nodes²`
    /// entries (at least [`DEFAULT_TABLE_SIZE`]), rounded up to a prime.
    ///
    /// The default table moves 4.3× the ideal at 1,000 → 1,001 nodes; this one, 5,000,011
    /// entries (20 MB) for `max_nodes = 1000`, moves 1.8× (1,803 of 1,000,000 keys against an
    /// ideal 999). It costs memory and build time, and every membership change rebuilds the
    /// table: 9–11× the default table's build at 1,000 nodes (see the crate README). Past
    /// `max_nodes`, nodes are still accepted up to [`Maglev::max_nodes`], but disruption grows
    /// back towards the default table's.
    ///
    /// ```
    /// use infra_ring_hash::{Maglev, MaglevConfig};
    ///
    /// let config = MaglevConfig::for_max_nodes(200)?;
    /// assert_eq!(config.table_size, Some(655_373)); // 5 · 200² is below the default
    /// let config = MaglevConfig::for_max_nodes(1000)?;
    /// assert_eq!(config.table_size, Some(5_000_000));
    /// let engine = Maglev::with_config(config)?;
    /// assert!(engine.max_nodes() >= 1000);
    /// # Ok::<(), infra_ring_hash::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::SettingOutOfRange`] for `max_nodes` of 0, or so large that the table would
    /// exceed [`MAX_TABLE_SIZE`].
    pub fn for_max_nodes(max_nodes: u64) -> Result<Self, Error> {
        let largest = (MAX_TABLE_SIZE / ENTRIES_PER_SQUARED_NODE).isqrt();
        if !(1..=largest).contains(&max_nodes) {
            return Err(Error::SettingOutOfRange {
                setting: "MaglevConfig::for_max_nodes(max_nodes)",
                value: max_nodes,
                min: 1,
                max: largest,
            });
        }
        Self {
            table_size: Some(
                (ENTRIES_PER_SQUARED_NODE * max_nodes * max_nodes).max(DEFAULT_TABLE_SIZE),
            ),
            ..Self::default()
        }
        .validate()
    }

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
            weights: BTreeMap::new(),
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

    /// How many table entries each node owns, in the order of [`crate::Placement::members`].
    pub fn entry_counts(&self) -> Vec<usize> {
        let mut by_slot = vec![0; self.slots.bound()];
        for &slot in &self.table {
            by_slot[slot as usize] += 1;
        }
        // Slots freed by removals own nothing and are not members: skip them, so index `i`
        // is the `i`-th member.
        let mut live: Vec<usize> = self
            .slots
            .sorted_by_hash()
            .into_iter()
            .map(|(slot, _, _)| slot)
            .collect();
        live.sort_unstable();
        live.into_iter().map(|slot| by_slot[slot]).collect()
    }

    /// The table size: the configured size rounded up to a prime.
    fn size(&self) -> u64 {
        let wanted = self.config.table_size.unwrap_or(DEFAULT_TABLE_SIZE);
        // Validated settings are at most MAX_TABLE_SIZE, a prime.
        next_prime(wanted).unwrap_or(MAX_TABLE_SIZE)
    }

    /// The most nodes the table holds: `size / entries_per_node`.
    #[allow(clippy::cast_possible_truncation)] // at most MAX_TABLE_SIZE, below 2^24
    pub fn max_nodes(&self) -> usize {
        (self.size() / self.config.entries_per_node) as usize
    }

    /// Refuses `weight` for a node when it is more than [`MAX_MAGLEV_WEIGHT_RATIO`] times
    /// another member's weight or less than its inverse; `replacing` is the node's current
    /// weight when it is reweighted (it does not count as another member).
    fn check_weight(&self, weight: u32, replacing: Option<u32>) -> Result<(), Error> {
        let mut others = self.weights.iter().filter_map(|(&other, &count)| {
            (count > usize::from(replacing == Some(other))).then_some(other)
        });
        let Some(lightest) = others.next() else {
            return Ok(());
        };
        let heaviest = others.next_back().unwrap_or(lightest);
        let ratio = u64::from(MAX_MAGLEV_WEIGHT_RATIO);
        let min = u64::from(heaviest).div_ceil(ratio);
        let max = (u64::from(lightest) * ratio).min(u64::from(u32::MAX));
        if (min..=max).contains(&u64::from(weight)) {
            Ok(())
        } else {
            Err(Error::SettingOutOfRange {
                setting: "Maglev weight (within MAX_MAGLEV_WEIGHT_RATIO = 64 times every member's)",
                value: u64::from(weight),
                min,
                max,
            })
        }
    }

    fn count_weight(&mut self, weight: u32) {
        *self.weights.entry(weight).or_default() += 1;
    }

    fn uncount_weight(&mut self, weight: u32) {
        if let Some(count) = self.weights.get_mut(&weight) {
            *count -= 1;
            if *count == 0 {
                self.weights.remove(&weight);
            }
        }
    }

    /// Changes the table size; the caller rebuilds.
    pub(crate) fn resize(&mut self, table_size: u64) -> Result<(), Error> {
        let config = MaglevConfig {
            table_size: Some(table_size),
            ..self.config
        }
        .validate()?;
        let resized = Self {
            config,
            ..Self::new()
        };
        if self.slots.live() > resized.max_nodes() {
            return Err(Error::TooManyNodes { engine: "maglev" });
        }
        self.config = config;
        Ok(())
    }
}

/// One node's walk through its permutation of the table entries: entry `j` is
/// `(offset + j·skip) mod size`.
struct Walker {
    /// The next entry of the permutation to test.
    next: u32,
    skip: u32,
    /// `skip⁻¹ mod size`: the number of steps from entry `a` to entry `b` is
    /// `(b - a)·skip⁻¹ mod size`.
    inverse: u32,
    /// Weight earned and not yet spent on claims.
    credit: u64,
}

impl Walker {
    #[allow(clippy::cast_possible_truncation)] // offset and skip are below size < 2^24
    fn new(node_hash: u64, size: u64) -> Self {
        let offset = reduce(mix(node_hash, 1), size);
        let skip = if size > 1 {
            reduce(mix(node_hash, 2), size - 1) + 1
        } else {
            1
        };
        Self {
            next: offset as u32,
            skip: skip as u32,
            inverse: inverse_mod(skip, size) as u32,
            credit: 0,
        }
    }

    /// The first entry from `next` on that `taken` does not mark. Steps with an addition and a
    /// conditional subtraction instead of a division, with the position in a register, so the
    /// test of each entry is the only memory access of a probe.
    #[inline]
    fn probe(&self, taken: &[u64], size: u32) -> u32 {
        let mut entry = self.next;
        while taken[(entry / 64) as usize] >> (entry % 64) & 1 == 1 {
            // size < 2^24, so the sum cannot overflow.
            entry += self.skip;
            if entry >= size {
                entry -= size;
            }
        }
        entry
    }

    /// The entry of `free` that comes first on the walk from `next`: the fewest steps away.
    #[allow(clippy::cast_possible_truncation)] // steps are below size < 2^24
    fn nearest(&self, free: &[u32], size: &Divisor) -> usize {
        let mut nearest = (u64::MAX, 0);
        for (index, &entry) in free.iter().enumerate() {
            let distance = size.modulo(u64::from(entry) + size.value - u64::from(self.next));
            let steps = size.modulo(distance * u64::from(self.inverse));
            if steps < nearest.0 {
                nearest = (steps, index);
            }
        }
        nearest.1
    }

    /// Moves past `entry`, just claimed.
    fn step_past(&mut self, entry: u32, size: u32) {
        self.next = entry + self.skip;
        if self.next >= size {
            self.next -= size;
        }
    }
}

/// `a⁻¹ mod m` for `a` coprime to `m` (extended Euclid); 0 when `m` is 1.
#[allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)] // m < 2^24
fn inverse_mod(a: u64, m: u64) -> u64 {
    let (mut t, mut next_t) = (0i64, 1i64);
    let (mut r, mut next_r) = (m as i64, (a % m) as i64);
    while next_r != 0 {
        let q = r / next_r;
        (t, next_t) = (next_t, t - q * next_t);
        (r, next_r) = (next_r, r - q * next_r);
    }
    t.rem_euclid(m as i64) as u64
}

/// A table size with its reciprocal, for `x mod size` by multiplication (Barrett reduction):
/// `x / size` is `x·⌊(2^64 - 1) / size⌋ / 2^64` or one less, for `x` below 2^48.
struct Divisor {
    value: u64,
    reciprocal: u64,
}

impl Divisor {
    fn new(value: u64) -> Self {
        Self {
            value,
            reciprocal: u64::MAX / value,
        }
    }

    /// `x mod value`, for `x < 2^48`.
    #[inline]
    #[allow(clippy::cast_possible_truncation)] // the shifted product is at most x / value
    fn modulo(&self, x: u64) -> u64 {
        let quotient = ((u128::from(x) * u128::from(self.reciprocal)) >> 64) as u64;
        let remainder = x - quotient * self.value;
        if remainder >= self.value {
            remainder - self.value
        } else {
            remainder
        }
    }
}

/// The Maglev table of `nodes` (`(slot, hash, weight)` in node-hash order) over `size` entries.
///
/// Nodes take turns in order; in each round a node earns its weight in credit and claims its
/// next free entry once per `max_weight` credit, until every entry is claimed. Whether an entry
/// is taken is read from a bitmap (80 KB for the default table, which stays in cache) rather
/// than from the table (2.6 MB), which is only written.
///
/// A claim with `f` entries free probes about `size / f` entries, so probing the last entries
/// costs most of the build (about `size·ln(size)` probes in all). Once at most `√size` entries
/// are free, a claim instead computes how many steps each free entry is from the node's
/// position on its permutation and takes the nearest: the same entry the probes would reach
/// first, for `f` multiplications instead of `size / f` probes. At 1,000 nodes on the default
/// table that replaces about half of the 8.9 million probes.
#[allow(clippy::cast_possible_truncation)] // table size and slots are checked to fit u32
fn populate(nodes: &[(usize, u64, u32)], size: u64) -> Vec<u32> {
    let max_weight = nodes.iter().map(|n| u64::from(n.2)).max().unwrap_or(1);
    let mut walkers: Vec<Walker> = nodes
        .iter()
        .map(|&(_, hash, _)| Walker::new(hash, size))
        .collect();
    let divisor = Divisor::new(size);
    let size32 = size as u32;
    let mut table = vec![u32::MAX; size as usize];
    let mut taken = vec![0u64; size.div_ceil(64) as usize];
    let few = size.isqrt();
    let mut left = size;
    // The free entries, in no order, once `left <= few`.
    let mut free: Vec<u32> = if left <= few {
        (0..size32).collect()
    } else {
        Vec::new()
    };
    loop {
        for (walker, &(slot, _, weight)) in walkers.iter_mut().zip(nodes) {
            walker.credit += u64::from(weight);
            while walker.credit >= max_weight {
                walker.credit -= max_weight;
                let entry = if left > few {
                    let entry = walker.probe(&taken, size32);
                    taken[(entry / 64) as usize] |= 1 << (entry % 64);
                    if left - 1 == few {
                        free = (0..size32)
                            .filter(|&e| taken[(e / 64) as usize] >> (e % 64) & 1 == 0)
                            .collect();
                    }
                    entry
                } else {
                    free.swap_remove(walker.nearest(&free, &divisor))
                };
                walker.step_past(entry, size32);
                table[entry as usize] = slot as u32;
                left -= 1;
                if left == 0 {
                    return table;
                }
            }
        }
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
        self.slots
            .check_room(self.max_nodes().min(MAX_NODES), "maglev")?;
        self.check_weight(weight, None)?;
        self.count_weight(weight);
        Ok(self.slots.insert(node_hash, weight))
    }

    fn remove(&mut self, slot: usize) -> Option<Relocation> {
        self.uncount_weight(self.slots.weight(slot));
        self.slots.remove(slot);
        None
    }

    fn set_weight(&mut self, slot: usize, weight: u32) -> Result<(), Error> {
        let current = self.slots.weight(slot);
        self.check_weight(weight, Some(current))?;
        self.uncount_weight(current);
        self.count_weight(weight);
        self.slots.set_weight(slot, weight);
        Ok(())
    }

    fn rebuild(&mut self) {
        let nodes = self.slots.sorted_by_hash();
        self.table.clear();
        if nodes.is_empty() {
            return;
        }
        self.table = populate(&nodes, self.size());
    }

    #[inline]
    fn lookup(&self, key_hash: u64) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let entry = reduce(key_hash, self.table.len() as u64) as usize;
        Some(self.table[entry] as usize)
    }

    fn candidates(&self, key_hash: u64) -> impl Iterator<Item = usize> + '_ {
        // Along the table from the key's entry, then every live slot, since a node whose
        // weight is tiny next to the others may own no entry at all.
        let len = self.table.len();
        let start = if len == 0 {
            0
        } else {
            reduce(key_hash, len as u64) as usize
        };
        (0..len)
            .map(move |step| self.table[(start + step) % len] as usize)
            .chain(self.slots.live_slots())
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

    /// The table by the paper's rule read literally: each node in turn tests the entries of its
    /// permutation one by one, with a division per entry, reading the table itself.
    fn probed_one_by_one(nodes: &[(usize, u64, u32)], size: u64) -> Vec<u32> {
        let permutation = |hash: u64, j: u64| {
            let offset = reduce(mix(hash, 1), size);
            let skip = if size > 1 {
                reduce(mix(hash, 2), size - 1) + 1
            } else {
                1
            };
            ((u128::from(offset) + u128::from(j) * u128::from(skip)) % u128::from(size)) as usize
        };
        let max_weight = nodes.iter().map(|n| n.2).max().unwrap();
        let mut position = vec![0u64; nodes.len()];
        let mut credit = vec![0u32; nodes.len()];
        let mut table = vec![None; size as usize];
        let mut left = size;
        while left > 0 {
            for (i, &(slot, hash, weight)) in nodes.iter().enumerate() {
                credit[i] += weight;
                while credit[i] >= max_weight && left > 0 {
                    credit[i] -= max_weight;
                    while table[permutation(hash, position[i])].is_some() {
                        position[i] += 1;
                    }
                    table[permutation(hash, position[i])] = Some(slot as u32);
                    left -= 1;
                }
            }
        }
        table.into_iter().map(Option::unwrap).collect()
    }

    #[test]
    fn the_population_claims_what_probing_one_by_one_claims() {
        // Sizes with the last `√size` entries claimed without probing: tiny ones, where every
        // claim is; and node counts above and below that threshold, weighted and not.
        for (size, count, weighted) in [
            (1, 1, false),
            (2, 1, false),
            (3, 3, true),
            (101, 7, true),
            (2053, 13, false),
            (2053, 60, true),
            (65_537, 300, true),
            (65_537, 1000, false),
        ] {
            let mut nodes: Vec<(usize, u64, u32)> = (0..count)
                .map(|i| {
                    let weight = if weighted { 1 + (i as u32 * 7) % 5 } else { 1 };
                    (i, mix(i as u64, 99), weight)
                })
                .collect();
            nodes.sort_unstable_by_key(|&(slot, hash, _)| (hash, slot));
            assert_eq!(
                populate(&nodes, size),
                probed_one_by_one(&nodes, size),
                "size {size}, {count} nodes, weighted {weighted}"
            );
        }
    }

    #[test]
    fn steps_between_entries_are_computed_exactly() {
        for size in [1u64, 2, 3, 1009, DEFAULT_TABLE_SIZE, MAX_TABLE_SIZE] {
            let divisor = Divisor::new(size);
            let mut x = 0x1234_5678_9abc_u64;
            for _ in 0..10_000 {
                x = mix(x, size) >> 16; // below 2^48
                assert_eq!(divisor.modulo(x), x % size, "{x} mod {size}");
            }
            for x in [0, size - 1, size, (1 << 48) - 1] {
                assert_eq!(divisor.modulo(x), x % size, "{x} mod {size}");
            }
            for skip in [1, size / 2 + 1, size - 1]
                .into_iter()
                .filter(|skip| (1..size).contains(skip))
            {
                assert_eq!(
                    u128::from(skip) * u128::from(inverse_mod(skip, size)) % u128::from(size),
                    1,
                    "{skip} in {size}"
                );
            }
        }
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
    fn a_table_sized_for_a_node_count_holds_it_and_stays_in_range() {
        for max_nodes in [1, 2, 362, 363, 1000, 1831] {
            let config = MaglevConfig::for_max_nodes(max_nodes).unwrap();
            let wanted = config.table_size.unwrap();
            assert!(wanted >= 5 * max_nodes * max_nodes && wanted >= DEFAULT_TABLE_SIZE);
            assert!(wanted < 5 * (max_nodes + 1) * (max_nodes + 1) || wanted == DEFAULT_TABLE_SIZE);
            let engine = Maglev::with_config(config).unwrap();
            assert!(engine.max_nodes() as u64 >= max_nodes);
        }
        // 5 · 1832² = 16,781,120 is above the largest table.
        for max_nodes in [0, 1832, u64::MAX] {
            assert_eq!(
                MaglevConfig::for_max_nodes(max_nodes),
                Err(Error::SettingOutOfRange {
                    setting: "MaglevConfig::for_max_nodes(max_nodes)",
                    value: max_nodes,
                    min: 1,
                    max: 1831,
                })
            );
        }
    }

    #[test]
    fn a_table_holds_at_most_its_size_over_entries_per_node_nodes() {
        let engine = Maglev::with_config(MaglevConfig {
            entries_per_node: MAX_TABLE_SIZE,
            table_size: Some(1000),
        })
        .unwrap();
        let mut placement = Placement::new(engine);
        assert_eq!(
            placement.add(1u32, 1),
            Err(Error::TooManyNodes { engine: "maglev" })
        );
        assert!(placement.is_empty());
        assert_eq!(placement.engine().table_size(), 0);
        // 1000 rounds up to the prime 1009, which holds 100 nodes of 10 entries.
        let small = Maglev::with_config(MaglevConfig {
            entries_per_node: 10,
            table_size: Some(1000),
        })
        .unwrap();
        let mut placement = Placement::from_members(small, (0..100u32).map(Member::new)).unwrap();
        assert_eq!(placement.engine().table_size(), 1009);
        assert_eq!(placement.engine().max_nodes(), 100);
        assert_eq!(
            placement.add(100, 1),
            Err(Error::TooManyNodes { engine: "maglev" })
        );
        assert_eq!(placement.len(), 100);
        // The default table holds 6,553 nodes of 100 entries.
        assert_eq!(Maglev::new().max_nodes(), 6553);
    }

    /// One node of weight 1,000 among nodes of weight 1 made a rebuild walk ~500 node turns per
    /// table entry; weights more than 64× apart are now refused.
    #[test]
    fn weights_more_than_the_ratio_apart_are_refused() {
        let out_of_range = |value: u64, min: u64, max: u64| Error::SettingOutOfRange {
            setting: "Maglev weight (within MAX_MAGLEV_WEIGHT_RATIO = 64 times every member's)",
            value,
            min,
            max,
        };
        let engine = Maglev::with_config(MaglevConfig {
            entries_per_node: 1,
            table_size: Some(1009),
        })
        .unwrap();
        let mut placement = Placement::from_members(engine, (0..3u32).map(Member::new)).unwrap();
        assert_eq!(placement.add(3, 1000), Err(out_of_range(1000, 1, 64)));
        assert_eq!(placement.add(3, 65), Err(out_of_range(65, 1, 64)));
        assert_eq!(placement.set_weight(&0, 65), Err(out_of_range(65, 1, 64)));
        assert_eq!(placement.len(), 3, "a refused add changed the membership");
        assert_eq!(placement.weight(&0), Some(1));
        placement.add(3, 64).unwrap();
        // Against a member of weight 64, a weight must be at least 1 and at most 64 × 1.
        assert_eq!(placement.set_weight(&3, 65), Err(out_of_range(65, 1, 64)));
        // The node's own current weight is not another member's: with the weight-1 nodes gone,
        // node 3 alone may take any weight.
        for node in 0..3 {
            placement.remove(&node).unwrap();
        }
        placement.set_weight(&3, 64 * 64).unwrap();
        assert_eq!(
            placement.add(4, 63),
            Err(out_of_range(63, 64, 64 * 64 * 64))
        );
        placement.add(4, 64).unwrap();
        assert_eq!(
            placement.engine().entry_counts().iter().sum::<usize>(),
            1009
        );
    }

    /// The README's "reweight: mostly onto / off that node".
    #[test]
    fn reweighting_moves_keys_mostly_onto_or_off_that_node() {
        let mut placement =
            Placement::from_members(Maglev::new(), (0..50u32).map(Member::new)).unwrap();
        let owners = |placement: &Placement<u32, Maglev>| -> Vec<u32> {
            (0..20_000u32)
                .map(|k| *placement.node(&k).unwrap())
                .collect()
        };
        let before = owners(&placement);
        placement.set_weight(&7, 2).unwrap();
        let after = owners(&placement);
        let (mut onto, mut between_others) = (0, 0);
        for (old, new) in before.iter().zip(&after).filter(|(old, new)| old != new) {
            if *new == 7 {
                onto += 1;
            } else {
                assert_ne!(*old, 7, "a key moved off the node whose weight grew");
                between_others += 1;
            }
        }
        // Node 7's share grows from 1/50 to 2/51 of the keys: 385 keys of 20,000.
        assert!(onto > 300, "{onto} keys moved onto the reweighted node");
        assert!(
            between_others * 10 < onto,
            "{between_others} keys moved between other nodes, {onto} onto the reweighted one"
        );
        // The table depends only on the membership and weights: reweighting back moves every
        // key it took back off it, and nothing else.
        placement.set_weight(&7, 1).unwrap();
        assert_eq!(owners(&placement), before);
    }

    #[test]
    fn entry_counts_follow_the_members_after_a_removal() {
        let config = MaglevConfig {
            entries_per_node: 1,
            table_size: Some(1009),
        };
        let mut placement = Placement::from_members(
            Maglev::with_config(config).unwrap(),
            (0..5u32).map(Member::new),
        )
        .unwrap();
        placement.remove(&2).unwrap();
        let counts = placement.engine().entry_counts();
        let members: Vec<u32> = placement.members().map(|(node, _)| *node).collect();
        assert_eq!(members, [0, 1, 3, 4]);
        assert_eq!(counts.len(), members.len());
        // Count each member's entries from lookups: entry `e` is read by key hashes in
        // [ceil(e·2^64 / m), ...), so the smallest such hash finds its owner.
        let size = placement.engine().table_size() as u64;
        let mut by_lookup = vec![0usize; members.len()];
        for entry in 0..size {
            let hash = u64::try_from((u128::from(entry) << 64).div_ceil(u128::from(size))).unwrap();
            let owner = placement.node_for_hash(hash).unwrap();
            by_lookup[members.iter().position(|m| m == owner).unwrap()] += 1;
        }
        assert_eq!(counts, by_lookup);
    }
}
