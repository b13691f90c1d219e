//! The Redis Streams work queue against a real `redis-server`: send, receive and settle; a
//! redelivery after the visibility timeout and the stale attempt's refusal; dead letters after
//! `max_deliveries`; producer dedup; two consumers that never hold one message at once; and a
//! server killed and restarted that keeps every message whose send returned; and random
//! operation sequences against the embedded queue's reference model.
#![cfg(all(feature = "redis", not(infra_loom)))]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use infra_common::sync::{Arc, thread};
use infra_mqueue::Error;
use infra_mqueue::queue::{Message, Receipt};
use infra_mqueue::redis::{MAX_DEAD_LETTERS_PER_CALL, RedisOptions, RedisQueue};
use infra_testkit::RedisServer;
use proptest::prelude::*;

#[path = "support/model.rs"]
mod model;
#[path = "support/refusals.rs"]
mod refusals;
use model::{Model, Outcome, Rules, Status, outcome_of_send, outcome_of_settle};

const QUEUE: &str = "orders";

fn options() -> RedisOptions {
    RedisOptions::default().timeout(Duration::from_secs(5))
}

fn queue(server: &RedisServer, options: RedisOptions) -> RedisQueue {
    RedisQueue::new(&server.url(), QUEUE, options).unwrap()
}

fn client(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Every command the server ran since its statistics were last reset, with its call count,
/// from `INFO commandstats` (which counts commands run by scripts too), sorted by name.
fn command_calls(server: &RedisServer) -> Vec<(String, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut client(server))
        .unwrap();
    let mut calls: Vec<(String, u64)> = info
        .lines()
        .filter_map(|line| {
            let (command, rest) = line.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            let calls = rest.split(',').next()?.parse().ok()?;
            Some((command.to_owned(), calls))
        })
        .collect();
    calls.sort();
    calls
}

/// The stream commands (`X…`) among [`command_calls`].
fn stream_command_calls(server: &RedisServer) -> Vec<(String, u64)> {
    command_calls(server)
        .into_iter()
        .filter(|(command, _)| command.starts_with('x'))
        .collect()
}

#[test]
fn settle_and_stats_of_a_queue_never_received_from_create_nothing() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let typo = RedisQueue::new(&server.url(), "odrers", options()).unwrap();
    let stats = typo.stats().unwrap();
    assert_eq!(
        (
            stats.unsettled,
            stats.in_flight,
            stats.nacked,
            stats.dead_letters
        ),
        (0, 0, 0, 0)
    );
    assert!(matches!(
        typo.ack(Receipt::new(0, 1)),
        Err(Error::UnknownDelivery {
            offset: 0,
            attempt: 1
        })
    ));
    let keys: u64 = redis::cmd("DBSIZE").query(&mut client(&server)).unwrap();
    assert_eq!(keys, 0);
}

#[test]
fn a_server_that_may_evict_keys_is_refused() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let set_policy = |policy: &str| {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg(policy)
            .query(&mut client(&server))
            .unwrap();
    };
    set_policy("allkeys-lru");
    let queue = queue(&server, options());
    assert!(matches!(
        queue.send(b"m".as_slice()),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(queue.stats(), Err(Error::Unsupported { .. })));
    let keys: u64 = redis::cmd("DBSIZE").query(&mut client(&server)).unwrap();
    assert_eq!(keys, 0);
    set_policy("noeviction");
    assert_eq!(queue.send(b"m".as_slice()).unwrap().offset, 0);
}

#[test]
fn a_receive_runs_the_same_commands_however_many_messages_are_in_flight() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options());
    let mut held = Vec::new();
    let mut seen = Vec::new();
    for in_flight in [1, 300] {
        while held.len() < in_flight {
            queue.send(b"m".as_slice()).unwrap();
            held.push(queue.try_receive().unwrap().unwrap());
        }
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut client(&server))
            .unwrap();
        // Every lease is live and nothing waits: the receive finds nothing.
        assert!(queue.try_receive().unwrap().is_none());
        seen.push(stream_command_calls(&server));
    }
    assert!(!seen[0].is_empty(), "no stream commands counted: {seen:?}");
    assert_eq!(seen[0], seen[1], "1 in flight vs 300 in flight");
    assert_eq!(queue.stats().unwrap().in_flight, 300);
}

#[test]
fn messages_are_received_in_order_and_settled_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options());
    for (i, text) in ["a", "b", "c"].into_iter().enumerate() {
        let sent = queue.send(text).unwrap();
        assert_eq!((sent.offset, sent.duplicate), (i as u64, false));
    }
    let stats = queue.stats().unwrap();
    assert_eq!((stats.unsettled, stats.in_flight), (3, 0));

    let first = queue.try_receive().unwrap().unwrap();
    let second = queue.try_receive().unwrap().unwrap();
    assert_eq!(
        (first.offset(), first.attempt(), first.payload()),
        (0, 1, &b"a"[..])
    );
    assert_eq!(
        (second.offset(), second.attempt(), second.payload()),
        (1, 1, &b"b"[..])
    );
    assert_eq!(queue.stats().unwrap().in_flight, 2);

    queue.ack(&first).unwrap();
    assert!(matches!(
        queue.ack(&first),
        Err(Error::AlreadySettled { offset: 0 })
    ));
    queue.term(&second).unwrap();
    assert!(matches!(
        queue.term(&second),
        Err(Error::AlreadySettled { offset: 1 })
    ));
    // Offset 2 is stored but not delivered yet; offset 3 was never sent.
    assert!(matches!(
        queue.ack(Receipt::new(2, 1)),
        Err(Error::UnknownDelivery {
            offset: 2,
            attempt: 1
        })
    ));
    assert!(matches!(
        queue.ack(Receipt::new(3, 1)),
        Err(Error::UnknownDelivery { offset: 3, .. })
    ));
    assert!(matches!(
        queue.ack(Receipt::new(u64::MAX, 1)),
        Err(Error::UnknownDelivery { .. })
    ));

    let third = queue.try_receive().unwrap().unwrap();
    assert_eq!((third.offset(), third.payload()), (2, &b"c"[..]));
    // An attempt newer than any delivery is unknown.
    assert!(matches!(
        queue.ack(Receipt::new(2, 2)),
        Err(Error::UnknownDelivery {
            offset: 2,
            attempt: 2
        })
    ));
    queue.ack(&third).unwrap();
    assert_eq!(queue.try_receive().unwrap(), None);
    let stats = queue.stats().unwrap();
    assert_eq!((stats.unsettled, stats.in_flight, stats.nacked), (0, 0, 0));
}

