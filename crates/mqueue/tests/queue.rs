//! The work queue end to end: leases and redelivery, late acks, dead letters, delays, dedup,
//! backpressure, bad input, and what a durable queue keeps across a reopen.
#![cfg(not(infra_loom))]

use std::path::Path;
use std::time::Duration;

use infra_common::sync::atomic::{AtomicUsize, Ordering};
use infra_common::sync::{Arc, thread};
use infra_common::{ManualClock, SystemClock};
use infra_mqueue::Error;
use infra_mqueue::log::{FsyncPolicy, Log, LogOptions, SimulatedStorage};
use infra_mqueue::queue::{DedupWindow, Message, QueueOptions, Receipt, WorkQueue};

#[path = "support/counting_clock.rs"]
mod counting_clock;
#[path = "support/failing_storage.rs"]
mod failing_storage;
#[path = "support/refusals.rs"]
mod refusals;

use counting_clock::CountingClock;
use failing_storage::FailingDirSyncs;

const LEASE: Duration = Duration::from_secs(30);

fn options() -> QueueOptions {
    QueueOptions::default()
        .visibility_timeout(LEASE)
        .max_deliveries(3)
}

fn memory(options: QueueOptions) -> (WorkQueue, ManualClock) {
    let clock = ManualClock::new();
    let queue = WorkQueue::in_memory_with_clock(options, clock.clone()).unwrap();
    (queue, clock)
}

fn fast_log() -> LogOptions {
    LogOptions {
        fsync: FsyncPolicy::Never,
        ..LogOptions::default()
    }
}

fn durable(dir: &std::path::Path, options: QueueOptions, clock: &ManualClock) -> WorkQueue {
    WorkQueue::open_with_clock(dir, options.log_options(fast_log()), clock.clone()).unwrap()
}

/// A durable queue at `/queue` on `disk`, a simulated disk a test can make fail, with the
/// log's fsyncs off (`options`' log options are replaced).
fn on_simulated_disk(
    options: QueueOptions,
    clock: &ManualClock,
    disk: &SimulatedStorage,
) -> WorkQueue {
    let options = options.log_options(fast_log());
    WorkQueue::open_with(Path::new("/queue"), options, clock.clone(), disk.clone()).unwrap()
}

fn payloads(queue: &WorkQueue) -> Vec<Vec<u8>> {
    let mut seen = Vec::new();
    while let Some(delivery) = queue.try_receive().unwrap() {
        seen.push(delivery.payload().to_vec());
        queue.ack(&delivery).unwrap();
    }
    seen
}

#[test]
fn messages_are_received_in_send_order_and_acked_once() {
    let (queue, _clock) = memory(options());
    for n in 0..5u8 {
        assert_eq!(queue.send(vec![n]).unwrap().offset, u64::from(n));
    }
    assert_eq!(
        payloads(&queue),
        (0..5u8).map(|n| vec![n]).collect::<Vec<_>>()
    );
    let stats = queue.stats();
    assert_eq!((stats.acked, stats.unsettled, stats.watermark), (5, 0, 5));
}

#[test]
fn a_consumer_that_dies_before_acking_gets_its_message_redelivered_after_the_lease() {
    let (queue, clock) = memory(options());
    queue.send("job").unwrap();
    let lost = queue.try_receive().unwrap().unwrap();
    assert_eq!(lost.attempt(), 1);
    // The consumer "dies": nothing is settled. Within the lease nobody else gets it.
    clock.advance(LEASE - Duration::from_nanos(1));
    assert!(queue.try_receive().unwrap().is_none());
    clock.advance(Duration::from_nanos(1));
    let again = queue
        .try_receive()
        .unwrap()
        .expect("redelivered at the deadline");
    assert_eq!((again.offset(), again.attempt()), (lost.offset(), 2));
    assert_eq!(again.payload(), b"job");
    assert_eq!(queue.stats().redelivered, 1);
    queue.ack(&again).unwrap();
    assert!(queue.try_receive().unwrap().is_none());
}

#[test]
fn a_late_ack_after_redelivery_is_refused_and_the_new_holder_keeps_the_message() {
    let (queue, clock) = memory(options());
    queue.send("job").unwrap();
    let first = queue.try_receive().unwrap().unwrap();
    clock.advance(LEASE);
    let second = queue.try_receive().unwrap().unwrap();
    for refused in [
        queue.ack(&first),
        queue.nack(&first, Duration::ZERO),
        queue.extend(&first, LEASE),
        queue.term(&first),
    ] {
        assert!(matches!(
            refused,
            Err(Error::Redelivered {
                offset: 0,
                attempt: 1,
                current: 2
            })
        ));
    }
    assert_eq!(queue.stats().refused, 4);
    queue.ack(&second).unwrap();
}

#[test]
fn an_expired_lease_can_still_be_settled_until_someone_receives_the_message() {
    let (queue, clock) = memory(options());
    queue.send("job").unwrap();
    let delivery = queue.try_receive().unwrap().unwrap();
    clock.advance(LEASE * 2);
    queue.ack(&delivery).unwrap();
    assert!(
        queue.try_receive().unwrap().is_none(),
        "acked, not redelivered"
    );
}

#[test]
fn settling_twice_or_an_unknown_delivery_is_a_clear_error() {
    let (queue, _clock) = memory(options());
    queue.send("a").unwrap();
    let delivery = queue.try_receive().unwrap().unwrap();
    queue.ack(&delivery).unwrap();
    assert!(matches!(
        queue.ack(&delivery),
        Err(Error::AlreadySettled { offset: 0 })
    ));
    assert!(matches!(
        queue.ack(Receipt::new(7, 1)),
        Err(Error::UnknownDelivery {
            offset: 7,
            attempt: 1
        })
    ));
    queue.send("b").unwrap();
    assert!(matches!(
        queue.ack(Receipt::new(1, 1)),
        Err(Error::UnknownDelivery {
            offset: 1,
            attempt: 1
        })
    ));
    let b = queue.try_receive().unwrap().unwrap();
    queue.nack(&b, Duration::from_secs(5)).unwrap();
    assert!(matches!(
        queue.ack(&b),
        Err(Error::NotLeased {
            offset: 1,
            attempt: 1
        })
    ));
    let text = queue.ack(Receipt::new(9, 2)).unwrap_err().to_string();
    assert!(text.contains("never delivered"), "{text}");
}

impl refusals::Backend for WorkQueue {
    fn send(&self, payload: &'static [u8]) {
        WorkQueue::send(self, payload).unwrap();
    }
    fn receive(&self) -> Receipt {
        self.try_receive().unwrap().expect("a message").receipt()
    }
    fn ack(&self, receipt: Receipt) -> Result<(), Error> {
        WorkQueue::ack(self, receipt)
    }
    fn nack(&self, receipt: Receipt) -> Result<(), Error> {
        WorkQueue::nack(self, receipt, Duration::ZERO)
    }
    fn extend(&self, receipt: Receipt) -> Result<(), Error> {
        WorkQueue::extend(self, receipt, LEASE)
    }
    fn term(&self, receipt: Receipt) -> Result<(), Error> {
        WorkQueue::term(self, receipt)
    }
}

#[test]
fn attempts_never_made_are_unknown_deliveries_in_memory_and_durably() {
    let (queue, clock) = memory(options());
    refusals::attempts_never_made_are_unknown_deliveries(&queue);
    let dir = tempfile::tempdir().unwrap();
    refusals::attempts_never_made_are_unknown_deliveries(&durable(dir.path(), options(), &clock));
}

#[test]
fn a_message_is_dead_lettered_after_max_deliveries_and_never_delivered_again() {
    let (queue, clock) = memory(options());
    queue.send("poison").unwrap();
    queue.send("fine").unwrap();
    for attempt in 1..=3 {
        let delivery = queue.try_receive().unwrap().unwrap();
        assert_eq!((delivery.offset(), delivery.attempt()), (0, attempt));
        if attempt == 2 {
            clock.advance(LEASE); // one attempt expires instead of nacking
        } else {
            queue.nack(&delivery, Duration::ZERO).unwrap();
        }
    }
    // The third attempt was given back: the next receive dead-letters it and moves on.
    let next = queue.try_receive().unwrap().unwrap();
    assert_eq!(next.payload(), b"fine");
    let dead = queue.dead_letters(0, 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].offset, dead[0].deliveries), (0, 3));
    assert_eq!(dead[0].payload.as_ref(), b"poison");
    assert_eq!(queue.stats().dead_lettered, 1);
    assert!(matches!(
        queue.ack(Receipt::new(0, 3)),
        Err(Error::AlreadySettled { offset: 0 })
    ));
}

/// A dead letter whose write to the dead-letter topic fails (a full or failing disk) is not
/// settled: the receive that met it reports the error, a receive once the disk works again
/// dead-letters it, and the room it frees then takes another send.
#[test]
fn a_dead_letter_whose_write_failed_is_dead_lettered_by_a_later_receive() {
    let disk = SimulatedStorage::new();
    let options = options().max_deliveries(1).capacity(2);
    let queue = Arc::new(on_simulated_disk(options, &ManualClock::new(), &disk));
    queue.send("poison").unwrap();
    queue.send("fine").unwrap();
    let first = queue.try_receive().unwrap().unwrap();
    assert_eq!(first.payload(), b"poison");
    queue.nack(&first, Duration::ZERO).unwrap();

    disk.set_failing(true);
    assert!(
        matches!(queue.try_receive(), Err(Error::Io { .. })),
        "the failed write is reported"
    );
    disk.set_failing(false);
    assert_eq!(queue.stats().dead_lettered, 0);
    assert!(queue.dead_letters(0, 10).unwrap().is_empty());
    assert!(matches!(queue.try_send("blocked"), Err(Error::Full { .. })));

    // A send waits for room (or finds it): the dead-lettering receive frees it.
    let sender = {
        let queue = Arc::clone(&queue);
        thread::spawn(move || queue.send("third").unwrap().offset)
    };
    let next = queue.try_receive().unwrap().unwrap();
    assert_eq!(next.payload(), b"fine");
    let dead = queue.dead_letters(0, 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].offset, dead[0].payload.as_ref()),
        (0, &b"poison"[..])
    );
    assert_eq!(sender.join().unwrap(), 2);
}

