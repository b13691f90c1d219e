//! The work queue's async face (feature `tokio`): receives and sends that wait on
//! `tokio::sync::Notify` rather than blocking a thread.
#![cfg(all(feature = "tokio", not(infra_loom)))]

use std::future::{Future, poll_fn};
use std::io;
use std::path::Path;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::{Duration, Instant};

use infra_common::ManualClock;
use infra_common::sync::atomic::{AtomicBool, Ordering};
use infra_common::sync::{Arc, thread};
use infra_mqueue::log::{LogOptions, SimulatedStorage, Storage};
use infra_mqueue::queue::{Delivery, Message, QueueOptions, WorkQueue};

#[path = "support/counting_clock.rs"]
mod counting_clock;
#[path = "support/dying_disk.rs"]
mod dying_disk;
#[path = "support/failing_storage.rs"]
mod failing_storage;
#[path = "support/gated_disk.rs"]
mod gated_disk;
#[path = "support/hooked_disk.rs"]
mod hooked_disk;
#[path = "support/thread_recording_disk.rs"]
mod thread_recording_disk;

use counting_clock::CountingClock;
use dying_disk::DyingDisk;
use failing_storage::FailingDirSyncs;
use gated_disk::{Gate, GatedDisk};
use hooked_disk::{DiskHook, HookedDisk};
use thread_recording_disk::{Op, ThreadRecordingDisk};

fn queue(capacity: usize) -> Arc<WorkQueue> {
    let options = QueueOptions::default().capacity(capacity);
    Arc::new(WorkQueue::in_memory_with_clock(options, ManualClock::new()).unwrap())
}

#[tokio::test(flavor = "current_thread")]
async fn a_waiting_receive_wakes_when_another_task_sends() {
    let queue = queue(10);
    let consumer = {
        let queue = Arc::clone(&queue);
        tokio::spawn(async move { queue.receive_async().await.unwrap().payload().to_vec() })
    };
    // Let the consumer find the queue empty and wait.
    tokio::task::yield_now().await;
    queue.send_async("hello").await.unwrap();
    assert_eq!(consumer.await.unwrap(), b"hello");
}

#[tokio::test(flavor = "current_thread")]
async fn a_send_on_a_full_queue_waits_for_an_ack() {
    let queue = queue(1);
    queue.send_async("first").await.unwrap();
    let producer = {
        let queue = Arc::clone(&queue);
        tokio::spawn(async move { queue.send_async("second").await.unwrap().offset })
    };
    tokio::task::yield_now().await;
    assert_eq!(queue.stats().next_offset, 1, "the second send waits");
    let delivery = queue.receive_async().await.unwrap();
    queue.ack(&delivery).unwrap();
    assert_eq!(producer.await.unwrap(), 1);
}

/// A batch ack frees room for two messages: two of the three waiting senders go on, in the
/// order they came, and the third waits on.
#[tokio::test(flavor = "current_thread")]
async fn a_batch_ack_lets_on_as_many_waiting_senders_as_it_made_room_for() {
    let queue = queue(2);
    queue.send_many(["a", "b"]);
    let producers: Vec<_> = ["c", "d", "e"]
        .into_iter()
        .map(|payload| {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move { queue.send_async(payload).await.unwrap().offset })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(queue.stats().next_offset, 2, "the three sends wait");
    let batch = queue.try_receive_many(2).unwrap();
    for acked in queue.ack_many(batch.iter().map(Delivery::receipt)) {
        acked.unwrap();
    }
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        queue.stats().next_offset,
        4,
        "two sends took the room of two acks"
    );
    let finished: Vec<bool> = producers
        .iter()
        .map(tokio::task::JoinHandle::is_finished)
        .collect();
    assert_eq!(finished, [true, true, false], "the oldest two went on");
    let last = queue.try_receive_many(1).unwrap();
    queue.ack(&last[0]).unwrap();
    let mut offsets = Vec::new();
    for producer in producers {
        offsets.push(producer.await.unwrap());
    }
    assert_eq!(offsets, [2, 3, 4]);
}

/// Two messages sent at once wake two of the twenty waiting receivers, not all of them: each
/// woken receiver's look reads the clock, so the readings count the looks (a wake-up of every
/// waiter cost 36 more here).
#[tokio::test(flavor = "current_thread")]
async fn a_batch_send_wakes_as_many_waiting_receivers_as_it_brought_messages() {
    let clock = Arc::new(CountingClock::default());
    let queue = Arc::new(
        WorkQueue::in_memory_with_clock(QueueOptions::default(), Arc::clone(&clock)).unwrap(),
    );
    let consumers: Vec<_> = (0..20)
        .map(|_| {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move { queue.receive_async().await.unwrap().offset() })
        })
        .collect();
    tokio::task::yield_now().await;
    clock.take();
    queue.send_many(["a", "b"]);
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    let (readings, _) = clock.take();
    let received = consumers.iter().filter(|c| c.is_finished()).count();
    assert_eq!(received, 2);
    // One reading for the send, one for each receive; the gauges of `metrics` add one a look.
    let gauges = u64::from(cfg!(feature = "metrics"));
    assert!(readings <= 3 + 2 * gauges, "{readings} clock readings");
    for consumer in consumers {
        consumer.abort();
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_waiting_receive_picks_up_a_delayed_message_when_it_is_due() {
    let clock = ManualClock::new();
    let queue =
        Arc::new(WorkQueue::in_memory_with_clock(QueueOptions::default(), clock.clone()).unwrap());
    queue
        .send(Message::new(b"due".to_vec()).delay(Duration::from_secs(5)))
        .unwrap();
    let consumer = {
        let queue = Arc::clone(&queue);
        tokio::spawn(async move { queue.receive_async().await.unwrap().payload().to_vec() })
    };
    // The consumer finds nothing available and sleeps on a tokio timer until the delay ends
    // (paused time: the timer fires as soon as every task is idle, no real waiting).
    tokio::task::yield_now().await;
    clock.advance(Duration::from_secs(5));
    assert_eq!(consumer.await.unwrap(), b"due");
}

/// The wake-up for a delayed message goes to one waiting receiver; if its caller gives up on
/// it before the delay ends, the wake-up passes to another, which then waits for the message
/// (in paused time: the timers fire as soon as every task is idle, no real waiting).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_receive_dropped_after_its_wake_up_passes_it_on() {
    let clock = ManualClock::new();
    let queue =
        Arc::new(WorkQueue::in_memory_with_clock(QueueOptions::default(), clock.clone()).unwrap());
    let impatient = {
        let queue = Arc::clone(&queue);
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_millis(300), queue.receive_async()).await
        })
    };
    tokio::task::yield_now().await;
    let patient = {
        let queue = Arc::clone(&queue);
        tokio::spawn(async move { queue.receive_async().await.unwrap().payload().to_vec() })
    };
    tokio::task::yield_now().await;
    queue
        .send(Message::new(b"later".to_vec()).delay(Duration::from_millis(500)))
        .unwrap();
    // The impatient receiver, woken first, finds the message not yet due; its caller gives up.
    assert!(
        impatient.await.unwrap().is_err(),
        "the caller's timeout ends it"
    );
    clock.advance(Duration::from_millis(500));
    let received = tokio::time::timeout(Duration::from_secs(3600), patient).await;
    assert_eq!(
        received
            .expect("the patient receiver slept past the due time")
            .unwrap(),
        b"later"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_waiting_batch_receive_wakes_when_another_task_sends_and_takes_what_is_there() {
    let queue = queue(10);
    assert!(queue.receive_many_async(0).await.unwrap().is_empty());
    let consumer = {
        let queue = Arc::clone(&queue);
        tokio::spawn(async move {
            let batch = queue.receive_many_async(4).await.unwrap();
            batch
                .iter()
                .map(|d| d.payload().to_vec())
                .collect::<Vec<_>>()
        })
    };
    // Let the consumer find the queue empty and wait; both sends land before it runs again.
    tokio::task::yield_now().await;
    queue.send_async("one").await.unwrap();
    queue.send_async("two").await.unwrap();
    assert_eq!(consumer.await.unwrap(), [b"one".to_vec(), b"two".to_vec()]);
}

/// A durable queue (fsync `Always`) whose file syncs wait at the returned gate, open and
/// counting from after the open.
fn open_gated(disk: &SimulatedStorage, options: QueueOptions) -> (Arc<WorkQueue>, Arc<Gate>) {
    let (queue, gate) = open_gated_on(disk, options, &ManualClock::new());
    gate.reset();
    (Arc::new(queue), gate)
}

/// The queue in `/queue` on `disk`, on `clock`, whose file syncs wait at the returned gate
/// (counting from the open's own syncs).
fn open_gated_on(
    disk: &SimulatedStorage,
    options: QueueOptions,
    clock: &ManualClock,
) -> (WorkQueue, Arc<Gate>) {
    let (gated, gate) = GatedDisk::new(disk);
    let queue = WorkQueue::open_with(Path::new("/queue"), options, clock.clone(), gated).unwrap();
    (queue, gate)
}

/// Polls `future` once, with this task's waker.
async fn poll_once<F: Future + ?Sized>(mut future: Pin<&mut F>) -> Poll<F::Output> {
    poll_fn(move |cx| Poll::Ready(future.as_mut().poll(cx))).await
}

/// Runs `receive` as a task of this (current-thread) runtime with the file syncs held at
/// `gate`, then another task: returns whether that task ran while the first fsync was held,
/// and what the receive returned once the gate opened. A watcher thread opens the gate once
/// the other task ran, or after 5 s without: a receive whose fsync blocks the runtime's
/// thread keeps every other task from running until then.
async fn runs_beside_a_held_fsync<T: Send + 'static>(
    gate: &Arc<Gate>,
    receive: impl Future<Output = T> + Send + 'static,
) -> (bool, T) {
    let other_ran = Arc::new(AtomicBool::new(false));
    gate.set_closed(true);
    let watcher = thread::spawn({
        let (gate, other_ran) = (Arc::clone(gate), Arc::clone(&other_ran));
        move || {
            gate.wait_until(|arrived, _| arrived >= 1);
            let deadline = Instant::now() + Duration::from_secs(5);
            while !other_ran.load(Ordering::Acquire) && Instant::now() < deadline {
                thread::yield_now();
            }
            let ran = other_ran.load(Ordering::Acquire);
            gate.set_closed(false);
            ran
        }
    });
    let receive = tokio::spawn(receive);
    // The receive runs first, as far as its first fsync.
    tokio::task::yield_now().await;
    let other = tokio::spawn({
        let other_ran = Arc::clone(&other_ran);
        async move { other_ran.store(true, Ordering::Release) }
    });
    other.await.unwrap();
    let received = receive.await.unwrap();
    let ran = tokio::task::spawn_blocking(move || watcher.join().unwrap())
        .await
        .unwrap();
    (ran, received)
}

