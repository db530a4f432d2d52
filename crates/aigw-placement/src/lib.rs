//! Placement for an aigw cluster: which shard group owns a gateway, and which nodes hold a
//! group's replicas.
//!
//! This crate owns the [`ShardMap`] — the versioned node list and the replica placement of
//! every shard group — and the pure, deterministic functions that plan it, rebalance it when
//! nodes come and go, list the replica moves between two maps, and map an (account, gateway)
//! pair to its group. It must not do I/O, spawn tasks, talk to Raft or know how the map is
//! stored or distributed: the account-manager group replicates the map as bytes (it is
//! `serde`), and other crates carry out the moves.
//!
//! # Two levels
//!
//! 1. **Gateway → group** ([`ShardMap::group_for`]): jump consistent hash of the pair's
//!    SHA-256 over the groups `1..=n`. It depends only on the pair and `n`, so every edge
//!    agrees without looking anything up beyond the group count.
//! 2. **Group → nodes** ([`ShardMap::plan`], [`ShardMap::rebalance`]): each Active node puts
//!    virtual nodes on a `hashring` ring; a group walks the ring from its id's hash and takes
//!    the first `replication` distinct physical nodes, the first being the preferred leader.
//!
//! Why two levels rather than hashing gateways straight onto nodes: a shard group is the unit
//! of Raft replication and therefore of moving data. When nodes join, leave or drain, only
//! level 2 changes, and it changes whole replicas of groups — each a Raft membership change
//! (add a learner, promote it, remove the old voter) that copies a group's state by snapshot.
//! Gateways never change group then; they move between groups only when groups are added,
//! and then only the ~(m − n)/m of them that jump hashing sends to the new groups.
//!
//! **Splits** add groups without moving any gateway: the first `hashed_groups` groups take
//! gateways by hash, and a group created by [`ShardMap::split`] gets the next id, is placed by
//! the same ring, and takes one gateway's logs from a point in time on — a *sub-shard*
//! ([`ShardMap::sub_shards`], [`ShardMap::group_at`]). Every group remembers its founders (its
//! replicas when created), which form it; replicas placed later join it.
//!
//! Group 0 ([`METADATA_GROUP`]) is the account manager's group; shard groups start at 1.
//!
//! # Determinism
//!
//! Every hash is SHA-256 over explicitly encoded little-endian bytes, never std's
//! `DefaultHasher`/`RandomState`, so all processes, platforms and versions compute the same
//! placement; tests pin concrete outputs so an accidental change fails.

mod error;
mod hash;
mod map;

#[cfg(test)]
mod tests;

pub use error::PlacementError;
pub use map::{
    DEFAULT_REPLICATION, DEFAULT_VNODES_PER_NODE, GroupPlacement, METADATA_GROUP, NodeInfo,
    NodeState, ReplicaMove, ShardMap, SubShard,
};

/// A physical shard node's id (its Raft node id in every group it serves).
pub type NodeId = u64;

/// A Raft group's id: 0 is the metadata group, shard groups are `1..=n`.
pub type GroupId = u64;
