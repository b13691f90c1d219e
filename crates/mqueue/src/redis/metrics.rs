//! What a Redis work queue does, reported through the [`metrics`] facade (feature `metrics`
//! with feature `redis`).
//!
//! Names shared with the embedded queue ([`crate::queue::metrics`]) mean the same thing
//! there; the others are new here.
//!
//! | name | type | labels | counts |
//! | --- | --- | --- | --- |
//! | [`SENDS_TOTAL`] | counter | `queue` | sends stored (not duplicates) |
//! | [`DUPLICATES_TOTAL`] | counter | `queue` | sends whose id was already in the dedup window |
//! | [`DELIVERIES_TOTAL`] | counter | `queue` | messages handed out by a receive, any attempt |
//! | [`REDELIVERIES_TOTAL`] | counter | `queue` | deliveries with an attempt above 1 |
//! | [`ACKS_TOTAL`] | counter | `queue` | acks accepted |
//! | [`DEAD_LETTERED_TOTAL`] | counter | `queue` | messages moved to the dead-letter stream |
//! | [`REFUSED_TOTAL`] | counter | `queue` | acks, nacks, extends and terms refused (stale, settled or unknown) |
//! | [`BACKEND_ERRORS_TOTAL`] | counter | `queue` | calls whose round trip to the server failed (connection, timeout, server error) |
//!
//! `queue` is the name given with `RedisOptions::metrics_name`, [`DEFAULT_NAME`] otherwise.
//! The handles are registered when the queue is built, so install the recorder first.

use metrics::{Counter, Unit, counter, describe_counter};

pub use crate::queue::metrics::{
    DEAD_LETTERED_TOTAL, DEFAULT_NAME, DUPLICATES_TOTAL, QUEUE_LABEL, REDELIVERIES_TOTAL,
    REFUSED_TOTAL,
};

/// Counter of stored sends, labelled `queue`.
pub const SENDS_TOTAL: &str = "infra_mqueue_queue_sends_total";
/// Counter of deliveries (first and later attempts), labelled `queue`.
pub const DELIVERIES_TOTAL: &str = "infra_mqueue_queue_deliveries_total";
/// Counter of accepted acks, labelled `queue`.
pub const ACKS_TOTAL: &str = "infra_mqueue_queue_acks_total";
/// Counter of calls that failed because the server did, labelled `queue`.
pub const BACKEND_ERRORS_TOTAL: &str = "infra_mqueue_queue_backend_errors_total";

fn describe() {
    describe_counter!(SENDS_TOTAL, Unit::Count, "Sends stored, by queue.");
    describe_counter!(
        DUPLICATES_TOTAL,
        Unit::Count,
        "Sends whose message id was already in the dedup window, by queue."
    );
    describe_counter!(
        DELIVERIES_TOTAL,
        Unit::Count,
        "Messages handed out by a receive, any attempt, by queue."
    );
    describe_counter!(
        REDELIVERIES_TOTAL,
        Unit::Count,
        "Deliveries with an attempt above 1, by queue."
    );
    describe_counter!(ACKS_TOTAL, Unit::Count, "Acks accepted, by queue.");
    describe_counter!(
        DEAD_LETTERED_TOTAL,
        Unit::Count,
        "Messages moved to the dead-letter topic, by queue."
    );
    describe_counter!(
        REFUSED_TOTAL,
        Unit::Count,
        "Acks, nacks, extends and terms refused as stale, settled or unknown, by queue."
    );
    describe_counter!(
        BACKEND_ERRORS_TOTAL,
        Unit::Count,
        "Calls that failed because the Redis server did, by queue."
    );
}

/// The handles a Redis queue updates.
#[derive(Debug)]
pub(crate) struct RedisMetrics {
    pub(crate) sends: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) deliveries: Counter,
    pub(crate) redeliveries: Counter,
    pub(crate) acks: Counter,
    pub(crate) dead_lettered: Counter,
    pub(crate) refused: Counter,
    pub(crate) backend_errors: Counter,
}

impl RedisMetrics {
    pub(crate) fn new(name: Option<&str>) -> Self {
        describe();
        let queue = name.unwrap_or(DEFAULT_NAME).to_owned();
        Self {
            sends: counter!(SENDS_TOTAL, QUEUE_LABEL => queue.clone()),
            duplicates: counter!(DUPLICATES_TOTAL, QUEUE_LABEL => queue.clone()),
            deliveries: counter!(DELIVERIES_TOTAL, QUEUE_LABEL => queue.clone()),
            redeliveries: counter!(REDELIVERIES_TOTAL, QUEUE_LABEL => queue.clone()),
            acks: counter!(ACKS_TOTAL, QUEUE_LABEL => queue.clone()),
            dead_lettered: counter!(DEAD_LETTERED_TOTAL, QUEUE_LABEL => queue.clone()),
            refused: counter!(REFUSED_TOTAL, QUEUE_LABEL => queue.clone()),
            backend_errors: counter!(BACKEND_ERRORS_TOTAL, QUEUE_LABEL => queue),
        }
    }
}
