//! Consistent hashing with bounded loads, over any engine.

use std::fmt;
use std::hash::Hash;

use infra_common::hash::StableHash;
use infra_common::sync::atomic::{AtomicU64, Ordering};
use infra_common::sync::{Arc, spin_loop};

use crate::Error;
use crate::engine::Engine;
use crate::hashing::key_hash;
use crate::placement::Placement;

/// Consistent hashing with bounded loads (Mirrokni, Thorup & Zadimoghaddam, SODA 2018) over any
/// engine's preference order.
///
/// Keys are assigned by taking a *lease*: the key goes to the first node in its
/// [`Placement::get_n`] order whose load after the assignment stays within its capacity
/// `⌈c × m × weight / total_weight⌉`, where `m` counts the leases held including the new one
/// and `c ≥ 1` is the capacity factor. With equal weights that is the paper's `⌈c × average⌉`.
/// Dropping the lease releases the slot. Since the capacities sum to at least `c × m ≥ m`, some
/// node always has room.
///
/// The factor is kept as an integer number of thousandths, so the capacity is computed in
/// integer arithmetic: `⌈c_milli × m × w / (1000 × W)⌉`.
///
/// # Concurrency
///
/// Loads are atomic counters: [`BoundedLoad::take`] claims room on a node with a
/// compare-and-swap that re-checks the capacity, so two threads can never both take a node's
/// last unit of room. The bound holds at the moment each lease is taken; when other leases are
/// released later, `m` shrinks and a node may sit above the new, lower bound until its own keys
/// leave (the paper's insert-time guarantee). A `take` that races other `take`s for the last room
/// everywhere re-reads `m` and tries again.
///
/// The layer is tied to one placement snapshot; after a membership change build a new
/// `BoundedLoad` and let leases on the old one drain.
///
/// ```
/// use infra_ring_hash::{BoundedLoad, Placement, Ring};
///
/// let placement = Placement::from_members(
///     Ring::new(),
///     (0..4).map(|i| infra_ring_hash::Member::new(format!("node-{i}"))),
/// )?;
/// let bounded = BoundedLoad::new(placement, 1.25)?;
/// let leases: Vec<_> = (0..100).map(|key| bounded.take(&key)).collect::<Result<_, _>>()?;
/// // No node holds more than ⌈1.25 × 100 / 4⌉ = 32 keys.
/// assert!(bounded.loads().iter().all(|&(_, load)| load <= 32));
/// drop(leases);
/// assert_eq!(bounded.total(), 0);
/// # Ok::<(), infra_ring_hash::Error>(())
/// ```
pub struct BoundedLoad<N, E> {
    placement: Arc<Placement<N, E>>,
    factor_milli: u64,
    total_weight: u64,
    /// Weight per slot (0 for empty slots), next to the loads so the room check does not touch
    /// the node values.
    weights: Box<[u32]>,
    /// Leases held per slot.
    loads: Box<[AtomicU64]>,
    /// Leases held in all.
    total: AtomicU64,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::BoundedCounters,
}

/// A key's assignment to a node; releases the node's slot when dropped.
#[must_use = "dropping a lease releases it at once"]
pub struct Lease<'a, N, E> {
    owner: &'a BoundedLoad<N, E>,
    slot: usize,
}

