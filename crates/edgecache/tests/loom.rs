//! Model-checked concurrency of the edgecache crate.
//!
//! `RUSTFLAGS="--cfg infra_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p infra-edgecache --test loom`
#![cfg(infra_loom)]

/// The coalescing hand-off (`http::coalescing`): a leader fetches, followers wait, and a
/// leader that fails or goes away releases them.
mod coalescing {
    use infra_common::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
    use infra_common::sync::{Arc, model, thread};
    use infra_edgecache::http::coalescing::{Flight, Flights, Joined, Outcome};
    use infra_testkit::block_on;

    /// One request for the key: a stored value is served; otherwise the caller joins the
    /// flight and, as leader, re-checks the store, then "fetches" (counts a fetch and stores
    /// 7); as follower, it waits for the leader's value.
    fn request(flights: &Flights<u8, u32>, stored: &AtomicU32, fetches: &AtomicUsize) -> u32 {
        let value = stored.load(Ordering::SeqCst);
        if value != 0 {
            return value;
        }
        match flights.join(&1) {
            Joined::Leader(leader) => {
                let value = stored.load(Ordering::SeqCst);
                if value != 0 {
                    leader.complete(value);
                    return value;
                }
                fetches.fetch_add(1, Ordering::SeqCst);
                stored.store(7, Ordering::SeqCst);
                leader.complete(7);
                7
            }
            Joined::Follower(flight) => match block_on(Flight::wait(flight)) {
                Outcome::Done(value) => value,
                Outcome::Abandoned => panic!("the leader completed, yet a follower saw it abandon"),
            },
        }
    }

    /// Two concurrent misses: both get the value, the origin is asked once, and the flight is
    /// gone afterwards.
    ///
    /// Guards: the waker registered under the flight's lock and woken after the outcome is
    /// published (without the wake-up the follower waits forever: loom reports a deadlock);
    /// the leader's re-check of the store after it joins (without it, a request that missed
    /// the store just before the previous flight ended fetches a second time).
    #[test]
    fn concurrent_misses_share_one_fetch() {
        model(|| {
            let flights = Arc::new(Flights::<u8, u32>::new());
            let stored = Arc::new(AtomicU32::new(0));
            let fetches = Arc::new(AtomicUsize::new(0));
            let other = {
                let (flights, stored, fetches) = (
                    Arc::clone(&flights),
                    Arc::clone(&stored),
                    Arc::clone(&fetches),
                );
                thread::spawn(move || request(&flights, &stored, &fetches))
            };
            let mine = request(&flights, &stored, &fetches);
            assert_eq!(other.join().unwrap(), 7);
            assert_eq!(mine, 7);
            assert_eq!(fetches.load(Ordering::SeqCst), 1, "one origin fetch");
            assert!(flights.is_empty(), "the flight left the table");
        });
    }

    /// A leader that fails (completes with an error) or goes away (is dropped) releases its
    /// follower, which never waits forever; a caller arriving after it starts a new flight.
    ///
    /// Guards: `Leader`'s `Drop`, which takes the flight out of the table, publishes
    /// `Abandoned` and wakes the waiters (without it the abandoned flight stays in the table
    /// and its follower is never released: the model fails).
    #[test]
    fn a_failing_or_vanishing_leader_releases_its_follower() {
        for fails in [true, false] {
            model(move || {
                let flights = Arc::new(Flights::<u8, Result<u32, ()>>::new());
                let Joined::Leader(leader) = flights.join(&1) else {
                    panic!("the first join leads");
                };
                let follower = {
                    let flights = Arc::clone(&flights);
                    thread::spawn(move || match flights.join(&1) {
                        Joined::Follower(flight) => Some(block_on(Flight::wait(flight))),
                        // Joined after the leader left: this caller leads a new flight.
                        Joined::Leader(_) => None,
                    })
                };
                if fails {
                    leader.complete(Err(()));
                } else {
                    drop(leader);
                }
                match follower.join().unwrap() {
                    Some(Outcome::Done(result)) => assert!(fails && result.is_err()),
                    Some(Outcome::Abandoned) => assert!(!fails),
                    None => {}
                }
                assert!(flights.is_empty());
            });
        }
    }
}

/// The store's shard (`store`): concurrent inserts that force evictions keep the byte budget
/// at every instant, and never lose or duplicate an entry.
///
/// Guards: the shard's mutex held from linking a new entry to the end of the eviction it
/// triggers, so no other thread (here, one reading the size) sees the shard over budget.
mod store {
    use infra_common::ManualClock;
    use infra_common::sync::{Arc, model, thread};
    use infra_edgecache::Cache;

