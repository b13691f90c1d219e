//! The on-disk framing of one record and of a segment header, in both formats a log reads.
//!
//! # `INFRAMQ2`, the format every new segment is written in
//!
//! A segment starts with a 40-byte header: the magic `INFRAMQ2`, the segment's base offset
//! (u64 LE), its creation time in Unix milliseconds (u64 LE), the segment's salt (u64 LE, drawn
//! at random when the segment is created), four reserved zero bytes and a CRC-32C of the first
//! 36 bytes.
//!
//! A record is `[len: u32 LE][head: u32 LE][body: u32 LE][payload: len bytes]`, where `head` is
//! the CRC-32C of the salt's eight bytes followed by the four length bytes, and `body` the
//! CRC-32C of the salt, the length bytes and the payload (the same checksum, carried on over the
//! payload). So:
//!
//! - a record is checked in two steps: its 12-byte header alone (`head`, a constant amount of
//!   work whatever the length says), and the payload only once the header holds. Recovery, which
//!   looks for a record at every byte after a damaged one, rejects nearly every position by its
//!   header, and its work grows with the bytes it scans, not with their square;
//! - the salt differs from segment to segment, so the bytes of a record framed for another
//!   segment or another log (say, a message that carries one) fail both checksums here (but for
//!   a 2^-32 chance each), and a torn record holding such bytes is told from a record appended
//!   after it;
//! - twelve zero bytes never decode as a record, whatever the salt: that is how recovery tells
//!   the zeros written ahead of the records (`LogOptions::preallocate`) from a record. (A salt
//!   under which an empty record's header would be all zeros is never drawn.)
//!
//! # `INFRAMQ1`, the earlier format, still read
//!
//! A 32-byte header: the magic `INFRAMQ1`, base offset, creation time, four reserved zero bytes
//! and a CRC-32C of the first 28 bytes. A record is `[len: u32 LE][crc: u32 LE][payload]`, where
//! `crc` is the CRC-32C of the four length bytes followed by the payload; no record starts with
//! eight zero bytes, since the CRC of a zero length is not zero. Such segments are read and
//! recovered, never appended to: a log whose newest segment is one starts a new segment.

use std::hash::BuildHasher;

use super::crc;

/// Bytes before a record's payload (`INFRAMQ2`): length and the two checksums.
pub(crate) const FRAME_HEADER: usize = 12;
/// Bytes of a segment header (`INFRAMQ2`).
pub(crate) const SEGMENT_HEADER: usize = 40;
const MAGIC: &[u8; 8] = b"INFRAMQ2";
/// Bytes before a record's payload in an `INFRAMQ1` segment: length and checksum.
const V1_FRAME_HEADER: usize = 8;
/// Bytes of an `INFRAMQ1` segment header.
pub(crate) const V1_SEGMENT_HEADER: usize = 32;
const V1_MAGIC: &[u8; 8] = b"INFRAMQ1";

/// How the records of one segment are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `INFRAMQ1`: `[len][crc][payload]`, read only.
    V1,
    /// `INFRAMQ2`, keyed by the segment's salt.
    Salted {
        /// The CRC-32C of the salt's bytes: where every checksum of the segment starts.
        seed: u32,
    },
}

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
        /// Bytes the whole frame needs, when the length field could be read and is in range
        /// (and, in an `INFRAMQ2` segment, the frame's header is valid).
        needed: Option<usize>,
    },
    /// The frame cannot be a record: its length is out of range or a checksum differs.
    Invalid(&'static str),
}

impl Framing {
    /// Bytes before a record's payload.
    pub(crate) fn frame_header(self) -> usize {
        match self {
            Self::V1 => V1_FRAME_HEADER,
            Self::Salted { .. } => FRAME_HEADER,
        }
    }

    /// Bytes of the segment header, where the first record starts.
    pub(crate) fn segment_header(self) -> u64 {
        match self {
            Self::V1 => V1_SEGMENT_HEADER as u64,
            Self::Salted { .. } => SEGMENT_HEADER as u64,
        }
    }

    /// Decodes the frame at the start of `bytes`. Payloads longer than `max_len` are invalid,
    /// so a corrupt length never makes the caller read or allocate more than `max_len` bytes.
    pub(crate) fn decode(self, bytes: &[u8], max_len: u32) -> Frame<'_> {
        match self {
            Self::V1 => decode_v1(bytes, max_len),
            Self::Salted { seed } => decode(seed, bytes, max_len),
        }
    }
}

