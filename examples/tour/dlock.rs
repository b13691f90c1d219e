//! infra-dlock: two servers withdraw from one account — without a lock, with a lock, and with
//! a holder that pauses past its lease while a fence guards the balance.

use std::error::Error;
use std::time::Duration;

use infra_common::ManualClock;
use infra_common::sync::{Arc, Condvar, Mutex, thread};
use infra_dlock::{Error as LockError, Fence, FencingToken, Locks, MemoryLocks};

const OPENING: i64 = 1000;
/// What each server withdraws.
const WITHDRAWALS: [i64; 2] = [200, 100];
const LOCK: &str = "account-7";

/// Holds each arriving thread until `parties` have arrived: forces both reads before any write.
struct Rendezvous {
    arrived: Mutex<usize>,
    all_here: Condvar,
    parties: usize,
}

impl Rendezvous {
    fn wait(&self) {
        let mut arrived = self.arrived.lock();
        *arrived += 1;
        self.all_here.notify_all();
        while *arrived < self.parties {
            self.all_here.wait(&mut arrived);
        }
    }
}

/// The account's storage: a balance whose reads and writes present a lock token to a fence.
struct Account {
    balance: Mutex<i64>,
    fence: Fence,
}

impl Account {
    fn read(&self, token: FencingToken) -> Result<i64, LockError> {
        let balance = self.balance.lock();
        self.fence.admit("balance", LOCK, token)?;
        Ok(*balance)
    }

    fn write(&self, token: FencingToken, value: i64) -> Result<(), LockError> {
        let mut balance = self.balance.lock();
        self.fence.admit("balance", LOCK, token)?;
        *balance = value;
        Ok(())
    }
}

/// Both servers read, then both write, with nothing to stop them.
fn without_a_lock() -> Result<i64, Box<dyn Error>> {
    let balance = Arc::new(Mutex::new(OPENING));
    let meet = Arc::new(Rendezvous {
        arrived: Mutex::new(0),
        all_here: Condvar::new(),
        parties: WITHDRAWALS.len(),
    });
    let servers: Vec<_> = WITHDRAWALS
        .iter()
        .map(|&amount| {
            let (balance, meet) = (Arc::clone(&balance), Arc::clone(&meet));
            thread::spawn(move || {
                let seen = *balance.lock();
                meet.wait();
                *balance.lock() = seen - amount;
            })
        })
        .collect();
    for server in servers {
        server.join().map_err(|_| "a server thread panicked")?;
    }
    let final_balance = *balance.lock();
    Ok(final_balance)
}

/// Each server takes the lock around its read and write.
fn with_a_lock() -> Result<(i64, Vec<FencingToken>), Box<dyn Error>> {
    let locks = Arc::new(MemoryLocks::new());
    let balance = Arc::new(Mutex::new(OPENING));
    let servers: Vec<_> = WITHDRAWALS
        .iter()
        .map(|&amount| {
            let (locks, balance) = (Arc::clone(&locks), Arc::clone(&balance));
            thread::spawn(move || -> Result<FencingToken, LockError> {
                // A handle resolves the name once; its guard keeps only the token and lease.
                let account = locks.handle(LOCK)?;
                let guard = account.acquire(Duration::from_secs(5))?;
                let seen = *balance.lock();
                *balance.lock() = seen - amount;
                let token = guard.token();
                guard.release()?;
                Ok(token)
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for server in servers {
        tokens.push(server.join().map_err(|_| "a server thread panicked")??);
    }
    tokens.sort();
    let final_balance = *balance.lock();
    Ok((final_balance, tokens))
}

pub(crate) fn run() -> Result<(), Box<dyn Error>> {
    let expected = OPENING - WITHDRAWALS.iter().sum::<i64>();
    let raced = without_a_lock()?;
    println!(
        "without a lock: {OPENING} - {} - {} left {raced} (should be {expected}: {} lost)",
        WITHDRAWALS[0],
        WITHDRAWALS[1],
        raced - expected
    );

    let (locked, tokens) = with_a_lock()?;
    let tokens: Vec<String> = tokens.iter().map(ToString::to_string).collect();
    println!(
        "with a lock: {locked} left; the two grants carried tokens {}",
        tokens.join(" and ")
    );

    // Now server A stalls (a GC pause) after reading, past its lease.
    let clock = ManualClock::new();
    let locks = MemoryLocks::with_clock(clock.clone());
    let account = Account {
        balance: Mutex::new(OPENING),
        fence: Fence::new(),
    };
    let lease = Duration::from_secs(5);
    let pause = Duration::from_secs(8);
    let a = locks.acquire(LOCK, lease)?;
    let seen_by_a = account.read(a.token())?;
    clock.advance(pause);
    let b = locks.acquire(LOCK, lease)?;
    let seen_by_b = account.read(b.token())?;
    account.write(b.token(), seen_by_b - WITHDRAWALS[1])?;
    b.release()?;
    let refused = match account.write(a.token(), seen_by_a - WITHDRAWALS[0]) {
        Err(LockError::StaleToken { token, highest, .. }) => (token, highest),
        other => return Err(format!("the stale write was not refused: {other:?}").into()),
    };
    println!(
        "A paused {pause:?} on a {lease:?} lease; B took the lock and wrote {}",
        seen_by_b - WITHDRAWALS[1]
    );
    println!(
        "A woke up and wrote with token {}: refused, the fence had seen {}; A still held the lock? {}",
        refused.0,
        refused.1,
        a.is_held()
    );
    // A learns its lease is gone, takes the lock again and redoes its withdrawal.
    let lost = a.release().is_err();
    let retry = locks.acquire(LOCK, lease)?;
    let retry_token = retry.token();
    let seen = account.read(retry_token)?;
    account.write(retry_token, seen - WITHDRAWALS[0])?;
    retry.release()?;
    let final_balance = *account.balance.lock();
    println!(
        "A's release reported the lost lease: {lost}; A retried with token {retry_token} and the account holds {final_balance} (should be {expected})"
    );
    if final_balance != expected || locked != expected {
        return Err("a withdrawal was lost".into());
    }
    Ok(())
}
