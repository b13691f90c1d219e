//! Splitting the world between nodes: point → its own cell at a coarse resolution → node.

use std::hash::Hash;

use h3o::{CellIndex, Resolution};
use infra_common::hash::StableHash;
use infra_ring_hash::{Engine, Placement};

use crate::geo::{CellGeometry, EARTH_RADIUS_M, Rings};
use crate::{Error, Point};

/// The most partitions one [`Partitioner::partitions_to_ask`] call names, which bounds its
/// work and memory.
pub const MAX_PARTITIONS_ASKED: usize = 4_096;

/// Assigns every place on Earth to a node: a point's cell at the partition resolution (the
/// *partition*) is hashed onto the nodes of a ring-hash [`Placement`].
///
/// The partition is the coarse cell that contains the point, not the parent of the point's
/// bucket cell: H3 children are not exactly inside their parent (a child hexagon can stick out
/// of its parent's boundary), so a partition made of a parent's children would have a jagged
/// edge that no cell-circle bound describes. With the point's own coarse cell, a partition is
/// exactly that cell's polygon and [`Partitioner::partitions_to_ask`] can bound it.
///
/// Each node runs its own [`Index`](crate::Index) holding the drivers whose positions fall in
/// its partitions. When a driver's update crosses into another partition
/// ([`Partitioner::handoff`]), the old node removes it ([`Index::remove`](crate::Index::remove))
/// and the new node takes the record ([`Index::restore`](crate::Index::restore)), keeping its
/// state and version; a query near a partition edge also asks the nodes named by
/// [`Partitioner::nodes_to_ask`]. A change of membership ([`Partitioner::placement_mut`])
/// moves whole partitions without any driver crossing one: each node then hands the drivers
/// of [`Index::records`](crate::Index::records) that another node now owns to that node.
///
/// ```
/// use infra_geomatch::{Partitioner, Point};
/// use infra_ring_hash::{Placement, Rendezvous};
///
/// let mut nodes = Placement::new(Rendezvous::new());
/// nodes.add("geo-1", 1)?;
/// nodes.add("geo-2", 1)?;
/// let partitioner = Partitioner::new(h3o::Resolution::Four, nodes);
///
/// let rider = Point::new(48.8566, 2.3522)?;
/// let home = partitioner.node_of(rider)?;
/// // Everyone who may hold a driver within 2 km, the rider's own node first.
/// let ask = partitioner.nodes_to_ask(rider, 2_000.0)?;
/// assert_eq!(ask[0], home);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Partitioner<N, E> {
    resolution: Resolution,
    placement: Placement<N, E>,
}

impl<N: std::fmt::Debug, E: Engine> std::fmt::Debug for Partitioner<N, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partitioner")
            .field("resolution", &self.resolution)
            .field("placement", &self.placement)
            .finish()
    }
}

/// A driver's move from one partition to another, with the nodes that own them.
///
/// ```
/// use infra_geomatch::{Partitioner, Point};
/// use infra_ring_hash::{Placement, Ring};
///
/// let mut nodes = Placement::new(Ring::new());
/// nodes.add(1u32, 1)?;
/// let partitioner = Partitioner::new(h3o::Resolution::Two, nodes);
/// let from = Point::new(0.0, 0.0)?;
/// assert!(partitioner.handoff(from, Point::new(0.0, 0.0001)?)?.is_none());
/// let far = partitioner.handoff(from, Point::new(10.0, 10.0)?)?.expect("another partition");
/// assert_ne!(far.from_partition, far.to_partition);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handoff<'a, N> {
    /// The partition the driver leaves.
    pub from_partition: CellIndex,
    /// The partition it enters.
    pub to_partition: CellIndex,
    /// The node owning the partition it leaves.
    pub from_node: &'a N,
    /// The node owning the partition it enters (may be the same node).
    pub to_node: &'a N,
}

impl<'a, N> Handoff<'a, N>
where
    N: PartialEq,
{
    /// Whether the driver's record has to move to another node.
    ///
    /// ```
    /// # use infra_geomatch::{Partitioner, Point};
    /// # use infra_ring_hash::{Placement, Ring};
    /// let mut nodes = Placement::new(Ring::new());
    /// nodes.add("only", 1)?;
    /// let partitioner = Partitioner::new(h3o::Resolution::Two, nodes);
    /// let moved = partitioner.handoff(Point::new(0.0, 0.0)?, Point::new(10.0, 10.0)?)?.unwrap();
    /// assert!(!moved.changes_node()); // one node owns everything
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn changes_node(&self) -> bool {
        self.from_node != self.to_node
    }
}

