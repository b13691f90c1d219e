//! Streams: a topic of N partition logs, keyed publishing, and consumer groups with durably
//! committed offsets (at-least-once).
//!
//! A [`Stream`] is one directory holding `partition-NNNNN/` logs. [`Stream::publish`] hashes the
//! key (the workspace's stable XXH3 hash, the same in every process and release) to pick a
//! partition, so all records of one key land in one partition, in publish order, and a consumer
//! reads them in that order.
//!
//! Creating a stream is crash-safe: the partitions and the `groups` directory are created
//! and their names made durable before the file `stream.mark` (the partition count) is
//! written, last. An open that finds no mark completes the creation, unless the stream holds
//! records or commits with fewer partitions than asked for (a stream from before the mark,
//! whose count is then refused as another count); a marked stream missing a partition is
//! [`Error::Corrupt`]. Nothing is ever deleted. The stream directory's lock is held from
//! before the mark is read until the stream is dropped, so of two opens at once the second
//! is [`Error::Locked`] and cannot mark another count over the first's creation.
//!
//! A [`ConsumerGroup`] reads every partition from its committed offsets. [`ConsumerGroup::poll`]
//! moves a read position only; [`ConsumerGroup::commit`] makes the positions the group's
//! committed offsets, durably (a small file written to a temporary name, fsynced, renamed over
//! the old one, and the directory fsynced). Commit after processing: a consumer that dies
//! before its commit gets the same records again from the next `group` call (at-least-once; a
//! record can be processed twice, never skipped). Under a policy other than `Always`, a power
//! loss can take back records a group had committed past; reopening the stream lowers such
//! commits to what the partitions hold, so records published afterwards are not skipped. One `ConsumerGroup` value per group name at a
//! time: two values of one group would each commit their own positions over the other's.
//!
//! ```
//! use infra_mqueue::stream::{Stream, StreamOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let stream = Stream::open(dir.path(), StreamOptions { partitions: 4, ..StreamOptions::default() })?;
//! stream.publish(b"user-7", b"signed up")?;
//! stream.publish(b"user-7", b"paid")?;
//!
//! let mut group = stream.group("billing")?;
//! let messages = group.poll(10)?;
//! let events: Vec<&[u8]> = messages.iter().map(|m| m.payload.as_slice()).collect();
//! assert_eq!(events, [&b"signed up"[..], b"paid"]); // one key: publish order
//! group.commit()?; // processed: not delivered to "billing" again
//! assert!(stream.group("billing")?.poll(10)?.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};

use infra_common::{Clock, SystemClock, stable_hash};

use crate::Error;
use crate::log::{
    FileStorage, Log, LogOptions, Storage, create_dir_durably, sync_parent, take_dir_lock,
};

/// The most partitions a stream may have.
pub const MAX_PARTITIONS: u32 = 4096;
/// The longest consumer group name, in bytes.
pub const MAX_GROUP_NAME: usize = 64;

const OFFSETS_MAGIC: &[u8; 8] = b"IMQOFF01";
const MARK_MAGIC: &[u8; 8] = b"IMQSTR01";

/// The file whose presence says the stream's creation finished, and with how many partitions:
/// written last, so a directory without it is a creation cut short (or a stream from before
/// the mark existed), which the next open completes.
const MARK_NAME: &str = "stream.mark";

/// How a [`Stream`] is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOptions {
    /// Partition logs; fixed once the stream exists (reopening with another count is refused,
    /// since keys would move). Default 1, at most [`MAX_PARTITIONS`].
    pub partitions: u32,
    /// Options of every partition log.
    pub log: LogOptions,
    /// Whether [`Stream::open`] creates a stream that is not there (default `true`). When
    /// `false`, opening a directory that is missing or holds no stream (neither a finished
    /// stream's mark nor a partition) fails with [`Error::UnknownStream`] and creates nothing,
    /// so a mistyped topic is an error rather than a new, empty stream.
    pub create: bool,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            partitions: 1,
            log: LogOptions::default(),
            create: true,
        }
    }
}

