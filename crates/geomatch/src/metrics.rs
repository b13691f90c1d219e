//! Drivers by state and claim outcomes, reported through the [`metrics`] facade (feature
//! `metrics`), so any exporter can serve them.
//!
//! | name | type | labels | what |
//! | --- | --- | --- | --- |
//! | [`DRIVERS`] | gauge | `index`, `state` | drivers in the index by state (`available`, `offered`, `busy`, `offline`); stale drivers still count in their state |
//! | [`CLAIMS_TOTAL`] | counter | `index`, `outcome` | [`Index::claim`](crate::Index::claim) calls that reached the driver: `won`, or `lost` to a race (the driver's state changed since it was found) |
//!
//! `index` is the name given with [`Index::with_metrics_name`](crate::Index::with_metrics_name)
//! (default [`DEFAULT_INDEX_NAME`]). Drivers never become labels. Handles are registered when
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

/// An index's handles.
#[derive(Debug)]
pub(crate) struct IndexMetrics {
    /// By `DriverState::code`.
    drivers: [Gauge; 4],
    won: Counter,
    lost: Counter,
}

impl IndexMetrics {
    pub(crate) fn new(name: Cow<'static, str>) -> Self {
        describe_gauge!(DRIVERS, Unit::Count, "Drivers in the index, by state.");
        describe_counter!(
            CLAIMS_TOTAL,
            Unit::Count,
            "Claims of drivers, by outcome: won, or lost to a race."
        );
        let name = SharedString::from(name);
        let claims = |outcome: &'static str| counter!(CLAIMS_TOTAL, INDEX_LABEL => name.clone(), OUTCOME_LABEL => outcome);
        Self {
            drivers: DriverState::ALL.map(|state| {
                gauge!(DRIVERS, INDEX_LABEL => name.clone(), STATE_LABEL => state_name(state))
            }),
            won: claims("won"),
            lost: claims("lost"),
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
        self.won.increment(1);
    }

    pub(crate) fn claim_lost(&self) {
        self.lost.increment(1);
    }
}
