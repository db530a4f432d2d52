//! Raft storage on sled: each group's log ([`SledLogStore`]) and state-machine bookkeeping
//! ([`SledStateMachine`]) live in their own trees of the process-wide database, named by
//! [`group_tree_name`]:
//!
//! | tree                | keys                              | values                         |
//! |---------------------|-----------------------------------|--------------------------------|
//! | `g{group}/raft-log` | log index, `u64` big-endian       | postcard `Entry<TypeConfig>`   |
//! | `g{group}/raft-meta`| `vote`, `committed`, `last_purged`| postcard `Vote` / `LogId`      |
//! | `g{group}/sm-meta`  | `applied`, `snapshot-meta`, `snapshot-data` | postcard records, raw snapshot bytes |
//!
//! The app's own trees are the app's business (by convention also prefixed `g{group}/`).

use std::sync::Arc;

use openraft::{AnyError, StorageError, StorageIOError};

use crate::error::NodeError;
use crate::types::{App, GroupId, NodeId};

pub(crate) mod kv;
pub(crate) mod log_store;
pub(crate) mod state_machine;

use log_store::SledLogStore;
use state_machine::SledStateMachine;

/// The name of the tree `suffix` of group `group`: `g{group}/{suffix}`.
pub fn group_tree_name(group: GroupId, suffix: &str) -> String {
    format!("g{group}/{suffix}")
}

/// Open (creating if needed) the Raft log store and state machine of `group` on `db`.
pub fn open_group_storage<A: App>(
    db: &sled::Db,
    group: GroupId,
    app: Arc<A>,
) -> Result<(SledLogStore, SledStateMachine<A>), NodeError> {
    Ok((
        SledLogStore::open(db, group)?,
        SledStateMachine::open(db, group, app)?,
    ))
}

/// Wrap a storage failure for openraft, which stops the group on any `StorageError`.
pub(crate) fn io_error(
    make: impl FnOnce(AnyError) -> StorageIOError<NodeId>,
    e: &(impl std::error::Error + 'static),
) -> StorageError<NodeId> {
    StorageError::IO {
        source: make(AnyError::new(e)),
    }
}
