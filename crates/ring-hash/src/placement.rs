//! [`Placement`]: node values and weights over an [`Engine`], with validated membership changes.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::Hash;

use infra_common::hash::{RandomState, StableHash};

use crate::Error;
use crate::engine::{Engine, SeenSlots};
use crate::hashing::key_hash;

/// One member: a node and its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Member<N> {
    /// The node: a server name, an address, a partition number.
    pub node: N,
    /// Its relative share of the keys (at least 1; unweighted engines require exactly 1).
    #[cfg_attr(feature = "serde", serde(default = "default_weight"))]
    pub weight: u32,
}

#[cfg(feature = "serde")]
fn default_weight() -> u32 {
    1
}

impl<N> Member<N> {
    /// A member with weight 1.
    pub fn new(node: N) -> Self {
        Self { node, weight: 1 }
    }

    /// A member with the given weight.
    pub fn weighted(node: N, weight: u32) -> Self {
        Self { node, weight }
    }
}

/// A set of members, as loaded from a configuration file.
///
/// With the `serde` feature it reads, for example, this JSON (a missing weight is 1):
///
/// ```json
/// { "members": [ { "node": "cache-a", "weight": 2 }, { "node": "cache-b" } ] }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Membership<N> {
    /// The members, in the order they are added. Order matters only for the numbered-bucket
    /// engines (Jump, FlipHash, Memento), where it decides bucket numbers.
    pub members: Vec<Member<N>>,
}

impl<N> Default for Membership<N> {
    fn default() -> Self {
        Self {
            members: Vec::new(),
        }
    }
}

impl<N> FromIterator<Member<N>> for Membership<N> {
    fn from_iter<I: IntoIterator<Item = Member<N>>>(iter: I) -> Self {
        Self {
            members: iter.into_iter().collect(),
        }
    }
}

/// Nodes and weights placed by an engine: the immutable-by-default value every lookup reads.
///
/// A `Placement` is a plain value: change it with `&mut self` methods in one thread, or share it
/// through [`crate::SharedPlacement`], which publishes changed copies atomically so readers never
/// wait. Nodes may be any `StableHash + Hash + Eq + Clone` type; their stable hash (see [`crate::hashing`])
/// decides where they go, so the same membership places keys the same way in every process.
///
/// ```
/// use infra_ring_hash::{Placement, Rendezvous};
///
/// let mut placement = Placement::new(Rendezvous::new());
/// for node in ["a", "b", "c"] {
///     placement.add(node.to_string(), 1)?;
/// }
/// let replicas = placement.get_n("user:42", 2);
/// assert_eq!(replicas.len(), 2);
/// assert_ne!(replicas[0], replicas[1]);
/// assert_eq!(Some(replicas[0]), placement.node("user:42"));
/// # Ok::<(), infra_ring_hash::Error>(())
/// ```
#[derive(Clone)]
pub struct Placement<N, E> {
    engine: E,
    /// `(node, weight)` by engine slot.
    nodes: Vec<Option<(N, u32)>>,
    slot_of: HashMap<N, usize, RandomState>,
    /// Members' slots by their stable hash, which engines see instead of the node: two
    /// members must never share one ([`Error::SameStableHash`]).
    slot_of_hash: HashMap<u64, usize, RandomState>,
    /// The node removed last from each reserved slot, for engines that keep slots for their
    /// nodes ([`Engine::keeps_vacant_slots`]).
    vacated: BTreeMap<usize, N>,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: crate::metrics::PlacementCounters,
}