#[test]
fn an_expired_lease_is_redelivered_and_the_stale_ack_refused() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Redis measures idle time on its own wall clock, so this is a real wait: a short lease,
    // and a generous deadline for a loaded machine.
    let queue = queue(
        &server,
        options().visibility_timeout(Duration::from_millis(200)),
    );
    queue.send("resize image 17").unwrap();
    let first = queue.try_receive().unwrap().unwrap();
    assert_eq!(first.attempt(), 1);

    let deadline = Instant::now() + Duration::from_secs(20);
    let second = loop {
        if let Some(delivery) = queue.try_receive().unwrap() {
            break delivery;
        }
        assert!(Instant::now() < deadline, "no redelivery within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!((second.offset(), second.attempt()), (first.offset(), 2));
    assert_eq!(second.payload(), b"resize image 17");

    for refused in [
        queue.ack(&first),
        queue.term(&first),
        queue.nack(&first, Duration::ZERO),
        queue.extend(&first, Duration::from_millis(100)),
    ] {
        assert!(
            matches!(
                refused,
                Err(Error::Redelivered {
                    offset: 0,
                    attempt: 1,
                    current: 2
                })
            ),
            "{refused:?}"
        );
    }
    queue.ack(&second).unwrap();
    assert_eq!(queue.stats().unwrap().unsettled, 0);
}

#[test]
fn nacks_count_as_deliveries_and_the_last_one_dead_letters() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options().max_deliveries(2));
    queue.send("poison").unwrap();
    queue.send("fine").unwrap();

    let first = queue.try_receive().unwrap().unwrap();
    assert_eq!((first.offset(), first.attempt()), (0, 1));
    queue.nack(&first, Duration::ZERO).unwrap();
    let stats = queue.stats().unwrap();
    assert_eq!((stats.in_flight, stats.nacked), (0, 1));
    // The nacking attempt cannot settle it any more.
    assert!(matches!(
        queue.ack(&first),
        Err(Error::NotLeased {
            offset: 0,
            attempt: 1
        })
    ));

    // A nacked message comes back before newer ones: the lowest offset first.
    let second = queue.try_receive().unwrap().unwrap();
    assert_eq!((second.offset(), second.attempt()), (0, 2));
    queue.nack(&second, Duration::ZERO).unwrap();

    // The third delivery would exceed max_deliveries: dead-lettered, and the next message
    // is delivered in the same call.
    let next = queue.try_receive().unwrap().unwrap();
    assert_eq!(
        (next.offset(), next.attempt(), next.payload()),
        (1, 1, &b"fine"[..])
    );
    assert!(matches!(
        queue.ack(&second),
        Err(Error::AlreadySettled { offset: 0 })
    ));
    let dead = queue.dead_letters(0, 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].position, dead[0].offset, dead[0].deliveries),
        (0, 0, 2)
    );
    assert_eq!(&dead[0].payload[..], b"poison");
    assert!(queue.dead_letters(1, 10).unwrap().is_empty());
    assert!(queue.dead_letters(0, 0).unwrap().is_empty());
    let stats = queue.stats().unwrap();
    assert_eq!(
        (stats.unsettled, stats.in_flight, stats.dead_letters),
        (1, 1, 1)
    );
}

#[test]
fn a_pending_entry_deleted_behind_the_queue_is_dropped_and_the_next_one_delivered() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options());
    queue.send("gone").unwrap();
    queue.send("next").unwrap();
    let first = queue.try_receive().unwrap().unwrap();
    queue.nack(&first, Duration::ZERO).unwrap();
    let deleted: u64 = redis::cmd("XDEL")
        .arg("mqueue:{orders}")
        .arg("0-1")
        .query(&mut client(&server))
        .unwrap();
    assert_eq!(deleted, 1);
    let next = queue.try_receive().unwrap().unwrap();
    assert_eq!(
        (next.offset(), next.attempt(), next.payload()),
        (1, 1, &b"next"[..])
    );
    let stats = queue.stats().unwrap();
    assert_eq!(
        (
            stats.unsettled,
            stats.in_flight,
            stats.nacked,
            stats.dead_letters
        ),
        (1, 1, 0, 0)
    );
    assert_eq!(queue.try_receive().unwrap(), None);
}

#[test]
fn a_nack_delay_keeps_the_message_back() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(
        &server,
        options().visibility_timeout(Duration::from_secs(60)),
    );
    queue.send("later").unwrap();
    let first = queue.try_receive().unwrap().unwrap();
    // Given back for the whole visibility timeout: not receivable now.
    queue.nack(&first, Duration::from_secs(60)).unwrap();
    assert_eq!(queue.try_receive().unwrap(), None);
    assert_eq!(queue.stats().unwrap().nacked, 1);
}

#[test]
fn extensions_and_delays_beyond_what_redis_can_express_are_refused() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(
        &server,
        options().visibility_timeout(Duration::from_secs(10)),
    );
    queue.send("x").unwrap();
    let delivery = queue.try_receive().unwrap().unwrap();
    queue.extend(&delivery, Duration::from_secs(10)).unwrap();
    assert!(matches!(
        queue.extend(&delivery, Duration::from_secs(11)),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        queue.nack(&delivery, Duration::from_secs(11)),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        queue.nack(&delivery, Duration::from_secs(400 * 24 * 3600)),
        Err(Error::InvalidDuration { .. })
    ));
    assert!(matches!(
        queue.send(Message::new(b"x".to_vec()).delay(Duration::from_secs(1))),
        Err(Error::Unsupported { .. })
    ));
    // The refused calls changed nothing: the lease is still this delivery's.
    queue.ack(&delivery).unwrap();
}

#[test]
fn bad_messages_and_a_full_queue_are_refused() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options().capacity(2).max_message_bytes(4));
    assert!(matches!(
        queue.send("too long"),
        Err(Error::MessageTooLarge { len: 8, max: 4 })
    ));
    assert!(matches!(
        queue.send(Message::new(b"x".to_vec()).id(Vec::new())),
        Err(Error::InvalidMessageId { len: 0 })
    ));
    assert!(matches!(
        queue.send(Message::new(b"x".to_vec()).id(vec![b'i'; 256])),
        Err(Error::InvalidMessageId { len: 256 })
    ));
    queue.send("1").unwrap();
    queue.send("2").unwrap();
    assert!(matches!(queue.send("3"), Err(Error::Full { capacity: 2 })));
    let delivery = queue.try_receive().unwrap().unwrap();
    queue.ack(&delivery).unwrap();
    assert_eq!(queue.send("3").unwrap().offset, 2);

    for bad in [
        options().visibility_timeout(Duration::ZERO),
        options().max_deliveries(0),
        options().capacity(0),
        options().dedup_window(Duration::ZERO),
        // The socket calls refuse a zero timeout: every call would fail.
        options().timeout(Duration::ZERO),
    ] {
        assert!(matches!(
            RedisQueue::new(&server.url(), QUEUE, bad),
            Err(Error::InvalidOptions { .. })
        ));
    }
    for bad in [
        options().consumer(""),
        options().consumer(infra_mqueue::redis::NACKED_CONSUMER),
        options().group(""),
    ] {
        assert!(matches!(
            RedisQueue::new(&server.url(), QUEUE, bad),
            Err(Error::InvalidName { .. })
        ));
    }
    assert!(matches!(
        RedisQueue::new(&server.url(), "", options()),
        Err(Error::InvalidName { .. })
    ));
}

