//! One circuit breaker per node a check can be sent to.
//!
//! A single server (or a proxy in front of several) is one node: one breaker. A cluster's keys
//! are spread over its masters, and one dead master must not decide for the others: were the
//! breaker shared, the checks of its keys would wait out the timeout every time while the other
//! masters' successes kept the breaker closed. So each master has a breaker of its own, found
//! through the slot of the check's key, and a map from slots to masters the limiter learns
//! from the cluster (`CLUSTER SLOTS`): at the first check, and again after any check failed to
//! reach its node (a master may have died or handed its slots over). Until the map is known,
//! and for a slot it does not cover, checks answer to one breaker for the whole cluster.
//!
//! Learning the map again after every failure costs one command per failing check at most:
//! one check at a time learns it, and others go on with the map they have. A map that went
//! stale harms nothing lasting: a slot's checks answer to the breaker of the master it names,
//! whose probe, sent where the cluster now places the slot, closes it again.

use std::collections::HashMap;

use infra_common::sync::atomic::{AtomicU8, Ordering};
use infra_common::sync::{Arc, Mutex};

use super::breaker::Breaker;
use super::connection::SlotRange;

/// [`NodeBreakers::map`]: the slot map is to be learned.
const STALE: u8 = 1;
/// [`NodeBreakers::map`]: a check is learning the slot map.
const LEARNING: u8 = 2;

/// The breakers of a limiter's nodes.
#[derive(Debug)]
pub(crate) struct NodeBreakers {
    threshold: u32,
    cool_down: u64,
    /// A single server's breaker; a cluster's while its map is unknown, and for any slot the
    /// map does not cover.
    unmapped: Arc<Breaker>,
    /// Each master's slot ranges and breaker, as the cluster last told; always empty for a
    /// single server.
    masters: Mutex<Vec<MasterRanges>>,
    /// [`STALE`]: the next check should learn the slot map (again); [`LEARNING`]: a check is
    /// learning it. Apart, so that a failure while one learns starts no second learner.
    map: AtomicU8,
    /// Whether the nodes are a cluster's masters, whose map there is to learn.
    cluster: bool,
}

/// The slots `first..=last` and the breaker of the master serving them.
#[derive(Debug)]
struct MasterRanges {
    first: u16,
    last: u16,
    /// The master's name in the map (see `SlotRange::master`).
    master: String,
    breaker: Arc<Breaker>,
}

impl NodeBreakers {
    /// Breakers opening after `threshold` failures for `cool_down` nanoseconds (0 = off), one
    /// per master when `cluster`, one in all otherwise.
    pub(crate) fn new(threshold: u32, cool_down: u64, cluster: bool) -> Self {
        Self {
            threshold,
            cool_down,
            unmapped: Arc::new(Breaker::new(threshold, cool_down)),
            masters: Mutex::new(Vec::new()),
            map: AtomicU8::new(if cluster { STALE } else { 0 }),
            cluster,
        }
    }

    /// The breaker of the node serving `slot` (`None`: a single server).
    pub(crate) fn for_slot(&self, slot: Option<u16>) -> Arc<Breaker> {
        let Some(slot) = slot else {
            return Arc::clone(&self.unmapped);
        };
        let masters = self.masters.lock();
        let serving = masters.partition_point(|master| master.last < slot);
        match masters.get(serving) {
            Some(master) if master.first <= slot => Arc::clone(&master.breaker),
            _ => Arc::clone(&self.unmapped),
        }
    }

    /// The one caller that should learn the slot map now, if it went stale: it installs
    /// the map through the guard, and the map is stale again if the guard is dropped without
    /// one (the cluster could not tell, or the check was cancelled). A check that finds the map
    /// being learned writes nothing, so it cannot undo a learner's giving up, and one failing
    /// meanwhile only leaves the map stale for after the learner
    /// (`a_failure_while_the_map_is_learned_starts_no_second_learner`).
    pub(crate) fn learner(&self) -> Option<Learner<'_>> {
        self.map
            .compare_exchange(STALE, LEARNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            .then(|| Learner { breakers: self })
    }

    /// A check could not reach its node: on a cluster, the map may have changed.
    pub(crate) fn mark_stale(&self) {
        if self.cluster {
            self.map.fetch_or(STALE, Ordering::Release);
        }
    }

