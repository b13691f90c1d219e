//! What the server-backed tests share: a fenced balance that also checks the fence.

use infra_common::sync::Mutex;
use infra_dlock::{Error, Fence, FencingToken};

/// A balance whose reads and writes present the caller's token to a fence, and which checks on
/// its own, without the fence, that it never accepts a token older than one it accepted.
pub(crate) struct Account {
    /// The lock whose tokens the fence compares.
    lock: &'static str,
    fence: Fence,
    ledger: Mutex<Ledger>,
}

#[derive(Default, Debug, Clone, Copy)]
pub(crate) struct Ledger {
    pub(crate) balance: u64,
    pub(crate) accepted_writes: u64,
    pub(crate) refused: u64,
    /// Operations the store accepted with a token below one it had accepted before.
    pub(crate) stale_accepted: u64,
    pub(crate) highest: u64,
}

impl Account {
    pub(crate) fn new(lock: &'static str) -> Self {
        Self {
            lock,
            fence: Fence::new(),
            ledger: Mutex::new(Ledger::default()),
        }
    }

    fn admit(&self, ledger: &mut Ledger, token: FencingToken) -> Result<(), Error> {
        match self.fence.admit("balance", self.lock, token) {
            Ok(()) => {
                if token.get() < ledger.highest {
                    ledger.stale_accepted += 1;
                }
                ledger.highest = ledger.highest.max(token.get());
                Ok(())
            }
            Err(error) => {
                ledger.refused += 1;
                Err(error)
            }
        }
    }

    pub(crate) fn read(&self, token: FencingToken) -> Result<u64, Error> {
        let mut ledger = self.ledger.lock();
        self.admit(&mut ledger, token)?;
        Ok(ledger.balance)
    }

    pub(crate) fn write(&self, token: FencingToken, balance: u64) -> Result<(), Error> {
        let mut ledger = self.ledger.lock();
        self.admit(&mut ledger, token)?;
        ledger.balance = balance;
        ledger.accepted_writes += 1;
        Ok(())
    }

