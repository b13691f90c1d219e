//! infra-ring-hash: growing a cluster by one node without reshuffling every key, and a node that
//! fails and comes back getting its own keys again.

use std::error::Error;

use infra_ring_hash::hashing::key_hash;
use infra_ring_hash::{Jump, Member, Memento, Placement, Ring};

const KEYS: u64 = 1_000_000;
/// Nodes before the new one joins.
const NODES: u32 = 5;

pub(crate) fn run() -> Result<(), Box<dyn Error>> {
    let hashes: Vec<u64> = (0..KEYS).map(|key| key_hash(&key)).collect();
    let nodes = |count: u32| (0..count).map(|i| Member::new(format!("cache-{i}")));

    // hash % n: the placement everyone writes first.
    let (before_n, after_n) = (u64::from(NODES), u64::from(NODES) + 1);
    let modulo_moved = hashes
        .iter()
        .filter(|&&h| h % before_n != h % after_n)
        .count();
    let new_node = format!("cache-{NODES}");

    let mut ring = Placement::from_members(Ring::new(), nodes(NODES))?;
    let before: Vec<String> = hashes
        .iter()
        .map(|&h| ring.node_for_hash(h).cloned().ok_or("empty ring"))
        .collect::<Result<_, _>>()?;
    ring.add(new_node.clone(), 1)?;
    let mut ring_moved = 0;
    let mut moved_elsewhere = 0;
    for (&h, old) in hashes.iter().zip(&before) {
        let new = ring.node_for_hash(h).ok_or("empty ring")?;
        if new != old {
            ring_moved += 1;
            if *new != new_node {
                moved_elsewhere += 1;
            }
        }
    }

    let mut jump = Placement::from_members(Jump::new(), nodes(NODES))?;
    let before: Vec<usize> = hashes
        .iter()
        .map(|&h| jump_index(&jump, h))
        .collect::<Result<_, _>>()?;
    jump.add(new_node, 1)?;
    let mut jump_moved = 0;
    for (&h, &old) in hashes.iter().zip(&before) {
        if jump_index(&jump, h)? != old {
            jump_moved += 1;
        }
    }

    let percent = |moved: usize| 100.0 * moved as f64 / KEYS as f64;
    // The ideal: the new node takes its fair share and nothing else moves.
    let ideal = 100.0 / after_n as f64;
    println!(
        "sharded {KEYS} keys over {before_n} nodes, then added one; ideally 1/{after_n} of the keys ({ideal:.1}%) move"
    );
    println!(
        "  hash % n     moved {:>6} keys ({:.1}%)",
        modulo_moved,
        percent(modulo_moved)
    );
    println!(
        "  ring         moved {:>6} keys ({:.1}%), {} of them between old nodes",
        ring_moved,
        percent(ring_moved),
        moved_elsewhere
    );
    println!(
        "  jump         moved {:>6} keys ({:.1}%)",
        jump_moved,
        percent(jump_moved)
    );
    failure_and_return(&hashes, NODES + 1)
}

/// MementoHash over `count` nodes: `cache-2` fails, then comes back. Only its keys move while it
/// is away, and each of them returns to it: placement depends on the membership, not on the
/// order of failures.
fn failure_and_return(hashes: &[u64], count: u32) -> Result<(), Box<dyn Error>> {
    let owners = |placement: &Placement<String, Memento>| -> Result<Vec<String>, Box<dyn Error>> {
        hashes
            .iter()
            .map(|&h| {
                placement
                    .node_for_hash(h)
                    .cloned()
                    .ok_or("empty placement".into())
            })
            .collect()
    };
    let mut memento = Placement::from_members(
        Memento::new(),
        (0..count).map(|i| Member::new(format!("cache-{i}"))),
    )?;
    let healthy = owners(&memento)?;
    let failed = String::from("cache-2");
    let weight = memento.remove(&failed)?;
    let during = owners(&memento)?;
    memento.add(failed.clone(), weight)?;
    let after = owners(&memento)?;
    let differ = |a: &[String], b: &[String]| a.iter().zip(b).filter(|(x, y)| x != y).count();
    let moved = differ(&healthy, &during);
    let moved_elsewhere = healthy
        .iter()
        .zip(&during)
        .filter(|(before, now)| before != now && **before != failed)
        .count();
    println!(
        "  memento      {failed} failed: {moved} keys moved ({:.1}%), {moved_elsewhere} of them not {failed}'s; \
         after it came back, {} keys sit elsewhere than before the failure",
        100.0 * moved as f64 / hashes.len() as f64,
        differ(&healthy, &after)
    );
    Ok(())
}

/// The bucket number of the node that owns `hash` (node `cache-i` is bucket `i`).
fn jump_index(placement: &Placement<String, Jump>, hash: u64) -> Result<usize, Box<dyn Error>> {
    let node = placement.node_for_hash(hash).ok_or("empty placement")?;
    Ok(node.trim_start_matches("cache-").parse()?)
}
