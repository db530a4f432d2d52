//! Reaching the groups that hold data from a node that does not.
//!
//! This crate owns how an edge (or any node without the data) calls a Raft group: one lazily
//! connected gRPC channel per node, the leader of each group learned from replies (a replica
//! that does not lead says so in [`LEADER_METADATA`](aigw_proto::LEADER_METADATA)) rather than
//! looked up, nodes that just timed out avoided for a few seconds, and transparent retries
//! across leader changes and node failures within a deadline. [`ShardRouter`] implements the
//! same `aigw.shard.v1` `Shard` trait the shards serve, following the current `ShardMap` —
//! logs written to the sub-shard their time falls in, reads merged across a split gateway's
//! sub-shards — over remote groups or, through [`GroupShards`], a node's own; so the edge's
//! log sink and the management API use it unchanged; [`AccountsClient`] does the
//! same for the account manager's `Gateways` and `Cluster` services. [`follow_shard_map`] and
//! [`follow_gateways`] keep the map and the gateways current from watch streams on any
//! account-manager replica, resumed on another when one breaks. It must not keep state on disk,
//! and must not know how shards store logs.
//!
//! Every `aigw.shard.v1` call is safe to retry: ingestion is idempotent by log id, updates set
//! fields, deletions of what is already gone delete nothing. So a call whose outcome is unknown
//! (a timeout, a leader that died mid-call) is simply sent again.

use std::time::Duration;

mod accounts;
mod caller;
mod credentials;
mod follow;
mod remote;
mod router;

pub use accounts::AccountsClient;
pub use credentials::Credentials;
pub use follow::{connect, follow_gateways, follow_shard_map};
pub use router::{GroupShards, ShardRouter};

use caller::Caller;

/// How hard the router tries before it gives up on a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// A call gives up (`UNAVAILABLE`, naming the group and the last error) after this long.
    pub deadline: Duration,
    /// Wait before the first retry that has no leader to go to; doubled each time.
    pub initial_backoff: Duration,
    /// The longest wait between retries.
    pub max_backoff: Duration,
    /// Bound on connecting to a node.
    pub connect_timeout: Duration,
    /// Bound on one attempt.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            // Longer than an election (election timeouts are 150–300 ms by default) plus a
            // leader's first commit, short enough that the edge's log shipper retries the batch.
            deadline: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(2),
        }
    }
}
