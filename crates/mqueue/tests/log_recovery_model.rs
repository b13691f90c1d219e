//! Random logs damaged at random against a model of what recovery must keep: damage confined to
//! the tail of the newest segment (a cut, zeros over the end, a flipped bit in the last record
//! or in the zeros after it) loses exactly the records whose bytes changed and nothing before
//! them; damage anywhere else (a flipped bit in a record with a record after it, in an older
//! segment, or in a segment header) is `Error::Corrupt` at the damaged record, and no file
//! changes.

use std::path::{Path, PathBuf};

use infra_common::ManualClock;
use infra_mqueue::Error;
use infra_mqueue::log::{Log, LogOptions, SimulatedStorage, Storage};
use proptest::prelude::*;

const DIR: &str = "/log";
/// Bytes of a segment header and of a record's header (`INFRAMQ2`).
const SEGMENT_HEADER: usize = 40;
const FRAME_HEADER: usize = 12;

fn read(disk: &SimulatedStorage, path: &Path) -> Vec<u8> {
    let file = disk.open(path, false).unwrap();
    let mut bytes = vec![0; usize::try_from(file.len().unwrap()).unwrap()];
    let mut at = 0;
    while at < bytes.len() {
        at += file.read_at(at as u64, &mut bytes[at..]).unwrap();
    }
    bytes
}

fn write(disk: &SimulatedStorage, path: &Path, bytes: &[u8]) {
    let file = disk.open(path, false).unwrap();
    file.truncate(0).unwrap();
    file.write_at(0, bytes).unwrap();
}

/// The log's segment files, oldest first, with their contents.
fn files(disk: &SimulatedStorage) -> Vec<(PathBuf, Vec<u8>)> {
    let mut names: Vec<String> = disk
        .list(Path::new(DIR))
        .unwrap()
        .into_iter()
        .filter(|name| name.ends_with(".seg"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let path = Path::new(DIR).join(name);
            let bytes = read(disk, &path);
            (path, bytes)
        })
        .collect()
}

/// Where each record lies: its segment (an index into `files`) and its bytes' range there.
struct Placed {
    segment: usize,
    start: usize,
    end: usize,
}

/// Places the records from the segments' base offsets (their names) and the payloads' lengths.
fn place(files: &[(PathBuf, Vec<u8>)], payloads: &[Vec<u8>]) -> Vec<Placed> {
    let bases: Vec<usize> = files
        .iter()
        .map(|(path, _)| {
            let stem = path.file_stem().unwrap().to_str().unwrap();
            stem.parse().unwrap()
        })
        .collect();
    let mut placed = Vec::new();
    for (segment, &base) in bases.iter().enumerate() {
        let next = bases.get(segment + 1).copied().unwrap_or(payloads.len());
        let mut at = SEGMENT_HEADER;
        for payload in &payloads[base..next] {
            let end = at + FRAME_HEADER + payload.len();
            placed.push(Placed {
                segment,
                start: at,
                end,
            });
            at = end;
        }
    }
    placed
}

#[derive(Debug, Clone)]
enum Damage {
    /// The newest segment cut at a point among its records, or zeros from there on.
    Cut { at: u64, zeros: bool },
    /// A bit of the last record.
    FlipLast { bit: u64 },
    /// A bit of the zeros after the last record (none when there are no zeros).
    FlipZeros { at: u64, bit: u8 },
    /// A bit of a record with another after it in its segment, or in an older segment.
    FlipMiddle { record: u64, bit: u64 },
    /// A bit of a segment's header.
    FlipHeader { segment: u64, bit: u64 },
}

fn damage() -> impl Strategy<Value = Damage> {
    // One kind of five, chosen by index (`prop_oneof!` expands to a `std::sync::Arc`, which the
    // workspace's lints keep out).
    (0..5u8, any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(kind, a, b, zeros)| match kind {
        0 => Damage::Cut { at: a, zeros },
        1 => Damage::FlipLast { bit: b },
        2 => Damage::FlipZeros {
            at: a,
            bit: (b % 8) as u8,
        },
        3 => Damage::FlipMiddle { record: a, bit: b },
        _ => Damage::FlipHeader { segment: a, bit: b },
    })
}

fn flip(bytes: &mut [u8], range: std::ops::Range<usize>, bit: u64) {
    let bits = (range.end - range.start) as u64 * 8;
    let bit = bit % bits;
    bytes[range.start + usize::try_from(bit / 8).unwrap()] ^= 1 << (bit % 8);
}

