//! One segment file: creating it, recovering it on open, and reading frames from it.

use std::io;
use std::path::{Path, PathBuf};

use infra_common::sync::Arc;

use super::record::{self, FRAME_HEADER, Frame, SEGMENT_HEADER, SegmentHeader};
use super::storage::{Storage, StorageFile};
use super::{RECORD_LIMIT, segment_name};
use crate::Error;

/// One index entry per this many records: a read scans at most this many frames to its start.
pub(crate) const INDEX_STRIDE: u64 = 64;

/// Bytes read from a file at a time.
const CHUNK: usize = 64 << 10;

#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<Box<dyn StorageFile>>,
    /// Bytes written (header included).
    pub(crate) len: u64,
    pub(crate) created_millis: u64,
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
        write_header(&*file, &path, base, created_millis)?;
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
        Ok(Self {
            path,
            file: Arc::new(file),
            len: SEGMENT_HEADER as u64,
            created_millis,
            index: Vec::new(),
            records: 0,
        })
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
        let header = match <&[u8; SEGMENT_HEADER]>::try_from(header_bytes) {
            Ok(bytes) => SegmentHeader::decode(bytes),
            Err(_) => Err("segment shorter than its header"),
        };
        let header = match header {
            Ok(header) if header.base == base => header,
            Ok(_) => return Err(corrupt(0, "the header names another base offset")),
            // The newest segment's header is written and synced before any record: a torn one
            // (nothing past it) means the segment never held an acknowledged record.
            Err(_) if is_last && file_len <= SEGMENT_HEADER as u64 => {
                file.truncate(0)
                    .map_err(|e| Error::io("truncate", &path, e))?;
                write_header(&*file, &path, base, now_millis)?;
                return Ok(Self {
                    path,
                    file: Arc::new(file),
                    len: SEGMENT_HEADER as u64,
                    created_millis: now_millis,
                    index: Vec::new(),
                    records: 0,
                });
            }
            Err(reason) => return Err(corrupt(0, reason)),
        };

        let mut index = Vec::new();
        let mut records = 0u64;
        let mut position = SEGMENT_HEADER as u64;
        while position < file_len {
            let frame = reader
                .frame_at(position, RECORD_LIMIT)
                .map_err(|e| Error::io("read", &path, e))?;
            match frame {
                Frame::Record { len, .. } => {
                    if records.is_multiple_of(INDEX_STRIDE) {
                        index.push(position);
                    }
                    records += 1;
                    position += len as u64;
                }
                Frame::Incomplete { .. } | Frame::Invalid(_) => {
                    let reason = match frame {
                        Frame::Invalid(reason) => reason,
                        _ => "record cut short",
                    };
                    if !is_last {
                        return Err(corrupt(position, reason));
                    }
                    if reader
                        .valid_frame_after(position)
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
                    break;
                }
            }
        }
        Ok(Self {
            path,
            file: Arc::new(file),
            len: position,
            created_millis: header.created_millis,
            index,
            records,
        })
    }
}

fn write_header(
    file: &dyn StorageFile,
    path: &Path,
    base: u64,
    created_millis: u64,
) -> Result<(), Error> {
    let header = SegmentHeader {
        base,
        created_millis,
    };
    file.append(&header.encode())
        .map_err(|e| Error::io("write segment header", path, e))?;
    file.sync().map_err(|e| Error::io("fsync", path, e))
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

    /// Decodes the frame at `pos`.
    pub(crate) fn frame_at(&mut self, pos: u64, max_len: u32) -> io::Result<Frame<'_>> {
        let needed = match record::decode(self.window(pos, FRAME_HEADER)?, max_len) {
            Frame::Incomplete {
                needed: Some(needed),
            } => needed,
            Frame::Incomplete { needed: None } => return Ok(Frame::Incomplete { needed: None }),
            Frame::Invalid(reason) => return Ok(Frame::Invalid(reason)),
            Frame::Record { len, .. } => len,
        };
        Ok(record::decode(self.window(pos, needed)?, max_len))
    }

    /// Whether a whole valid record starts anywhere after `pos`: a bad record with one after it
    /// is corruption, not a torn tail.
    pub(crate) fn valid_frame_after(&mut self, pos: u64) -> io::Result<bool> {
        let mut at = pos + 1;
        while at + FRAME_HEADER as u64 <= self.end {
            if matches!(self.frame_at(at, RECORD_LIMIT)?, Frame::Record { .. }) {
                return Ok(true);
            }
            at += 1;
        }
        Ok(false)
    }
}
