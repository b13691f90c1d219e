//! A guess at the cell a point lies in, without asking H3.
//!
//! H3's point-to-cell projection is about a quarter of a nearest query's instructions (a
//! smaller share of its time, its tables staying in the caches): the point is projected
//! onto the nearest of twenty icosahedron faces, then its digits are worked out one resolution
//! at a time. Where drivers are dense, most query points fall in a cell some insert or query
//! already found (about 85 % of new points spread evenly over the benchmark's city of a
//! million drivers, about half at 50,000), so the index keeps a table from small squares of latitude and longitude to the cell last found
//! in each. A guess is only a guess: the index uses it only once the cell's bucket geometry
//! proves the point inside (`CellGeometry::surely_contains`), and asks H3 otherwise. A slot
//! shared by two squares, a cell emptied since, or a write racing a read therefore cost a
//! call to H3 and never a wrong cell.

use h3o::{CellIndex, Resolution};
use infra_common::prefetch;
use infra_common::sync::atomic::{AtomicU64, Ordering};

use crate::Point;

/// Meters in a degree of latitude on the sphere the crate measures with.
const METERS_PER_DEGREE: f64 = crate::EARTH_RADIUS_M * std::f64::consts::PI / 180.0;

/// The table of guesses. Each slot holds a cell index (0 when empty: no valid index is 0).
#[derive(Debug)]
pub(crate) struct Locator {
    slots: Box<[AtomicU64]>,
    /// `slots.len() - 1`, the length being a power of two.
    mask: usize,
    /// Squares per degree: a square's side is about a cell's edge, so a point's square holds
    /// mostly its own cell and otherwise one next to it.
    scale: f64,
}

impl Locator {
    /// A table of at least `slots` slots (rounded up to a power of two; 0 keeps no guesses)
    /// for cells at `resolution`.
    pub(crate) fn new(resolution: Resolution, slots: usize) -> Self {
        let len = if slots == 0 {
            0
        } else {
            slots.next_power_of_two()
        };
        Self {
            slots: (0..len).map(|_| AtomicU64::new(0)).collect(),
            mask: len.wrapping_sub(1),
            scale: METERS_PER_DEGREE / resolution.edge_length_m(),
        }
    }

    /// The cell last remembered in `point`'s square (or in another square sharing its slot).
    #[inline]
    pub(crate) fn guess(&self, point: Point) -> Option<CellIndex> {
        let raw = self.slot(point)?.load(Ordering::Relaxed);
        // Only valid indexes are stored, and 0 (empty) is not one.
        CellIndex::try_from(raw).ok()
    }

    /// Asks for `point`'s slot ahead of [`guess`](Self::guess): the table is larger than the
    /// CPU's caches, and the query has its point's unit vector to work out meanwhile.
    #[inline]
    pub(crate) fn prefetch(&self, point: Point) {
        if let Some(slot) = self.slot(point) {
            prefetch::read(slot);
        }
    }

    /// Remembers that `point` lies in `cell`, in place of what its slot held.
    #[inline]
    pub(crate) fn remember(&self, point: Point, cell: CellIndex) {
        if let Some(slot) = self.slot(point)
            && slot.load(Ordering::Relaxed) != u64::from(cell)
        {
            // Written only when it changes: threads finding the same cells keep reading the
            // slot's line from their own caches rather than taking it from each other.
            slot.store(u64::from(cell), Ordering::Relaxed);
        }
    }

    fn slot(&self, point: Point) -> Option<&AtomicU64> {
        if self.slots.is_empty() {
            return None;
        }
        // Latitude and longitude are at most 180 in size, so the products fit an `i64` at any
        // resolution (about 2.2e7 at the finest), and `as` truncates nothing that matters.
        let row = (point.lat() * self.scale).floor() as i64;
        let column = (point.lng() * self.scale).floor() as i64;
        let mixed = (row as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (column as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        let mixed = (mixed ^ (mixed >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        Some(&self.slots[(mixed >> 32) as usize & self.mask])
    }
}

#[cfg(all(test, not(infra_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_cell_is_guessed_for_its_square() {
        let locator = Locator::new(Resolution::Nine, 1 << 10);
        let at = Point::new(40.7128, -74.006).unwrap();
        assert_eq!(locator.guess(at), None, "nothing remembered yet");
        let cell = at.cell(Resolution::Nine);
        locator.remember(at, cell);
        assert_eq!(locator.guess(at), Some(cell));
        // A tenth of a square away, in the same square.
        let step = 0.1 / locator.scale;
        let square_start = (at.lat() * locator.scale).floor() / locator.scale;
        let beside = Point::new(square_start + step, at.lng()).unwrap();
        assert_eq!(locator.guess(beside), Some(cell));
    }

    #[test]
    fn the_last_cell_remembered_in_a_slot_is_its_guess() {
        // One slot: every square shares it.
        let locator = Locator::new(Resolution::Nine, 1);
        let (a, b) = (
            Point::new(1.0, 2.0).unwrap(),
            Point::new(-30.0, 150.0).unwrap(),
        );
        locator.remember(a, a.cell(Resolution::Nine));
        locator.remember(b, b.cell(Resolution::Nine));
        assert_eq!(locator.guess(a), Some(b.cell(Resolution::Nine)));
    }

    #[test]
    fn no_slots_keep_no_guesses() {
        let locator = Locator::new(Resolution::Nine, 0);
        let at = Point::new(0.0, 0.0).unwrap();
        locator.remember(at, at.cell(Resolution::Nine));
        assert_eq!(locator.guess(at), None);
    }

    #[test]
    fn slots_are_rounded_up_to_a_power_of_two() {
        assert_eq!(Locator::new(Resolution::Nine, 3).slots.len(), 4);
        assert_eq!(Locator::new(Resolution::Nine, 4).slots.len(), 4);
    }

    #[test]
    fn every_corner_of_the_globe_has_a_slot_at_every_resolution() {
        for resolution in Resolution::range(Resolution::Zero, Resolution::Fifteen) {
            let locator = Locator::new(resolution, 1 << 4);
            for (lat, lng) in [(90.0, 180.0), (-90.0, -180.0), (0.0, 0.0), (-90.0, 180.0)] {
                let at = Point::new(lat, lng).unwrap();
                let cell = at.cell(resolution);
                locator.remember(at, cell);
                assert_eq!(locator.guess(at), Some(cell), "{resolution} ({lat}, {lng})");
            }
        }
    }
}
