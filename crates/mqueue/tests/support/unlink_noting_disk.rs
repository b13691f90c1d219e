//! A file layer that notes the unlinks a directory sync has not yet made durable, so that a
//! test can keep some of them across a power cut and not others, as a file system that writes
//! directory changes back out of order may. (The simulated disk itself makes every change of a
//! directory durable at once, at its sync.)
#![allow(
    dead_code,
    reason = "each test file that includes this uses a part of it"
)]

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use infra_common::sync::{Arc, Mutex};
use infra_mqueue::log::{Storage, StorageFile};

/// `inner`, noting each file it removes until a sync of the file's directory succeeds.
#[derive(Debug, Clone)]
pub(crate) struct UnlinkNotingDisk<S> {
    inner: S,
    unsynced: Arc<Mutex<Vec<PathBuf>>>,
}

impl<S: Storage> UnlinkNotingDisk<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            unsynced: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The files removed and not yet made durable as removed, oldest unlink first.
    pub(crate) fn unsynced_unlinks(&self) -> Vec<PathBuf> {
        self.unsynced.lock().clone()
    }
}

impl<S: Storage> Storage for UnlinkNotingDisk<S> {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn StorageFile>> {
        self.inner.open(path, create)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)?;
        self.unsynced.lock().push(path.to_path_buf());
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.remove_dir(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)?;
        self.unsynced
            .lock()
            .retain(|path| path.parent() != Some(dir));
        Ok(())
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn fmt::Debug + Send + Sync>>> {
        self.inner.lock_dir(dir)
    }
}
