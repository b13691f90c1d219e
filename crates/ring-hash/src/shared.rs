//! [`SharedPlacement`]: a placement shared between threads, changed by publishing snapshots.

use std::fmt;
use std::hash::Hash;

use infra_common::hash::StableHash;
use infra_common::sync::{Arc, Mutex};

use crate::Error;
use crate::bounded::Loads;
use crate::engine::Engine;
use crate::hashing::key_hash;
use crate::placement::Placement;
use crate::reentry::Section;
use crate::snapshot::SnapshotCell;

/// A [`Placement`] shared by many threads: lookups never wait, membership changes publish a
/// new immutable snapshot.
///
/// # What "never wait" means here
///
/// Lookups run on the current snapshot through a wait-free read section (a fixed handful of
/// atomic instructions, no lock, no retry loop; past the first 16 threads also a thread-local
/// record of the read; see the `snapshot` module's protocol). A
/// membership change clones the current snapshot, applies the change to the copy, and swaps the
/// copy in with one atomic pointer exchange; lookups that started before the swap finish on the
/// old snapshot, lookups after it see the new one, and none ever sees a half-built one.
///
/// The price is paid by writers: changes are serialized by a mutex, each one copies the
/// placement (for a ring or Maglev, it rebuilds the lookup structure), and before the old
/// snapshot is released the writer waits for in-flight lookups to leave their read sections.
/// Membership changes are rare and lookups are hot, which is the right way round. A reader
/// announces itself on a counter of its thread's stripe and withdraws after the lookup. The
/// first 16 threads of the process each own a stripe, a cache line no other thread writes, so
/// they count with a plain load and store and lookups on different cores do not contend; later
/// threads share 16 overflow stripes and count with atomic increments and decrements (which
/// costs speed, not correctness). What every lookup still pays is that counting and a fence;
/// [`SharedPlacement::snapshot`] hands out an `Arc` that a thread can keep and query with no
/// atomic write at all, as long as it refreshes it now and then.
///
/// A bounded-load layer can follow a shared placement
/// ([`BoundedLoad::over_shared`](crate::BoundedLoad::over_shared)): each change is passed on to
/// it before the change returns.
///
/// ```
/// use infra_ring_hash::{Ring, SharedPlacement};
///
/// let shared = SharedPlacement::new(Ring::new());
/// shared.add("cache-a".to_string(), 1)?;
/// shared.add("cache-b".to_string(), 1)?;
/// let owner = shared.node("user:42").expect("two members");
/// assert!(owner == "cache-a" || owner == "cache-b");
///
/// let before = shared.snapshot(); // a frozen view
/// shared.remove(&"cache-a".to_string())?;
/// assert_eq!(before.len(), 2);
/// assert_eq!(shared.snapshot().len(), 1);
/// # Ok::<(), infra_ring_hash::Error>(())
/// ```
pub struct SharedPlacement<N, E> {
    current: SnapshotCell<Placement<N, E>>,
    /// Held across clone-change-publish-pass-on so concurrent changes are not lost, and so a
    /// bounded-load layer attaching meanwhile misses none. Its address also names this
    /// placement's closures in the thread's record of open sections (the placement's own
    /// address is its first field's, the snapshot cell's, whose overflow readers record
    /// themselves there too).
    changes: Mutex<()>,
    /// The loads of the [`BoundedLoad`](crate::BoundedLoad)s over this placement; every
    /// change is passed on to them before it returns.
    followers: Mutex<Vec<Arc<Loads<N, E>>>>,
}