impl<N, E> BoundedLoad<N, E>
where
    N: StableHash + Hash + Eq + Clone + fmt::Debug,
    E: Engine,
{
    /// A bounded-load layer over `placement` with capacity factor `factor` (at least 1.0; 1.25
    /// is a common choice), rounded to thousandths.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidCapacityFactor`] unless `factor` is finite and at least 1.0.
    pub fn new(placement: impl Into<Arc<Placement<N, E>>>, factor: f64) -> Result<Self, Error> {
        if !factor.is_finite() || !(1.0..=1_000_000.0).contains(&factor) {
            return Err(Error::InvalidCapacityFactor {
                factor: factor.to_string(),
            });
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 1000..=1e9
        let factor_milli = (factor * 1000.0).round() as u64;
        Ok(Self::with_factor_milli(placement.into(), factor_milli))
    }

    fn with_factor_milli(placement: Arc<Placement<N, E>>, factor_milli: u64) -> Self {
        let total_weight: u64 = placement.members().map(|(_, w)| u64::from(w)).sum();
        let loads = (0..placement.slot_bound())
            .map(|_| AtomicU64::new(0))
            .collect();
        let weights = (0..placement.slot_bound())
            .map(|slot| placement.node_in_slot(slot).map_or(0, |(_, w)| *w))
            .collect();
        Self {
            #[cfg(feature = "metrics")]
            metrics: crate::metrics::BoundedCounters::new(&placement.metrics),
            placement,
            factor_milli,
            total_weight: total_weight.max(1),
            weights,
            loads,
            total: AtomicU64::new(0),
        }
    }

    /// The placement this layer assigns over.
    pub fn placement(&self) -> &Arc<Placement<N, E>> {
        &self.placement
    }

    /// The capacity factor in thousandths (1250 for 1.25).
    pub fn factor_milli(&self) -> u64 {
        self.factor_milli
    }

    /// The most leases a node of weight `weight` may hold when `held` leases exist in all.
    pub fn capacity(&self, held: u64, weight: u32) -> u64 {
        let numerator = u128::from(self.factor_milli) * u128::from(held) * u128::from(weight);
        let denominator = 1000 * u128::from(self.total_weight);
        #[allow(clippy::cast_possible_truncation)] // at most c × held, far below 2^64
        let capacity = numerator.div_ceil(denominator) as u64;
        capacity
    }

    /// Assigns `key` to a node with room and returns the lease.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyMembership`] when the placement has no node.
    pub fn take<K: StableHash + ?Sized>(&self, key: &K) -> Result<Lease<'_, N, E>, Error> {
        self.take_for_hash(key_hash(key))
    }

    /// [`BoundedLoad::take`] for a precomputed key hash.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyMembership`] when the placement has no node.
    pub fn take_for_hash(&self, key_hash: u64) -> Result<Lease<'_, N, E>, Error> {
        let primary = self
            .placement
            .lookup_slot(key_hash)
            .ok_or(Error::EmptyMembership)?;
        let mut held = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        if self.try_claim(primary, held) {
            #[cfg(feature = "metrics")]
            self.metrics.primary();
            return Ok(Lease {
                owner: self,
                slot: primary,
            });
        }
        let mut order = Vec::new();
        self.placement
            .get_n_slots(key_hash, self.placement.len(), &mut order);
        loop {
            for &slot in order.iter().skip(1) {
                if self.try_claim(slot, held) {
                    #[cfg(feature = "metrics")]
                    self.metrics.spilled();
                    return Ok(Lease { owner: self, slot });
                }
            }
            // Every node looked full against a stale count: concurrent takes raised loads
            // after this one read `held`. Re-read it (it includes every lease placed since)
            // and retry, including the primary.
            spin_loop();
            held = self.total.load(Ordering::Acquire);
            if self.try_claim(primary, held) {
                #[cfg(feature = "metrics")]
                self.metrics.primary();
                return Ok(Lease {
                    owner: self,
                    slot: primary,
                });
            }
        }
    }

    /// Whether a node of `weight` holding `load` leases has room for one more when `held` leases
    /// exist: `load < ⌈c·held·w / W⌉`, which for integers is `load · 1000·W < c_milli·held·w`,
    /// two multiplications and no division.
    #[inline]
    fn has_room(&self, load: u64, held: u64, weight: u32) -> bool {
        let limit = u128::from(self.factor_milli) * u128::from(held) * u128::from(weight);
        u128::from(load) * 1000 * u128::from(self.total_weight) < limit
    }

    #[inline]
    fn weight_of(&self, slot: usize) -> u32 {
        self.weights[slot]
    }

    /// Adds one to `slot`'s load if it stays within capacity for `held` leases.
    #[inline]
    fn try_claim(&self, slot: usize, held: u64) -> bool {
        let weight = self.weight_of(slot);
        let load = &self.loads[slot];
        let mut current = load.load(Ordering::Relaxed);
        while self.has_room(current, held, weight) {
            match load.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
        false
    }

    /// The node `key` would be assigned to now, without taking a lease: the first node in its
    /// preference order with room for one more key. When the engine's node has room this costs
    /// the engine lookup plus two atomic loads. `None` with no member.
    ///
    /// Another thread may take the room before a later [`BoundedLoad::take`]; use `take` when
    /// the assignment must count.
    pub fn peek<K: StableHash + ?Sized>(&self, key: &K) -> Option<&N> {
        self.peek_for_hash(key_hash(key))
    }

    /// [`BoundedLoad::peek`] for a precomputed key hash.
    pub fn peek_for_hash(&self, key_hash: u64) -> Option<&N> {
        let primary = self.placement.lookup_slot(key_hash)?;
        let held = self.total.load(Ordering::Acquire) + 1;
        let room = |slot: usize| {
            self.has_room(
                self.loads[slot].load(Ordering::Relaxed),
                held,
                self.weight_of(slot),
            )
        };
        let slot = if room(primary) {
            primary
        } else {
            let mut order = Vec::new();
            self.placement
                .get_n_slots(key_hash, self.placement.len(), &mut order);
            order
                .into_iter()
                .find(|&slot| room(slot))
                .unwrap_or(primary)
        };
        self.placement.node_in_slot(slot).map(|(node, _)| node)
    }

    /// Leases held in all.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Acquire)
    }

    /// Leases held on `node` (0 for a non-member).
    pub fn load(&self, node: &N) -> u64 {
        self.placement
            .slot_of(node)
            .map_or(0, |slot| self.loads[slot].load(Ordering::Acquire))
    }

    /// Every member with its current load, in slot order.
    pub fn loads(&self) -> Vec<(N, u64)> {
        self.loads
            .iter()
            .enumerate()
            .filter_map(|(slot, load)| {
                let (node, _) = self.placement.node_in_slot(slot)?;
                Some((node.clone(), load.load(Ordering::Acquire)))
            })
            .collect()
    }
}