/// A durable receive's journal fsync runs on the blocking pool: while it is held, the only
/// runtime thread runs another task; the receive completes once the fsync does.
#[tokio::test(flavor = "current_thread")]
async fn a_durable_receives_journal_fsync_leaves_the_runtime_thread_free() {
    let disk = SimulatedStorage::new();
    let (queue, gate) = open_gated(&disk, QueueOptions::default());
    queue.send("job").unwrap();
    gate.reset();
    let receiver = Arc::clone(&queue);
    let (other_ran, received) =
        runs_beside_a_held_fsync(&gate, async move { receiver.receive_async().await }).await;
    assert!(
        other_ran,
        "another task ran while the receive's journal fsync was held: false"
    );
    let delivery = received.unwrap();
    assert_eq!((delivery.offset(), delivery.payload()), (0, &b"job"[..]));
    assert_eq!(gate.counts(), (1, 1), "one fsync, for the journal record");
    queue.ack(&delivery).unwrap();
}

/// The same for a receive that first moves a message to the dead-letter topic: the dead
/// letter's fsync and the journal's both run on the blocking pool, and the dead letter is
/// settled only after its own.
#[tokio::test(flavor = "current_thread")]
async fn a_durable_receives_dead_letter_fsync_leaves_the_runtime_thread_free() {
    let (queue, gate) = a_poison_message_on_its_last_delivery();
    let receiver = Arc::clone(&queue);
    let (other_ran, received) =
        runs_beside_a_held_fsync(&gate, async move { receiver.receive_async().await }).await;
    assert!(
        other_ran,
        "another task ran while the receive's dead-letter fsync was held: false"
    );
    assert_eq!(received.unwrap().payload(), b"fine");
    assert_eq!(
        gate.counts(),
        (2, 2),
        "the dead letter's fsync, then the journal's"
    );
    let dead = queue.dead_letters(0, 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].offset, dead[0].payload.as_ref()),
        (0, &b"poison"[..])
    );
    assert_eq!(queue.stats().dead_lettered, 1);
}

/// A gated durable queue allowing one delivery, holding `poison` (delivered once and nacked,
/// so the next receive dead-letters it) and then `fine`, with the gate's counts reset.
fn a_poison_message_on_its_last_delivery() -> (Arc<WorkQueue>, Arc<Gate>) {
    let disk = SimulatedStorage::new();
    let (queue, gate) = open_gated(&disk, QueueOptions::default().max_deliveries(1));
    queue.send("poison").unwrap();
    queue.send("fine").unwrap();
    let poison = queue.try_receive().unwrap().unwrap();
    queue.nack(&poison, Duration::ZERO).unwrap();
    gate.reset();
    (queue, gate)
}

/// A receive future of the queue, pinned where a test can poll it again.
type PendingReceive<'q> = Pin<Box<dyn Future<Output = Result<Delivery, infra_mqueue::Error>> + 'q>>;

/// With `gate` closed: a first receive, pending at the gate's first sync (`first_waits`); then,
/// its lease run out (31 s on `clock`), a second receive of the same message, pending as
/// `second_waits` says. Both receives, to be polled or dropped.
async fn two_receives_a_lease_apart<'q>(
    queue: &'q WorkQueue,
    gate: &Arc<Gate>,
    clock: &ManualClock,
    first_waits: &str,
    second_waits: &str,
) -> (PendingReceive<'q>, PendingReceive<'q>) {
    let mut first: PendingReceive<'q> = Box::pin(queue.receive_async());
    assert!(
        poll_once(first.as_mut()).await.is_pending(),
        "{first_waits}"
    );
    arrivals(gate, 1).await;
    clock.advance(Duration::from_secs(31));
    let mut second: PendingReceive<'q> = Box::pin(queue.receive_async());
    assert!(
        poll_once(second.as_mut()).await.is_pending(),
        "{second_waits}"
    );
    (first, second)
}

/// Waits (off the runtime's thread) until `arrived` syncs have reached the closed `gate`.
async fn arrivals(gate: &Arc<Gate>, arrived: u64) {
    let held = Arc::clone(gate);
    tokio::task::spawn_blocking(move || held.wait_until(|now, _| now == arrived))
        .await
        .unwrap();
}

/// Opens the queue in `/queue` on `disk` again (the one dropped before it waited for the work
/// it left on the blocking pool, so the directory is free).
fn reopen(disk: &SimulatedStorage, options: &QueueOptions) -> WorkQueue {
    WorkQueue::open_with(
        Path::new("/queue"),
        options.clone(),
        ManualClock::new(),
        disk.clone(),
    )
    .unwrap()
}

/// Polls a receive with the file syncs held at `gate` until its first fsync (`waits_for`)
/// arrives there, then drops it, the gate still closed.
async fn drop_a_receive_at_its_held_fsync(queue: &WorkQueue, gate: &Arc<Gate>, waits_for: &str) {
    gate.set_closed(true);
    let mut receive = pin!(queue.receive_async());
    assert!(
        poll_once(receive.as_mut()).await.is_pending(),
        "the receive waits for {waits_for}"
    );
    arrivals(gate, 1).await;
}

/// A receive future dropped while its journal fsync is held hands nothing out and holds
/// nothing: its message is available again at once, with no time passing on the queue's
/// clock, as the same attempt (the delivery its caller never got is not counted).
#[tokio::test(flavor = "current_thread")]
async fn a_receive_dropped_during_its_fsync_gives_its_message_back_at_once() {
    let disk = SimulatedStorage::new();
    let (queue, gate) = open_gated(&disk, QueueOptions::default());
    queue.send("job").unwrap();
    gate.reset();
    drop_a_receive_at_its_held_fsync(&queue, &gate, "its journal fsync").await;
    let stats = queue.stats();
    assert_eq!(
        (stats.in_flight, stats.unsettled),
        (0, 1),
        "the dropped receive holds no lease"
    );
    gate.set_closed(false);
    let again = queue
        .try_receive()
        .unwrap()
        .expect("available again at once");
    assert_eq!(
        (again.offset(), again.attempt(), again.payload()),
        (0, 1, &b"job"[..])
    );
    queue.ack(&again).unwrap();
    assert_eq!(queue.stats().unsettled, 0);
}

