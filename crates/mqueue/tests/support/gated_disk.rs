//! A simulated disk whose file syncs wait at a [`Gate`] the test opens, for tests that need an
//! fsync to stay in flight. Nothing waits for time to pass: a gate gives up after a long
//! real-time timeout, only so that a regression fails instead of hanging.
#![allow(
    dead_code,
    reason = "each test file that includes this uses a part of it"
)]

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use infra_common::sync::{Arc, Condvar, Mutex};
use infra_mqueue::log::SimulatedStorage;

use super::hooked_disk::{DiskHook, HookedDisk};

/// Ends a gate wait that a regression would leave hanging; never reached by a passing test.
pub(crate) const HUNG: Duration = Duration::from_secs(30);

/// Holds every file sync until opened; counts the syncs that arrived and that went through.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    closed: bool,
    arrived: u64,
    passed: u64,
}

impl Gate {
    /// Forgets the syncs counted so far (those of opening a log or queue) and opens the gate.
    pub(crate) fn reset(&self) {
        *self.state.lock() = GateState::default();
        self.changed.notify_all();
    }

    pub(crate) fn set_closed(&self, closed: bool) {
        self.state.lock().closed = closed;
        self.changed.notify_all();
    }

    /// Called by a file sync: waits while the gate is closed.
    pub(crate) fn pass(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        state.arrived += 1;
        self.changed.notify_all();
        while state.closed {
            if self.changed.wait_timeout(&mut state, HUNG) {
                return Err(io::Error::other("the gate was never opened"));
            }
        }
        state.passed += 1;
        self.changed.notify_all();
        Ok(())
    }

    /// The file syncs that arrived at the gate and that went through, so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        let state = self.state.lock();
        (state.arrived, state.passed)
    }

    /// Blocks this thread until `done` holds of (arrived, passed).
    pub(crate) fn wait_until(&self, done: impl Fn(u64, u64) -> bool) {
        let mut state = self.state.lock();
        while !done(state.arrived, state.passed) {
            assert!(
                !self.changed.wait_timeout(&mut state, HUNG),
                "gate condition never met"
            );
        }
    }
}

/// Holds the syncs of the files under `only_under` (every file if unset) at `gate`.
#[derive(Debug)]
pub(crate) struct GateHook {
    gate: Arc<Gate>,
    only_under: Option<PathBuf>,
}

impl DiskHook for GateHook {
    fn watches(&self, path: &Path) -> bool {
        self.only_under
            .as_ref()
            .is_none_or(|dir| path.starts_with(dir))
    }

    fn file_sync(&self, _path: &Path) -> io::Result<()> {
        self.gate.pass()
    }
}

/// The simulated disk with file syncs held at a gate.
pub(crate) type GatedDisk = HookedDisk<GateHook>;

impl HookedDisk<GateHook> {
    /// `disk` with its file syncs held at the returned gate (open to begin with).
    pub(crate) fn new(disk: &SimulatedStorage) -> (Self, Arc<Gate>) {
        Self::gated(disk, None)
    }

    /// `disk` with the syncs of the files in `dir` (and below) held at the returned gate, and
    /// no others.
    pub(crate) fn under(disk: &SimulatedStorage, dir: &Path) -> (Self, Arc<Gate>) {
        Self::gated(disk, Some(dir.to_path_buf()))
    }

    fn gated(disk: &SimulatedStorage, only_under: Option<PathBuf>) -> (Self, Arc<Gate>) {
        let gate = Arc::new(Gate::default());
        let hook = GateHook {
            gate: Arc::clone(&gate),
            only_under,
        };
        (Self::with_hook(disk, Arc::new(hook)), gate)
    }
}
