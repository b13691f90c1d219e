//! One segment file: creating it, recovering it on open, and reading frames from it.

use std::io;
use std::path::{Path, PathBuf};

use infra_common::sync::Arc;

use super::record::{self, Frame, Framing, SEGMENT_HEADER, SegmentHeader};
use super::storage::{Storage, StorageFile};
use super::{RECORD_LIMIT, segment_name};
use crate::Error;

/// One index entry per this many records: a read scans at most this many frames to its start.
pub(crate) const INDEX_STRIDE: u64 = 64;

/// Bytes read from a file at a time.
const CHUNK: usize = 64 << 10;

/// Zeros written to a file at a time when preallocating: one page. The page cache keeps what
/// one write brings in as one unit (a folio of up to the write's size, on kernels with large
/// folios, such as Linux 6.16 and later on ext4), and every later small write into a unit
/// walks all of its blocks: with 1 MiB of zeros written at once, 100-byte appends measured
/// markedly slower than with no zeros at all, and with zeros written a page at a time much
/// less so.
const ZEROS: [u8; 4096] = [0; 4096];

/// A write to a segment that failed.
#[derive(Debug)]
pub(crate) struct WriteFailure {
    pub(crate) error: Error,
    /// Whether the file was cut back to where the write began.
    pub(crate) cut_back: bool,
}

#[derive(Debug)]
pub(crate) struct Segment {
    /// The offset of its first record.
    pub(crate) base: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<Box<dyn StorageFile>>,
    /// Bytes of header and records: where the next record goes.
    pub(crate) len: u64,
    /// The file's length: `len` plus the zeros written ahead of it (see
    /// [`LogOptions::preallocate`](super::LogOptions::preallocate)).
    pub(crate) allocated: u64,
    pub(crate) created_millis: u64,
    /// How its records are framed: the format of its header, and its salt.
    pub(crate) framing: Framing,
    /// The byte position of record `i * INDEX_STRIDE` of this segment, for each `i`.
    pub(crate) index: Vec<u64>,
    pub(crate) records: u64,
}