/// A receive future dropped after its journal record was written is not counted after a
/// restart either: the reopened queue delivers the message as the attempt it would have had
/// had the dropped receive never happened, and (with `max_deliveries(1)`) does not move it to
/// the dead-letter topic for a delivery no one got.
#[tokio::test(flavor = "current_thread")]
async fn a_receive_dropped_after_its_journal_record_is_not_counted_after_a_restart() {
    let options = || QueueOptions::default().max_deliveries(1);
    let disk = SimulatedStorage::new();
    let (queue, gate) = open_gated(&disk, options());
    queue.send("job").unwrap();
    gate.reset();
    drop_a_receive_at_its_held_fsync(&queue, &gate, "its journal fsync").await;
    gate.set_closed(false);
    drop(queue);
    let queue =
        WorkQueue::open_with(Path::new("/queue"), options(), ManualClock::new(), disk).unwrap();
    let again = queue.try_receive().unwrap();
    assert_eq!(
        again.map(|delivery| (delivery.offset(), delivery.attempt())),
        Some((0, 1)),
        "delivered as its first attempt, not dead-lettered"
    );
    assert_eq!(queue.stats().dead_lettered, 0);
}

/// The same when the journal's segment is full, so that the record withdrawing the delivery
/// cannot be written where the receive is dropped (a roll must come first, and the dropping
/// thread may be a runtime's): the queue's drop writes it, or else (`then_ack`) the next
/// journal record's write does, ahead of its own record and made durable with it, so that it
/// survives even a power cut.
#[tokio::test(flavor = "current_thread")]
async fn a_withdrawal_that_must_wait_for_a_roll_is_written_later() {
    for then_ack in [false, true] {
        let options = || {
            QueueOptions::default()
                .max_deliveries(1)
                .log_options(LogOptions {
                    // Two receives' journal records per segment (40 bytes of header, 25
                    // bytes a record), and no third.
                    segment_bytes: 90,
                    ..LogOptions::default()
                })
        };
        let disk = SimulatedStorage::new();
        let (queue, gate) = open_gated(&disk, options());
        queue.send("first").unwrap();
        queue.send("job").unwrap();
        let first = queue.try_receive().unwrap().unwrap();
        gate.reset();
        drop_a_receive_at_its_held_fsync(&queue, &gate, "its journal fsync").await;
        gate.set_closed(false);
        if then_ack {
            queue.ack(&first).unwrap();
        }
        drop(queue);
        if then_ack {
            disk.power_cut();
        }
        let queue = WorkQueue::open_with(
            Path::new("/queue"),
            options(),
            ManualClock::new(),
            disk.clone(),
        )
        .unwrap();
        let next = if then_ack {
            queue.try_receive().unwrap()
        } else {
            // The first message's lease runs out: it is dead-lettered, then the job comes.
            queue
                .try_receive()
                .unwrap()
                .filter(|delivery| delivery.offset() == 1)
        };
        assert_eq!(
            next.map(|delivery| (delivery.offset(), delivery.attempt())),
            Some((1, 1)),
            "then_ack: {then_ack}"
        );
    }
}

/// The same withdrawal left to the queue's drop, then a power cut after the queue was closed:
/// under `FsyncPolicy::Always` the drop makes what it wrote durable, so the dropped receive's
/// delivery is not counted after the restart (with one delivery allowed, counting it would
/// dead-letter a message no consumer ever got).
#[tokio::test(flavor = "current_thread")]
async fn a_withdrawal_left_to_the_queues_drop_survives_a_power_cut() {
    let options = || {
        QueueOptions::default()
            .max_deliveries(1)
            .log_options(LogOptions {
                // Two receives' journal records per segment, and no third.
                segment_bytes: 90,
                ..LogOptions::default()
            })
    };
    let disk = SimulatedStorage::new();
    let (queue, gate) = open_gated(&disk, options());
    queue.send("first").unwrap();
    queue.send("job").unwrap();
    let _first = queue.try_receive().unwrap().unwrap();
    gate.reset();
    let synced = disk.file_syncs();
    drop_a_receive_at_its_held_fsync(&queue, &gate, "its journal fsync").await;
    gate.set_closed(false);
    // The dropped receive's journal record is durable once its held fsync ends.
    file_synced_since(&disk, synced).await;
    // The first message's lease was never given back: it is dead-lettered, then the job comes.
    assert_eq!(
        next_after_a_power_cut(queue, &disk, &options()),
        (Some((1, 1)), 1),
        "the job comes as its first attempt; only the first message is dead-lettered"
    );
}

/// A receive dropped once its journal record is durable, its withdrawal written at once (into
/// the page cache), then the queue closed and a power cut: under `FsyncPolicy::Always` the
/// queue's drop makes the journal durable, so the delivery no caller got is not counted after
/// the restart (with one delivery allowed, it would dead-letter the message).
#[tokio::test(flavor = "current_thread")]
async fn a_withdrawal_written_at_once_survives_a_power_cut_after_the_queues_drop() {
    let options = QueueOptions::default().max_deliveries(1);
    let disk = SimulatedStorage::new();
    let (queue, gate) = open_gated(&disk, options.clone());
    queue.send("job").unwrap();
    gate.reset();
    let synced = disk.file_syncs();
    gate.set_closed(true);
    {
        let mut receive = pin!(queue.receive_async());
        assert!(
            poll_once(receive.as_mut()).await.is_pending(),
            "the receive waits for its journal fsync"
        );
        arrivals(&gate, 1).await;
        gate.set_closed(false);
        file_synced_since(&disk, synced).await;
        // Dropped here, its record durable and its caller never reached.
    }
    assert_eq!(
        next_after_a_power_cut(queue, &disk, &options),
        (Some((0, 1)), 0),
        "the job comes as its first attempt, not dead-lettered"
    );
}

/// Waits, off the runtime's thread, until `disk` has made a file durable since it counted
/// `synced` file syncs.
async fn file_synced_since(disk: &SimulatedStorage, synced: u64) {
    let watched = disk.clone();
    tokio::task::spawn_blocking(move || {
        while watched.file_syncs() == synced {
            thread::yield_now();
        }
    })
    .await
    .unwrap();
}

/// Drops the queue, cuts the power and reopens: the next delivery's offset and attempt, and
/// how many messages were dead-lettered.
fn next_after_a_power_cut(
    queue: Arc<WorkQueue>,
    disk: &SimulatedStorage,
    options: &QueueOptions,
) -> (Option<(u64, u32)>, u64) {
    drop(queue);
    disk.power_cut();
    first_handout_after_a_restart(disk, options)
}

/// Options whose journal holds one receive's record per segment (40 bytes of header, 25
/// bytes a record): a second record needs a roll.
fn one_journal_record_a_segment() -> QueueOptions {
    QueueOptions::default().log_options(LogOptions {
        segment_bytes: 65,
        ..LogOptions::default()
    })
}

/// Reopens the queue on `disk`: its two messages come back as their first attempts, neither
/// dead-lettered (the deliveries dropped before were not counted).
fn assert_both_come_back_as_first_attempts(disk: &SimulatedStorage, options: &QueueOptions) {
    let queue = reopen(disk, options);
    let received: Vec<(u64, u32)> = queue
        .try_receive_many(2)
        .unwrap()
        .iter()
        .map(|delivery| (delivery.offset(), delivery.attempt()))
        .collect();
    assert_eq!(
        (received, queue.stats().dead_lettered),
        (vec![(0, 1), (1, 1)], 0),
        "both delivered as their first attempt, none dead-lettered"
    );
}

/// [`one_journal_record_a_segment`] with one delivery allowed, as the batch receive tests use.
fn batch_options() -> QueueOptions {
    one_journal_record_a_segment().max_deliveries(1)
}

/// A gated queue of two messages whose batch receive of both was dropped while the roll its
/// second journal record needed was held at the gate; the gate opened before the drop if
/// `let_the_roll_go` (the drop then waits for the log's lock while the roll holds it).
async fn a_batch_receive_dropped_at_its_journal_roll(
    let_the_roll_go: bool,
) -> (SimulatedStorage, Arc<WorkQueue>, Arc<Gate>) {
    let disk = SimulatedStorage::new();
    let (queue, gate) = open_gated(&disk, batch_options());
    queue.send("first").unwrap();
    queue.send("second").unwrap();
    gate.reset();
    gate.set_closed(true);
    {
        let mut receive = pin!(queue.receive_many_async(2));
        assert!(
            poll_once(receive.as_mut()).await.is_pending(),
            "the receive waits for the roll's fsync of the full journal segment"
        );
        arrivals(&gate, 1).await;
        if let_the_roll_go {
            gate.set_closed(false);
        }
    }
    (disk, queue, gate)
}

