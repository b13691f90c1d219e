//! Membership changes and bounded-load spill-overs, reported through the [`metrics`] facade
//! (feature `metrics`), so any exporter (Prometheus, StatsD, OpenTelemetry) can serve them.
//!
//! | name | type | labels | counts |
//! | --- | --- | --- | --- |
//! | [`MEMBERSHIP_CHANGES_TOTAL`] | counter | `placement`, `change` | successful [`Placement::add`](crate::Placement::add) (`add`), [`remove`](crate::Placement::remove) (`remove`) and [`set_weight`](crate::Placement::set_weight) (`reweight`), also through [`SharedPlacement`](crate::SharedPlacement) |
//! | [`BOUNDED_ASSIGNMENTS_TOTAL`] | counter | `placement`, `outcome` | leases taken by [`BoundedLoad`](crate::BoundedLoad): `primary` when the key's own node had room, `spilled` when it went further down its preference order |
//!
//! `placement` is the name given with
//! [`Placement::with_metrics_name`](crate::Placement::with_metrics_name) (default
//! [`DEFAULT_PLACEMENT_NAME`]); a `BoundedLoad` reports under the name of the placement it is
//! built over. Nodes and keys never become labels: a series per node would grow with every
//! node ever seen. Building a placement ([`Placement::from_members`](crate::Placement::from_members))
//! is not a change; [`SharedPlacement::update`](crate::SharedPlacement::update) counts the
//! changes its closure made even if a later one fails and nothing is published.
//!
//! Counters are registered once, when the placement (or bounded-load layer) is built or
//! named, and kept as handles: a change or a lease costs one increment through the recorder,
//! with no name lookup. The recorder must therefore be installed **before** the placement is
//! built; one built earlier reports to nothing. A placement is registered under the default
//! name when built, so a named one leaves that series at zero. Without the feature none of
//! this is compiled: no field, no call, no branch.
//!
//! ```
//! use infra_ring_hash::{BoundedLoad, Placement, Ring};
//!
//! // Install the exporter's recorder first, then build the placement.
//! let mut placement = Placement::new(Ring::new()).with_metrics_name("sessions");
//! placement.add("cache-a", 1)?; // infra_ring_hash_membership_changes_total{placement="sessions",change="add"}
//! placement.add("cache-b", 1)?;
//! let bounded = BoundedLoad::new(placement, 1.25)?;
//! let lease = bounded.take("user:42")?; // ..._bounded_assignments_total{placement="sessions",outcome="primary"}
//! # drop(lease);
//! # Ok::<(), infra_ring_hash::Error>(())
//! ```

use std::borrow::Cow;

use metrics::{Counter, SharedString, Unit, counter, describe_counter};

/// Counter of membership changes, labelled `placement` and `change`.
pub const MEMBERSHIP_CHANGES_TOTAL: &str = "infra_ring_hash_membership_changes_total";
/// Counter of bounded-load leases, labelled `placement` and `outcome`.
pub const BOUNDED_ASSIGNMENTS_TOTAL: &str = "infra_ring_hash_bounded_assignments_total";
/// The label naming the placement.
pub const PLACEMENT_LABEL: &str = "placement";
/// The label naming the kind of membership change.
pub const CHANGE_LABEL: &str = "change";
/// The label naming where a bounded-load lease went.
pub const OUTCOME_LABEL: &str = "outcome";
/// The `placement` label of a placement that was given no name.
pub const DEFAULT_PLACEMENT_NAME: &str = "default";

fn describe() {
    describe_counter!(
        MEMBERSHIP_CHANGES_TOTAL,
        Unit::Count,
        "Membership changes of a placement, by kind (add, remove, reweight)."
    );
    describe_counter!(
        BOUNDED_ASSIGNMENTS_TOTAL,
        Unit::Count,
        "Bounded-load leases, by outcome: on the key's own node (primary) or further down its preference order (spilled)."
    );
}

/// A placement's name and its membership-change handles.
#[derive(Clone, Debug)]
pub(crate) struct PlacementCounters {
    name: SharedString,
    added: Counter,
    removed: Counter,
    reweighted: Counter,
}

impl PlacementCounters {
    pub(crate) fn new(name: Cow<'static, str>) -> Self {
        describe();
        let name = SharedString::from(name);
        let change = |kind: &'static str| counter!(MEMBERSHIP_CHANGES_TOTAL, PLACEMENT_LABEL => name.clone(), CHANGE_LABEL => kind);
        Self {
            added: change("add"),
            removed: change("remove"),
            reweighted: change("reweight"),
            name,
        }
    }

    pub(crate) fn unnamed() -> Self {
        Self::new(Cow::Borrowed(DEFAULT_PLACEMENT_NAME))
    }

    pub(crate) fn added(&self) {
        self.added.increment(1);
    }

    pub(crate) fn removed(&self) {
        self.removed.increment(1);
    }

    pub(crate) fn reweighted(&self) {
        self.reweighted.increment(1);
    }
}

/// A bounded-load layer's handles, labelled with its placement's name.
#[derive(Debug)]
pub(crate) struct BoundedCounters {
    primary: Counter,
    spilled: Counter,
}

