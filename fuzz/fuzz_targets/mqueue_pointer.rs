//! Arbitrary bytes as the `JOURNAL` pointer of a durable work queue whose journal is at
//! generation 0, the only one there. Opening never panics, and opens exactly when the pointer
//! is well formed by the format and names generation 0: at most 32 bytes, of which ASCII
//! digits naming a number below
//! 2^64 - 1, optionally followed by one space and the CRC-32C of those digits in eight
//! lowercase hex digits, with ASCII whitespace around (a bare number is what versions before
//! the checksum wrote). Anything else is `CorruptJournal`, and the queue's files are left as
//! they were. The format is read here from that description, with the `crc32c` crate's
//! checksum, not the queue's.
//!
//! The first input byte chooses the pointer: even, the rest of the input is the pointer; odd,
//! a well-formed pointer to generation `data[1] % 3` with the rest of the input XORed over it
//! (damage to a pointer a compaction wrote).
#![no_main]

use std::path::Path;

use infra_common::ManualClock;
use infra_mqueue::Error;
use infra_mqueue::log::{FsyncPolicy, LogOptions, SimulatedStorage, Storage};
use infra_mqueue::queue::{QueueOptions, WorkQueue};
use libfuzzer_sys::fuzz_target;

/// The pointer a compaction to `generation` writes, by the format.
fn well_formed(generation: u64) -> Vec<u8> {
    let digits = generation.to_string();
    format!("{digits} {:08x}", crc32c::crc32c(digits.as_bytes())).into_bytes()
}

/// The generation `pointer` names, or `None` if it is not well formed.
fn named_by(pointer: &[u8]) -> Option<u64> {
    if pointer.len() > 32 {
        return None;
    }
    let pointer = pointer.trim_ascii();
    let (digits, check) = match pointer.iter().position(|&b| b == b' ') {
        Some(space) => (&pointer[..space], Some(&pointer[space + 1..])),
        None => (pointer, None),
    };
    if digits.is_empty() {
        return None;
    }
    let mut number: u64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        number = number
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    if number == u64::MAX {
        return None;
    }
    if let Some(check) = check {
        let expected = format!("{:08x}", crc32c::crc32c(digits));
        if check != expected.as_bytes() {
            return None;
        }
    }
    Some(number)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let pointer = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let Some((&generation, damage)) = rest.split_first() else {
            return;
        };
        let mut pointer = well_formed(u64::from(generation % 3));
        for (byte, flip) in pointer.iter_mut().zip(damage) {
            *byte ^= flip;
        }
        pointer
    };

    let disk = SimulatedStorage::new();
    let dir = Path::new("/queue");
    let clock = ManualClock::new();
    let options = || {
        QueueOptions::default().log_options(LogOptions {
            fsync: FsyncPolicy::Never,
            ..LogOptions::default()
        })
    };
    let open = || WorkQueue::open_with(dir, options(), clock.clone(), disk.clone());
    {
        let queue = open().expect("a new queue");
        queue.send(b"sent".as_slice()).expect("room for one");
    }
    let file = disk
        .open(&dir.join("JOURNAL"), true)
        .expect("a JOURNAL file");
    file.write_at(0, &pointer).expect("the pointer written");
    drop(file);
    let files_before = disk.list(dir).expect("the queue's directory");

    match (open(), named_by(&pointer)) {
        (Ok(queue), Some(0)) => assert_eq!(queue.stats().unsettled, 1, "the message kept"),
        (Err(Error::CorruptJournal { .. }), named) if named != Some(0) => {
            assert_eq!(
                disk.list(dir).expect("the queue's directory"),
                files_before,
                "a refused open deletes nothing"
            );
        }
        (opened, named) => panic!("{opened:?} for a pointer naming {named:?}"),
    }
});