/// A batch receive whose journal records are split by a segment roll, dropped while the roll
/// runs on the blocking pool: the records written before the roll are withdrawn like a
/// whole batch's, so a restart counts neither delivery, and with `max_deliveries(1)` delivers
/// both messages instead of dead-lettering the first.
#[tokio::test(flavor = "current_thread")]
async fn a_batch_receive_dropped_during_its_journal_roll_is_not_counted_after_a_restart() {
    let (disk, queue, _) = a_batch_receive_dropped_at_its_journal_roll(true).await;
    drop(queue);
    assert_both_come_back_as_first_attempts(&disk, &batch_options());
}

/// Checks that a receive was dropped while the gate held `work` (the gate met once, nothing
/// passed), with `leases` (in flight, unsettled) left, then opens the gate.
fn receive_dropped_while_held(queue: &WorkQueue, gate: &Gate, work: &str, leases: (usize, usize)) {
    assert_eq!(
        gate.counts(),
        (1, 0),
        "the receive was dropped while the {work} was held"
    );
    let stats = queue.stats();
    assert_eq!((stats.in_flight, stats.unsettled), leases);
    gate.set_closed(false);
}

/// The same batch receive dropped while its journal roll is still held on the blocking pool:
/// the drop, on the runtime's thread, does not wait for the roll, which holds the journal
/// log's lock (the withdrawal of the record written before the roll is left to the next
/// journal write, here the queue's drop); the message is available again at once, and a
/// restart counts neither delivery.
#[tokio::test(flavor = "current_thread")]
async fn a_batch_receive_dropped_while_its_journal_roll_is_held_does_not_wait_for_it() {
    let (disk, queue, gate) = a_batch_receive_dropped_at_its_journal_roll(false).await;
    receive_dropped_while_held(&queue, &gate, "roll", (0, 2));
    drop(queue);
    assert_both_come_back_as_first_attempts(&disk, &batch_options());
}

/// Two async receives of one message dropped at their journal fsync, the second having taken
/// over the first one's lease once it ran out, the second dropped first: it gives the lease
/// back to the first, the first gives the message back, and a restart counts neither delivery
/// (the message comes as its first attempt, not its second).
#[tokio::test(flavor = "current_thread")]
async fn a_dropped_receive_that_took_over_a_dropped_receives_lease_is_not_counted_after_a_restart()
{
    drop_two_receives_of_one_lease(DropFirst::TheSecond).await;
}

/// The same two receives dropped the other way round: the first, dropped while the second
/// holds the lease it took over, cannot give the message back then; the second, dropped
/// next, gives back both deliveries rather than handing the first one's lease back to a
/// receive that is gone (where the next receive would take it over as a second attempt,
/// counting a delivery no one got); a restart agrees.
#[tokio::test(flavor = "current_thread")]
async fn a_receive_dropped_while_another_holds_the_lease_it_took_over_is_not_counted() {
    drop_two_receives_of_one_lease(DropFirst::TheFirst).await;
}

/// Which of two receives of one lease is dropped first.
#[derive(Clone, Copy, Debug)]
enum DropFirst {
    TheFirst,
    TheSecond,
}

/// A first receive waits at its journal fsync until its lease runs out; a second takes the
/// lease over and waits at the same fsync; both are dropped, in `order`. Neither delivery
/// counts, in memory or after a restart.
async fn drop_two_receives_of_one_lease(order: DropFirst) {
    let options = || QueueOptions::default().max_deliveries(2);
    let disk = SimulatedStorage::new();
    let clock = ManualClock::new();
    let (queue, gate) = open_gated_on(&disk, options(), &clock);
    queue.send("job").unwrap();
    gate.reset();
    gate.set_closed(true);
    let (first, second) = two_receives_a_lease_apart(
        &queue,
        &gate,
        &clock,
        "the first receive waits for its journal fsync",
        "the second receive, of the job's second attempt, waits for the same fsync",
    )
    .await;
    match order {
        DropFirst::TheFirst => {
            drop(first);
            drop(second);
        }
        DropFirst::TheSecond => {
            drop(second);
            drop(first);
        }
    }
    gate.set_closed(false);
    let stats = queue.stats();
    assert_eq!(
        (stats.in_flight, stats.delivered),
        (0, 0),
        "{order:?} dropped first: both deliveries taken back"
    );
    drop(queue);
    let queue = reopen(&disk, &options());
    let again = queue.try_receive().unwrap();
    assert_eq!(
        again.map(|delivery| (delivery.offset(), delivery.attempt())),
        Some((0, 1)),
        "{order:?} dropped first: neither dropped delivery is counted after a restart"
    );
}

/// The same pair of receives when the second dead-letters the message instead (its first
/// delivery was its last): the first, dropped while the dead letter waits for its fsync, is
/// given back with the dead letter when the second is dropped too. The message is then leased
/// by no one and not dead-lettered on the strength of the first delivery, which no caller got,
/// neither in memory nor after a restart.
#[tokio::test(flavor = "current_thread")]
async fn a_receive_dropped_while_a_dead_letter_holds_the_lease_it_took_over_is_not_counted() {
    let options = || QueueOptions::default().max_deliveries(1);
    let disk = SimulatedStorage::new();
    let clock = ManualClock::new();
    let (queue, gate) = open_gated_on(&disk, options(), &clock);
    queue.send("job").unwrap();
    gate.reset();
    gate.set_closed(true);
    let (first, second) = two_receives_a_lease_apart(
        &queue,
        &gate,
        &clock,
        "the first receive waits for its journal fsync",
        "the second receive waits for the fsync of the job's dead letter",
    )
    .await;
    arrivals(&gate, 2).await;
    drop(first);
    drop(second);
    gate.set_closed(false);
    let stats = queue.stats();
    assert_eq!(
        (stats.in_flight, stats.delivered, stats.dead_lettered),
        (0, 0, 0),
        "both handouts taken back"
    );
    drop(queue);
    assert_eq!(
        first_handout_after_a_restart(&disk, &options()),
        (Some((0, 1)), 0),
        "the dropped delivery is not counted after a restart"
    );
}

/// Sends `fillers` one-byte messages, then `poison` and `job`, and receives the fillers,
/// acking all but the last (held by the caller): the fillers' deliveries.
fn fillers_then_poison_and_job(queue: &WorkQueue, fillers: u8) -> Vec<Delivery> {
    for filler in 0..fillers {
        queue.send(vec![filler]).unwrap();
    }
    queue.send("poison").unwrap();
    queue.send("job").unwrap();
    let received: Vec<Delivery> = (0..fillers)
        .map(|_| queue.try_receive().unwrap().unwrap())
        .collect();
    for filler in &received[..received.len() - 1] {
        queue.ack(filler).unwrap();
    }
    received
}

/// Reopens the queue on `disk` (once the dropped one's blocking-pool work let go of it) and
/// receives: the offset and attempt delivered, if any, and the messages dead-lettered.
fn first_handout_after_a_restart(
    disk: &SimulatedStorage,
    options: &QueueOptions,
) -> (Option<(u64, u32)>, u64) {
    let queue = reopen(disk, options);
    let delivered = queue.try_receive().unwrap();
    (
        delivered.map(|delivery| (delivery.offset(), delivery.attempt())),
        queue.stats().dead_lettered,
    )
}

/// Holds every file sync at a gate, and fails those of the dead-letter log once set to.
#[derive(Debug, Default)]
struct FailingDeadLetterSyncs {
    gate: Arc<Gate>,
    failing: AtomicBool,
}

impl DiskHook for FailingDeadLetterSyncs {
    fn file_sync(&self, path: &Path) -> io::Result<()> {
        self.gate.pass()?;
        if self.failing.load(Ordering::Acquire) && path.starts_with("/queue/dead") {
            return Err(io::Error::other("the dead-letter log's sync failed"));
        }
        Ok(())
    }
}

