//! Waiting acquires on `MemoryLocks` against a model of their own: random interleavings of
//! acquires that wait (each on its own thread, forever or with a timeout), tries, releases and
//! expiry by advancing a `ManualClock`.
//!
//! The model shares no code with the crate. Per lock name it keeps at most one holder (the
//! grant's number, when it was granted, its lease) and a FIFO queue of waiters; a holder is
//! live while `now - granted_at < lease`. At every step, on each name touched: an expired
//! holder is dropped, a free lock goes to the head of the queue (its lease starting then),
//! and once the clock has moved, every waiter whose timeout has come leaves the queue.
//!
//! Checked at every step: which waiter is granted (FIFO), when its lease starts, that tokens
//! of one name strictly increase in grant order, that `is_held` is true of exactly the
//! model's live holder (never two at once), that releasing an expired or released grant is
//! refused as `LeaseExpired`, and the length of each queue.
//!
//! The test never sleeps: after each step it waits for exactly the threads the model says
//! were answered (with a generous deadline, only against a hang), and for a new waiter to
//! show up in its queue, so nothing depends on how the threads are scheduled.
#![cfg(not(infra_loom))]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use infra_common::sync::{Arc, Condvar, Mutex, thread};
use infra_common::{Clock, ManualClock};
use infra_dlock::{Error, Grant, LockGuard, Locks, MemoryLocks};
use proptest::prelude::*;

const NAMES: [&str; 2] = ["a", "b"];
/// How long the test waits for a thread that should answer: far beyond any scheduling delay.
const PATIENCE: Duration = Duration::from_secs(60);
const SECOND: u64 = 1_000_000_000;

#[derive(Clone, Debug)]
enum Op {
    /// A thread that acquires and waits: forever, or for `timeout` seconds.
    Wait {
        name: usize,
        lease: u64,
        timeout: Option<u64>,
    },
    /// `try_acquire`.
    Try { name: usize, lease: u64 },
    /// Releases (consumes) the grant numbered `pick` modulo the grants made so far.
    Release { pick: usize },
    /// Moves the clock forward by `by` seconds, then `expire_due`.
    Advance { by: u64 },
}

#[allow(clippy::disallowed_types, reason = "prop_oneof! expands to std's Arc")]
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..NAMES.len(), 1..=6_u64, prop::option::weighted(0.6, 0..=6_u64))
            .prop_map(|(name, lease, timeout)| Op::Wait { name, lease, timeout }),
        1 => (0..NAMES.len(), 1..=6_u64).prop_map(|(name, lease)| Op::Try { name, lease }),
        3 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        3 => (1..=4_u64).prop_map(|by| Op::Advance { by }),
    ]
}

/// What the model says a step answered.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Answer {
    /// The waiter got grant number `grant`, its lease starting at `at`.
    Granted {
        waiter: usize,
        grant: usize,
        at: u64,
    },
    /// The waiter's timeout came first.
    TimedOut { waiter: usize },
}

#[derive(Clone, Copy, Debug)]
struct Held {
    grant: usize,
    at: u64,
    lease: u64,
}

#[derive(Clone, Copy, Debug)]
struct Waiting {
    waiter: usize,
    lease: u64,
    give_up_at: Option<u64>,
}

#[derive(Default, Debug)]
struct Lock {
    holder: Option<Held>,
    queue: VecDeque<Waiting>,
}

#[derive(Debug)]
struct Model {
    now: u64,
    locks: Vec<Lock>,
    /// The name of each grant, by number.
    grant_names: Vec<usize>,
}

impl Model {
    fn new(now: u64) -> Self {
        Self {
            now,
            locks: NAMES.iter().map(|_| Lock::default()).collect(),
            grant_names: Vec::new(),
        }
    }

    fn new_grant(&mut self, name: usize, lease: u64) -> usize {
        let grant = self.grant_names.len();
        self.grant_names.push(name);
        self.locks[name].holder = Some(Held {
            grant,
            at: self.now,
            lease,
        });
        grant
    }

