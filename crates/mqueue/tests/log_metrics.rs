//! The log's metrics (feature `metrics`): exact counts per series for a known sequence.
#![cfg(feature = "metrics")]

use std::path::Path;

use infra_common::ManualClock;
use infra_mqueue::log::{FsyncPolicy, Log, LogOptions, Retention, SimulatedStorage};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[path = "support/failing_storage.rs"]
mod failing_storage;

use failing_storage::FailingDirSyncs;

fn read(
    snapshot: &[(metrics_util::CompositeKey, DebugValue)],
    name: &str,
    log: &str,
) -> Option<f64> {
    snapshot.iter().find_map(|(key, value)| {
        let key = key.key();
        let labelled = key.labels().any(|l| l.key() == "log" && l.value() == log);
        (key.name() == name && labelled).then(|| match value {
            DebugValue::Counter(n) => *n as f64,
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Histogram(_) => f64::NAN,
        })
    })
}

/// The snapshot's series as (key, value) pairs.
fn series(
    snapshotter: &metrics_util::debugging::Snapshotter,
) -> Vec<(metrics_util::CompositeKey, DebugValue)> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect()
}

#[test]
fn appends_bytes_fsyncs_and_depth_per_log() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let disk = SimulatedStorage::new();
    metrics::with_local_recorder(&recorder, || {
        let orders = Log::open_with(
            Path::new("/orders"),
            LogOptions::default(),
            ManualClock::new(),
            disk.clone(),
        )
        .unwrap()
        .with_metrics_name("orders");
        orders.append(b"12345").unwrap();
        orders.append_batch(&[b"a", b"bc"]).unwrap();
        let audit = Log::open_with(
            Path::new("/audit"),
            LogOptions {
                fsync: FsyncPolicy::Never,
                ..LogOptions::default()
            },
            ManualClock::new(),
            disk.clone(),
        )
        .unwrap()
        .with_metrics_name("audit");
        audit.append(b"x").unwrap();
    });
    let snapshot = series(&snapshotter);
    let get = |name, log| read(&snapshot, name, log);
    assert_eq!(get("infra_mqueue_log_appends_total", "orders"), Some(3.0));
    // Framing: 12 bytes per record.
    assert_eq!(
        get("infra_mqueue_log_appended_bytes_total", "orders"),
        Some(f64::from(5 + 1 + 2 + 3 * 12))
    );
    assert_eq!(get("infra_mqueue_log_fsyncs_total", "orders"), Some(2.0));
    assert_eq!(get("infra_mqueue_log_depth", "orders"), Some(3.0));
    assert_eq!(get("infra_mqueue_log_appends_total", "audit"), Some(1.0));
    assert_eq!(get("infra_mqueue_log_fsyncs_total", "audit"), Some(0.0));
    assert_eq!(get("infra_mqueue_log_depth", "audit"), Some(1.0));
}

/// Rolls whose retention could not delete a segment are counted, and a retention that deleted
/// some segments before it failed still sets the depth.
#[test]
fn failed_retentions_are_counted_and_the_depth_follows_what_was_deleted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let disk = FailingDirSyncs::over(SimulatedStorage::new());
    // Two 30-byte records a segment (40 bytes of header, 42 a record): a roll every second
    // append, and retention wants the oldest segment gone from the third roll on, when three
    // sealed segments and the new one's header pass 3 × 124 bytes.
    let options = LogOptions {
        segment_bytes: 150,
        preallocate: 0,
        retention: Retention {
            max_bytes: Some(3 * 124),
            ..Retention::default()
        },
        ..LogOptions::default()
    };
    let log = metrics::with_local_recorder(&recorder, || {
        Log::open_with(Path::new("/log"), options, ManualClock::new(), disk.clone())
            .unwrap()
            .with_metrics_name("log")
    });
    disk.set_failing_removes(true);
    // Ten segments, nine rolls: the third to the ninth find a segment to delete and cannot.
    for i in 0..20_u8 {
        log.append(&[i; 30]).unwrap();
    }
    let snapshot = series(&snapshotter);
    let get = |name| read(&snapshot, name, "log");
    assert_eq!(get("infra_mqueue_log_retention_failures_total"), Some(7.0));
    assert_eq!(get("infra_mqueue_log_depth"), Some(20.0));
    // One deletion goes through, the next fails.
    disk.fail_removes_after(1);
    assert!(log.enforce_retention().is_err());
    let kept = log.stats().depth;
    assert_eq!(kept, 18);
    let snapshot = series(&snapshotter);
    assert_eq!(
        read(&snapshot, "infra_mqueue_log_depth", "log"),
        Some(f64::from(u32::try_from(kept).unwrap()))
    );
}

/// Each partition of a stream is its own series, named after the stream's directory and the
/// partition's: one shared series would have every partition set the depth gauge to its own
/// depth over the others'.
#[test]
fn each_partition_of_a_stream_has_its_own_series() {
    use infra_mqueue::stream::{Stream, StreamOptions};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let disk = SimulatedStorage::new();
    metrics::with_local_recorder(&recorder, || {
        let stream = Stream::open_with(
            Path::new("/orders"),
            StreamOptions {
                partitions: 2,
                ..StreamOptions::default()
            },
            ManualClock::new(),
            disk.clone(),
        )
        .unwrap();
        let key_in = |partition| {
            (0u32..)
                .map(u32::to_le_bytes)
                .find(|key| stream.partition_for(key) == partition)
                .unwrap()
        };
        for _ in 0..3 {
            stream.publish(&key_in(0), b"x").unwrap();
        }
        stream.publish(&key_in(1), b"y").unwrap();
    });
    let snapshot = series(&snapshotter);
    let get = |name, log| read(&snapshot, name, log);
    for (log, depth) in [
        ("orders/partition-00000", 3.0),
        ("orders/partition-00001", 1.0),
    ] {
        assert_eq!(get("infra_mqueue_log_depth", log), Some(depth), "{log}");
        assert_eq!(
            get("infra_mqueue_log_appends_total", log),
            Some(depth),
            "{log}"
        );
    }
}
