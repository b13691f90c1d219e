//! The policy's hit ratio against its peers, so a regression fails the build.
//!
//! The default rows are cheap enough for a debug build: Zipf workloads smaller than the
//! table's (20,000 keys, 200,000 requests, a cache of 5 %). OLTP at 1,000 entries (the ARC
//! paper's trace; Megiddo and Modha, "ARC: A Self-Tuning, Low Overhead Replacement Cache",
//! FAST 2003) and the table's own rows take minutes in a debug build, so they are ignored
//! tests; run them with
//!
//! ```text
//! cargo test --release -p infra-edgecache --test hit_ratio -- --include-ignored
//! ```
//!
//! Every row checks ours (one shard) >= each peer, and no policy above Belady's optimum (a
//! check of the harness itself).

mod support;

use support::hit_ratio as harness;

/// Ours, then each peer by name, on one trace and capacity.
fn check(name: &str, trace: &[u64], capacity: usize) {
    let ours = harness::edgecache(trace, capacity, 1);
    let optimum = harness::belady(trace, capacity);
    let peers = [
        ("LRU", harness::lru(trace, capacity)),
        ("moka", harness::moka(trace, capacity)),
        (
            "quick_cache sync",
            harness::quick_cache_sync(trace, capacity),
        ),
        (
            "quick_cache unsync",
            harness::quick_cache_unsync(trace, capacity),
        ),
    ];
    println!("{name} @ {capacity}: ours {ours:.4}, Belady {optimum:.4}, peers {peers:.4?}");
    assert!(
        ours <= optimum,
        "{name} @ {capacity}: ours {ours} above Belady {optimum}"
    );
    for (peer, ratio) in peers {
        assert!(
            ratio <= optimum,
            "{name} @ {capacity}: {peer} {ratio} above Belady {optimum}"
        );
        assert!(
            ours >= ratio,
            "{name} @ {capacity}: ours {ours:.4} below {peer} {ratio:.4}"
        );
    }
}

#[test]
fn zipf_small_rows() {
    for exponent in [0.8, 1.0, 1.2] {
        let trace = harness::zipf(20_000, exponent, 200_000, 15);
        check(&format!("zipf {exponent} (20k keys)"), &trace, 1_000);
    }
}

#[test]
#[ignore = "a minute or more in a debug build"]
fn oltp_at_1000() {
    let trace = harness::arc_trace(&harness::traces_dir().join("OLTP.lis.zst"));
    check("oltp", &trace, 1_000);
}

#[test]
#[ignore = "minutes in a release build; the table's full rows"]
fn the_table() {
    for exponent in [0.8, 1.0, 1.2] {
        let trace = harness::zipf(100_000, exponent, 2_000_000, 15);
        for capacity in [500, 5_000, 25_000] {
            check(&format!("zipf {exponent}"), &trace, capacity);
        }
    }
    let oltp = harness::arc_trace(&harness::traces_dir().join("OLTP.lis.zst"));
    for capacity in [1_000, 5_000, 15_000, 50_000] {
        check("oltp", &oltp, capacity);
    }
    let p3 = harness::arc_trace(&harness::traces_dir().join("P3.lis.zst"));
    for capacity in [4_096, 32_768, 131_072, 524_288] {
        check("p3", &p3, capacity);
    }
}