/// A receive whose journal write fails returns the error and holds nothing: the message it
/// leased is given back at once, not held until its lease runs out.
#[test]
fn a_receive_whose_journal_write_failed_gives_its_message_back_at_once() {
    let disk = SimulatedStorage::new();
    let queue = on_simulated_disk(options(), &ManualClock::new(), &disk);
    queue.send("job").unwrap();
    disk.set_failing(true);
    assert!(
        matches!(queue.try_receive(), Err(Error::Io { .. })),
        "the failed journal write is reported"
    );
    disk.set_failing(false);
    let stats = queue.stats();
    assert_eq!(
        (stats.unsettled, stats.in_flight),
        (1, 0),
        "the message is not held by the failed receive"
    );
    assert!(
        matches!(
            queue.ack(Receipt::new(0, 1)),
            Err(Error::UnknownDelivery {
                offset: 0,
                attempt: 1
            })
        ),
        "the delivery the caller never got is taken back, uncounted"
    );
}

#[test]
fn a_terminated_message_is_neither_redelivered_nor_dead_lettered() {
    let (queue, clock) = memory(options());
    queue.send("bad input").unwrap();
    let delivery = queue.try_receive().unwrap().unwrap();
    queue.term(&delivery).unwrap();
    clock.advance(LEASE * 10);
    assert!(queue.try_receive().unwrap().is_none());
    assert!(queue.dead_letters(0, 10).unwrap().is_empty());
    assert_eq!(queue.stats().terminated, 1);
}

#[test]
fn delayed_sends_and_nacks_wait_their_time_and_keep_offset_order_when_due() {
    let (queue, clock) = memory(options());
    queue
        .send(Message::new(b"later".to_vec()).delay(Duration::from_secs(10)))
        .unwrap();
    queue.send("now").unwrap();
    let now = queue.try_receive().unwrap().unwrap();
    assert_eq!(now.payload(), b"now");
    queue.nack(&now, Duration::from_secs(20)).unwrap();
    assert!(queue.try_receive().unwrap().is_none());
    clock.advance(Duration::from_secs(10));
    assert_eq!(queue.try_receive().unwrap().unwrap().payload(), b"later");
    assert!(queue.try_receive().unwrap().is_none());
    clock.advance(Duration::from_secs(10));
    let again = queue.try_receive().unwrap().unwrap();
    assert_eq!((again.payload(), again.attempt()), (&b"now"[..], 2));
}

#[test]
fn extend_moves_the_deadline_from_now() {
    let (queue, clock) = memory(options());
    queue.send("long job").unwrap();
    let delivery = queue.try_receive().unwrap().unwrap();
    clock.advance(Duration::from_secs(25));
    queue.extend(&delivery, Duration::from_secs(60)).unwrap();
    clock.advance(Duration::from_secs(59));
    assert!(queue.try_receive().unwrap().is_none(), "still leased");
    clock.advance(Duration::from_secs(1));
    assert_eq!(queue.try_receive().unwrap().unwrap().attempt(), 2);
}

#[test]
fn duplicate_ids_within_the_window_are_stored_once_and_counted() {
    let (queue, _clock) = memory(options().dedup(DedupWindow::new(2)));
    let first = queue.send(Message::new(b"a".to_vec()).id("id-1")).unwrap();
    let again = queue.send(Message::new(b"a".to_vec()).id("id-1")).unwrap();
    assert_eq!(again.offset, first.offset);
    assert!(again.duplicate && !first.duplicate);
    queue.send(Message::new(b"b".to_vec()).id("id-2")).unwrap();
    queue.send(Message::new(b"c".to_vec()).id("id-3")).unwrap();
    // id-1 fell out of the two-id window: stored again.
    let late = queue.send(Message::new(b"a".to_vec()).id("id-1")).unwrap();
    assert!(!late.duplicate);
    assert_eq!(queue.stats().duplicates, 1);
    assert_eq!(payloads(&queue).len(), 4);
}

#[test]
fn the_dedup_window_forgets_ids_older_than_its_age() {
    let window = DedupWindow::new(100).max_age(Duration::from_secs(60));
    let (queue, clock) = memory(options().dedup(window));
    queue.send(Message::new(b"x".to_vec()).id("k")).unwrap();
    clock.advance(Duration::from_secs(60));
    assert!(
        queue
            .send(Message::new(b"x".to_vec()).id("k"))
            .unwrap()
            .duplicate
    );
    clock.advance(Duration::from_secs(1));
    assert!(
        !queue
            .send(Message::new(b"x".to_vec()).id("k"))
            .unwrap()
            .duplicate
    );
}

#[test]
fn a_full_queue_refuses_try_send_and_a_blocked_send_resumes_after_an_ack() {
    let queue = Arc::new(WorkQueue::in_memory(options().capacity(2)).unwrap());
    queue.send("1").unwrap();
    queue.send("2").unwrap();
    assert!(matches!(
        queue.try_send("3"),
        Err(Error::Full { capacity: 2 })
    ));
    let producer = {
        let queue = Arc::clone(&queue);
        Sleeper::spawn(move || queue.send("3").unwrap().offset)
    };
    let delivery = queue.receive().unwrap();
    queue.ack(&delivery).unwrap();
    assert_eq!(producer.join("the waiting sender"), 2);
    assert_eq!(queue.stats().unsettled, 2);
}

#[test]
fn a_blocked_receive_wakes_on_a_send() {
    let queue = Arc::new(WorkQueue::in_memory_with_clock(options(), SystemClock::new()).unwrap());
    let consumer = {
        let queue = Arc::clone(&queue);
        Sleeper::spawn(move || queue.receive().unwrap().payload().to_vec())
    };
    queue.send("wake up").unwrap();
    assert_eq!(consumer.join("the waiting receiver"), b"wake up");
}

#[test]
fn receive_timeout_gives_up_when_nothing_comes() {
    let queue = WorkQueue::in_memory(options()).unwrap();
    assert!(
        queue
            .receive_timeout(Duration::from_millis(1))
            .unwrap()
            .is_none()
    );
}

#[test]
fn bad_input_is_refused_before_anything_is_stored() {
    let (queue, _clock) = memory(options().max_message_bytes(4));
    assert!(matches!(
        queue.send(vec![0; 5]),
        Err(Error::MessageTooLarge { len: 5, max: 4 })
    ));
    assert!(matches!(
        queue.send(Message::new(b"x".to_vec()).id(vec![b'i'; 256])),
        Err(Error::InvalidMessageId { len: 256 })
    ));
    assert!(matches!(
        queue.send(Message::new(b"x".to_vec()).id(Vec::new())),
        Err(Error::InvalidMessageId { len: 0 })
    ));
    assert!(matches!(
        queue.send(Message::new(b"x".to_vec()).delay(Duration::from_secs(400 * 24 * 3600))),
        Err(Error::InvalidDuration { .. })
    ));
    assert_eq!(queue.stats().next_offset, 0);
    for bad in [
        options().max_deliveries(0),
        options().capacity(0),
        options().visibility_timeout(Duration::ZERO),
        options().compact_after(1),
    ] {
        assert!(matches!(
            WorkQueue::in_memory(bad),
            Err(Error::InvalidOptions { .. })
        ));
    }
}

#[test]
fn a_durable_queue_refuses_a_message_limit_its_log_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    for max in [usize::MAX, usize::MAX - 200, 1 << 30] {
        let opened = WorkQueue::open_with_clock(
            dir.path(),
            options().max_message_bytes(max).log_options(fast_log()),
            clock.clone(),
        );
        assert!(
            matches!(opened, Err(Error::InvalidOptions { .. })),
            "max_message_bytes {max}: {opened:?}"
        );
    }
}

#[test]
fn opening_a_missing_queue_without_create_is_an_unknown_queue() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("orders");
    let result = WorkQueue::open(&missing, options().create(false));
    assert!(matches!(result, Err(Error::UnknownQueue { .. })));
    assert!(!missing.exists());
}

#[test]
fn a_reopened_queue_keeps_acked_messages_acked_and_redelivers_the_rest_with_their_counts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    {
        let queue = durable(dir.path(), options(), &clock);
        for n in 0..4u8 {
            queue.send(vec![n]).unwrap();
        }
        let d0 = queue.try_receive().unwrap().unwrap();
        let d1 = queue.try_receive().unwrap().unwrap();
        let d2 = queue.try_receive().unwrap().unwrap();
        queue.ack(&d0).unwrap();
        queue.ack(&d2).unwrap();
        queue.nack(&d1, Duration::ZERO).unwrap();
        let d1 = queue.try_receive().unwrap().unwrap();
        assert_eq!(d1.attempt(), 2);
        // Crash with offset 1 leased (attempt 2) and offset 3 never delivered.
    }
    let queue = durable(dir.path(), options(), &clock);
    let first = queue.try_receive().unwrap().unwrap();
    assert_eq!((first.offset(), first.attempt()), (1, 3), "count survives");
    let second = queue.try_receive().unwrap().unwrap();
    assert_eq!((second.offset(), second.attempt()), (3, 1));
    assert!(queue.try_receive().unwrap().is_none(), "acked stay acked");
    assert_eq!(queue.stats().watermark, 1);
}

