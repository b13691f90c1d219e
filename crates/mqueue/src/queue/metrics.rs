//! What a work queue does, reported through the [`metrics`] facade (feature `metrics`).
//!
//! | name | type | labels | reads |
//! | --- | --- | --- | --- |
//! | [`REDELIVERIES_TOTAL`] | counter | `queue` | deliveries with an attempt above 1 |
//! | [`DEAD_LETTERED_TOTAL`] | counter | `queue` | messages moved to the dead-letter topic |
//! | [`DUPLICATES_TOTAL`] | counter | `queue` | sends whose id was already in the dedup window |
//! | [`REFUSED_TOTAL`] | counter | `queue` | acks, nacks, extends and terms refused (stale, settled or unknown) |
//! | [`IN_FLIGHT`] | gauge | `queue` | leased messages, after each receive and settle call |
//! | [`OLDEST_AGE_SECONDS`] | gauge | `queue` | age of the oldest unsettled message, after each receive and settle call |
//!
//! `queue` is the name given with `QueueOptions::metrics_name`, [`DEFAULT_NAME`]
//! otherwise. The handles are registered when the queue is built or named, so install the
//! recorder first.

use metrics::{Counter, Gauge, Unit, counter, describe_counter, describe_gauge, gauge};

use super::lease::Leases;

/// Counter of redeliveries, labelled `queue`.
pub const REDELIVERIES_TOTAL: &str = "infra_mqueue_queue_redeliveries_total";
/// Counter of dead-lettered messages, labelled `queue`.
pub const DEAD_LETTERED_TOTAL: &str = "infra_mqueue_queue_dead_lettered_total";
/// Counter of duplicate sends, labelled `queue`.
pub const DUPLICATES_TOTAL: &str = "infra_mqueue_queue_duplicates_total";
/// Counter of refused settle calls, labelled `queue`.
pub const REFUSED_TOTAL: &str = "infra_mqueue_queue_refused_total";
/// Gauge of leased messages, labelled `queue`.
pub const IN_FLIGHT: &str = "infra_mqueue_queue_in_flight";
/// Gauge of the oldest unsettled message's age, labelled `queue`.
pub const OLDEST_AGE_SECONDS: &str = "infra_mqueue_queue_oldest_age_seconds";
/// The label naming the queue.
pub const QUEUE_LABEL: &str = "queue";
/// The `queue` label of a queue that was given no name.
pub const DEFAULT_NAME: &str = "default";

fn describe() {
    describe_counter!(
        REDELIVERIES_TOTAL,
        Unit::Count,
        "Deliveries with an attempt above 1, by queue."
    );
    describe_counter!(
        DEAD_LETTERED_TOTAL,
        Unit::Count,
        "Messages moved to the dead-letter topic, by queue."
    );
    describe_counter!(
        DUPLICATES_TOTAL,
        Unit::Count,
        "Sends whose message id was already in the dedup window, by queue."
    );
    describe_counter!(
        REFUSED_TOTAL,
        Unit::Count,
        "Acks, nacks, extends and terms refused as stale, settled or unknown, by queue."
    );
    describe_gauge!(IN_FLIGHT, Unit::Count, "Leased messages, by queue.");
    describe_gauge!(
        OLDEST_AGE_SECONDS,
        Unit::Seconds,
        "Age of the oldest unsettled message, by queue."
    );
}

/// The handles a queue updates.
#[derive(Debug)]
pub(crate) struct QueueMetrics {
    redeliveries: Counter,
    dead_lettered: Counter,
    duplicates: Counter,
    refused: Counter,
    in_flight: Gauge,
    oldest_age: Gauge,
}

impl QueueMetrics {
    pub(crate) fn new(name: Option<&str>) -> Self {
        describe();
        let queue = name.unwrap_or(DEFAULT_NAME).to_owned();
        Self {
            redeliveries: counter!(REDELIVERIES_TOTAL, QUEUE_LABEL => queue.clone()),
            dead_lettered: counter!(DEAD_LETTERED_TOTAL, QUEUE_LABEL => queue.clone()),
            duplicates: counter!(DUPLICATES_TOTAL, QUEUE_LABEL => queue.clone()),
            refused: counter!(REFUSED_TOTAL, QUEUE_LABEL => queue.clone()),
            in_flight: gauge!(IN_FLIGHT, QUEUE_LABEL => queue.clone()),
            oldest_age: gauge!(OLDEST_AGE_SECONDS, QUEUE_LABEL => queue),
        }
    }

    pub(crate) fn redelivered(&self) {
        self.redeliveries.increment(1);
    }

    pub(crate) fn dead_lettered(&self) {
        self.dead_lettered.increment(1);
    }

    pub(crate) fn duplicate(&self) {
        self.duplicates.increment(1);
    }

    pub(crate) fn refused(&self) {
        self.refused.increment(1);
    }

    #[allow(
        clippy::cast_precision_loss,
        reason = "a gauge is an f64; counts this large are approximate anyway"
    )]
    pub(crate) fn gauges(&self, leases: &Leases, now: u64) {
        self.in_flight.set(leases.in_flight() as f64);
        let age = leases
            .oldest_enqueued_at()
            .map_or(0, |at| now.saturating_sub(at));
        self.oldest_age.set(age as f64 / 1e9);
    }
}