impl<N, E> SharedPlacement<N, E>
where
    N: StableHash + Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    E: Engine,
{
    /// An empty shared placement over `engine`.
    pub fn new(engine: E) -> Self {
        Self::from_placement(Placement::new(engine))
    }

    /// Shares an existing placement.
    pub fn from_placement(placement: Placement<N, E>) -> Self {
        Self::from_snapshot(Arc::new(placement))
    }

    pub(crate) fn from_snapshot(placement: Arc<Placement<N, E>>) -> Self {
        Self {
            current: SnapshotCell::new(placement),
            changes: Mutex::new(()),
            followers: Mutex::new(Vec::new()),
        }
    }

    /// Registers the loads `build` makes from the current snapshot, so that every later change
    /// is passed on to them.
    pub(crate) fn attach(
        &self,
        build: impl FnOnce(Arc<Placement<N, E>>) -> Loads<N, E>,
    ) -> Result<Arc<Loads<N, E>>, Error> {
        self.refuse_reentry()?;
        let _serialized = self.changes.lock();
        let loads = Arc::new(build(self.current.load()));
        self.followers.lock().push(Arc::clone(&loads));
        Ok(loads)
    }

    /// [`Error::ChangeInsideOwnSection`] when this thread is inside a closure of this
    /// placement, or inside a read of its snapshot or of a following layer's view (where user
    /// code such as a node's `Clone` or `Debug` runs): the change would wait for that read.
    fn refuse_reentry(&self) -> Result<(), Error> {
        Section::refuse_change(&self.changes)?;
        let reading = self.current.read_by_this_thread()
            || self
                .followers
                .lock()
                .iter()
                .any(|loads| loads.read_by_this_thread());
        if reading {
            return Err(Error::ChangeInsideOwnSection);
        }
        Ok(())
    }

    /// Makes `next` the current snapshot and passes it on to every follower; called with
    /// `changes` held.
    fn publish(&self, next: Placement<N, E>) {
        let next = Arc::new(next);
        drop(self.current.publish(Arc::clone(&next)));
        for loads in self.followers.lock().iter() {
            loads.follow(&next);
        }
    }

    /// The current snapshot: an immutable placement that later changes do not affect.
    pub fn snapshot(&self) -> Arc<Placement<N, E>> {
        self.current.load()
    }

    /// Runs `f` on the current snapshot without taking a reference count. Keep `f` short: a
    /// change waits for it before it releases the snapshot `f` sees.
    ///
    /// A change to this placement called from inside `f` would wait for `f` itself, so it
    /// returns [`Error::ChangeInsideOwnSection`] instead:
    ///
    /// ```
    /// use infra_ring_hash::{Error, Jump, SharedPlacement};
    ///
    /// let shared = SharedPlacement::new(Jump::new());
    /// shared.add(0u32, 1)?;
    /// let inside = shared.with_snapshot(|_| shared.add(1, 1));
    /// assert_eq!(inside, Err(Error::ChangeInsideOwnSection));
    /// shared.add(1, 1)?; // after the closure, the change goes through
    /// # Ok::<(), Error>(())
    /// ```
    pub fn with_snapshot<R>(&self, f: impl FnOnce(&Placement<N, E>) -> R) -> R {
        let _section = Section::enter(&self.changes);
        self.current.read(f)
    }

    /// A clone of the node that owns `key`, or `None` with no member.
    pub fn node<K: StableHash + ?Sized>(&self, key: &K) -> Option<N> {
        let hash = key_hash(key);
        self.current
            .read(|placement| placement.node_for_hash(hash).cloned())
    }

    /// Clones of up to `n` distinct nodes for `key`, in preference order.
    pub fn get_n<K: StableHash + ?Sized>(&self, key: &K, n: usize) -> Vec<N> {
        let hash = key_hash(key);
        self.current.read(|placement| {
            placement
                .get_n_for_hash(hash, n)
                .into_iter()
                .cloned()
                .collect()
        })
    }

    /// Applies `change` to a copy of the current placement and publishes the copy if `change`
    /// succeeds; on error nothing is published. Returns `change`'s result.
    ///
    /// # Errors
    ///
    /// Whatever `change` returns; [`Error::ChangeInsideOwnSection`] when called from inside
    /// this placement's [`SharedPlacement::with_snapshot`] or another change's closure.
    pub fn update<R>(
        &self,
        change: impl FnOnce(&mut Placement<N, E>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        self.refuse_reentry()?;
        let _serialized = self.changes.lock();
        let mut next = Placement::clone(&self.current.load());
        // The section covers the publication too: a node's `Clone` run while a follower
        // takes the new membership must not start a change either.
        let _section = Section::enter(&self.changes);
        let result = change(&mut next)?;
        self.publish(next);
        Ok(result)
    }

    /// Adds `node`; see [`Placement::add`].
    ///
    /// # Errors
    ///
    /// As [`Placement::add`].
    pub fn add(&self, node: N, weight: u32) -> Result<(), Error> {
        self.update(|placement| placement.add(node, weight))
    }

    /// Removes `node`; see [`Placement::remove`].
    ///
    /// # Errors
    ///
    /// As [`Placement::remove`].
    pub fn remove(&self, node: &N) -> Result<u32, Error> {
        self.update(|placement| placement.remove(node))
    }

    /// Reweights `node`; see [`Placement::set_weight`].
    ///
    /// # Errors
    ///
    /// As [`Placement::set_weight`].
    pub fn set_weight(&self, node: &N, weight: u32) -> Result<(), Error> {
        self.update(|placement| placement.set_weight(node, weight))
    }

    /// Replaces the whole placement, for example after reloading a configuration file.
    ///
    /// # Errors
    ///
    /// [`Error::ChangeInsideOwnSection`] when called from inside this placement's
    /// [`SharedPlacement::with_snapshot`] or a change's closure.
    pub fn replace(&self, placement: Placement<N, E>) -> Result<(), Error> {
        self.refuse_reentry()?;
        let _serialized = self.changes.lock();
        let _section = Section::enter(&self.changes);
        self.publish(placement);
        Ok(())
    }
}

impl<N, E> SharedPlacement<N, E> {
    /// Stops passing changes on to `loads` (unbounded, for `BoundedLoad`'s `Drop`).
    pub(crate) fn detach(&self, loads: &Arc<Loads<N, E>>) {
        self.followers
            .lock()
            .retain(|follower| !Arc::ptr_eq(follower, loads));
    }
}

impl<N: fmt::Debug, E: Engine> fmt::Debug for SharedPlacement<N, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedPlacement")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::{Member, Memento, Ring, RingConfig};
    use infra_common::sync::atomic::{AtomicBool, Ordering};
    use infra_common::sync::{Mutex, thread};

    #[test]
    fn readers_see_whole_snapshots_while_membership_changes() {
        // Members always come in pairs (2k, 2k + 1): a reader that saw a half-applied change
        // would find an odd number of members or an owner outside the snapshot.
        let shared = Arc::new(SharedPlacement::new(
            Ring::with_config(RingConfig {
                points_per_weight: 4,
            })
            .unwrap(),
        ));
        shared.add(0u32, 1).unwrap();
        shared.add(1u32, 1).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
                thread::spawn(move || {
                    let mut key = r;
                    while !stop.load(Ordering::Relaxed) {
                        key += 2;
                        shared.with_snapshot(|placement| {
                            assert_eq!(placement.len() % 2, 0);
                            let owner = placement.node(&key).expect("never empty");
                            assert!(placement.contains(owner));
                        });
                        assert!(!shared.get_n(&key, 3).is_empty());
                    }
                })
            })
            .collect();
        for round in 1..60u32 {
            shared
                .update(|placement| {
                    placement.add(2 * round, 1)?;
                    placement.add(2 * round + 1, 1)
                })
                .unwrap();
            if round % 3 == 0 {
                shared
                    .update(|placement| {
                        placement.remove(&(2 * round))?;
                        placement.remove(&(2 * round + 1)).map(|_| ())
                    })
                    .unwrap();
            }
        }
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            reader.join().unwrap();
        }
        assert_eq!(shared.snapshot().len(), 2 * (1 + 59 - 19));
    }

    #[test]
    fn failed_changes_publish_nothing() {
        let shared = SharedPlacement::from_placement(
            Placement::from_members(Memento::new(), [Member::new("a")]).unwrap(),
        );
        let before = shared.snapshot();
        assert_eq!(
            shared.update(|placement| {
                placement.add("b", 1)?;
                placement.add("a", 1)
            }),
            Err(Error::DuplicateNode {
                node: "\"a\"".into()
            })
        );
        assert!(Arc::ptr_eq(&before, &shared.snapshot()));
        assert_eq!(shared.node("k"), Some("a"));
        assert!(shared.remove(&"zz").is_err());
        shared.replace(Placement::new(Memento::new())).unwrap();
        assert_eq!(shared.node("k"), None);
        assert!(format!("{shared:?}").starts_with("SharedPlacement"));
    }

    /// Runs `work` on its own thread and returns its result, failing the test if it has not
    /// finished by a generous deadline: a call that would hang fails instead of stalling the
    /// run (the stuck thread is left behind; the test process ends with the failure).
    fn finishes_in_time<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
        let result = Arc::new(Mutex::new(None));
        let worker = {
            let result = Arc::clone(&result);
            thread::spawn(move || *result.lock() = Some(work()))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(value) = result.lock().take() {
                worker.join().unwrap();
                return value;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still running after 60 s: it waits for itself"
            );
            thread::yield_now();
        }
    }

    fn two_nodes() -> Arc<SharedPlacement<&'static str, Memento>> {
        Arc::new(SharedPlacement::from_placement(
            Placement::from_members(Memento::new(), [Member::new("a"), Member::new("b")]).unwrap(),
        ))
    }

    #[test]
    fn a_change_inside_with_snapshot_is_refused_instead_of_waiting_for_itself() {
        let shared = two_nodes();
        let outcome = finishes_in_time({
            let shared = Arc::clone(&shared);
            move || {
                shared.with_snapshot(|placement| {
                    (
                        placement.len(),
                        shared.add("c", 1),
                        shared.remove(&"a"),
                        shared.replace(Placement::new(Memento::new())),
                    )
                })
            }
        });
        let refused = Err(Error::ChangeInsideOwnSection);
        assert_eq!(
            outcome,
            (
                2,
                refused.clone(),
                Err(Error::ChangeInsideOwnSection),
                refused
            )
        );
        // Nothing was published, and once the closure is over changes go through.
        assert_eq!(shared.snapshot().len(), 2);
        shared.add("c", 1).unwrap();
        assert_eq!(shared.snapshot().len(), 3);
    }

    #[test]
    fn a_change_inside_a_change_is_refused_instead_of_waiting_for_the_lock() {
        let shared = two_nodes();
        let outcome = finishes_in_time({
            let shared = Arc::clone(&shared);
            move || {
                shared.update(|placement| {
                    // Reading inside a change is fine; changing again is not.
                    let seen = shared.with_snapshot(Placement::len);
                    placement.add("c", 1)?;
                    Ok((seen, shared.add("d", 1)))
                })
            }
        });
        assert_eq!(outcome, Ok((2, Err(Error::ChangeInsideOwnSection))));
        assert_eq!(shared.snapshot().len(), 3);
    }

    /// A node whose `Debug` starts a change on the placement it is printed from: the change
    /// runs inside a read of the placement's own snapshot cell. Before, a change there waited
    /// for that read forever (or, after the cell learnt to refuse it, panicked with the change
    /// lock held); now it is refused with an error. The tests' threads read on overflow stripes
    /// in a full run; the owned stripes' check is the cell's, tested in `tests/snapshot_edges.rs`.
    #[derive(PartialEq, Eq, Hash)]
    struct Meddler(u32);

    /// Starts the change this thread was told to start, once.
    fn meddle() {
        if let Some(shared) = MEDDLE_IN.with(|target| target.borrow_mut().take()) {
            let outcome = shared.add(Meddler(99), 1);
            MEDDLED.with(|seen| seen.borrow_mut().push(outcome));
        }
    }

    impl Clone for Meddler {
        fn clone(&self) -> Self {
            meddle();
            Self(self.0)
        }
    }

    impl infra_common::hash::StableHash for Meddler {
        fn write_stable(&self, hasher: &mut infra_common::hash::StableHasher) {
            self.0.write_stable(hasher);
        }
    }

    infra_common::sync::thread::thread_local! {
        static MEDDLE_IN: std::cell::RefCell<Option<Arc<SharedPlacement<Meddler, Ring>>>> =
            const { std::cell::RefCell::new(None) };
        static MEDDLED: std::cell::RefCell<Vec<Result<(), Error>>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }

    impl fmt::Debug for Meddler {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            meddle();
            write!(f, "Meddler({})", self.0)
        }
    }

    #[test]
    fn a_change_from_inside_a_read_of_the_snapshot_is_refused() {
        let shared = Arc::new(SharedPlacement::from_placement(
            Placement::from_members(Ring::new(), (0..3).map(|i| Member::new(Meddler(i)))).unwrap(),
        ));
        // Enough threads that some share an overflow stripe whatever ordinals earlier tests
        // took; the first ones may own a stripe.
        let outcomes: Vec<(usize, Vec<Result<(), Error>>)> = (0..=crate::snapshot::STRIPES)
            .map(|_| {
                let shared = Arc::clone(&shared);
                thread::spawn(move || {
                    MEDDLE_IN.with(|target| *target.borrow_mut() = Some(Arc::clone(&shared)));
                    let printed = format!("{shared:?}");
                    assert!(printed.contains("Meddler(0)"));
                    (thread::ordinal(), MEDDLED.with(std::cell::RefCell::take))
                })
                .join()
                .unwrap()
            })
            .collect();
        for (ordinal, outcome) in &outcomes {
            assert_eq!(
                outcome,
                &[Err(Error::ChangeInsideOwnSection)],
                "thread {ordinal}"
            );
        }
        assert!(
            outcomes
                .iter()
                .any(|(ordinal, _)| *ordinal >= crate::snapshot::STRIPES)
        );
        // Nothing was added, and the placement still takes changes.
        assert_eq!(shared.snapshot().len(), 3);
        shared.add(Meddler(7), 1).unwrap();
        assert_eq!(shared.snapshot().len(), 4);
    }

    /// The same from a node's `Clone` run inside a read of a following bounded-load layer's
    /// view (`BoundedLoad::loads`): before, the shared placement published, then the layer's
    /// update panicked and the layer was left on the old membership.
    #[test]
    fn a_change_from_inside_a_read_of_a_followers_view_is_refused() {
        let shared = Arc::new(SharedPlacement::from_placement(
            Placement::from_members(Ring::new(), (0..3).map(|i| Member::new(Meddler(i)))).unwrap(),
        ));
        let bounded = Arc::new(crate::BoundedLoad::over_shared(Arc::clone(&shared), 1.25).unwrap());
        for _ in 0..=crate::snapshot::STRIPES {
            let (shared, bounded) = (Arc::clone(&shared), Arc::clone(&bounded));
            let (ordinal, outcome) = thread::spawn(move || {
                MEDDLE_IN.with(|target| *target.borrow_mut() = Some(Arc::clone(&shared)));
                assert_eq!(bounded.loads().len(), 3);
                (thread::ordinal(), MEDDLED.with(std::cell::RefCell::take))
            })
            .join()
            .unwrap();
            assert_eq!(
                outcome,
                [Err(Error::ChangeInsideOwnSection)],
                "thread {ordinal}"
            );
        }
        assert_eq!(shared.snapshot().len(), 3);
        assert_eq!(bounded.placement().len(), 3);
        shared.add(Meddler(7), 1).unwrap();
        assert_eq!(bounded.placement().len(), 4, "the layer still follows");
    }

    #[test]
    fn a_dropped_bounded_load_stops_following() {
        let shared = two_nodes();
        let bounded = crate::BoundedLoad::over_shared(Arc::clone(&shared), 1.5).unwrap();
        assert_eq!(shared.followers.lock().len(), 1);
        drop(bounded);
        assert!(shared.followers.lock().is_empty());
        shared.add("c", 1).unwrap();
    }

    #[test]
    fn only_the_placement_being_read_refuses_changes() {
        let (reading, other) = (two_nodes(), two_nodes());
        let changed = reading.with_snapshot(|_| other.add("c", 1));
        assert_eq!(changed, Ok(()));
        assert_eq!(other.snapshot().len(), 3);
        // A closure that panics leaves no record behind.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            reading.with_snapshot(|_| panic!("reader failed"))
        }));
        assert!(panicked.is_err());
        assert_eq!(reading.add("c", 1), Ok(()));
    }
}
