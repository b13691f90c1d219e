//! A simulated disk whose file syncs wait at a [`Gate`] the test opens, for tests that need an
//! fsync to stay in flight. Nothing waits for time to pass: a gate gives up after a long
//! real-time timeout, only so that a regression fails instead of hanging.
#![allow(
    dead_code,
    reason = "each test file that includes this uses a part of it"
)]

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use infra_common::sync::{Arc, Condvar, Mutex};
use infra_mqueue::log::{SimulatedStorage, Storage, StorageFile};

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
    fn pass(&self) -> io::Result<()> {
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

/// The simulated disk with file syncs held at a gate.
#[derive(Debug, Clone)]
pub(crate) struct GatedDisk {
    disk: SimulatedStorage,
    gate: Arc<Gate>,
    /// Only the syncs of files in this directory are held, if set.
    only_under: Option<PathBuf>,
}

impl GatedDisk {
    /// `disk` with its file syncs held at the returned gate (open to begin with).
    pub(crate) fn new(disk: &SimulatedStorage) -> (Self, Arc<Gate>) {
        let gate = Arc::new(Gate::default());
        let gated = Self {
            disk: disk.clone(),
            gate: Arc::clone(&gate),
            only_under: None,
        };
        (gated, gate)
    }

    /// `disk` with the syncs of the files in `dir` (and below) held at the returned gate, and
    /// no others.
    pub(crate) fn under(disk: &SimulatedStorage, dir: &Path) -> (Self, Arc<Gate>) {
        let (mut gated, gate) = Self::new(disk);
        gated.only_under = Some(dir.to_path_buf());
        (gated, gate)
    }
}

#[derive(Debug)]
struct GatedFile {
    file: Box<dyn StorageFile>,
    gate: Arc<Gate>,
}

impl StorageFile for GatedFile {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read_at(pos, buf)
    }
    fn write_at(&self, pos: u64, bytes: &[u8]) -> io::Result<()> {
        self.file.write_at(pos, bytes)
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.truncate(len)
    }
    fn sync(&self) -> io::Result<()> {
        self.gate.pass()?;
        self.file.sync()
    }
}

impl Storage for GatedDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.disk.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.disk.list(dir)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn StorageFile>> {
        let file = self.disk.open(path, create)?;
        if self
            .only_under
            .as_ref()
            .is_some_and(|dir| !path.starts_with(dir))
        {
            return Ok(file);
        }
        Ok(Box::new(GatedFile {
            file,
            gate: Arc::clone(&self.gate),
        }))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.disk.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.disk.rename(from, to)
    }
    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        self.disk.remove_dir(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.disk.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn fmt::Debug + Send + Sync>>> {
        self.disk.lock_dir(dir)
    }
}
