//! The work queue's metrics (feature `metrics`): exact counts per series for a known sequence,
//! under the queue's own name and never per message.
#![cfg(all(feature = "metrics", not(infra_loom)))]

use std::path::Path;
use std::time::Duration;

use infra_common::ManualClock;
use infra_mqueue::log::{FsyncPolicy, LogOptions, SimulatedStorage};
use infra_mqueue::queue::metrics::{
    DEAD_LETTERED_TOTAL, DUPLICATES_TOTAL, IN_FLIGHT, OLDEST_AGE_SECONDS, REDELIVERIES_TOTAL,
    REFUSED_TOTAL,
};
use infra_mqueue::queue::{DedupWindow, Message, QueueOptions, WorkQueue};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[test]
fn a_known_sequence_reports_exact_counts_under_the_queue_name() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let clock = ManualClock::new();
    metrics::with_local_recorder(&recorder, || {
        let options = QueueOptions::default()
            .visibility_timeout(Duration::from_secs(10))
            .max_deliveries(2)
            .dedup(DedupWindow::new(8))
            .metrics_name("jobs");
        let queue = WorkQueue::in_memory_with_clock(options, clock.clone()).unwrap();
        queue.send(Message::new(b"a".to_vec()).id("a")).unwrap();
        queue.send(Message::new(b"a".to_vec()).id("a")).unwrap(); // duplicate
        queue.send("b").unwrap();
        let first = queue.try_receive().unwrap().unwrap();
        clock.advance(Duration::from_secs(10));
        let second = queue.try_receive().unwrap().unwrap(); // redelivery of "a"
        assert!(queue.ack(&first).is_err()); // refused
        queue.nack(&second, Duration::ZERO).unwrap();
        let b = queue.try_receive().unwrap().unwrap(); // "a" dead-lettered, then "b"
        assert_eq!(b.payload(), b"b");
        clock.advance(Duration::from_secs(3));
        queue.extend(&b, Duration::from_secs(10)).unwrap();
    });
    let mut seen = std::collections::BTreeMap::new();
    for (key, _unit, _description, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<(String, String)> = key
            .key()
            .labels()
            .map(|label| (label.key().to_owned(), label.value().to_owned()))
            .collect();
        assert_eq!(labels, [("queue".to_owned(), "jobs".to_owned())], "{key:?}");
        let value = match value {
            DebugValue::Counter(count) => count as f64,
            DebugValue::Gauge(gauge) => gauge.into_inner(),
            DebugValue::Histogram(_) => panic!("no histograms"),
        };
        seen.insert(key.key().name().to_owned(), value);
    }
    assert_eq!(seen[REDELIVERIES_TOTAL], 1.0);
    assert_eq!(seen[DEAD_LETTERED_TOTAL], 1.0);
    assert_eq!(seen[DUPLICATES_TOTAL], 1.0);
    assert_eq!(seen[REFUSED_TOTAL], 1.0);
    assert_eq!(seen[IN_FLIGHT], 1.0);
    // "b" was sent at 0 s and is still unsettled at 13 s.
    assert_eq!(seen[OLDEST_AGE_SECONDS], 13.0);
}

/// A durable queue counts a redelivery once it reaches its caller: one taken back (its
/// receive's journal write failed) was never made.
#[test]
fn a_redelivery_taken_back_is_not_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let disk = SimulatedStorage::new();
    metrics::with_local_recorder(&recorder, || {
        let log = LogOptions {
            fsync: FsyncPolicy::Never,
            ..LogOptions::default()
        };
        let options = QueueOptions::default()
            .log_options(log)
            .metrics_name("jobs");
        let queue = WorkQueue::open_with(
            Path::new("/queue"),
            options,
            ManualClock::new(),
            disk.clone(),
        )
        .unwrap();
        queue.send("a").unwrap();
        let first = queue.try_receive().unwrap().unwrap();
        queue.nack(&first, Duration::ZERO).unwrap();
        disk.set_failing(true);
        assert!(queue.try_receive().is_err());
        disk.set_failing(false);
        let second = queue.try_receive().unwrap().unwrap();
        assert_eq!(second.attempt(), 2);
    });
    let redeliveries =
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find_map(|(key, _, _, value)| match value {
                DebugValue::Counter(count) if key.key().name() == REDELIVERIES_TOTAL => Some(count),
                _ => None,
            });
    assert_eq!(
        redeliveries,
        Some(1),
        "the redelivery taken back is not counted"
    );
}
