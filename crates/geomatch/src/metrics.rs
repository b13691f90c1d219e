//! Drivers by state and claim outcomes, reported through the [`metrics`] facade (feature
//! `metrics`), so any exporter can serve them.
//!
//! | name | type | labels | what |
//! | --- | --- | --- | --- |
//! | [`DRIVERS`] | gauge | `index`, `state` | drivers in the index by state (`available`, `offered`, `busy`, `offline`); stale drivers still count in their state; a dropped index's drivers leave them |
//! | [`CLAIMS_TOTAL`] | counter | `index`, `outcome` | [`Index::claim`](crate::Index::claim) calls (and, with the `redis` feature, `RedisIndex::claim` calls) that reached the driver: `won`, or `lost` to a race (the driver's state changed since it was found) |
//!
//! `index` is the name given with [`Index::with_metrics_name`](crate::Index::with_metrics_name)
//! or `RedisIndex::with_metrics_name` (default [`DEFAULT_INDEX_NAME`]). A `RedisIndex`
//! counts the claims its own process made and publishes no [`DRIVERS`] gauges: the drivers
//! are the server's, shared by every process. Drivers never become labels. Handles are registered when
//! the index is built or named, so install the recorder **before** building the index.
//!
//! ```
//! use infra_geomatch::{Config, DriverId, DriverProfile, Index, Point};
//!
//! // Install the exporter's recorder first, then build the index.
//! let index = Index::new(Config::default())?.with_metrics_name("paris");
//! index.insert(DriverId(1), Point::new(48.85, 2.35)?, DriverProfile::default())?;
//! // infra_geomatch_drivers{index="paris",state="available"} = 1
//! # Ok::<(), infra_geomatch::Error>(())
//! ```

use std::borrow::Cow;

use metrics::{
    Counter, Gauge, SharedString, Unit, counter, describe_counter, describe_gauge, gauge,
};

use crate::DriverState;

/// Gauge of drivers, labelled `index` and `state`.
pub const DRIVERS: &str = "infra_geomatch_drivers";
/// Counter of claims, labelled `index` and `outcome` (`won` or `lost`).
pub const CLAIMS_TOTAL: &str = "infra_geomatch_claims_total";
/// The label naming the index.
pub const INDEX_LABEL: &str = "index";
/// The label naming a driver state.
pub const STATE_LABEL: &str = "state";
/// The label naming a claim's outcome.
pub const OUTCOME_LABEL: &str = "outcome";
/// The `index` label of an index that was given no name.
pub const DEFAULT_INDEX_NAME: &str = "default";

fn state_name(state: DriverState) -> &'static str {
    match state {
        DriverState::Available => "available",
        DriverState::Offered => "offered",
        DriverState::Busy => "busy",
        DriverState::Offline => "offline",
    }
}

/// The claim counters of an index, in-process or shared.
#[derive(Debug)]
pub(crate) struct ClaimMetrics {
    won: Counter,
    lost: Counter,
}

impl ClaimMetrics {
    pub(crate) fn new(name: &SharedString) -> Self {
        describe_counter!(
            CLAIMS_TOTAL,
            Unit::Count,
            "Claims of drivers, by outcome: won, or lost to a race."
        );
        let claims = |outcome: &'static str| counter!(CLAIMS_TOTAL, INDEX_LABEL => name.clone(), OUTCOME_LABEL => outcome);
        Self {
            won: claims("won"),
            lost: claims("lost"),
        }
    }

    pub(crate) fn won(&self) {
        self.won.increment(1);
    }

    pub(crate) fn lost(&self) {
        self.lost.increment(1);
    }
}

/// An index's handles.
#[derive(Debug)]
pub(crate) struct IndexMetrics {
    /// By `DriverState::code`.
    drivers: [Gauge; 4],
    claims: ClaimMetrics,
}

impl IndexMetrics {
    pub(crate) fn new(name: Cow<'static, str>) -> Self {
        describe_gauge!(DRIVERS, Unit::Count, "Drivers in the index, by state.");
        let name = SharedString::from(name);
        Self {
            drivers: DriverState::ALL.map(|state| {
                gauge!(DRIVERS, INDEX_LABEL => name.clone(), STATE_LABEL => state_name(state))
            }),
            claims: ClaimMetrics::new(&name),
        }
    }

    fn gauge(&self, state: DriverState) -> &Gauge {
        // `code` is 0..=3 by construction.
        &self.drivers[state.code() as usize]
    }

    pub(crate) fn entered(&self, state: DriverState) {
        self.gauge(state).increment(1.0);
    }

    pub(crate) fn left(&self, state: DriverState) {
        self.gauge(state).decrement(1.0);
    }

    pub(crate) fn changed(&self, from: DriverState, to: DriverState) {
        self.left(from);
        self.entered(to);
    }

    pub(crate) fn claim_won(&self) {
        self.claims.won();
    }

