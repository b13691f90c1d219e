//! What batched matching does, reported through the [`metrics`] facade (feature `metrics`).
//!
//! | name | type | labels | what |
//! | --- | --- | --- | --- |
//! | [`MATCH_SECONDS`] | histogram | `matcher` | each batch's time from its first query to its last claim, on the matcher's clock |
//! | [`MATCHED_TOTAL`] | counter | `matcher`, `outcome` | requests of each batch: `matched` (claim held) or `unmatched` |
//! | [`GREEDY_TOTAL`] | counter | `matcher` | requests an assignment placed greedily because its work budget ran out (their batch is not proven optimal; see [`BatchOutcome::solves`](super::BatchOutcome::solves)) |
//!
//! `matcher` is the name given with
//! [`BatchMatcher::with_metrics_name`](super::BatchMatcher::with_metrics_name) (default
//! [`DEFAULT_MATCHER_NAME`]). Claims lost to races are counted by the index
//! (`infra_geomatch_claims_total`). Handles are registered when the matcher is built or
//! named, so install the recorder **before** building the matcher. A matcher is registered
//! under the default name when built, so a renamed one leaves that series at zero.

use std::borrow::Cow;
use std::time::Duration;

use metrics::{
    Counter, Histogram, SharedString, Unit, counter, describe_counter, describe_histogram,
    histogram,
};

/// Histogram of batch durations in seconds, labelled `matcher`.
pub const MATCH_SECONDS: &str = "infra_geomatch_match_seconds";
/// Counter of batched requests, labelled `matcher` and `outcome` (`matched`, `unmatched`).
pub const MATCHED_TOTAL: &str = "infra_geomatch_matched_total";
/// Counter of requests placed greedily once an assignment's work budget ran out, labelled
/// `matcher`.
pub const GREEDY_TOTAL: &str = "infra_geomatch_greedy_requests_total";
/// The label naming the matcher.
pub const MATCHER_LABEL: &str = "matcher";
/// The label naming a request's outcome.
pub const OUTCOME_LABEL: &str = "outcome";
/// The `matcher` label of a matcher that was given no name.
pub const DEFAULT_MATCHER_NAME: &str = "default";

/// One matcher's handles.
#[derive(Debug)]
pub(crate) struct MatchMetrics {
    seconds: Histogram,
    matched: Counter,
    unmatched: Counter,
    greedy: Counter,
}

impl MatchMetrics {
    pub(crate) fn new(name: Cow<'static, str>) -> Self {
        describe_histogram!(
            MATCH_SECONDS,
            Unit::Seconds,
            "Time of each batch from its first query to its last claim."
        );
        describe_counter!(
            MATCHED_TOTAL,
            Unit::Count,
            "Batched requests by outcome: matched (claim held) or unmatched."
        );
        describe_counter!(
            GREEDY_TOTAL,
            Unit::Count,
            "Requests placed greedily because an assignment's work budget ran out."
        );
        let name = SharedString::from(name);
        Self {
            seconds: histogram!(MATCH_SECONDS, MATCHER_LABEL => name.clone()),
            matched: counter!(MATCHED_TOTAL, MATCHER_LABEL => name.clone(), OUTCOME_LABEL => "matched"),
            unmatched: counter!(MATCHED_TOTAL, MATCHER_LABEL => name.clone(), OUTCOME_LABEL => "unmatched"),
            greedy: counter!(GREEDY_TOTAL, MATCHER_LABEL => name),
        }
    }

