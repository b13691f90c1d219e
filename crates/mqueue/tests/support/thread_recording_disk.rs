//! A simulated disk that notes which thread ran each file sync, directory sync and rename, for
//! tests that check an async call leaves that work to tokio's blocking pool.
#![allow(
    dead_code,
    reason = "each test file that includes this uses a part of it"
)]

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::thread::ThreadId;

use infra_common::sync::{Arc, Mutex};
use infra_mqueue::log::{SimulatedStorage, Storage, StorageFile};

/// What a recorded operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    FileSync,
    DirSync,
    Rename,
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
}

/// The simulated disk, recording its syncs and renames.
#[derive(Debug, Clone)]
pub(crate) struct ThreadRecordingDisk {
    disk: SimulatedStorage,
    recorder: Arc<Recorder>,
}

impl ThreadRecordingDisk {
    /// `disk`, recording into the returned recorder.
    pub(crate) fn new(disk: &SimulatedStorage) -> (Self, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        let recording = Self {
            disk: disk.clone(),
            recorder: Arc::clone(&recorder),
        };
        (recording, recorder)
    }
}

#[derive(Debug)]
struct RecordingFile {
    file: Box<dyn StorageFile>,
    path: PathBuf,
    recorder: Arc<Recorder>,
}

impl StorageFile for RecordingFile {
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
        self.recorder.note(Op::FileSync, &self.path);
        self.file.sync()
    }
}

impl Storage for ThreadRecordingDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.disk.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.disk.list(dir)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(RecordingFile {
            file: self.disk.open(path, create)?,
            path: path.to_path_buf(),
            recorder: Arc::clone(&self.recorder),
        }))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.disk.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.recorder.note(Op::Rename, to);
        self.disk.rename(from, to)
    }
    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        self.disk.remove_dir(dir)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.recorder.note(Op::DirSync, dir);
        self.disk.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn fmt::Debug + Send + Sync>>> {
        self.disk.lock_dir(dir)
    }
}
