//! Model-checked concurrency: every interleaving of a few threads on the log's group commit
//! (`mod group_commit`), on async appenders in the same hand-off (`mod async_group_commit`), on
//! pipelined appends through the real log (`mod tickets`), on the wait of a handle's drop for
//! the work it left on a blocking pool (`mod pool_work`), on sends to a durable work queue
//! (`mod durable_sends`) and on the work queue's leases (`mod lease`).
//!
//! `RUSTFLAGS="--cfg infra_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p infra-mqueue --test loom`
#![cfg(infra_loom)]

/// The disk the group-commit models write to: what was written, what a sync covered, and how
/// many syncs ran; shared by the blocking and the async models.
mod disk {
    use infra_common::sync::Mutex;
    use infra_mqueue::Error;

    #[derive(Debug, Default)]
    pub(crate) struct Disk {
        pub(crate) written: u64,
        pub(crate) synced: u64,
        pub(crate) syncs: u64,
    }

    /// Writes one record; returns the end a sync must pass for it.
    pub(crate) fn write(disk: &Mutex<Disk>) -> u64 {
        let mut disk = disk.lock();
        disk.written += 1;
        disk.written
    }

    /// Marks everything written so far as synced, for a leader whose record is below `end`.
    pub(crate) fn sync(disk: &Mutex<Disk>, end: u64) -> Result<u64, Error> {
        let mut disk = disk.lock();
        assert!(
            disk.synced < end,
            "a sync ran for an appender an earlier sync covered"
        );
        disk.syncs += 1;
        disk.synced = disk.written;
        Ok(disk.synced)
    }

    pub(crate) fn assert_durable(disk: &Mutex<Disk>, end: u64) {
        assert!(
            disk.lock().synced >= end,
            "an appender returned before a sync covered its record"
        );
    }
}

mod group_commit {
    //! Appenders write a record, then wait in `GroupCommit::wait` with a sync that marks
    //! everything written so far as synced. Checked: no appender returns before a sync covers
    //! its record, and no sync runs for an appender whose record an earlier sync already
    //! covered (so concurrent appenders share syncs).
    //!
    //! Guards: the durable-point check before leading, the one-leader flag (`syncing`), and
    //! followers waiting on the condition variable until the point passes their end.

    use infra_common::sync::{Arc, Mutex, model, thread};
    use infra_mqueue::log::GroupCommit;

    use crate::disk::{Disk, assert_durable, sync, write};