    /// Drops an expired holder and hands a free lock to the head of the queue.
    fn settle(&mut self, name: usize, answers: &mut Vec<Answer>) {
        let now = self.now;
        let lock = &mut self.locks[name];
        if lock.holder.is_some_and(|h| now - h.at >= h.lease) {
            lock.holder = None;
        }
        if lock.holder.is_none()
            && let Some(head) = lock.queue.pop_front()
        {
            let grant = self.new_grant(name, head.lease);
            answers.push(Answer::Granted {
                waiter: head.waiter,
                grant,
                at: now,
            });
        }
    }

    fn is_live(&self, grant: usize) -> bool {
        let lock = &self.locks[self.grant_names[grant]];
        lock.holder
            .is_some_and(|h| h.grant == grant && self.now - h.at < h.lease)
    }

    /// A new waiter (number `waiter`) arrives.
    fn wait(
        &mut self,
        name: usize,
        lease: u64,
        timeout: Option<u64>,
        waiter: usize,
    ) -> Vec<Answer> {
        let mut answers = Vec::new();
        self.settle(name, &mut answers);
        let lock = &self.locks[name];
        if lock.holder.is_none() && lock.queue.is_empty() {
            let grant = self.new_grant(name, lease);
            answers.push(Answer::Granted {
                waiter,
                grant,
                at: self.now,
            });
        } else if timeout == Some(0) {
            answers.push(Answer::TimedOut { waiter });
        } else {
            self.locks[name].queue.push_back(Waiting {
                waiter,
                lease,
                give_up_at: timeout.map(|t| self.now + t * SECOND),
            });
        }
        answers
    }

    /// A try: the grant's number if granted.
    fn try_acquire(&mut self, name: usize, lease: u64) -> Option<usize> {
        let mut answers = Vec::new();
        self.settle(name, &mut answers);
        assert!(answers.is_empty(), "every step leaves its names settled");
        let lock = &self.locks[name];
        (lock.holder.is_none() && lock.queue.is_empty()).then(|| self.new_grant(name, lease))
    }

    /// Releases grant number `grant`: whether that was allowed, and who got the lock.
    fn release(&mut self, grant: usize) -> (bool, Vec<Answer>) {
        let name = self.grant_names[grant];
        let mut answers = Vec::new();
        self.settle(name, &mut answers);
        let live = self.is_live(grant);
        if live {
            self.locks[name].holder = None;
            self.settle(name, &mut answers);
        }
        (live, answers)
    }

    fn advance(&mut self, by: u64) -> Vec<Answer> {
        self.now += by * SECOND;
        let mut answers = Vec::new();
        for name in 0..self.locks.len() {
            self.settle(name, &mut answers);
        }
        let now = self.now;
        for lock in &mut self.locks {
            lock.queue.retain(|w| {
                let gone = w.give_up_at.is_some_and(|at| now >= at);
                if gone {
                    answers.push(Answer::TimedOut { waiter: w.waiter });
                }
                !gone
            });
        }
        answers
    }

    fn waiters(&self) -> usize {
        self.locks.iter().map(|l| l.queue.len()).sum()
    }
}

/// Where the waiter threads put their answers: the waiter's number and its grant, if any.
#[derive(Default)]
struct Inbox {
    answers: Mutex<Vec<(usize, Option<Grant>)>>,
    arrived: Condvar,
}

impl Inbox {
    fn put(&self, waiter: usize, grant: Option<Grant>) {
        self.answers.lock().push((waiter, grant));
        self.arrived.notify_all();
    }

    /// Whether no answer waits to be taken.
    fn is_empty(&self) -> bool {
        self.answers.lock().is_empty()
    }

