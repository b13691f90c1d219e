//! Reading back what a crate reported through the `metrics` facade, for exact assertions.
//!
//! Tests install a `metrics_util::debugging::DebuggingRecorder` around the code under test
//! (see ARCHITECTURE.md, Metrics), take one snapshot and look series up by name and labels.
//!
//! ```
//! use infra_testkit::metrics::{counters, value};
//! use metrics_util::debugging::DebuggingRecorder;
//!
//! let recorder = DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! metrics::with_local_recorder(&recorder, || {
//!     metrics::counter!("jobs_total", "queue" => "email").increment(3);
//! });
//! let series = counters(&snapshotter);
//! assert_eq!(value(&series, "jobs_total", &[("queue", "email")]), Some(3));
//! assert_eq!(value(&series, "jobs_total", &[("queue", "sms")]), None);
//! ```

use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, Snapshotter};

/// One counter series: its name, its labels sorted by key, its value.
pub type Series = (String, Vec<(String, String)>, u64);

/// Every counter series of one snapshot. Taking a snapshot resets the debugging recorder's
/// counters, so a test reads all its counters from one.
pub fn counters(snapshotter: &Snapshotter) -> Vec<Series> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let (kind, key) = key.into_parts();
            let DebugValue::Counter(count) = value else {
                return None;
            };
            (kind == MetricKind::Counter).then(|| {
                let mut labels: Vec<(String, String)> = key
                    .labels()
                    .map(|label| (label.key().to_owned(), label.value().to_owned()))
                    .collect();
                labels.sort();
                (key.name().to_owned(), labels, count)
            })
        })
        .collect()
}

/// The value of the series `name` with exactly `labels` (in any order), if it was reported.
pub fn value(series: &[Series], name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    let mut wanted: Vec<(String, String)> = labels
        .iter()
        .map(|&(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    wanted.sort();
    series
        .iter()
        .find(|(series_name, series_labels, _)| series_name == name && *series_labels == wanted)
        .map(|&(_, _, count)| count)
}