#[test]
fn max_deliveries_holds_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    for attempt in 1..=3 {
        let queue = durable(dir.path(), options(), &clock);
        if attempt == 1 {
            queue.send("crashes the worker").unwrap();
        }
        let delivery = queue.try_receive().unwrap().unwrap();
        assert_eq!(delivery.attempt(), attempt);
        // The worker takes the whole process down with it.
    }
    let queue = durable(dir.path(), options(), &clock);
    assert!(queue.try_receive().unwrap().is_none());
    let dead = queue.dead_letters(0, 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].offset, dead[0].deliveries), (0, 3));
    drop(queue);
    let queue = durable(dir.path(), options(), &clock);
    assert!(
        queue.try_receive().unwrap().is_none(),
        "dead letters stay settled"
    );
    assert_eq!(queue.dead_letters(0, 10).unwrap().len(), 1);
}

#[test]
fn delays_and_dedup_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let opts = || options().dedup(DedupWindow::new(10));
    {
        let queue = durable(dir.path(), opts(), &clock);
        queue
            .send(
                Message::new(b"in a minute".to_vec())
                    .delay(Duration::from_secs(60))
                    .id("a"),
            )
            .unwrap();
        queue.send(Message::new(b"now".to_vec()).id("b")).unwrap();
        let now = queue.try_receive().unwrap().unwrap();
        queue.nack(&now, Duration::from_secs(120)).unwrap();
    }
    clock.advance(Duration::from_secs(30));
    let queue = durable(dir.path(), opts(), &clock);
    let retry = queue.send(Message::new(b"now".to_vec()).id("b")).unwrap();
    assert_eq!((retry.offset, retry.duplicate), (1, true));
    assert!(queue.try_receive().unwrap().is_none(), "both still wait");
    clock.advance(Duration::from_secs(30));
    let delayed = queue.try_receive().unwrap().unwrap();
    assert_eq!(delayed.payload(), b"in a minute");
    queue.ack(&delayed).unwrap();
    clock.advance(Duration::from_secs(60));
    let again = queue.try_receive().unwrap().unwrap();
    assert_eq!((again.payload(), again.attempt()), (&b"now"[..], 2));
}

#[test]
fn an_id_stored_again_after_its_window_ended_is_still_deduplicated_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let opts = || options().dedup(DedupWindow::new(100).max_age(Duration::from_secs(60)));
    {
        let queue = durable(dir.path(), opts(), &clock);
        let first = queue
            .send(Message::new(b"pay".to_vec()).id("order-9"))
            .unwrap();
        clock.advance(Duration::from_secs(61));
        let again = queue
            .send(Message::new(b"pay".to_vec()).id("order-9"))
            .unwrap();
        assert_eq!((first.offset, again.offset, again.duplicate), (0, 1, false));
    }
    // Rebuilding the window meets both sends of the id; forgetting the older one must not
    // forget the newer, which is 0 s old.
    let queue = durable(dir.path(), opts(), &clock);
    let retry = queue
        .send(Message::new(b"pay".to_vec()).id("order-9"))
        .unwrap();
    assert_eq!((retry.offset, retry.duplicate), (1, true));
}

/// The log options of [`fast_log`] with segments of 1 KiB, so a few messages fill several.
fn small_segments() -> LogOptions {
    LogOptions {
        segment_bytes: 1024,
        preallocate: 0,
        ..fast_log()
    }
}

fn segment_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().path().extension() == Some("seg".as_ref()))
        .count()
}

#[test]
fn compaction_deletes_message_segments_every_message_of_which_is_settled() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let small_segments = small_segments();
    let opts = || {
        options()
            .compact_after(16)
            .dedup(DedupWindow::new(20))
            .log_options(small_segments.clone())
    };
    let open = || WorkQueue::open_with_clock(dir.path(), opts(), clock.clone()).unwrap();
    {
        let queue = open();
        for n in 0..400u32 {
            let message = Message::new(vec![7; 100]).id(n.to_string());
            queue.send(message).unwrap();
            let delivery = queue.try_receive().unwrap().unwrap();
            queue.ack(&delivery).unwrap();
        }
        // 400 records of about 120 bytes in segments of 1 KiB: over 40 segments written.
        let kept = segment_files(&dir.path().join("messages"));
        assert!(kept <= 6, "{kept} message segments kept, all settled");
    }
    let queue = open();
    assert_eq!(queue.stats().next_offset, 400, "offsets carry on");
    let retry = queue.send(Message::new(vec![7; 100]).id("399")).unwrap();
    assert_eq!(
        (retry.offset, retry.duplicate),
        (399, true),
        "the dedup window is kept"
    );
    assert!(queue.try_receive().unwrap().is_none());
}

#[test]
fn a_durable_queue_under_interval_syncs_on_the_queue_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let disk = infra_mqueue::log::SimulatedStorage::new();
    let log = LogOptions {
        fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
        ..LogOptions::default()
    };
    let queue = WorkQueue::open_with(
        dir.path(),
        options().log_options(log),
        clock.clone(),
        disk.clone(),
    )
    .unwrap();
    let syncs = disk.file_syncs();
    queue.send(b"a".to_vec()).unwrap();
    queue.send(b"b".to_vec()).unwrap();
    assert_eq!(disk.file_syncs(), syncs, "no sync before the interval");
    clock.advance(Duration::from_secs(3600));
    queue.send(b"c".to_vec()).unwrap();
    assert_eq!(
        disk.file_syncs(),
        syncs + 1,
        "an hour passed on the queue's clock"
    );
}

#[test]
fn compaction_keeps_the_state_and_bounds_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let opts = || options().compact_after(16);
    {
        let queue = durable(dir.path(), opts(), &clock);
        for n in 0..100u8 {
            queue.send(vec![n]).unwrap();
        }
        // Ack all but every tenth; leave those delivered once and nacked with a delay.
        for _ in 0..100 {
            let delivery = queue.try_receive().unwrap().unwrap();
            if delivery.payload()[0].is_multiple_of(10) {
                queue.nack(&delivery, Duration::from_secs(5)).unwrap();
            } else {
                queue.ack(&delivery).unwrap();
            }
        }
    }
    let journals: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|entry| entry.unwrap().file_name().into_string().ok())
        .filter(|name| name.starts_with("journal-"))
        .collect();
    assert_eq!(
        journals.len(),
        1,
        "old generations are removed: {journals:?}"
    );
    assert_ne!(journals[0], "journal-0", "the journal was compacted");
    // A crash during the next compaction, before the pointer moved, leaves a half-written
    // next generation behind: the reopen uses the current one and removes it.
    let current: u64 = journals[0]["journal-".len()..].parse().unwrap();
    let half_written = dir.path().join(format!("journal-{}", current + 1));
    std::fs::create_dir(&half_written).unwrap();
    std::fs::write(half_written.join("00000000000000000000.seg"), b"torn").unwrap();
    let queue = durable(dir.path(), opts(), &clock);
    assert!(!half_written.exists());
    assert!(
        queue.try_receive().unwrap().is_none(),
        "the nack delays survive"
    );
    clock.advance(Duration::from_secs(5));
    let left: Vec<(u8, u32)> = std::iter::from_fn(|| queue.try_receive().unwrap())
        .map(|delivery| (delivery.payload()[0], delivery.attempt()))
        .collect();
    assert_eq!(left, (0..10).map(|n| (n * 10, 2)).collect::<Vec<_>>());
}

/// The current journal generation of the closed queue in `dir`: its directory, and the bytes of
/// segment headers and records it holds. Until its first compaction a queue has no `JOURNAL`
/// pointer and writes generation 0.
fn journal_generation(dir: &Path) -> (std::path::PathBuf, u64) {
    let generation = pointed_generation(dir).unwrap_or(0);
    let path = dir.join(format!("journal-{generation}"));
    let bytes = Log::open(&path, fast_log()).unwrap().stats().bytes;
    (path, bytes)
}

#[test]
fn a_checkpoint_behind_one_old_unsettled_message_does_not_grow_with_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let opts = || options().compact_after(1000);
    {
        let queue = durable(dir.path(), opts(), &clock);
        queue
            .send(Message::new(b"held".to_vec()).delay(Duration::from_secs(3600)))
            .unwrap();
        // Two journal records per round trip: a compaction every 500 round trips, the last
        // one right after the 20,000th.
        for n in 0..20_000u32 {
            queue.send(n.to_le_bytes().to_vec()).unwrap();
            let delivery = queue.try_receive().unwrap().unwrap();
            queue.ack(&delivery).unwrap();
        }
    }
    // The checkpoint says "settled" of the 20,000 messages in one record, not one each.
    let (_, bytes) = journal_generation(dir.path());
    assert!(bytes < 4096, "journal generation of {bytes} bytes");
    let queue = durable(dir.path(), opts(), &clock);
    assert_eq!(queue.stats().unsettled, 1);
    assert!(queue.try_receive().unwrap().is_none(), "still delayed");
    clock.advance(Duration::from_secs(3600));
    let held = queue.try_receive().unwrap().unwrap();
    assert_eq!((held.offset(), held.payload()), (0, &b"held"[..]));
    assert!(
        queue.try_receive().unwrap().is_none(),
        "the rest stay acked"
    );
}

