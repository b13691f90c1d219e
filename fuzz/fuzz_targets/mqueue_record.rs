//! Arbitrary bytes as the body of a log segment. The record decoder never panics and never
//! yields a record whose CRC-32C does not match; it returns exactly the valid prefix that a
//! tiny decoder written here from the format (not from the crate's code) finds. Opening a log
//! whose newest segment holds those bytes either keeps exactly that prefix (the rest being a
//! torn tail or zeros, with no valid record after it) or reports `Corrupt` (a valid record
//! follows the bad one), and never panics.
#![no_main]

use std::path::Path;

use infra_common::ManualClock;
use infra_mqueue::Error;
use infra_mqueue::log::{self, Log, LogOptions, SimulatedStorage, Storage};
use libfuzzer_sys::fuzz_target;

/// The format's limit on a record's length field, far above any input here.
const LIMIT: u32 = 1 << 28;

/// The record at the start of `bytes`, as the format defines it: length, CRC-32C over the four
/// length bytes and the payload, payload.
fn model_record(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let payload = bytes.get(8..8 + len as usize)?;
    let mut covered = bytes[..4].to_vec();
    covered.extend_from_slice(payload);
    (crc32c::crc32c(&covered) == crc).then_some((payload, 8 + len as usize))
}

fn header(base: u64) -> Vec<u8> {
    let mut bytes = b"INFRAMQ1".to_vec();
    bytes.extend_from_slice(&base.to_le_bytes());
    bytes.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

fuzz_target!(|body: &[u8]| {
    // The valid prefix, by the model.
    let mut prefix: Vec<&[u8]> = Vec::new();
    let mut end = 0;
    while let Some((payload, len)) = body.get(end..).and_then(model_record) {
        prefix.push(payload);
        end += len;
    }
    let valid_after = (end + 1..body.len()).any(|at| model_record(&body[at..]).is_some());

    let decoded = log::fuzz_decode(body, LIMIT);
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
    file.write_at(0, &header(0)).unwrap();
    file.write_at(32, body).unwrap();
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
            assert_eq!(position, 32 + end as u64);
        }
        Err(other) => panic!("unexpected error {other:?}"),
    }
});
