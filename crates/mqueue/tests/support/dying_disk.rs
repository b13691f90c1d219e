//! The simulated disk of a process that dies part way through: for tests that crash an
//! operation at each of its changes to the disk in turn.
#![allow(
    dead_code,
    reason = "each test file that includes this uses a part of it"
)]

use std::fmt;
use std::io;
use std::path::Path;

use infra_common::sync::Arc;
use infra_common::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use infra_mqueue::log::{SimulatedStorage, Storage, StorageFile};

/// The simulated disk of a process that dies at its `budget`-th change to the disk (a file or
/// directory created, written, cut, synced, renamed or removed): that change fails (a write
/// putting down half its bytes first) and so does every later one, while reads go on.
#[derive(Debug, Clone)]
pub(crate) struct DyingDisk {
    disk: SimulatedStorage,
    changes_left: Arc<AtomicU64>,
    died: Arc<AtomicBool>,
}

impl DyingDisk {
    pub(crate) fn new(disk: &SimulatedStorage, budget: u64) -> Self {
        Self {
            disk: disk.clone(),
            changes_left: Arc::new(AtomicU64::new(budget)),
            died: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Spends one change; an error once the process has died.
    fn change(&self) -> io::Result<()> {
        let left = self.changes_left.load(Ordering::SeqCst);
        if left == 0 {
            self.died.store(true, Ordering::SeqCst);
            return Err(io::Error::other("the process died"));
        }
        self.changes_left.store(left - 1, Ordering::SeqCst);
        Ok(())
    }

    /// Whether a change was refused: the process died before the open finished.
    pub(crate) fn died(&self) -> bool {
        self.died.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct DyingFile {
    file: Box<dyn StorageFile>,
    owner: DyingDisk,
}

impl StorageFile for DyingFile {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read_at(pos, buf)
    }
    fn write_at(&self, pos: u64, bytes: &[u8]) -> io::Result<()> {
        if let Err(died) = self.owner.change() {
            // Torn: the first half reached the file.
            self.file.write_at(pos, &bytes[..bytes.len() / 2])?;
            return Err(died);
        }
        self.file.write_at(pos, bytes)
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.owner.change()?;
        self.file.truncate(len)
    }
    fn sync(&self) -> io::Result<()> {
        self.owner.change()?;
        self.file.sync()
    }
}

impl Storage for DyingDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.change()?;
        self.disk.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.disk.list(dir)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn StorageFile>> {
        let file = match self.disk.open(path, false) {
            Err(missing) if missing.kind() == io::ErrorKind::NotFound && create => {
                self.change()?;
                self.disk.open(path, true)?
            }
            other => other?,
        };
        Ok(Box::new(DyingFile {
            file,
            owner: self.clone(),
        }))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.change()?;
        self.disk.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.change()?;
        self.disk.rename(from, to)
    }
    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        self.change()?;
        self.disk.remove_dir(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.change()?;
        self.disk.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn fmt::Debug + Send + Sync>>> {
        self.disk.lock_dir(dir)
    }
}