/// One record delivered to a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The partition it was read from.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
    /// What was published.
    pub payload: Vec<u8>,
}

/// A topic: N partition logs in one directory, and its consumer groups' offsets.
#[derive(Debug)]
pub struct Stream {
    dir: PathBuf,
    partitions: Vec<Log>,
    storage: Box<dyn Storage>,
    /// The stream directory's lock: one `Stream` per directory at a time.
    _lock: Box<dyn std::fmt::Debug + Send + Sync>,
}

fn partition_dir(dir: &Path, partition: u32) -> PathBuf {
    dir.join(format!("partition-{partition:05}"))
}

impl Stream {
    /// Opens (creating if needed) the stream in `dir` on the real file system and clock.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] for a partition count of 0, above [`MAX_PARTITIONS`] or unlike
    /// the existing stream's, or log options [`Log::open`] refuses (before anything is created);
    /// [`Error::UnknownStream`] when there is no stream in `dir` and
    /// [`StreamOptions::create`] is off; [`Error::Locked`] while another `Stream` has the directory open
    /// (in this process or another); [`Error::Corrupt`] for a stream missing a partition or
    /// with a damaged mark; anything [`Log::open`] returns.
    pub fn open(dir: &Path, options: StreamOptions) -> Result<Self, Error> {
        Self::open_with(dir, options, SystemClock::new(), FileStorage)
    }

