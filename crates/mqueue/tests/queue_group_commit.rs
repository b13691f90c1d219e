//! Durable sends share fsyncs: a send lets go of the queue's write order once its message is
//! written, so sends made while an fsync is in flight all wait for the next one, and no
//! message is handed out before the fsync that makes it durable has returned.
//!
//! The queue runs on the simulated disk with its file syncs held at a gate the test opens;
//! nothing waits for time to pass.

#![cfg(not(infra_loom))]

use std::path::Path;
use std::time::Instant;

use infra_common::ManualClock;
use infra_common::sync::atomic::{AtomicUsize, Ordering};
use infra_common::sync::{Arc, thread};
use infra_mqueue::Error;
use infra_mqueue::log::SimulatedStorage;
use infra_mqueue::queue::{DedupWindow, Delivery, Message, QueueOptions, WorkQueue};

#[path = "support/gated_disk.rs"]
mod gated_disk;
#[path = "support/hooked_disk.rs"]
mod hooked_disk;

use gated_disk::{Gate, GatedDisk, HUNG};

const DIR: &str = "/queue";

/// A durable queue (fsync `Always`) whose file syncs wait at the returned gate, which counts
/// from after the open.
fn open_gated(disk: &SimulatedStorage, options: QueueOptions) -> (Arc<WorkQueue>, Arc<Gate>) {
    let (gated, gate) = GatedDisk::new(disk);
    let queue = WorkQueue::open_with(Path::new(DIR), options, ManualClock::new(), gated).unwrap();
    gate.reset();
    (Arc::new(queue), gate)
}

/// Waits until `done` holds, panicking only after [`HUNG`] (a regression, not a slow machine).
fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + HUNG;
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        thread::yield_now();
    }
}

/// The payloads a reopened queue on `disk` hands out, in order.
fn payloads_after_reopen(disk: &SimulatedStorage) -> Vec<Vec<u8>> {
    let queue = WorkQueue::open_with(
        Path::new(DIR),
        QueueOptions::default(),
        ManualClock::new(),
        disk.clone(),
    )
    .unwrap();
    let mut payloads = Vec::new();
    while let Some(delivery) = queue.try_receive().unwrap() {
        payloads.push(delivery.payload().to_vec());
    }
    payloads
}

#[test]
fn sends_made_during_an_fsync_share_the_next_and_are_handed_out_only_once_durable() {
    let disk = SimulatedStorage::new();
    let (queue, gate) = open_gated(&disk, QueueOptions::default());
    gate.set_closed(true);
    let first = {
        let queue = Arc::clone(&queue);
        thread::spawn(move || queue.send("order 0").unwrap())
    };
    gate.wait_until(|arrived, _| arrived == 1);
    // The first send's fsync is held; seven more sends write their messages behind it.
    let others: Vec<_> = (1..8)
        .map(|i| {
            let queue = Arc::clone(&queue);
            thread::spawn(move || queue.send(format!("order {i}").as_str()).unwrap())
        })
        .collect();
    until("all eight messages written", || {
        queue.stats().unsettled == 8
    });
    assert_eq!(queue.stats().next_offset, 8);
    assert!(
        queue.try_receive().unwrap().is_none(),
        "a message was handed out before an fsync covered it"
    );
    gate.set_closed(false);
    assert_eq!(first.join().unwrap().offset, 0);
    let mut offsets: Vec<u64> = others
        .into_iter()
        .map(|t| t.join().unwrap().offset)
        .collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (1..8).collect::<Vec<u64>>());
    // The held fsync covered the first message; one more covered the seven written behind it.
    assert_eq!(
        gate.counts(),
        (2, 2),
        "one fsync per group of sends, not one per send"
    );
    let mut received = Vec::new();
    while let Some(delivery) = queue.try_receive().unwrap() {
        received.push(delivery.offset());
    }
    assert_eq!(received, (0..8).collect::<Vec<u64>>(), "in offset order");
    drop(queue);
    disk.power_cut();
    let mut kept = payloads_after_reopen(&disk);
    kept.sort();
    let mut sent: Vec<Vec<u8>> = (0..8).map(|i| format!("order {i}").into_bytes()).collect();
    sent.sort();
    assert_eq!(kept, sent, "every send that returned survives a power cut");
}

