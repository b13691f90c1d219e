//! Group commit: appenders waiting for durability share one fsync.
//!
//! Appends write their records under the log's lock and then wait here for the durable point to
//! pass their end. The first waiter that finds no sync in flight becomes the leader: it releases
//! the lock, syncs everything written so far (its own records and those of every appender that
//! wrote before the sync began), publishes the new durable point and wakes the others. A waiter
//! whose end the published point covers returns without syncing; one that wrote after the sync
//! began leads the next one. With N appenders at once the disk sees about two syncs per round
//! rather than N.

use infra_common::sync::{Condvar, Mutex};

use crate::Error;

/// The durable point of a log and the leader/follower hand-off that advances it.
#[derive(Debug)]
pub struct GroupCommit {
    state: Mutex<State>,
    advanced: Condvar,
}

#[derive(Debug)]
struct State {
    /// Every offset below this is durable.
    durable: u64,
    /// A leader is syncing now.
    syncing: bool,
    /// A sync failed: nothing more is promised.
    failed: bool,
}

impl GroupCommit {
    /// A hand-off whose durable point starts at `durable`.
    pub fn new(durable: u64) -> Self {
        Self {
            state: Mutex::new(State {
                durable,
                syncing: false,
                failed: false,
            }),
            advanced: Condvar::new(),
        }
    }

    /// Every offset below this is durable.
    pub fn durable(&self) -> u64 {
        self.state.lock().durable
    }

    /// Returns once every offset below `end` is durable.
    ///
    /// `sync` makes durable everything written so far and returns the end it covered; it is
    /// called (by this thread) only when no other sync is in flight and the durable point does
    /// not yet cover `end`.
    ///
    /// # Errors
    /// The error of this thread's `sync`, or [`Error::Failed`] when another thread's failed.
    pub fn wait(&self, end: u64, sync: impl FnOnce() -> Result<u64, Error>) -> Result<(), Error> {
        let mut state = self.state.lock();
        let mut sync = Some(sync);
        loop {
            if state.failed {
                return Err(Error::Failed);
            }
            if state.durable >= end {
                return Ok(());
            }
            if state.syncing {
                self.advanced.wait(&mut state);
                continue;
            }
            let Some(lead) = sync.take() else {
                // Unreachable in practice: after leading, `durable >= end` or `failed` holds.
                return Err(Error::Failed);
            };
            state.syncing = true;
            drop(state);
            let outcome = lead();
            state = self.state.lock();
            state.syncing = false;
            match outcome {
                Ok(covered) => state.durable = state.durable.max(covered),
                Err(_) => state.failed = true,
            }
            self.advanced.notify_all();
            outcome?;
        }
    }
}