    /// Opens the stream with a chosen clock and file layer (shared by every partition).
    ///
    /// # Errors
    /// As [`Stream::open`].
    pub fn open_with<C, S>(
        dir: &Path,
        options: StreamOptions,
        clock: C,
        storage: S,
    ) -> Result<Self, Error>
    where
        C: Clock + Clone + 'static,
        S: Storage + Clone + 'static,
    {
        let StreamOptions {
            partitions: count,
            log: log_options,
            create,
        } = options;
        if count == 0 || count > MAX_PARTITIONS {
            return Err(Error::InvalidOptions {
                reason: "a stream has between 1 and MAX_PARTITIONS (4096) partitions",
            });
        }
        // Checked before anything is created, rather than by the first partition's open after
        // the stream's directories exist.
        log_options.validate()?;
        if !create && !holds_a_stream(&storage, dir)? {
            return Err(Error::UnknownStream {
                dir: dir.to_path_buf(),
            });
        }
        let groups = dir.join("groups");
        create_dir_durably(&storage, &groups)
            .map_err(|e| Error::io("create directory", &groups, e))?;
        // Held while the stream is open: another open of the directory would otherwise read
        // the layout, find no mark, and write its own count over a creation finished meanwhile.
        let lock = take_dir_lock(&storage, dir)?;
        let marked = read_mark(&storage, dir)?;
        let opener = Opener {
            dir,
            log_options: &log_options,
            clock: &clock,
            storage: &storage,
        };
        check_layout(&opener, marked, count)?;
        let partitions = (0..count)
            .map(|p| {
                let log = opener.open(&partition_dir(dir, p))?;
                // A series per partition: a shared one would have each partition set the depth
                // gauge to its own depth over the others'.
                #[cfg(feature = "metrics")]
                let log = log.with_metrics_name(&format!(
                    "{}/partition-{p:05}",
                    dir.file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
                ));
                Ok(log)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        if marked.is_none() {
            finish_creation(&storage, dir, count)?;
        }
        let stream = Self {
            dir: dir.to_path_buf(),
            partitions,
            storage: Box::new(storage),
            _lock: lock,
        };
        stream.clamp_commits()?;
        Ok(stream)
    }

    /// Under a policy other than `Always`, a commit can outlive the records it passed (a power
    /// loss took them back), and new records would reuse those offsets unread. On open, every
    /// group's committed offsets are lowered to what the partitions hold.
    fn clamp_commits(&self) -> Result<(), Error> {
        let groups = self.dir.join("groups");
        let names = self
            .storage
            .list(&groups)
            .map_err(|e| Error::io("list", &groups, e))?;
        for name in names.iter().filter(|n| n.ends_with(".offsets")) {
            let path = groups.join(name);
            let committed = self.read_offsets(&path)?;
            let clamped: Vec<u64> = committed
                .iter()
                .zip(&self.partitions)
                .map(|(&offset, log)| offset.min(log.next_offset()))
                .collect();
            if clamped != committed {
                self.write_offsets(&path, &clamped)?;
            }
        }
        Ok(())
    }

    /// The number of partitions.
    pub fn partitions(&self) -> u32 {
        u32::try_from(self.partitions.len()).unwrap_or(u32::MAX)
    }

    /// The partition a key's records go to: its stable hash modulo the partition count.
    pub fn partition_for(&self, key: &[u8]) -> u32 {
        u32::try_from(stable_hash(key) % u64::from(self.partitions())).unwrap_or(0)
    }

    /// Appends `payload` to the key's partition; returns the partition and offset once durable
    /// per the log options' fsync policy.
    ///
    /// # Errors
    /// As [`Log::append`].
    pub fn publish(&self, key: &[u8], payload: &[u8]) -> Result<(u32, u64), Error> {
        let partition = self.partition_for(key);
        let offset = self.partitions[partition as usize].append(payload)?;
        Ok((partition, offset))
    }

    /// [`publish`](Self::publish) for async callers (feature `tokio`): returns the partition and
    /// offset once durable per the fsync policy, without blocking the thread for the fsync
    /// (see [`Log::append_async`], which it calls on the key's partition).
    ///
    /// ```
    /// use infra_mqueue::stream::{Stream, StreamOptions};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let dir = tempfile::tempdir()?;
    /// let stream = Stream::open(dir.path(), StreamOptions::default())?;
    /// let (partition, offset) = stream.publish_async(b"user-7", b"signed up").await?;
    /// assert_eq!((partition, offset), (0, 0)); // durable
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// As [`Log::append_async`].
    #[cfg(feature = "tokio")]
    pub async fn publish_async(&self, key: &[u8], payload: &[u8]) -> Result<(u32, u64), Error> {
        let partition = self.partition_for(key);
        let offset = self.partitions[partition as usize]
            .append_async(payload)
            .await?;
        Ok((partition, offset))
    }

    /// One partition's log, for reading it directly or for its stats.
    pub fn partition(&self, partition: u32) -> Option<&Log> {
        self.partitions.get(partition as usize)
    }

    /// The consumer group `name`, positioned at its committed offsets (0 for a new group).
    ///
    /// # Errors
    /// [`Error::InvalidName`] unless the name is 1 to [`MAX_GROUP_NAME`] ASCII letters, digits,
    /// `-` or `_`; [`Error::Corrupt`] when its offsets file fails its checks; [`Error::Io`].
    pub fn group(&self, name: &str) -> Result<ConsumerGroup<'_>, Error> {
        if name.is_empty()
            || name.len() > MAX_GROUP_NAME
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::InvalidName {
                reason: "a group name is 1 to 64 ASCII letters, digits, '-' or '_'",
            });
        }
        let path = self.dir.join("groups").join(format!("{name}.offsets"));
        let committed = self.read_offsets(&path)?;
        Ok(ConsumerGroup {
            stream: self,
            path,
            positions: committed.clone(),
            committed,
            next_start: 0,
        })
    }

    fn read_offsets(&self, path: &Path) -> Result<Vec<u64>, Error> {
        let n = self.partitions.len();
        let Some(body) = read_checked(&*self.storage, path, 8 + 4 + 8 * n)? else {
            return Ok(vec![0; n]);
        };
        if &body[..8] != OFFSETS_MAGIC || body[8..12] != u32::try_from(n).unwrap_or(0).to_le_bytes()
        {
            return Err(corrupt(path, "not an offsets file of this stream"));
        }
        Ok(body[12..]
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
            .collect())
    }

    fn write_offsets(&self, path: &Path, offsets: &[u64]) -> Result<(), Error> {
        let mut body = OFFSETS_MAGIC.to_vec();
        body.extend_from_slice(&u32::try_from(offsets.len()).unwrap_or(0).to_le_bytes());
        for offset in offsets {
            body.extend_from_slice(&offset.to_le_bytes());
        }
        write_checked(&*self.storage, path, body)
    }
}

