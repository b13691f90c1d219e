//! Mutual exclusion with fencing among tokio tasks: tasks take the in-process lock through
//! `AsyncLocks` and increment a fenced balance while the lock's clock moves on under them, so
//! leases end in the middle of critical sections.
#![cfg(all(feature = "tokio", not(infra_loom)))]

use std::time::Duration;

use infra_common::ManualClock;
use infra_common::sync::atomic::{AtomicBool, Ordering};
use infra_common::sync::{Arc, Mutex, thread};
use infra_dlock::{AsyncLocks, Error, Fence, FencingToken, MemoryLocks};

const LOCK: &str = "account-7";
const TASKS: usize = 4;
const ROUNDS: usize = 200;
/// Shorter than a few of the ticker's steps: many holders outlive their lease.
const LEASE: Duration = Duration::from_micros(50);
const STEP: Duration = Duration::from_micros(30);

/// A balance whose reads and writes present the caller's token to a fence, and which keeps
/// the tokens it accepted in order, to check the fence without trusting it.
struct Account {
    fence: Fence,
    ledger: Mutex<Ledger>,
}

#[derive(Default)]
struct Ledger {
    balance: u64,
    accepted_writes: u64,
    refused: u64,
    accepted: Vec<FencingToken>,
}

impl Account {
    fn admit(&self, ledger: &mut Ledger, token: FencingToken) -> Result<(), Error> {
        match self.fence.admit("balance", LOCK, token) {
            Ok(()) => {
                ledger.accepted.push(token);
                Ok(())
            }
            Err(error) => {
                ledger.refused += 1;
                Err(error)
            }
        }
    }

    fn read(&self, token: FencingToken) -> Result<u64, Error> {
        let mut ledger = self.ledger.lock();
        self.admit(&mut ledger, token)?;
        Ok(ledger.balance)
    }

    fn write(&self, token: FencingToken, balance: u64) -> Result<(), Error> {
        let mut ledger = self.ledger.lock();
        self.admit(&mut ledger, token)?;
        ledger.balance = balance;
        ledger.accepted_writes += 1;
        Ok(())
    }
}

/// One task's work: take the lock, read, let the other tasks run, write, give the lock back.
async fn increment(locks: AsyncLocks<MemoryLocks<ManualClock>>, account: Arc<Account>) {
    for _ in 0..ROUNDS {
        let grant = locks.acquire(LOCK, LEASE).await.unwrap();
        if let Ok(balance) = account.read(grant.token()) {
            // The task stops here while others run and the clock moves: its lease may end.
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            let _ = account.write(grant.token(), balance + 1);
        }
        // Fails when the lease ended first; the fence already judged the write.
        let _ = locks.release(grant).await;
    }
}

#[tokio::test]
async fn tasks_incrementing_through_a_fence_lose_nothing_while_leases_expire_under_them() {
    let clock = ManualClock::new();
    let backend = Arc::new(MemoryLocks::with_clock(clock.clone()));
    let locks = AsyncLocks::new(Arc::clone(&backend));
    let account = Arc::new(Account {
        fence: Fence::new(),
        ledger: Mutex::new(Ledger::default()),
    });
    let done = Arc::new(AtomicBool::new(false));
    // Time moves on a thread of its own until the tasks are done.
    let ticker = {
        let (clock, backend, done) = (clock.clone(), Arc::clone(&backend), Arc::clone(&done));
        thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                clock.advance(STEP);
                backend.expire_due();
                thread::yield_now();
            }
        })
    };
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| tokio::spawn(increment(locks.clone(), Arc::clone(&account))))
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    ticker.join().unwrap();

    let ledger = account.ledger.lock();
    assert!(ledger.accepted_writes > 0);
    assert_eq!(
        ledger.balance, ledger.accepted_writes,
        "an accepted increment was lost (refused: {})",
        ledger.refused
    );
    assert!(
        ledger.accepted.windows(2).all(|pair| pair[0] <= pair[1]),
        "the store accepted an older token after a newer one"
    );
}