/// A journal as the versions before settled ranges wrote their checkpoints: one `Acked` record
/// (tag 2, the offset) per settled message above the watermark (tag 6), framed here byte by
/// byte from that format and put in place of the queue's own journal.
#[test]
fn a_queue_reopens_on_a_journal_written_before_settled_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    {
        let queue = durable(dir.path(), options(), &clock);
        for n in 0..6u8 {
            queue.send(vec![n]).unwrap();
        }
    }
    let (current, _) = journal_generation(dir.path());
    std::fs::remove_dir_all(&current).unwrap();
    let record = |tag: u8, fields: &[&[u8]]| [&[tag][..], &fields.concat()].concat();
    let old_checkpoint = [
        record(6, &[&1u64.to_le_bytes()]),
        record(2, &[&2u64.to_le_bytes()]),
        record(2, &[&3u64.to_le_bytes()]),
        record(1, &[&4u64.to_le_bytes(), &1u32.to_le_bytes()]),
    ];
    let journal = Log::open(&current, fast_log()).unwrap();
    for bytes in &old_checkpoint {
        journal.append(bytes).unwrap();
    }
    drop(journal);
    let queue = durable(dir.path(), options(), &clock);
    assert_eq!(queue.stats().watermark, 1);
    let left: Vec<(u64, u32)> = std::iter::from_fn(|| queue.try_receive().unwrap())
        .map(|delivery| (delivery.offset(), delivery.attempt()))
        .collect();
    assert_eq!(left, [(1, 1), (4, 2), (5, 1)], "2 and 3 stay acked");
}

#[test]
fn acked_messages_stay_acked_after_a_compaction_whose_directory_sync_failed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let disk = FailingDirSyncs::default();
    let open = |disk: FailingDirSyncs| {
        let options = options().compact_after(16).log_options(fast_log());
        WorkQueue::open_with(dir.path(), options, clock.clone(), disk).unwrap()
    };
    let queue = open(disk.clone());
    for n in 0..10u8 {
        queue.send(vec![n]).unwrap();
    }
    // Seven receives and acks: 14 journal records, two short of a compaction.
    for _ in 0..7 {
        let delivery = queue.try_receive().unwrap().unwrap();
        queue.ack(&delivery).unwrap();
    }
    // The disk fails right after the compaction's rename of the JOURNAL pointer: the ack that
    // triggers it may fail, and so may what follows, but nothing acked may come back.
    disk.fail_after_next_rename();
    let delivery = queue.try_receive().unwrap().unwrap();
    assert_eq!(delivery.payload(), [7]);
    let _ = queue.ack(&delivery);
    let _ = queue.try_receive();
    drop(queue);
    let queue = open(FailingDirSyncs::default());
    let delivery = queue.try_receive().unwrap().unwrap();
    assert!(
        delivery.payload()[0] >= 7,
        "acked {:?} came back",
        delivery.payload()
    );
}

#[test]
fn a_compaction_that_cannot_start_fails_no_receive_or_ack() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let disk = FailingDirSyncs::default();
    let options = options().compact_after(16).log_options(fast_log());
    let queue = WorkQueue::open_with(dir.path(), options, clock.clone(), disk.clone()).unwrap();
    for n in 0..20u8 {
        queue.send(vec![n]).unwrap();
    }
    // The new generation's directory cannot be made durable, so every compaction fails
    // before it changes anything: the journal it would replace is still whole.
    disk.set_failing(true);
    for n in 0..20u8 {
        let delivery = queue
            .try_receive()
            .unwrap()
            .expect("a message for every receive");
        assert_eq!((delivery.payload(), delivery.attempt()), (&[n][..], 1));
        queue.ack(&delivery).unwrap();
    }
    assert!(queue.dead_letters(0, 10).unwrap().is_empty());
    drop(queue);
    disk.set_failing(false);
    let options = self::options().compact_after(16).log_options(fast_log());
    let queue = WorkQueue::open_with(dir.path(), options, clock, disk).unwrap();
    assert_eq!(queue.stats().unsettled, 0);
}

#[test]
fn a_journal_pointer_no_compaction_can_follow_is_refused_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    drop(durable(dir.path(), options(), &clock));
    std::fs::write(dir.path().join("JOURNAL"), u64::MAX.to_string()).unwrap();
    let opened = WorkQueue::open_with_clock(
        dir.path(),
        options().compact_after(16).log_options(fast_log()),
        clock.clone(),
    );
    if let Ok(queue) = &opened {
        // Enough journal records to compact, which moves to the next generation.
        for n in 0..8u8 {
            queue.send(vec![n]).unwrap();
            let delivery = queue.try_receive().unwrap().unwrap();
            queue.ack(&delivery).unwrap();
        }
    }
    assert!(
        matches!(opened, Err(Error::CorruptJournal { .. })),
        "{opened:?}"
    );
}

#[test]
fn a_send_that_returned_under_fsync_always_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    {
        let queue = WorkQueue::open_with_clock(dir.path(), options(), clock.clone()).unwrap();
        queue.send("durable").unwrap();
    }
    let queue = WorkQueue::open_with_clock(dir.path(), options(), clock).unwrap();
    assert_eq!(queue.try_receive().unwrap().unwrap().payload(), b"durable");
}

#[test]
fn stats_report_in_flight_and_the_oldest_age() {
    let (queue, clock) = memory(options());
    queue.send("a").unwrap();
    clock.advance(Duration::from_secs(3));
    queue.send("b").unwrap();
    let _a = queue.try_receive().unwrap().unwrap();
    let stats = queue.stats();
    assert_eq!(
        (stats.unsettled, stats.in_flight, stats.delivered),
        (2, 1, 1)
    );
    assert_eq!(stats.oldest_age, Some(Duration::from_secs(3)));
}

#[test]
fn a_dead_letter_frees_room_for_a_blocked_send() {
    let clock = ManualClock::new();
    let options = options().capacity(1).max_deliveries(1);
    let queue = Arc::new(WorkQueue::in_memory_with_clock(options, clock).unwrap());
    queue.send("poison").unwrap();
    let delivery = queue.try_receive().unwrap().unwrap();
    queue.nack(&delivery, Duration::ZERO).unwrap();
    let producer = {
        let queue = Arc::clone(&queue);
        Sleeper::spawn(move || queue.send("next").unwrap().offset)
    };
    // This receive dead-letters "poison" (one delivery is the maximum), which frees the room
    // the blocked producer waits for.
    let next = queue.receive().unwrap();
    assert_eq!(next.payload(), b"next");
    assert_eq!(producer.join("the waiting sender"), 1);
}

/// The in-memory hot path reads the clock once per send (the enqueue time) and once per
/// receive (the lease's deadline), never for an ack or a poll of an empty queue (unless the
/// `metrics` feature's gauges, updated there, need the time), and never the wall clock unless
/// deduplication dates the send.
#[test]
fn an_in_memory_queue_reads_the_clock_only_where_time_matters() {
    let gauges = u64::from(cfg!(feature = "metrics"));
    let clock = Arc::new(CountingClock::default());
    let queue = WorkQueue::in_memory_with_clock(options(), Arc::clone(&clock)).unwrap();
    clock.take();
    assert_eq!(queue.try_receive().unwrap().map(|d| d.offset()), None);
    assert_eq!(clock.take(), (gauges, 0), "a poll of an empty queue");
    queue.send(Message::new("order-1")).unwrap();
    assert_eq!(clock.take(), (1, 0), "a send");
    let delivery = queue.receive_timeout(LEASE).unwrap().unwrap();
    assert_eq!(clock.take(), (1, 0), "a receive of a waiting message");
    queue.ack(&delivery).unwrap();
    assert_eq!(clock.take(), (gauges, 0), "an ack");

    let dedup =
        WorkQueue::in_memory_with_clock(options().dedup(DedupWindow::new(10)), Arc::clone(&clock))
            .unwrap();
    clock.take();
    dedup.send(Message::new("order-2").id("o-2")).unwrap();
    assert_eq!(clock.take(), (1, 1), "a deduplicated send dates its id");
}

#[test]
fn a_batch_receive_takes_up_to_its_max_in_offset_order() {
    let (queue, _clock) = memory(options());
    for n in 0..5u8 {
        queue.send(vec![n]).unwrap();
    }
    assert!(queue.receive_many(0, LEASE).unwrap().is_empty());
    let first = queue.receive_many(3, Duration::ZERO).unwrap();
    let offsets: Vec<(u64, u32)> = first.iter().map(|d| (d.offset(), d.attempt())).collect();
    assert_eq!(offsets, [(0, 1), (1, 1), (2, 1)]);
    let rest = queue.try_receive_many(10).unwrap();
    assert_eq!(
        rest.iter()
            .map(infra_mqueue::queue::Delivery::offset)
            .collect::<Vec<_>>(),
        [3, 4]
    );
    assert!(queue.receive_many(10, Duration::ZERO).unwrap().is_empty());
    let stats = queue.stats();
    assert_eq!((stats.delivered, stats.in_flight), (5, 5));
}

#[test]
fn a_blocked_batch_receive_wakes_on_a_send() {
    let queue = Arc::new(WorkQueue::in_memory_with_clock(options(), SystemClock::new()).unwrap());
    let consumer = {
        let queue = Arc::clone(&queue);
        Sleeper::spawn(move || {
            let batch = queue.receive_many(8, Duration::from_secs(3_600)).unwrap();
            batch
                .iter()
                .map(|d| d.payload().to_vec())
                .collect::<Vec<_>>()
        })
    };
    queue.send("wake up").unwrap();
    assert_eq!(consumer.join("the waiting receiver"), [b"wake up".to_vec()]);
}

#[test]
fn a_batch_receive_dead_letters_on_its_way_and_fills_the_batch_with_the_rest() {
    let (queue, clock) = memory(options());
    queue.send("poison").unwrap();
    queue.send("fine").unwrap();
    queue.send("also fine").unwrap();
    for attempt in 1..=3 {
        let delivery = queue.try_receive().unwrap().unwrap();
        assert_eq!((delivery.offset(), delivery.attempt()), (0, attempt));
        clock.advance(LEASE);
    }
    let batch = queue.try_receive_many(2).unwrap();
    let payloads: Vec<&[u8]> = batch
        .iter()
        .map(infra_mqueue::queue::Delivery::payload)
        .collect();
    assert_eq!(payloads, [&b"fine"[..], &b"also fine"[..]]);
    assert_eq!(queue.dead_letters(0, 10).unwrap()[0].offset, 0);
    assert_eq!(queue.stats().dead_lettered, 1);
}