#[test]
fn a_repeated_message_id_within_the_window_is_stored_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options().dedup_window(Duration::from_secs(600)));
    let first = queue
        .send(Message::new(b"charge".to_vec()).id(b"payment-42".to_vec()))
        .unwrap();
    let again = queue
        .send(Message::new(b"charge again".to_vec()).id(b"payment-42".to_vec()))
        .unwrap();
    let other = queue
        .send(Message::new(b"other".to_vec()).id(b"payment-43".to_vec()))
        .unwrap();
    assert_eq!((first.offset, first.duplicate), (0, false));
    assert_eq!((again.offset, again.duplicate), (0, true));
    assert_eq!((other.offset, other.duplicate), (1, false));
    // Still a duplicate once the first send is settled, within the window.
    let delivery = queue.try_receive().unwrap().unwrap();
    assert_eq!(delivery.payload(), b"charge");
    queue.ack(&delivery).unwrap();
    let after = queue
        .send(Message::new(b"charge".to_vec()).id(b"payment-42".to_vec()))
        .unwrap();
    assert_eq!((after.offset, after.duplicate), (0, true));
    assert_eq!(queue.stats().unwrap().unsettled, 1);

    // Without a window, ids are not looked at.
    let plain = RedisQueue::new(&server.url(), "plain", options()).unwrap();
    for _ in 0..2 {
        let sent = plain
            .send(Message::new(b"x".to_vec()).id(b"same".to_vec()))
            .unwrap();
        assert!(!sent.duplicate);
    }
}

#[test]
fn two_consumers_never_hold_the_same_message_at_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    const MESSAGES: u64 = 300;
    let producer = queue(&server, options());
    for i in 0..MESSAGES {
        producer.send(i.to_string().into_bytes()).unwrap();
    }
    let url = server.url();
    let workers: Vec<_> = (0..2)
        .map(|worker| {
            let url = url.clone();
            thread::spawn(move || {
                let queue =
                    RedisQueue::new(&url, QUEUE, options().consumer(format!("worker-{worker}")))
                        .unwrap();
                let mut got = Vec::new();
                // No lease runs out (30 s): every message is delivered once, to one worker.
                while let Some(delivery) = queue.try_receive().unwrap() {
                    assert_eq!(delivery.attempt(), 1);
                    assert_eq!(delivery.payload(), delivery.offset().to_string().as_bytes());
                    got.push(delivery.offset());
                    queue.ack(&delivery).unwrap();
                }
                got
            })
        })
        .collect();
    let results: Vec<Vec<u64>> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let total: usize = results.iter().map(Vec::len).sum();
    let distinct: BTreeSet<u64> = results.iter().flatten().copied().collect();
    assert_eq!(total, MESSAGES as usize, "a message was delivered twice");
    assert_eq!(distinct, (0..MESSAGES).collect());
    for got in &results {
        assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
    }
    assert_eq!(producer.stats().unwrap().unsettled, 0);
}

#[test]
fn a_killed_and_restarted_server_keeps_every_sent_message() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    // The test kit runs Redis with `appendfsync always`: a send returns after its fsync. A
    // killed process loses nothing the kernel holds anyway; this checks the setting, and the
    // crash covered is the server process's, not the machine's.
    const MESSAGES: u64 = 200;
    let fsync: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query(&mut client(&server))
        .unwrap();
    assert_eq!(fsync, ["appendfsync", "always"]);
    let shared = Arc::new(queue(&server, options()));
    let senders: Vec<_> = (0..2)
        .map(|sender| {
            let queue = Arc::clone(&shared);
            thread::spawn(move || {
                for i in 0..MESSAGES / 2 {
                    queue.send(format!("{sender}-{i}").into_bytes()).unwrap();
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    let held = shared.try_receive().unwrap().unwrap();
    server.kill();
    server.restart().unwrap();

    // A fresh handle: the old one's pooled connections died with the server.
    let queue = queue(&server, options());
    let stats = queue.stats().unwrap();
    assert_eq!((stats.unsettled, stats.in_flight), (MESSAGES, 1));
    // The lease held before the crash is still this delivery's.
    queue.extend(&held, Duration::from_secs(30)).unwrap();
    let mut payloads = BTreeSet::new();
    let mut previous = held.offset();
    while let Some(delivery) = queue.try_receive().unwrap() {
        assert!(delivery.offset() > previous);
        previous = delivery.offset();
        payloads.insert(delivery.payload().to_vec());
        queue.ack(&delivery).unwrap();
    }
    payloads.insert(held.payload().to_vec());
    queue.ack(&held).unwrap();
    let expected: BTreeSet<Vec<u8>> = (0..2)
        .flat_map(|sender| (0..MESSAGES / 2).map(move |i| format!("{sender}-{i}").into_bytes()))
        .collect();
    assert_eq!(payloads, expected);
    assert_eq!(queue.stats().unwrap().unsettled, 0);
}

impl refusals::Backend for RedisQueue {
    fn send(&self, payload: &'static [u8]) {
        RedisQueue::send(self, payload).unwrap();
    }
    fn receive(&self) -> Receipt {
        self.try_receive().unwrap().expect("a message").receipt()
    }
    fn ack(&self, receipt: Receipt) -> Result<(), Error> {
        RedisQueue::ack(self, receipt)
    }
    fn nack(&self, receipt: Receipt) -> Result<(), Error> {
        RedisQueue::nack(self, receipt, Duration::ZERO)
    }
    fn extend(&self, receipt: Receipt) -> Result<(), Error> {
        RedisQueue::extend(self, receipt, Duration::from_secs(1))
    }
    fn term(&self, receipt: Receipt) -> Result<(), Error> {
        RedisQueue::term(self, receipt)
    }
}

#[test]
fn attempts_never_made_are_unknown_deliveries() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    refusals::attempts_never_made_are_unknown_deliveries(&queue(&server, options()));
}

const MODEL_CAPACITY: usize = 6;
const MODEL_MAX_BYTES: usize = 8;
const MODEL_MAX_DELIVERIES: u32 = 3;
/// A lease no test outlives: in the model no time passes, so only nacks and extensions to
/// zero make a delivered message available again.
const MODEL_LEASE_SECS: u64 = 3600;

#[derive(Clone, Debug)]
enum Op {
    Send(usize),
    Receive,
    Ack(usize),
    Nack(usize),
    /// Extend by nothing (the lease ends now) or by 10 minutes.
    Extend(usize, bool),
    Term(usize),
    Forged {
        offset: u64,
        attempt: u32,
    },
}

// `prop_oneof!` expands to a `std` `Arc`, a type the workspace clippy.toml keeps behind
// infra_common::sync; this is single-threaded test code.
#[allow(clippy::disallowed_types)]
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..=MODEL_MAX_BYTES + 2).prop_map(Op::Send),
        5 => Just(Op::Receive),
        3 => (0..8usize).prop_map(Op::Ack),
        2 => (0..8usize).prop_map(Op::Nack),
        1 => (0..8usize, any::<bool>()).prop_map(|(i, longer)| Op::Extend(i, longer)),
        1 => (0..8usize).prop_map(Op::Term),
        1 => (0..20u64, 0..5u32).prop_map(|(offset, attempt)| Op::Forged { offset, attempt }),
    ]
}

