//! The real file system with directory syncs that fail on demand, as on a disk that is dying.
#![allow(
    dead_code,
    reason = "each test file that includes this uses a part of it"
)]

use std::fmt;
use std::io;
use std::path::Path;

use infra_common::sync::Arc;
use infra_common::sync::atomic::{AtomicBool, Ordering};
use infra_mqueue::log::{FileStorage, Storage, StorageFile};

/// [`FileStorage`] whose directory syncs fail while `failing`, or from the next rename on.
#[derive(Debug, Clone, Default)]
pub(crate) struct FailingDirSyncs {
    failing: Arc<AtomicBool>,
    after_next_rename: Arc<AtomicBool>,
}

impl FailingDirSyncs {
    /// Every directory sync fails while `failing` is set.
    pub(crate) fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Every directory sync fails once the next rename has been made.
    pub(crate) fn fail_after_next_rename(&self) {
        self.after_next_rename.store(true, Ordering::SeqCst);
    }
}

impl Storage for FailingDirSyncs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        FileStorage.create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        FileStorage.list(dir)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn StorageFile>> {
        FileStorage.open(path, create)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        FileStorage.remove(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        FileStorage.rename(from, to)?;
        if self.after_next_rename.swap(false, Ordering::SeqCst) {
            self.set_failing(true);
        }
        Ok(())
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        FileStorage.remove_dir(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(io::Error::other("directory sync failed"));
        }
        FileStorage.sync_dir(dir)
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn fmt::Debug + Send + Sync>>> {
        FileStorage.lock_dir(dir)
    }
}
