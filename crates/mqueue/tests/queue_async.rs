//! The work queue's async face (feature `tokio`): receives and sends that wait on
//! `tokio::sync::Notify` rather than blocking a thread.
#![cfg(all(feature = "tokio", not(infra_loom)))]

use std::time::Duration;

use infra_common::ManualClock;
use infra_common::sync::Arc;
use infra_mqueue::queue::{Delivery, Message, QueueOptions, WorkQueue};

#[path = "support/counting_clock.rs"]
mod counting_clock;

use counting_clock::CountingClock;

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
