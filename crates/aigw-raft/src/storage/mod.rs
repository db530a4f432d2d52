//! Raft storage: each group's log entries are records in segment files of their own
//! directory, `{log_dir}/g{group}/` ([`segments`]); its vote and bookkeeping
//! ([`SegmentLogStore`], [`SledStateMachine`]) live in trees of the process-wide sled database,
//! named by [`group_tree_name`]:
//!
//! | tree                | keys                              | values                         |
//! |---------------------|-----------------------------------|--------------------------------|
//! | `g{group}/raft-meta`| `vote`, `committed`, `last_purged`| postcard `Vote` / `LogId`      |
//! | `g{group}/sm-meta`  | `applied`, `snapshot-meta`, `snapshot-data` | postcard records, raw snapshot bytes |
//!
//! The app's own trees are the app's business (by convention also prefixed `g{group}/`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{AnyError, StorageError, StorageIOError};

use crate::error::NodeError;
use crate::types::{App, GroupId, NodeId};

pub(crate) mod kv;
pub(crate) mod log_store;
pub(crate) mod segments;
pub(crate) mod state_machine;

use log_store::SegmentLogStore;
use state_machine::SledStateMachine;

/// The name of the tree `suffix` of group `group`: `g{group}/{suffix}`.
pub fn group_tree_name(group: GroupId, suffix: &str) -> String {
    format!("g{group}/{suffix}")
}

/// The directory of `group`'s log entries under a node's `log_dir`.
pub fn group_log_dir(log_dir: &Path, group: GroupId) -> PathBuf {
    log_dir.join(format!("g{group}"))
}

/// Open (creating if needed) the Raft log store and state machine of `group`: its log entries
/// under `log_dir` (see [`group_log_dir`]), the rest on `db`.
pub fn open_group_storage<A: App>(
    db: &sled::Db,
    log_dir: &Path,
    group: GroupId,
    app: Arc<A>,
) -> Result<(SegmentLogStore, SledStateMachine<A>), NodeError> {
    Ok((
        SegmentLogStore::open(db, group, &group_log_dir(log_dir, group))?,
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
