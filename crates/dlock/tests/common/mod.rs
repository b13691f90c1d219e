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