#[test]
fn a_duplicate_of_a_send_still_writing_returns_only_once_that_send_is_durable() {
    let disk = SimulatedStorage::new();
    let options = QueueOptions::default().dedup(DedupWindow::new(100));
    let (queue, gate) = open_gated(&disk, options);
    gate.set_closed(true);
    let returned = Arc::new(AtomicUsize::new(0));
    let send = |queue: &Arc<WorkQueue>| {
        let (queue, returned) = (Arc::clone(queue), Arc::clone(&returned));
        thread::spawn(move || {
            let sent = queue.send(Message::new("payment").id("order-7")).unwrap();
            returned.fetch_add(1, Ordering::SeqCst);
            sent
        })
    };
    let original = send(&queue);
    gate.wait_until(|arrived, _| arrived == 1);
    let duplicate = send(&queue);
    // The duplicate finds the id at once; it must still wait for the held fsync.
    until("the duplicate counted", || queue.stats().duplicates == 1);
    assert_eq!(
        returned.load(Ordering::SeqCst),
        0,
        "a send returned before its fsync"
    );
    gate.set_closed(false);
    let (original, duplicate) = (original.join().unwrap(), duplicate.join().unwrap());
    assert_eq!((original.offset, original.duplicate), (0, false));
    assert_eq!((duplicate.offset, duplicate.duplicate), (0, true));
    drop(queue);
    disk.power_cut();
    assert_eq!(payloads_after_reopen(&disk), [b"payment".to_vec()]);
}

#[test]
fn a_failed_fsync_fails_every_send_it_was_to_cover_and_hands_none_of_them_out() {
    let disk = SimulatedStorage::new();
    let (queue, gate) = open_gated(&disk, QueueOptions::default());
    gate.set_closed(true);
    let sends: Vec<_> = (0..3)
        .map(|i| {
            let queue = Arc::clone(&queue);
            thread::spawn(move || queue.send(format!("order {i}").as_str()))
        })
        .collect();
    until("three messages written", || queue.stats().unsettled == 3);
    disk.set_failing(true);
    gate.set_closed(false);
    for send in sends {
        assert!(
            send.join().unwrap().is_err(),
            "a send returned without its fsync"
        );
    }
    assert!(queue.try_receive().unwrap().is_none());
    assert!(
        queue.send("later").is_err(),
        "the log failed: later sends fail"
    );
}

/// Async sends (feature `tokio`) on a current-thread runtime: their fsyncs run on the blocking
/// pool, so the runtime's one thread goes on running this test while they are held, and the
/// sends written during the first fsync share the next.
#[cfg(feature = "tokio")]
#[tokio::test]
async fn async_sends_wait_for_their_fsync_off_the_runtime_thread_and_share_it() {
    let disk = SimulatedStorage::new();
    let (queue, gate) = open_gated(&disk, QueueOptions::default());
    gate.set_closed(true);
    let sends: Vec<_> = (0..4)
        .map(|i| {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move { queue.send_async(format!("order {i}").as_str()).await })
        })
        .collect();
    let deadline = Instant::now() + HUNG;
    while queue.stats().unsettled < 4 {
        assert!(Instant::now() < deadline, "never: four messages written");
        tokio::task::yield_now().await;
    }
    assert!(queue.try_receive().unwrap().is_none());
    gate.set_closed(false);
    for (i, send) in sends.into_iter().enumerate() {
        let sent = send.await.unwrap().unwrap();
        assert_eq!(sent.offset, i as u64, "written in the order first polled");
    }
    assert_eq!(
        gate.counts(),
        (2, 2),
        "one fsync per group of sends, not one per send"
    );
    assert_eq!(queue.try_receive().unwrap().unwrap().offset(), 0);
}

/// A failed fsync leaves the messages it was to cover out of reach but still counted: at
/// capacity, sends must fail with `Failed` (the log refuses them), not wait for room that
/// never comes or report `Full`.
#[test]
fn after_a_failed_fsync_a_full_queue_refuses_sends_instead_of_waiting_for_room() {
    let disk = SimulatedStorage::new();
    let (queue, gate) = open_gated(&disk, QueueOptions::default().capacity(2));
    gate.set_closed(true);
    let sends: Vec<_> = (0..2)
        .map(|i| {
            let queue = Arc::clone(&queue);
            thread::spawn(move || queue.send(format!("order {i}").as_str()))
        })
        .collect();
    until("two messages written", || queue.stats().unsettled == 2);
    // The two messages fill the queue: this send waits for room (before or after the
    // failure, depending on the schedule).
    let returned = Arc::new(AtomicUsize::new(0));
    let waiting = {
        let (queue, returned) = (Arc::clone(&queue), Arc::clone(&returned));
        thread::spawn(move || {
            let sent = queue.send("waiting for room");
            returned.fetch_add(1, Ordering::SeqCst);
            sent
        })
    };
    disk.set_failing(true);
    gate.set_closed(false);
    for send in sends {
        assert!(send.join().unwrap().is_err());
    }
    until("the send waiting for room returned", || {
        returned.load(Ordering::SeqCst) == 1
    });
    assert!(matches!(waiting.join().unwrap(), Err(Error::Failed)));
    assert!(
        matches!(queue.try_send("later"), Err(Error::Failed)),
        "a failed log refuses sends: the queue is not merely full"
    );
    assert!(matches!(queue.send("later"), Err(Error::Failed)));
}

