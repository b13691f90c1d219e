//! Arbitrary bytes as the body of a log segment, in either format: the first byte's low bit
//! picks `INFRAMQ1` (set) or `INFRAMQ2` (clear, the next eight bytes being the segment's salt).
//! The record decoder never panics and never yields a record whose checksums do not match; it
//! returns exactly the valid prefix that a tiny decoder written here from the format (not from
//! the crate's code) finds. Opening a log whose newest segment holds those bytes either keeps
//! exactly that prefix (the rest being a torn tail or zeros, with no valid record after it) or
//! reports `Corrupt` (a valid record follows the bad one), and never panics.
#![no_main]

use std::path::Path;

use infra_common::ManualClock;
use infra_mqueue::Error;
use infra_mqueue::log::{self, Log, LogOptions, SimulatedStorage, Storage};
use libfuzzer_sys::fuzz_target;

/// The format's limit on a record's length field, far above any input here.
const LIMIT: u32 = 1 << 28;

fn word(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The `INFRAMQ1` record at the start of `bytes`, as the format defines it: length, CRC-32C
/// over the four length bytes and the payload, payload.
fn model_v1(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let len = word(bytes, 0)?;
    let crc = word(bytes, 4)?;
    let payload = bytes.get(8..8 + len as usize)?;
    let mut covered = bytes[..4].to_vec();
    covered.extend_from_slice(payload);
    (crc32c::crc32c(&covered) == crc).then_some((payload, 8 + len as usize))
}

/// The `INFRAMQ2` record at the start of `bytes`: twelve bytes that are not all zero, length,
/// CRC-32C of the salt and the length bytes, CRC-32C of the salt, the length bytes and the
/// payload; then the payload.
fn model_v2(salt: u64, bytes: &[u8]) -> Option<(&[u8], usize)> {
    let header = bytes.get(..12)?;
    if header.iter().all(|&b| b == 0) {
        return None;
    }
    let len = word(bytes, 0)?;
    let mut covered = salt.to_le_bytes().to_vec();
    covered.extend_from_slice(&header[..4]);
    if crc32c::crc32c(&covered) != word(bytes, 4)? {
        return None;
    }
    let payload = bytes.get(12..12 + len as usize)?;
    covered.extend_from_slice(payload);
    (crc32c::crc32c(&covered) == word(bytes, 8)?).then_some((payload, 12 + len as usize))
}

/// A segment header for base offset 0: `INFRAMQ1`'s 32 bytes, or `INFRAMQ2`'s 40 with `salt`.
fn header(salt: Option<u64>) -> Vec<u8> {
    let mut bytes = match salt {
        Some(_) => b"INFRAMQ2".to_vec(),
        None => b"INFRAMQ1".to_vec(),
    };
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
    if let Some(salt) = salt {
        bytes.extend_from_slice(&salt.to_le_bytes());
    }
    bytes.extend_from_slice(&[0; 4]);
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

fuzz_target!(|data: &[u8]| {
    let Some((&format, rest)) = data.split_first() else {
        return;
    };
    let (salt, body) = if format & 1 == 1 {
        (None, rest)
    } else {
        let Some((salt, body)) = rest.split_first_chunk::<8>() else {
            return;
        };
        (Some(u64::from_le_bytes(*salt)), body)
    };
    let model = |bytes: &[u8]| match salt {
        Some(salt) => model_v2(salt, bytes).map(|(_, len)| len),
        None => model_v1(bytes).map(|(_, len)| len),
    };

    // The valid prefix, by the model.
    let mut prefix: Vec<&[u8]> = Vec::new();
    let mut end = 0;
    while let Some(len) = body.get(end..).and_then(model) {
        let header = if salt.is_some() { 12 } else { 8 };
        prefix.push(&body[end + header..end + len]);
        end += len;
    }
    let valid_after = (end + 1..body.len()).any(|at| model(&body[at..]).is_some());

    let decoded = log::fuzz_decode(body, salt, LIMIT);
    let decoded_payloads: Vec<&[u8]> = decoded.iter().map(|(_, p)| *p).collect();
    assert_eq!(
        decoded_payloads, prefix,
        "the decoder's valid prefix differs from the model's"
    );

    let disk = SimulatedStorage::new();
    let dir = Path::new("/log");
    disk.create_dir_all(dir).unwrap();
    let file = disk
        .open(&dir.join("00000000000000000000.seg"), true)
        .unwrap();
    let header = header(salt);
    file.write_at(0, &header).unwrap();
    file.write_at(header.len() as u64, body).unwrap();
    drop(file);
    let options = LogOptions {
        fsync: log::FsyncPolicy::Never,
        ..LogOptions::default()
    };
    match Log::open_with(dir, options, ManualClock::new(), disk) {
        Ok(log) => {
            assert!(
                !valid_after || end == body.len(),
                "a bad record with valid ones after it was cut off as a torn tail"
            );
            let records = log.read(0, usize::MAX).unwrap();
            let payloads: Vec<&[u8]> = records.iter().map(|r| r.payload.as_slice()).collect();
            assert_eq!(
                payloads, prefix,
                "recovery kept something other than the valid prefix"
            );
            assert_eq!(log.next_offset(), prefix.len() as u64);
        }
        Err(Error::Corrupt { position, .. }) => {
            assert!(
                valid_after,
                "Corrupt without a valid record after the bad one"
            );
            assert_eq!(position, (header.len() + end) as u64);
        }
        Err(other) => panic!("unexpected error {other:?}"),
    }
});
