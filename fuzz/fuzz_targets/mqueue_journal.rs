//! Arbitrary bytes as the state journal of a durable work queue holding eight messages: each
//! input byte `n` starts a journal record of the next `n % 32` bytes. Opening the queue never
//! panics; it fails with `CorruptJournal` exactly when a record is malformed by the format (a
//! tag byte, then fixed-width little-endian fields: 1 received `offset, attempt`; 2 acked, 3
//! terminated, 4 dead-lettered `offset`; 5 nacked `offset, attempt, not_before_ms`; 6
//! checkpoint `watermark`; 7 settled range `from, end` with `from < end`; 8 withdrawn `offset,
//! attempt`), and otherwise counts unsettled exactly the messages that no record settles, by a
//! fold of the records written here from the format, not from the crate's code. A receive
//! (whose journal record may start a compaction, writing a checkpoint of that state) and a
//! reopen keep the count.
#![no_main]

use std::path::Path;

use infra_common::ManualClock;
use infra_mqueue::Error;
use infra_mqueue::log::{FsyncPolicy, Log, LogOptions, SimulatedStorage};
use infra_mqueue::queue::{QueueOptions, WorkQueue};
use libfuzzer_sys::fuzz_target;

const MESSAGES: u64 = 8;

/// Which of the messages `0..MESSAGES` the journal `records` settles, or `None` when a record
/// is malformed.
fn settled_by(records: &[&[u8]]) -> Option<Vec<bool>> {
    let mut settled = vec![false; MESSAGES as usize];
    let mut settle = |from: u64, end: u64| {
        for offset in from..end.min(MESSAGES) {
            settled[offset as usize] = true;
        }
    };
    for record in records {
        let (&tag, fields) = record.split_first()?;
        let word = |at: usize| u64::from_le_bytes(fields[at..at + 8].try_into().unwrap());
        let length = match tag {
            1 | 8 => 12,
            2..=4 | 6 => 8,
            5 => 20,
            7 => 16,
            _ => return None,
        };
        if fields.len() != length {
            return None;
        }
        match tag {
            2..=4 => settle(word(0), word(0).saturating_add(1)),
            6 => settle(0, word(0)),
            7 if word(0) >= word(8) => return None,
            7 => settle(word(0), word(8)),
            _ => {}
        }
    }
    Some(settled)
}

fuzz_target!(|data: &[u8]| {
    let mut records = Vec::new();
    let mut rest = data;
    while let Some((&length, tail)) = rest.split_first() {
        let length = usize::from(length % 32).min(tail.len());
        records.push(&tail[..length]);
        rest = &tail[length..];
    }
    let expected =
        settled_by(&records).map(|settled| settled.iter().filter(|&&settled| !settled).count());

    let disk = SimulatedStorage::new();
    let dir = Path::new("/queue");
    let clock = ManualClock::new();
    let log = LogOptions {
        fsync: FsyncPolicy::Never,
        ..LogOptions::default()
    };
    let options = || {
        QueueOptions::default()
            .compact_after(16)
            .log_options(log.clone())
    };
    let open = || WorkQueue::open_with(dir, options(), clock.clone(), disk.clone());
    {
        let queue = open().expect("a new queue");
        for n in 0..MESSAGES {
            queue
                .send(n.to_le_bytes().to_vec())
                .expect("room for eight");
        }
    }
    // Until its first compaction a queue journals into generation 0.
    let journal = Log::open_with(
        &dir.join("journal-0"),
        log.clone(),
        clock.clone(),
        disk.clone(),
    )
    .expect("the queue's journal");
    for record in &records {
        journal
            .append(record)
            .expect("a record of at most 31 bytes");
    }
    drop(journal);

    match (open(), expected) {
        (Ok(queue), Some(unsettled)) => {
            assert_eq!(queue.stats().unsettled, unsettled, "unsettled after replay");
            let _ = queue.try_receive().expect("a receive");
            let unsettled = queue.stats().unsettled;
            drop(queue);
            let queue = open().expect("a reopen after the journal's own writes");
            assert_eq!(
                queue.stats().unsettled,
                unsettled,
                "unsettled after a reopen"
            );
        }
        (Err(Error::CorruptJournal { .. }), None) => {}
        (Ok(_), None) => panic!("a malformed record was accepted"),
        (Err(error), expected) => panic!("{error:?} where {expected:?} unsettled were expected"),
    }
});