    /// Waits for `n` answers and takes them; more than `n` is a failure.
    fn take(&self, n: usize) -> Vec<(usize, Option<Grant>)> {
        let deadline = Instant::now() + PATIENCE;
        let mut answers = self.answers.lock();
        while answers.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "expected {n} answers, got {:?}", *answers);
            self.arrived.wait_timeout(&mut answers, left);
        }
        assert_eq!(
            answers.len(),
            n,
            "a thread answered that the model says still waits: {:?}",
            *answers
        );
        std::mem::take(&mut *answers)
    }
}

/// The real side: the locks, the waiter threads and every grant made, by the model's numbers.
struct Real {
    clock: ManualClock,
    locks: Arc<MemoryLocks<ManualClock>>,
    inbox: Arc<Inbox>,
    threads: Vec<thread::JoinHandle<()>>,
    /// `None` once released.
    grants: Vec<Option<Grant>>,
    last_token: Vec<u64>,
}

impl Real {
    fn new() -> Self {
        let clock = ManualClock::new();
        Self {
            locks: Arc::new(MemoryLocks::with_clock(clock.clone())),
            clock,
            inbox: Arc::default(),
            threads: Vec::new(),
            grants: Vec::new(),
            last_token: vec![0; NAMES.len()],
        }
    }

    fn record(&mut self, number: usize, name: usize, at: u64, grant: Grant) {
        assert_eq!(grant.name(), NAMES[name]);
        assert_eq!(
            grant.granted_at_nanos(),
            at,
            "the lease starts at the hand-off"
        );
        let token = grant.token().get();
        assert!(
            token > self.last_token[name],
            "token {token} after {} on {}",
            self.last_token[name],
            NAMES[name]
        );
        self.last_token[name] = token;
        assert_eq!(self.grants.len(), number, "grants are numbered in order");
        self.grants.push(Some(grant));
    }

    /// Receives exactly the answers the model expects, in any order between threads.
    fn expect(&mut self, model: &Model, expected: &[Answer]) {
        let mut got = self.inbox.take(expected.len());
        let mut answered: Vec<_> = got.iter().map(|(w, _)| *w).collect();
        answered.sort_unstable();
        let mut wanted: Vec<_> = expected
            .iter()
            .map(|a| match *a {
                Answer::Granted { waiter, .. } | Answer::TimedOut { waiter } => waiter,
            })
            .collect();
        wanted.sort_unstable();
        assert_eq!(
            answered, wanted,
            "the threads answered, expected {expected:?}"
        );
        // Grants in the model's order, so their numbers line up.
        for answer in expected {
            match *answer {
                Answer::TimedOut { waiter } => {
                    let i = got.iter().position(|(w, _)| *w == waiter).unwrap();
                    let (_, grant) = got.swap_remove(i);
                    assert!(grant.is_none(), "waiter {waiter} should have timed out");
                }
                Answer::Granted { waiter, grant, at } => {
                    let i = got.iter().position(|(w, _)| *w == waiter).unwrap();
                    let (_, real) = got.swap_remove(i);
                    let real = real.unwrap_or_else(|| panic!("waiter {waiter} not granted"));
                    self.record(grant, model.grant_names[grant], at, real);
                }
            }
        }
    }

    fn spawn(&mut self, name: usize, lease: u64, timeout: Option<u64>, waiter: usize) {
        let locks = Arc::clone(&self.locks);
        let inbox = Arc::clone(&self.inbox);
        let lease = Duration::from_secs(lease);
        self.threads.push(thread::spawn(move || {
            let got = match timeout {
                None => Some(locks.acquire(NAMES[name], lease).unwrap().into_grant()),
                Some(t) => locks
                    .acquire_timeout(NAMES[name], lease, Duration::from_secs(t))
                    .unwrap()
                    .map(LockGuard::into_grant),
            };
            inbox.put(waiter, got);
        }));
    }

