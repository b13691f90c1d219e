//! Crash test: this test binary runs itself again as a producer appending with fsync=Always
//! from four threads and printing every acknowledged offset with a hash of its payload; the
//! test SIGKILLs it at random moments (after a random number of acknowledgements, 0 included,
//! so some kills land during recovery), at least 200 times, and after each kill reopens the log
//! and checks that every acknowledged record is there, in order, with its payload, and that
//! nothing corrupt is read. A longer run sets the number of kills in `INFRA_MQUEUE_CRASH_KILLS`
//! (fewer than 200 are not taken).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use infra_common::stable_hash;
use infra_common::sync::{Arc, thread};
use infra_mqueue::log::{Log, LogOptions};

const CHILD_ENV: &str = "INFRA_MQUEUE_CRASH_CHILD_DIR";
const KILLS_ENV: &str = "INFRA_MQUEUE_CRASH_KILLS";
const KILLS: usize = 200;

/// The kills of this run: [`KILLS`], or more if [`KILLS_ENV`] asks for a longer run.
fn kills() -> usize {
    std::env::var(KILLS_ENV)
        .ok()
        .and_then(|kills| kills.parse().ok())
        .map_or(KILLS, |kills: usize| kills.max(KILLS))
}

fn options() -> LogOptions {
    LogOptions {
        // Small segments, so kills also land around segment rolls.
        segment_bytes: 16 << 10,
        ..LogOptions::default()
    }
}

/// The payload a producer appends: its length and bytes vary with the thread and sequence.
fn payload(thread: u64, seq: u64) -> Vec<u8> {
    let len = (stable_hash(&[thread.to_le_bytes(), seq.to_le_bytes()].concat()) % 300) as usize;
    let mut bytes = format!("{thread}:{seq}:").into_bytes();
    bytes.resize(bytes.len() + len, b'a' + (seq % 26) as u8);
    bytes
}

/// The child side: appends until killed. Does nothing in a normal test run.
#[test]
fn crash_child_producer() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let log = Arc::new(Log::open(Path::new(&dir), options()).expect("child open"));
    let producers: Vec<_> = (0..4u64)
        .map(|t| {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                for seq in 0.. {
                    let payload = payload(t, seq);
                    let offset = log.append(&payload).expect("append");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {offset} {:x}", stable_hash(&payload)).unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
}

/// A small deterministic generator (xorshift64*), so a failure can be rerun.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[test]
fn every_acknowledged_append_survives_sigkill() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Offset -> payload hash of every acknowledged append so far.
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    let started = Instant::now();
    let kills = kills();
    // Three seconds a kill at most: a bound only a hung producer or reopen reaches.
    let hung_after = Duration::from_secs(3 * kills as u64);
    for kill in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "crash_child_producer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let wait_for = rng.below(40);
        let mut seen = 0;
        while seen < wait_for {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("ack ") => {
                    record_ack(&mut acked, &line);
                    seen += 1;
                }
                Some(Ok(_)) => {}
                _ => panic!("the producer stopped on its own (kill {kill})"),
            }
        }
        child.kill().unwrap();
        // Acknowledgements printed before the kill are still in the pipe.
        for line in lines.map_while(Result::ok) {
            if line.starts_with("ack ") {
                record_ack(&mut acked, &line);
            }
        }
        child.wait().unwrap();
        verify(dir.path(), &acked, kill);
        assert!(
            started.elapsed() < hung_after,
            "crash test hung after {kill} kills"
        );
    }
    eprintln!(
        "crash: {kills} kills, {} acknowledged appends verified, {:.1} s",
        acked.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(acked.len() > kills, "the producers barely ran");
}

fn record_ack(acked: &mut BTreeMap<u64, u64>, line: &str) {
    let mut words = line.split(' ').skip(1);
    let (Some(offset), Some(hash)) = (words.next(), words.next()) else {
        return; // a line cut by the kill is not an acknowledgement
    };
    let (Ok(offset), Ok(hash)) = (offset.parse(), u64::from_str_radix(hash, 16)) else {
        return;
    };
    if let Some(previous) = acked.insert(offset, hash) {
        assert_eq!(
            previous, hash,
            "offset {offset} acknowledged twice with different payloads"
        );
    }
}

fn verify(dir: &Path, acked: &BTreeMap<u64, u64>, kill: usize) {
    let log = Log::open(dir, options()).unwrap_or_else(|e| panic!("reopen after kill {kill}: {e}"));
    let records = log
        .read(0, usize::MAX)
        .unwrap_or_else(|e| panic!("read after kill {kill}: {e}"));
    assert_eq!(records.len() as u64, log.next_offset());
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.offset, i as u64, "offsets are dense and in order");
    }
    for (&offset, &hash) in acked {
        let record = records
            .get(usize::try_from(offset).unwrap())
            .unwrap_or_else(|| panic!("acknowledged offset {offset} lost at kill {kill}"));
        assert_eq!(
            stable_hash(&record.payload),
            hash,
            "acknowledged offset {offset} holds another payload at kill {kill}"
        );
    }
}