/// Runs `ops` on a fresh queue `name` and on the model, comparing every step.
fn follow_the_model(url: &str, name: &str, ops: &[Op]) {
    let options = options()
        .visibility_timeout(Duration::from_secs(MODEL_LEASE_SECS))
        .max_deliveries(MODEL_MAX_DELIVERIES)
        .capacity(MODEL_CAPACITY as u64)
        .max_message_bytes(MODEL_MAX_BYTES);
    let queue = RedisQueue::new(url, name, options).unwrap();
    let mut model = Model::new(Rules {
        lease: MODEL_LEASE_SECS,
        max_deliveries: MODEL_MAX_DELIVERIES,
        capacity: MODEL_CAPACITY,
        window: 0,
        max_bytes: MODEL_MAX_BYTES,
    });
    let mut receipts: Vec<Receipt> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        let (got, want) = match *op {
            Op::Send(len) => {
                // Distinct payloads, so a delivery of the wrong message shows.
                let payload: Vec<u8> = (0..len).map(|i| (step + i) as u8).collect();
                (
                    outcome_of_send(queue.send(payload.clone())),
                    model.send(payload, None, 0),
                )
            }
            Op::Receive => {
                let got = queue.try_receive().unwrap().map(|delivery| {
                    receipts.push(delivery.receipt());
                    (
                        delivery.offset(),
                        delivery.attempt(),
                        delivery.payload().to_vec(),
                    )
                });
                (Outcome::Got(got), model.receive())
            }
            Op::Ack(i) | Op::Nack(i) | Op::Extend(i, _) | Op::Term(i) => {
                let Some(&receipt) = receipts.get(i % receipts.len().max(1)) else {
                    continue;
                };
                let (offset, attempt, now) = (receipt.offset(), receipt.attempt(), model.now);
                let (got, change) = match *op {
                    Op::Ack(_) => (queue.ack(receipt), Status::Done),
                    Op::Term(_) => (queue.term(receipt), Status::Done),
                    Op::Nack(_) => (queue.nack(receipt, Duration::ZERO), Status::Ready(now)),
                    Op::Extend(_, longer) => {
                        let by = if longer { 600 } else { 0 };
                        (
                            queue.extend(receipt, Duration::from_secs(by)),
                            Status::Leased(attempt, now + by),
                        )
                    }
                    _ => unreachable!("matched above"),
                };
                (
                    outcome_of_settle(got),
                    model.settle(offset, attempt, change),
                )
            }
            Op::Forged { offset, attempt } => (
                outcome_of_settle(queue.ack(Receipt::new(offset, attempt))),
                model.settle(offset, attempt, Status::Done),
            ),
        };
        assert_eq!(got, want, "step {step}: {op:?}");
        let stats = queue.stats().unwrap();
        assert_eq!(
            stats.unsettled,
            model.unsettled() as u64,
            "step {step}: unsettled"
        );
        assert_eq!(
            stats.in_flight,
            model.leased() as u64,
            "step {step}: in flight"
        );
    }
    let dead: Vec<(u64, u32, Vec<u8>)> = queue
        .dead_letters(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|letter| (letter.offset, letter.deliveries, letter.payload.to_vec()))
        .collect();
    assert_eq!(dead, model.dead);
}

#[test]
fn the_redis_queue_follows_the_work_queue_model() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let case = std::cell::Cell::new(0u64);
    let config = ProptestConfig {
        // 64 cases (each a fresh queue on a real server) unless PROPTEST_CASES asks for more.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(64),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..60))| {
        // A fresh queue per case (and per shrinking step) on the one server.
        case.set(case.get() + 1);
        follow_the_model(&url, &format!("model-{}", case.get()), &ops);
    });
}

#[cfg(feature = "metrics")]
#[test]
fn metrics_count_each_call_under_the_queue_name() {
    use infra_mqueue::redis::metrics::{
        ACKS_TOTAL, BACKEND_ERRORS_TOTAL, DEAD_LETTERED_TOTAL, DELIVERIES_TOTAL, DUPLICATES_TOTAL,
        REDELIVERIES_TOTAL, REFUSED_TOTAL, SENDS_TOTAL,
    };
    use infra_testkit::metrics::{counters, value};
    use metrics_util::debugging::DebuggingRecorder;

    let Some(server) = RedisServer::start() else {
        return;
    };
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let named = options()
            .max_deliveries(2)
            .dedup_window(Duration::from_secs(600))
            .metrics_name("orders");
        let queue = queue(&server, named);
        queue.send(Message::new("a").id("a")).unwrap();
        assert!(queue.send(Message::new("a").id("a")).unwrap().duplicate);
        queue.send("b").unwrap();
        let first = queue.try_receive().unwrap().unwrap(); // "a", attempt 1
        queue.nack(&first, Duration::ZERO).unwrap();
        let second = queue.try_receive().unwrap().unwrap(); // "a", attempt 2
        assert_eq!((second.offset(), second.attempt()), (0, 2));
        assert!(queue.ack(&first).is_err()); // refused: redelivered
        queue.nack(&second, Duration::ZERO).unwrap();
        let b = queue.try_receive().unwrap().unwrap(); // "a" dead-lettered, then "b"
        assert_eq!(b.payload(), b"b");
        queue.ack(&b).unwrap();
        assert!(queue.try_receive().unwrap().is_none());
        // A handle on a port nothing listens on: every call is a backend error.
        let dead_port = RedisQueue::new(
            "redis://127.0.0.1:1/",
            QUEUE,
            options()
                .timeout(Duration::from_secs(5))
                .metrics_name("nowhere"),
        )
        .unwrap();
        assert!(matches!(dead_port.send("x"), Err(Error::Backend { .. })));
        assert!(matches!(
            dead_port.try_receive(),
            Err(Error::Backend { .. })
        ));
    });
    let series = counters(&snapshotter);
    let orders = |name| value(&series, name, &[("queue", "orders")]);
    assert_eq!(orders(SENDS_TOTAL), Some(2));
    assert_eq!(orders(DUPLICATES_TOTAL), Some(1));
    assert_eq!(orders(DELIVERIES_TOTAL), Some(3));
    assert_eq!(orders(REDELIVERIES_TOTAL), Some(1));
    assert_eq!(orders(ACKS_TOTAL), Some(1));
    assert_eq!(orders(DEAD_LETTERED_TOTAL), Some(1));
    assert_eq!(orders(REFUSED_TOTAL), Some(1));
    assert_eq!(orders(BACKEND_ERRORS_TOTAL), Some(0));
    let nowhere = |name| value(&series, name, &[("queue", "nowhere")]);
    assert_eq!(nowhere(BACKEND_ERRORS_TOTAL), Some(2));
    assert_eq!(nowhere(SENDS_TOTAL), Some(0));
}

/// Makes every pending entry of the queue's stream look idle for an hour, as if its lease ran
/// out long ago, without counting a delivery (`JUSTID`): the server's clock need not move.
fn age_every_lease(server: &RedisServer) {
    let stream = format!("mqueue:{{{QUEUE}}}");
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(&stream)
        .arg("workers")
        .arg("-")
        .arg("+")
        .arg(1000)
        .query(&mut client(server))
        .unwrap();
    for (id, holder, _, _) in pending {
        let _: Vec<String> = redis::cmd("XCLAIM")
            .arg(&stream)
            .arg("workers")
            .arg(&holder)
            .arg(0)
            .arg(&id)
            .arg("IDLE")
            .arg(3_600_000)
            .arg("JUSTID")
            .query(&mut client(server))
            .unwrap();
    }
}