#[test]
fn ack_many_settles_each_receipt_on_its_own() {
    let (queue, _clock) = memory(options());
    for n in 0..3u8 {
        queue.send(vec![n]).unwrap();
    }
    let batch = queue.try_receive_many(3).unwrap();
    let stale = batch[1].receipt();
    queue.nack(stale, Duration::ZERO).unwrap();
    let again = queue.try_receive().unwrap().unwrap();
    assert_eq!((again.offset(), again.attempt()), (1, 2));
    let results = queue.ack_many([
        batch[0].receipt(),
        stale,
        batch[2].receipt(),
        batch[0].receipt(),
        Receipt::new(99, 1),
    ]);
    assert!(results[0].is_ok());
    assert!(matches!(
        results[1],
        Err(Error::Redelivered {
            offset: 1,
            attempt: 1,
            ..
        })
    ));
    assert!(results[2].is_ok());
    assert!(matches!(
        results[3],
        Err(Error::AlreadySettled { offset: 0 })
    ));
    assert!(matches!(results[4], Err(Error::UnknownDelivery { .. })));
    let stats = queue.stats();
    assert_eq!((stats.acked, stats.refused, stats.unsettled), (2, 3, 1));
    assert!(queue.ack_many(Vec::<Receipt>::new()).is_empty());
    // The redelivered holder still owns its lease.
    assert!(queue.ack(&again).is_ok());
}

/// A receiver that takes a wake-up and then leaves without a message passes it on: a nack with
/// a delay wakes one sleeper to look at the new due time; if that sleeper's own wait is over,
/// another sleeper must look in its place, or it sleeps on to the lease's end (here two hours).
/// The receivers are seen asleep before the nack, the one leaving first in line.
#[test]
fn a_receiver_leaving_with_a_wake_up_passes_it_to_another_sleeper() {
    let clock = ManualClock::new();
    let options = QueueOptions::default().visibility_timeout(Duration::from_secs(7_200));
    let queue = Arc::new(WorkQueue::in_memory_with_clock(options, clock.clone()).unwrap());
    queue.send("order").unwrap();
    let leased = queue.try_receive().unwrap().unwrap();
    let receive = |wait: Option<Duration>| {
        let queue = Arc::clone(&queue);
        move || {
            let got = match wait {
                Some(timeout) => queue.receive_timeout(timeout).unwrap(),
                None => Some(queue.receive().unwrap()),
            };
            got.map(|delivery| (delivery.offset(), delivery.attempt()))
        }
    };
    let leaving = Sleeper::spawn(receive(Some(Duration::from_secs(3_600))));
    let staying = Sleeper::spawn(receive(None));
    // Past the first receiver's wait, not the lease's: the nack wakes the first in line.
    clock.advance(Duration::from_secs(3_601));
    queue.nack(&leased, Duration::from_millis(1)).unwrap();
    assert_eq!(leaving.join("the leaving receiver"), None);
    clock.advance(Duration::from_secs(1));
    assert_eq!(staying.join("the other receiver"), Some((0, 2)));
}

/// Two senders asleep at a full queue both go on after one batch ack of two messages.
#[test]
fn a_blocked_send_resumes_after_a_batch_ack() {
    let queue = Arc::new(WorkQueue::in_memory(options().capacity(2)).unwrap());
    queue.send("1").unwrap();
    queue.send("2").unwrap();
    let producers: Vec<_> = (0..2)
        .map(|_| {
            let queue = Arc::clone(&queue);
            Sleeper::spawn(move || queue.send("more").unwrap().offset)
        })
        .collect();
    let batch = queue.receive_many(2, LEASE).unwrap();
    assert_eq!(batch.len(), 2);
    for result in queue.ack_many(batch.iter().map(infra_mqueue::queue::Delivery::receipt)) {
        result.unwrap();
    }
    let mut offsets: Vec<u64> = producers
        .into_iter()
        .map(|producer| producer.join("a waiting sender"))
        .collect();
    offsets.sort_unstable();
    assert_eq!(offsets, [2, 3], "both waiting senders were woken");
}

/// A thread running a call that blocks, spawned and then seen asleep in the kernel, so a test
/// knows it waits before the test acts. Seen in `/proc` (state `S`: past any spinning, waiting
/// on a condition variable) on Linux; elsewhere the test acts without knowing, and may pass
/// without the wake-up it means to check (the loom models check those everywhere).
struct Sleeper<T> {
    handle: infra_common::sync::thread::JoinHandle<T>,
    done: Arc<infra_common::sync::atomic::AtomicBool>,
}

impl<T: Send + 'static> Sleeper<T> {
    fn spawn(call: impl FnOnce() -> T + Send + 'static) -> Self {
        use infra_common::sync::atomic::{AtomicBool, AtomicU64, Ordering};

        let id = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (id_set, done_set) = (Arc::clone(&id), Arc::clone(&done));
        let handle = thread::spawn(move || {
            id_set.store(kernel_thread_id(), Ordering::Release);
            let result = call();
            done_set.store(true, Ordering::Release);
            result
        });
        until("a thread asleep", || {
            let id = id.load(Ordering::Acquire);
            id != 0 && is_asleep(id)
        });
        Self { handle, done }
    }

    /// The call's result, once it returns (after 30 s of real time the test fails rather than
    /// hang).
    fn join(self, what: &str) -> T {
        let done = &self.done;
        until(&format!("{what} returned"), || {
            done.load(infra_common::sync::atomic::Ordering::Acquire)
        });
        self.handle.join().unwrap()
    }
}

/// The kernel's id of the calling thread, which names it under `/proc/self/task` (1 where there
/// is none).
fn kernel_thread_id() -> u64 {
    if cfg!(target_os = "linux") {
        let link = std::fs::read_link("/proc/thread-self").unwrap();
        link.file_name().unwrap().to_str().unwrap().parse().unwrap()
    } else {
        1
    }
}

/// Whether the thread with kernel id `id` is asleep (always, where that cannot be seen).
fn is_asleep(id: u64) -> bool {
    if !cfg!(target_os = "linux") {
        return true;
    }
    let stat = std::fs::read_to_string(format!("/proc/self/task/{id}/stat")).unwrap();
    // The state follows the command name, which is in parentheses and may hold any byte.
    let state = stat.rsplit_once(')').unwrap().1.trim_start().chars().next();
    state == Some('S')
}

#[test]
fn a_durable_queue_journals_batch_receives_and_acks() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    {
        let queue = durable(dir.path(), options(), &clock);
        for n in 0..4u8 {
            queue.send(vec![n]).unwrap();
        }
        let batch = queue.try_receive_many(3).unwrap();
        assert_eq!(batch.len(), 3);
        let results = queue.ack_many([batch[0].receipt(), batch[2].receipt()]);
        assert!(results.iter().all(Result::is_ok));
        // Crash with offset 1 leased (attempt 1) and offset 3 never delivered.
    }
    let queue = durable(dir.path(), options(), &clock);
    let again = queue.try_receive_many(10).unwrap();
    let seen: Vec<(u64, u32)> = again.iter().map(|d| (d.offset(), d.attempt())).collect();
    assert_eq!(seen, [(1, 2), (3, 1)], "acked stay acked, counts survive");
}

#[test]
fn a_batch_send_gives_each_message_its_own_result_in_order() {
    let (queue, _clock) = memory(options().max_message_bytes(8).dedup(DedupWindow::new(16)));
    let sent = queue.send_many([
        Message::new("one").id("a"),
        Message::new("far too long a message"),
        Message::new("two"),
        Message::new("again").id("a"),
        Message::new("three").id(""),
    ]);
    assert_eq!(sent[0].as_ref().unwrap().offset, 0);
    assert!(matches!(sent[1], Err(Error::MessageTooLarge { .. })));
    assert_eq!(sent[2].as_ref().unwrap().offset, 1);
    let duplicate = sent[3].as_ref().unwrap();
    assert_eq!((duplicate.offset, duplicate.duplicate), (0, true));
    assert!(matches!(sent[4], Err(Error::InvalidMessageId { len: 0 })));
    assert_eq!(payloads(&queue), [b"one".to_vec(), b"two".to_vec()]);
    assert!(queue.send_many(Vec::<Message>::new()).is_empty());
}

/// A batch larger than the queue: the sender wakes the consumer for what it stored before it
/// waits for room, or both would sleep for good.
#[test]
fn an_in_memory_batch_larger_than_the_capacity_goes_through_a_sleeping_consumer() {
    let queue = Arc::new(WorkQueue::in_memory(options().capacity(4)).unwrap());
    let consumer = {
        let queue = Arc::clone(&queue);
        thread::spawn(move || {
            let mut received = Vec::new();
            while received.len() < 100 {
                let batch = queue.receive_many(3, LEASE).unwrap();
                for result in
                    queue.ack_many(batch.iter().map(infra_mqueue::queue::Delivery::receipt))
                {
                    result.unwrap();
                }
                received.extend(batch.iter().map(|d| d.payload()[0]));
            }
            received
        })
    };
    let sent = queue.send_many((0..100u8).map(|n| vec![n]));
    let offsets: Vec<u64> = sent.into_iter().map(|s| s.unwrap().offset).collect();
    assert_eq!(offsets, (0..100).collect::<Vec<u64>>());
    assert_eq!(consumer.join().unwrap(), (0..100u8).collect::<Vec<u8>>());
}

/// Waits, yielding, until `done`; fails after 30 s rather than hang the test run.
fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        thread::yield_now();
    }
}

