//! Reads a whole log back, for tests that compare its records with what they appended.

use infra_mqueue::log::Log;

/// Every record's payload, from the log's first offset on.
pub(crate) fn all(log: &Log) -> Vec<Vec<u8>> {
    log.read(log.first_offset(), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| r.payload)
        .collect()
}