    #[test]
    fn inserts_that_evict_keep_the_budget_and_every_entry_once() {
        model(|| {
            let cache: Arc<Cache<u32, u32>> = Arc::new(
                Cache::builder(2)
                    .shards(1)
                    .clock(ManualClock::new())
                    .build(),
            );
            let writers: Vec<_> = [vec![1, 2], vec![3]]
                .into_iter()
                .map(|keys| {
                    let cache = Arc::clone(&cache);
                    thread::spawn(move || {
                        for key in keys {
                            cache.insert(key, key * 10);
                        }
                    })
                })
                .collect();
            // A reader between and during the inserts never sees the shard over budget.
            assert!(
                cache.weighted_size() <= 2,
                "over budget: {}",
                cache.weighted_size()
            );
            for writer in writers {
                writer.join().unwrap();
            }
            assert!(cache.weighted_size() <= 2);
            let present: Vec<u32> = (1..=3).filter(|key| cache.peek(key).is_some()).collect();
            for key in &present {
                assert_eq!(cache.peek(key), Some(key * 10));
            }
            let stats = cache.stats();
            assert_eq!(stats.inserts, 3);
            // Every insert is either still held or was evicted once: none lost, none doubled.
            assert_eq!(stats.inserts - stats.evictions, present.len() as u64);
            assert_eq!(stats.entries, present.len() as u64);
            assert_eq!(stats.weighted_size, present.len() as u64);
        });
    }
}

/// The purge log's URL hand-off (`http::purge`): a purge by URL, and the store of an answer
/// whose fetch began before it, racing.
///
/// Guards: the log's URL lock, held by the purge from recording itself to the end of its
/// clearing of the store, and by the store from consulting the log to the end of its insert.
/// Without the consultation, with it made before taking the lock, or with the purge clearing
/// the store before it records itself, the store can land after the clearing and keep the
/// answer unpurged: the model fails.
mod purge {
    use infra_common::ManualClock;
    use infra_common::sync::atomic::{AtomicBool, Ordering};
    use infra_common::sync::{Arc, model, thread};
    use infra_edgecache::Cache;
    use infra_edgecache::http::PurgeMode;
    use infra_edgecache::http::purge_model::{PurgeLog, Purged};

    /// The purged URL, as the log names it.
    const TARGET: &str = "a.test/u";

    /// A stored response, reduced to whether a soft purge marked it stale.
    type Response = Arc<AtomicBool>;

    fn purge_races_a_fetch_begun_before(mode: PurgeMode) {
        model(move || {
            let log = Arc::new(PurgeLog::default());
            let store: Arc<Cache<&'static str, Response>> = Arc::new(
                Cache::builder(4)
                    .shards(1)
                    .clock(ManualClock::new())
                    .build(),
            );
            // An older answer is stored, for the purge to clear too.
            store.insert(TARGET, Arc::new(AtomicBool::new(false)));
            // The fetch begins (takes its generation) before the purge is issued.
            let began = log.generation();
            let fetch = {
                let (log, store) = (Arc::clone(&log), Arc::clone(&store));
                thread::spawn(move || {
                    let answer: Response = Arc::new(AtomicBool::new(false));
                    log.store_url(TARGET, began, |purged| match purged {
                        Purged::Hard => {}
                        Purged::Soft => {
                            answer.store(true, Ordering::Release);
                            store.insert(TARGET, answer);
                        }
                        Purged::No => store.insert(TARGET, answer),
                    });
                })
            };
            log.purge_url(TARGET, mode, 0, || {
                if mode == PurgeMode::Hard {
                    store.remove(&TARGET);
                } else if let Some(stored) = store.peek(&TARGET) {
                    stored.store(true, Ordering::Release);
                }
            });
            fetch.join().unwrap();
            let left = store.peek(&TARGET);
            if mode == PurgeMode::Hard {
                assert!(left.is_none(), "a hard-purged answer was stored");
            } else {
                let left = left.expect("a soft purge keeps the answer");
                assert!(
                    left.load(Ordering::Acquire),
                    "a soft-purged answer was stored fresh"
                );
            }
        });
    }

    #[test]
    fn a_hard_url_purge_keeps_an_older_fetchs_answer_out() {
        purge_races_a_fetch_begun_before(PurgeMode::Hard);
    }

    #[test]
    fn a_soft_url_purge_leaves_an_older_fetchs_answer_stale() {
        purge_races_a_fetch_begun_before(PurgeMode::Soft);
    }
}
