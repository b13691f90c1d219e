//! The log's metrics (feature `metrics`): exact counts per series for a known sequence.
#![cfg(feature = "metrics")]

use std::path::Path;

use infra_common::ManualClock;
use infra_mqueue::log::{FsyncPolicy, Log, LogOptions, SimulatedStorage};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

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
    let snapshot: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect();
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