/// The same pair of receives when the dead letter's fsync fails after the first receive was
/// dropped: the second gives the dead letter back, and with it the first delivery, withdrawn
/// in the journal, rather than the expired lease of a receive that is gone.
#[tokio::test(flavor = "current_thread")]
async fn a_failed_dead_letter_gives_back_the_dropped_receive_whose_lease_it_took_over() {
    let options = || QueueOptions::default().max_deliveries(1);
    let disk = SimulatedStorage::new();
    let clock = ManualClock::new();
    let hook = Arc::new(FailingDeadLetterSyncs::default());
    let hooked = HookedDisk::with_hook(&disk, Arc::clone(&hook));
    let queue =
        WorkQueue::open_with(Path::new("/queue"), options(), clock.clone(), hooked).unwrap();
    queue.send("job").unwrap();
    let gate = Arc::clone(&hook.gate);
    gate.reset();
    gate.set_closed(true);
    hook.failing.store(true, Ordering::Release);
    let (first, second) = two_receives_a_lease_apart(
        &queue,
        &gate,
        &clock,
        "the first receive waits for its journal fsync",
        "the second receive waits for the fsync of the job's dead letter",
    )
    .await;
    arrivals(&gate, 2).await;
    drop(first);
    gate.set_closed(false);
    let failed = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .expect("the second receive ends once its fsync fails");
    assert!(
        matches!(failed, Err(infra_mqueue::Error::Io { .. })),
        "the dead letter's failed fsync is the receive's error: {failed:?}"
    );
    let stats = queue.stats();
    assert_eq!(
        (stats.in_flight, stats.delivered, stats.dead_lettered),
        (0, 0, 0),
        "the dead letter and the delivery whose lease it took over are given back"
    );
    drop(queue);
    assert_eq!(
        first_handout_after_a_restart(&disk, &options()),
        (Some((0, 1)), 0),
        "the dropped delivery is not counted after a restart"
    );
}

/// A receive dropped before its delivery's record was written, while a dead letter holds the
/// lease it had: a compaction before the dead letter is given back does not count that
/// delivery in its checkpoint (no `Withdrawn` record will follow to take it back), so the
/// restart delivers the message instead of dead-lettering it.
#[tokio::test(flavor = "current_thread")]
async fn a_compaction_does_not_count_an_unjournaled_delivery_whose_lease_a_dead_letter_holds() {
    let options = || QueueOptions::default().max_deliveries(1).compact_after(16);
    let disk = SimulatedStorage::new();
    let clock = ManualClock::new();
    let (queue, gate) = open_gated_on(&disk, options(), &clock);
    let fillers = fillers_then_poison_and_job(&queue, 7);
    let poison = queue.try_receive().unwrap().unwrap();
    // Its last delivery given back: the next receive dead-letters it. 15 journal records.
    queue.nack(&poison, Duration::ZERO).unwrap();
    // Held past the job's lease, which runs out below.
    queue.extend(&fillers[6], Duration::from_secs(60)).unwrap();
    gate.reset();
    gate.set_closed(true);
    let (first, second) = two_receives_a_lease_apart(
        &queue,
        &gate,
        &clock,
        "the first receive waits for the poison's dead letter's fsync, the job leased",
        "the second receive waits for the fsync of the job's dead letter",
    )
    .await;
    drop(first);
    gate.set_closed(false);
    // The 16th record: its write compacts the journal, while the job's first delivery, never
    // journaled, waits behind the dead letter that took its lease over.
    queue.ack(&fillers[6]).unwrap();
    let names = disk.list(Path::new("/queue")).unwrap();
    assert!(
        names.contains(&"journal-1".to_owned()),
        "compacted: {names:?}"
    );
    drop(second);
    assert_eq!(queue.stats().in_flight, 0, "nothing held");
    drop(queue);
    assert_eq!(
        first_handout_after_a_restart(&disk, &options()),
        (Some((8, 1)), 1),
        "the poison dead-lettered again, the job delivered as its first attempt"
    );
}

/// A compaction whose checkpoint is taken while an async receive has leased a message but not
/// yet written its journal record (it waits for a dead letter's fsync first) does not count
/// that delivery in the checkpoint as well as in the record: when the receive is then dropped
/// at its journal fsync, the restart does not count the delivery, and with
/// `max_deliveries(1)` delivers the message instead of dead-lettering it.
#[tokio::test(flavor = "current_thread")]
async fn a_compaction_during_a_receive_does_not_count_its_withdrawn_delivery() {
    let options = || QueueOptions::default().max_deliveries(1).compact_after(16);
    let disk = SimulatedStorage::new();
    let (queue, gate) = open_gated(&disk, options());
    let fillers = fillers_then_poison_and_job(&queue, 7);
    let poison = queue.try_receive().unwrap().unwrap();
    // Its last delivery given back: the next receive dead-letters it. 15 journal records.
    queue.nack(&poison, Duration::ZERO).unwrap();
    gate.reset();
    gate.set_closed(true);
    let mut receive = Box::pin(queue.receive_async());
    assert!(
        poll_once(receive.as_mut()).await.is_pending(),
        "the receive waits for the dead letter's fsync, the job leased"
    );
    arrivals(&gate, 1).await;
    gate.set_closed(false);
    // The 16th record: its write compacts the journal, while the job's delivery is leased and
    // not journaled.
    queue.ack(&fillers[6]).unwrap();
    let names = disk.list(Path::new("/queue")).unwrap();
    assert!(
        names.contains(&"journal-1".to_owned()),
        "compacted: {names:?}"
    );
    while queue.dead_letters(0, 10).unwrap().is_empty() {
        // The dead letter's fsync, let through, ends on the pool.
        thread::yield_now();
    }
    let arrived = gate.counts().0;
    gate.set_closed(true);
    assert!(
        poll_once(receive.as_mut()).await.is_pending(),
        "the receive waits for its journal record's fsync"
    );
    let held = Arc::clone(&gate);
    tokio::task::spawn_blocking(move || held.wait_until(|now, _| now == arrived + 1))
        .await
        .unwrap();
    drop(receive);
    gate.set_closed(false);
    drop(queue);
    let queue =
        WorkQueue::open_with(Path::new("/queue"), options(), ManualClock::new(), disk).unwrap();
    let again = queue.try_receive().unwrap();
    assert_eq!(
        again.map(|delivery| (
            delivery.offset(),
            delivery.attempt(),
            delivery.into_payload()
        )),
        Some((8, 1, "job".into())),
        "the job's dropped delivery is not counted"
    );
}

/// The same across a journal compaction made between the dropped receive and the restart (by
/// the 16th journal record, an ack of another message): the compaction folds the withdrawn
/// delivery away with the one it withdraws, and a later delivery of the message counts as
/// before.
#[tokio::test(flavor = "current_thread")]
async fn a_dropped_receives_delivery_stays_uncounted_across_a_compaction() {
    let options = || QueueOptions::default().max_deliveries(2).compact_after(16);
    let disk = SimulatedStorage::new();
    let (queue, gate) = open_gated(&disk, options());
    for job in 0..8u8 {
        queue.send(vec![job]).unwrap();
    }
    let held: Vec<Delivery> = (0..7)
        .map(|_| queue.try_receive().unwrap().unwrap())
        .collect();
    gate.reset();
    drop_a_receive_at_its_held_fsync(&queue, &gate, "its journal fsync").await;
    gate.set_closed(false);
    for delivery in &held {
        queue.ack(delivery).unwrap();
    }
    let last = queue.try_receive().unwrap().expect("given back at once");
    assert_eq!((last.offset(), last.attempt()), (7, 1));
    drop(queue);
    let names = disk.list(Path::new("/queue")).unwrap();
    assert!(
        names.contains(&"journal-1".to_owned()),
        "compacted: {names:?}"
    );
    let queue =
        WorkQueue::open_with(Path::new("/queue"), options(), ManualClock::new(), disk).unwrap();
    let again = queue.try_receive().unwrap();
    assert_eq!(
        again.map(|delivery| (delivery.offset(), delivery.attempt())),
        Some((7, 2)),
        "the delivery that reached its caller counts, the dropped one does not"
    );
}