fn corrupt(path: &Path, reason: &'static str) -> Error {
    Error::Corrupt {
        segment: path.to_path_buf(),
        position: 0,
        reason,
    }
}

/// The partition count the stream's mark records, or `None` when its creation has not
/// finished (or it predates the mark).
fn read_mark(storage: &dyn Storage, dir: &Path) -> Result<Option<u32>, Error> {
    let path = dir.join(MARK_NAME);
    let Some(body) = read_checked(storage, &path, 8 + 4)? else {
        return Ok(None);
    };
    if &body[..8] != MARK_MAGIC {
        return Err(corrupt(&path, "not the mark of a stream"));
    }
    Ok(Some(u32::from_le_bytes(
        body[8..12].try_into().unwrap_or([0; 4]),
    )))
}

/// What opening a stream's partition logs takes.
struct Opener<'a, C, S> {
    dir: &'a Path,
    log_options: &'a LogOptions,
    clock: &'a C,
    storage: &'a S,
}

impl<C: Clock + Clone + 'static, S: Storage + Clone + 'static> Opener<'_, C, S> {
    fn open(&self, partition_dir: &Path) -> Result<Log, Error> {
        Log::open_with(
            partition_dir,
            self.log_options.clone(),
            self.clock.clone(),
            self.storage.clone(),
        )
    }
}

/// Refuses what `count` partitions cannot open: a finished stream with another count or with
/// a partition missing, or an unfinished one that cannot be a creation cut short.
fn check_layout<C, S>(
    opener: &Opener<'_, C, S>,
    marked: Option<u32>,
    count: u32,
) -> Result<(), Error>
where
    C: Clock + Clone + 'static,
    S: Storage + Clone + 'static,
{
    let another_count = Error::InvalidOptions {
        reason: "the stream exists with another partition count (keys would move)",
    };
    let dir = opener.dir;
    let present = present_partitions(opener.storage, dir)?;
    match marked {
        Some(marked) if marked != count => Err(another_count),
        Some(_) if present.len() != count as usize => {
            Err(corrupt(dir, "a partition of the stream is missing"))
        }
        Some(_) => Ok(()),
        None if present.len() > count as usize => Err(another_count),
        None if present.len() < count as usize && holds_anything(opener, &present)? => {
            // Records or commits were acknowledged, so its creation finished, before streams
            // were marked, with the partitions it has.
            Err(another_count)
        }
        None => Ok(()),
    }
}