    /// Waits (polling, at most `bound`) until the fence has admitted a token newer than
    /// `token`.
    pub(crate) fn wait_for_newer(&self, token: FencingToken, bound: std::time::Duration) {
        let deadline = std::time::Instant::now() + bound;
        while self.ledger.lock().highest <= token.get() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    pub(crate) fn ledger(&self) -> Ledger {
        *self.ledger.lock()
    }
}

/// The end of each server backend's metrics test: `grants` (by `access`) under the `locks`
/// label `fleet`, then one wait that timed out, one lease lost and one backend error.
#[cfg(feature = "metrics")]
pub(crate) fn assert_server_counts(
    snapshotter: &metrics_util::debugging::Snapshotter,
    grants: &[(&str, u64)],
) {
    use infra_dlock::metrics::{
        BACKEND_ERRORS_TOTAL, GRANTS_TOTAL, LEASE_LOSSES_TOTAL, WAITS_TOTAL,
    };
    use infra_testkit::metrics::{counters, value};

    let series = counters(snapshotter);
    let locks_label = ("locks", "fleet");
    for &(access, count) in grants {
        assert_eq!(
            value(&series, GRANTS_TOTAL, &[locks_label, ("access", access)]),
            Some(count),
            "{access} grants"
        );
    }
    assert_eq!(
        value(
            &series,
            WAITS_TOTAL,
            &[locks_label, ("outcome", "timed_out")]
        ),
        Some(1)
    );
    assert_eq!(value(&series, LEASE_LOSSES_TOTAL, &[locks_label]), Some(1));
    assert_eq!(
        value(&series, BACKEND_ERRORS_TOTAL, &[locks_label]),
        Some(1)
    );
}

/// Freezes `child` (SIGSTOP) and returns once every thread of it is stopped.
///
/// kill(2) returns before the stop takes effect: the signal wakes one thread to start the
/// group stop, and until that thread gets a CPU the others run on. On a loaded machine a
/// worker blocked on its stdin was seen to read the word sent right after the signal, write
/// with its old token and only then stop, which is not the frozen holder the tests mean.
#[cfg(unix)]
pub(crate) fn freeze(child: &std::process::Child) {
    send_signal(child, "-STOP");
    #[cfg(target_os = "linux")]
    {
        let tasks = format!("/proc/{}/task", child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let stopped = std::fs::read_dir(&tasks).unwrap().flatten().all(|task| {
                let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                // The state follows the parenthesised command name: `tid (name) T ...`.
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with(['T', 't']))
            });
            if stopped {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the worker did not stop within 30 s of SIGSTOP"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// Lets a child frozen by [`freeze`] run again (SIGCONT).
#[cfg(unix)]
pub(crate) fn thaw(child: &std::process::Child) {
    send_signal(child, "-CONT");
}

#[cfg(unix)]
fn send_signal(child: &std::process::Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {name} {}", child.id());
}

/// What the workers of a Redis or Redlock fault test saw.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FaultOutcomes {
    pub(crate) grants: u64,
    /// Acquisitions that failed with a server error: a grant may have been made that nobody
    /// got (it runs out with its lease).
    pub(crate) failed_acquires: u64,
    /// Grants whose lease was spent by the time the answers arrived: given back and reported,
    /// not retried.
    pub(crate) spent_on_arrival: u64,
    pub(crate) timed_out_waits: u64,
    /// Reads or writes the fence refused.
    pub(crate) refused: u64,
    /// Of those, holds that did not stall on purpose, refused while their lease still ran on
    /// their clock.
    pub(crate) refused_in_lease: u64,
    /// Releases that found the lease gone (expired, or lost with the connection).
    pub(crate) lost_leases: u64,
    /// Of those, holds that did not stall on purpose.
    pub(crate) lost_unstalled: u64,
    /// Releases that failed with a server error.
    pub(crate) failed_releases: u64,
}

/// One worker of a fault test: until `done` (and at least `min_rounds` rounds, and a stale
/// write refused by the fence, or 60 s from its start on a machine too slow for that), acquires
/// `lock` for `lease` (waiting up to `wait`), reads and writes the fenced balance, stalling
/// past its lease every fifth hold, and releases, counting what happened in `outcomes`.
/// `now` reads the clock the locks count their leases on.
pub(crate) fn fault_worker<L: infra_dlock::Locks>(
    locks: &L,
    now: &dyn Fn() -> u64,
    account: &Account,
    outcomes: &Mutex<FaultOutcomes>,
    done: &infra_common::sync::atomic::AtomicBool,
    (lease, wait, min_rounds): (std::time::Duration, std::time::Duration, u32),
) {
    use infra_common::sync::atomic::Ordering;
    use std::time::Duration;

    let hard_stop = std::time::Instant::now() + Duration::from_secs(60);
    let finished = |round: u32| {
        done.load(Ordering::SeqCst)
            && round >= min_rounds
            && (account.ledger().refused > 0 || std::time::Instant::now() > hard_stop)
    };
    let mut round = 0u32;
    while !finished(round) {
        round += 1;
        let guard = match locks.acquire_timeout(account.lock, lease, wait) {
            Ok(Some(guard)) => guard,
            Ok(None) => {
                outcomes.lock().timed_out_waits += 1;
                continue;
            }
            Err(Error::Backend { .. }) => {
                outcomes.lock().failed_acquires += 1;
                // Servers that are down refuse at once: back off, not spin.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(Error::LeaseSpentOnArrival { .. }) => {
                outcomes.lock().spent_on_arrival += 1;
                continue;
            }
            Err(other) => panic!("{other}"),
        };
        outcomes.lock().grants += 1;
        let token = guard.token();
        let stalls = round.is_multiple_of(5);
        let written = account.read(token).and_then(|balance| {
            if stalls {
                // A pause past the lease until another worker has taken the lock and shown
                // the fence its newer token, so that this write is one the fence must refuse.
                // A fixed pause was not always enough on a loaded machine with a slowed
                // server; the bound keeps a run whose other workers have all stopped moving.
                guard.wait_lost();
                account.wait_for_newer(token, Duration::from_secs(5));
            }
            account.write(token, balance + 1)
        });
        if written.is_err() {
            let in_lease = now() < guard.deadline_nanos();
            let mut outcomes = outcomes.lock();
            outcomes.refused += 1;
            outcomes.refused_in_lease += u64::from(!stalls && in_lease);
        }
        match guard.release() {
            Ok(()) => {}
            Err(Error::LeaseExpired { .. }) => {
                let mut outcomes = outcomes.lock();
                outcomes.lost_leases += 1;
                outcomes.lost_unstalled += u64::from(!stalls);
            }
            Err(Error::Backend { .. }) => outcomes.lock().failed_releases += 1,
            Err(other) => panic!("{other}"),
        }
    }
}

/// What every fault test asserts once its workers have stopped: no stale token accepted, no
/// increment lost, some writes made, and the fence's refusals (at least one: the workers
/// stall past their leases) exactly those the workers counted. `outcomes` is printed with
/// the store's ledger, for the README's counts.
pub(crate) fn assert_fault_run(account: &Account, refused: u64, outcomes: &dyn std::fmt::Debug) {
    let ledger = account.ledger();
    println!("fault run: {outcomes:?}; store: {ledger:?}");
    assert_eq!(ledger.stale_accepted, 0, "{ledger:?}");
    assert_eq!(
        ledger.balance, ledger.accepted_writes,
        "no increment was lost: {ledger:?}"
    );
    assert!(ledger.accepted_writes > 0);
    assert_eq!(ledger.refused, refused);
    assert!(
        ledger.refused > 0,
        "the fence refused nothing: {outcomes:?}"
    );
}

/// A clock that moves on by `step` at every reading: each round trip looks that long.
#[derive(Debug)]
pub(crate) struct SteppingClock {
    now: infra_common::sync::atomic::AtomicU64,
    step: u64,
}

impl SteppingClock {
    pub(crate) fn new(step: std::time::Duration) -> Self {
        Self {
            now: infra_common::sync::atomic::AtomicU64::new(0),
            step: u64::try_from(step.as_nanos()).unwrap(),
        }
    }
}

impl infra_common::Clock for SteppingClock {
    fn now_nanos(&self) -> u64 {
        use infra_common::sync::atomic::Ordering;
        self.now.fetch_add(self.step, Ordering::SeqCst) + self.step
    }

    fn wall_time(&self) -> std::time::SystemTime {
        use infra_common::sync::atomic::Ordering;
        let since_epoch = std::time::Duration::from_nanos(self.now.load(Ordering::SeqCst));
        std::time::SystemTime::UNIX_EPOCH + since_epoch
    }
}

/// `threads` threads each take `lock` `rounds` times through `locks`, adding one to the
/// fenced balance per hold and checking, apart from the lock, that no two holds overlap.
/// Returns how many holds began while another was inside, and every grant's token.
pub(crate) fn increment_from_threads<L>(
    locks: &infra_common::sync::Arc<L>,
    account: &infra_common::sync::Arc<Account>,
    (threads, rounds): (usize, usize),
    lease: std::time::Duration,
) -> (usize, Vec<FencingToken>)
where
    L: infra_dlock::Locks + Send + Sync + 'static,
{
    use infra_common::sync::atomic::{AtomicUsize, Ordering};
    use infra_common::sync::{Arc, thread};

    let inside = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (locks, account) = (Arc::clone(locks), Arc::clone(account));
            let (inside, overlaps) = (Arc::clone(&inside), Arc::clone(&overlaps));
            thread::spawn(move || {
                let mut tokens = Vec::new();
                for _ in 0..rounds {
                    let guard = locks.acquire(account.lock, lease).unwrap();
                    if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    let balance = account.read(guard.token()).unwrap();
                    account.write(guard.token(), balance + 1).unwrap();
                    tokens.push(guard.token());
                    inside.fetch_sub(1, Ordering::SeqCst);
                    guard.release().unwrap();
                }
                tokens
            })
        })
        .collect();
    let tokens = workers
        .into_iter()
        .flat_map(|worker| worker.join().unwrap())
        .collect();
    (overlaps.load(Ordering::SeqCst), tokens)
}
