//! Consistent hashing with bounded loads, over any engine, across membership changes.

use std::fmt;
use std::hash::Hash;

use infra_common::hash::StableHash;
use infra_common::sync::Arc;
use infra_common::sync::atomic::{AtomicU64, Ordering};

use crate::Error;
use crate::engine::Engine;
use crate::hashing::key_hash;
use crate::placement::Placement;
use crate::shared::SharedPlacement;
use crate::snapshot::SnapshotCell;

/// The largest capacity factor [`BoundedLoad::new`] accepts (one million). A factor that large
/// already bounds nothing in practice (a node may hold a million times its share), and the cap
/// keeps the factor in thousandths, `c_milli`, at most 10^9, so the capacity arithmetic
/// `c_milli × m × w` fits its 128 bits for any lease count and weight.
pub const MAX_CAPACITY_FACTOR: f64 = 1_000_000.0;

/// Consistent hashing with bounded loads (Mirrokni, Thorup & Zadimoghaddam, SODA 2018) over any
/// engine's preference order, shared between threads like a [`SharedPlacement`].
///
/// Keys are assigned by taking a *lease*: the key goes to the first node in its
/// [`Placement::get_n`] order whose load after the assignment stays within its capacity
/// `⌈c × m × weight / total_weight⌉`, where `m` counts the leases held on members including the
/// new one and `c ≥ 1` is the capacity factor. With equal weights that is the paper's
/// `⌈c × average⌉`. Dropping the lease releases the slot. Since the capacities sum to at least
/// `c × m ≥ m`, some node always has room.
///
/// The factor is kept as an integer number of thousandths, so the capacity is computed in
/// integer arithmetic: `⌈c_milli × m × w / (1000 × W)⌉`.
///
/// # Membership changes
///
/// [`BoundedLoad::add`], [`BoundedLoad::remove`], [`BoundedLoad::set_weight`] and
/// [`BoundedLoad::update`] change the membership through the [`SharedPlacement`] the layer
/// follows (copy, change, publish a snapshot; lookups never wait), and the loads come along: a node keeps its
/// count while it stays a member. A removed node's leases stop counting at once (its keys are
/// the caller's to place again); dropping them later changes no member's count. A node that
/// leaves and comes back starts from zero.
///
/// # Over a shared placement
///
/// [`BoundedLoad::over_shared`] builds the layer over an existing [`SharedPlacement`] instead
/// of a placement of its own: the two share one membership and its snapshots, so a change made
/// through either is seen by both (the loads follow it as above) and nobody keeps two member
/// lists in step by hand. [`BoundedLoad::new`] makes a shared placement of its own, reachable
/// through [`BoundedLoad::shared`].
///
/// # Owned leases
///
/// A [`Lease`] owns what it needs to release itself (no borrow of the `BoundedLoad`), so it can
/// be moved into a spawned thread or a `'static` task and dropped there.
///
/// # Concurrency
///
/// Loads are atomic counters: [`BoundedLoad::take`] claims room on a node with a
/// compare-and-swap that re-checks the capacity, so two threads can never both take a node's
/// last unit of room. The capacity uses `m` as the take read it when it started: leases
/// released while the take looks still count in it, so under concurrent releases the chosen
/// node may exceed the bound for the count at that instant by the leases released meanwhile;
/// without them the bound holds at the moment each lease is taken. When leases are released
/// or a node joins, `m` shrinks or the weights change and a node may sit above the new bound
/// until its own keys leave (the paper's insert-time guarantee). A `take` that races other
/// `take`s for the last room everywhere re-reads `m` and the membership and tries again.
///
/// ```
/// use infra_ring_hash::{BoundedLoad, Member, Placement, Ring};
///
/// let placement = Placement::from_members(
///     Ring::new(),
///     (0..4).map(|i| Member::new(format!("node-{i}"))),
/// )?;
/// let bounded = BoundedLoad::new(placement, 1.25)?;
/// let leases: Vec<_> = (0..100).map(|key| bounded.take(&key)).collect::<Result<_, _>>()?;
/// // No node holds more than ⌈1.25 × 100 / 4⌉ = 32 keys.
/// assert!(bounded.loads().iter().all(|&(_, load)| load <= 32));
///
/// // Loads survive a membership change.
/// let before = bounded.load(&"node-0".to_string());
/// bounded.add("node-4".to_string(), 1)?;
/// assert_eq!(bounded.load(&"node-0".to_string()), before);
/// drop(leases);
/// assert_eq!(bounded.total(), 0);
/// # Ok::<(), infra_ring_hash::Error>(())
/// ```
pub struct BoundedLoad<N, E> {
    loads: Arc<Loads<N, E>>,
    /// The membership the loads follow: changes go through it, and it passes each one on to
    /// `loads` before the change returns.
    shared: Arc<SharedPlacement<N, E>>,
}