impl Segment {
    /// Creates the segment file for `base`, with its header synced and its name made durable.
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        base: u64,
        created_millis: u64,
    ) -> Result<Self, Error> {
        let path = dir.join(segment_name(base));
        let file = storage
            .open(&path, true)
            .map_err(|e| Error::io("create segment", &path, e))?;
        let framing = write_header(&*file, &path, base, created_millis)?;
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
        Ok(Self::empty(
            base,
            path,
            Arc::new(file),
            created_millis,
            framing,
        ))
    }

    /// Empties the segment's file, which holds no record, and writes a new header to it (in
    /// the current format, with a new salt), synced.
    pub(crate) fn start_over(
        base: u64,
        path: PathBuf,
        file: Arc<Box<dyn StorageFile>>,
        created_millis: u64,
    ) -> Result<Self, Error> {
        file.truncate(0)
            .map_err(|e| Error::io("truncate", &path, e))?;
        // The empty file is made durable before the header goes in: a header torn over the
        // old bytes (an old-format header with zeros after it) would be neither a header nor
        // one torn while written, and the next open would refuse the log.
        file.sync().map_err(|e| Error::io("fsync", &path, e))?;
        let framing = write_header(&**file, &path, base, created_millis)?;
        Ok(Self::empty(base, path, file, created_millis, framing))
    }

    fn empty(
        base: u64,
        path: PathBuf,
        file: Arc<Box<dyn StorageFile>>,
        created_millis: u64,
        framing: Framing,
    ) -> Self {
        Self {
            base,
            path,
            file,
            len: SEGMENT_HEADER as u64,
            allocated: SEGMENT_HEADER as u64,
            created_millis,
            framing,
            index: Vec::new(),
            records: 0,
        }
    }

    /// Writes `buf`, whose records start at `positions`, after the last record, then zeros up
    /// to `zeros_until` if the write went past the zeros already there. On a failure the file
    /// is cut back to its last record (zeros after it included).
    pub(crate) fn write_records(
        &mut self,
        buf: &[u8],
        positions: &[u64],
        zeros_until: u64,
    ) -> Result<(), WriteFailure> {
        let end = self.len + buf.len() as u64;
        // Only a write that went past the zeros writes more: one in every `preallocate` bytes.
        let preallocate = end > self.allocated && zeros_until > end;
        let written = self
            .file
            .write_at(self.len, buf)
            .map_err(|e| Error::io("append", &self.path, e))
            .and_then(|()| {
                if preallocate {
                    write_zeros(&**self.file, end, zeros_until - end)
                        .map_err(|e| Error::io("preallocate", &self.path, e))?;
                }
                Ok(())
            });
        if let Err(error) = written {
            self.allocated = self.len;
            let cut_back = self.file.truncate(self.len).is_ok();
            return Err(WriteFailure { error, cut_back });
        }
        self.allocated = if preallocate {
            zeros_until
        } else {
            self.allocated.max(end)
        };
        for &position in positions {
            if self.records.is_multiple_of(INDEX_STRIDE) {
                self.index.push(position);
            }
            self.records += 1;
        }
        self.len = end;
        Ok(())
    }

    /// Opens and checks an existing segment. The newest (`is_last`) may have a torn tail, which
    /// is cut off; anything else that fails its checks is [`Error::Corrupt`].
    pub(crate) fn recover(
        storage: &dyn Storage,
        path: PathBuf,
        base: u64,
        is_last: bool,
        now_millis: u64,
    ) -> Result<Self, Error> {
        let file = storage
            .open(&path, false)
            .map_err(|e| Error::io("open segment", &path, e))?;
        let file_len = file.len().map_err(|e| Error::io("stat", &path, e))?;
        let corrupt = |position, reason| Error::Corrupt {
            segment: path.clone(),
            position,
            reason,
        };
        let mut reader = Reader::new(&*file, file_len);
        let header_bytes = reader
            .window(0, SEGMENT_HEADER)
            .map_err(|e| Error::io("read", &path, e))?;
        let header = match SegmentHeader::decode(header_bytes) {
            Ok(header) if header.base == base => header,
            Ok(_) => return Err(corrupt(0, "the header names another base offset")),
            // The newest segment's header is written and synced before any record: a torn one
            // (nothing past it) means the segment never held an acknowledged record.
            Err(_) if is_last && SegmentHeader::torn(header_bytes, file_len) => {
                return Self::start_over(base, path, Arc::new(file), now_millis);
            }
            Err(reason) => return Err(corrupt(0, reason)),
        };
        let framing = header.framing;

        let mut index = Vec::new();
        let mut records = 0u64;
        let mut position = framing.segment_header();
        let mut allocated = file_len;
        while position < file_len {
            let frame = reader
                .frame_at(position, framing, RECORD_LIMIT)
                .map_err(|e| Error::io("read", &path, e))?;
            let reason = match frame {
                Frame::Record { len, .. } => {
                    if records.is_multiple_of(INDEX_STRIDE) {
                        index.push(position);
                    }
                    records += 1;
                    position += len as u64;
                    continue;
                }
                Frame::Invalid(reason) => reason,
                Frame::Incomplete { .. } => "record cut short",
            };
            let data_end = reader
                .data_end(position)
                .map_err(|e| Error::io("read", &path, e))?;
            if data_end == position {
                // Only zeros from here on: preallocated space no record reached (no record
                // starts with a frame header of zeros, see `record`). An older segment ending
                // this way is checked by the next segment's base offset.
                break;
            }
            if !is_last {
                return Err(corrupt(position, reason));
            }
            if reader
                .valid_frame_between(position, data_end, framing)
                .map_err(|e| Error::io("read", &path, e))?
            {
                return Err(corrupt(
                    position,
                    "a bad record with valid records after it (not a torn tail)",
                ));
            }
            // A torn tail: appends that never returned under fsync=Always.
            file.truncate(position)
                .map_err(|e| Error::io("truncate", &path, e))?;
            file.sync().map_err(|e| Error::io("fsync", &path, e))?;
            allocated = position;
            break;
        }
        Ok(Self {
            base,
            path,
            file: Arc::new(file),
            len: position,
            allocated,
            created_millis: header.created_millis,
            framing,
            index,
            records,
        })
    }
}

/// Writes and syncs a new segment's header; returns how the segment's records are framed.
fn write_header(
    file: &dyn StorageFile,
    path: &Path,
    base: u64,
    created_millis: u64,
) -> Result<Framing, Error> {
    let (header, framing) = record::new_segment_header(base, created_millis);
    file.write_at(0, &header)
        .map_err(|e| Error::io("write segment header", path, e))?;
    file.sync().map_err(|e| Error::io("fsync", path, e))?;
    Ok(framing)
}