impl<N, E> Partitioner<N, E>
where
    N: StableHash + Hash + Eq + Clone + std::fmt::Debug,
    E: Engine,
{
    /// Partitions at `resolution` placed on `placement`'s nodes.
    ///
    /// ```
    /// # use infra_geomatch::Partitioner;
    /// # use infra_ring_hash::{Placement, Jump};
    /// let partitioner = Partitioner::new(h3o::Resolution::Three, Placement::<u32, _>::new(Jump::new()));
    /// assert_eq!(partitioner.resolution(), h3o::Resolution::Three);
    /// ```
    pub fn new(resolution: Resolution, placement: Placement<N, E>) -> Self {
        Self {
            resolution,
            placement,
        }
    }

    /// The partition resolution.
    pub fn resolution(&self) -> Resolution {
        self.resolution
    }

    /// The placement, to change the membership. Partitions that change owner keep their
    /// drivers on the old node until it hands them over (see the type's documentation):
    /// [`Partitioner::handoff`] reports only drivers crossing partitions.
    ///
    /// ```
    /// # use infra_geomatch::{Partitioner, Point};
    /// # use infra_ring_hash::{Placement, Ring};
    /// let mut partitioner = Partitioner::new(h3o::Resolution::Three, Placement::new(Ring::new()));
    /// partitioner.placement_mut().add("geo-1", 1)?;
    /// assert_eq!(*partitioner.node_of(Point::new(0.0, 0.0)?)?, "geo-1");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn placement_mut(&mut self) -> &mut Placement<N, E> {
        &mut self.placement
    }

    /// The partition (cell at the partition resolution) containing `point`.
    ///
    /// ```
    /// # use infra_geomatch::{Partitioner, Point};
    /// # use infra_ring_hash::{Placement, Ring};
    /// let partitioner = Partitioner::new(h3o::Resolution::Three, Placement::<u8, _>::new(Ring::new()));
    /// let at = Point::new(10.0, 10.0)?;
    /// assert_eq!(partitioner.partition_of(at), at.cell(h3o::Resolution::Three));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn partition_of(&self, point: Point) -> CellIndex {
        point.cell(self.resolution)
    }

    /// The node owning a partition (a cell at the partition resolution).
    ///
    /// # Errors
    ///
    /// [`Error::NoNodes`] if the placement is empty; [`Error::InvalidConfig`] if `partition`
    /// is not at the partition resolution.
    ///
    /// ```
    /// # use infra_geomatch::{Partitioner, Point};
    /// # use infra_ring_hash::{Placement, Ring};
    /// let mut nodes = Placement::new(Ring::new());
    /// nodes.add("geo-1", 1)?;
    /// let partitioner = Partitioner::new(h3o::Resolution::Three, nodes);
    /// let at = Point::new(10.0, 10.0)?;
    /// assert_eq!(*partitioner.node_of_partition(partitioner.partition_of(at))?, "geo-1");
    /// assert!(partitioner.node_of_partition(at.cell(h3o::Resolution::Nine)).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn node_of_partition(&self, partition: CellIndex) -> Result<&N, Error> {
        if partition.resolution() != self.resolution {
            return Err(Error::InvalidConfig(
                "a partition is a cell at the partition resolution",
            ));
        }
        self.placement
            .node(&u64::from(partition))
            .ok_or(Error::NoNodes)
    }

    /// The node owning the partition containing `point`.
    ///
    /// # Errors
    ///
    /// [`Error::NoNodes`] if the placement is empty.
    ///
    /// ```
    /// # use infra_geomatch::{Error, Partitioner, Point};
    /// # use infra_ring_hash::{Placement, Ring};
    /// let partitioner = Partitioner::new(h3o::Resolution::Three, Placement::<u8, _>::new(Ring::new()));
    /// assert_eq!(partitioner.node_of(Point::new(0.0, 0.0)?), Err(Error::NoNodes));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn node_of(&self, point: Point) -> Result<&N, Error> {
        self.node_of_partition(self.partition_of(point))
    }

    /// Whether a driver moving from `from` to `to` leaves its partition, and if so between
    /// which nodes. `None`: same partition, nothing to hand off.
    ///
    /// # Errors
    ///
    /// [`Error::NoNodes`] if the placement is empty.
    ///
    /// ```
    /// # use infra_geomatch::{Partitioner, Point};
    /// # use infra_ring_hash::{Placement, Ring};
    /// let mut nodes = Placement::new(Ring::new());
    /// nodes.add("a", 1)?;
    /// let partitioner = Partitioner::new(h3o::Resolution::One, nodes);
    /// assert!(partitioner.handoff(Point::new(0.0, 0.0)?, Point::new(0.0, 0.01)?)?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handoff(&self, from: Point, to: Point) -> Result<Option<Handoff<'_, N>>, Error> {
        let (from_partition, to_partition) = (self.partition_of(from), self.partition_of(to));
        if from_partition == to_partition {
            return Ok(None);
        }
        Ok(Some(Handoff {
            from_partition,
            to_partition,
            from_node: self.node_of_partition(from_partition)?,
            to_node: self.node_of_partition(to_partition)?,
        }))
    }

    /// Every partition that may hold a point within `radius_m` of `point`, the point's own
    /// first. Never misses one; may name a partition whose nearest point is slightly beyond the
    /// radius (each cell is bounded by a circle around its center).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRadius`] for a negative or non-finite radius;
    /// [`Error::TooManyPartitions`] if more than [`MAX_PARTITIONS_ASKED`] partitions would be
    /// named (ask every node instead).
    ///
    /// ```
    /// # use infra_geomatch::{Partitioner, Point};
    /// # use infra_ring_hash::{Placement, Ring};
    /// let partitioner = Partitioner::new(h3o::Resolution::Five, Placement::<u8, _>::new(Ring::new()));
    /// let at = Point::new(0.0, 0.0)?;
    /// let nearby = partitioner.partitions_to_ask(at, 0.0)?;
    /// assert_eq!(nearby[0], partitioner.partition_of(at));
    /// assert!(nearby.len() <= 7); // near an edge, the cell's neighbours may be named too
    /// assert!(partitioner.partitions_to_ask(at, 50_000.0)?.len() > 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn partitions_to_ask(&self, point: Point, radius_m: f64) -> Result<Vec<CellIndex>, Error> {
        if !(radius_m.is_finite() && radius_m >= 0.0) {
            return Err(Error::InvalidRadius(radius_m));
        }
        let reach = radius_m / EARTH_RADIUS_M;
        let query = point.unit();
        let origin = self.partition_of(point);
        let mut found = vec![origin];
        // Same ring argument as the index's queries: once a whole ring is beyond the reach,
        // so is everything farther out. Breadth-first rings hold each cell once, however far
        // they reach round the globe; they end empty once it is covered.
        let mut rings = Rings::new(origin);
        loop {
            rings.advance();
            let ring = rings.current();
            if ring.is_empty() {
                break;
            }
            let mut ring_bound = f64::INFINITY;
            for &cell in ring {
                let bound = CellGeometry::of(cell).min_angle_from(&query);
                ring_bound = ring_bound.min(bound);
                if bound <= reach {
                    if found.len() == MAX_PARTITIONS_ASKED {
                        return Err(Error::TooManyPartitions {
                            max: MAX_PARTITIONS_ASKED,
                        });
                    }
                    found.push(cell);
                }
            }
            if ring_bound > reach {
                break;
            }
        }
        Ok(found)
    }

    /// The distinct nodes owning [`Partitioner::partitions_to_ask`], the point's own first.
    ///
    /// # Errors
    ///
    /// As [`Partitioner::partitions_to_ask`], and [`Error::NoNodes`] if the placement is empty.
    ///
    /// ```
    /// # use infra_geomatch::{Partitioner, Point};
    /// # use infra_ring_hash::{Placement, Ring};
    /// let mut nodes = Placement::new(Ring::new());
    /// nodes.add("a", 1)?;
    /// nodes.add("b", 1)?;
    /// let partitioner = Partitioner::new(h3o::Resolution::Six, nodes);
    /// let ask = partitioner.nodes_to_ask(Point::new(0.0, 0.0)?, 30_000.0)?;
    /// assert_eq!(ask.len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn nodes_to_ask(&self, point: Point, radius_m: f64) -> Result<Vec<&N>, Error> {
        let mut nodes: Vec<&N> = Vec::new();
        for partition in self.partitions_to_ask(point, radius_m)? {
            let node = self.node_of_partition(partition)?;
            if !nodes.contains(&node) {
                nodes.push(node);
            }
        }
        Ok(nodes)
    }
}
