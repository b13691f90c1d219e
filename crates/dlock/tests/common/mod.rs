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
