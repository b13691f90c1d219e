//! The crate's one error type.

use std::fmt;

/// What went wrong with a membership change or a lookup, and what to do about it.
///
/// Nodes are named by their `Debug` rendering, so the error type does not depend on the node
/// type.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A lookup needs at least one node: add a node first.
    EmptyMembership,
    /// A node was given weight 0; remove the node instead.
    ZeroWeight {
        /// The node, rendered with `Debug`.
        node: String,
    },
    /// The node is already a member; use `set_weight` to change its weight.
    DuplicateNode {
        /// The node, rendered with `Debug`.
        node: String,
    },
    /// The node is not a member but hashes like one: their [`StableHash`] encodings are equal
    /// (for example two IPv6 socket addresses differing only in scope id, which the encoding
    /// leaves out), so the engines could not tell them apart and one would get no keys. Give
    /// nodes encodings that differ.
    ///
    /// [`StableHash`]: infra_common::hash::StableHash
    SameStableHash {
        /// The node that was refused, rendered with `Debug`.
        node: String,
        /// The member it collides with, rendered with `Debug`.
        member: String,
    },
    /// The node is not a member, so it cannot be removed or reweighted.
    UnknownNode {
        /// The node, rendered with `Debug`.
        node: String,
    },
    /// The engine places every node with the same share (Jump, FlipHash, Memento): use weight 1,
    /// or an engine that supports weights (ring, rendezvous, Maglev).
    WeightNotSupported {
        /// The engine's name.
        engine: &'static str,
        /// The weight that was asked for.
        weight: u32,
    },
    /// The engine cannot hold more nodes: every engine holds at most [`crate::MAX_NODES`], a
    /// ring at most [`crate::MAX_RING_POINTS`], and a Maglev table at most
    /// `table size / entries_per_node` (see [`crate::MaglevConfig`]).
    TooManyNodes {
        /// The engine's name.
        engine: &'static str,
    },
    /// An engine setting is outside its documented range (from code or from a configuration
    /// file): use a value from `min` to `max`.
    SettingOutOfRange {
        /// The setting, as `engine_config.field`.
        setting: &'static str,
        /// The value that was given.
        value: u64,
        /// The smallest value allowed.
        min: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// A bounded-load capacity factor must be a finite number from 1.0 to
    /// [`crate::MAX_CAPACITY_FACTOR`] (one million).
    InvalidCapacityFactor {
        /// The factor that was given.
        factor: String,
    },
    /// A membership change was called on a shared placement from inside its own
    /// `with_snapshot` closure or another change's closure, on the same thread: it would wait
    /// for itself. Make the change after the closure returns.
    ChangeInsideOwnSection,
}

impl Error {
    pub(crate) fn zero_weight(node: &impl fmt::Debug) -> Self {
        Self::ZeroWeight {
            node: format!("{node:?}"),
        }
    }

    pub(crate) fn duplicate(node: &impl fmt::Debug) -> Self {
        Self::DuplicateNode {
            node: format!("{node:?}"),
        }
    }

    pub(crate) fn same_stable_hash(node: &impl fmt::Debug, member: &impl fmt::Debug) -> Self {
        Self::SameStableHash {
            node: format!("{node:?}"),
            member: format!("{member:?}"),
        }
    }

    pub(crate) fn unknown(node: &impl fmt::Debug) -> Self {
        Self::UnknownNode {
            node: format!("{node:?}"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyMembership => f.write_str("no node to place the key on: add a node first"),
            Self::ZeroWeight { node } => {
                write!(f, "node {node} has weight 0: remove the node instead")
            }
            Self::DuplicateNode { node } => write!(
                f,
                "node {node} is already a member: use set_weight to change it"
            ),
            Self::SameStableHash { node, member } => write!(
                f,
                "node {node} has the same stable hash as member {member} (equal StableHash \
                 encodings), so it would get no keys: give nodes encodings that differ"
            ),
            Self::UnknownNode { node } => write!(f, "node {node} is not a member"),
            Self::WeightNotSupported { engine, weight } => write!(
                f,
                "the {engine} engine gives every node the same share and cannot use weight \
                 {weight}: use weight 1 or a weighted engine (ring, rendezvous, maglev)"
            ),
            Self::TooManyNodes { engine } => {
                write!(f, "the {engine} engine cannot hold more nodes")
            }
            Self::SettingOutOfRange {
                setting,
                value,
                min,
                max,
            } => write!(
                f,
                "{setting} = {value} is out of range: use a value from {min} to {max}"
            ),
            Self::InvalidCapacityFactor { factor } => write!(
                f,
                "capacity factor {factor} is invalid: use a finite number from 1.0 to {}",
                crate::MAX_CAPACITY_FACTOR
            ),
            Self::ChangeInsideOwnSection => f.write_str(
                "membership change called inside this placement's own snapshot or change closure \
                 (it would wait for itself): make the change after the closure returns",
            ),
        }
    }
}

impl std::error::Error for Error {}
