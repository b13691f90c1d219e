//! The file layer under a log: the real file system, or a simulated disk that can lose power.
//!
//! [`Storage`] is the handful of operations a log performs on its directory and
//! [`StorageFile`] those on one open file. [`FileStorage`] is the real file system.
//! [`SimulatedStorage`] keeps every file in memory twice: what was written, and what was made
//! durable by a file sync (file contents) or a directory sync (which names exist).
//! [`SimulatedStorage::power_cut`] throws away everything not durable, as a power loss would, so
//! tests can check that every acknowledged append survives one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use infra_common::sync::{Arc, Mutex};

/// What a log does to its directory. Implemented by [`FileStorage`] and [`SimulatedStorage`].
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates `dir` and its parents if missing.
    ///
    /// # Errors
    /// The operating system's error.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the entries of `dir`.
    ///
    /// # Errors
    /// The operating system's error.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens `path` for reading and writing, creating it (empty) when `create` is set.
    ///
    /// # Errors
    /// The operating system's error; `NotFound` when absent and `create` is unset.
    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn StorageFile>>;
    /// Removes the file `path`.
    ///
    /// # Errors
    /// The operating system's error.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to`. Durable only after [`Storage::sync_dir`].
    ///
    /// # Errors
    /// The operating system's error.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the empty directory `dir`. Durable only after [`Storage::sync_dir`] of its
    /// parent.
    ///
    /// # Errors
    /// The operating system's error; also when `dir` still has entries.
    fn remove_dir(&self, dir: &Path) -> io::Result<()>;
    /// Makes the directory's entries (created, removed and renamed names) durable.
    ///
    /// # Errors
    /// The operating system's error.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `dir` for as long as the returned guard lives; `Ok(None)` when
    /// someone else holds it.
    ///
    /// # Errors
    /// The operating system's error.
    fn lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn fmt::Debug + Send + Sync>>>;
}

/// One open file. Every method takes `&self`, so one thread can sync while another appends.
#[allow(
    clippy::len_without_is_empty,
    reason = "a file's length, read fallibly"
)]
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// The file's length in bytes.
    ///
    /// # Errors
    /// The operating system's error.
    fn len(&self) -> io::Result<u64>;
    /// Reads into `buf` from byte `pos`; returns how many bytes were read (0 at the end).
    ///
    /// # Errors
    /// The operating system's error.
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `bytes` at byte `pos`, over what is there and past the end (a gap before
    /// `pos` reads as zeros).
    ///
    /// # Errors
    /// The operating system's error; part of `bytes` may have been written.
    fn write_at(&self, pos: u64, bytes: &[u8]) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    ///
    /// # Errors
    /// The operating system's error.
    fn truncate(&self, len: u64) -> io::Result<()>;
    /// Makes the file's contents durable (`fdatasync`).
    ///
    /// # Errors
    /// The operating system's error. After a failure, what is on disk is unknown.
    fn sync(&self) -> io::Result<()>;
}

/// The real file system.
///
/// ```
/// use infra_mqueue::log::{FileStorage, Log, LogOptions};
///
/// let dir = tempfile::tempdir()?;
/// let log = Log::open_with(dir.path(), LogOptions::default(), infra_common::SystemClock::new(), FileStorage)?;
/// assert_eq!(log.append(b"x")?, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct FileStorage;

#[derive(Debug)]
struct RealFile(File);

impl StorageFile for RealFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    #[cfg(unix)]
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(&self.0, buf, pos)
    }

    #[cfg(windows)]
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        std::os::windows::fs::FileExt::seek_read(&self.0, buf, pos)
    }

    #[cfg(unix)]
    fn write_at(&self, pos: u64, bytes: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, bytes, pos)
    }

    #[cfg(windows)]
    fn write_at(&self, mut pos: u64, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = std::os::windows::fs::FileExt::seek_write(&self.0, bytes, pos)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            bytes = &bytes[n..];
            pos += n as u64;
        }
        Ok(())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

#[derive(Debug)]
struct DirLock(#[allow(dead_code, reason = "held for its lock, released on drop")] File);

impl Storage for FileStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn StorageFile>> {
        // Not in append mode: writes go where `write_at` says, also over preallocated zeros.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Box::new(RealFile(file)))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir(dir)
    }

    #[cfg(unix)]
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    #[cfg(not(unix))]
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        // Windows cannot open a directory as a file; NTFS journals its metadata.
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn fmt::Debug + Send + Sync>>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("LOCK"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(DirLock(file)))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(error)) => Err(error),
        }
    }
}