impl<N, E> Placement<N, E>
where
    N: StableHash + Hash + Eq + Clone + fmt::Debug,
    E: Engine,
{
    /// An empty placement over `engine` (which must be empty too).
    pub fn new(engine: E) -> Self {
        Self {
            engine,
            nodes: Vec::new(),
            slot_of: HashMap::default(),
            slot_of_hash: HashMap::default(),
            vacated: BTreeMap::new(),
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::PlacementCounters::unnamed(),
        }
    }

    /// Names this placement in its metrics (the `placement` label; default `"default"`) and
    /// registers its counters with the recorder installed now (see [`crate::metrics`]).
    ///
    /// ```
    /// use infra_ring_hash::{Placement, Ring};
    ///
    /// let mut placement = Placement::new(Ring::new()).with_metrics_name("sessions");
    /// placement.add("cache-a", 1)?;
    /// # Ok::<(), infra_ring_hash::Error>(())
    /// ```
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn with_metrics_name(mut self, name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.metrics = crate::metrics::PlacementCounters::new(name.into());
        self
    }

    /// A placement of `members`, added in order and built once.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroWeight`], [`Error::DuplicateNode`], [`Error::SameStableHash`], or the
    /// engine's error
    /// ([`Error::WeightNotSupported`], [`Error::TooManyNodes`]).
    pub fn from_members(
        engine: E,
        members: impl IntoIterator<Item = Member<N>>,
    ) -> Result<Self, Error> {
        let mut placement = Self::new(engine);
        for member in members {
            placement.insert(member.node, member.weight)?;
        }
        placement.engine.rebuild();
        Ok(placement)
    }

    /// Adds `node` with `weight`.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroWeight`], [`Error::DuplicateNode`], [`Error::SameStableHash`] (a member
    /// already hashes like `node`), [`Error::WeightNotSupported`] (weight other than 1 on an
    /// unweighted engine) or [`Error::TooManyNodes`]; the placement is then unchanged.
    pub fn add(&mut self, node: N, weight: u32) -> Result<(), Error> {
        self.insert(node, weight)?;
        self.engine.rebuild();
        #[cfg(feature = "metrics")]
        self.metrics.added();
        Ok(())
    }

    fn insert(&mut self, node: N, weight: u32) -> Result<(), Error> {
        if weight == 0 {
            return Err(Error::zero_weight(&node));
        }
        if self.slot_of.contains_key(&node) {
            return Err(Error::duplicate(&node));
        }
        let hash = key_hash(&node);
        let colliding = self.slot_of_hash.get(&hash);
        if let Some((member, _)) = colliding.and_then(|&slot| self.node_in_slot(slot)) {
            return Err(Error::same_stable_hash(&node, member));
        }
        let slot = self.engine.add(hash, weight)?;
        if self.nodes.len() <= slot {
            self.nodes.resize_with(slot + 1, || None);
        }
        self.nodes[slot] = Some((node.clone(), weight));
        self.vacated.remove(&slot);
        self.slot_of.insert(node, slot);
        self.slot_of_hash.insert(hash, slot);
        Ok(())
    }

    /// Removes `node` and returns its weight.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownNode`] when `node` is not a member.
    pub fn remove(&mut self, node: &N) -> Result<u32, Error> {
        let slot = self
            .slot_of
            .remove(node)
            .ok_or_else(|| Error::unknown(node))?;
        self.slot_of_hash.remove(&key_hash(node));
        let entry = self.nodes[slot].take();
        let weight = entry.as_ref().map_or(0, |(_, weight)| *weight);
        if let Some((node, _)) = entry
            && self.engine.keeps_vacant_slots()
        {
            self.vacated.insert(slot, node);
        }
        if let Some(moved) = self.engine.remove(slot) {
            let entry = self.nodes[moved.from].take();
            if let Some((moved_node, _)) = &entry {
                self.slot_of.insert(moved_node.clone(), moved.to);
                self.slot_of_hash.insert(key_hash(moved_node), moved.to);
            }
            self.nodes[moved.to] = entry;
        }
        self.engine.rebuild();
        #[cfg(feature = "metrics")]
        self.metrics.removed();
        Ok(weight)
    }

    /// Changes the weight of `node`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownNode`], [`Error::ZeroWeight`] (remove the node instead), or
    /// [`Error::WeightNotSupported`].
    pub fn set_weight(&mut self, node: &N, weight: u32) -> Result<(), Error> {
        let slot = *self.slot_of.get(node).ok_or_else(|| Error::unknown(node))?;
        if weight == 0 {
            return Err(Error::zero_weight(node));
        }
        self.engine.set_weight(slot, weight)?;
        if let Some(entry) = &mut self.nodes[slot] {
            entry.1 = weight;
        }
        self.engine.rebuild();
        #[cfg(feature = "metrics")]
        self.metrics.reweighted();
        Ok(())
    }

    /// The node that owns `key`, or `None` with no member.
    #[inline]
    pub fn node<K: StableHash + ?Sized>(&self, key: &K) -> Option<&N> {
        self.node_for_hash(key_hash(key))
    }

    /// The node that owns `key`.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyMembership`] with no member.
    pub fn try_node<K: StableHash + ?Sized>(&self, key: &K) -> Result<&N, Error> {
        self.node(key).ok_or(Error::EmptyMembership)
    }

    /// The node that owns a precomputed key hash (for example `stable_hash(bytes)`).
    #[inline]
    pub fn node_for_hash(&self, key_hash: u64) -> Option<&N> {
        let slot = self.engine.lookup(key_hash)?;
        self.nodes.get(slot)?.as_ref().map(|(node, _)| node)
    }

    /// Up to `n` distinct nodes for `key`, in a stable preference order that starts with
    /// [`Placement::node`]'s answer; fewer only when there are fewer than `n` members.
    /// `get_n(key, n)` is a prefix of `get_n(key, n + 1)`.
    pub fn get_n<K: StableHash + ?Sized>(&self, key: &K, n: usize) -> Vec<&N> {
        self.get_n_for_hash(key_hash(key), n)
    }

    /// [`Placement::get_n`] for a precomputed key hash.
    pub fn get_n_for_hash(&self, key_hash: u64, n: usize) -> Vec<&N> {
        let want = n.min(self.len());
        let mut nodes = Vec::with_capacity(want);
        if want == 0 {
            return nodes;
        }
        let mut seen = self.seen_slots(want);
        for slot in self.engine.candidates(key_hash) {
            if let Some((node, _)) = self.node_in_slot(slot)
                && seen.as_mut().is_none_or(|seen| seen.insert(slot))
            {
                nodes.push(node);
                if nodes.len() == want {
                    break;
                }
            }
        }
        nodes
    }

    /// [`Placement::get_n`] into `out` (cleared first), without allocating once `out` has room
    /// for `n` nodes: for a hot path that asks for replicas on every request. Distinctness is
    /// checked against `out` itself, so this suits the small `n` of replication (a handful),
    /// not a list of every member.
    ///
    /// ```
    /// use infra_ring_hash::{Member, Placement, Ring};
    ///
    /// let placement = Placement::from_members(Ring::new(), (0..5u32).map(Member::new))?;
    /// let mut replicas = Vec::with_capacity(3);
    /// for request in 0..100u32 {
    ///     placement.get_n_into(&request, 3, &mut replicas);
    ///     assert_eq!(replicas, placement.get_n(&request, 3));
    /// }
    /// # Ok::<(), infra_ring_hash::Error>(())
    /// ```
    pub fn get_n_into<'a, K: StableHash + ?Sized>(
        &'a self,
        key: &K,
        n: usize,
        out: &mut Vec<&'a N>,
    ) {
        out.clear();
        let want = n.min(self.len());
        if want == 0 {
            return;
        }
        for slot in self.engine.candidates(key_hash(key)) {
            let Some((node, _)) = self.node_in_slot(slot) else {
                continue;
            };
            if E::DISTINCT_CANDIDATES || !out.iter().any(|held| std::ptr::eq(*held, node)) {
                out.push(node);
                if out.len() == want {
                    return;
                }
            }
        }
    }

    /// Every member in `key`'s preference order ([`Placement::get_n`]'s), computed lazily: the
    /// failover walk. Taking the first node does a lookup's work (for rendezvous up to 32
    /// nodes, a score per node and a sort of them, which also pays for the rest of the walk);
    /// each further node costs what the engine needs to find the next distinct one.
    ///
    /// Skipping nodes the caller knows to be down needs no rebuild: filter the walk.
    ///
    /// ```
    /// use infra_ring_hash::{Member, Placement, Rendezvous};
    ///
    /// let placement = Placement::from_members(Rendezvous::new(), (0..5u32).map(Member::new))?;
    /// let down = [placement.node("user:42").copied().unwrap()];
    /// let healthy = placement.node_iter("user:42").find(|node| !down.contains(node));
    /// assert_eq!(healthy, Some(placement.get_n("user:42", 2)[1]));
    /// # Ok::<(), infra_ring_hash::Error>(())
    /// ```
    pub fn node_iter<K: StableHash + ?Sized>(&self, key: &K) -> impl Iterator<Item = &N> + '_ {
        self.node_iter_for_hash(key_hash(key))
    }

    /// The first node in `key`'s preference order that `usable` accepts: a lookup that skips
    /// nodes the caller marks unhealthy, with no rebuild. A key whose owner is usable stays
    /// where it is; a key whose owner is skipped goes to its next usable candidate (the next
    /// in [`Placement::get_n`]'s order), so only the skipped nodes' keys move. `None` when no
    /// member is usable.
    ///
    /// ```
    /// use infra_ring_hash::{Maglev, Member, Placement};
    ///
    /// let placement = Placement::from_members(Maglev::new(), (0..5u32).map(Member::new))?;
    /// let down = *placement.node("user:42").unwrap();
    /// let owner = placement.node_where("user:42", |node| *node != down);
    /// assert_eq!(owner, Some(placement.get_n("user:42", 2)[1]));
    /// # Ok::<(), infra_ring_hash::Error>(())
    /// ```
    pub fn node_where<K: StableHash + ?Sized>(
        &self,
        key: &K,
        mut usable: impl FnMut(&N) -> bool,
    ) -> Option<&N> {
        self.node_iter(key).find(|node| usable(node))
    }

    /// Up to `n` distinct nodes for `key` spread across failure domains: nodes of zones not
    /// yet used come first, in `key`'s preference order, then the remaining nodes in that
    /// order. `zone` tells a node's zone (a rack, an availability zone), typically a field of
    /// the node value. The first node is [`Placement::node`]'s; with at least `n` zones the
    /// `n` nodes are in `n` different zones.
    ///
    /// It walks [`Placement::node_iter`] until it has `n` zones, so with fewer zones than `n`
    /// it visits every member.
    ///
    /// ```
    /// use infra_ring_hash::{Member, Placement, Rendezvous};
    ///
    /// // (zone, host)
    /// let nodes = [("a", 1), ("a", 2), ("a", 3), ("b", 4), ("b", 5), ("c", 6)];
    /// let placement = Placement::from_members(Rendezvous::new(), nodes.map(Member::new))?;
    /// let replicas = placement.get_n_across_zones("user:42", 3, |node| node.0);
    /// let mut zones: Vec<&str> = replicas.iter().map(|node| node.0).collect();
    /// zones.sort();
    /// assert_eq!(zones, ["a", "b", "c"]);
    /// assert_eq!(Some(replicas[0]), placement.node("user:42"));
    /// # Ok::<(), infra_ring_hash::Error>(())
    /// ```
    pub fn get_n_across_zones<K: StableHash + ?Sized, Z: PartialEq>(
        &self,
        key: &K,
        n: usize,
        zone: impl Fn(&N) -> Z,
    ) -> Vec<&N> {
        let mut chosen = Vec::with_capacity(n.min(self.len()));
        let mut zones = Vec::new();
        // Nodes of a zone already used, in preference order: the fill once zones run out.
        let mut same_zone = Vec::new();
        for node in self.node_iter(key) {
            if chosen.len() == n {
                return chosen;
            }
            let node_zone = zone(node);
            if zones.contains(&node_zone) {
                same_zone.push(node);
            } else {
                zones.push(node_zone);
                chosen.push(node);
            }
        }
        let missing = n.saturating_sub(chosen.len());
        chosen.extend(same_zone.into_iter().take(missing));
        chosen
    }

    /// [`Placement::node_iter`] for a precomputed key hash.
    pub fn node_iter_for_hash(&self, key_hash: u64) -> impl Iterator<Item = &N> + '_ {
        let mut candidates = self.engine.candidates(key_hash);
        let mut given = GivenSlots::default();
        std::iter::from_fn(move || {
            if given.count == self.len() {
                return None;
            }
            // An engine whose candidates never repeat needs no record of them.
            let slot = candidates.find(|&slot| {
                self.node_in_slot(slot).is_some()
                    && (E::DISTINCT_CANDIDATES || given.insert(slot, self.slot_bound()))
            })?;
            given.count += usize::from(E::DISTINCT_CANDIDATES);
            self.node_in_slot(slot).map(|(node, _)| node)
        })
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.slot_of.len()
    }

    /// Whether there is no member.
    pub fn is_empty(&self) -> bool {
        self.slot_of.is_empty()
    }

    /// Whether `node` is a member.
    pub fn contains(&self, node: &N) -> bool {
        self.slot_of.contains_key(node)
    }

    /// The weight of `node`, if it is a member.
    pub fn weight(&self, node: &N) -> Option<u32> {
        let slot = *self.slot_of.get(node)?;
        self.nodes[slot].as_ref().map(|(_, weight)| *weight)
    }

    /// The members in slot order (for numbered-bucket engines, bucket order).
    pub fn members(&self) -> impl Iterator<Item = (&N, u32)> + '_ {
        self.nodes
            .iter()
            .filter_map(|entry| entry.as_ref().map(|(node, weight)| (node, *weight)))
    }

    /// The members as a [`Membership`] (in slot order), for saving to a file.
    ///
    /// A membership lists working nodes only. For [`crate::Memento`] after removals, reloading
    /// it renumbers the buckets and moves keys: save [`Placement::buckets`] instead.
    pub fn membership(&self) -> Membership<N> {
        self.members()
            .map(|(node, weight)| Member::weighted(node.clone(), weight))
            .collect()
    }

    /// One past the highest slot a node can occupy; slots index per-node tables such as
    /// [`crate::BoundedLoad`]'s counters.
    pub(crate) fn slot_bound(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn slot_of(&self, node: &N) -> Option<usize> {
        self.slot_of.get(node).copied()
    }

    pub(crate) fn lookup_slot(&self, key_hash: u64) -> Option<usize> {
        self.engine.lookup(key_hash)
    }

    /// A record of the slots a list of `want` holds already, or `None` for an engine whose
    /// candidates never repeat.
    fn seen_slots(&self, want: usize) -> Option<SeenSlots> {
        (!E::DISTINCT_CANDIDATES).then(|| SeenSlots::new(want, self.slot_bound()))
    }

    /// The first `n` distinct live slots of the engine's candidates, into `out`.
    pub(crate) fn get_n_slots(&self, key_hash: u64, n: usize, out: &mut Vec<usize>) {
        out.clear();
        let want = n.min(self.len());
        if want == 0 {
            return;
        }
        let mut seen = self.seen_slots(want);
        for slot in self.engine.candidates(key_hash) {
            if self.node_in_slot(slot).is_some()
                && seen.as_mut().is_none_or(|seen| seen.insert(slot))
            {
                out.push(slot);
                if out.len() == want {
                    return;
                }
            }
        }
    }
}