/// A `send_async` future dropped after its write, while an fsync that began before it is in
/// flight: nothing will make its message durable on its behalf, and no later send may come
/// (the queue is full). A receive must make it durable and hand it out; otherwise the message
/// holds its room for good and the queue stays wedged.
#[cfg(feature = "tokio")]
#[test]
fn a_send_async_dropped_after_its_write_is_made_durable_and_handed_out_by_a_receive() {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Waker};

    let disk = SimulatedStorage::new();
    let (queue, gate) = open_gated(&disk, QueueOptions::default().capacity(2));
    gate.set_closed(true);
    let first = {
        let queue = Arc::clone(&queue);
        thread::spawn(move || queue.send("first").unwrap())
    };
    gate.wait_until(|arrived, _| arrived == 1);
    {
        // Polled once (outside a runtime): it writes its message and waits behind the
        // fsync in flight, which began before the write. Then it is dropped.
        let mut send = pin!(queue.send_async("abandoned"));
        let polled = send.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_pending());
    }
    assert_eq!(
        queue.stats().next_offset,
        2,
        "the dropped send wrote its message"
    );
    gate.set_closed(false);
    assert_eq!(first.join().unwrap().offset, 0);
    assert!(
        matches!(queue.try_send("third"), Err(Error::Full { .. })),
        "the dropped send's message holds its room"
    );
    let delivered: Vec<Vec<u8>> = (0..2)
        .map_while(|_| queue.try_receive().unwrap())
        .map(|delivery| delivery.payload().to_vec())
        .collect();
    assert_eq!(delivered, [b"first".to_vec(), b"abandoned".to_vec()]);
    drop(queue);
    disk.power_cut();
    let mut kept = payloads_after_reopen(&disk);
    kept.sort();
    assert_eq!(
        kept,
        [b"abandoned".to_vec(), b"first".to_vec()],
        "handed out only once durable"
    );
}

/// A send waiting for room holds up no other send: `try_send` still fails at once with
/// `Full`, and a duplicate of a stored message still returns at once. The checks repeat while
/// the waiting send settles into its wait; a send that held the queue's write order while
/// waiting would leave them blocked, and the test fails after [`HUNG`].
#[test]
fn a_send_waiting_for_room_holds_up_no_other_send() {
    let options = QueueOptions::default()
        .capacity(1)
        .dedup(DedupWindow::new(100));
    let queue = Arc::new(
        WorkQueue::open_with(
            Path::new(DIR),
            options,
            ManualClock::new(),
            SimulatedStorage::new(),
        )
        .unwrap(),
    );
    queue.send(Message::new("first").id("order-1")).unwrap();
    let waiting = {
        let queue = Arc::clone(&queue);
        thread::spawn(move || queue.send("second"))
    };
    let checked = Arc::new(AtomicUsize::new(0));
    let checker = {
        let (queue, checked) = (Arc::clone(&queue), Arc::clone(&checked));
        thread::spawn(move || {
            for _ in 0..1000 {
                let full = queue.try_send("third");
                let duplicate = queue.try_send(Message::new("again").id("order-1"));
                checked.fetch_add(1, Ordering::SeqCst);
                assert!(matches!(full, Err(Error::Full { .. })), "{full:?}");
                assert!(duplicate.unwrap().duplicate);
                thread::yield_now();
            }
        })
    };
    until("1000 sends returned while another waits for room", || {
        checked.load(Ordering::SeqCst) == 1000
    });
    checker.join().unwrap();
    let delivery = queue.try_receive().unwrap().unwrap();
    queue.ack(&delivery).unwrap();
    assert_eq!(
        waiting.join().unwrap().unwrap().offset,
        1,
        "room freed: it went in"
    );
}

