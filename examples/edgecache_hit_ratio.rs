//! The edgecache hit-ratio table: our policy beside LRU, moka, quick_cache and Belady's
//! optimum on Zipf workloads and on the OLTP and P3 traces of the ARC paper (Megiddo and Modha,
//! "ARC: A Self-Tuning, Low Overhead Replacement Cache", FAST 2003).
//!
//! ```text
//! cargo run --release -p examples --example edgecache_hit_ratio            # every row, and the plot
//! cargo run --release -p examples --example edgecache_hit_ratio -- oltp p3 # some workloads, no plot
//! ```
//!
//! Prints a Markdown table and, when every workload ran, writes `crates/edgecache/hit_ratio.svg`.

#[path = "../crates/edgecache/tests/support/hit_ratio.rs"]
mod harness;

use std::fmt::Write as _;
use std::path::Path;

/// Keys in the Zipf workloads.
const ZIPF_KEYS: usize = 100_000;
/// Requests per Zipf workload.
const ZIPF_REQUESTS: usize = 2_000_000;
/// The Zipf workloads' seed.
const SEED: u64 = 15;
/// Shards of the sharded edgecache column (the store's default on a 2-core machine is 8).
const SHARDS: usize = 8;

/// The policies, in column order.
const POLICIES: [&str; 7] = [
    "LRU",
    "moka",
    "quick_cache sync",
    "quick_cache unsync",
    "edgecache",
    "edgecache 8 shards",
    "Belady",
];

struct Workload {
    name: String,
    trace: harness::Trace,
    capacities: Vec<usize>,
}

struct Row {
    capacity: usize,
    ratios: [f64; 7],
}

fn workloads(selected: &[String]) -> Vec<Workload> {
    let wanted = |name: &str| selected.is_empty() || selected.iter().any(|s| name.starts_with(s));
    let mut out = Vec::new();
    for exponent in [0.8, 1.0, 1.2] {
        let name = format!("zipf {exponent:.1}");
        if wanted(&name) {
            out.push(Workload {
                trace: harness::zipf(ZIPF_KEYS, exponent, ZIPF_REQUESTS, SEED),
                capacities: vec![ZIPF_KEYS / 200, ZIPF_KEYS / 20, ZIPF_KEYS / 4],
                name,
            });
        }
    }
    let dir = harness::traces_dir();
    if wanted("oltp") {
        out.push(Workload {
            name: "oltp".to_owned(),
            trace: harness::arc_trace(&dir.join("OLTP.lis.zst")),
            capacities: vec![1_000, 5_000, 15_000, 50_000],
        });
    }
    if wanted("p3") {
        out.push(Workload {
            name: "p3".to_owned(),
            trace: harness::arc_trace(&dir.join("P3.lis.zst")),
            capacities: vec![4_096, 32_768, 131_072, 524_288],
        });
    }
    out
}

fn measure(trace: &[u64], capacity: usize) -> [f64; 7] {
    [
        harness::lru(trace, capacity),
        harness::moka(trace, capacity),
        harness::quick_cache_sync(trace, capacity),
        harness::quick_cache_unsync(trace, capacity),
        harness::edgecache(trace, capacity, 1),
        harness::edgecache(trace, capacity, SHARDS),
        harness::belady(trace, capacity),
    ]
}

fn main() {
    let selected: Vec<String> = std::env::args().skip(1).collect();
    let mut results = Vec::new();
    println!(
        "| workload | capacity | {} | best peer | ours − best peer | ours / Belady |",
        POLICIES.join(" | ")
    );
    println!("|{}", " --- |".repeat(POLICIES.len() + 5));
    for workload in workloads(&selected) {
        let mut rows = Vec::new();
        for &capacity in &workload.capacities {
            let ratios = measure(&workload.trace, capacity);
            let best_peer = ratios[1..4].iter().copied().fold(ratios[0], f64::max);
            let ours = ratios[4];
            let cells: Vec<String> = ratios.iter().map(|r| format!("{r:.4}")).collect();
            println!(
                "| {} | {capacity} | {} | {best_peer:.4} | {:+.4}{} | {:.3} |",
                workload.name,
                cells.join(" | "),
                ours - best_peer,
                if ours >= best_peer { "" } else { " ✗" },
                ours / ratios[6],
            );
            rows.push(Row { capacity, ratios });
        }
        results.push((workload.name, rows));
    }
    if selected.is_empty() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/edgecache/hit_ratio.svg");
        std::fs::write(&path, svg(&results)).expect("write the plot");
        eprintln!("wrote {}", path.display());
    }
}

/// One panel per workload, hit ratio against capacity (log scale), one line per policy.
fn svg(results: &[(String, Vec<Row>)]) -> String {
    const PANEL_W: f64 = 300.0;
    const PANEL_H: f64 = 220.0;
    const MARGIN: f64 = 45.0;
    const COLORS: [&str; 7] = [
        "#888888", "#1f77b4", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#000000",
    ];
    let width = MARGIN + results.len() as f64 * (PANEL_W + MARGIN);
    let height = PANEL_H + 2.0 * MARGIN + 20.0 * POLICIES.len() as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (panel, (name, rows)) in results.iter().enumerate() {
        let left = MARGIN + panel as f64 * (PANEL_W + MARGIN);
        let top = MARGIN;
        let (min_c, max_c) = (
            rows[0].capacity as f64,
            rows[rows.len() - 1].capacity as f64,
        );
        let x = |capacity: usize| {
            left + ((capacity as f64).ln() - min_c.ln()) / (max_c.ln() - min_c.ln()) * PANEL_W
        };
        let y = |ratio: f64| top + (1.0 - ratio) * PANEL_H;
        let _ = writeln!(
            out,
            r#"<rect x="{left}" y="{top}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">{name}</text>"#,
            left + PANEL_W / 2.0,
            top - 10.0
        );
        for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
            let _ = writeln!(
                out,
                r##"<text x="{}" y="{}" text-anchor="end">{tick:.2}</text><line x1="{left}" x2="{}" y1="{}" y2="{}" stroke="#dddddd"/>"##,
                left - 4.0,
                y(tick) + 4.0,
                left + PANEL_W,
                y(tick),
                y(tick)
            );
        }
        for row in rows {
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
                x(row.capacity),
                top + PANEL_H + 15.0,
                row.capacity
            );
        }
        for (policy, color) in COLORS.iter().enumerate() {
            let points: Vec<String> = rows
                .iter()
                .map(|row| format!("{:.1},{:.1}", x(row.capacity), y(row.ratios[policy])))
                .collect();
            let dash = if policy == 6 {
                r#" stroke-dasharray="4 3""#
            } else {
                ""
            };
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.6"{dash}/>"#,
                points.join(" ")
            );
        }
    }
    let legend_top = MARGIN + PANEL_H + 35.0;
    for (policy, (name, color)) in POLICIES.iter().zip(COLORS).enumerate() {
        let y = legend_top + 18.0 * policy as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{MARGIN}" x2="{}" y1="{y}" y2="{y}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{name}</text>"#,
            MARGIN + 25.0,
            MARGIN + 32.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}">hit ratio against capacity in entries (log scale); traces: Megiddo and Modha, ARC, FAST 2003</text>"#,
        MARGIN + 200.0,
        legend_top + 4.0
    );
    out.push_str("</svg>\n");
    out
}
