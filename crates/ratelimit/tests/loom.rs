//! Model-checked concurrency: every interleaving of a few threads on the lock-free paths.
//!
//! `RUSTFLAGS="--cfg infra_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p infra-ratelimit --test loom`
#![cfg(infra_loom)]

use infra_common::ManualClock;
use infra_common::sync::{Arc, model, thread};
use infra_ratelimit::{
    AdaptiveConcurrencyLimiter, AdaptivePermit, Algorithm, AlgorithmConfig, Error, Gcra,
    GcraConfig, KeyedOptions, KeyedRateLimiter, Quota, RateLimiter, TokenBucket, TokenBucketConfig,
};
use std::time::Duration;

fn quota(limit: u64, burst: u64) -> Quota {
    Quota::per_second(limit).unwrap().with_burst(burst).unwrap()
}

/// Runs `callers` threads, each asking `state` for `n` cells at its own time; returns the cells
/// admitted in total.
fn admitted_cells<A: Algorithm + 'static>(config: A::Config, calls: &[(u64, u32)]) -> u32 {
    let state = Arc::new(A::new(&config, 0));
    let handles: Vec<_> = calls
        .iter()
        .map(|&(now, n)| {
            let state = Arc::clone(&state);
            thread::spawn(move || {
                if state.check_n(&config, now, n).is_allowed() {
                    n
                } else {
                    0
                }
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

#[test]
fn gcra_never_admits_more_than_the_burst() {
    model(|| {
        let config = GcraConfig::from_quota(&quota(1, 2)).unwrap();
        let cells = admitted_cells::<Gcra>(config, &[(0, 1), (0, 1), (0, 1)]);
        assert_eq!(cells, 2);
    });
}

#[test]
fn gcra_batches_and_singles_share_the_burst() {
    model(|| {
        let config = GcraConfig::from_quota(&quota(1, 3)).unwrap();
        // One cell refills per second; the late caller may see at most that one more.
        let cells = admitted_cells::<Gcra>(config, &[(0, 2), (0, 2), (1_000_000_000, 1)]);
        assert!(cells <= 4, "admitted {cells}");
        // A later reading served first leaves the earlier readings in debt: that is
        // conservative, and at least one caller always gets through.
        assert!(cells >= 1, "admitted {cells}");
    });
}

#[test]
fn token_bucket_never_admits_more_than_the_burst() {
    model(|| {
        let config = TokenBucketConfig::from_quota(&quota(1, 2)).unwrap();
        let cells = admitted_cells::<TokenBucket>(config, &[(0, 1), (0, 1), (0, 1)]);
        assert_eq!(cells, 2);
    });
}

#[test]
fn token_bucket_older_readings_add_nothing() {
    model(|| {
        // Burst 2 at one token a second, full at 0. A caller reading 1 s takes both tokens
        // while a caller reading 0 (an older reading) asks for one. Served in reading order,
        // they get 1 + 2; served the other way, the older reading finds the bucket empty. In
        // every order the bucket is empty at 1 s afterwards: no update is lost and the older
        // reading adds nothing.
        let config = TokenBucketConfig::from_quota(&quota(1, 2)).unwrap();
        let second = 1_000_000_000;
        let state = Arc::new(TokenBucket::new(&config, 0));
        let handles: Vec<_> = [(second, 2), (0, 1)]
            .into_iter()
            .map(|(now, n)| {
                let state = Arc::clone(&state);
                thread::spawn(move || state.check_n(&config, now, n).is_allowed())
            })
            .collect();
        let admitted: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(
            admitted[0],
            "the later reading finds two tokens in every order"
        );
        let after = state.check_n(&config, second, 1);
        assert!(after.is_denied(), "{admitted:?} then {after:?}");
        assert_eq!(after.remaining(), 0);
    });
}

#[test]
fn quota_changes_are_never_torn() {
    model(|| {
        // Every configuration word and both quota words differ between the two quotas, so a
        // read mixing them shows: GCRA's remaining cells at rest are tolerance / interval,
        // which is the burst (1 or 3) only for words from one quota.
        let before = quota(1, 1);
        let after = Quota::new(4, Duration::from_secs(2))
            .unwrap()
            .with_burst(3)
            .unwrap();
        let limiter = Arc::new(RateLimiter::gcra(before, ManualClock::new()).unwrap());
        let writer = {
            let limiter = Arc::clone(&limiter);
            thread::spawn(move || limiter.set_quota(after).unwrap())
        };
        let at_rest = limiter.check_n(0).unwrap();
        let pair = (at_rest.limit(), at_rest.remaining());
        assert!(pair == (1, 1) || pair == (3, 3), "{pair:?}");
        let seen = limiter.quota();
        assert!(seen == before || seen == after, "{seen:?}");
        writer.join().unwrap();
        assert_eq!(limiter.quota(), after);
    });
}

#[test]
fn keyed_sweeps_never_lose_an_admitted_request() {
    model(|| {
        let clock = ManualClock::new();
        let limiter = Arc::new(
            KeyedRateLimiter::<u8, Gcra, _>::with_clock(quota(1, 1), clock.clone()).unwrap(),
        );
        assert!(limiter.check(&7).unwrap().is_allowed());
        // A second later key 7 is idle: a sweep may forget it, but not once a check has taken
        // its refilled cell.
        clock.advance(Duration::from_secs(1));
        let checker = {
            let limiter = Arc::clone(&limiter);
            thread::spawn(move || limiter.check(&7).unwrap().is_allowed())
        };
        let sweeper = {
            let limiter = Arc::clone(&limiter);
            thread::spawn(move || limiter.sweep())
        };
        assert!(checker.join().unwrap());
        let swept = sweeper.join().unwrap();
        assert!(swept <= 1);
        // The admission is remembered: the key's only cell is taken, whether the sweep ran
        // before the check (and the key came back) or after it (and kept the key).
        assert!(limiter.check(&7).unwrap().is_denied(), "swept {swept}");
        assert_eq!(limiter.len(), 1);
        clock.advance(Duration::from_secs(1));
        assert_eq!(limiter.sweep(), 1);
        assert!(limiter.is_empty());
    });
}

#[test]
fn keyed_racing_inserts_respect_the_cap_and_share_one_state() {
    model(|| {
        let options = KeyedOptions::default().max_keys(1);
        let limiter = Arc::new(
            KeyedRateLimiter::<u8, Gcra, _>::with_options(quota(1, 1), ManualClock::new(), options)
                .unwrap(),
        );
        let handles: Vec<_> = [1u8, 1, 2]
            .into_iter()
            .map(|key| {
                let limiter = Arc::clone(&limiter);
                thread::spawn(move || (key, limiter.check(&key)))
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let admitted = results
            .iter()
            .filter(|(_, r)| r.as_ref().is_ok_and(infra_ratelimit::Decision::is_allowed))
            .count();
        let refused = results
            .iter()
            .filter(|(_, r)| matches!(r, Err(Error::TooManyKeys { .. })))
            .count();
        // One key fits; whichever got in, exactly one request was admitted for it.
        assert_eq!(limiter.len(), 1);
        assert_eq!(admitted, 1, "{results:?}");
        assert!(refused >= 1, "{results:?}");
    });
}

#[test]
fn keyed_eviction_never_forgets_an_admitted_request() {
    model(|| {
        let clock = ManualClock::new();
        let options = KeyedOptions::default().max_keys(1);
        let limiter = Arc::new(
            KeyedRateLimiter::<u8, Gcra, _>::with_options(quota(1, 1), clock.clone(), options)
                .unwrap(),
        );
        assert!(limiter.check(&1).unwrap().is_allowed());
        let one_key = limiter.bytes();
        // A second later key 1 is idle: a new key may take its place, but not once a check has
        // taken key 1's refilled cell.
        clock.advance(Duration::from_secs(1));
        let handles: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|key| {
                let limiter = Arc::clone(&limiter);
                thread::spawn(move || {
                    limiter
                        .check(&key)
                        .as_ref()
                        .is_ok_and(infra_ratelimit::Decision::is_allowed)
                })
            })
            .collect();
        let admitted: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        // One place, one admission, and the admitted key's state is the one kept.
        assert_eq!(admitted.iter().filter(|&&a| a).count(), 1, "{admitted:?}");
        let winner = if admitted[0] { 1u8 } else { 2 };
        assert!(limiter.check(&winner).unwrap().is_denied(), "{admitted:?}");
        assert_eq!(limiter.len(), 1);
        assert_eq!(limiter.bytes(), one_key);
    });
}

#[test]
fn keyed_racing_reclaims_forget_each_key_once() {
    model(|| {
        let clock = ManualClock::new();
        let options = KeyedOptions::default().max_keys(2);
        let limiter = Arc::new(
            KeyedRateLimiter::<u8, Gcra, _>::with_options(quota(1, 1), clock.clone(), options)
                .unwrap(),
        );
        assert!(limiter.check(&1).unwrap().is_allowed());
        assert!(limiter.check(&2).unwrap().is_allowed());
        let one_key = limiter.bytes() / 2;
        // A second later both keys are idle, and two new keys each walk the hand over them
        // from the same place: each key is forgotten, and its room given back, once.
        clock.advance(Duration::from_secs(1));
        let handles: Vec<_> = [3u8, 4]
            .into_iter()
            .map(|key| {
                let limiter = Arc::clone(&limiter);
                thread::spawn(move || limiter.check(&key))
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let admitted = results
            .iter()
            .filter(|r| r.as_ref().is_ok_and(infra_ratelimit::Decision::is_allowed))
            .count();
        // A key may be refused while the room the other walk freed is on its way back.
        assert!(admitted >= 1, "{results:?}");
        assert!(
            results
                .iter()
                .all(|r| r.is_ok() || matches!(r, Err(Error::TooManyKeys { .. }))),
            "{results:?}"
        );
        assert_eq!(limiter.len(), admitted, "{results:?}");
        assert_eq!(limiter.bytes(), admitted * one_key, "{results:?}");
    });
}

/// Two requests taken from `limiter` by two threads, both in flight before either is answered,
/// then each answered with `answer` (a fast success or an overload report), in either order.
fn answered_together<F>(limiter: &Arc<AdaptiveConcurrencyLimiter<ManualClock>>, answer: F)
where
    F: Fn(AdaptivePermit<'_, ManualClock>) + Clone + Send + 'static,
{
    use infra_common::sync::atomic::{AtomicUsize, Ordering};
    let taken = Arc::new(AtomicUsize::new(0));
    let reporters: Vec<_> = (0..2)
        .map(|_| {
            let (limiter, taken) = (Arc::clone(limiter), Arc::clone(&taken));
            let answer = answer.clone();
            thread::spawn(move || {
                let permit = limiter.try_acquire().unwrap();
                taken.fetch_add(1, Ordering::AcqRel);
                while taken.load(Ordering::Acquire) < 2 {
                    thread::yield_now();
                }
                answer(permit);
            })
        })
        .collect();
    for reporter in reporters {
        reporter.join().unwrap();
    }
}

#[test]
fn adaptive_overloads_reported_together_cut_once() {
    use infra_ratelimit::AimdConfig;
    model(|| {
        let config = AimdConfig::new(100, 1, 200, Duration::from_millis(10)).unwrap();
        let limiter = Arc::new(AdaptiveConcurrencyLimiter::new(config, ManualClock::new()));
        // Both requests are in flight under the same limit, then both time out: whatever the
        // order of the two reports, the limit is cut once.
        answered_together(&limiter, |permit| permit.overloaded());
        assert_eq!(limiter.limit(), 90);
        // A request sent after the cut may cut again.
        limiter.try_acquire().unwrap().overloaded();
        assert_eq!(limiter.limit(), 81);
    });
}

#[test]
fn adaptive_fast_successes_reported_together_add_one() {
    use infra_ratelimit::AimdConfig;
    model(|| {
        let config = AimdConfig::new(2, 1, 100, Duration::from_millis(10)).unwrap();
        let limiter = Arc::new(AdaptiveConcurrencyLimiter::new(config, ManualClock::new()));
        // One fast success of the two that raise a limit of 2.
        limiter.try_acquire().unwrap().success();
        // Two more, sent together with the limit in use and answered together: one of them
        // completes the window and adds one; the other starts the next window.
        answered_together(&limiter, |permit| permit.success());
        assert_eq!(limiter.limit(), 3);
    });
}

#[test]
fn vegas_overloads_reported_together_cut_once() {
    use infra_ratelimit::VegasConfig;
    model(|| {
        let config = VegasConfig::new(20, 1, 100).unwrap();
        let limiter = Arc::new(AdaptiveConcurrencyLimiter::vegas(
            config,
            ManualClock::new(),
        ));
        // Two timeouts of requests in flight together: whatever the order, one cut.
        answered_together(&limiter, |permit| permit.overloaded());
        assert_eq!(limiter.limit(), 18);
    });
}

#[test]
fn gradient_overloads_reported_together_cut_once() {
    use infra_ratelimit::GradientConfig;
    model(|| {
        let config = GradientConfig::new(20, 1, 100).unwrap();
        let limiter = Arc::new(AdaptiveConcurrencyLimiter::gradient(
            config,
            ManualClock::new(),
        ));
        answered_together(&limiter, |permit| permit.overloaded());
        assert_eq!(limiter.limit(), 18);
    });
}

#[test]
fn vegas_fast_successes_reported_together_add_one() {
    use infra_ratelimit::VegasConfig;
    model(|| {
        let clock = ManualClock::new();
        let config = VegasConfig::new(2, 1, 100).unwrap();
        let limiter = Arc::new(AdaptiveConcurrencyLimiter::vegas(config, clock.clone()));
        // Two requests sent together with the limit in use, each answered 10 ms after both
        // were sent (so 10 or 20 ms after its own): nothing looks queued (the smaller is the
        // baseline, and a limit of 2 or 3 queues at most 1.5 at twice it). Whatever the order,
        // they are one round trip and add one.
        answered_together(&limiter, move |permit| {
            clock.advance(Duration::from_millis(10));
            permit.success();
        });
        assert_eq!(limiter.limit(), 3);
    });
}

#[test]
fn gradient_answers_reported_together_end_one_round_trip() {
    use infra_ratelimit::GradientConfig;
    model(|| {
        // Full smoothing and a queue allowance of 1: one update moves the limit from 4 to 5, a
        // second one to 6.
        let config = GradientConfig::new(4, 1, 100)
            .unwrap()
            .with_queue(1)
            .unwrap()
            .with_smoothing_percent(100)
            .unwrap();
        let clock = ManualClock::new();
        let limiter = Arc::new(AdaptiveConcurrencyLimiter::gradient(config, clock.clone()));
        // Two requests held here, so that the two below are sent with the limit in use (3 and
        // 4 in flight) whatever the limit becomes.
        let held = [
            limiter.try_acquire().unwrap(),
            limiter.try_acquire().unwrap(),
        ];
        // The two answers race, each 10 ms after both were sent (a latency of zero would be no
        // measurement, and end no round trip). Each request was sent before any update, so
        // each may end the round trip, but only the first to do so under the lock does: the
        // other's answer then belongs to the next round trip.
        answered_together(&limiter, move |permit| {
            clock.advance(Duration::from_millis(10));
            permit.success();
        });
        assert_eq!(limiter.limit(), 5, "one update per round trip");
        drop(held);
    });
}