#[test]
fn entries_another_client_wrote_are_corrupt_messages_that_end_as_dead_letters() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options().max_message_bytes(16).max_deliveries(1));
    let stream = format!("mqueue:{{{QUEUE}}}");
    let foreign = |fields: &[(&str, Vec<u8>)]| {
        let mut command = redis::cmd("XADD");
        command.arg(&stream).arg("0-*");
        for (name, value) in fields {
            command.arg(*name).arg(value.as_slice());
        }
        let _: String = command.query(&mut client(&server)).unwrap();
    };
    foreign(&[("other", b"x".to_vec())]);
    // Far above max_message_bytes: the receive must not carry it to the client.
    foreign(&[("p", vec![b'z'; 1 << 20])]);
    assert_eq!(queue.send("fine").unwrap().offset, 2);

    let missing = queue.try_receive();
    assert!(
        matches!(missing, Err(Error::CorruptMessage { offset: 0, .. })),
        "{missing:?}"
    );
    let oversized = queue.try_receive().map(|d| d.map(|d| d.payload().len()));
    assert!(
        matches!(oversized, Err(Error::CorruptMessage { offset: 1, .. })),
        "{oversized:?}"
    );
    let fine = queue.try_receive().unwrap().unwrap();
    assert_eq!((fine.offset(), fine.payload()), (2, &b"fine"[..]));
    queue.ack(&fine).unwrap();

    // Both stay leased to this handle; once their leases run out, the next receive finds them
    // at max_deliveries and moves them to the dead-letter stream.
    age_every_lease(&server);
    assert_eq!(queue.try_receive().unwrap(), None);
    let stats = queue.stats().unwrap();
    assert_eq!(
        (stats.unsettled, stats.in_flight, stats.dead_letters),
        (0, 0, 2)
    );

    // Reading them back says what is wrong with each, at its position, and carries no
    // payload past max_message_bytes (the dead letter keeps it for an operator).
    let read = queue.dead_letters(0, 10);
    assert!(
        matches!(&read, Err(Error::CorruptMessage { offset: 0, reason }) if reason.contains("payload")),
        "{read:?}"
    );
    let read = queue.dead_letters(1, 10).map(|letters| letters.len());
    assert!(
        matches!(&read, Err(Error::CorruptMessage { offset: 1, reason }) if reason.contains("longer")),
        "{read:?}"
    );
    assert!(queue.dead_letters(2, 10).unwrap().is_empty());
    type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>;
    let kept: Entries = redis::cmd("XRANGE")
        .arg(format!("{stream}:dlq"))
        .arg("0-2")
        .arg("0-2")
        .query(&mut client(&server))
        .unwrap();
    let payload = kept[0].1.iter().find(|(name, _)| name == "p");
    assert_eq!(payload.map(|(_, p)| p.len()), Some(1 << 20));
}

#[test]
fn after_a_server_restart_reads_are_resent_and_sends_are_not() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options().dedup_window(Duration::from_secs(600)));
    let first = queue
        .send(Message::new(b"charge".to_vec()).id(b"payment-42".to_vec()))
        .unwrap();
    assert_eq!((first.offset, first.duplicate), (0, false));

    // Each restart leaves the handle one pooled connection the server has closed.
    server.kill();
    server.restart().unwrap();
    assert_eq!(queue.stats().unwrap().unsettled, 1);
    server.stop();
    server.restart().unwrap();
    assert!(queue.dead_letters(0, 10).unwrap().is_empty());
    server.stop();
    server.restart().unwrap();
    let lost = queue.send("not stored");
    assert!(matches!(lost, Err(Error::Backend { .. })), "{lost:?}");
    assert_eq!(queue.stats().unwrap().unsettled, 1);

    // The dedup key came back with the stream: a retry after the crash is still a duplicate.
    let retry = queue
        .send(Message::new(b"charge".to_vec()).id(b"payment-42".to_vec()))
        .unwrap();
    assert_eq!((retry.offset, retry.duplicate), (0, true));
    assert_eq!(queue.send("stored").unwrap().offset, 1);
}

#[test]
fn a_dead_letter_another_client_wrote_is_reported_at_its_position() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options().max_deliveries(1));
    let dead_letter_one = |payload: &'static str| {
        queue.send(payload).unwrap();
        let delivery = queue.try_receive().unwrap().unwrap();
        queue.nack(&delivery, Duration::ZERO).unwrap();
        assert_eq!(queue.try_receive().unwrap(), None);
    };
    dead_letter_one("poison");
    let _: String = redis::cmd("XADD")
        .arg(format!("mqueue:{{{QUEUE}}}:dlq"))
        .arg("0-*")
        .arg("offset")
        .arg("not an offset")
        .query(&mut client(&server))
        .unwrap();
    dead_letter_one("poison too");

    let read = queue.dead_letters(0, 10);
    assert!(
        matches!(read, Err(Error::CorruptMessage { offset: 1, .. })),
        "{read:?}"
    );
    // Its position lets a reader step over it.
    let before = queue.dead_letters(0, 1).unwrap();
    let after = queue.dead_letters(2, 10).unwrap();
    assert_eq!(
        (before.len(), &before[0].payload[..], before[0].position),
        (1, &b"poison"[..], 0)
    );
    assert_eq!(
        (after.len(), &after[0].payload[..], after[0].position),
        (1, &b"poison too"[..], 2)
    );
}

#[test]
fn names_that_would_break_the_key_layout_are_refused() {
    // No server needed: a handle connects on its first call.
    let url = "redis://127.0.0.1:1/";
    // The queue `a}:id:b` would be the stream `mqueue:{a}:id:b}`, which is the dedup key of
    // message id `b}` in queue `a`; a brace in the prefix moves the hash tag off the name.
    for name in ["a}:id:b", "{a}", "a{b"] {
        let refused = RedisQueue::new(url, name, options());
        assert!(
            matches!(refused, Err(Error::InvalidName { .. })),
            "{name}: {refused:?}"
        );
    }
    for prefix in ["mq{x}", "mq}"] {
        let refused = RedisQueue::new(url, QUEUE, options().prefix(prefix));
        assert!(
            matches!(refused, Err(Error::InvalidName { .. })),
            "{prefix}: {refused:?}"
        );
    }
    assert!(RedisQueue::new(url, "orders:eu-1", options().prefix("app:mq")).is_ok());
}