    /// Waits until `name`'s queue is `len` long, failing if some thread answers meanwhile.
    fn until_queued(&self, name: usize, len: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.locks.queue_len(NAMES[name]) != len {
            assert!(
                self.inbox.is_empty(),
                "a thread answered that the model says waits"
            );
            assert!(Instant::now() < deadline, "the waiter never queued");
            thread::yield_now();
        }
    }

    /// Checks `is_held` of every unreleased grant and the queues against the model.
    fn compare(&self, model: &Model) {
        assert_eq!(self.clock.now_nanos(), model.now);
        for (number, grant) in self.grants.iter().enumerate() {
            if let Some(grant) = grant {
                assert_eq!(
                    self.locks.is_held(grant),
                    model.is_live(number),
                    "grant {number} ({grant:?})"
                );
            }
        }
        for (name, lock) in model.locks.iter().enumerate() {
            assert_eq!(self.locks.queue_len(NAMES[name]), lock.queue.len());
        }
    }
}

fn step(model: &mut Model, real: &mut Real, op: &Op, waiters: &mut usize) {
    match *op {
        Op::Wait {
            name,
            lease,
            timeout,
        } => {
            let waiter = *waiters;
            *waiters += 1;
            let answers = model.wait(name, lease * SECOND, timeout, waiter);
            real.spawn(name, lease, timeout, waiter);
            if answers.is_empty() {
                real.until_queued(name, model.locks[name].queue.len());
            }
            real.expect(model, &answers);
        }
        Op::Try { name, lease } => {
            let expected = model.try_acquire(name, lease * SECOND);
            let got = real
                .locks
                .try_acquire(NAMES[name], Duration::from_secs(lease))
                .unwrap()
                .map(LockGuard::into_grant);
            match (expected, got) {
                (Some(number), Some(grant)) => real.record(number, name, model.now, grant),
                (None, None) => {}
                (expected, got) => panic!("try: model {expected:?}, locks {got:?}"),
            }
        }
        Op::Release { pick } => {
            if real.grants.is_empty() {
                return;
            }
            let number = pick % real.grants.len();
            let Some(grant) = real.grants[number].take() else {
                return;
            };
            let (allowed, answers) = model.release(number);
            let result = real.locks.release(grant);
            if allowed {
                result.unwrap();
            } else {
                assert!(
                    matches!(result, Err(Error::LeaseExpired { .. })),
                    "{result:?}"
                );
            }
            real.expect(model, &answers);
        }
        Op::Advance { by } => {
            let answers = model.advance(by);
            real.clock.advance(Duration::from_secs(by));
            real.locks.expire_due();
            real.expect(model, &answers);
        }
    }
    real.compare(model);
}

fn run(ops: &[Op]) {
    let mut real = Real::new();
    let mut model = Model::new(real.clock.now_nanos());
    let mut waiters = 0;
    for op in ops {
        step(&mut model, &mut real, op, &mut waiters);
    }
    // Every lease and timeout is over within 7 s: each round hands each lock to its next
    // waiter, until no thread waits.
    while model.waiters() > 0 {
        step(&mut model, &mut real, &Op::Advance { by: 7 }, &mut waiters);
    }
    for thread in real.threads.drain(..) {
        thread.join().unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn waiting_acquires_agree_with_the_model(ops in prop::collection::vec(op(), 1..48)) {
        run(&ops);
    }
}

#[test]
fn a_known_interleaving_hands_the_lock_on_in_arrival_order() {
    run(&[
        Op::Try { name: 0, lease: 5 },
        Op::Wait {
            name: 0,
            lease: 3,
            timeout: None,
        },
        Op::Wait {
            name: 0,
            lease: 3,
            timeout: Some(2),
        },
        Op::Wait {
            name: 0,
            lease: 3,
            timeout: Some(0),
        },
        Op::Wait {
            name: 0,
            lease: 2,
            timeout: None,
        },
        // The try's grant expires: the first waiter gets the lock, the second times out later.
        Op::Advance { by: 5 },
        Op::Release { pick: 0 },
        Op::Release { pick: 1 },
    ]);
}
