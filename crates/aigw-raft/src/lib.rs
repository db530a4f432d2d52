//! aigw's consensus layer.
//!
//! This crate owns consensus for every replicated piece of aigw state: it runs one process-wide
//! [`RaftNode`] hosting many openraft groups (multi-raft: one per log shard, one for the account
//! manager), stores each group's Raft log entries in segment files of its own directory under
//! [`NodeConfig::log_dir`] and its vote and state-machine bookkeeping in trees of the
//! process's single `sled::Db`, and carries Raft messages between nodes over one gRPC service
//! ([`GrpcTransport`] as client, [`RaftServiceImpl`] as server) tagged by group id.
//!
//! **Architecture invariants.** Commands and replies are opaque bytes here: this crate must not
//! know what they mean — the shard log index and the account manager plug their state machines
//! in behind [`App`]. It must not depend on axum or on the edge; its only wire contract is
//! `proto/aigw/raft/v1/raft.proto`. sled's API is used only in `storage::kv`, the segment
//! files only in `storage::segments`; the rest of
//! the crate just passes the process's `sled::Db` handle along (see [`RaftNode::new`]).
//!
//! The in-process fault-injecting transport used by cluster tests lives in `testing`, behind
//! the `testing` feature.

#![warn(missing_docs)]

mod codec;
mod error;
mod network;
mod node;
mod storage;
mod types;

pub use error::{NodeError, ReadError, WriteError};
pub use network::grpc::{
    GrpcConfig, GrpcNetwork, GrpcNetworkFactory, GrpcTransport, RaftServiceImpl,
};
pub use network::{GroupRegistry, Transport};
pub use node::{GroupHandle, NodeConfig, RaftNode, default_raft_config};
pub use storage::kv::flush_db;
pub use storage::log_store::SegmentLogStore;
pub use storage::state_machine::{SledSnapshotBuilder, SledStateMachine};
pub use storage::{group_log_dir, group_tree_name, open_group_storage};
pub use types::{App, AppError, Command, GroupId, NodeId, Reply, TypeConfig};

/// openraft, re-exported so users name the exact version this crate is built on.
pub use openraft;

/// In-process fault-injecting transport for cluster tests.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    pub use crate::network::testing::{
        Router, RouterNetwork, RouterNetworkFactory, RouterTransport,
    };
}
