//! The on-disk framing of one record and of a segment header.
//!
//! A record is `[len: u32 LE][crc: u32 LE][payload: len bytes]`, where `crc` is CRC-32C over
//! the four length bytes followed by the payload. Covering the length means a torn or flipped
//! length is caught by the checksum rather than trusted to size the next read.
//!
//! A segment starts with a 32-byte header: the magic `INFRAMQ1`, the segment's base offset
//! (u64 LE), its creation time in Unix milliseconds (u64 LE), four reserved zero bytes and a
//! CRC-32C of the first 28 bytes.

use super::crc;

/// Bytes before a record's payload: length and checksum.
pub(crate) const FRAME_HEADER: usize = 8;
/// Bytes of a segment header.
pub(crate) const SEGMENT_HEADER: usize = 32;
const MAGIC: &[u8; 8] = b"INFRAMQ1";

/// What decoding the bytes at a position found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A whole record whose checksum matches; `len` is its size on disk (header included).
    Record {
        /// The payload.
        payload: &'a [u8],
        /// Bytes the frame occupies.
        len: usize,
    },
    /// The bytes end before the frame does. At the end of a file this is a torn write.
    Incomplete {
        /// Bytes the whole frame needs, when the length field could be read and is in range.
        needed: Option<usize>,
    },
    /// The frame cannot be a record: its length is out of range or its checksum differs.
    Invalid(&'static str),
}

/// The checksum of a record: CRC-32C over the length bytes and then the payload.
fn checksum(len_bytes: [u8; 4], payload: &[u8]) -> u32 {
    crc::append(crc::append(0, &len_bytes), payload)
}

/// Appends the framed `payload` to `out`. The caller has checked the length fits in `u32`.
pub(crate) fn encode(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes();
    let start = out.len();
    out.reserve(FRAME_HEADER + payload.len());
    // The checksummed bytes, length then payload, are laid down side by side where the
    // checksum and payload go, so one CRC call covers them (a call costs more than the
    // bytes of a small record); then the length moves in front and the checksum takes its
    // place.
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&len);
    out.extend_from_slice(payload);
    let crc = crc::append(0, &out[start + 4..]);
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The size on disk of a record with a payload of `len` bytes.
pub(crate) fn framed_len(len: usize) -> u64 {
    (FRAME_HEADER as u64).saturating_add(len as u64)
}

/// Decodes the frame at the start of `bytes`. Payloads longer than `max_len` are invalid, so a
/// corrupt length never makes the caller read or allocate more than `max_len` bytes.
pub(crate) fn decode(bytes: &[u8], max_len: u32) -> Frame<'_> {
    let Some((len_bytes, rest)) = bytes.split_first_chunk::<4>() else {
        return Frame::Incomplete { needed: None };
    };
    let len = u32::from_le_bytes(*len_bytes);
    if len > max_len {
        return Frame::Invalid("length above the record limit");
    }
    let payload_len = len as usize;
    let needed = FRAME_HEADER + payload_len;
    let Some((crc_bytes, rest)) = rest.split_first_chunk::<4>() else {
        return Frame::Incomplete {
            needed: Some(needed),
        };
    };
    let Some(payload) = rest.get(..payload_len) else {
        return Frame::Incomplete {
            needed: Some(needed),
        };
    };
    if checksum(*len_bytes, payload) != u32::from_le_bytes(*crc_bytes) {
        return Frame::Invalid("checksum mismatch");
    }
    Frame::Record {
        payload,
        len: needed,
    }
}

/// A segment header's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) base: u64,
    pub(crate) created_millis: u64,
}

impl SegmentHeader {
    pub(crate) fn encode(self) -> [u8; SEGMENT_HEADER] {
        let mut out = [0u8; SEGMENT_HEADER];
        out[..8].copy_from_slice(MAGIC);
        out[8..16].copy_from_slice(&self.base.to_le_bytes());
        out[16..24].copy_from_slice(&self.created_millis.to_le_bytes());
        let crc = crc::append(0, &out[..28]);
        out[28..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8; SEGMENT_HEADER]) -> Result<Self, &'static str> {
        let (body, crc) = bytes.split_at(28);
        if crc::append(0, body).to_le_bytes() != crc {
            return Err("segment header checksum mismatch");
        }
        if &body[..8] != MAGIC {
            return Err("not a segment file (bad magic)");
        }
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&body[at..at + 8]);
            u64::from_le_bytes(w)
        };
        Ok(Self {
            base: word(8),
            created_millis: word(16),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::crc::tests::bitwise;
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut buf = Vec::new();
        encode(b"hello", &mut buf);
        assert_eq!(buf.len() as u64, framed_len(5));
        assert_eq!(
            decode(&buf, 100),
            Frame::Record {
                payload: b"hello",
                len: 13
            }
        );
        for cut in 0..buf.len() {
            assert!(matches!(decode(&buf[..cut], 100), Frame::Incomplete { .. }));
        }
        assert_eq!(
            decode(&buf, 4),
            Frame::Invalid("length above the record limit")
        );
    }

    #[test]
    fn the_frame_checksum_is_crc32c_of_length_then_payload() {
        for len in [0usize, 1, 3, 7, 8, 100, 1000, 4099] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut buf = vec![0xAA; 5]; // frames start anywhere in a buffer
            encode(&payload, &mut buf);
            let frame = &buf[5..];
            let len_bytes = u32::try_from(len).unwrap().to_le_bytes();
            let covered: Vec<u8> = len_bytes.iter().chain(&payload).copied().collect();
            assert_eq!(frame[..4], len_bytes);
            assert_eq!(frame[4..8], bitwise(&covered).to_le_bytes(), "len {len}");
            assert_eq!(frame[8..], payload[..]);
            assert_eq!(
                decode(frame, 1 << 20),
                Frame::Record {
                    payload: &payload,
                    len: len + 8
                }
            );
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let mut buf = Vec::new();
        encode(b"payload bytes", &mut buf);
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode(&bad, 1 << 20), Frame::Record { .. }),
                "bit {bit} flipped went unnoticed"
            );
        }
    }

    #[test]
    fn header_round_trip_and_flips() {
        let header = SegmentHeader {
            base: 42,
            created_millis: 1_700_000_000_000,
        };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        let mut bad = bytes;
        bad[9] ^= 4;
        assert!(SegmentHeader::decode(&bad).is_err());
    }
}