    pub(crate) fn claim_lost(&self) {
        self.claims.lost();
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;
    use crate::{Config, DriverId, DriverProfile, Error, Index, Point};

    /// One series: name, labels sorted by key, value (gauges as integers).
    type Series = (String, Vec<(String, String)>, i64);

    /// Every series of one snapshot.
    fn series(recorder: &DebuggingRecorder) -> Vec<Series> {
        recorder
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let key = key.key().clone();
                let mut labels: Vec<(String, String)> = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                labels.sort();
                let value = match value {
                    DebugValue::Counter(n) => i64::try_from(n).unwrap(),
                    DebugValue::Gauge(g) => g.into_inner() as i64,
                    DebugValue::Histogram(_) => panic!("no histograms"),
                };
                (key.name().to_owned(), labels, value)
            })
            .collect()
    }

    fn value(all: &[Series], name: &str, label: &str, v: &str) -> i64 {
        let mut wanted = vec![
            (INDEX_LABEL.to_owned(), "city".to_owned()),
            (label.to_owned(), v.to_owned()),
        ];
        wanted.sort();
        all.iter()
            .find(|(n, l, _)| n == name && *l == wanted)
            .map_or_else(|| panic!("no series {name}{{{label}={v}}}"), |s| s.2)
    }

    /// A dropped index takes its drivers out of the gauges: an index built again under the
    /// same name (a node re-partitioned, a service reloading its drivers) counts its own
    /// drivers, not those of the one before as well. An index named after drivers entered it
    /// moves their counts to its name. (A snapshot of the debugging recorder reads and
    /// resets every series: one snapshot per recorder.)
    #[test]
    fn a_dropped_index_leaves_the_gauges_and_a_renamed_one_takes_its_counts() {
        let at = Point::new(48.85, 2.35).unwrap();
        let fill = |index: &Index| {
            for id in 0..3 {
                index
                    .insert(DriverId(id), at, DriverProfile::default())
                    .unwrap();
            }
            index.set_state(DriverId(0), DriverState::Busy).unwrap();
        };

        let rebuilt = DebuggingRecorder::new();
        let _index = metrics::with_local_recorder(&rebuilt, || {
            let before = Index::new(Config::default())
                .unwrap()
                .with_metrics_name("city");
            fill(&before);
            drop(before);
            let after = Index::new(Config::default())
                .unwrap()
                .with_metrics_name("city");
            after
                .insert(DriverId(7), at, DriverProfile::default())
                .unwrap();
            after
        });
        let all = series(&rebuilt);
        assert_eq!(value(&all, DRIVERS, STATE_LABEL, "available"), 1);
        assert_eq!(value(&all, DRIVERS, STATE_LABEL, "busy"), 0);

        let renamed = DebuggingRecorder::new();
        let _index = metrics::with_local_recorder(&renamed, || {
            let index = Index::new(Config::default()).unwrap();
            fill(&index);
            index.with_metrics_name("city")
        });
        let all = series(&renamed);
        assert_eq!(value(&all, DRIVERS, STATE_LABEL, "available"), 2);
        assert_eq!(value(&all, DRIVERS, STATE_LABEL, "busy"), 1);
        for (name, labels, value) in &all {
            if name == DRIVERS
                && labels.contains(&(INDEX_LABEL.to_owned(), DEFAULT_INDEX_NAME.to_owned()))
            {
                assert_eq!(*value, 0, "{labels:?}");
            }
        }
    }

    #[test]
    fn drivers_by_state_and_claim_outcomes_are_exact() {
        let recorder = DebuggingRecorder::new();
        let index = metrics::with_local_recorder(&recorder, || {
            Index::new(Config::default())
                .unwrap()
                .with_metrics_name("city")
        });
        let at = Point::new(48.85, 2.35).unwrap();
        for id in 0..4 {
            index
                .insert(DriverId(id), at, DriverProfile::default())
                .unwrap();
        }
        assert!(
            index
                .insert(DriverId(0), at, DriverProfile::default())
                .is_err()
        );
        let seen = index.driver(DriverId(0)).unwrap().version;
        let claim = index.claim(DriverId(0), seen).unwrap();
        assert_eq!(
            index.claim(DriverId(0), seen),
            Err(Error::ClaimLost(DriverId(0)))
        );
        index.accept(&claim).unwrap();
        let second = index
            .claim(DriverId(1), index.driver(DriverId(1)).unwrap().version)
            .unwrap();
        index.decline(second).unwrap();
        index.set_state(DriverId(2), DriverState::Offline).unwrap();
        index.remove(DriverId(3)).unwrap();

        let all = series(&recorder);
        assert_eq!(value(&all, DRIVERS, STATE_LABEL, "available"), 1);
        assert_eq!(value(&all, DRIVERS, STATE_LABEL, "offered"), 0);
        assert_eq!(value(&all, DRIVERS, STATE_LABEL, "busy"), 1);
        assert_eq!(value(&all, DRIVERS, STATE_LABEL, "offline"), 1);
        assert_eq!(value(&all, CLAIMS_TOTAL, OUTCOME_LABEL, "won"), 2);
        assert_eq!(value(&all, CLAIMS_TOTAL, OUTCOME_LABEL, "lost"), 1);
        // No series per driver: the named index's six, and the six registered under the
        // default name when the index was built, before it was named, all zero.
        assert_eq!(all.len(), 12, "{all:?}");
        for (_, labels, value) in &all {
            if labels.contains(&(INDEX_LABEL.to_owned(), DEFAULT_INDEX_NAME.to_owned())) {
                assert_eq!(*value, 0, "{labels:?}");
            }
        }
    }
}
