//! A simulated disk that notes which thread ran each file sync, directory sync, rename and file
//! creation, for tests that check an async call leaves that work to tokio's blocking pool.
#![allow(
    dead_code,
    reason = "each test file that includes this uses a part of it"
)]

use std::io;
use std::path::{Path, PathBuf};
use std::thread::ThreadId;

use infra_common::sync::{Arc, Mutex};
use infra_mqueue::log::SimulatedStorage;

use super::hooked_disk::{DiskHook, HookedDisk};

/// What a recorded operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    FileSync,
    DirSync,
    Rename,
    /// A file opened to be created if missing (a new segment, say).
    Create,
}

/// One recorded operation: what, on which path, on which thread.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) op: Op,
    pub(crate) path: PathBuf,
    pub(crate) thread: ThreadId,
}

/// The operations recorded so far, shared by every handle of one disk.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    ops: Mutex<Vec<Recorded>>,
}

impl Recorder {
    fn note(&self, op: Op, path: &Path) {
        self.ops.lock().push(Recorded {
            op,
            path: path.to_path_buf(),
            thread: std::thread::current().id(),
        });
    }

    /// Forgets what was recorded (the work of an open, say).
    pub(crate) fn clear(&self) {
        self.ops.lock().clear();
    }

    /// Everything recorded since the last `clear`, in order.
    pub(crate) fn ops(&self) -> Vec<Recorded> {
        self.ops.lock().clone()
    }

    /// Everything recorded since the last `clear`, in order, after checking that none of it
    /// ran on the calling thread (a current-thread runtime's, where the tasks run).
    pub(crate) fn ops_off_this_thread(&self) -> Vec<Recorded> {
        let ops = self.ops();
        let this_thread = std::thread::current().id();
        let on_this_thread: Vec<_> = ops.iter().filter(|op| op.thread == this_thread).collect();
        assert!(
            on_this_thread.is_empty(),
            "ran on the runtime's thread: {on_this_thread:?}"
        );
        ops
    }
}

impl DiskHook for Recorder {
    fn file_sync(&self, path: &Path) -> io::Result<()> {
        self.note(Op::FileSync, path);
        Ok(())
    }

    fn dir_sync(&self, dir: &Path) -> io::Result<()> {
        self.note(Op::DirSync, dir);
        Ok(())
    }

    fn rename(&self, to: &Path) -> io::Result<()> {
        self.note(Op::Rename, to);
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<()> {
        self.note(Op::Create, path);
        Ok(())
    }
}

/// The simulated disk, recording its syncs, renames and creations.
pub(crate) type ThreadRecordingDisk = HookedDisk<Recorder>;

impl HookedDisk<Recorder> {
    /// `disk`, recording into the returned recorder.
    pub(crate) fn new(disk: &SimulatedStorage) -> (Self, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        (Self::with_hook(disk, Arc::clone(&recorder)), recorder)
    }
}