/// A receive future dropped while its dead letter's fsync is held settles nothing: the message
/// stays unsettled, and a later receive dead-letters it (writing it to the topic again) and
/// goes on to the next message.
#[tokio::test(flavor = "current_thread")]
async fn a_receive_dropped_during_its_dead_letter_fsync_leaves_the_message_to_a_later_one() {
    let (queue, gate) = a_poison_message_on_its_last_delivery();
    drop_a_receive_at_its_held_fsync(&queue, &gate, "the dead letter's fsync").await;
    let stats = queue.stats();
    assert_eq!(
        (stats.unsettled, stats.in_flight, stats.dead_lettered),
        (2, 0, 0),
        "nothing settled, nothing held"
    );
    gate.set_closed(false);
    let next = queue.try_receive().unwrap().expect("the next message");
    assert_eq!(next.payload(), b"fine");
    assert_eq!(queue.stats().dead_lettered, 1);
    let dead: Vec<u64> = queue
        .dead_letters(0, 10)
        .unwrap()
        .iter()
        .map(|letter| letter.offset)
        .collect();
    assert_eq!(
        dead,
        [0, 0],
        "written by the dropped receive and by the later one"
    );
}

/// On a current-thread runtime the tasks run on the test's own thread and the blocking pool on
/// others: a durable queue's async sends and receives, through the journal compactions the
/// receives make due, leave every file sync, directory sync and rename to the pool. (The
/// segments are large enough that no log rolls: the next test rolls them.)
#[tokio::test(flavor = "current_thread")]
async fn async_sends_and_receives_leave_every_sync_and_rename_to_the_blocking_pool() {
    let disk = SimulatedStorage::new();
    let (recording, recorder) = ThreadRecordingDisk::new(&disk);
    let options = QueueOptions::default().compact_after(16);
    let queue =
        WorkQueue::open_with(Path::new("/queue"), options, ManualClock::new(), recording).unwrap();
    recorder.clear();
    for job in 0..40u32 {
        queue.send_async(job.to_le_bytes().to_vec()).await.unwrap();
    }
    for job in 0..40u32 {
        let delivery = queue.receive_async().await.unwrap();
        assert_eq!(delivery.payload(), job.to_le_bytes());
    }
    let ops = recorder.ops_off_this_thread();
    let compactions = ops
        .iter()
        .filter(|op| op.op == Op::Rename && op.path.ends_with("JOURNAL"))
        .count();
    assert_eq!(compactions, 2, "the receives compacted the journal twice");
}

/// With segments of a few records, async sends roll the message log, and async receives the
/// journal and (moving expired messages to the dead-letter topic) the dead-letter log: each
/// roll (the finished segment's fsync, the new segment's creation, the directory's fsync)
/// runs on the blocking pool, in that order, before the write that needed it; and a power cut
/// afterwards takes nothing any of them acknowledged.
#[tokio::test(flavor = "current_thread")]
async fn async_sends_and_receives_roll_segments_on_the_blocking_pool() {
    let disk = SimulatedStorage::new();
    let (recording, recorder) = ThreadRecordingDisk::new(&disk);
    let clock = ManualClock::new();
    let log = LogOptions {
        segment_bytes: 256,
        ..LogOptions::default()
    };
    let options = QueueOptions::default()
        .log_options(log)
        .max_deliveries(1)
        .visibility_timeout(Duration::from_secs(1));
    let queue = WorkQueue::open_with(
        Path::new("/queue"),
        options.clone(),
        clock.clone(),
        recording,
    )
    .unwrap();
    recorder.clear();
    for job in 0..40u32 {
        queue.send_async(job.to_le_bytes().to_vec()).await.unwrap();
    }
    for job in 0..40u32 {
        let delivery = queue.receive_async().await.unwrap();
        assert_eq!(delivery.payload(), job.to_le_bytes());
    }
    // Every lease runs out: the next receive moves all 40 to the dead-letter topic.
    clock.advance(Duration::from_secs(2));
    queue
        .send_async(40u32.to_le_bytes().to_vec())
        .await
        .unwrap();
    let last = queue.receive_async().await.unwrap();
    assert_eq!(last.payload(), 40u32.to_le_bytes());
    assert_eq!(queue.stats().dead_lettered, 40);
    let ops = recorder.ops_off_this_thread();
    for dir in ["/queue/messages", "/queue/journal-0", "/queue/dead"] {
        let dir = Path::new(dir);
        let created: Vec<usize> = ops
            .iter()
            .enumerate()
            .filter(|(_, op)| op.op == Op::Create && op.path.parent() == Some(dir))
            .map(|(at, _)| at)
            .collect();
        assert!(created.len() >= 2, "{dir:?} rolled: {ops:?}");
        for at in created {
            assert!(
                ops[..at]
                    .iter()
                    .rev()
                    .find(|op| op.path.parent() == Some(dir))
                    .is_some_and(|op| op.op == Op::FileSync),
                "the finished segment was synced before the new one was created: {ops:?}"
            );
            assert!(
                ops[at + 1..]
                    .iter()
                    .find(|op| op.op == Op::DirSync)
                    .is_some_and(|op| op.path == dir),
                "the directory was synced after the new segment was created: {ops:?}"
            );
        }
    }
    drop(queue);
    disk.power_cut();
    let queue = WorkQueue::open_with(Path::new("/queue"), options, clock, disk).unwrap();
    assert_eq!(
        queue.stats().next_offset,
        41,
        "every send survived the power cut"
    );
    let dead: Vec<u64> = queue
        .dead_letters(0, 100)
        .unwrap()
        .iter()
        .map(|dead| dead.offset)
        .collect();
    assert_eq!(dead, (0..40).collect::<Vec<u64>>(), "every dead letter too");
}

/// A process whose disk dies at each of its changes in turn while async sends and receives
/// (and acks) fill every log of a queue with 256-byte segments, rolling them on the blocking
/// pool, then a power cut keeping part of what was not synced: the queue reopens (no log is
/// `Corrupt`), every send that returned is delivered after it unless its ack returned, and
/// no acked message is delivered again. (An ack that failed may or may not have settled its
/// message.)
#[test]
fn a_power_cut_at_any_point_of_async_sends_and_receives_that_roll_loses_nothing_acknowledged() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let options = || {
        QueueOptions::default().log_options(LogOptions {
            segment_bytes: 256,
            ..LogOptions::default()
        })
    };
    let mut completed = false;
    for budget in 0..3000u64 {
        let disk = SimulatedStorage::new();
        let dying = DyingDisk::new(&disk, budget);
        let Ok(queue) =
            WorkQueue::open_with(Path::new("/queue"), options(), ManualClock::new(), dying)
        else {
            continue;
        };
        let (sent, acked, ack_failed) = runtime.block_on(async {
            let (mut sent, mut acked, mut ack_failed) = (Vec::new(), Vec::new(), None);
            for job in 0..12u8 {
                match queue.send_async(vec![job; 20]).await {
                    Ok(done) => sent.push(done.offset),
                    Err(_) => break,
                }
            }
            for _ in 0..sent.len() {
                let Ok(delivery) = queue.receive_async().await else {
                    break;
                };
                if queue.ack(&delivery).is_err() {
                    ack_failed = Some(delivery.offset());
                    break;
                }
                acked.push(delivery.offset());
            }
            (sent, acked, ack_failed)
        });
        completed = acked.len() == 12;
        drop(queue);
        disk.power_cut_keeping(usize::try_from(budget * 37 % 100).unwrap());
        let queue = WorkQueue::open_with(
            Path::new("/queue"),
            options(),
            ManualClock::new(),
            disk.clone(),
        )
        .unwrap_or_else(|error| panic!("budget {budget}: the queue did not reopen: {error}"));
        let mut delivered = Vec::new();
        while let Some(delivery) = queue.try_receive().unwrap() {
            delivered.push(delivery.offset());
            queue.ack(&delivery).unwrap();
        }
        for offset in sent.iter().filter(|&&offset| Some(offset) != ack_failed) {
            assert_eq!(
                delivered.contains(offset),
                !acked.contains(offset),
                "budget {budget}: offset {offset} (sent {sent:?}, acked {acked:?}, \
                 delivered after the cut {delivered:?})"
            );
        }
        if completed {
            break;
        }
    }
    assert!(
        completed,
        "a budget large enough for every send and ack was reached"
    );
}