    /// Installs the map the cluster told, keeping the breaker of every master still in it;
    /// a master serving several ranges has one breaker for all of them.
    fn install(&self, ranges: Vec<SlotRange>) {
        let mut masters = self.masters.lock();
        let mut breaker_of: HashMap<String, Arc<Breaker>> = masters
            .drain(..)
            .map(|known| (known.master, known.breaker))
            .collect();
        let mut learned: Vec<MasterRanges> = ranges
            .into_iter()
            .map(|range| {
                let breaker = breaker_of
                    .entry(range.master.clone())
                    .or_insert_with(|| Arc::new(Breaker::new(self.threshold, self.cool_down)));
                MasterRanges {
                    first: range.first,
                    last: range.last,
                    breaker: Arc::clone(breaker),
                    master: range.master,
                }
            })
            .collect();
        learned.sort_unstable_by_key(|master| master.first);
        *masters = learned;
    }
}

/// The right to learn the slot map, held by one check at a time.
#[derive(Debug)]
pub(crate) struct Learner<'a> {
    breakers: &'a NodeBreakers,
}

impl Learner<'_> {
    /// Installs the map the cluster told. A check that failed meanwhile left the map stale:
    /// its failure may have come after the cluster answered, so the next check learns again.
    /// A map of no slot at all (a reply none of whose entries could be read) tells nothing:
    /// the breakers stay, open ones too, and the next check learns again.
    pub(crate) fn learned(self, ranges: Vec<SlotRange>) {
        if ranges.is_empty() {
            return;
        }
        self.breakers.install(ranges);
        self.breakers.map.fetch_and(!LEARNING, Ordering::Release);
        std::mem::forget(self);
    }
}