impl<N, E> Lease<'_, N, E> {
    /// The node the key was assigned to.
    pub fn node(&self) -> &N {
        match self.owner.placement.node_in_slot(self.slot) {
            Some((node, _)) => node,
            None => unreachable!("a lease always names a live slot of its placement"),
        }
    }

    /// Releases the lease now (the same as dropping it).
    pub fn release(self) {}
}

impl<N, E> Drop for Lease<'_, N, E> {
    fn drop(&mut self) {
        self.owner.release_slot(self.slot);
    }
}

impl<N, E> BoundedLoad<N, E> {
    fn release_slot(&self, slot: usize) {
        // Load first, then the total, so the total never undercounts the loads (a concurrent
        // take's capacity is then never computed from fewer leases than are placed).
        self.loads[slot].fetch_sub(1, Ordering::AcqRel);
        self.total.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<N: fmt::Debug, E> fmt::Debug for Lease<'_, N, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease").field("node", self.node()).finish()
    }
}

impl<N: fmt::Debug, E: Engine> fmt::Debug for BoundedLoad<N, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedLoad")
            .field("engine", &self.placement.engine().name())
            .field("factor_milli", &self.factor_milli)
            .field("total", &self.total.load(Ordering::Relaxed))
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
            let predicted = bounded.peek(&key).cloned();
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
                assert_eq!(
                    bounded.has_room(load, held, 1),
                    load < capacity,
                    "{load}/{held}"
                );
            }
        }
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
        for factor in [0.5, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                BoundedLoad::new(nodes(1), factor),
                Err(Error::InvalidCapacityFactor { .. })
            ));
        }
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
}
