//! The synthetic city's surge map: every H3 cell (resolution 8) of the city coloured by its
//! multiplier, written as an SVG.
//!
//! `cargo run --release -p examples --example geomatch_surge_map -- [path]`
//! (default `target/surge-map.svg`)
//!
//! The city is the one of the `geomatch_city` example (same seed): 5,000 drivers spread
//! evenly, here with 3,000 requests in one five-minute window, three quarters of them around
//! five hot spots. Each driver counts once as supply, each request once as demand; the
//! multiplier is `Surge`'s default: counts smoothed over each cell's neighbours, then the
//! curve 1 up to a demand/supply ratio of 1, 2 at 3, capped at 3. The coarse roll-up
//! (resolution 6) is printed as a table.

use std::error::Error;
use std::fmt::Write as _;

use h3o::{CellIndex, LatLng, Resolution};
use infra_common::ManualClock;
use infra_geomatch::surge::{Surge, SurgeConfig};

#[path = "city.rs"]
mod city;

use city::{CENTRE, City, HALF_SIDE_M, HOT_SPOTS};

const SEED: u64 = 14;
const DRIVERS: usize = 5_000;
const REQUESTS: usize = 3_000;
/// Pixels per meter: the 20 km city is 800 px wide.
const SCALE: f64 = 0.04;
const MARGIN: f64 = 30.0;

/// East and north of the centre in meters, for a position (equirectangular, fine at a
/// city's scale).
fn meters(lat: f64, lng: f64) -> (f64, f64) {
    let m_per_degree = 111_320.0;
    let east = (lng - CENTRE.1) * m_per_degree * CENTRE.0.to_radians().cos();
    let north = (lat - CENTRE.0) * m_per_degree;
    (east, north)
}

fn pixel(east: f64, north: f64) -> (f64, f64) {
    (
        MARGIN + (east + HALF_SIDE_M) * SCALE,
        MARGIN + (HALF_SIDE_M - north) * SCALE,
    )
}

/// Colour of a multiplier from 1 (pale) to `cap` (deep red), through orange.
fn colour(multiplier: f64, cap: f64) -> String {
    let stops = [
        (255.0, 245.0, 235.0),
        (253.0, 141.0, 60.0),
        (127.0, 39.0, 4.0),
    ];
    let t = ((multiplier - 1.0) / (cap - 1.0)).clamp(0.0, 1.0) * 2.0;
    let (from, to, share) = if t <= 1.0 {
        (stops[0], stops[1], t)
    } else {
        (stops[1], stops[2], t - 1.0)
    };
    let mix = |a: f64, b: f64| (a + (b - a) * share).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(from.0, to.0),
        mix(from.1, to.1),
        mix(from.2, to.2)
    )
}

fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/surge-map.svg".to_owned());
    let city = City::new(SEED, DRIVERS, REQUESTS);
    let surge = Surge::new(SurgeConfig::default(), ManualClock::new())?;
    for driver in &city.drivers {
        surge.record_supply(*driver)?;
    }
    for request in &city.requests {
        surge.record_demand(*request)?;
    }
    let cap = surge.config().curve.cap();

    // Every cell whose centre lies in the city's square: a disk around the centre cell wide
    // enough to cover the square's corners (resolution 8 cells are about 0.8 km apart).
    let centre = LatLng::new(CENTRE.0, CENTRE.1)?.to_cell(Resolution::Eight);
    let cells: Vec<CellIndex> = centre
        .grid_disk::<Vec<_>>(20)
        .into_iter()
        .filter(|cell| {
            let at = LatLng::from(*cell);
            let (east, north) = meters(at.lat(), at.lng());
            east.abs() <= HALF_SIDE_M && north.abs() <= HALF_SIDE_M
        })
        .collect();

    let width = 2.0 * MARGIN + 2.0 * HALF_SIDE_M * SCALE;
    let height = width + 70.0;
    let mut svg = String::new();
    writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="13">"#
    )?;
    writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    )?;
    let mut hottest = 1.0f64;
    for &cell in &cells {
        let multiplier = surge.multiplier(cell);
        hottest = hottest.max(multiplier);
        let mut points = String::new();
        for vertex in cell.boundary().iter() {
            let (east, north) = meters(vertex.lat(), vertex.lng());
            let (x, y) = pixel(east, north);
            write!(points, "{x:.1},{y:.1} ")?;
        }
        writeln!(
            svg,
            r##"<polygon points="{}" fill="{}" stroke="#d9d9d9" stroke-width="0.5"><title>{cell} ×{multiplier:.2}</title></polygon>"##,
            points.trim_end(),
            colour(multiplier, cap)
        )?;
    }
    for ((east, north), _, _) in HOT_SPOTS {
        let (x, y) = pixel(east, north);
        writeln!(
            svg,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="none" stroke="#000000" stroke-width="1.5"/>"##
        )?;
    }
    // Legend: a bar from 1 to the cap.
    let top = width + 10.0;
    let steps = 40;
    let bar = width - 2.0 * MARGIN;
    for step in 0..steps {
        let multiplier = 1.0 + (cap - 1.0) * f64::from(step) / f64::from(steps - 1);
        let x = MARGIN + bar * f64::from(step) / f64::from(steps);
        writeln!(
            svg,
            r#"<rect x="{x:.1}" y="{top:.1}" width="{:.1}" height="14" fill="{}"/>"#,
            bar / f64::from(steps) + 0.5,
            colour(multiplier, cap)
        )?;
    }
    for (share, label) in [(0.0, "1.0×"), (0.5, "2.0×"), (1.0, "3.0× (cap)")] {
        let x = MARGIN + bar * share;
        let anchor = if share == 1.0 {
            "end"
        } else if share == 0.0 {
            "start"
        } else {
            "middle"
        };
        writeln!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="{anchor}">{label}</text>"#,
            top + 32.0
        )?;
    }
    writeln!(
        svg,
        r#"<text x="{MARGIN}" y="{:.1}">Surge multiplier per H3 cell (resolution 8), {} drivers, {} requests; circles: hot spots</text>"#,
        top + 54.0,
        DRIVERS,
        REQUESTS
    )?;
    writeln!(svg, "</svg>")?;
    if let Some(parent) = std::path::Path::new(&path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, svg)?;
    println!("wrote {path}: {} cells, hottest ×{hottest:.2}", cells.len());

    println!("\nRoll-up to resolution 6, the five hottest coarse cells:\n");
    println!("| cell | demand | supply | multiplier |");
    println!("| --- | ---: | ---: | ---: |");
    let mut rolled = surge.rollup(Resolution::Six)?;
    rolled.sort_by(|a, b| {
        b.multiplier
            .total_cmp(&a.multiplier)
            .then(a.cell.cmp(&b.cell))
    });
    for coarse in rolled.iter().take(5) {
        println!(
            "| {} | {} | {} | {:.2} |",
            coarse.cell, coarse.counts.demand, coarse.counts.supply, coarse.multiplier
        );
    }
    Ok(())
}
