//! Balance of every infra-ring-hash engine: peak-to-average load of 1,000,000 keys over 10, 100
//! and 1,000 nodes, printed as a Markdown table.
//!
//! `cargo run --release -p examples --example ring_hash_balance`
//!
//! Peak-to-average is the busiest node's key count over the mean (1.00 is perfect). With a
//! finite number of random keys even a perfect engine shows sampling noise: at 1,000 keys per
//! node (1,000 nodes), the busiest of 1,000 nodes sits about 3 standard deviations, roughly
//! 10%, above the mean. The "ideal" row is that noise alone (keys thrown uniformly at random).

use std::error::Error;
use std::time::Instant;

use infra_ring_hash::hashing::{fmix64, key_hash, reduce};
use infra_ring_hash::{
    BoundedLoad, Engine, Flip, Jump, Maglev, Member, Memento, Placement, Rendezvous, Ring,
};

const KEYS: u64 = 1_000_000;
const SIZES: [u32; 3] = [10, 100, 1000];

fn peak_to_average(counts: &[u64]) -> f64 {
    let peak = counts.iter().copied().max().unwrap_or(0);
    let average = counts.iter().sum::<u64>() as f64 / counts.len() as f64;
    peak as f64 / average
}

fn engine_balance<E: Engine>(engine: E, nodes: u32, hashes: &[u64]) -> Result<f64, Box<dyn Error>> {
    let placement = Placement::from_members(engine, (0..nodes).map(Member::new))?;
    let mut counts = vec![0u64; nodes as usize];
    for &hash in hashes {
        let node = placement.node_for_hash(hash).ok_or("no node")?;
        counts[*node as usize] += 1;
    }
    Ok(peak_to_average(&counts))
}

fn bounded_balance(nodes: u32, hashes: &[u64]) -> Result<f64, Box<dyn Error>> {
    let placement = Placement::from_members(Ring::new(), (0..nodes).map(Member::new))?;
    let bounded = BoundedLoad::new(placement, 1.25)?;
    let leases = hashes
        .iter()
        .map(|&hash| bounded.take_for_hash(hash))
        .collect::<Result<Vec<_>, _>>()?;
    let counts: Vec<u64> = bounded.loads().into_iter().map(|(_, load)| load).collect();
    drop(leases);
    Ok(peak_to_average(&counts))
}

fn main() -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    let hashes: Vec<u64> = (0..KEYS).map(|key| key_hash(&key)).collect();
    type Row = (&'static str, fn(u32, &[u64]) -> Result<f64, Box<dyn Error>>);
    let rows: [Row; 8] = [
        ("ideal (uniform random)", |nodes, hashes| {
            let mut counts = vec![0u64; nodes as usize];
            for &hash in hashes {
                counts[reduce(fmix64(hash), u64::from(nodes)) as usize] += 1;
            }
            Ok(peak_to_average(&counts))
        }),
        ("ring (160 points/node)", |n, h| {
            engine_balance(Ring::new(), n, h)
        }),
        ("rendezvous", |n, h| engine_balance(Rendezvous::new(), n, h)),
        ("jump", |n, h| engine_balance(Jump::new(), n, h)),
        ("fliphash", |n, h| engine_balance(Flip::new(), n, h)),
        ("maglev", |n, h| engine_balance(Maglev::new(), n, h)),
        ("memento", |n, h| engine_balance(Memento::new(), n, h)),
        ("bounded load c = 1.25 (ring)", bounded_balance),
    ];
    println!("Peak-to-average load, {KEYS} keys:");
    println!();
    println!("| engine | 10 nodes | 100 nodes | 1000 nodes |");
    println!("| --- | --- | --- | --- |");
    for (name, balance) in rows {
        let cells = SIZES
            .iter()
            .map(|&nodes| balance(nodes, &hashes).map(|ratio| format!("{ratio:.3}")))
            .collect::<Result<Vec<_>, _>>()?;
        println!("| {name} | {} |", cells.join(" | "));
    }

    // Maglev's own promise is about table entries, not keys: show the entry share directly.
    let maglev = Placement::from_members(Maglev::new(), (0..1000u32).map(Member::new))?;
    let entries: Vec<u64> = maglev
        .engine()
        .entry_counts()
        .into_iter()
        .map(|count| count as u64)
        .collect();
    println!();
    println!(
        "maglev table at 1000 nodes: {} entries, peak-to-average entries per node {:.3}",
        maglev.engine().table_size(),
        peak_to_average(&entries)
    );
    println!("finished in {:.1?}", started.elapsed());
    Ok(())
}