    pub(crate) fn record(
        &self,
        elapsed: Duration,
        matched: usize,
        unmatched: usize,
        greedy: usize,
    ) {
        self.seconds.record(elapsed.as_secs_f64());
        self.matched.increment(matched as u64);
        self.unmatched.increment(unmatched as u64);
        self.greedy.increment(greedy as u64);
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use std::time::Duration;

    use infra_common::ManualClock;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;
    use crate::matching::{BatchConfig, BatchMatcher, WorkBudget};
    use crate::{Config, DriverId, DriverProfile, Filter, Index, Point};

    #[test]
    fn a_batch_reports_its_time_and_outcomes_under_its_name() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let clock = ManualClock::new();
        let matcher = metrics::with_local_recorder(&recorder, || {
            BatchMatcher::with_clock(BatchConfig::default(), clock.clone())
                .expect("valid")
                .with_metrics_name("city")
        });
        let index = Index::new(Config::default()).expect("valid");
        let at = Point::new(0.0, 0.0).expect("valid");
        index
            .insert(DriverId(1), at, DriverProfile::default())
            .expect("new");
        // Two requests at one driver; each call of the cost function stands in for 5 ms of
        // work, so the batch takes 10 ms on the manual clock.
        let outcome = metrics::with_local_recorder(&recorder, || {
            matcher.match_batch_by(&index, &[at, at], &Filter::any(), |_, candidate| {
                clock.advance(Duration::from_millis(5));
                Some(candidate.distance_m)
            })
        })
        .expect("valid batch");
        assert_eq!((outcome.matches.len(), outcome.unmatched.len()), (1, 1));

        let mut seen = Vec::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|label| (label.key().to_owned(), label.value().to_owned()))
                .collect();
            labels.sort();
            let value = match value {
                DebugValue::Counter(count) => format!("{count}"),
                DebugValue::Histogram(values) => format!("{values:?}"),
                DebugValue::Gauge(gauge) => format!("{gauge:?}"),
            };
            seen.push((key.name().to_owned(), labels, value));
        }
        seen.sort();
        let label = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        };
        assert_eq!(
            seen,
            [
                (
                    GREEDY_TOTAL.to_owned(),
                    label(&[("matcher", "city")]),
                    "0".to_owned()
                ),
                (
                    GREEDY_TOTAL.to_owned(),
                    label(&[("matcher", "default")]),
                    "0".to_owned()
                ),
                (
                    MATCH_SECONDS.to_owned(),
                    label(&[("matcher", "city")]),
                    "[0.01]".to_owned()
                ),
                (
                    MATCH_SECONDS.to_owned(),
                    label(&[("matcher", "default")]),
                    "[]".to_owned()
                ),
                (
                    MATCHED_TOTAL.to_owned(),
                    label(&[("matcher", "city"), ("outcome", "matched")]),
                    "1".to_owned()
                ),
                (
                    MATCHED_TOTAL.to_owned(),
                    label(&[("matcher", "city"), ("outcome", "unmatched")]),
                    "1".to_owned()
                ),
                (
                    MATCHED_TOTAL.to_owned(),
                    label(&[("matcher", "default"), ("outcome", "matched")]),
                    "0".to_owned()
                ),
                (
                    MATCHED_TOTAL.to_owned(),
                    label(&[("matcher", "default"), ("outcome", "unmatched")]),
                    "0".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn requests_placed_greedily_are_counted() {
        // Requests 0 to 9 may take driver r at 1 or driver r + 1 at 2, request 10 only driver
        // 0: serving it means moving all the others, which a budget of nothing does not allow.
        let chain: u64 = 10;
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let config = BatchConfig {
            candidates: BatchConfig::MAX_CANDIDATES,
            work_budget: WorkBudget::Scans(0),
            ..BatchConfig::default()
        };
        let matcher = metrics::with_local_recorder(&recorder, || {
            BatchMatcher::with_clock(config, ManualClock::new()).expect("valid")
        });
        let index = Index::new(Config::default()).expect("valid");
        for driver in 0..=chain {
            let at = Point::new(0.0, 0.0001 * driver as f64).expect("valid");
            index
                .insert(DriverId(driver), at, DriverProfile::default())
                .expect("new");
        }
        let requests = vec![Point::new(0.0, 0.0).expect("valid"); chain as usize + 1];
        let outcome = metrics::with_local_recorder(&recorder, || {
            matcher.match_batch_by(&index, &requests, &Filter::any(), |request, candidate| {
                let (request, driver) = (request as u64, candidate.driver.0);
                match () {
                    () if request == chain => (driver == 0).then_some(1.0),
                    () if driver == request => Some(1.0),
                    () if driver == request + 1 => Some(2.0),
                    () => None,
                }
            })
        })
        .expect("valid batch");
        assert_eq!(outcome.solves[0].greedy_requests, 1);
        let greedy: Vec<DebugValue> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| key.key().name() == GREEDY_TOTAL)
            .map(|(.., value)| value)
            .collect();
        assert_eq!(greedy, [DebugValue::Counter(1)]);
    }
}
