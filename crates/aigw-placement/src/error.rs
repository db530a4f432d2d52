//! Why a shard map cannot be built.

use crate::{GroupId, NodeId};

/// Why a shard map cannot be planned, rebalanced or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// `replication` was 0.
    #[error("replication must be at least 1, got 0")]
    ZeroReplication,
    /// A split, or a decoded map's sub-shards, would break the sub-shard invariants.
    #[error("invalid split: {0}")]
    InvalidSplit(String),
    /// `shard_groups` was 0.
    #[error("a shard map needs at least 1 shard group, got 0")]
    NoGroups,
    /// `vnodes_per_node` was 0.
    #[error("vnodes_per_node must be at least 1, got 0")]
    NoVirtualNodes,
    /// Fewer Active nodes than replicas per group, so replicas could not be distinct.
    #[error(
        "{active} active node(s) cannot hold {replication} distinct replicas per group \
         ({draining} more node(s) are draining)"
    )]
    TooFewActiveNodes {
        /// Active nodes given.
        active: usize,
        /// Draining nodes given, which receive no replicas.
        draining: usize,
        /// Replicas wanted per group.
        replication: usize,
    },
    /// Two nodes share an id.
    #[error("node id {id} is listed more than once")]
    DuplicateNodeId {
        /// The repeated id.
        id: NodeId,
    },
    /// Two nodes share a gRPC address.
    #[error("nodes {first} and {second} share the address `{addr}`")]
    DuplicateAddress {
        /// The shared address.
        addr: String,
        /// The node listed first.
        first: NodeId,
        /// The node listed later.
        second: NodeId,
    },
    /// A node has an empty gRPC address.
    #[error("node {id} has an empty address")]
    EmptyAddress {
        /// The node.
        id: NodeId,
    },
    /// A requested replica move does not apply to the map.
    #[error("cannot move a replica of group {group}: {reason}")]
    InvalidMove {
        /// The group.
        group: GroupId,
        /// Why not.
        reason: String,
    },
    /// The map's version cannot be incremented.
    #[error("shard map version {version} cannot be incremented")]
    VersionExhausted {
        /// The current version.
        version: u64,
    },
    /// Decoded group ids are not exactly `1..=n`.
    #[error("shard groups must be numbered 1..={expected_last} without gaps, found group {found}")]
    GroupNumbering {
        /// The id the group should have had.
        expected_last: GroupId,
        /// The id it had.
        found: GroupId,
    },
    /// A decoded node is filed under another id than its own.
    #[error("node {id} is filed under key {key}")]
    NodeKeyMismatch {
        /// The map key.
        key: NodeId,
        /// The node's own id.
        id: NodeId,
    },
    /// A decoded group lists no replica, a replica twice, or an unknown node.
    #[error("group {group} has an invalid replica set {replicas:?}: {reason}")]
    InvalidReplicas {
        /// The group.
        group: GroupId,
        /// Its replicas as decoded.
        replicas: Vec<NodeId>,
        /// What is wrong with them.
        reason: &'static str,
    },
    /// Bytes that are not an encoded map (or encode an invalid one).
    #[error("cannot decode a shard map: {0}")]
    Decode(String),
}
