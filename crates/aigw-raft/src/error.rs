//! The errors this crate's callers handle: starting groups ([`NodeError`]), writing
//! ([`WriteError`]) and linearizable reads ([`ReadError`]).

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};

use crate::types::{GroupId, NodeId};

/// Starting, initializing or stopping a group failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The group's storage could not be opened or read.
    #[error("group {group}: storage: {message}")]
    Storage {
        /// The group whose storage failed.
        group: GroupId,
        /// What failed.
        message: String,
    },
    /// The database could not be flushed to disk.
    #[error("flushing the raft database: {0}")]
    Flush(String),
    /// This node already runs the group.
    #[error("group {0} is already running on this node")]
    AlreadyRunning(GroupId),
    /// The initial members do not include this node.
    #[error("group {group}: initial members {members:?} do not include this node ({node})")]
    NotAMember {
        /// The group being started.
        group: GroupId,
        /// This node.
        node: NodeId,
        /// The members it was given.
        members: Vec<NodeId>,
    },
    /// The Raft configuration is invalid.
    #[error("invalid raft config: {0}")]
    Config(String),
    /// openraft refused to start or initialize the group, or stopped it.
    #[error("group {group}: raft: {message}")]
    Raft {
        /// The group concerned.
        group: GroupId,
        /// openraft's error.
        message: String,
    },
}

/// Where the caller should send its request instead, when this replica is not the leader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LeaderHint {
    /// The leader's node id, when known.
    pub leader_id: Option<NodeId>,
    /// The leader's Raft (gRPC) address, when known.
    pub leader_addr: Option<String>,
}

impl From<ForwardToLeader<NodeId, openraft::BasicNode>> for LeaderHint {
    fn from(f: ForwardToLeader<NodeId, openraft::BasicNode>) -> Self {
        Self {
            leader_id: f.leader_id,
            leader_addr: f.leader_node.map(|n| n.addr),
        }
    }
}

/// A command could not be committed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// This replica is not the group's leader; retry there (the leader may be unknown during an
    /// election).
    #[error("not the leader (leader: {leader_id:?} at {leader_addr:?})")]
    NotLeader {
        /// The leader's node id, when known.
        leader_id: Option<NodeId>,
        /// The leader's Raft (gRPC) address, when known.
        leader_addr: Option<String>,
    },
    /// The command was a membership change openraft refused.
    #[error("membership change refused: {0}")]
    Membership(String),
    /// The group is stopped or failed on this node (storage error, shutdown); nothing will be
    /// committed through it any more.
    #[error("raft group stopped: {0}")]
    Fatal(String),
}

impl From<RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>> for WriteError {
    fn from(e: RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                let hint = LeaderHint::from(f);
                WriteError::NotLeader {
                    leader_id: hint.leader_id,
                    leader_addr: hint.leader_addr,
                }
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                WriteError::Membership(e.to_string())
            }
            RaftError::Fatal(f) => WriteError::Fatal(f.to_string()),
        }
    }
}

/// A linearizable read could not be confirmed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// This replica is not the group's leader; read there.
    #[error("not the leader (leader: {leader_id:?} at {leader_addr:?})")]
    NotLeader {
        /// The leader's node id, when known.
        leader_id: Option<NodeId>,
        /// The leader's Raft (gRPC) address, when known.
        leader_addr: Option<String>,
    },
    /// The leader could not reach a quorum to confirm it still leads.
    #[error("leadership not confirmed by a quorum: {0}")]
    QuorumNotReached(String),
    /// The group is stopped or failed on this node.
    #[error("raft group stopped: {0}")]
    Fatal(String),
}

impl From<RaftError<NodeId, CheckIsLeaderError<NodeId, openraft::BasicNode>>> for ReadError {
    fn from(e: RaftError<NodeId, CheckIsLeaderError<NodeId, openraft::BasicNode>>) -> Self {
        match e {
            RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => {
                let hint = LeaderHint::from(f);
                ReadError::NotLeader {
                    leader_id: hint.leader_id,
                    leader_addr: hint.leader_addr,
                }
            }
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => {
                ReadError::QuorumNotReached(q.to_string())
            }
            RaftError::Fatal(f) => ReadError::Fatal(f.to_string()),
        }
    }
}