    fn appenders(count: u64) {
        model(move || {
            let commit = Arc::new(GroupCommit::new(0));
            let disk = Arc::new(Mutex::new(Disk::default()));
            let threads: Vec<_> = (0..count)
                .map(|_| {
                    let (commit, disk) = (Arc::clone(&commit), Arc::clone(&disk));
                    thread::spawn(move || {
                        let end = write(&disk);
                        commit.wait(end, || sync(&disk, end)).unwrap();
                        assert_durable(&disk, end);
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let disk = disk.lock();
            assert_eq!(disk.synced, count);
            assert!(disk.syncs >= 1 && disk.syncs <= count);
            assert_eq!(commit.durable(), count);
        });
    }

    #[test]
    fn two_appenders_are_durable_on_return_and_share_syncs() {
        appenders(2);
    }

    #[test]
    fn three_appenders_are_durable_on_return_and_share_syncs() {
        appenders(3);
    }
}

mod async_group_commit {
    //! Async appenders (`GroupCommit::poll_wait`, what `AppendTicket::wait_async` polls) wait
    //! beside blocked ones: an async appender that finds no sync in flight takes the
    //! `SyncLeader` and hands the sync to a thread of its own (tokio's blocking pool in the
    //! log), which ends it with `SyncLeader::finish`. Checked: nobody returns before a sync
    //! covers its record, no sync runs for a record an earlier one covered, and every waiter,
    //! blocked or async, is woken when a sync ends (loom reports a waiter left asleep as a
    //! deadlock), also when a leader is dropped without running its sync.
    //!
    //! Guards: the waker listed before the sync is handed off (`AsyncWaiter::register` ahead of
    //! `lead`), the wake-up of every listed waker and blocked thread when a sync ends
    //! (`GroupCommit::end_sync`), and the abandoned end of a dropped leader (`SyncLeader`'s
    //! `Drop`).

    use std::future::poll_fn;

    use infra_common::sync::{Arc, Mutex, model, thread};
    use infra_mqueue::log::{AsyncWaiter, GroupCommit, SyncLeader};
    use infra_testkit::block_on;

    use crate::disk::{Disk, assert_durable, sync, write};

    /// Writes a record and waits for it the async way. The first `abandon` leads are dropped
    /// unrun (a runtime that shut down); later ones run their sync on a thread of their own.
    fn append_async(commit: &Arc<GroupCommit>, disk: &Arc<Mutex<Disk>>, mut abandon: usize) {
        let end = write(disk);
        let mut waiter = AsyncWaiter::default();
        let mut lead = |leader: SyncLeader| {
            if abandon > 0 {
                abandon -= 1;
                drop(leader);
                return;
            }
            let disk = Arc::clone(disk);
            // Detached, as a blocking-pool task is: its end reaches the waiters by the leader.
            drop(thread::spawn(move || leader.finish(&sync(&disk, end))));
        };
        block_on(poll_fn(|cx| {
            GroupCommit::poll_wait(commit, end, &mut waiter, cx.waker(), &mut lead)
        }))
        .unwrap();
        assert_durable(disk, end);
    }

    fn append_blocking(commit: &GroupCommit, disk: &Mutex<Disk>) {
        let end = write(disk);
        commit.wait(end, || sync(disk, end)).unwrap();
        assert_durable(disk, end);
    }

    /// Runs `appenders` (async when `true`) at once on one commit; checks what they share.
    fn appenders(kinds: &'static [bool], abandon: usize) {
        model(move || {
            let commit = Arc::new(GroupCommit::new(0));
            let disk = Arc::new(Mutex::new(Disk::default()));
            let threads: Vec<_> = kinds
                .iter()
                .map(|&is_async| {
                    let (commit, disk) = (Arc::clone(&commit), Arc::clone(&disk));
                    thread::spawn(move || {
                        if is_async {
                            append_async(&commit, &disk, abandon);
                        } else {
                            append_blocking(&commit, &disk);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let count = kinds.len() as u64;
            let disk = disk.lock();
            assert_eq!(disk.synced, count);
            assert!(disk.syncs >= 1 && disk.syncs <= count);
        });
    }

    #[test]
    fn an_async_and_a_blocked_appender_are_durable_on_return_and_share_syncs() {
        appenders(&[true, false], 0);
    }

    #[test]
    fn two_async_appenders_are_durable_on_return_and_share_syncs() {
        appenders(&[true, true], 0);
    }

    #[test]
    fn a_leader_dropped_unrun_lets_the_next_waiter_lead() {
        appenders(&[true, false], 1);
    }
}

mod tickets {
    //! Producers keep appends in flight with `Log::append_nowait` and acknowledge each when its
    //! `AppendTicket::wait` returns, on the real log over a simulated disk. Checked: when a
    //! wait returns, the record is in what a power cut would leave of the segment (the disk's
    //! synced contents), whichever producer's fsync covered it.
    //!
    //! Guards: the end an fsync covers is read before the fsync starts (`Log::sync_written`),
    //! so a record written during an fsync is not counted as covered by it; and the durable
    //! point moves only after the fsync returned (`GroupCommit::wait`).

    use std::path::Path;

    use infra_common::ManualClock;
    use infra_common::sync::{Arc, model, thread};
    use infra_mqueue::log::{Log, LogOptions, SimulatedStorage};

    const DIR: &str = "/log";
    const SEGMENT: &str = "/log/00000000000000000000.seg";

    /// Whether `payload` is in what a power cut would leave of the segment.
    fn survives_power_cut(disk: &SimulatedStorage, payload: &[u8]) -> bool {
        let synced = disk.durable_contents(Path::new(SEGMENT)).unwrap();
        synced
            .windows(payload.len())
            .any(|window| window == payload)
    }

    #[test]
    fn a_ticket_is_durable_when_its_wait_returns() {
        model(|| {
            let disk = SimulatedStorage::new();
            let options = LogOptions {
                preallocate: 64,
                ..LogOptions::default()
            };
            let log = Log::open_with(Path::new(DIR), options, ManualClock::new(), disk.clone());
            let log = Arc::new(log.unwrap());
            let producers: Vec<_> = ["A", "B"]
                .into_iter()
                .map(|name| {
                    let (log, disk) = (Arc::clone(&log), disk.clone());
                    thread::spawn(move || {
                        let payloads = [format!("{name}: first"), format!("{name}: second")];
                        let tickets = payloads
                            .each_ref()
                            .map(|payload| log.append_nowait(payload.as_bytes()).unwrap());
                        for (ticket, payload) in tickets.into_iter().zip(&payloads) {
                            ticket.wait().unwrap();
                            assert!(
                                survives_power_cut(&disk, payload.as_bytes()),
                                "a ticket's wait returned before an fsync covered its record"
                            );
                        }
                    })
                })
                .collect();
            for producer in producers {
                producer.join().unwrap();
            }
        });
    }
}

mod pool_work {
    //! Work a handle hands to a blocking pool (a segment roll, a compaction) keeps a share of
    //! what holds the handle's directory lock until it ends, and is counted by the handle's
    //! `PoolWork` until then; the handle's drop waits for the count to fall to zero. Checked,
    //! with one piece of work and with two: once the wait returned and the handle let go of
    //! its own share, the directory's lock is free (an open right after the drop is not
    //! `Locked`), and the wait is never left asleep. Without the wait the model fails.

    use std::path::Path;

    use infra_common::sync::atomic::{AtomicUsize, Ordering};
    use infra_common::sync::{Arc, model, thread};
    use infra_mqueue::log::{PoolWork, SimulatedStorage, Storage};

    const DIR: &str = "/q";

    fn pool_jobs(count: usize) {
        model(move || {
            let disk = SimulatedStorage::new();
            let lock = Arc::new(disk.lock_dir(Path::new(DIR)).unwrap().unwrap());
            let work = PoolWork::default();
            let pool: Vec<_> = (0..count)
                .map(|_| {
                    // Counted on the handle's thread, before the work is handed over.
                    let held = (Arc::clone(&lock), work.start());
                    // A tuple drops its fields in order: the share, then the count.
                    thread::spawn(move || drop(held))
                })
                .collect();
            work.wait_idle();
            drop(lock);
            assert!(
                disk.lock_dir(Path::new(DIR)).unwrap().is_some(),
                "the directory was still held once the drop's wait returned"
            );
            for job in pool {
                job.join().unwrap();
            }
        });
    }

    #[test]
    fn the_directory_is_free_once_the_drop_waited_for_one_piece_of_work() {
        pool_jobs(1);
    }

    #[test]
    fn the_directory_is_free_once_the_drop_waited_for_two_pieces_of_work() {
        pool_jobs(2);
    }

    /// One piece of work handed over (`PoolWork::hand_over`), raced for by a pool thread and
    /// the drop's wait, or never started by the pool (the drop runs on its only thread): it
    /// runs exactly once, and once the wait returned the directory is free. Without the wait
    /// running the work nobody started, the model of the pool that never comes fails (the
    /// work never runs); without its wait for work a pool thread took, the model of the race
    /// fails (the directory is still held).
    fn handed_over(pool_comes: bool) {
        model(move || {
            let disk = SimulatedStorage::new();
            let lock = Arc::new(disk.lock_dir(Path::new(DIR)).unwrap().unwrap());
            let work = PoolWork::default();
            let held = (Arc::clone(&lock), work.start());
            let runs = Arc::new(AtomicUsize::new(0));
            let handover = work.hand_over({
                let runs = Arc::clone(&runs);
                move || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    drop(held);
                }
            });
            let pool = pool_comes.then(|| thread::spawn(move || handover.run()));
            work.wait_idle();
            drop(lock);
            assert!(
                disk.lock_dir(Path::new(DIR)).unwrap().is_some(),
                "the directory was still held once the drop's wait returned"
            );
            if let Some(pool) = pool {
                pool.join().unwrap();
            }
            assert_eq!(runs.load(Ordering::SeqCst), 1, "the work ran once");
        });
    }

    #[test]
    fn handed_over_work_runs_once_whichever_thread_takes_it() {
        handed_over(true);
    }

    #[test]
    fn handed_over_work_the_pool_never_starts_is_run_by_the_drop() {
        handed_over(false);
    }
}

mod durable_sends {
    //! Two threads send to a durable work queue over a simulated disk while a third receives.
    //! Checked: a message is handed out only once an fsync covered it (it is in what a power cut
    //! would leave of the message log), and a send returns only then. The sends share the
    //! log's group commit, so one may return on the other's fsync.
    //!
    //! Guard: a message written but not yet durable waits in the lease table as `Writing`,
    //! not handed out, until a send's fsync returns (`Leases::made_durable`).

    use std::path::Path;

    use infra_common::ManualClock;
    use infra_common::sync::{Arc, model, thread};
    use infra_mqueue::log::{LogOptions, SimulatedStorage};
    use infra_mqueue::queue::{QueueOptions, WorkQueue};

    const SEGMENT: &str = "/queue/messages/00000000000000000000.seg";

    /// Whether `payload` is in what a power cut would leave of the message log.
    fn survives_power_cut(disk: &SimulatedStorage, payload: &[u8]) -> bool {
        disk.durable_contents(Path::new(SEGMENT))
            .is_some_and(|synced| synced.windows(payload.len()).any(|w| w == payload))
    }

    /// Deep enough for opening a durable queue inside a model thread.
    const STACK: usize = 4 << 20;

    #[test]
    fn a_message_is_handed_out_and_its_send_returns_only_once_durable() {
        model(|| {
            let receiver = thread::spawn_with_stack(STACK, || {
                let disk = SimulatedStorage::new();
                let log = LogOptions {
                    preallocate: 64,
                    ..LogOptions::default()
                };
                let options = QueueOptions::default().log_options(log);
                let queue = WorkQueue::open_with(
                    Path::new("/queue"),
                    options,
                    ManualClock::new(),
                    disk.clone(),
                );
                let queue = Arc::new(queue.unwrap());
                let senders: Vec<_> = ["order A", "order B"]
                    .into_iter()
                    .map(|payload| {
                        let (queue, disk) = (Arc::clone(&queue), disk.clone());
                        thread::spawn_with_stack(STACK, move || {
                            queue.send(payload).unwrap();
                            assert!(
                                survives_power_cut(&disk, payload.as_bytes()),
                                "a send returned before an fsync covered its message"
                            );
                        })
                    })
                    .collect();
                if let Some(delivery) = queue.try_receive().unwrap() {
                    assert!(
                        survives_power_cut(&disk, delivery.payload()),
                        "a message was handed out before an fsync covered it"
                    );
                }
                for sender in senders {
                    sender.join().unwrap();
                }
            });
            receiver.join().unwrap();
        });
    }
}

mod lease {
    //! The work queue's lease state machine under racing consumers: settle calls are checked
    //! against the current attempt and state under the queue's lock, and a blocked receiver
    //! is never left asleep beside an available message.
    //!
    //! Guards, one per model: the attempt compare of a settle call (`Slot::state_is_leased_by`
    //! compares the attempt), the leased-state check of the same call (a nacked attempt no
    //! longer holds the message), the availability re-check under the lock before a
    //! receiver sleeps (`WorkQueue::receive_timeout`), the wake-up a batch send gives
    //! receivers for what it stored before it waits for room (`WorkQueue::send_many`), and the
    //! wake-ups a batch ack gives senders, one per message it settled (`WorkQueue::ack_many`).

    use std::time::Duration;

    use infra_common::ManualClock;
    use infra_common::sync::{Arc, model, thread};
    use infra_mqueue::Error;
    use infra_mqueue::queue::{QueueOptions, WorkQueue};

    const LEASE: Duration = Duration::from_secs(10);

    fn queue(clock: &ManualClock) -> Arc<WorkQueue> {
        let options = QueueOptions::default().visibility_timeout(LEASE);
        Arc::new(WorkQueue::in_memory_with_clock(options, clock.clone()).unwrap())
    }

    /// A late ack of attempt 1 races the redelivery of its expired lease: exactly one wins.
    /// Either the ack lands first (and the receive finds nothing) or attempt 2 is delivered
    /// (and the ack is refused as `Redelivered`), never both.
    #[test]
    fn a_late_ack_and_a_redelivery_never_both_succeed() {
        model(|| {
            let clock = ManualClock::new();
            let queue = queue(&clock);
            queue.send("job").unwrap();
            let first = queue.try_receive().unwrap().unwrap();
            clock.advance(LEASE);
            let late = {
                let queue = Arc::clone(&queue);
                thread::spawn(move || queue.ack(&first))
            };
            let redelivered = queue.try_receive().unwrap();
            let acked = late.join().unwrap();
            match (&acked, &redelivered) {
                (Ok(()), None) => {}
                (Err(Error::Redelivered { current: 2, .. }), Some(second)) => {
                    assert_eq!(second.attempt(), 2);
                }
                other => panic!("the late ack and the redelivery disagree: {other:?}"),
            }
        });
    }

    /// An ack and a nack of the same attempt race: exactly one settles it.
    #[test]
    fn an_ack_and_a_nack_of_one_attempt_never_both_succeed() {
        model(|| {
            let clock = ManualClock::new();
            let queue = queue(&clock);
            queue.send("job").unwrap();
            let delivery = queue.try_receive().unwrap().unwrap();
            let receipt = delivery.receipt();
            let nack = {
                let queue = Arc::clone(&queue);
                thread::spawn(move || queue.nack(receipt, Duration::ZERO))
            };
            let acked = queue.ack(receipt);
            let nacked = nack.join().unwrap();
            assert!(
                acked.is_ok() != nacked.is_ok(),
                "ack {acked:?} and nack {nacked:?} of one attempt"
            );
            let stats = queue.stats();
            assert_eq!(stats.unsettled, usize::from(nacked.is_ok()));
        });
    }

    /// A receiver blocks on an empty queue while a producer sends: it always wakes with the
    /// message (a lost wake-up would leave it asleep, which loom reports as a deadlock).
    #[test]
    fn a_blocked_receiver_always_wakes_for_a_send() {
        model(|| {
            let clock = ManualClock::new();
            let queue = queue(&clock);
            let consumer = {
                let queue = Arc::clone(&queue);
                thread::spawn(move || queue.receive().unwrap().offset())
            };
            queue.send("wake").unwrap();
            assert_eq!(consumer.join().unwrap(), 0);
        });
    }

    /// A batch of two sends into a queue with room for one, while a receiver that may already
    /// be asleep takes and acks them: the sender must wake it for the first before sleeping
    /// for room, or both sleep for good (loom reports the deadlock).
    #[test]
    fn a_batch_larger_than_the_queue_wakes_its_receiver_before_waiting_for_room() {
        model(|| {
            let clock = ManualClock::new();
            let options = QueueOptions::default()
                .visibility_timeout(LEASE)
                .capacity(1);
            let queue = Arc::new(WorkQueue::in_memory_with_clock(options, clock).unwrap());
            let consumer = {
                let queue = Arc::clone(&queue);
                thread::spawn(move || {
                    for expected in 0..2 {
                        let delivery = queue.receive().unwrap();
                        assert_eq!(delivery.offset(), expected);
                        queue.ack(&delivery).unwrap();
                    }
                })
            };
            let sent = queue.send_many(["a", "b"]);
            assert!(sent.iter().all(Result::is_ok), "{sent:?}");
            consumer.join().unwrap();
        });
    }

    /// Two senders wait for room in a full queue of two while a consumer takes both messages
    /// and acks them in one batch: the ack must wake a sender per message it settled, or the
    /// second sender sleeps beside the room (loom reports the deadlock).
    #[test]
    fn a_batch_ack_wakes_a_waiting_sender_per_message_it_settled() {
        model(|| {
            let clock = ManualClock::new();
            let options = QueueOptions::default()
                .visibility_timeout(LEASE)
                .capacity(2);
            let queue = Arc::new(WorkQueue::in_memory_with_clock(options, clock).unwrap());
            queue.send_many(["a", "b"]).into_iter().for_each(|sent| {
                sent.unwrap();
            });
            let senders: Vec<_> = ["c", "d"]
                .into_iter()
                .map(|payload| {
                    let queue = Arc::clone(&queue);
                    thread::spawn(move || queue.send(payload).unwrap().offset)
                })
                .collect();
            let batch = queue.try_receive_many(2).unwrap();
            assert_eq!(batch.len(), 2);
            for acked in queue.ack_many(batch.iter().map(|delivery| delivery.receipt())) {
                acked.unwrap();
            }
            let mut offsets: Vec<u64> = senders.into_iter().map(|s| s.join().unwrap()).collect();
            offsets.sort_unstable();
            assert_eq!(offsets, [2, 3]);
        });
    }
}
