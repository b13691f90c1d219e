//! A file layer (the real file system unless told otherwise) whose directory syncs or file
//! removals fail on demand, as on a disk that is dying.
#![allow(
    dead_code,
    reason = "each test file that includes this uses a part of it"
)]

use std::fmt;
use std::io;
use std::path::Path;

use infra_common::sync::Arc;
use infra_common::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use infra_mqueue::log::{FileStorage, Storage, StorageFile};

/// A file layer whose directory syncs fail while `failing`, or from the next rename on, and
/// whose removals fail once `removals_left` is used up.
#[derive(Debug, Clone)]
pub(crate) struct FailingDirSyncs {
    inner: Arc<Box<dyn Storage>>,
    failing: Arc<AtomicBool>,
    after_next_rename: Arc<AtomicBool>,
    removals_left: Arc<AtomicUsize>,
}

impl Default for FailingDirSyncs {
    fn default() -> Self {
        Self::over(FileStorage)
    }
}

impl FailingDirSyncs {
    /// Over `inner` (say, a simulated disk the test cuts the power of).
    pub(crate) fn over(inner: impl Storage + 'static) -> Self {
        Self {
            inner: Arc::new(Box::new(inner)),
            failing: Arc::default(),
            after_next_rename: Arc::default(),
            removals_left: Arc::new(AtomicUsize::new(usize::MAX)),
        }
    }

    /// Every directory sync fails while `failing` is set.
    pub(crate) fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Every removal of a file fails while `failing` is set (a file the system will not let go
    /// of, a permission taken away).
    pub(crate) fn set_failing_removes(&self, failing: bool) {
        self.fail_removes_after(if failing { 0 } else { usize::MAX });
    }

    /// The next `count` removals succeed, every later one fails.
    pub(crate) fn fail_removes_after(&self, count: usize) {
        self.removals_left.store(count, Ordering::SeqCst);
    }

    /// Every directory sync fails once the next rename has been made.
    pub(crate) fn fail_after_next_rename(&self) {
        self.after_next_rename.store(true, Ordering::SeqCst);
    }
}

impl Storage for FailingDirSyncs {
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
        let allowed = self
            .removals_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
                    .map(|fewer| if left == usize::MAX { left } else { fewer })
            });
        if allowed.is_err() {
            return Err(io::Error::other("remove failed"));
        }
        self.inner.remove(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)?;
        if self.after_next_rename.swap(false, Ordering::SeqCst) {
            self.set_failing(true);
        }
        Ok(())
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.remove_dir(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(io::Error::other("directory sync failed"));
        }
        self.inner.sync_dir(dir)
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn fmt::Debug + Send + Sync>>> {
        self.inner.lock_dir(dir)
    }
}