impl BoundedCounters {
    pub(crate) fn new(placement: &PlacementCounters) -> Self {
        describe();
        let outcome = |outcome: &'static str| {
            counter!(
                BOUNDED_ASSIGNMENTS_TOTAL,
                PLACEMENT_LABEL => placement.name.clone(),
                OUTCOME_LABEL => outcome
            )
        };
        Self {
            primary: outcome("primary"),
            spilled: outcome("spilled"),
        }
    }

    #[inline]
    pub(crate) fn primary(&self) {
        self.primary.increment(1);
    }

    #[inline]
    pub(crate) fn spilled(&self) {
        self.spilled.increment(1);
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use infra_testkit::metrics::{Series, counters};
    use metrics_util::debugging::DebuggingRecorder;

    use super::*;
    use crate::{BoundedLoad, Member, Placement, Ring, SharedPlacement};

    /// The value of `name` for placement `placement` with `label` = `value`.
    fn value(series: &[Series], name: &str, placement: &str, label: &str, value: &str) -> u64 {
        let mut wanted = vec![
            (PLACEMENT_LABEL.to_owned(), placement.to_owned()),
            (label.to_owned(), value.to_owned()),
        ];
        wanted.sort();
        series
            .iter()
            .find(|(n, l, _)| n == name && *l == wanted)
            .map_or_else(
                || panic!("no series {name}{{{placement}, {label}={value}}}"),
                |&(_, _, count)| count,
            )
    }

    fn changes(series: &[Series], placement: &str, change: &str) -> u64 {
        value(
            series,
            MEMBERSHIP_CHANGES_TOTAL,
            placement,
            CHANGE_LABEL,
            change,
        )
    }

    #[test]
    fn membership_changes_are_counted_by_kind_and_failures_are_not() {
        let recorder = DebuggingRecorder::new();
        let mut placement = metrics::with_local_recorder(&recorder, || {
            Placement::new(Ring::new()).with_metrics_name("cache")
        });
        placement.add("a", 1).unwrap();
        placement.add("b", 1).unwrap();
        assert!(placement.add("a", 1).is_err()); // duplicate: not a change
        placement.set_weight(&"b", 3).unwrap();
        placement.remove(&"a").unwrap();
        assert!(placement.remove(&"a").is_err()); // unknown: not a change
        let series = counters(&recorder.snapshotter());
        assert_eq!(changes(&series, "cache", "add"), 2);
        assert_eq!(changes(&series, "cache", "remove"), 1);
        assert_eq!(changes(&series, "cache", "reweight"), 1);
        assert_eq!(changes(&series, DEFAULT_PLACEMENT_NAME, "add"), 0);
    }

    #[test]
    fn shared_placement_changes_count_once_each() {
        let recorder = DebuggingRecorder::new();
        let shared = metrics::with_local_recorder(&recorder, || {
            let initial =
                Placement::from_members(Ring::new(), ["a", "b"].map(Member::new)).unwrap();
            SharedPlacement::from_placement(initial.with_metrics_name("shared"))
        });
        shared.add("c", 1).unwrap();
        shared.remove(&"a").unwrap();
        let series = counters(&recorder.snapshotter());
        // Building from members is not a change: one add and one remove.
        assert_eq!(changes(&series, "shared", "add"), 1);
        assert_eq!(changes(&series, "shared", "remove"), 1);
        assert_eq!(changes(&series, "shared", "reweight"), 0);
    }

    #[test]
    fn bounded_load_counts_primary_and_spilled_leases() {
        let recorder = DebuggingRecorder::new();
        let bounded = metrics::with_local_recorder(&recorder, || {
            let placement = Placement::from_members(Ring::new(), ["a", "b"].map(Member::new))
                .unwrap()
                .with_metrics_name("pool");
            BoundedLoad::new(placement, 1.0).unwrap()
        });
        // With two nodes and factor 1.0 each node holds at most ⌈m / 2⌉ leases: the same key
        // twice lands on its own node, then spills to the other.
        let first = bounded.take("key").unwrap();
        let second = bounded.take("key").unwrap();
        assert_ne!(first.node(), second.node());
        let series = counters(&recorder.snapshotter());
        let assignments = |outcome| {
            value(
                &series,
                BOUNDED_ASSIGNMENTS_TOTAL,
                "pool",
                OUTCOME_LABEL,
                outcome,
            )
        };
        assert_eq!(assignments("primary"), 1);
        assert_eq!(assignments("spilled"), 1);
    }

    #[test]
    fn every_metric_is_described_as_a_count() {
        let recorder = DebuggingRecorder::new();
        metrics::with_local_recorder(&recorder, || {
            drop(BoundedCounters::new(&PlacementCounters::unnamed()));
        });
        let described = recorder.snapshotter().snapshot().into_vec();
        assert_eq!(described.len(), 5);
        for (_, unit, description, _) in described {
            assert_eq!(unit, Some(Unit::Count));
            assert!(description.is_some_and(|d| !d.is_empty()));
        }
    }
}
