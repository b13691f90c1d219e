//! The log's metrics through the `metrics` facade (feature `metrics`).
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `infra_mqueue_log_appends_total` | counter | `log` | records appended |
//! | `infra_mqueue_log_appended_bytes_total` | counter (bytes) | `log` | bytes written for them, framing included |
//! | `infra_mqueue_log_fsyncs_total` | counter | `log` | fsyncs of segment files (shared by a group commit) |
//! | `infra_mqueue_log_depth` | gauge | `log` | records kept (`next_offset - first_offset`) |
//! | `infra_mqueue_log_retention_failures_total` | counter | `log` | segment rolls whose retention failed (a segment could not be deleted; it stays for the next) |
//!
//! `log` is the name given with [`Log::with_metrics_name`](super::Log::with_metrics_name)
//! (a stream names each partition `<directory name>/partition-NNNNN`), `default` otherwise.

use metrics::{Counter, Gauge, Unit};

/// Records appended.
pub(crate) const APPENDS: &str = "infra_mqueue_log_appends_total";
/// Bytes appended, framing included.
pub(crate) const APPENDED_BYTES: &str = "infra_mqueue_log_appended_bytes_total";
/// Segment fsyncs.
pub(crate) const FSYNCS: &str = "infra_mqueue_log_fsyncs_total";
/// Records kept.
pub(crate) const DEPTH: &str = "infra_mqueue_log_depth";
/// Rolls whose retention failed.
pub(crate) const RETENTION_FAILURES: &str = "infra_mqueue_log_retention_failures_total";
/// The label naming the log.
pub(crate) const LOG_LABEL: &str = "log";

/// One log's handles, registered once.
#[derive(Debug, Clone)]
pub(crate) struct LogMetrics {
    appends: Counter,
    bytes: Counter,
    fsyncs: Counter,
    depth: Gauge,
    retention_failures: Counter,
}

impl LogMetrics {
    pub(crate) fn register(name: &str) -> Self {
        metrics::describe_counter!(APPENDS, Unit::Count, "Records appended to the log.");
        metrics::describe_counter!(
            APPENDED_BYTES,
            Unit::Bytes,
            "Bytes written for appended records, framing included."
        );
        metrics::describe_counter!(FSYNCS, Unit::Count, "fsyncs of the log's segment files.");
        metrics::describe_gauge!(DEPTH, Unit::Count, "Records the log keeps.");
        metrics::describe_counter!(
            RETENTION_FAILURES,
            Unit::Count,
            "Segment rolls whose retention could not delete a segment."
        );
        let label = [(LOG_LABEL, name.to_owned())];
        Self {
            appends: metrics::counter!(APPENDS, &label),
            bytes: metrics::counter!(APPENDED_BYTES, &label),
            fsyncs: metrics::counter!(FSYNCS, &label),
            depth: metrics::gauge!(DEPTH, &label),
            retention_failures: metrics::counter!(RETENTION_FAILURES, &label),
        }
    }

    pub(crate) fn appended(&self, records: usize, bytes: usize, depth: u64) {
        self.appends.increment(records as u64);
        self.bytes.increment(bytes as u64);
        #[allow(clippy::cast_precision_loss, reason = "a gauge is an f64")]
        self.depth.set(depth as f64);
    }

    pub(crate) fn fsynced(&self) {
        self.fsyncs.increment(1);
    }

    pub(crate) fn retention_failed(&self) {
        self.retention_failures.increment(1);
    }

    pub(crate) fn depth(&self, depth: u64) {
        #[allow(clippy::cast_precision_loss, reason = "a gauge is an f64")]
        self.depth.set(depth as f64);
    }
}