impl Drop for Learner<'_> {
    /// Gave up without a map: the next check learns it. Stale first, then no longer
    /// learning, so that no check can find the map neither stale nor being learned.
    fn drop(&mut self) {
        let map = &self.breakers.map;
        map.fetch_or(STALE, Ordering::AcqRel);
        map.fetch_and(!LEARNING, Ordering::AcqRel);
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;
    use crate::redis::breaker::Pass;

    fn range(first: u16, last: u16, master: &str) -> SlotRange {
        SlotRange {
            first,
            last,
            master: master.to_owned(),
        }
    }

    fn is_open(breaker: &Breaker, now: u64) -> bool {
        matches!(breaker.pass(now), Pass::Open)
    }

    #[test]
    fn an_empty_map_keeps_the_breakers_and_is_learned_again() {
        let breakers = NodeBreakers::new(1, 100, true);
        let learner = breakers.learner().expect("a cluster learns its map first");
        learner.learned(vec![range(0, 16_383, "a:1")]);
        let a = breakers.for_slot(Some(7));
        a.failed(0, None);
        breakers.mark_stale();
        breakers
            .learner()
            .expect("stale after a failure")
            .learned(Vec::new());
        assert!(
            Arc::ptr_eq(&a, &breakers.for_slot(Some(7))) && is_open(&a, 1),
            "the open breaker is kept"
        );
        assert!(breakers.learner().is_some(), "still to learn");
    }

    #[test]
    fn each_master_has_a_breaker_that_outlives_a_new_map() {
        let breakers = NodeBreakers::new(1, 100, true);
        let learner = breakers.learner().expect("a cluster learns its map first");
        assert!(breakers.learner().is_none(), "one learner at a time");
        // Unknown: one breaker for everything.
        assert!(Arc::ptr_eq(
            &breakers.for_slot(Some(0)),
            &breakers.for_slot(Some(16_383))
        ));
        learner.learned(vec![range(8_192, 16_383, "b:2"), range(0, 8_191, "a:1")]);
        assert!(breakers.learner().is_none(), "learned");
        let (a, b) = (breakers.for_slot(Some(5)), breakers.for_slot(Some(9_000)));
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&a, &breakers.for_slot(Some(8_191))));
        assert!(Arc::ptr_eq(&b, &breakers.for_slot(Some(8_192))));
        b.failed(0, None);
        assert!(
            is_open(&b, 1) && !is_open(&a, 1),
            "b's failure is b's alone"
        );
        // A new map: b keeps its open breaker for the slots it still serves, a slot it handed
        // to a new master answers to that one's, and an uncovered slot to the cluster's.
        breakers.mark_stale();
        drop(breakers.learner().expect("stale after a failure"));
        let learner = breakers
            .learner()
            .expect("a learner that gave up leaves it stale");
        learner.learned(vec![range(0, 8_191, "a:1"), range(8_192, 9_999, "b:2")]);
        breakers.install(vec![
            range(0, 8_191, "a:1"),
            range(8_192, 9_999, "b:2"),
            range(10_000, 16_000, "c:3"),
        ]);
        assert!(is_open(&breakers.for_slot(Some(9_999)), 1));
        assert!(!is_open(&breakers.for_slot(Some(10_000)), 1));
        assert!(Arc::ptr_eq(
            &breakers.for_slot(Some(16_001)),
            &breakers.for_slot(None)
        ));
    }

    /// A master serving several ranges (as after a resharding) is one node with one breaker,
    /// from the first map learned: its failures in one range open it for all of them.
    #[test]
    fn a_master_serving_several_ranges_has_one_breaker() {
        let breakers = NodeBreakers::new(1, 100, true);
        let learner = breakers.learner().expect("a cluster learns its map first");
        learner.learned(vec![
            range(0, 99, "a:1"),
            range(100, 8_191, "b:2"),
            range(8_192, 16_383, "a:1"),
        ]);
        let (low, high) = (breakers.for_slot(Some(5)), breakers.for_slot(Some(9_000)));
        assert!(Arc::ptr_eq(&low, &high), "one breaker per master");
        high.failed(0, None);
        assert!(is_open(&breakers.for_slot(Some(5)), 1));
        assert!(!is_open(&breakers.for_slot(Some(100)), 1));
    }

    /// A check failing while another learns the map starts no second learner, whose older or
    /// newer map could be installed last; the map is learned again once the first is done,
    /// since the failure may have come after the cluster answered.
    #[test]
    fn a_failure_while_the_map_is_learned_starts_no_second_learner() {
        let breakers = NodeBreakers::new(1, 100, true);
        let learner = breakers.learner().expect("a cluster learns its map first");
        breakers.mark_stale();
        assert!(breakers.learner().is_none(), "one learner at a time");
        learner.learned(vec![range(0, 16_383, "a:1")]);
        let learner = breakers.learner().expect("stale again after the failure");
        breakers.mark_stale();
        drop(learner);
        assert!(
            breakers.learner().is_some(),
            "a learner that gave up hands on"
        );
    }

    #[test]
    fn a_single_server_has_one_breaker_and_no_map_to_learn() {
        let breakers = NodeBreakers::new(1, 100, false);
        assert!(breakers.learner().is_none());
        breakers.mark_stale();
        assert!(breakers.learner().is_none());
        assert!(Arc::ptr_eq(
            &breakers.for_slot(None),
            &breakers.for_slot(None)
        ));
    }
}

/// Model-checked: however checks race and fail, at most one learns the slot map at a time, and a
/// learner that gives up hands the learning on.
///
/// `RUSTFLAGS="--cfg infra_loom" cargo test --release -p infra-ratelimit --features redis --lib
/// node_breakers`.
#[cfg(all(test, infra_loom))]
mod loom_models {
    use infra_common::sync::atomic::AtomicU32;
    use infra_common::sync::{Arc, model, thread};

    use super::*;

    #[test]
    fn at_most_one_check_learns_the_map_at_a_time() {
        model(|| {
            let breakers = Arc::new(NodeBreakers::new(1, 10, true));
            let learning = Arc::new(AtomicU32::new(0));
            let checks: Vec<_> = (0..2)
                .map(|_| {
                    let (breakers, learning) = (Arc::clone(&breakers), Arc::clone(&learning));
                    thread::spawn(move || {
                        // This check failed before, maybe while the other learned.
                        breakers.mark_stale();
                        if let Some(learner) = breakers.learner() {
                            let others = learning.fetch_add(1, Ordering::SeqCst);
                            assert_eq!(others, 0, "two learners at once");
                            learning.fetch_sub(1, Ordering::SeqCst);
                            drop(learner); // no map: the next check learns
                        }
                    })
                })
                .collect();
            for check in checks {
                check.join().unwrap();
            }
            assert!(breakers.learner().is_some(), "still to learn");
        });
    }
}