/// The loads of one [`BoundedLoad`]: what its lookups read, kept up to date by the
/// [`SharedPlacement`] it follows.
pub(crate) struct Loads<N, E> {
    current: SnapshotCell<View<N, E>>,
    /// Leases held on members in all, shared with every lease.
    total: Arc<AtomicU64>,
    factor_milli: u64,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::BoundedCounters,
}

/// One membership with its counters: what a `take` reads, replaced whole on a change.
struct View<N, E> {
    placement: Arc<Placement<N, E>>,
    total_weight: u64,
    /// Weight per slot (0 for empty slots), next to the loads so the room check does not touch
    /// the node values.
    weights: Box<[u32]>,
    /// Each member's counter by slot; a member's counter moves to its new slot when the
    /// membership changes, so its load survives.
    loads: Box<[Option<Arc<NodeLoad<N>>>]>,
}

/// Set in a counter when its node leaves: its leases no longer count in the total, and the
/// counter reads as full so no stale `take` claims it.
const RETIRED: u64 = 1 << 63;

/// A member's lease count, shared by its leases. The top bit is [`RETIRED`].
struct NodeLoad<N> {
    node: N,
    count: AtomicU64,
}

impl<N> NodeLoad<N> {
    /// Gives one lease back. Decrementing the count and reading the retired bit is one atomic
    /// step, so each lease leaves the total exactly once: here if its node was still a member,
    /// in [`NodeLoad::retire`] otherwise.
    fn release(&self, total: &AtomicU64) {
        let before = self.count.fetch_sub(1, Ordering::AcqRel);
        if before & RETIRED == 0 {
            total.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Marks the node as gone and takes its leases out of the total.
    fn retire(&self, total: &AtomicU64) {
        let before = self.count.fetch_or(RETIRED, Ordering::AcqRel);
        if before & RETIRED == 0 {
            total.fetch_sub(before, Ordering::AcqRel);
        }
    }
}

/// A key's assignment to a node; releases the node's slot when dropped. Owns what it needs, so
/// it can outlive the borrow of the [`BoundedLoad`] it came from (it is `'static` when `N` is).
#[must_use = "dropping a lease releases it at once"]
pub struct Lease<N> {
    load: Arc<NodeLoad<N>>,
    total: Arc<AtomicU64>,
}

impl<N, E> View<N, E>
where
    N: StableHash + Hash + Eq + Clone + fmt::Debug,
    E: Engine,
{
    /// The view of `placement`, taking each member's counter from `previous` when it was a
    /// member there.
    fn new(placement: Arc<Placement<N, E>>, previous: Option<&Self>) -> Self {
        let total_weight: u64 = placement.members().map(|(_, w)| u64::from(w)).sum();
        let mut weights = Vec::with_capacity(placement.slot_bound());
        let mut loads = Vec::with_capacity(placement.slot_bound());
        for slot in 0..placement.slot_bound() {
            let Some((node, weight)) = placement.node_in_slot(slot) else {
                weights.push(0);
                loads.push(None);
                continue;
            };
            weights.push(*weight);
            let kept = previous.and_then(|view| view.counter_of(node)).cloned();
            loads.push(Some(kept.unwrap_or_else(|| {
                Arc::new(NodeLoad {
                    node: node.clone(),
                    count: AtomicU64::new(0),
                })
            })));
        }
        Self {
            placement,
            total_weight: total_weight.max(1),
            weights: weights.into(),
            loads: loads.into(),
        }
    }

    fn counter_of(&self, node: &N) -> Option<&Arc<NodeLoad<N>>> {
        self.placement
            .slot_of(node)
            .and_then(|slot| self.loads[slot].as_ref())
    }

    /// Whether a node of `weight` holding `load` leases has room for one more when `held`
    /// leases exist: `load < ⌈c·held·w / W⌉`, which for integers is `load · 1000·W <
    /// c_milli·held·w`, two multiplications and no division. A retired counter (top bit set)
    /// never has room.
    #[inline]
    fn has_room(&self, factor_milli: u64, load: u64, held: u64, weight: u32) -> bool {
        let limit = u128::from(factor_milli) * u128::from(held) * u128::from(weight);
        u128::from(load) * 1000 * u128::from(self.total_weight) < limit
    }

    /// Adds one to `slot`'s load if it stays within capacity for `held` leases.
    #[inline]
    fn try_claim(&self, factor_milli: u64, slot: usize, held: u64) -> Option<&Arc<NodeLoad<N>>> {
        let counter = self.loads[slot].as_ref()?;
        let weight = self.weights[slot];
        let mut current = counter.count.load(Ordering::Relaxed);
        while self.has_room(factor_milli, current, held, weight) {
            match counter.count.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(counter),
                Err(actual) => current = actual,
            }
        }
        None
    }
}

/// Where one attempt at a take ended.
enum Attempt<N> {
    Primary(Arc<NodeLoad<N>>),
    Spilled(Arc<NodeLoad<N>>),
    Full,
    Empty,
}

/// The capacity factor in thousandths, or the error for a factor outside 1.0 to
/// [`MAX_CAPACITY_FACTOR`].
fn factor_milli(factor: f64) -> Result<u64, Error> {
    if !factor.is_finite() || !(1.0..=MAX_CAPACITY_FACTOR).contains(&factor) {
        return Err(Error::InvalidCapacityFactor {
            factor: factor.to_string(),
        });
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 1000..=1e9
    let factor_milli = (factor * 1000.0).round() as u64;
    Ok(factor_milli)
}

impl<N, E> Loads<N, E>
where
    N: StableHash + Hash + Eq + Clone + fmt::Debug,
    E: Engine,
{
    fn new(placement: Arc<Placement<N, E>>, factor_milli: u64) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::BoundedCounters::new(&placement.metrics),
            current: SnapshotCell::new(Arc::new(View::new(placement, None))),
            total: Arc::new(AtomicU64::new(0)),
            factor_milli,
        }
    }