#[test]
fn an_entry_with_a_time_based_id_in_the_dead_letter_stream_stops_every_dead_letter() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options().max_deliveries(1));
    queue.send("poison").unwrap();
    let delivery = queue.try_receive().unwrap().unwrap();
    queue.nack(&delivery, Duration::ZERO).unwrap();
    let dlq = format!("mqueue:{{{QUEUE}}}:dlq");
    let by_hand = add_by_hand(&server, &dlq, "*", &[("p", b"by hand")]);
    // Redis refuses the id 0-N after it: the receive that would dead-letter the nacked
    // message fails, every time, while sends go on.
    for _ in 0..2 {
        let receive = queue.try_receive();
        assert!(matches!(receive, Err(Error::Backend { .. })), "{receive:?}");
    }
    assert_eq!(queue.send("next").unwrap().offset, 1);
    assert_eq!(queue.stats().unwrap().unsettled, 2);
    // Reading the dead letters names it: it has no position.
    let read = queue.dead_letters(0, 10);
    assert!(
        matches!(&read, Err(Error::ForeignEntry { id, .. }) if *id == by_hand),
        "{read:?}"
    );
    // Nor can a send dead-letter an entry with a time-based id in the queue's stream.
    add_by_hand(&server, &format!("mqueue:{{{QUEUE}}}"), "*", &[("p", b"x")]);
    let send = queue.send("blocked");
    assert!(matches!(send, Err(Error::Backend { .. })), "{send:?}");
}

#[test]
fn a_receive_dead_letters_a_bounded_number_of_messages() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // A script runs to its end while the server answers nobody else: one receive must not
    // sweep every expired message at once.
    const POISON: u64 = 100;
    const PER_RECEIVE: u64 = 64;
    let queue = queue(&server, options().max_deliveries(1));
    for i in 0..POISON {
        queue.send(i.to_string().into_bytes()).unwrap();
        queue.try_receive().unwrap().unwrap();
    }
    age_every_lease(&server);
    queue.send("fresh").unwrap();

    let fresh = queue.try_receive().unwrap().unwrap();
    assert_eq!(fresh.payload(), b"fresh");
    assert_eq!(queue.stats().unwrap().dead_letters, PER_RECEIVE);
    assert_eq!(queue.try_receive().unwrap(), None);
    let stats = queue.stats().unwrap();
    assert_eq!((stats.dead_letters, stats.unsettled), (POISON, 1));
    let offsets: Vec<u64> = queue
        .dead_letters(0, usize::MAX)
        .unwrap()
        .iter()
        .map(|letter| letter.offset)
        .collect();
    assert_eq!(offsets, (0..POISON).collect::<Vec<_>>());
}

#[test]
fn a_message_id_is_remembered_for_the_window_from_its_first_send() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options().dedup_window(Duration::from_secs(600)));
    let key = format!("mqueue:{{{QUEUE}}}:id:payment-42");
    let millis_left = || -> i64 {
        redis::cmd("PTTL")
            .arg(&key)
            .query(&mut client(&server))
            .unwrap()
    };
    let send = || {
        queue
            .send(Message::new(b"charge".to_vec()).id(b"payment-42".to_vec()))
            .unwrap()
    };
    assert!(!send().duplicate);
    let left = millis_left();
    assert!(0 < left && left <= 600_000, "{left} ms");

    // A duplicate does not start the window again.
    let _: bool = redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(60_000)
        .query(&mut client(&server))
        .unwrap();
    assert!(send().duplicate);
    let left = millis_left();
    assert!(0 < left && left <= 60_000, "{left} ms");

    // Once the window is over (its end moved to the past), the id is new again.
    let _: bool = redis::cmd("PEXPIREAT")
        .arg(&key)
        .arg(1)
        .query(&mut client(&server))
        .unwrap();
    let again = send();
    assert_eq!((again.offset, again.duplicate), (1, false));
}

#[test]
fn a_destroyed_group_is_recreated_and_delivers_every_unsettled_message_again() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options());
    queue.send("a").unwrap();
    let before = queue.try_receive().unwrap().unwrap();
    let destroyed: u64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(format!("mqueue:{{{QUEUE}}}"))
        .arg("workers")
        .query(&mut client(&server))
        .unwrap();
    assert_eq!(destroyed, 1);
    // The delivery counts went with the group: the message is attempt 1 again, and the
    // receipt from before the loss settles the new delivery.
    let after = queue.try_receive().unwrap().unwrap();
    assert_eq!(
        (after.offset(), after.attempt()),
        (before.offset(), before.attempt())
    );
    queue.ack(&before).unwrap();
    assert!(matches!(
        queue.ack(&after),
        Err(Error::AlreadySettled { offset: 0 })
    ));
}

/// The commands other than stream commands (those the scripts run) among [`command_calls`],
/// leaving out the reset and the `INFO` that reads them.
fn client_command_calls(server: &RedisServer) -> Vec<(String, u64)> {
    command_calls(server)
        .into_iter()
        .filter(|(command, _)| {
            !command.starts_with('x') && command != "info" && command != "config|resetstat"
        })
        .collect()
}

#[test]
fn each_send_receive_settle_and_stats_is_one_script_call() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let reset = || {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut client(&server))
            .unwrap();
    };
    let queue = queue(&server, options());
    // The first call checks the eviction policy, the first of each script loads it (EVALSHA,
    // NOSCRIPT, EVAL).
    reset();
    queue.send("a").unwrap();
    let first = queue.try_receive().unwrap().unwrap();
    queue.nack(&first, Duration::ZERO).unwrap();
    queue.stats().unwrap();
    assert_eq!(
        client_command_calls(&server),
        [
            ("config|get".to_owned(), 1),
            ("eval".to_owned(), 4),
            ("evalsha".to_owned(), 4)
        ]
    );
    reset();

    queue.send("b").unwrap();
    let again = queue.try_receive().unwrap().unwrap();
    queue.extend(&again, Duration::from_secs(1)).unwrap();
    queue.ack(&again).unwrap();
    queue.stats().unwrap();
    assert_eq!(client_command_calls(&server), [("evalsha".to_owned(), 5)]);
}

/// Adds an entry to `key` with the id `id` (`*` for a time-based one, as another client
/// would), as `XADD` does by hand; answers the entry's id.
fn add_by_hand(server: &RedisServer, key: &str, id: &str, fields: &[(&str, &[u8])]) -> String {
    let mut command = redis::cmd("XADD");
    command.arg(key).arg(id);
    for (name, value) in fields {
        command.arg(*name).arg(*value);
    }
    command.query(&mut client(server)).unwrap()
}

#[test]
fn an_entry_added_with_a_time_based_id_is_named_and_the_queue_goes_on() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options());
    let stream = format!("mqueue:{{{QUEUE}}}");
    queue.send("before").unwrap();
    let by_hand = add_by_hand(&server, &stream, "*", &[("p", b"by hand")]);
    let before = queue.try_receive().unwrap().unwrap();
    queue.ack(&before).unwrap();

    let foreign = queue.try_receive();
    assert!(
        matches!(&foreign, Err(Error::ForeignEntry { id, .. }) if *id == by_hand),
        "{foreign:?}"
    );
    // The group's last-delivered id is the entry's until a send takes the ids back: a stale
    // ack of a settled message cannot be told from one of a message never sent.
    assert!(matches!(
        queue.ack(&before),
        Err(Error::UnknownDelivery { offset: 0, .. })
    ));
    // Redis gives no id below a time-based one: the next send moves the entry to the dead
    // letters and gives the stream back its own ids, so messages after it are delivered.
    let after = queue.send("after").unwrap();
    assert!(after.offset > before.offset(), "{after:?}");
    let next = queue.try_receive().unwrap().unwrap();
    assert_eq!(
        (next.offset(), next.payload()),
        (after.offset, &b"after"[..])
    );
    queue.ack(&next).unwrap();
    assert!(matches!(
        queue.ack(&before),
        Err(Error::AlreadySettled { offset: 0 })
    ));
    assert_eq!(queue.try_receive().unwrap(), None);
    let stats = queue.stats().unwrap();
    assert_eq!(
        (stats.unsettled, stats.in_flight, stats.dead_letters),
        (0, 0, 1)
    );
    let read = queue.dead_letters(0, 10);
    assert!(
        matches!(&read, Err(Error::CorruptMessage { offset: 0, reason }) if reason.contains("time-based")),
        "{read:?}"
    );
}