/// Whether `dir` holds a stream: a finished stream's mark, or a partition (of a creation cut
/// short, or of a stream from before the mark, which an open completes).
fn holds_a_stream(storage: &dyn Storage, dir: &Path) -> Result<bool, Error> {
    match storage.list(dir) {
        Ok(names) => Ok(names
            .iter()
            .any(|name| name == MARK_NAME || name.starts_with("partition-"))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(Error::io("list", dir, error)),
    }
}

/// The names of the partition directories in `dir`.
fn present_partitions(storage: &dyn Storage, dir: &Path) -> Result<Vec<String>, Error> {
    Ok(storage
        .list(dir)
        .map_err(|e| Error::io("list", dir, e))?
        .into_iter()
        .filter(|name| name.starts_with("partition-"))
        .collect())
}

/// Whether an unmarked stream holds a record in one of its `partitions` or a group's commit:
/// what a creation cut short never holds, since its open never returned.
fn holds_anything<C, S>(opener: &Opener<'_, C, S>, partitions: &[String]) -> Result<bool, Error>
where
    C: Clock + Clone + 'static,
    S: Storage + Clone + 'static,
{
    let groups = opener.dir.join("groups");
    let commits = opener
        .storage
        .list(&groups)
        .map_err(|e| Error::io("list", &groups, e))?
        .iter()
        .any(|name| name.ends_with(".offsets"));
    if commits {
        return Ok(true);
    }
    for name in partitions {
        if opener.open(&opener.dir.join(name))?.next_offset() != 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Marks the creation finished once every partition exists: the stream directory's name and
/// the partitions' are made durable first (an earlier open may have created them and died
/// before syncing), so a mark that survives a power loss has its partitions.
fn finish_creation(storage: &dyn Storage, dir: &Path, count: u32) -> Result<(), Error> {
    sync_parent(storage, dir).map_err(|e| Error::io("sync directory", dir, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))?;
    let mut body = MARK_MAGIC.to_vec();
    body.extend_from_slice(&count.to_le_bytes());
    write_checked(storage, &dir.join(MARK_NAME), body)
}

/// The body of the small file `path` that [`write_checked`] wrote, `body_len` bytes, or
/// `None` when there is none.
fn read_checked(
    storage: &dyn Storage,
    path: &Path,
    body_len: usize,
) -> Result<Option<Vec<u8>>, Error> {
    let file = match storage.open(path, false) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let expected = body_len + 4;
    let len = file.len().map_err(|e| Error::io("stat", path, e))?;
    if len != expected as u64 {
        return Err(corrupt(path, "a stream file of the wrong size"));
    }
    let mut bytes = vec![0; expected];
    let mut filled = 0;
    while filled < expected {
        let read = file
            .read_at(filled as u64, &mut bytes[filled..])
            .map_err(|e| Error::io("read", path, e))?;
        if read == 0 {
            return Err(corrupt(path, "a stream file shorter than its size"));
        }
        filled += read;
    }
    let crc = bytes.split_off(body_len);
    if crc32c::crc32c(&bytes).to_le_bytes() != crc[..] {
        return Err(corrupt(path, "a stream file's checksum mismatch"));
    }
    Ok(Some(bytes))
}

/// Replaces `path` with `body` and its CRC-32C, durably and whole: written to a temporary
/// name, fsynced, renamed over `path`, and the directory fsynced.
fn write_checked(storage: &dyn Storage, path: &Path, mut body: Vec<u8>) -> Result<(), Error> {
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    let file = storage
        .open(&temp, true)
        .map_err(|e| Error::io("create", &temp, e))?;
    file.truncate(0)
        .and_then(|()| file.write_at(0, &body))
        .and_then(|()| file.sync())
        .map_err(|e| Error::io("write", &temp, e))?;
    drop(file);
    storage
        .rename(&temp, path)
        .map_err(|e| Error::io("rename", &temp, e))?;
    let parent = path.parent().unwrap_or(path);
    storage
        .sync_dir(parent)
        .map_err(|e| Error::io("sync directory", parent, e))
}

/// A consumer group's read positions and committed offsets over every partition of a stream.
#[derive(Debug)]
pub struct ConsumerGroup<'a> {
    stream: &'a Stream,
    path: PathBuf,
    /// Where the next poll reads, per partition.
    positions: Vec<u64>,
    /// Durably committed: where a new `ConsumerGroup` of this name starts, per partition.
    committed: Vec<u64>,
    /// The partition the next poll reads first: polls go round the partitions, so a backlog
    /// in one does not starve the others when a poll takes fewer records than they hold.
    next_start: usize,
}

impl ConsumerGroup<'_> {
    /// Up to `max` records not yet polled, taken from the partitions in turn (each partition in
    /// offset order), starting after the partition the previous poll last took a record from,
    /// so polls smaller than the partition count still reach every partition. Records removed
    /// by retention before they were read are skipped.
    ///
    /// # Errors
    /// As [`Log::read`], other than [`Error::OffsetTruncated`]. A poll that fails moves no
    /// read position: what it read before the failure is read again by the next poll.
    pub fn poll(&mut self, max: usize) -> Result<Vec<Message>, Error> {
        self.poll_within(max, usize::MAX)
    }

    /// [`ConsumerGroup::poll`], also bounded in bytes: the payloads returned add up to at most
    /// `max_bytes`, except that a poll with a record to return returns at least one, whatever
    /// its size (up to the stream's `max_record_bytes`). A poll of many records of the largest
    /// size would otherwise hold `max` times that size in memory at once.
    ///
    /// ```
    /// use infra_mqueue::stream::{Stream, StreamOptions};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let stream = Stream::open(dir.path(), StreamOptions::default())?;
    /// for _ in 0..4 {
    ///     stream.publish(b"key", &[0; 1_000])?;
    /// }
    /// let mut group = stream.group("reports")?;
    /// assert_eq!(group.poll_within(100, 2_500)?.len(), 2); // 2,000 bytes; a third is too many
    /// assert_eq!(group.poll_within(100, 10)?.len(), 1); // always at least one
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`ConsumerGroup::poll`].
    pub fn poll_within(&mut self, max: usize, max_bytes: usize) -> Result<Vec<Message>, Error> {
        // The positions move only with the records returned: a commit after a failed poll
        // must not pass records the consumer never got.
        let mut positions = self.positions.clone();
        let mut out = Vec::new();
        let count = positions.len();
        let share = max.div_ceil(count.max(1)).max(1);
        let mut progress = true;
        let mut bytes_left = max_bytes;
        // Whether the next record would take the poll past its bytes.
        let mut full = false;
        // The partition after the last one a record came from: where the next poll starts.
        let mut next_start = self.next_start;
        while out.len() < max && progress && !full {
            progress = false;
            for turn in 0..count {
                let want = share.min(max - out.len());
                if want == 0 || full {
                    break;
                }
                let partition = (self.next_start + turn) % count;
                let position = &mut positions[partition];
                let log = &self.stream.partitions[partition];
                // Retention may remove the position's segment at any time, also between
                // reading the oldest offset kept and reading from it: skip to that offset.
                *position = (*position).max(log.first_offset());
                let mut records = loop {
                    match log.read_within(*position, want, bytes_left) {
                        Err(Error::OffsetTruncated { first, .. }) => *position = first,
                        read => break read?,
                    }
                };
                // A read returns its first record whatever its size; only the poll's first
                // record may take the poll past its bytes.
                if !out.is_empty()
                    && records
                        .first()
                        .is_some_and(|first| first.payload.len() > bytes_left)
                {
                    records.clear();
                    full = true;
                }
                if let Some(last) = records.last() {
                    *position = last.offset + 1;
                    progress = true;
                    next_start = (partition + 1) % count;
                }
                let read: usize = records.iter().map(|r| r.payload.len()).sum();
                bytes_left = bytes_left.saturating_sub(read);
                out.extend(records.into_iter().map(|r| Message {
                    partition: u32::try_from(partition).unwrap_or(u32::MAX),
                    offset: r.offset,
                    payload: r.payload,
                }));
            }
        }
        self.positions = positions;
        self.next_start = next_start;
        Ok(out)
    }

    /// Commits everything polled so far, durably: a later `group` call of this name starts
    /// after it.
    ///
    /// # Errors
    /// [`Error::Io`] when the offsets file cannot be written; the committed offsets are then
    /// unchanged.
    pub fn commit(&mut self) -> Result<(), Error> {
        self.stream.write_offsets(&self.path, &self.positions)?;
        self.committed.clone_from(&self.positions);
        Ok(())
    }

    /// The committed offset of `partition`: the first record a new consumer of this group reads.
    pub fn committed(&self, partition: u32) -> Option<u64> {
        self.committed.get(partition as usize).copied()
    }

    /// Moves the read positions back to the committed offsets, so records polled but not
    /// committed are polled again (what a restart does).
    pub fn rewind(&mut self) {
        self.positions.clone_from(&self.committed);
        self.next_start = 0;
    }
}