/// Creates `dir` and its missing parents, and makes their names durable: the parent of
/// each directory this call created is synced, outermost first. Without that, a power loss
/// could take a new directory away with every synced file in it. A directory an earlier
/// call created before dying unsynced is the caller's to sync ([`sync_parent`]) once it
/// knows its first open never finished.
///
/// # Errors
/// The operating system's error.
pub(crate) fn create_dir_durably(storage: &dyn Storage, dir: &Path) -> io::Result<()> {
    let missing = |path: &Path| matches!(storage.list(path), Err(error) if error.kind() == io::ErrorKind::NotFound);
    let created: Vec<&Path> = dir
        .ancestors()
        .filter(|path| !path.as_os_str().is_empty())
        .take_while(|path| missing(path))
        .collect();
    storage.create_dir_all(dir)?;
    for path in created.iter().rev() {
        sync_parent(storage, path)?;
    }
    Ok(())
}

/// Makes the name of `path` in its parent directory durable (nothing for a root).
///
/// # Errors
/// The operating system's error.
pub(crate) fn sync_parent(storage: &dyn Storage, path: &Path) -> io::Result<()> {
    match path.parent() {
        // A relative name with one component lives in the working directory.
        Some(parent) if parent.as_os_str().is_empty() => storage.sync_dir(Path::new(".")),
        Some(parent) => storage.sync_dir(parent),
        None => Ok(()),
    }
}

/// A boxed file layer is one too, so a caller can choose the layer at run time.
impl<S: Storage + ?Sized> Storage for Box<S> {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        (**self).create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        (**self).list(dir)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn StorageFile>> {
        (**self).open(path, create)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        (**self).remove(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        (**self).rename(from, to)
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        (**self).remove_dir(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        (**self).sync_dir(dir)
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn fmt::Debug + Send + Sync>>> {
        (**self).lock_dir(dir)
    }
}

/// A disk in memory that loses everything not synced when [`power_cut`](Self::power_cut) is
/// called. Clones share the same disk, so a test keeps one clone and hands another to a log.
///
/// A file's contents are durable up to its last [`StorageFile::sync`]; a name (created,
/// renamed or removed) is durable once its directory is synced with [`Storage::sync_dir`].
/// So is a created directory: its name in its parent is durable once the parent is synced,
/// and a power cut before that takes it away with everything under it (a root, with no
/// parent, is always there). A removed directory is gone at once. After a power cut, files
/// opened before it refuse every operation, like handles of a crashed process.
///
/// ```
/// use infra_common::ManualClock;
/// use infra_mqueue::log::{FsyncPolicy, Log, LogOptions, SimulatedStorage};
/// use std::path::Path;
///
/// let disk = SimulatedStorage::new();
/// let never = LogOptions { fsync: FsyncPolicy::Never, ..LogOptions::default() };
/// let log = Log::open_with(Path::new("/q"), never, ManualClock::new(), disk.clone())?;
/// log.append(b"lost")?;
/// drop(log);
/// disk.power_cut();
/// let log = Log::open_with(Path::new("/q"), LogOptions::default(), ManualClock::new(), disk.clone())?;
/// assert_eq!(log.next_offset(), 0); // never synced, so gone
/// # Ok::<(), infra_mqueue::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct SimulatedStorage {
    disk: Arc<Mutex<Disk>>,
}

#[derive(Debug, Default)]
struct Disk {
    /// Directories as the running system sees them.
    dirs: BTreeSet<PathBuf>,
    /// Directories as they would be found after a power cut: roots, and those whose name
    /// was in their parent when it was last synced.
    durable_dirs: BTreeSet<PathBuf>,
    /// Names as the running system sees them.
    names: BTreeMap<PathBuf, u64>,
    /// Names as they would be found after a power cut.
    durable_names: BTreeMap<PathBuf, u64>,
    files: BTreeMap<u64, SimFile>,
    next_id: u64,
    generation: u64,
    locked: BTreeSet<PathBuf>,
    file_syncs: u64,
    /// File writes and syncs fail (a write putting down half its bytes first).
    failing: bool,
}

#[derive(Debug, Default, Clone)]
struct SimFile {
    data: Vec<u8>,
    durable: Vec<u8>,
}

impl SimFile {
    /// The synced contents with the first `keep` changed bytes since the sync written over
    /// them: a write that reached the disk in order, up to some point.
    fn after_power_cut(&self, keep: usize) -> Vec<u8> {
        let same = self
            .data
            .iter()
            .zip(&self.durable)
            .take_while(|(a, b)| a == b)
            .count();
        let end = same + keep.min(self.data.len() - same);
        let mut kept = self.data[..end].to_vec();
        if let Some(rest) = self.durable.get(end..) {
            kept.extend_from_slice(rest);
        }
        kept
    }
}

impl SimulatedStorage {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loses power: every file goes back to its last synced contents and every directory to
    /// its last synced names. Open files stop working.
    pub fn power_cut(&self) {
        self.power_cut_keeping(0);
    }