    /// Moves the loads onto `placement`, the new membership: the nodes that stay keep their
    /// counters, removed nodes' leases stop counting. Called by the followed
    /// [`SharedPlacement`] with its changes serialized.
    /// Whether this thread is inside a read of the layer's current view.
    pub(crate) fn read_by_this_thread(&self) -> bool {
        self.current.read_by_this_thread()
    }

    pub(crate) fn follow(&self, placement: &Arc<Placement<N, E>>) {
        let previous = self.current.load();
        let view = View::new(Arc::clone(placement), Some(&previous));
        let removed: Vec<_> = previous
            .loads
            .iter()
            .flatten()
            .filter(|counter| !view.placement.contains(&counter.node))
            .cloned()
            .collect();
        // Once published (and the old view drained), no take can claim a removed node; its
        // counter then leaves the total with whatever leases it still has.
        drop(self.current.publish(Arc::new(view)));
        for counter in removed {
            counter.retire(&self.total);
        }
    }
}

impl<N, E> BoundedLoad<N, E>
where
    N: StableHash + Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    E: Engine,
{
    /// A bounded-load layer over `placement` with capacity factor `factor` (from 1.0 to
    /// [`MAX_CAPACITY_FACTOR`]; 1.25 is a common choice), rounded to thousandths. The
    /// membership is shared through a [`SharedPlacement`] of its own ([`BoundedLoad::shared`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCapacityFactor`] unless `factor` is a finite number from 1.0 to
    /// [`MAX_CAPACITY_FACTOR`].
    pub fn new(placement: impl Into<Arc<Placement<N, E>>>, factor: f64) -> Result<Self, Error> {
        let factor_milli = factor_milli(factor)?;
        let shared = Arc::new(SharedPlacement::from_snapshot(placement.into()));
        let loads = shared.attach(|placement| Loads::new(placement, factor_milli))?;
        Ok(Self { loads, shared })
    }

    /// A bounded-load layer over `shared`, an existing shared placement: lookups follow every
    /// membership change made through `shared` (or through this layer, which makes them on
    /// `shared`), and the loads of the nodes that stay carry over. Several layers may follow
    /// one placement, each with loads of its own.
    ///
    /// ```
    /// use infra_common::sync::Arc;
    /// use infra_ring_hash::{BoundedLoad, Rendezvous, SharedPlacement};
    ///
    /// let shared = Arc::new(SharedPlacement::new(Rendezvous::new()));
    /// shared.add("cache-a".to_string(), 1)?;
    /// shared.add("cache-b".to_string(), 1)?;
    /// let bounded = BoundedLoad::over_shared(Arc::clone(&shared), 1.25)?;
    /// let lease = bounded.take("session-1")?;
    /// let owner = lease.node().clone();
    ///
    /// // A change made through the shared placement reaches the bounded lookups, and the
    /// // load of a node that stays carries over.
    /// shared.add("cache-c".to_string(), 1)?;
    /// assert_eq!(bounded.placement().len(), 3);
    /// assert_eq!(bounded.load(&owner), 1);
    /// drop(lease);
    /// assert_eq!(bounded.total(), 0);
    /// # Ok::<(), infra_ring_hash::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCapacityFactor`] as for [`BoundedLoad::new`];
    /// [`Error::ChangeInsideOwnSection`] when called from inside a closure of `shared` (a
    /// change's, or [`SharedPlacement::with_snapshot`]'s).
    pub fn over_shared(shared: Arc<SharedPlacement<N, E>>, factor: f64) -> Result<Self, Error> {
        let factor_milli = factor_milli(factor)?;
        let loads = shared.attach(|placement| Loads::new(placement, factor_milli))?;
        Ok(Self { loads, shared })
    }

    /// The shared placement whose membership this layer follows.
    pub fn shared(&self) -> &Arc<SharedPlacement<N, E>> {
        &self.shared
    }

    /// The current membership: an immutable placement that later changes do not affect.
    pub fn placement(&self) -> Arc<Placement<N, E>> {
        self.loads.current.read(|view| Arc::clone(&view.placement))
    }

    /// The capacity factor in thousandths (1250 for 1.25).
    pub fn factor_milli(&self) -> u64 {
        self.loads.factor_milli
    }

    /// The most leases a node of weight `weight` may hold when `held` leases exist in all, with
    /// the current membership's total weight; `u64::MAX` when that is larger.
    pub fn capacity(&self, held: u64, weight: u32) -> u64 {
        let total_weight = self.loads.current.read(|view| view.total_weight);
        let numerator = u128::from(self.loads.factor_milli) * u128::from(held) * u128::from(weight);
        let denominator = 1000 * u128::from(total_weight);
        // c × held passes 2^64 when `held` is within a factor c of it.
        u64::try_from(numerator.div_ceil(denominator)).unwrap_or(u64::MAX)
    }

    /// Assigns `key` to a node with room and returns the lease.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyMembership`] when the placement has no node.
    pub fn take<K: StableHash + ?Sized>(&self, key: &K) -> Result<Lease<N>, Error> {
        self.take_for_hash(key_hash(key))
    }

    /// [`BoundedLoad::take`] for a precomputed key hash.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyMembership`] when the placement has no node.
    pub fn take_for_hash(&self, key_hash: u64) -> Result<Lease<N>, Error> {
        let loads = &*self.loads;
        let mut held = loads.total.fetch_add(1, Ordering::AcqRel) + 1;
        let mut order = Vec::new();
        loop {
            // Each attempt runs in one read section and never waits inside it, so a writer
            // publishing a new membership is never held up by a take that cannot place its key.
            let attempt = loads
                .current
                .read(|view| Self::attempt(loads, view, key_hash, held, &mut order));
            let load = match attempt {
                Attempt::Primary(load) => {
                    #[cfg(feature = "metrics")]
                    loads.metrics.primary();
                    load
                }
                Attempt::Spilled(load) => {
                    #[cfg(feature = "metrics")]
                    loads.metrics.spilled();
                    load
                }
                Attempt::Empty => {
                    loads.total.fetch_sub(1, Ordering::AcqRel);
                    return Err(Error::EmptyMembership);
                }
                Attempt::Full => {
                    // Every node looked full against a stale count: concurrent takes raised
                    // loads after this one read `held`, or a node left. Re-read it (it includes
                    // every lease placed since) and the membership, and retry.
                    infra_common::sync::spin_loop();
                    held = loads.total.load(Ordering::Acquire);
                    continue;
                }
            };
            return Ok(Lease {
                load,
                total: Arc::clone(&loads.total),
            });
        }
    }

    fn attempt(
        loads: &Loads<N, E>,
        view: &View<N, E>,
        key_hash: u64,
        held: u64,
        order: &mut Vec<usize>,
    ) -> Attempt<N> {
        let Some(primary) = view.placement.lookup_slot(key_hash) else {
            return Attempt::Empty;
        };
        if let Some(load) = view.try_claim(loads.factor_milli, primary, held) {
            return Attempt::Primary(Arc::clone(load));
        }
        view.placement
            .get_n_slots(key_hash, view.placement.len(), order);
        for &slot in order.iter().skip(1) {
            if let Some(load) = view.try_claim(loads.factor_milli, slot, held) {
                return Attempt::Spilled(Arc::clone(load));
            }
        }
        Attempt::Full
    }

    /// The node `key` would be assigned to now, without taking a lease: the first node in its
    /// preference order with room for one more key. `None` with no member.
    ///
    /// Another thread may take the room before a later [`BoundedLoad::take`]; use `take` when
    /// the assignment must count.
    pub fn peek<K: StableHash + ?Sized>(&self, key: &K) -> Option<N> {
        self.peek_for_hash(key_hash(key))
    }

    /// [`BoundedLoad::peek`] for a precomputed key hash.
    pub fn peek_for_hash(&self, key_hash: u64) -> Option<N> {
        let loads = &*self.loads;
        let held = loads.total.load(Ordering::Acquire) + 1;
        loads.current.read(|view| {
            let primary = view.placement.lookup_slot(key_hash)?;
            let room = |slot: usize| {
                view.loads[slot].as_ref().is_some_and(|counter| {
                    view.has_room(
                        loads.factor_milli,
                        counter.count.load(Ordering::Relaxed),
                        held,
                        view.weights[slot],
                    )
                })
            };
            let slot = if room(primary) {
                primary
            } else {
                let mut order = Vec::new();
                view.placement
                    .get_n_slots(key_hash, view.placement.len(), &mut order);
                order
                    .into_iter()
                    .find(|&slot| room(slot))
                    .unwrap_or(primary)
            };
            view.placement
                .node_in_slot(slot)
                .map(|(node, _)| node.clone())
        })
    }

    /// Leases held on members in all.
    pub fn total(&self) -> u64 {
        self.loads.total.load(Ordering::Acquire)
    }

    /// Leases held on `node` (0 for a non-member).
    pub fn load(&self, node: &N) -> u64 {
        self.loads.current.read(|view| {
            view.counter_of(node).map_or(0, |counter| {
                counter.count.load(Ordering::Acquire) & !RETIRED
            })
        })
    }

    /// Every member with its current load, in slot order.
    pub fn loads(&self) -> Vec<(N, u64)> {
        self.loads.current.read(|view| {
            view.loads
                .iter()
                .flatten()
                .map(|counter| {
                    (
                        counter.node.clone(),
                        counter.count.load(Ordering::Acquire) & !RETIRED,
                    )
                })
                .collect()
        })
    }

    /// Applies `change` to a copy of the current placement and publishes it, on the shared
    /// placement this layer follows, with the loads of the nodes that stay; on error nothing is
    /// published. Removed nodes' leases stop counting. Returns `change`'s result.
    ///
    /// # Errors
    ///
    /// As [`SharedPlacement::update`].
    pub fn update<R>(
        &self,
        change: impl FnOnce(&mut Placement<N, E>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        self.shared.update(change)
    }

    /// Adds `node` with no leases; see [`Placement::add`].
    ///
    /// # Errors
    ///
    /// As [`Placement::add`].
    pub fn add(&self, node: N, weight: u32) -> Result<(), Error> {
        self.shared.add(node, weight)
    }

    /// Removes `node`; its leases stop counting. See [`Placement::remove`].
    ///
    /// # Errors
    ///
    /// As [`Placement::remove`].
    pub fn remove(&self, node: &N) -> Result<u32, Error> {
        self.shared.remove(node)
    }

    /// Reweights `node`, keeping its load; see [`Placement::set_weight`].
    ///
    /// # Errors
    ///
    /// As [`Placement::set_weight`].
    pub fn set_weight(&self, node: &N, weight: u32) -> Result<(), Error> {
        self.shared.set_weight(node, weight)
    }
}

impl<N, E> Drop for BoundedLoad<N, E> {
    /// Stops following the shared placement, so later changes no longer update these loads.
    fn drop(&mut self) {
        self.shared.detach(&self.loads);
    }
}

impl<N> Lease<N> {
    /// The node the key was assigned to.
    pub fn node(&self) -> &N {
        &self.load.node
    }

    /// Releases the lease now (the same as dropping it).
    pub fn release(self) {}
}

impl<N> Drop for Lease<N> {
    fn drop(&mut self) {
        self.load.release(&self.total);
    }
}

impl<N: fmt::Debug> fmt::Debug for Lease<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease").field("node", self.node()).finish()
    }
}