/// A batch send dates each message's id when it stores it, as one send per message would: an
/// id whose dedup window ended while the batch waited for room is a new message, stored, and
/// not reported as a duplicate of a message long since acknowledged.
#[test]
fn a_batch_send_dates_each_id_when_it_stores_it_not_when_the_batch_began() {
    use infra_common::sync::atomic::{AtomicBool, Ordering};
    let window = DedupWindow::new(100).max_age(Duration::from_secs(60));
    let (queue, clock) = memory(options().capacity(1).dedup(window));
    let queue = Arc::new(queue);
    queue.send(Message::new("first").id("k")).unwrap();
    let started = Arc::new(AtomicBool::new(false));
    let producer = {
        let (queue, started) = (Arc::clone(&queue), Arc::clone(&started));
        thread::spawn(move || {
            // Pulling the first message tells the test the batch has begun.
            let batch = [Message::new("filler"), Message::new("again").id("k")]
                .into_iter()
                .inspect(move |_| started.store(true, Ordering::SeqCst));
            let sent: Vec<_> = queue
                .send_many(batch)
                .into_iter()
                .map(Result::unwrap)
                .collect();
            sent
        })
    };
    until("the batch began", || started.load(Ordering::SeqCst));
    // The window of "k" ends while the batch waits for room (the queue holds "first").
    clock.advance(Duration::from_secs(61));
    let first = queue.receive().unwrap();
    assert_eq!(first.payload(), b"first");
    queue.ack(&first).unwrap();
    let filler = queue.receive().unwrap();
    assert_eq!(filler.payload(), b"filler");
    queue.ack(&filler).unwrap();
    let sent = producer.join().unwrap();
    assert!(
        !sent[1].duplicate,
        "\"again\" was sent 61 s after \"k\" was first seen (window 60 s), yet reported as a \
         duplicate of offset {}",
        sent[1].offset
    );
    assert_eq!(payloads(&queue), [b"again".to_vec()]);
}

/// A batch send pulls its messages from the caller's iterator without holding the queue: an
/// iterator that looks at the queue (or is slow, reading its messages from elsewhere) neither
/// deadlocks the sender nor stalls every other caller meanwhile.
#[test]
fn a_batch_send_does_not_hold_the_queue_while_it_pulls_messages() {
    use infra_common::sync::atomic::{AtomicUsize, Ordering};
    let queue = Arc::new(WorkQueue::in_memory(options()).unwrap());
    // One more than the messages sent once the batch returned.
    let done = Arc::new(AtomicUsize::new(0));
    {
        let (queue, done) = (Arc::clone(&queue), Arc::clone(&done));
        // Left running if it deadlocks; the test reports that below.
        drop(thread::spawn(move || {
            let batch = (0..2u8).map(|n| {
                // Counts the backlog before producing more, say.
                let _backlog = queue.stats().unsettled;
                vec![n]
            });
            let sent = queue.send_many(batch);
            done.store(
                1 + sent.iter().filter(|sent| sent.is_ok()).count(),
                Ordering::SeqCst,
            );
        }));
    }
    until(
        "send_many returned (it pulls its next message with the queue's lock held)",
        || done.load(Ordering::SeqCst) != 0,
    );
    assert_eq!(done.load(Ordering::SeqCst), 3);
}

#[test]
fn a_durable_batch_with_a_refused_message_and_a_duplicate_stores_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let options = options().max_message_bytes(8).dedup(DedupWindow::new(16));
    {
        let queue = durable(dir.path(), options.clone(), &clock);
        let sent = queue.send_many([
            Message::new("one").id("a"),
            Message::new("far too long a message"),
            Message::new("two"),
            Message::new("again").id("a"),
        ]);
        assert_eq!(sent[0].as_ref().unwrap().offset, 0);
        assert!(matches!(sent[1], Err(Error::MessageTooLarge { .. })));
        assert_eq!(sent[2].as_ref().unwrap().offset, 1);
        let duplicate = sent[3].as_ref().unwrap();
        assert_eq!((duplicate.offset, duplicate.duplicate), (0, true));
    }
    let queue = durable(dir.path(), options, &clock);
    assert_eq!(payloads(&queue), [b"one".to_vec(), b"two".to_vec()]);
}

#[test]
fn a_batch_receive_that_times_out_returns_nothing() {
    let queue = WorkQueue::in_memory(options()).unwrap();
    let batch = queue.receive_many(5, Duration::from_millis(1)).unwrap();
    assert!(batch.is_empty());
}

/// A payload whose drop is counted, to see when the queue lets go of a message's bytes.
struct CountedPayload {
    bytes: Vec<u8>,
    dropped: Arc<AtomicUsize>,
}

impl AsRef<[u8]> for CountedPayload {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for CountedPayload {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sends, receives and acks `count` counted payloads behind a message delayed for an hour (an
/// unsettled message older than all of them), and returns how many payloads the queue let go.
fn payloads_let_go_behind_a_delayed_message(queue: &WorkQueue, count: usize) -> usize {
    let dropped = Arc::new(AtomicUsize::new(0));
    queue
        .send(Message::new("reminder").delay(Duration::from_secs(3600)))
        .unwrap();
    for _ in 0..count {
        let payload = bytes::Bytes::from_owner(CountedPayload {
            bytes: vec![7; 1024],
            dropped: Arc::clone(&dropped),
        });
        queue.send(Message::new(payload)).unwrap();
        let delivery = queue.try_receive().unwrap().expect("the message just sent");
        queue.term(&delivery).unwrap();
    }
    assert_eq!(queue.stats().unsettled, 1, "only the reminder is unsettled");
    dropped.load(Ordering::Relaxed)
}

/// `capacity` bounds the unsettled messages, and so the payloads a queue holds: a settled
/// message's bytes go at its ack or term, also while an older message (delayed, or leased
/// for long) keeps its place in the lease table.
#[test]
fn a_settled_messages_payload_is_let_go_while_an_older_message_is_unsettled() {
    let (queue, _clock) = memory(options().capacity(4));
    assert_eq!(payloads_let_go_behind_a_delayed_message(&queue, 100), 100);
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let queue = durable(dir.path(), options().capacity(4), &clock);
    assert_eq!(payloads_let_go_behind_a_delayed_message(&queue, 100), 100);
}

/// A file layer over a simulated disk that runs a hook once, just before its first rename
/// (a compaction's `JOURNAL` pointer).
#[derive(Clone)]
struct BeforeFirstRename {
    disk: SimulatedStorage,
    hook: Arc<infra_common::sync::Mutex<Option<HookBeforeRename>>>,
}

type HookBeforeRename = Box<dyn FnOnce() + Send>;

impl std::fmt::Debug for BeforeFirstRename {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeforeFirstRename").finish_non_exhaustive()
    }
}

impl infra_mqueue::log::Storage for BeforeFirstRename {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.disk.create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.disk.list(dir)
    }

    fn open(
        &self,
        path: &Path,
        create: bool,
    ) -> std::io::Result<Box<dyn infra_mqueue::log::StorageFile>> {
        self.disk.open(path, create)
    }

    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.disk.remove(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        let hook = self.hook.lock().take();
        if let Some(hook) = hook {
            hook();
        }
        self.disk.rename(from, to)
    }

    fn remove_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.disk.remove_dir(dir)
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.disk.sync_dir(dir)
    }

    fn lock_dir(
        &self,
        dir: &Path,
    ) -> std::io::Result<Option<Box<dyn std::fmt::Debug + Send + Sync>>> {
        self.disk.lock_dir(dir)
    }
}

/// A second open of a durable queue that is in use (another process, by mistake) is refused
/// with `Locked` before it changes anything: here it comes while the first queue compacts
/// its journal, between writing the new generation and naming it in `JOURNAL`, and must not
/// delete that generation as a leftover of a crashed compaction.
#[test]
fn a_second_open_of_a_queue_in_use_is_locked_before_it_deletes_anything() {
    let disk = SimulatedStorage::new();
    let clock = ManualClock::new();
    let dir = Path::new("/queue");
    let options = options().compact_after(16);
    let storage = BeforeFirstRename {
        disk: disk.clone(),
        hook: Arc::default(),
    };
    let queue = WorkQueue::open_with(dir, options.clone(), clock.clone(), storage.clone()).unwrap();
    for n in 0..10u8 {
        queue.send(vec![n]).unwrap();
    }
    // Seven receives and acks: 14 journal records, two short of a compaction.
    let mut acked = Vec::new();
    for _ in 0..7 {
        let delivery = queue.try_receive().unwrap().unwrap();
        queue.ack(&delivery).unwrap();
        acked.push(delivery.payload()[0]);
    }
    let second = Arc::new(infra_common::sync::Mutex::new(None));
    {
        let (disk, clock, options, second) = (
            disk.clone(),
            clock.clone(),
            options.clone(),
            Arc::clone(&second),
        );
        *storage.hook.lock() = Some(Box::new(move || {
            let opened = WorkQueue::open_with(dir, options, clock, disk);
            *second.lock() = Some(matches!(opened, Err(Error::Locked { .. })));
        }));
    }
    // The next receive and ack compact the journal, and the second open comes meanwhile.
    let delivery = queue.try_receive().unwrap().unwrap();
    queue.ack(&delivery).unwrap();
    acked.push(delivery.payload()[0]);
    assert_eq!(*second.lock(), Some(true), "the second open is refused");
    let delivery = queue.try_receive().unwrap().unwrap();
    queue.ack(&delivery).unwrap();
    acked.push(delivery.payload()[0]);
    drop(queue);
    let queue = WorkQueue::open_with(dir, options, clock, disk.clone()).unwrap();
    let mut left = Vec::new();
    while let Some(delivery) = queue.try_receive().unwrap() {
        left.push(delivery.payload()[0]);
        queue.ack(&delivery).unwrap();
    }
    assert!(
        left.iter().all(|payload| !acked.contains(payload)),
        "acked messages came back: {left:?}"
    );
    assert_eq!(left, [9]);
}