#[test]
fn an_entry_with_a_time_based_id_and_no_send_after_it_is_dead_lettered_like_any_corrupt_entry() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options().max_deliveries(1));
    let stream = format!("mqueue:{{{QUEUE}}}");
    let by_hand = add_by_hand(&server, &stream, "*", &[("other", b"x")]);
    let foreign = queue.try_receive();
    assert!(
        matches!(&foreign, Err(Error::ForeignEntry { id, .. }) if *id == by_hand),
        "{foreign:?}"
    );
    // It stays leased; once its lease runs out, the next receive finds it at max_deliveries.
    age_every_lease(&server);
    assert_eq!(queue.try_receive().unwrap(), None);
    let stats = queue.stats().unwrap();
    assert_eq!((stats.unsettled, stats.dead_letters), (0, 1));
    // Its id is no longer in the way of the next send.
    let next = queue.send("next").unwrap();
    let delivery = queue.try_receive().unwrap().unwrap();
    assert_eq!(
        (delivery.offset(), delivery.payload()),
        (next.offset, &b"next"[..])
    );
}

/// The bytes the server has sent to its clients so far (`INFO stats`).
fn bytes_sent_by_server(server: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut client(server))
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("total_net_output_bytes:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

#[test]
fn a_dead_letter_listing_carries_no_field_past_its_limit() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options().max_message_bytes(16));
    let dlq = format!("mqueue:{{{QUEUE}}}:dlq");
    let huge = vec![b'7'; 1 << 20];
    let many: Vec<(String, &[u8])> = (0..10_000).map(|i| (format!("f{i}"), &b"v"[..])).collect();
    let mut crowded: Vec<(&str, &[u8])> =
        vec![("offset", b"0-4"), ("deliveries", b"1"), ("p", b"d")];
    crowded.extend(many.iter().map(|(name, value)| (name.as_str(), *value)));
    let letters: [Vec<(&str, &[u8])>; 4] = [
        vec![("offset", &huge), ("deliveries", b"1"), ("p", b"a")],
        vec![("offset", b"0-2"), ("deliveries", &huge), ("p", b"b")],
        vec![
            ("offset", b"0-3"),
            ("deliveries", b"1"),
            ("p", b"c"),
            ("note", &huge),
        ],
        crowded,
    ];
    for fields in &letters {
        add_by_hand(&server, &dlq, "0-*", fields);
    }

    // Each read is one entry; a reply past a few KiB carried a field the handle never reads.
    let read = |position| {
        let sent = bytes_sent_by_server(&server);
        let read = queue.dead_letters(position, 1);
        let carried = bytes_sent_by_server(&server) - sent;
        assert!(carried < 16 << 10, "position {position}: {carried} bytes");
        read
    };
    for position in [0, 1] {
        let oversized = read(position);
        assert!(
            matches!(&oversized, Err(Error::CorruptMessage { offset, reason }) if *offset == position && reason.contains("longer")),
            "{oversized:?}"
        );
    }
    for (position, payload) in [(2, b"c"), (3, b"d")] {
        let letters = read(position).unwrap();
        assert_eq!(
            (letters.len(), letters[0].offset, &letters[0].payload[..]),
            (1, position, &payload[..])
        );
    }
}

#[test]
fn one_dead_letters_call_reads_at_most_its_page_limit() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options());
    let dlq = format!("mqueue:{{{QUEUE}}}:dlq");
    let total = MAX_DEAD_LETTERS_PER_CALL + 50;
    for offset in 0..total {
        let id = format!("0-{}", offset + 1);
        add_by_hand(
            &server,
            &dlq,
            "0-*",
            &[("offset", id.as_bytes()), ("deliveries", b"1"), ("p", b"x")],
        );
    }
    let first = queue.dead_letters(0, usize::MAX).unwrap();
    assert_eq!(first.len(), MAX_DEAD_LETTERS_PER_CALL);
    let next = u64::try_from(MAX_DEAD_LETTERS_PER_CALL).unwrap();
    assert_eq!(first.last().unwrap().position, next - 1);
    let rest = queue.dead_letters(next, usize::MAX).unwrap();
    assert_eq!(rest.len(), total - MAX_DEAD_LETTERS_PER_CALL);
}

#[test]
fn a_send_dead_letters_a_bounded_number_of_entries_with_a_time_based_id() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options());
    let stream = format!("mqueue:{{{QUEUE}}}");
    let first = queue.send("first").unwrap();
    // Never received: each is dead-lettered with no delivery, after one send's share of 64.
    for _ in 0..65 {
        add_by_hand(&server, &stream, "*", &[("p", b"by hand")]);
    }
    let blocked = queue.send("second");
    assert!(
        matches!(blocked, Err(Error::Unsupported { .. })),
        "{blocked:?}"
    );
    assert_eq!(queue.stats().unwrap().dead_letters, 64);
    let second = queue.send("second").unwrap();
    assert_eq!(queue.stats().unwrap().dead_letters, 65);
    for sent in [first, second] {
        let delivery = queue.try_receive().unwrap().unwrap();
        assert_eq!(delivery.offset(), sent.offset);
        queue.ack(&delivery).unwrap();
    }
    let letters = queue.dead_letters(0, 1);
    assert!(
        matches!(&letters, Err(Error::CorruptMessage { offset: 0, reason }) if reason.contains("time-based")),
        "{letters:?}"
    );
}

/// Receives every ready message and acks it, answering their offsets.
fn drain(queue: &RedisQueue) -> Vec<u64> {
    let mut offsets = Vec::new();
    while let Some(delivery) = queue.try_receive().unwrap() {
        offsets.push(delivery.offset());
        queue.ack(&delivery).unwrap();
    }
    offsets
}

#[test]
fn ids_taken_back_twice_after_an_entry_added_by_hand_above_the_queues_are_never_given_again() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options());
    let stream = format!("mqueue:{{{QUEUE}}}");
    queue.send("a").unwrap();
    // An entry added by hand with a `0-N` id above the queue's: the queue's ids go on after it,
    // past the count of entries ever added.
    add_by_hand(&server, &stream, "0-5", &[("p", b"by hand")]);
    let b = queue.send("b").unwrap();
    assert_eq!(drain(&queue), [0, 4, b.offset]);
    // Twice an entry with a time-based id, each time taken back by the next send once
    // everything before it is settled and deleted.
    add_by_hand(&server, &stream, "*", &[("p", b"first")]);
    let c = queue.send("c").unwrap();
    assert!(c.offset > b.offset, "{c:?} after {b:?}");
    assert_eq!(drain(&queue), [c.offset]);
    add_by_hand(&server, &stream, "*", &[("p", b"second")]);
    let d = queue.send("d").unwrap();
    assert!(d.offset > c.offset, "{d:?} after {c:?}");
    assert_eq!(drain(&queue), [d.offset]);
}