/// A receiver blocked in `receive` while a message is being written is woken once its fsync
/// returns (the send that makes it durable wakes a receiver per message it releases), and not
/// before.
#[test]
fn a_blocked_receive_gets_a_message_once_its_fsync_returns() {
    let disk = SimulatedStorage::new();
    let (queue, gate) = open_gated(&disk, QueueOptions::default());
    let received = Arc::new(AtomicUsize::new(0));
    let receivers: Vec<_> = (0..2)
        .map(|_| {
            let (queue, received) = (Arc::clone(&queue), Arc::clone(&received));
            thread::spawn(move || {
                let delivery = queue.receive().unwrap();
                received.fetch_add(1, Ordering::SeqCst);
                delivery.payload().to_vec()
            })
        })
        .collect();
    gate.set_closed(true);
    let first = {
        let queue = Arc::clone(&queue);
        thread::spawn(move || queue.send("order 0").unwrap())
    };
    gate.wait_until(|arrived, _| arrived == 1);
    let second = {
        let queue = Arc::clone(&queue);
        thread::spawn(move || queue.send("order 1").unwrap())
    };
    until("both messages written", || queue.stats().unsettled == 2);
    assert_eq!(
        received.load(Ordering::SeqCst),
        0,
        "handed out before its fsync"
    );
    gate.set_closed(false);
    first.join().unwrap();
    second.join().unwrap();
    until("both receivers woken", || {
        received.load(Ordering::SeqCst) == 2
    });
    let mut payloads: Vec<Vec<u8>> = receivers.into_iter().map(|r| r.join().unwrap()).collect();
    payloads.sort();
    assert_eq!(payloads, [b"order 0".to_vec(), b"order 1".to_vec()]);
}

/// A batch of eight durable sends writes them in order and waits for one fsync covering all
/// of them; a power cut after it keeps all eight.
#[test]
fn a_durable_batch_send_takes_one_fsync_for_the_whole_batch() {
    let disk = SimulatedStorage::new();
    let (queue, gate) = open_gated(&disk, QueueOptions::default());
    let batch: Vec<String> = (0..8).map(|i| format!("order {i}")).collect();
    let sent = queue.send_many(batch.iter().map(String::as_str));
    let offsets: Vec<u64> = sent.into_iter().map(|s| s.unwrap().offset).collect();
    assert_eq!(offsets, (0..8).collect::<Vec<u64>>());
    assert_eq!(gate.counts(), (1, 1), "one fsync for the batch");
    drop(queue);
    disk.power_cut();
    let expected: Vec<Vec<u8>> = batch.into_iter().map(String::into_bytes).collect();
    assert_eq!(payloads_after_reopen(&disk), expected);
}

/// A durable batch larger than the queue's capacity: its own messages, written but not yet
/// durable, fill the queue, so it makes them durable and receivable before it waits for room.
#[test]
fn a_durable_batch_larger_than_the_capacity_makes_room_for_itself() {
    let disk = SimulatedStorage::new();
    let (queue, _gate) = open_gated(&disk, QueueOptions::default().capacity(2));
    let consumer = {
        let queue = Arc::clone(&queue);
        thread::spawn(move || {
            (0..6)
                .map(|_| {
                    let delivery = queue.receive().unwrap();
                    queue.ack(&delivery).unwrap();
                    delivery.payload().to_vec()
                })
                .collect::<Vec<_>>()
        })
    };
    let done = Arc::new(AtomicUsize::new(0));
    let producer = {
        let (queue, done) = (Arc::clone(&queue), Arc::clone(&done));
        thread::spawn(move || {
            let sent = queue.send_many(["a", "b", "c", "d", "e", "f"]);
            done.store(1, Ordering::SeqCst);
            sent
        })
    };
    until("the batch went through", || {
        done.load(Ordering::SeqCst) == 1
    });
    let sent = producer.join().unwrap();
    assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    let received = consumer.join().unwrap();
    assert_eq!(
        received,
        [b"a", b"b", b"c", b"d", b"e", b"f"].map(|p| p.to_vec())
    );
}

/// A durable batch receive journals its deliveries in one write covered by one fsync, and
/// `ack_many` its acks the same way, rather than one fsync after another per message; a
/// power cut after them keeps both: only the two unacked messages come back, as attempt 2.
#[test]
fn a_durable_batch_receive_and_a_batch_ack_take_one_fsync_each() {
    let disk = SimulatedStorage::new();
    let open = || {
        WorkQueue::open_with(
            Path::new(DIR),
            QueueOptions::default(),
            ManualClock::new(),
            disk.clone(),
        )
        .unwrap()
    };
    let queue = open();
    let sent = queue.send_many((0..8u8).map(|n| vec![n]));
    assert!(sent.iter().all(Result::is_ok));
    let before = disk.file_syncs();
    let batch = queue.try_receive_many(8).unwrap();
    assert_eq!(batch.len(), 8);
    assert_eq!(disk.file_syncs() - before, 1, "fsyncs of a batch receive");
    let before = disk.file_syncs();
    let acked = queue.ack_many(batch[..6].iter().map(Delivery::receipt));
    assert!(acked.iter().all(Result::is_ok));
    assert_eq!(disk.file_syncs() - before, 1, "fsyncs of a batch ack");
    drop(queue);
    disk.power_cut();
    let queue = open();
    let mut left = Vec::new();
    while let Some(delivery) = queue.try_receive().unwrap() {
        left.push((delivery.payload()[0], delivery.attempt()));
    }
    assert_eq!(left, [(6, 2), (7, 2)]);
}