/// Appends `payload` framed for the segment whose framing is `Framing::Salted { seed }` to
/// `out`. The caller has checked the length fits in `u32`.
pub(crate) fn encode(seed: u32, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes();
    let (head, body) = crc::append_word_then(seed, len, payload);
    let mut header = [0u8; FRAME_HEADER];
    header[..4].copy_from_slice(&len);
    header[4..8].copy_from_slice(&head.to_le_bytes());
    header[8..].copy_from_slice(&body.to_le_bytes());
    out.reserve(FRAME_HEADER + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// The size on disk of a record with a payload of `len` bytes.
pub(crate) fn framed_len(len: usize) -> u64 {
    (FRAME_HEADER as u64).saturating_add(len as u64)
}

/// Decodes an `INFRAMQ2` frame keyed by `seed`: the header's checksum first, so a position
/// that holds no record costs a constant amount of work; the payload's only after it.
fn decode(seed: u32, bytes: &[u8], max_len: u32) -> Frame<'_> {
    let Some((header, rest)) = bytes.split_first_chunk::<FRAME_HEADER>() else {
        return Frame::Incomplete { needed: None };
    };
    if *header == [0; FRAME_HEADER] {
        return Frame::Invalid("zeros, not a record");
    }
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let len_bytes = [header[0], header[1], header[2], header[3]];
    let head = crc::append(seed, &len_bytes);
    if head != word(4) {
        return Frame::Invalid("frame header checksum mismatch");
    }
    let len = word(0);
    if len > max_len {
        return Frame::Invalid("length above the record limit");
    }
    let needed = FRAME_HEADER + len as usize;
    let Some(payload) = rest.get(..len as usize) else {
        return Frame::Incomplete {
            needed: Some(needed),
        };
    };
    #[cfg(test)]
    tests::count_checksummed(payload.len());
    if crc::append(head, payload) != word(8) {
        return Frame::Invalid("checksum mismatch");
    }
    Frame::Record {
        payload,
        len: needed,
    }
}

/// Decodes an `INFRAMQ1` frame.
fn decode_v1(bytes: &[u8], max_len: u32) -> Frame<'_> {
    let Some((len_bytes, rest)) = bytes.split_first_chunk::<4>() else {
        return Frame::Incomplete { needed: None };
    };
    let len = u32::from_le_bytes(*len_bytes);
    if len > max_len {
        return Frame::Invalid("length above the record limit");
    }
    let payload_len = len as usize;
    let needed = V1_FRAME_HEADER + payload_len;
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
    #[cfg(test)]
    tests::count_checksummed(payload.len());
    if crc::append(crc::append(0, len_bytes), payload) != u32::from_le_bytes(*crc_bytes) {
        return Frame::Invalid("checksum mismatch");
    }
    Frame::Record {
        payload,
        len: needed,
    }
}

/// The CRC-32C of a salt's bytes: where every checksum of its segment starts.
pub(crate) fn seed(salt: u64) -> u32 {
    crc::append(0, &salt.to_le_bytes())
}

/// The header of a new segment and the framing of its records, with a salt drawn from the
/// operating system's randomness.
pub(crate) fn new_segment_header(
    base: u64,
    created_millis: u64,
) -> ([u8; SEGMENT_HEADER], Framing) {
    let random = infra_common::RandomState::new();
    let mut draw = 0u64;
    let salt = loop {
        let salt = BuildHasher::hash_one(&random, draw);
        // Under this salt an empty record's header would be twelve zeros, which decode as the
        // zeros ahead of the records: draw again (a 2^-32 chance).
        if crc::append(seed(salt), &[0; 4]) != 0 {
            break salt;
        }
        draw += 1;
    };
    let mut out = [0u8; SEGMENT_HEADER];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&base.to_le_bytes());
    out[16..24].copy_from_slice(&created_millis.to_le_bytes());
    out[24..32].copy_from_slice(&salt.to_le_bytes());
    let crc = crc::append(0, &out[..36]);
    out[36..].copy_from_slice(&crc.to_le_bytes());
    (out, Framing::Salted { seed: seed(salt) })
}

