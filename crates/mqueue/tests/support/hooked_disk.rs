//! A simulated disk that calls a [`DiskHook`] before each file sync, directory sync and rename:
//! the plumbing shared by the test disks that hold those operations back or note where they ran.
#![allow(
    dead_code,
    reason = "each test file that includes this uses a part of it"
)]

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use infra_common::sync::Arc;
use infra_mqueue::log::{SimulatedStorage, Storage, StorageFile};

/// What a test disk does before the operations it watches; each may fail the operation.
pub(crate) trait DiskHook: fmt::Debug + Send + Sync + 'static {
    /// Whether the file at `path` is watched (its syncs go through [`DiskHook::file_sync`]).
    fn watches(&self, _path: &Path) -> bool {
        true
    }

    /// Before a watched file at `path` is synced.
    fn file_sync(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    /// Before the directory `dir` is synced.
    fn dir_sync(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    /// Before a file is renamed to `to`.
    fn rename(&self, _to: &Path) -> io::Result<()> {
        Ok(())
    }

    /// Before `path` is opened with `create` set (created if missing).
    fn create(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }
}

/// The simulated disk, calling `hook` before the operations it watches.
#[derive(Debug)]
pub(crate) struct HookedDisk<H> {
    disk: SimulatedStorage,
    hook: Arc<H>,
}

impl<H> Clone for HookedDisk<H> {
    fn clone(&self) -> Self {
        Self {
            disk: self.disk.clone(),
            hook: Arc::clone(&self.hook),
        }
    }
}

impl<H: DiskHook> HookedDisk<H> {
    /// `disk`, with `hook` called before what it watches.
    pub(crate) fn with_hook(disk: &SimulatedStorage, hook: Arc<H>) -> Self {
        Self {
            disk: disk.clone(),
            hook,
        }
    }
}

#[derive(Debug)]
struct HookedFile<H> {
    file: Box<dyn StorageFile>,
    path: PathBuf,
    hook: Arc<H>,
}

impl<H: DiskHook> StorageFile for HookedFile<H> {
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
        self.hook.file_sync(&self.path)?;
        self.file.sync()
    }
}

impl<H: DiskHook> Storage for HookedDisk<H> {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.disk.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.disk.list(dir)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn StorageFile>> {
        if create {
            self.hook.create(path)?;
        }
        let file = self.disk.open(path, create)?;
        if !self.hook.watches(path) {
            return Ok(file);
        }
        Ok(Box::new(HookedFile {
            file,
            path: path.to_path_buf(),
            hook: Arc::clone(&self.hook),
        }))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.disk.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.hook.rename(to)?;
        self.disk.rename(from, to)
    }
    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        self.disk.remove_dir(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.hook.dir_sync(dir)?;
        self.disk.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn fmt::Debug + Send + Sync>>> {
        self.disk.lock_dir(dir)
    }
}