/// What recovery must do: keep the first `n` records (the rest of the newest segment's data
/// cut), or refuse with `Corrupt` at a segment's position.
#[derive(Debug, PartialEq)]
enum Expected {
    Keep(usize),
    Corrupt(usize, u64),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn recovery_keeps_what_the_model_says_and_refuses_damage_in_the_middle(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..150), 1..16),
        small_segments in any::<bool>(),
        preallocate in (0..3usize).prop_map(|i| [0u64, 64, 4096][i]),
        damage in damage(),
    ) {
        let disk = SimulatedStorage::new();
        let options = LogOptions {
            segment_bytes: if small_segments { 256 } else { 1 << 20 },
            preallocate,
            ..LogOptions::default()
        };
        let open = |disk: &SimulatedStorage| {
            Log::open_with(Path::new(DIR), options.clone(), ManualClock::new(), disk.clone())
        };
        let log = open(&disk).unwrap();
        for (i, payload) in payloads.iter().enumerate() {
            prop_assert_eq!(log.append(payload).unwrap(), i as u64);
        }
        drop(log);

        let mut segments = files(&disk);
        let placed = place(&segments, &payloads);
        let last = placed.last().unwrap();
        let newest = segments.len() - 1;
        prop_assert_eq!(last.segment, newest);
        let first_in_newest = placed.iter().position(|p| p.segment == newest).unwrap();
        let before: Vec<Vec<u8>> = segments.iter().map(|(_, bytes)| bytes.clone()).collect();

        let bytes = &mut segments[newest].1;
        let mut expected = None;
        match damage {
            Damage::Cut { at, zeros } => {
                let from = placed[first_in_newest].start;
                let cut = from + usize::try_from(at % (last.end - from) as u64).unwrap();
                if zeros {
                    bytes[cut..].fill(0);
                } else {
                    bytes.truncate(cut);
                }
            }
            Damage::FlipLast { bit } => flip(bytes, last.start..last.end, bit),
            Damage::FlipZeros { at, bit } => {
                if bytes.len() > last.end {
                    let at = last.end + usize::try_from(at % (bytes.len() - last.end) as u64).unwrap();
                    bytes[at] ^= 1 << bit;
                }
            }
            Damage::FlipMiddle { record, bit } => {
                if placed.len() > 1 {
                    let record = &placed[usize::try_from(record % (placed.len() as u64 - 1)).unwrap()];
                    let bytes = &mut segments[record.segment].1;
                    flip(bytes, record.start..record.end, bit);
                    expected = Some(Expected::Corrupt(record.segment, record.start as u64));
                }
            }
            Damage::FlipHeader { segment, bit } => {
                let segment = usize::try_from(segment % segments.len() as u64).unwrap();
                flip(&mut segments[segment].1, 0..SEGMENT_HEADER, bit);
                expected = Some(Expected::Corrupt(segment, 0));
            }
        }
        // Tail damage: the records whose bytes are all still there survive, up to the first
        // that is not.
        let expected = expected.unwrap_or_else(|| {
            let after = &segments[newest].1;
            let kept = placed
                .iter()
                .take_while(|p| {
                    p.segment < newest
                        || after.get(p.start..p.end) == Some(&before[newest][p.start..p.end])
                })
                .count();
            Expected::Keep(kept)
        });
        for (path, bytes) in &segments {
            write(&disk, path, bytes);
        }

        match (open(&disk), expected) {
            (Ok(log), Expected::Keep(kept)) => {
                let records = log.read(0, usize::MAX).unwrap();
                let got: Vec<&[u8]> = records.iter().map(|r| r.payload.as_slice()).collect();
                let want: Vec<&[u8]> = payloads[..kept].iter().map(Vec::as_slice).collect();
                prop_assert_eq!(got, want);
                prop_assert_eq!(log.next_offset(), kept as u64);
                // What was cut is gone: the newest segment holds its surviving records and
                // nothing but zeros after them.
                let kept_end = placed[..kept]
                    .iter()
                    .rev()
                    .find(|p| p.segment == newest)
                    .map_or(SEGMENT_HEADER, |p| p.end);
                let now = read(&disk, &segments[newest].0);
                prop_assert_eq!(&now[..kept_end], &before[newest][..kept_end]);
                prop_assert!(now[kept_end..].iter().all(|&b| b == 0));
                // And the log goes on from there.
                prop_assert_eq!(log.append(b"after").unwrap(), kept as u64);
                drop(log);
                let log = open(&disk).unwrap();
                prop_assert_eq!(log.next_offset(), kept as u64 + 1);
                prop_assert_eq!(&log.read(kept as u64, 1).unwrap()[0].payload, b"after");
            }
            (Err(Error::Corrupt { segment, position, .. }), Expected::Corrupt(index, at)) => {
                prop_assert_eq!(&segment, &segments[index].0);
                prop_assert_eq!(position, at);
                for (path, bytes) in &segments {
                    prop_assert_eq!(&read(&disk, path), bytes, "nothing is cut");
                }
                prop_assert_eq!(files(&disk).len(), segments.len(), "nothing is added");
            }
            (outcome, expected) => {
                prop_assert!(false, "expected {:?}, got {:?}", expected, outcome.map(|_| ()));
            }
        }
    }
}