/// Writes `len` zeros at `pos`, a page at a time (see [`ZEROS`]), so that each ends on a
/// page boundary.
fn write_zeros(file: &dyn StorageFile, pos: u64, len: u64) -> io::Result<()> {
    let page = ZEROS.len() as u64;
    let end = pos + len;
    let mut at = pos;
    while at < end {
        let next = ((at / page + 1) * page).min(end);
        let n = usize::try_from(next - at).unwrap_or(ZEROS.len());
        file.write_at(at, &ZEROS[..n])?;
        at = next;
    }
    Ok(())
}

/// Buffered reads of frames from one file, never past `end`.
pub(crate) struct Reader<'a> {
    file: &'a dyn StorageFile,
    end: u64,
    buf: Vec<u8>,
    start: u64,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(file: &'a dyn StorageFile, end: u64) -> Self {
        Self {
            file,
            end,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Up to `want` bytes from `pos` (fewer at `end`).
    pub(crate) fn window(&mut self, pos: u64, want: usize) -> io::Result<&[u8]> {
        let available = usize::try_from(self.end.saturating_sub(pos)).unwrap_or(usize::MAX);
        let want = want.min(available);
        let buf_end = self.start + self.buf.len() as u64;
        if pos < self.start || pos + want as u64 > buf_end {
            let fill = want.max(CHUNK).min(available);
            self.buf.resize(fill, 0);
            let mut filled = 0;
            while filled < fill {
                let n = self
                    .file
                    .read_at(pos + filled as u64, &mut self.buf[filled..])?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            self.buf.truncate(filled);
            self.start = pos;
        }
        let from = usize::try_from(pos - self.start).unwrap_or(usize::MAX);
        let to = (from + want).min(self.buf.len());
        Ok(self.buf.get(from..to).unwrap_or(&[]))
    }

    /// Decodes the frame at `pos`: its header first, then, only when the header holds, the
    /// whole frame.
    pub(crate) fn frame_at(
        &mut self,
        pos: u64,
        framing: Framing,
        max_len: u32,
    ) -> io::Result<Frame<'_>> {
        let needed = match framing.decode(self.window(pos, framing.frame_header())?, max_len) {
            Frame::Incomplete {
                needed: Some(needed),
            } => needed,
            Frame::Incomplete { needed: None } => return Ok(Frame::Incomplete { needed: None }),
            Frame::Invalid(reason) => return Ok(Frame::Invalid(reason)),
            Frame::Record { len, .. } => len,
        };
        Ok(framing.decode(self.window(pos, needed)?, max_len))
    }

    /// Where the bytes from `pos` on stop being zeros: just past the last non-zero byte, or
    /// `pos` when every byte from `pos` to the end is zero.
    pub(crate) fn data_end(&mut self, pos: u64) -> io::Result<u64> {
        let mut end = self.end;
        while end > pos {
            let from = end.saturating_sub(CHUNK as u64).max(pos);
            let want = usize::try_from(end - from).unwrap_or(CHUNK);
            let window = self.window(from, want)?;
            if let Some(last) = window.iter().rposition(|&b| b != 0) {
                return Ok(from + last as u64 + 1);
            }
            // A short read (the file shrank under us) leaves bytes that cannot hold a record.
            end = from;
        }
        Ok(pos)
    }

    /// Whether a whole valid record starts after `pos` and before `data_end`: a bad record with
    /// one after it is corruption, not a torn tail. (A record starting at or past `data_end`
    /// would begin with a frame header of zeros, which no record does.) In an `INFRAMQ2`
    /// segment each position costs a constant amount of work unless its frame header holds:
    /// linear in the bytes scanned. An `INFRAMQ1` frame has no header checksum, so there every
    /// position whose length field fits is checksummed, up to the square of the bytes scanned.
    pub(crate) fn valid_frame_between(
        &mut self,
        pos: u64,
        data_end: u64,
        framing: Framing,
    ) -> io::Result<bool> {
        let header = framing.frame_header() as u64;
        let mut at = pos + 1;
        while at < data_end && at + header <= self.end {
            if matches!(
                self.frame_at(at, framing, RECORD_LIMIT)?,
                Frame::Record { .. }
            ) {
                return Ok(true);
            }
            at += 1;
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use infra_common::ManualClock;

    use super::super::crc;
    use super::super::record::tests::take_checksummed;
    use super::super::{FsyncPolicy, Log, LogOptions, RECORD_LIMIT, SimulatedStorage, Storage};

    /// Bytes that look random (xorshift), as a compressed or encrypted message's do.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    /// Recovery's work is counted, not timed: a segment whose newest record, of 6 MiB, was torn
    /// 4 MiB into its payload is recovered with no more payload bytes checksummed than the
    /// segment holds, although a record could start at any of the torn bytes.
    #[test]
    fn recovery_of_a_torn_record_of_several_mebibytes_checksums_no_more_than_the_segment() {
        let disk = SimulatedStorage::new();
        let dir = Path::new("/log");
        let options = LogOptions {
            fsync: FsyncPolicy::Never,
            preallocate: 0,
            max_record_bytes: RECORD_LIMIT,
            segment_bytes: 1 << 30,
            ..LogOptions::default()
        };
        let log = Log::open_with(dir, options.clone(), ManualClock::new(), disk.clone()).unwrap();
        for i in 0..10 {
            log.append(&noise(1000, i)).unwrap();
        }
        log.append(&noise(6 << 20, 99)).unwrap();
        drop(log);
        let file = disk
            .open(&dir.join("00000000000000000000.seg"), false)
            .unwrap();
        let torn = file.len().unwrap() - (2 << 20);
        file.truncate(torn).unwrap();
        drop(file);

        take_checksummed();
        let log = Log::open_with(dir, options, ManualClock::new(), disk).unwrap();
        let checksummed = take_checksummed();
        assert_eq!(
            log.next_offset(),
            10,
            "the torn record is cut, the others kept"
        );
        assert!(
            checksummed <= torn,
            "recovery checksummed {checksummed} bytes of a {torn}-byte segment"
        );
    }

    /// An `INFRAMQ1` segment for base 0 holding `payloads`, framed here from that format.
    fn old_segment(payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = b"INFRAMQ1".to_vec();
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        let header_crc = crc::append(0, &bytes);
        bytes.extend_from_slice(&header_crc.to_le_bytes());
        for payload in payloads {
            let len = u32::try_from(payload.len()).unwrap().to_le_bytes();
            bytes.extend_from_slice(&len);
            let record_crc = crc::append(crc::append(0, &len), payload);
            bytes.extend_from_slice(&record_crc.to_le_bytes());
            bytes.extend_from_slice(payload);
        }
        bytes
    }

    /// The earlier format's search for a record after a bad one checksums every position whose
    /// length field fits, but only the open that cuts the torn tail runs it: that open seals the
    /// segment, and the next checksums no more than the segment holds.
    #[test]
    fn an_old_format_torn_tail_is_searched_by_one_open_only() {
        let disk = SimulatedStorage::new();
        let dir = Path::new("/log");
        disk.create_dir_all(dir).unwrap();
        let records: Vec<Vec<u8>> = (0..10).map(|i| noise(1000, i)).collect();
        let whole = old_segment(&records);
        // A torn record whose bytes hold many small length fields that fit.
        let mut torn = whole.clone();
        torn.extend_from_slice(&60_000u32.to_le_bytes());
        torn.extend_from_slice(&[0x55; 4]);
        torn.extend((0..50_000u32).map(|i| if i % 4 == 0 { 200 } else { 0 }));
        let file = disk
            .open(&dir.join("00000000000000000000.seg"), true)
            .unwrap();
        file.write_at(0, &torn).unwrap();
        file.sync().unwrap();
        drop(file);
        disk.sync_dir(dir).unwrap();
        let options = LogOptions {
            preallocate: 0,
            ..LogOptions::default()
        };

        take_checksummed();
        let log = Log::open_with(dir, options.clone(), ManualClock::new(), disk.clone()).unwrap();
        let first = take_checksummed();
        assert_eq!(log.next_offset(), 10);
        assert!(
            first > torn.len() as u64,
            "the search after the torn record checksummed {first} bytes"
        );
        drop(log);
        let log = Log::open_with(dir, options, ManualClock::new(), disk.clone()).unwrap();
        let second = take_checksummed();
        assert_eq!(log.next_offset(), 10);
        assert!(
            second <= whole.len() as u64,
            "the sealed segment cost {second} checksummed bytes"
        );
    }
}