impl<N, E: Engine> fmt::Debug for BoundedLoad<N, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedLoad")
            .field(
                "engine",
                &self
                    .loads
                    .current
                    .read(|view| view.placement.engine().name()),
            )
            .field("factor_milli", &self.loads.factor_milli)
            .field("total", &self.loads.total.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::{Jump, Member, Rendezvous, Ring};
    use infra_common::sync::thread;

    fn nodes(count: u32) -> Placement<u32, Ring> {
        Placement::from_members(Ring::new(), (0..count).map(Member::new)).unwrap()
    }

    #[test]
    fn no_node_exceeds_its_capacity() {
        let bounded = BoundedLoad::new(nodes(10), 1.25).unwrap();
        let mut leases = Vec::new();
        for key in 0..10_000u64 {
            leases.push(bounded.take(&key).unwrap());
            let held = bounded.total();
            let cap = bounded.capacity(held, 1);
            assert!(bounded.loads().iter().all(|&(_, load)| load <= cap));
        }
        // ⌈1.25 × 10000 / 10⌉
        assert!(bounded.loads().iter().all(|&(_, load)| load <= 1250));
        leases.truncate(10);
        assert_eq!(bounded.total(), 10);
        drop(leases);
        assert!(bounded.loads().iter().all(|&(_, load)| load == 0));
    }

    #[test]
    fn keys_stay_on_their_engine_node_while_there_is_room() {
        let placement = nodes(5);
        let bounded = BoundedLoad::new(placement.clone(), 2.0).unwrap();
        let lease = bounded.take("user:1").unwrap();
        assert_eq!(Some(lease.node()), placement.node("user:1"));
        lease.release();
        assert_eq!(bounded.total(), 0);
    }

    #[test]
    fn peek_predicts_take_without_counting() {
        let bounded = BoundedLoad::new(nodes(3), 1.0).unwrap();
        let mut leases = Vec::new();
        for key in 0..300u64 {
            let predicted = bounded.peek(&key);
            let lease = bounded.take(&key).unwrap();
            assert_eq!(predicted.as_ref(), Some(lease.node()));
            leases.push(lease);
        }
        let total = bounded.total();
        assert_eq!(total, 300);
        assert!(bounded.peek(&"another").is_some());
        assert_eq!(bounded.total(), total);
        let empty = BoundedLoad::new(Placement::<u32, Ring>::new(Ring::new()), 1.0).unwrap();
        assert_eq!(empty.peek(&1), None);
    }

    #[test]
    fn room_check_matches_the_capacity_formula() {
        let bounded = BoundedLoad::new(nodes(7), 1.3).unwrap();
        for held in 1..200u64 {
            let capacity = bounded.capacity(held, 1);
            for load in 0..capacity + 3 {
                let room = bounded
                    .loads
                    .current
                    .read(|view| view.has_room(bounded.loads.factor_milli, load, held, 1));
                assert_eq!(room, load < capacity, "{load}/{held}");
            }
        }
    }

    #[test]
    fn capacity_saturates_for_lease_counts_near_the_largest() {
        let bounded = BoundedLoad::new(nodes(1), 1.25).unwrap();
        assert_eq!(bounded.capacity(u64::MAX, 1), u64::MAX);
        assert_eq!(
            bounded.capacity(u64::MAX / 2, 1),
            11_529_215_046_068_469_759
        );
        assert_eq!(bounded.capacity(1000, 1), 1250);
    }

    #[test]
    fn capacity_follows_weights() {
        let placement = Placement::from_members(
            Rendezvous::new(),
            [Member::weighted("small", 1), Member::weighted("big", 3)],
        )
        .unwrap();
        let bounded = BoundedLoad::new(placement, 1.0).unwrap();
        let leases: Vec<_> = (0..400u64).map(|k| bounded.take(&k).unwrap()).collect();
        assert_eq!(bounded.load(&"small"), 100);
        assert_eq!(bounded.load(&"big"), 300);
        assert_eq!(leases.len(), 400);
        assert!(format!("{:?}", leases[0]).starts_with("Lease"));
    }

    #[test]
    fn bad_factors_and_empty_placements_are_errors() {
        for factor in [0.5, f64::NAN, f64::INFINITY, 2_000_000.0] {
            assert!(matches!(
                BoundedLoad::new(nodes(1), factor),
                Err(Error::InvalidCapacityFactor { .. })
            ));
        }
        assert!(BoundedLoad::new(nodes(1), MAX_CAPACITY_FACTOR).is_ok());
        // The message names both ends of the range, so a factor above it is not misread.
        let message = BoundedLoad::new(nodes(1), 2_000_000.0)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            message,
            "capacity factor 2000000 is invalid: use a finite number from 1.0 to 1000000"
        );
        let empty = BoundedLoad::new(Placement::<u32, Jump>::new(Jump::new()), 1.5).unwrap();
        assert_eq!(empty.take("k").err(), Some(Error::EmptyMembership));
    }

    #[test]
    fn concurrent_takes_respect_capacity() {
        let bounded = Arc::new(BoundedLoad::new(nodes(4), 1.0).unwrap());
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                let bounded = Arc::clone(&bounded);
                thread::spawn(move || {
                    for round in 0..200u64 {
                        let key = t * 1_000_000 + round;
                        let lease = bounded.take(&key).unwrap();
                        // With c = 1 and at most 4 leases held, every take sees a capacity
                        // of ⌈m / 4⌉ = 1, so no node ever holds two leases.
                        assert_eq!(bounded.load(lease.node()), 1);
                        drop(lease);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(bounded.total(), 0);
    }

    #[test]
    fn loads_survive_adding_and_removing_another_node() {
        let bounded = BoundedLoad::new(nodes(4), 1.25).unwrap();
        let leases: Vec<_> = (0..200u64).map(|k| bounded.take(&k).unwrap()).collect();
        let before = bounded.loads();
        assert_eq!(before.iter().map(|&(_, load)| load).sum::<u64>(), 200);

        bounded.add(4, 1).unwrap();
        for &(node, load) in &before {
            assert_eq!(bounded.load(&node), load, "node {node} after an add");
        }
        assert_eq!(bounded.load(&4), 0);
        assert_eq!(bounded.total(), 200);

        let (gone, gone_load) = before[1];
        let on_gone = leases.iter().filter(|lease| *lease.node() == gone).count();
        assert_eq!(u64::try_from(on_gone).unwrap(), gone_load);
        bounded.remove(&gone).unwrap();
        for &(node, load) in before.iter().filter(|&&(node, _)| node != gone) {
            assert_eq!(bounded.load(&node), load, "node {node} after a remove");
        }
        assert_eq!(bounded.load(&gone), 0);
        assert_eq!(bounded.total(), 200 - gone_load);

        // The removed node's leases, dropped afterwards, leave every member's count alone.
        let (on_gone, staying): (Vec<_>, Vec<_>) =
            leases.into_iter().partition(|lease| *lease.node() == gone);
        drop(on_gone);
        assert_eq!(bounded.total(), 200 - gone_load);
        for &(node, load) in before.iter().filter(|&&(node, _)| node != gone) {
            assert_eq!(bounded.load(&node), load);
        }
        // Coming back, the node starts empty, and old leases cannot reach its new counter.
        bounded.add(gone, 1).unwrap();
        assert_eq!(bounded.load(&gone), 0);
        drop(staying);
        assert_eq!(bounded.total(), 0);
        assert!(bounded.loads().iter().all(|&(_, load)| load == 0));
    }

    #[test]
    fn reweighting_keeps_the_load_and_changes_the_capacity() {
        let bounded = BoundedLoad::new(nodes(2), 1.0).unwrap();
        let leases: Vec<_> = (0..10u64).map(|k| bounded.take(&k).unwrap()).collect();
        let before = bounded.load(&0);
        bounded.set_weight(&0, 3).unwrap();
        assert_eq!(bounded.load(&0), before);
        assert_eq!(bounded.capacity(10, 3), 8);
        drop(leases);
        assert_eq!(bounded.total(), 0);
    }

    #[test]
    fn an_owned_lease_is_released_from_a_static_thread() {
        let bounded = BoundedLoad::new(nodes(3), 1.25).unwrap();
        let lease = bounded.take("session-9").unwrap();
        let node = *lease.node();
        assert_eq!(bounded.load(&node), 1);
        // `thread::spawn` requires `'static`: the lease borrows nothing from `bounded`.
        let released = thread::spawn(move || {
            let node = *lease.node();
            drop(lease);
            node
        });
        assert_eq!(released.join().unwrap(), node);
        assert_eq!(bounded.load(&node), 0);
        assert_eq!(bounded.total(), 0);
    }

    #[test]
    fn a_bounded_load_over_a_shared_placement_follows_its_changes() {
        let shared = Arc::new(SharedPlacement::from_placement(nodes(4)));
        let bounded = BoundedLoad::over_shared(Arc::clone(&shared), 1.25).unwrap();
        // One membership, one snapshot: the layer reads the shared placement's.
        assert!(Arc::ptr_eq(&bounded.placement(), &shared.snapshot()));
        let leases: Vec<_> = (0..200u64).map(|k| bounded.take(&k).unwrap()).collect();
        let before = bounded.loads();

        // A node added through the shared placement: bounded lookups see it, loads stay.
        shared.add(4, 1).unwrap();
        assert!(Arc::ptr_eq(&bounded.placement(), &shared.snapshot()));
        for &(node, load) in &before {
            assert_eq!(bounded.load(&node), load, "node {node} after an add");
        }
        assert_eq!(bounded.load(&4), 0);
        let to_new = (0..u64::MAX).find(|k| shared.node(k) == Some(4)).unwrap();
        assert_eq!(
            bounded.peek(&to_new),
            Some(4),
            "the empty new node has room"
        );

        // A node removed through the shared placement: its leases stop counting, no lookup
        // goes to it, and the others keep their loads.
        let (gone, gone_load) = before[2];
        assert_eq!(shared.remove(&gone), Ok(1));
        assert_eq!(bounded.total(), 200 - gone_load);
        assert_eq!(bounded.load(&gone), 0);
        assert!((0..1000u64).all(|k| bounded.peek(&k) != Some(gone)));
        for &(node, load) in before.iter().filter(|&&(node, _)| node != gone) {
            assert_eq!(bounded.load(&node), load, "node {node} after a remove");
        }

        // Leases taken before the changes release correctly after them.
        let (on_gone, staying): (Vec<_>, Vec<_>) =
            leases.into_iter().partition(|lease| *lease.node() == gone);
        drop(on_gone);
        assert_eq!(bounded.total(), 200 - gone_load);
        drop(staying);
        assert_eq!(bounded.total(), 0);
        assert!(bounded.loads().iter().all(|&(_, load)| load == 0));

        // A change made through the layer reaches the shared placement, and a second layer
        // over it keeps loads of its own.
        bounded.add(9, 1).unwrap();
        assert!(shared.snapshot().contains(&9));
        let other = BoundedLoad::over_shared(Arc::clone(&shared), 2.0).unwrap();
        let lease = other.take("k").unwrap();
        assert_eq!((other.total(), bounded.total()), (1, 0));
        shared.remove(&9).unwrap();
        assert_eq!(other.placement().len(), 4);
        drop(lease);
        assert_eq!(other.total(), 0);
    }

    #[test]
    fn attaching_inside_a_change_of_the_shared_placement_is_refused() {
        let shared = Arc::new(SharedPlacement::from_placement(nodes(2)));
        let inside = shared.update(|_| {
            Ok(BoundedLoad::over_shared(Arc::clone(&shared), 1.0)
                .err()
                .unwrap())
        });
        assert_eq!(inside, Ok(Error::ChangeInsideOwnSection));
        assert!(BoundedLoad::over_shared(shared, 1.0).is_ok());
    }

    #[test]
    fn a_change_inside_a_change_is_refused() {
        let bounded = BoundedLoad::new(nodes(2), 1.0).unwrap();
        let outcome = bounded.update(|placement| {
            placement.add(2, 1)?;
            Ok(bounded.add(3, 1))
        });
        assert_eq!(outcome, Ok(Err(Error::ChangeInsideOwnSection)));
        assert_eq!(bounded.placement().len(), 3);
        bounded.add(3, 1).unwrap();
        assert_eq!(bounded.loads().len(), 4);
    }
}