/// A compaction whose directory sync failed after its rename leaves that sync to the next
/// journal record; an async receive runs it on the blocking pool too.
#[tokio::test(flavor = "current_thread")]
async fn the_directory_sync_a_failed_compaction_left_runs_on_the_blocking_pool() {
    let disk = SimulatedStorage::new();
    let (recording, recorder) = ThreadRecordingDisk::new(&disk);
    let failing = FailingDirSyncs::over(recording);
    let options = QueueOptions::default().compact_after(16);
    let queue = WorkQueue::open_with(
        Path::new("/queue"),
        options,
        ManualClock::new(),
        failing.clone(),
    )
    .unwrap();
    for job in 0..17u8 {
        queue.send(vec![job]).unwrap();
    }
    for _ in 0..15 {
        queue.try_receive().unwrap().unwrap();
    }
    failing.fail_after_next_rename();
    queue
        .receive_async()
        .await
        .expect("a compaction's failure is not the receive's");
    failing.set_failing(false);
    recorder.clear();
    assert_eq!(queue.receive_async().await.unwrap().payload(), [16]);
    let ops = recorder.ops_off_this_thread();
    assert!(
        ops.iter()
            .any(|op| op.op == Op::DirSync && op.path == Path::new("/queue")),
        "the queue's directory was synced again: {ops:?}"
    );
}

/// A durable queue on `disk` that compacts its journal every 16 records, with the file syncs
/// of the journal's next generation held at the returned gate (and no others), 16 messages
/// sent and 15 received: the next receive's journal record makes a compaction due.
fn a_compaction_one_receive_away(
    disk: &SimulatedStorage,
) -> (Arc<WorkQueue>, Arc<Gate>, Vec<Delivery>) {
    let (gated, gate) = GatedDisk::under(disk, Path::new("/queue/journal-1"));
    let options = QueueOptions::default().compact_after(16);
    let queue =
        WorkQueue::open_with(Path::new("/queue"), options, ManualClock::new(), gated).unwrap();
    for job in 0..16u8 {
        queue.send(vec![job]).unwrap();
    }
    let received = (0..15)
        .map(|_| queue.try_receive().unwrap().unwrap())
        .collect();
    gate.reset();
    (Arc::new(queue), gate, received)
}

/// Returns once a file sync of the journal's new generation is held at `gate` (waiting off
/// the runtime's thread).
async fn compaction_held(gate: &Arc<Gate>) {
    let gate = Arc::clone(gate);
    tokio::task::spawn_blocking(move || gate.wait_until(|arrived, _| arrived >= 1))
        .await
        .unwrap();
}

/// The generation the queue's `JOURNAL` pointer names on `disk` (its first word; a checksum
/// follows).
fn journal_generation(disk: &SimulatedStorage) -> String {
    let file = disk.open(Path::new("/queue/JOURNAL"), false).unwrap();
    let mut bytes = vec![0; usize::try_from(file.len().unwrap()).unwrap()];
    let read = file.read_at(0, &mut bytes).unwrap();
    let text = String::from_utf8(bytes[..read].to_vec()).unwrap();
    text.split(' ').next().unwrap().to_owned()
}

/// A receive's compaction writes the new generation on the blocking pool while the runtime's
/// thread goes on journaling (acks, here); those records are copied into the new generation,
/// and the receive returns once the compaction is done: a power loss then keeps them.
#[tokio::test(flavor = "current_thread")]
async fn records_journaled_during_an_async_receives_compaction_survive_a_power_loss() {
    let disk = SimulatedStorage::new();
    let (queue, gate, received) = a_compaction_one_receive_away(&disk);
    gate.set_closed(true);
    let receive = tokio::spawn({
        let queue = Arc::clone(&queue);
        async move { queue.receive_async().await }
    });
    compaction_held(&gate).await;
    for delivery in &received[..3] {
        queue.ack(delivery).unwrap();
    }
    gate.set_closed(false);
    assert_eq!(receive.await.unwrap().unwrap().payload(), [15]);
    drop(queue);
    disk.power_cut();
    assert_eq!(
        journal_generation(&disk),
        "1",
        "the compaction was made durable"
    );
    let options = QueueOptions::default().compact_after(16);
    let reopened =
        WorkQueue::open_with(Path::new("/queue"), options, ManualClock::new(), disk).unwrap();
    assert_eq!(reopened.stats().unsettled, 13, "the three acks were kept");
    let first = reopened
        .try_receive()
        .unwrap()
        .expect("an unsettled message");
    assert_eq!(
        (first.payload(), first.attempt()),
        (&[3u8][..], 2),
        "the first message not acked, delivered once before"
    );
}

/// Closes the gate and starts a receive that needs a compaction, dropping it once the
/// compaction is held at the gate.
async fn drop_a_receive_at_its_held_compaction(queue: &WorkQueue, gate: &Arc<Gate>) {
    gate.set_closed(true);
    tokio::select! {
        () = compaction_held(gate) => {}
        result = queue.receive_async() => {
            panic!("the receive ended while its compaction was held: {result:?}")
        }
    }
}

/// A receive future dropped while its compaction runs on the blocking pool hands nothing out:
/// its message is available again at once, as the same attempt; the compaction goes on.
#[tokio::test(flavor = "current_thread")]
async fn a_receive_dropped_during_its_compaction_gives_its_message_back_at_once() {
    let disk = SimulatedStorage::new();
    let (queue, gate, _received) = a_compaction_one_receive_away(&disk);
    drop_a_receive_at_its_held_compaction(&queue, &gate).await;
    let stats = queue.stats();
    assert_eq!(
        (stats.in_flight, stats.unsettled),
        (15, 16),
        "the dropped receive holds no lease"
    );
    let again = queue
        .try_receive()
        .unwrap()
        .expect("available again at once");
    assert_eq!((again.offset(), again.attempt()), (15, 1));
    gate.set_closed(false);
    queue.ack(&again).unwrap();
}

/// A queue dropped while the compaction a dropped receive began is held on the blocking pool
/// lets go of its directory only with that compaction: the drop waits for it, so an open right
/// after the drop finds the directory free (not `Locked`) and the compaction done.
#[tokio::test(flavor = "current_thread")]
async fn a_queue_dropped_during_its_compaction_can_be_opened_again_at_once() {
    let disk = SimulatedStorage::new();
    let (queue, gate, _received) = a_compaction_one_receive_away(&disk);
    drop_a_receive_at_its_held_compaction(&queue, &gate).await;
    let Ok(queue) = Arc::try_unwrap(queue) else {
        panic!("the test holds the last handle")
    };
    let restart = drop_and_open_again(queue, &disk, QueueOptions::default().compact_after(16));
    gate.set_closed(false);
    let reopened = restart.join().unwrap().expect("open right after the drop");
    assert_eq!(journal_generation(&disk), "1", "the compaction ended first");
    assert_eq!(reopened.stats().unsettled, 16);
}

/// The same with a roll of the journal's segment held on the blocking pool, the async receive
/// that needed it dropped before its record was written: the open right after the queue's
/// drop is not `Locked`, and finds the roll done.
#[tokio::test(flavor = "current_thread")]
async fn a_queue_dropped_during_a_journal_roll_can_be_opened_again_at_once() {
    let options = one_journal_record_a_segment;
    let disk = SimulatedStorage::new();
    let (queue, gate) = open_gated(&disk, options());
    queue.send("first").unwrap();
    queue.send("second").unwrap();
    // Its journal record fills the segment.
    queue.try_receive().unwrap().expect("the first message");
    gate.reset();
    gate.set_closed(true);
    {
        let mut receive = pin!(queue.receive_async());
        assert!(
            poll_once(receive.as_mut()).await.is_pending(),
            "the receive waits for the roll's fsync of the full journal segment"
        );
        arrivals(&gate, 1).await;
    }
    let Ok(queue) = Arc::try_unwrap(queue) else {
        panic!("the test holds the last handle")
    };
    let restart = drop_and_open_again(queue, &disk, options());
    gate.set_closed(false);
    let reopened = restart.join().unwrap().expect("open right after the drop");
    let journal = disk.list(Path::new("/queue/journal-0")).unwrap();
    assert!(
        journal
            .iter()
            .any(|name| name == "00000000000000000001.seg"),
        "the roll ended first: {journal:?}"
    );
    assert_eq!(reopened.stats().unsettled, 2, "nothing was settled");
}

/// Drops `queue` on a thread of its own, then opens its directory on `disk` again at once;
/// returns the thread once it started dropping. The caller lets the held work go on then:
/// the drop must wait for it, where a drop that let go of the queue at once had its open come
/// first (nearly always: the caller yields to the dropping thread before it lets the work go).
fn drop_and_open_again(
    queue: WorkQueue,
    disk: &SimulatedStorage,
    options: QueueOptions,
) -> thread::JoinHandle<Result<WorkQueue, infra_mqueue::Error>> {
    let started = Arc::new(AtomicBool::new(false));
    let disk = disk.clone();
    let restart = thread::spawn({
        let started = Arc::clone(&started);
        move || {
            started.store(true, Ordering::Release);
            drop(queue);
            WorkQueue::open_with(Path::new("/queue"), options, ManualClock::new(), disk)
        }
    });
    // Spinning rather than sleeping on a channel: a wake-up would let this thread take the
    // processor from the dropping one.
    while !started.load(Ordering::Acquire) {
        thread::yield_now();
    }
    for _ in 0..100 {
        thread::yield_now();
    }
    restart
}