impl<N> Placement<N, crate::Maglev>
where
    N: StableHash + Hash + Eq + Clone + fmt::Debug,
{
    /// Changes the Maglev table size (rounded up to a prime) and rebuilds the table. **This
    /// moves most keys** (88% of them when a 100-node table doubles): a key's entry depends
    /// on the table size. Use it to make room
    /// for more than [`crate::Maglev::max_nodes`] nodes, ideally when the cluster can afford
    /// to lose its key placement (a cache's warm data, for example).
    ///
    /// # Errors
    ///
    /// [`Error::SettingOutOfRange`] for a size outside 1 to [`crate::MAX_TABLE_SIZE`], or
    /// [`Error::TooManyNodes`] when the new table cannot hold the current members; the
    /// placement is then unchanged.
    pub fn resize_table(&mut self, table_size: u64) -> Result<(), Error> {
        self.engine.resize(table_size)?;
        self.engine.rebuild();
        Ok(())
    }
}

impl<N> Placement<N, crate::Memento>
where
    N: StableHash + Hash + Eq + Clone + fmt::Debug,
{
    /// Every bucket in order, working or vacant, with the node that holds or held it: the
    /// state that [`Placement::from_buckets`] turns back into this exact placement.
    ///
    /// ```
    /// use infra_ring_hash::{Member, Memento, Placement};
    ///
    /// let mut placement = Placement::from_members(Memento::new(), (0..5u32).map(Member::new))?;
    /// placement.remove(&1)?;
    /// placement.remove(&3)?;
    /// let reloaded = Placement::from_buckets(placement.buckets())?;
    /// for key in 0..1000u32 {
    ///     assert_eq!(reloaded.node(&key), placement.node(&key));
    /// }
    /// // Node 1 comes back to its own bucket, with its own keys.
    /// let mut placement = reloaded;
    /// placement.add(1, 1)?;
    /// assert!(!placement.buckets().buckets[1].vacant);
    /// # Ok::<(), infra_ring_hash::Error>(())
    /// ```
    pub fn buckets(&self) -> crate::BucketLayout<N> {
        let buckets = (0..self.engine.bucket_count())
            .filter_map(|slot| match self.nodes.get(slot).and_then(Option::as_ref) {
                Some((node, _)) => Some(crate::Bucket {
                    node: node.clone(),
                    vacant: false,
                }),
                None => self.vacated.get(&slot).map(|node| crate::Bucket {
                    node: node.clone(),
                    vacant: true,
                }),
            })
            .collect();
        crate::BucketLayout { buckets }
    }

    /// The placement a [`crate::BucketLayout`] describes (see [`Placement::buckets`]).
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateNode`] when a node appears twice, [`Error::SameStableHash`] when two
    /// buckets' nodes hash alike (a vacant bucket is restored by its node's hash), or
    /// [`Error::TooManyNodes`] beyond
    /// [`crate::MAX_NODES`] buckets.
    pub fn from_buckets(layout: crate::BucketLayout<N>) -> Result<Self, Error> {
        if layout.buckets.len() > crate::MAX_NODES {
            return Err(Error::TooManyNodes { engine: "memento" });
        }
        let mut seen = std::collections::HashSet::with_capacity(layout.buckets.len());
        let mut slot_of_hash =
            HashMap::with_capacity_and_hasher(layout.buckets.len(), RandomState::default());
        for (slot, bucket) in layout.buckets.iter().enumerate() {
            if !seen.insert(&bucket.node) {
                return Err(Error::duplicate(&bucket.node));
            }
            if let Some(first) = slot_of_hash.insert(key_hash(&bucket.node), slot) {
                return Err(Error::same_stable_hash(
                    &bucket.node,
                    &layout.buckets[first].node,
                ));
            }
        }
        let engine = crate::Memento::from_layout(
            layout
                .buckets
                .iter()
                .map(|bucket| (key_hash(&bucket.node), bucket.vacant)),
        );
        let mut placement = Self::new(engine);
        for (slot, bucket) in layout.buckets.into_iter().enumerate() {
            if bucket.vacant {
                slot_of_hash.remove(&key_hash(&bucket.node));
                placement.vacated.insert(slot, bucket.node);
                placement.nodes.push(None);
            } else {
                placement.slot_of.insert(bucket.node.clone(), slot);
                placement.nodes.push(Some((bucket.node, 1)));
            }
        }
        placement.slot_of_hash = slot_of_hash;
        Ok(placement)
    }
}

impl<N, E> Placement<N, E> {
    /// The engine.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The node and weight in `slot`, if any.
    pub(crate) fn node_in_slot(&self, slot: usize) -> Option<&(N, u32)> {
        self.nodes.get(slot)?.as_ref()
    }
}

impl<N: fmt::Debug, E: Engine> fmt::Debug for Placement<N, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Placement")
            .field("engine", &self.engine.name())
            .field("members", &self.nodes.iter().flatten().collect::<Vec<_>>())
            .finish()
    }
}

/// Slots a failover walk ([`Placement::node_iter`]) has given. A replica walk takes a handful,
/// so the first few sit in an inline list checked one by one, and a walk allocates (a flag per
/// slot) only past them.
#[derive(Default)]
struct GivenSlots {
    inline: [usize; GivenSlots::INLINE],
    count: usize,
    beyond_inline: Vec<bool>,
}

impl GivenSlots {
    const INLINE: usize = 8;

    /// Records `slot` (below `bound`); whether it was new.
    fn insert(&mut self, slot: usize, bound: usize) -> bool {
        let new = if !self.beyond_inline.is_empty() {
            !std::mem::replace(&mut self.beyond_inline[slot], true)
        } else if self.inline[..self.count].contains(&slot) {
            false
        } else if self.count < Self::INLINE {
            self.inline[self.count] = slot;
            true
        } else {
            self.beyond_inline = vec![false; bound];
            for &given in &self.inline {
                self.beyond_inline[given] = true;
            }
            self.beyond_inline[slot] = true;
            true
        };
        self.count += usize::from(new);
        new
    }
}
