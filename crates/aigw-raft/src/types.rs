//! The Raft type configuration shared by every group, and the [`App`] contract that state
//! machines implement.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// Identifies a node of the cluster; stable for the node's life.
pub type NodeId = u64;

/// Identifies one Raft group (a log shard or the account manager) across the cluster.
pub type GroupId = u64;

openraft::declare_raft_types!(
    /// openraft's type configuration for every aigw group: opaque byte commands and replies,
    /// `u64` node ids, `BasicNode { addr }` peers, snapshots held in memory.
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// One application command as replicated in the Raft log: bytes the [`App`] encodes and decodes
/// (with prost, for the shard and the account manager). Serialized as a byte string.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// The [`App`]'s answer to one applied command, returned to the writer by the leader.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply(#[serde(with = "serde_bytes")] pub Vec<u8>);

// Commands carry log records: Debug prints their size, never their content.
impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({} bytes)", self.0.len())
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reply({} bytes)", self.0.len())
    }
}

/// A failure of the [`App`] that makes this replica unusable (I/O error, corrupt state).
///
/// A committed command cannot be refused: business-level rejections ("gateway is full") belong
/// in the reply bytes. An `AppError` from [`App::apply`] stops the group on this node (openraft
/// treats it as a storage failure), because skipping a committed entry would fork the replicas.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct AppError(Box<dyn std::error::Error + Send + Sync>);

impl AppError {
    /// Wrap any error, or a message: `AppError::new("snapshot is truncated")`.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

/// The application state machine of one group. Implemented by the shard log index and the
/// account manager.
///
/// Every method is synchronous and runs on a blocking thread (`spawn_blocking`), never on the
/// async runtime. The app owns the durability of its own state (typically trees of the same
/// sled `Db`); this crate records, *after* each applied batch, the last applied log id. A crash
/// between the two means entries are applied again on restart — harmless because `apply` is
/// idempotent. The reverse order is never observed as long as the app's writes are durable no
/// later than the bookkeeping written after them: true when the app writes into the same sled
/// `Db` before returning (sled recovers its single write log in order), or syncs on its own.
pub trait App: Send + Sync + 'static {
    /// Apply one committed command. Must be deterministic and idempotent: re-applying a command
    /// whose effects are already (partially) present must yield the same state (entries may be
    /// re-applied after a crash or on top of a fuzzy snapshot).
    fn apply(&self, index: u64, command: &[u8]) -> Result<Vec<u8>, AppError>;

    /// Serialize the app's state for a snapshot. Called on a blocking thread WHILE apply keeps
    /// running ("fuzzy" snapshot): the result plus re-application of every entry after the
    /// index captured before the call must give the right state.
    fn snapshot(&self) -> Result<Vec<u8>, AppError>;

    /// Replace all state with a snapshot's.
    fn restore(&self, data: &[u8]) -> Result<(), AppError>;
}