/// Whether a send of the id "late" that waited two minutes for room, repeated as soon as it
/// returned, is reported a duplicate, in a queue with a 60 s dedup window holding one message.
fn a_retry_right_after_a_long_wait_for_room_is_a_duplicate(
    queue: WorkQueue,
    clock: &ManualClock,
) -> bool {
    let queue = Arc::new(queue);
    queue.send("filler").unwrap();
    let producer = {
        let queue = Arc::clone(&queue);
        Sleeper::spawn(move || queue.send(Message::new("late").id("late")).unwrap())
    };
    clock.advance(Duration::from_secs(120));
    let filler = queue.try_receive().unwrap().unwrap();
    queue.ack(&filler).unwrap();
    let first = producer.join("the send waiting for room");
    assert!(!first.duplicate);
    let retry = queue.try_send(Message::new("late").id("late"));
    matches!(retry, Ok(sent) if sent.duplicate && sent.offset == first.offset)
}

/// A send that waited for room dates its id when it stores the message, not when it began to
/// wait: a window of 60 s counts from the storing, so a retry right after the send returned is
/// a duplicate even when the wait took longer than the window (in memory and durable).
#[test]
fn a_send_that_waited_for_room_dates_its_id_when_it_stores_the_message() {
    let window = DedupWindow::new(100).max_age(Duration::from_secs(60));
    let options = options().capacity(1).dedup(window);
    let (queue, clock) = memory(options.clone());
    assert!(
        a_retry_right_after_a_long_wait_for_room_is_a_duplicate(queue, &clock),
        "in memory: the retry was stored again"
    );
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let queue = durable(dir.path(), options, &clock);
    assert!(
        a_retry_right_after_a_long_wait_for_room_is_a_duplicate(queue, &clock),
        "durable: the retry was stored again"
    );
}

/// A delivery taken back (its receive's journal write failed) was never handed out: the
/// counts of deliveries do not include it.
#[test]
fn a_delivery_taken_back_is_not_counted_as_delivered() {
    let disk = SimulatedStorage::new();
    let queue = on_simulated_disk(options(), &ManualClock::new(), &disk);
    queue.send("job").unwrap();
    let first = queue.try_receive().unwrap().unwrap();
    queue.nack(&first, Duration::ZERO).unwrap();
    disk.set_failing(true);
    assert!(queue.try_receive().is_err());
    disk.set_failing(false);
    let stats = queue.stats();
    assert_eq!(
        (stats.delivered, stats.redelivered),
        (1, 0),
        "the delivery taken back was never handed out"
    );
    let again = queue.try_receive().unwrap().unwrap();
    assert_eq!(again.attempt(), 2);
    let stats = queue.stats();
    assert_eq!((stats.delivered, stats.redelivered), (2, 1));
}

/// A receive that took over an expired lease and was then taken back leaves that lease as it
/// was: its holder may still settle it, as it could before.
#[test]
fn a_delivery_taken_back_leaves_the_expired_lease_it_took_over_to_its_holder() {
    a_failed_receive_after_a_lease_expired_leaves_it_to_its_holder(options());
}

/// Delivers a message, lets its lease expire, fails the next receive (its journal write or,
/// with one delivery allowed, its dead letter's write) and checks that the expired lease is
/// still held and its holder's ack settles the message; returns the queue.
fn a_failed_receive_after_a_lease_expired_leaves_it_to_its_holder(
    options: QueueOptions,
) -> WorkQueue {
    let disk = SimulatedStorage::new();
    let clock = ManualClock::new();
    let queue = on_simulated_disk(options, &clock, &disk);
    queue.send("job").unwrap();
    let slow = queue.try_receive().unwrap().unwrap();
    clock.advance(LEASE + Duration::from_secs(1));
    disk.set_failing(true);
    assert!(queue.try_receive().is_err(), "the receive's write failed");
    disk.set_failing(false);
    assert_eq!(
        queue.stats().in_flight,
        1,
        "the expired lease is still held"
    );
    queue.ack(&slow).unwrap();
    assert_eq!(queue.stats().unsettled, 0);
    queue
}

/// A dead letter whose write failed leaves the expired lease it was to end as it was: its
/// holder, who may have finished the job, may still ack it instead of seeing it dead-lettered.
#[test]
fn a_failed_dead_letter_leaves_the_expired_lease_to_its_holder() {
    let queue =
        a_failed_receive_after_a_lease_expired_leaves_it_to_its_holder(options().max_deliveries(1));
    assert!(queue.dead_letters(0, 10).unwrap().is_empty());
}

/// Acks 8 messages with a journal compacted every 16 records, so that the queue at `dir`
/// holds a `JOURNAL` pointer naming a generation after the first, with every message acked.
fn a_compacted_queue_of_acked_messages(dir: &Path, clock: &ManualClock) -> String {
    let queue = WorkQueue::open_with_clock(
        dir,
        options().compact_after(16).log_options(fast_log()),
        clock.clone(),
    )
    .unwrap();
    for n in 0..8u8 {
        queue.send(vec![n]).unwrap();
        let delivery = queue.try_receive().unwrap().unwrap();
        queue.ack(&delivery).unwrap();
    }
    drop(queue);
    assert_ne!(pointed_generation(dir), None, "the journal was compacted");
    std::fs::read_to_string(dir.join("JOURNAL")).unwrap()
}

/// The generation the `JOURNAL` pointer of the closed queue in `dir` names (the pointer's first
/// word; its checksum follows), if there is a pointer.
fn pointed_generation(dir: &Path) -> Option<u64> {
    let pointer = std::fs::read_to_string(dir.join("JOURNAL")).ok()?;
    Some(pointer.split(' ').next().unwrap().parse().unwrap())
}

fn journal_dirs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("journal-"))
        .collect();
    names.sort();
    names
}

/// Asserts that the open of the queue in `dir`, damaged by `damage`, was refused as
/// `CorruptJournal` with its journal generations (`journals` before the open) all kept; an open
/// that went through shows the acked message it delivers again.
#[track_caller]
fn assert_journal_refused(
    opened: &Result<WorkQueue, Error>,
    dir: &Path,
    journals: &[String],
    damage: &str,
) {
    if let Ok(queue) = opened {
        let redelivered = queue.try_receive().unwrap().map(|d| d.offset());
        panic!("{damage}: opened, redelivering acked message {redelivered:?}");
    }
    assert!(
        matches!(opened, Err(Error::CorruptJournal { .. })),
        "{damage}: {opened:?}"
    );
    assert_eq!(journal_dirs(dir), journals, "{damage}: nothing deleted");
}

/// A `JOURNAL` pointer whose digits were damaged into another number, or a pointer that is
/// gone, names a generation no compaction wrote: the open refuses it, rather than taking it
/// for a crash's leftover, deleting the generation that holds the acks and redelivering every
/// acked message.
#[test]
fn a_journal_pointer_naming_a_generation_that_is_not_there_is_refused_and_nothing_deleted() {
    for damage in ["flipped digit", "missing pointer"] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let pointer = a_compacted_queue_of_acked_messages(dir.path(), &clock);
        let journals = journal_dirs(dir.path());
        match damage {
            "flipped digit" => {
                // One bit flipped in the last digit ('0' to '1', '1' to '0', ...): still a number.
                let mut bytes = pointer.clone().into_bytes();
                let last = bytes.len() - 1;
                bytes[last] ^= 1;
                std::fs::write(dir.path().join("JOURNAL"), &bytes).unwrap();
            }
            _ => std::fs::remove_file(dir.path().join("JOURNAL")).unwrap(),
        }
        let opened = WorkQueue::open_with_clock(
            dir.path(),
            options().compact_after(16).log_options(fast_log()),
            clock.clone(),
        );
        assert_journal_refused(&opened, dir.path(), &journals, damage);
        // The pointer put back, the queue opens with every message acked.
        std::fs::write(dir.path().join("JOURNAL"), &pointer).unwrap();
        let queue = WorkQueue::open_with_clock(
            dir.path(),
            options().compact_after(16).log_options(fast_log()),
            clock.clone(),
        )
        .unwrap();
        assert_eq!(queue.stats().unsettled, 0, "{damage}");
        assert!(queue.try_receive().unwrap().is_none(), "{damage}");
    }
}

/// A crash after a compaction's rename and before it deletes the generation before it leaves
/// that older generation beside the new one. A pointer whose number was damaged into the
/// older one's must not open it: the older generation lacks the acks journaled since, and the
/// messages they settled would be delivered again. The checksum written beside the number
/// refuses it, and nothing is deleted.
#[test]
fn a_journal_pointer_damaged_into_the_number_of_a_generation_a_crash_left_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let options = || options().compact_after(16).log_options(fast_log());
    a_compacted_queue_of_acked_messages(dir.path(), &clock);
    let older = pointed_generation(dir.path()).unwrap();
    let older_dir = dir.path().join(format!("journal-{older}"));
    let leftover = tempfile::tempdir().unwrap();
    copy_files(&older_dir, leftover.path());
    let queue = WorkQueue::open_with_clock(dir.path(), options(), clock.clone()).unwrap();
    for n in 8..16u8 {
        queue.send(vec![n]).unwrap();
        let delivery = queue.try_receive().unwrap().unwrap();
        queue.ack(&delivery).unwrap();
    }
    drop(queue);
    let newer = pointed_generation(dir.path()).unwrap();
    assert!(newer > older, "compacted again: {older} then {newer}");
    // What the crash left: the older generation, back beside the newer one.
    std::fs::create_dir(&older_dir).unwrap();
    copy_files(leftover.path(), &older_dir);
    let pointer = std::fs::read_to_string(dir.path().join("JOURNAL")).unwrap();
    let damaged = pointer.replacen(&newer.to_string(), &older.to_string(), 1);
    std::fs::write(dir.path().join("JOURNAL"), &damaged).unwrap();
    let journals = journal_dirs(dir.path());
    let opened = WorkQueue::open_with_clock(dir.path(), options(), clock.clone());
    assert_journal_refused(&opened, dir.path(), &journals, "pointer naming the older");
    // The pointer put back, the queue opens with every message acked, the leftover removed.
    std::fs::write(dir.path().join("JOURNAL"), &pointer).unwrap();
    let queue = WorkQueue::open_with_clock(dir.path(), options(), clock.clone()).unwrap();
    assert_eq!(queue.stats().unsettled, 0);
    assert!(queue.try_receive().unwrap().is_none());
    assert_eq!(journal_dirs(dir.path()), [format!("journal-{newer}")]);
}