    /// Loses power like [`power_cut`](Self::power_cut), but each file keeps up to `bytes` of
    /// what was written after its last sync, as a disk that got part of a write out would:
    /// the changed contents from the first byte that differs from the synced ones on, for
    /// `bytes` bytes, whether they were appended or written over older (say, preallocated)
    /// bytes.
    pub fn power_cut_keeping(&self, bytes: usize) {
        let mut disk = self.disk.lock();
        disk.generation += 1;
        // A directory survives if its name, and those of all its parents, were durable.
        let survives = |dir: &Path, durable: &BTreeSet<PathBuf>| {
            dir.ancestors().all(|ancestor| durable.contains(ancestor))
        };
        let dirs: BTreeSet<PathBuf> = disk
            .durable_dirs
            .iter()
            .filter(|dir| survives(dir, &disk.durable_dirs))
            .cloned()
            .collect();
        let names: BTreeMap<PathBuf, u64> = disk
            .durable_names
            .iter()
            .filter(|(path, _)| path.parent().is_some_and(|dir| dirs.contains(dir)))
            .map(|(path, &id)| (path.clone(), id))
            .collect();
        disk.durable_dirs.clone_from(&dirs);
        disk.dirs = dirs;
        disk.durable_names.clone_from(&names);
        disk.names = names;
        disk.locked.clear();
        for file in disk.files.values_mut() {
            let kept = file.after_power_cut(bytes);
            file.data.clone_from(&kept);
            file.durable = kept;
        }
    }

    /// The contents of `path` a power cut now would leave (with nothing unsynced kept), or
    /// `None` when no such file is open under that name.
    pub fn durable_contents(&self, path: &Path) -> Option<Vec<u8>> {
        let disk = self.disk.lock();
        let id = disk.names.get(path)?;
        Some(disk.files.get(id)?.durable.clone())
    }

    /// While `failing`, every file write writes half its bytes and fails, and every file sync
    /// fails, as a full or dying disk would.
    pub fn set_failing(&self, failing: bool) {
        self.disk.lock().failing = failing;
    }

    /// How many file syncs have happened on this disk.
    pub fn file_syncs(&self) -> u64 {
        self.disk.lock().file_syncs
    }