/// A segment header's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) base: u64,
    pub(crate) created_millis: u64,
    /// How the segment's records are framed: by its format, and its salt.
    pub(crate) framing: Framing,
}

impl SegmentHeader {
    /// Decodes the header at the start of `bytes`, in either format.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let len = match bytes.get(..8) {
            Some(magic) if magic == MAGIC => SEGMENT_HEADER,
            Some(magic) if magic == V1_MAGIC => V1_SEGMENT_HEADER,
            Some(_) => return Err("not a segment file (bad magic)"),
            None => return Err("segment shorter than its header"),
        };
        let Some(header) = bytes.get(..len) else {
            return Err("segment shorter than its header");
        };
        let (body, crc) = header.split_at(len - 4);
        if crc::append(0, body).to_le_bytes() != crc {
            return Err("segment header checksum mismatch");
        }
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&body[at..at + 8]);
            u64::from_le_bytes(w)
        };
        Ok(Self {
            base: word(8),
            created_millis: word(16),
            framing: if len == SEGMENT_HEADER {
                Framing::Salted {
                    seed: seed(word(24)),
                }
            } else {
                Framing::V1
            },
        })
    }

    /// Whether a file of `file_len` bytes that starts with `bytes` (up to [`SEGMENT_HEADER`]
    /// of them) can be a header torn while it was written: no longer than the smaller header,
    /// or than an `INFRAMQ2` header with its magic there. Either way no record follows it.
    pub(crate) fn torn(bytes: &[u8], file_len: u64) -> bool {
        file_len <= V1_SEGMENT_HEADER as u64
            || (file_len <= SEGMENT_HEADER as u64 && bytes.starts_with(MAGIC))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;

    use infra_common::sync::thread::thread_local;

    use super::super::crc::tests::bitwise;
    use super::*;

    thread_local! {
        static CHECKSUMMED: Cell<u64> = const { Cell::new(0) };
    }

    /// Counts payload bytes the decoder checksums on this thread, for tests that bound the
    /// work of recovery rather than time it.
    pub(crate) fn count_checksummed(bytes: usize) {
        CHECKSUMMED.with(|count| count.set(count.get() + bytes as u64));
    }

    /// Payload bytes the decoder checksummed on this thread since the last call.
    pub(crate) fn take_checksummed() -> u64 {
        CHECKSUMMED.with(|count| count.replace(0))
    }

    /// The framing of a segment salted with `salt`, and the frame of `payload` in it.
    fn framed(salt: u64, payload: &[u8]) -> (Framing, Vec<u8>) {
        let seed = seed(salt);
        let mut buf = Vec::new();
        encode(seed, payload, &mut buf);
        (Framing::Salted { seed }, buf)
    }

    #[test]
    fn round_trip_and_truncation() {
        let (framing, buf) = framed(7, b"hello");
        assert_eq!(buf.len() as u64, framed_len(5));
        assert_eq!(
            framing.decode(&buf, 100),
            Frame::Record {
                payload: b"hello",
                len: 17
            }
        );
        for cut in 0..FRAME_HEADER {
            assert_eq!(
                framing.decode(&buf[..cut], 100),
                Frame::Incomplete { needed: None }
            );
        }
        for cut in FRAME_HEADER..buf.len() {
            assert_eq!(
                framing.decode(&buf[..cut], 100),
                Frame::Incomplete { needed: Some(17) }
            );
        }
        assert_eq!(
            framing.decode(&buf, 4),
            Frame::Invalid("length above the record limit")
        );
    }

    #[test]
    fn the_checksums_are_crc32c_of_salt_and_length_then_of_salt_length_and_payload() {
        let salt = 0x0123_4567_89AB_CDEFu64;
        for len in [0usize, 1, 3, 7, 8, 100, 1000, 4099] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let (framing, frame) = framed(salt, &payload);
            let len_bytes = u32::try_from(len).unwrap().to_le_bytes();
            let head: Vec<u8> = salt
                .to_le_bytes()
                .iter()
                .chain(&len_bytes)
                .copied()
                .collect();
            let body: Vec<u8> = head.iter().chain(&payload).copied().collect();
            assert_eq!(frame[..4], len_bytes);
            assert_eq!(frame[4..8], bitwise(&head).to_le_bytes(), "len {len}");
            assert_eq!(frame[8..12], bitwise(&body).to_le_bytes(), "len {len}");
            assert_eq!(frame[12..], payload[..]);
            assert_eq!(
                framing.decode(&frame, 1 << 20),
                Frame::Record {
                    payload: &payload,
                    len: len + 12
                }
            );
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let (framing, buf) = framed(99, b"payload bytes");
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(framing.decode(&bad, 1 << 20), Frame::Record { .. }),
                "bit {bit} flipped went unnoticed"
            );
        }
    }

    #[test]
    fn a_record_framed_for_another_salt_is_not_a_record() {
        let (_, buf) = framed(1, b"carried elsewhere");
        let (other, _) = framed(2, b"");
        assert_eq!(
            other.decode(&buf, 1 << 20),
            Frame::Invalid("frame header checksum mismatch")
        );
        // Nor is a frame whose header holds but whose payload was framed for another salt.
        let (framing, mut mine) = framed(2, b"carried elsewhere");
        mine[8..12].copy_from_slice(&buf[8..12]);
        assert_eq!(
            framing.decode(&mine, 1 << 20),
            Frame::Invalid("checksum mismatch")
        );
    }

    #[test]
    fn zeros_are_never_a_record_and_no_record_header_is_zeros() {
        for salt in 0..1000u64 {
            let (framing, frame) = framed(salt, b"");
            assert!(!matches!(
                framing.decode(&[0; 64], 1 << 20),
                Frame::Record { .. }
            ));
            if frame == [0; FRAME_HEADER] {
                // Such a salt is never drawn for a segment.
                assert_eq!(crc::append(seed(salt), &[0; 4]), 0);
            }
        }
        for _ in 0..100 {
            let (header, framing) = new_segment_header(0, 0);
            let Framing::Salted { seed } = framing else {
                panic!("a new segment is salted");
            };
            assert_ne!(crc::append(seed, &[0; 4]), 0);
            assert_eq!(SegmentHeader::decode(&header).unwrap().framing, framing);
        }
    }

    #[test]
    fn old_format_frames_decode_as_the_format_defines() {
        for len in [0usize, 1, 9, 300] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let len_bytes = u32::try_from(len).unwrap().to_le_bytes();
            let covered: Vec<u8> = len_bytes.iter().chain(&payload).copied().collect();
            let mut frame = len_bytes.to_vec();
            frame.extend_from_slice(&bitwise(&covered).to_le_bytes());
            frame.extend_from_slice(&payload);
            assert_eq!(
                Framing::V1.decode(&frame, 1 << 20),
                Frame::Record {
                    payload: &payload,
                    len: len + 8
                }
            );
            frame[5] ^= 1;
            assert_eq!(
                Framing::V1.decode(&frame, 1 << 20),
                Frame::Invalid("checksum mismatch")
            );
        }
    }

    #[test]
    fn headers_of_both_formats_round_trip_and_flips_are_caught() {
        let (bytes, framing) = new_segment_header(42, 1_700_000_000_000);
        assert_eq!(&bytes[..8], b"INFRAMQ2");
        assert_eq!(bytes[32..36], [0; 4]);
        assert_eq!(bytes[36..], bitwise(&bytes[..36]).to_le_bytes());
        let header = SegmentHeader::decode(&bytes).unwrap();
        assert_eq!(
            (header.base, header.created_millis, header.framing),
            (42, 1_700_000_000_000, framing)
        );
        assert_eq!(
            framing,
            Framing::Salted {
                seed: bitwise(&bytes[24..32])
            }
        );
        let (other, _) = new_segment_header(42, 1_700_000_000_000);
        assert_ne!(
            other[24..32],
            bytes[24..32],
            "every segment draws its own salt"
        );
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&bad).is_err(), "bit {bit}");
        }
        assert!(SegmentHeader::decode(&bytes[..39]).is_err());

        let mut old = b"INFRAMQ1".to_vec();
        old.extend_from_slice(&7u64.to_le_bytes());
        old.extend_from_slice(&5u64.to_le_bytes());
        old.extend_from_slice(&[0; 4]);
        let crc = bitwise(&old);
        old.extend_from_slice(&crc.to_le_bytes());
        let header = SegmentHeader::decode(&old).unwrap();
        assert_eq!(
            (header.base, header.created_millis, header.framing),
            (7, 5, Framing::V1)
        );
        old[9] ^= 4;
        assert!(SegmentHeader::decode(&old).is_err());
    }
}