/// Copies the files of the directory `from` into the directory `to`.
fn copy_files(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A durable queue at `dir` sent three messages, the first received and acked: two unsettled.
fn three_sent_first_acked(dir: &Path, clock: &ManualClock) {
    let queue = durable(dir, options(), clock);
    for n in 0..3u8 {
        queue.send(vec![n]).unwrap();
    }
    let delivery = queue.try_receive().unwrap().unwrap();
    assert_eq!(delivery.offset(), 0);
    queue.ack(&delivery).unwrap();
}

/// Asserts that a damaged queue's open was refused as corrupt at the log directory `log`;
/// `opened_as` says what the queue would have held had it opened.
fn assert_refused_at(
    opened: &Result<WorkQueue, Error>,
    log: &Path,
    opened_as: impl FnOnce(&WorkQueue) -> String,
) {
    if let Ok(queue) = opened {
        panic!("opened: {}", opened_as(queue));
    }
    assert!(
        matches!(opened, Err(Error::Corrupt { segment, .. }) if segment == log),
        "{opened:?}"
    );
}

/// Asserts that a queue reopened once its damage was undone holds `unsettled` messages, the
/// next delivered at `next_offset`.
fn assert_holds(queue: &WorkQueue, unsettled: usize, next_offset: u64) {
    assert_eq!(queue.stats().unsettled, unsettled);
    assert_eq!(queue.try_receive().unwrap().unwrap().offset(), next_offset);
}

/// A queue whose message log's directory is gone while its journal is there lost its
/// messages to something other than a crash (the directory is made durable before the
/// journal is created): the open refuses it, rather than opening empty, forgetting what the
/// journal says and rewriting it.
#[test]
fn a_queue_whose_message_log_is_gone_is_refused_and_its_journal_kept() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    three_sent_first_acked(dir.path(), &clock);
    let journals = journal_dirs(dir.path());
    let messages = dir.path().join("messages");
    let moved = dir.path().join("messages-moved-away");
    std::fs::rename(&messages, &moved).unwrap();
    let opened =
        WorkQueue::open_with_clock(dir.path(), options().log_options(fast_log()), clock.clone());
    assert_refused_at(&opened, &messages, |queue| {
        format!("{} unsettled of 2", queue.stats().unsettled)
    });
    assert_eq!(journal_dirs(dir.path()), journals, "nothing deleted");
    // The directory put back, the queue opens with its two unacked messages.
    std::fs::rename(&moved, &messages).unwrap();
    assert_holds(&durable(dir.path(), options(), &clock), 2, 1);
}

/// The message log's oldest segment gone, with unsettled messages in it: compaction deletes
/// only segments below the oldest unsettled message, so this is damage, and the open refuses
/// it rather than starting from the oldest message left, as if the missing ones were settled.
#[test]
fn a_queue_missing_a_message_segment_it_still_needs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let small_segments = small_segments();
    let opts = || options().log_options(small_segments.clone());
    {
        let queue = WorkQueue::open_with_clock(dir.path(), opts(), clock.clone()).unwrap();
        for n in 0..30u8 {
            queue.send(vec![n; 100]).unwrap();
        }
        let first = queue.try_receive().unwrap().unwrap();
        queue.ack(&first).unwrap();
    }
    let messages = dir.path().join("messages");
    let oldest = messages.join("00000000000000000000.seg");
    let moved = dir.path().join("oldest-moved-away");
    assert!(segment_files(&messages) > 2);
    std::fs::rename(&oldest, &moved).unwrap();
    let opened = WorkQueue::open_with_clock(dir.path(), opts(), clock.clone());
    assert_refused_at(&opened, &messages, |queue| {
        format!("{} unsettled of 29", queue.stats().unsettled)
    });
    std::fs::rename(&moved, &oldest).unwrap();
    let queue = WorkQueue::open_with_clock(dir.path(), opts(), clock.clone()).unwrap();
    assert_holds(&queue, 29, 1);
}

/// A queue whose dead-letter log's directory is gone while its message log holds messages
/// lost it to something other than a crash (the first open creates it before any send): the
/// open refuses it rather than opening with no dead letters.
#[test]
fn a_queue_whose_dead_letter_log_is_gone_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let opts = || options().max_deliveries(1);
    {
        let queue = durable(dir.path(), opts(), &clock);
        queue.send(b"fails".to_vec()).unwrap();
        let delivery = queue.try_receive().unwrap().unwrap();
        queue.nack(&delivery, Duration::ZERO).unwrap();
        assert!(queue.try_receive().unwrap().is_none(), "dead-lettered");
        assert_eq!(queue.dead_letters(0, 10).unwrap().len(), 1);
    }
    let dead = dir.path().join("dead");
    let moved = dir.path().join("dead-moved-away");
    std::fs::rename(&dead, &moved).unwrap();
    let opened =
        WorkQueue::open_with_clock(dir.path(), opts().log_options(fast_log()), clock.clone());
    assert_refused_at(&opened, &dead, |queue| {
        format!(
            "{} dead letters of 1",
            queue.dead_letters(0, 10).unwrap().len()
        )
    });
    std::fs::rename(&moved, &dead).unwrap();
    let queue = durable(dir.path(), opts(), &clock);
    assert_eq!(queue.dead_letters(0, 10).unwrap().len(), 1);
}

/// Moves every segment file of the log directory `from` into `to` (created), leaving `from`
/// there and empty.
fn move_segments(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let name = entry.unwrap().file_name();
        if name.to_string_lossy().ends_with(".seg") {
            std::fs::rename(from.join(&name), to.join(&name)).unwrap();
        }
    }
}

/// A log directory that is there but holds no segment lost its records to something other
/// than a crash, when the other log holds records: a journal generation beside a message log
/// holding messages (the first open creates generation 0's first segment before any send),
/// where the queue opened with no acks and delivered the acked messages again; and a message
/// log beside a journal holding records, where it opened empty, forgot what the journal said
/// and rewrote it. The open refuses both, creating nothing.
#[test]
fn a_queue_whose_journal_or_message_log_lost_all_its_segments_is_refused() {
    for emptied in ["journal-0", "messages"] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        three_sent_first_acked(dir.path(), &clock);
        let log = dir.path().join(emptied);
        let moved = dir.path().join("segments-moved-away");
        move_segments(&log, &moved);
        let opened = WorkQueue::open_with_clock(
            dir.path(),
            options().log_options(fast_log()),
            clock.clone(),
        );
        assert_refused_at(&opened, &log, |queue| {
            let next = queue.try_receive().unwrap().map(|d| d.offset());
            format!(
                "{emptied} emptied: {} unsettled of 2, handing out {next:?}",
                queue.stats().unsettled
            )
        });
        assert_eq!(segment_files(&log), 0, "{emptied}: nothing created");
        move_segments(&moved, &log);
        assert_holds(&durable(dir.path(), options(), &clock), 2, 1);
    }
}

/// The generation a `JOURNAL` pointer names always holds its compaction's checkpoint: with
/// no segment left it is damage, refused even when every message was acked.
#[test]
fn a_compacted_journal_generation_with_no_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    a_compacted_queue_of_acked_messages(dir.path(), &clock);
    let generation = pointed_generation(dir.path()).unwrap();
    let journal = dir.path().join(format!("journal-{generation}"));
    let moved = dir.path().join("journal-segments-moved-away");
    move_segments(&journal, &moved);
    let opts = || options().compact_after(16).log_options(fast_log());
    let opened = WorkQueue::open_with_clock(dir.path(), opts(), clock.clone());
    assert_refused_at(&opened, &journal, |queue| {
        let redelivered = queue.try_receive().unwrap().map(|d| d.offset());
        format!("redelivering acked message {redelivered:?}")
    });
    assert_eq!(segment_files(&journal), 0, "nothing created");
    move_segments(&moved, &journal);
    let queue = WorkQueue::open_with_clock(dir.path(), opts(), clock.clone()).unwrap();
    assert_eq!(queue.stats().unsettled, 0);
    assert!(queue.try_receive().unwrap().is_none());
}

/// A first open that died after creating its log directories and before their first
/// segments left them empty with nothing ever written: that queue still opens, and works.
#[test]
fn a_queue_whose_first_open_died_before_its_first_segments_opens() {
    for empty in [
        &["messages", "journal-0", "dead"][..],
        &["journal-0", "dead"][..],
        &["messages"][..],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        // A queue nothing was sent to, its named log directories then emptied of segments.
        drop(durable(dir.path(), options(), &clock));
        for name in empty {
            let log = dir.path().join(name);
            move_segments(&log, &dir.path().join(format!("{name}-moved-away")));
        }
        let queue = durable(dir.path(), options(), &clock);
        assert_eq!(queue.stats().unsettled, 0, "{empty:?}");
        queue.send(b"after".to_vec()).unwrap();
        let delivery = queue.try_receive().unwrap().unwrap();
        assert_eq!(delivery.offset(), 0, "{empty:?}");
        queue.ack(&delivery).unwrap();
        drop(queue);
        let queue = durable(dir.path(), options(), &clock);
        assert!(queue.try_receive().unwrap().is_none(), "{empty:?}");
    }
}