#[test]
fn an_entry_added_by_hand_with_an_id_past_2_to_the_53_does_not_stop_the_sends() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options());
    let stream = format!("mqueue:{{{QUEUE}}}");
    // 2^53 + 1: the nearest number a Lua script can hold is 2^53, below the entry's id.
    let high = add_by_hand(&server, &stream, "0-9007199254740993", &[("p", b"high")]);
    add_by_hand(&server, &stream, "*", &[("p", b"by hand")]);
    let sent = queue.send("after").unwrap();
    assert_eq!(sent.offset, 9_007_199_254_740_993, "after {high}");
    let high = queue.try_receive().unwrap().unwrap();
    assert_eq!(high.offset(), 9_007_199_254_740_992);
    queue.ack(&high).unwrap();
    // The entry with the time-based id went to the dead letters; the message is next.
    assert_eq!(drain(&queue), [sent.offset]);
}

#[test]
fn an_entry_with_a_time_based_id_a_receive_dead_letters_leaves_the_ids_given_before_it_used() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options().max_deliveries(1));
    let stream = format!("mqueue:{{{QUEUE}}}");
    queue.send("a").unwrap();
    add_by_hand(&server, &stream, "0-5", &[("p", b"by hand")]);
    let b = queue.send("b").unwrap();
    let first = queue.try_receive().unwrap().unwrap();
    queue.ack(&first).unwrap();
    let by_hand = queue.try_receive().unwrap().unwrap();
    queue.ack(&by_hand).unwrap();
    let stale = queue.try_receive().unwrap().unwrap();
    assert_eq!(stale.offset(), b.offset);
    queue.ack(&stale).unwrap();
    // An entry with a time-based id, dead-lettered by a receive before any send.
    add_by_hand(&server, &stream, "*", &[("p", b"by hand")]);
    assert!(matches!(
        queue.try_receive(),
        Err(Error::ForeignEntry { .. })
    ));
    age_every_lease(&server);
    assert_eq!(queue.try_receive().unwrap(), None);
    let c = queue.send("c").unwrap();
    assert!(c.offset > b.offset, "{c:?} after {b:?}");
    let d = queue.send("d").unwrap();
    assert!(d.offset > b.offset, "{d:?} after {b:?}");
    // A stale ack of the message settled before never settles a later one.
    assert!(matches!(
        queue.ack(&stale),
        Err(Error::AlreadySettled { .. })
    ));
    assert_eq!(drain(&queue), [c.offset, d.offset]);
}

#[test]
fn ids_taken_back_over_two_sends_after_an_entry_added_by_hand_above_the_queues_stay_unused() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options());
    let stream = format!("mqueue:{{{QUEUE}}}");
    queue.send("a").unwrap();
    // Above the count of entries ever added even with the 65 below.
    add_by_hand(&server, &stream, "0-100", &[("p", b"by hand")]);
    let b = queue.send("b").unwrap();
    assert_eq!(drain(&queue), [0, 99, b.offset]);
    // More than one send's share: the first send deletes 64 of them, the second the last.
    for _ in 0..65 {
        add_by_hand(&server, &stream, "*", &[("p", b"by hand")]);
    }
    assert!(matches!(queue.send("c"), Err(Error::Unsupported { .. })));
    let c = queue.send("c").unwrap();
    assert!(c.offset > b.offset, "{c:?} after {b:?}");
    assert_eq!(drain(&queue), [c.offset]);
}

#[test]
fn an_entry_with_a_time_based_id_dead_lettered_before_any_delete_leaves_the_ids_given_used() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options().max_deliveries(1));
    let stream = format!("mqueue:{{{QUEUE}}}");
    queue.send("a").unwrap();
    add_by_hand(&server, &stream, "0-5", &[("p", b"by hand")]);
    let b = queue.send("b").unwrap();
    add_by_hand(&server, &stream, "*", &[("p", b"by hand")]);
    let held: Vec<_> = (0..3)
        .map(|_| queue.try_receive().unwrap().unwrap())
        .collect();
    assert!(matches!(
        queue.try_receive(),
        Err(Error::ForeignEntry { .. })
    ));
    // Only the entry with the time-based id is dead-lettered, before anything is deleted.
    age_every_lease(&server);
    for delivery in &held {
        queue.extend(delivery, Duration::from_secs(30)).unwrap();
    }
    assert_eq!(queue.try_receive().unwrap(), None);
    assert_eq!(queue.stats().unwrap().dead_letters, 1);
    for delivery in &held {
        queue.ack(delivery).unwrap();
    }
    let c = queue.send("c").unwrap();
    assert!(c.offset > b.offset, "{c:?} after {b:?}");
    let d = queue.send("d").unwrap();
    assert!(d.offset > b.offset, "{d:?} after {b:?}");
    assert!(matches!(
        queue.ack(&held[2]),
        Err(Error::AlreadySettled { .. })
    ));
    assert_eq!(drain(&queue), [c.offset, d.offset]);
}

#[test]
fn a_dead_letter_stream_set_back_past_its_entries_added_gives_no_position_twice() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let queue = queue(&server, options().max_deliveries(1));
    let dlq = format!("mqueue:{{{QUEUE}}}:dlq");
    let dead_letter = |payload: &'static str| {
        queue.send(payload).unwrap();
        let delivery = queue.try_receive().unwrap().unwrap();
        queue.nack(&delivery, Duration::ZERO).unwrap();
        queue.try_receive()
    };
    assert_eq!(dead_letter("first").unwrap(), None);
    assert_eq!(queue.dead_letters(0, 10).unwrap()[0].position, 0);
    // The dead letters read are deleted; then an entry with a time-based id stops the next.
    let _: u64 = redis::cmd("XTRIM")
        .arg(&dlq)
        .arg("MAXLEN")
        .arg(0)
        .query(&mut client(&server))
        .unwrap();
    let by_hand = add_by_hand(&server, &dlq, "*", &[("p", b"by hand")]);
    assert!(matches!(dead_letter("second"), Err(Error::Backend { .. })));
    // What the README asks of an operator: delete it, set the last id to the entries added.
    let _: u64 = redis::cmd("XDEL")
        .arg(&dlq)
        .arg(&by_hand)
        .query(&mut client(&server))
        .unwrap();
    let info: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(&dlq)
        .query(&mut client(&server))
        .unwrap();
    let added = info
        .chunks_exact(2)
        .find(|pair| pair[0] == redis::Value::BulkString(b"entries-added".to_vec()))
        .map(|pair| redis::from_redis_value::<u64>(pair[1].clone()).unwrap())
        .unwrap();
    let _: () = redis::cmd("XSETID")
        .arg(&dlq)
        .arg(format!("0-{added}"))
        .query(&mut client(&server))
        .unwrap();
    assert_eq!(queue.try_receive().unwrap(), None);
    let letters = queue.dead_letters(1, 10).unwrap();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].position > 0, "{letters:?}");
    assert_eq!(&letters[0].payload[..], b"second");
}