/// A receive dropped while the compaction it began holds the journal's lock (held here at the
/// fsync of the new `JOURNAL` pointer, after the checkpoint counted its delivery) does not wait
/// for the compaction: it gives its message back at once and leaves its `Withdrawn` record to
/// the next journal write (here the queue's drop), under the lock the compaction took its
/// checkpoint under. After a restart its delivery is not counted, and neither is it twice.
#[tokio::test(flavor = "current_thread")]
async fn a_receive_dropped_while_its_compaction_holds_the_journal_does_not_wait_for_it() {
    let disk = SimulatedStorage::new();
    let (gated, gate) = GatedDisk::under(&disk, Path::new("/queue/JOURNAL.tmp"));
    let options = || QueueOptions::default().compact_after(16);
    let queue =
        WorkQueue::open_with(Path::new("/queue"), options(), ManualClock::new(), gated).unwrap();
    for job in 0..16u8 {
        queue.send(vec![job]).unwrap();
    }
    for _ in 0..15 {
        queue.try_receive().unwrap().unwrap();
    }
    gate.reset();
    drop_a_receive_at_its_held_compaction(&queue, &gate).await;
    receive_dropped_while_held(&queue, &gate, "compaction", (15, 16));
    drop(queue);
    assert_eq!(
        journal_generation(&disk),
        "1",
        "the compaction went through"
    );
    let queue = reopen(&disk, &options());
    let attempts: Vec<u32> = queue
        .try_receive_many(16)
        .unwrap()
        .iter()
        .map(Delivery::attempt)
        .collect();
    let mut expected = vec![2; 15];
    expected.push(1);
    assert_eq!(
        attempts, expected,
        "the dropped receive's delivery is not counted"
    );
}

/// A receive whose delivery's record is not yet written (it waits for a dead letter's fsync
/// first) loses its expired lease to a second receive, whose record is written; both are
/// dropped, the first first. In memory neither delivery counts; nor after a restart: the
/// journal holds the second's `Received` and `Withdrawn` records, and the second's
/// withdrawal, following the first one's note, names the first delivery as received and
/// withdrawn both, where replay would otherwise count it on the strength of the second.
#[tokio::test(flavor = "current_thread")]
async fn an_unwritten_delivery_under_a_withdrawn_one_that_took_its_lease_is_not_counted() {
    an_unwritten_delivery_under_a_withdrawn_one(First::DroppedBefore).await;
}

/// The same two receives dropped the other way round: the second, withdrawn, hands the lease
/// back to the first, still waiting and with no record, and names that delivery as received
/// and withdrawn both; the first, dropped next, gives it back with no record of its own to
/// withdraw, and a restart counts neither.
#[tokio::test(flavor = "current_thread")]
async fn an_unwritten_delivery_whose_lease_a_withdrawn_one_handed_back_is_not_counted_once_dropped()
{
    an_unwritten_delivery_under_a_withdrawn_one(First::DroppedAfter).await;
}

/// The same, with the first receive going on once the second is dropped: it writes its own
/// record and reaches its caller, and that delivery counts after a restart, the records naming
/// it as taken back notwithstanding.
#[tokio::test(flavor = "current_thread")]
async fn an_unwritten_delivery_whose_lease_a_withdrawn_one_handed_back_counts_once_it_reaches_its_caller()
 {
    an_unwritten_delivery_under_a_withdrawn_one(First::ReachesItsCaller).await;
}

/// What becomes of the first of two receives of one lease, the second having been dropped.
#[derive(Clone, Copy, Debug)]
enum First {
    /// Dropped before the second.
    DroppedBefore,
    /// Dropped after the second.
    DroppedAfter,
    /// Written to the journal and handed to its caller after the second was dropped.
    ReachesItsCaller,
}

/// The job's first receive waits for the poison's dead letter's fsync, its delivery not yet
/// journaled, until its lease runs out; a second receive takes the lease over as the job's
/// second attempt and waits for its journal fsync, its record written; the second is dropped
/// and the first goes as `first` says. Checks the stats and the first handout after a restart.
async fn an_unwritten_delivery_under_a_withdrawn_one(first_goes: First) {
    let options = || QueueOptions::default().max_deliveries(2);
    let disk = SimulatedStorage::new();
    let clock = ManualClock::new();
    let (queue, gate) = open_gated_on(&disk, options(), &clock);
    queue.send("poison").unwrap();
    queue.send("job").unwrap();
    for _ in 0..2 {
        let poison = queue.try_receive().unwrap().unwrap();
        queue.nack(&poison, Duration::ZERO).unwrap();
    }
    gate.reset();
    gate.set_closed(true);
    let (first, second) = two_receives_a_lease_apart(
        &queue,
        &gate,
        &clock,
        "the first receive waits for the poison's dead letter's fsync, the job leased",
        "the second receive, of the job's second attempt, waits for its journal fsync",
    )
    .await;
    arrivals(&gate, 2).await;
    let (in_flight, after_a_restart) = match first_goes {
        First::DroppedBefore | First::DroppedAfter => {
            if let First::DroppedBefore = first_goes {
                drop(first);
                drop(second);
            } else {
                drop(second);
                drop(first);
            }
            gate.set_closed(false);
            // The poison dead-lettered again, the job delivered as its first attempt.
            (0, (Some((1, 1)), 1))
        }
        First::ReachesItsCaller => {
            drop(second);
            gate.set_closed(false);
            let delivered = first.await.unwrap();
            assert_eq!((delivered.offset(), delivered.attempt()), (1, 1));
            // The poison's dead letter settled before the restart, the job delivered as its
            // second attempt.
            (1, (Some((1, 2)), 0))
        }
    };
    assert_eq!(queue.stats().in_flight, in_flight, "{first_goes:?}");
    drop(queue);
    assert_eq!(
        first_handout_after_a_restart(&disk, &options()),
        after_a_restart,
        "{first_goes:?}"
    );
}

/// The same pair of receives, the first dropped first, with a compaction in between: its
/// checkpoint, taken while the second holds the lease with its record written, counts the job
/// as delivered twice; the second's withdrawal after it names the first delivery as received
/// and withdrawn both, so the restart counts neither, as without the compaction.
#[tokio::test(flavor = "current_thread")]
async fn an_unwritten_delivery_under_a_withdrawn_one_is_not_counted_across_a_compaction() {
    let options = || QueueOptions::default().max_deliveries(2).compact_after(16);
    let disk = SimulatedStorage::new();
    let clock = ManualClock::new();
    let (queue, gate) = open_gated_on(&disk, options(), &clock);
    let fillers = fillers_then_poison_and_job(&queue, 6);
    // Held past the job's lease, which runs out below.
    queue.extend(&fillers[5], Duration::from_secs(60)).unwrap();
    for _ in 0..2 {
        let poison = queue.try_receive().unwrap().unwrap();
        queue.nack(&poison, Duration::ZERO).unwrap();
    }
    // 15 journal records.
    gate.reset();
    gate.set_closed(true);
    let (first, second) =
        two_receives_a_lease_apart(&queue, &gate, &clock, "the first receive waits for the poison's dead letter's fsync, the job leased", "the second receive, of the job's second attempt, waits for its journal fsync (the 16th record)").await;
    arrivals(&gate, 2).await;
    drop(first);
    gate.set_closed(false);
    // The 17th record: its write compacts the journal (the 16th's compaction waited for its
    // fsync, which its receive, not polled again, never saw).
    queue.ack(&fillers[5]).unwrap();
    let names = disk.list(Path::new("/queue")).unwrap();
    assert!(
        names.contains(&"journal-1".to_owned()),
        "compacted: {names:?}"
    );
    drop(second);
    assert_eq!(queue.stats().in_flight, 0, "nothing held");
    drop(queue);
    assert_eq!(
        first_handout_after_a_restart(&disk, &options()),
        (Some((7, 1)), 1),
        "the poison dead-lettered again, the job delivered as its first attempt"
    );
}
