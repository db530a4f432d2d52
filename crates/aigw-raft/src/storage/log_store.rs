//! The Raft log of one group: entries, vote, committed and last-purged log ids.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    BasicNode, Entry, LogId, Membership, OptionalSend, RaftLogReader, StorageError, StorageIOError,
    Vote,
};

use super::io_error;
use super::kv::{Batch, KvError, Tree};
use crate::codec;
use crate::error::NodeError;
use crate::types::{GroupId, NodeId, TypeConfig};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// The Raft log of one group on sled. Cheap to clone: clones share the trees, and serve as the
/// log readers of replication tasks.
///
/// Durability: `append` reports entries flushed (openraft's `LogFlushed`) only after an fsync of
/// the database; `save_vote` and `truncate` fsync before returning. `purge` and
/// `save_committed` do not: losing them in a crash is harmless (purged entries come back and
/// are purged again; the committed index is re-learned from the leader).
#[derive(Clone)]
pub struct SledLogStore {
    inner: Arc<Trees>,
}

struct Trees {
    group: GroupId,
    log: Tree,
    meta: Tree,
}

impl SledLogStore {
    /// Open (creating if needed) the log of `group` on `db`.
    pub fn open(db: &sled::Db, group: GroupId) -> Result<Self, NodeError> {
        let failed = |e: KvError| NodeError::Storage {
            group,
            message: format!("opening raft log: {e}"),
        };
        let open = |suffix| Tree::open(db, &super::group_tree_name(group, suffix));
        let store = Self {
            inner: Arc::new(Trees {
                group,
                log: open("raft-log").map_err(failed)?,
                meta: open("raft-meta").map_err(failed)?,
            }),
        };
        // `purge` records `last_purged` before removing entries; finish one a crash interrupted.
        if let Some(purged) = store.last_purged().map_err(failed)? {
            store.inner.log.remove_in(..=purged.index).map_err(failed)?;
        }
        Ok(store)
    }

    /// The group this log belongs to.
    pub fn group(&self) -> GroupId {
        self.inner.group
    }

    fn last_purged(&self) -> Result<Option<LogId<NodeId>>, KvError> {
        self.inner.meta.get(LAST_PURGED)
    }

    /// Writes the group's first entry — `members` as the initial membership at log id 0-0-0,
    /// exactly what `Raft::initialize` writes — when the log has never held anything; returns
    /// whether it did. A founder seeded so is a voter of the group from its first moment, so
    /// it can elect and be elected without first hearing from whichever founder campaigns
    /// first (the entry is the same on every founder, and every leader's log starts with it).
    pub(crate) async fn seed_membership(
        &self,
        members: BTreeMap<NodeId, BasicNode>,
    ) -> Result<bool, KvError> {
        if self.inner.log.last_value::<Entry<TypeConfig>>()?.is_some()
            || self.last_purged()?.is_some()
        {
            return Ok(false);
        }
        let entry =
            Entry::<TypeConfig>::new_membership(LogId::default(), Membership::from(members));
        let mut batch = Batch::default();
        batch.put(&codec::index_key(entry.log_id.index), &entry)?;
        self.inner.log.write(batch)?;
        self.inner.log.flush().await?;
        Ok(true)
    }
}

impl RaftLogReader<TypeConfig> for SledLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        self.inner
            .log
            .values_in(range)
            .map_err(|e| io_error(StorageIOError::read_logs, &e))
    }
}

impl RaftLogStorage<TypeConfig> for SledLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let read = |e: KvError| io_error(StorageIOError::read_logs, &e);
        let last_purged_log_id = self.last_purged().map_err(read)?;
        let last = self
            .inner
            .log
            .last_value::<Entry<TypeConfig>>()
            .map_err(read)?
            .map(|e| e.log_id);
        let last_log_id = last.max(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let write = |e: KvError| io_error(StorageIOError::write_vote, &e);
        self.inner.meta.put(VOTE, vote).map_err(write)?;
        self.inner.meta.flush().await.map_err(write)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.inner
            .meta
            .get(VOTE)
            .map_err(|e| io_error(StorageIOError::read_vote, &e))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.inner
            .meta
            .put(COMMITTED, &committed)
            .map_err(|e| io_error(StorageIOError::write, &e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let committed: Option<Option<LogId<NodeId>>> = self
            .inner
            .meta
            .get(COMMITTED)
            .map_err(|e| io_error(StorageIOError::read, &e))?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let write = |e: KvError| io_error(StorageIOError::write_logs, &e);
        let mut batch = Batch::default();
        for entry in entries {
            batch
                .put(&codec::index_key(entry.log_id.index), &entry)
                .map_err(write)?;
        }
        self.inner.log.write(batch).map_err(write)?;
        // Readable now; durable (and reported so) only after the fsync.
        match self.inner.log.flush().await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let write = |e: KvError| io_error(StorageIOError::write_logs, &e);
        self.inner.log.remove_in(log_id.index..).map_err(write)?;
        self.inner.log.flush().await.map_err(write)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let write = |e: KvError| io_error(StorageIOError::write_logs, &e);
        // Record first: entries at or below `last_purged` are dead even if their removal is lost.
        self.inner.meta.put(LAST_PURGED, &log_id).map_err(write)?;
        self.inner.log.remove_in(..=log_id.index).map_err(write)?;
        Ok(())
    }
}