    /// Overwrites the byte at `pos` of `path` (written and durable contents alike) with
    /// `byte ^ mask`, as a disk error would; `false` when there is no such byte.
    pub fn flip_bits(&self, path: &Path, pos: usize, mask: u8) -> bool {
        let mut disk = self.disk.lock();
        let Some(&id) = disk.names.get(path) else {
            return false;
        };
        let Some(file) = disk.files.get_mut(&id) else {
            return false;
        };
        let mut flipped = false;
        for data in [&mut file.data, &mut file.durable] {
            if let Some(byte) = data.get_mut(pos) {
                *byte ^= mask;
                flipped = true;
            }
        }
        flipped
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl Storage for SimulatedStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut disk = self.disk.lock();
        for ancestor in dir.ancestors() {
            disk.dirs.insert(ancestor.to_path_buf());
            if ancestor.parent().is_none() {
                disk.durable_dirs.insert(ancestor.to_path_buf());
            }
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let disk = self.disk.lock();
        if !disk.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(disk
            .names
            .keys()
            .chain(disk.dirs.iter())
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn StorageFile>> {
        let mut disk = self.disk.lock();
        let id = match disk.names.get(path) {
            Some(&id) => id,
            None if create => {
                if !path.parent().is_some_and(|dir| disk.dirs.contains(dir)) {
                    return Err(not_found(path));
                }
                let id = disk.next_id;
                disk.next_id += 1;
                disk.files.insert(id, SimFile::default());
                disk.names.insert(path.to_path_buf(), id);
                id
            }
            None => return Err(not_found(path)),
        };
        Ok(Box::new(SimHandle {
            disk: self.disk.clone(),
            id,
            generation: disk.generation,
        }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk.lock();
        disk.names
            .remove(path)
            .map(drop)
            .ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut disk = self.disk.lock();
        let id = disk.names.remove(from).ok_or_else(|| not_found(from))?;
        disk.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        let mut disk = self.disk.lock();
        if !disk.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let inside = |path: &PathBuf| path.parent() == Some(dir);
        if disk.names.keys().any(inside) || disk.dirs.iter().any(inside) {
            return Err(io::Error::other(format!("{} is not empty", dir.display())));
        }
        // A removed directory is gone at once, with its entries.
        disk.dirs.remove(dir);
        disk.durable_dirs.remove(dir);
        disk.durable_names
            .retain(|path, _| path.parent() != Some(dir));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut disk = self.disk.lock();
        let Disk {
            names,
            durable_names,
            dirs,
            durable_dirs,
            ..
        } = &mut *disk;
        durable_names.retain(|path, _| path.parent() != Some(dir));
        for (path, id) in names.iter() {
            if path.parent() == Some(dir) {
                durable_names.insert(path.clone(), *id);
            }
        }
        durable_dirs.retain(|path| path.parent() != Some(dir) || dirs.contains(path));
        for path in dirs.iter() {
            if path.parent() == Some(dir) {
                durable_dirs.insert(path.clone());
            }
        }
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Option<Box<dyn fmt::Debug + Send + Sync>>> {
        let mut disk = self.disk.lock();
        if !disk.locked.insert(dir.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(Box::new(SimLock {
            disk: self.disk.clone(),
            dir: dir.to_path_buf(),
            generation: disk.generation,
        })))
    }
}

#[derive(Debug)]
struct SimLock {
    disk: Arc<Mutex<Disk>>,
    dir: PathBuf,
    generation: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut disk = self.disk.lock();
        if disk.generation == self.generation {
            disk.locked.remove(&self.dir);
        }
    }
}

#[derive(Debug)]
struct SimHandle {
    disk: Arc<Mutex<Disk>>,
    id: u64,
    generation: u64,
}

impl SimHandle {
    fn with<R>(&self, f: impl FnOnce(&mut SimFile, &mut u64, bool) -> R) -> io::Result<R> {
        let mut disk = self.disk.lock();
        if disk.generation != self.generation {
            return Err(io::Error::other("the simulated disk lost power"));
        }
        let Disk {
            files,
            file_syncs,
            failing,
            ..
        } = &mut *disk;
        let file = files
            .get_mut(&self.id)
            .ok_or_else(|| io::Error::other("file vanished"))?;
        Ok(f(file, file_syncs, *failing))
    }
}

impl StorageFile for SimHandle {
    fn len(&self) -> io::Result<u64> {
        self.with(|file, _, _| file.data.len() as u64)
    }

    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.with(|file, _, _| {
            let start = usize::try_from(pos)
                .unwrap_or(usize::MAX)
                .min(file.data.len());
            let n = buf.len().min(file.data.len() - start);
            buf[..n].copy_from_slice(&file.data[start..start + n]);
            n
        })
    }

    fn write_at(&self, pos: u64, bytes: &[u8]) -> io::Result<()> {
        let pos = usize::try_from(pos).map_err(io::Error::other)?;
        self.with(|file, _, failing| {
            let written = if failing {
                &bytes[..bytes.len() / 2]
            } else {
                bytes
            };
            let end = pos
                .checked_add(written.len())
                .ok_or_else(|| io::Error::other("write past the largest offset"))?;
            if file.data.len() < end {
                file.data.resize(end, 0);
            }
            file.data[pos..end].copy_from_slice(written);
            if failing {
                return Err(io::Error::other("simulated write failure"));
            }
            Ok(())
        })?
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.with(|file, _, _| {
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            file.data.resize(len, 0);
        })
    }

    fn sync(&self) -> io::Result<()> {
        self.with(|file, syncs, failing| {
            if failing {
                return Err(io::Error::other("simulated fsync failure"));
            }
            file.durable.clone_from(&file.data);
            *syncs += 1;
            Ok(())
        })?
    }
}
