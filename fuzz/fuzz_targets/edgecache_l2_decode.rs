//! Bytes read back from the shared tier are untrusted: decoding any input returns an error or
//! a record and never panics, and what it allocates grows in proportion to the input (CI runs
//! this under a 2 GB memory limit). A record that decodes encodes to exactly as many bytes
//! (every length in the format is checked against the input) and decodes again to itself.
#![no_main]

use infra_edgecache::http::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = Record::decode(data) else {
        return;
    };
    let encoded = record.encode();
    assert_eq!(encoded.len(), data.len(), "a record of another size");
    assert_eq!(Record::decode(&encoded).as_ref(), Ok(&record));
});
