//! The Raft log of one group: entries in segment files, vote, committed and last-purged log
//! ids in sled.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use openraft::entry::RaftEntry;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    BasicNode, Entry, LogId, Membership, OptionalSend, RaftLogReader, StorageError, StorageIOError,
    Vote,
};

use super::io_error;
use super::kv::{KvError, Tree};
use super::segments::{SegmentError, SegmentLog, Unsynced};
use crate::codec;
use crate::error::NodeError;
use crate::types::{GroupId, NodeId, TypeConfig};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// The Raft log of one group. Cheap to clone: clones share the log, and serve as the log
/// readers of replication tasks.
///
/// Entries are postcard records in the group's segment log (`SegmentLog`); the vote, the
/// committed log id and the last purged log id are in the group's `raft-meta` sled tree.
///
/// Durability: `append` reports entries flushed (openraft's `LogFlushed`) only after an
/// `fdatasync` of the segment files written; `save_vote` and `truncate` sync before
/// returning; `purge` makes the purge point durable before deleting a segment.
/// `save_committed` does not sync: losing it in a crash is harmless (the committed index is
/// re-learned from the leader).
#[derive(Clone)]
pub struct SegmentLogStore {
    inner: Arc<Trees>,
}

struct Trees {
    group: GroupId,
    log: Mutex<SegmentLog>,
    meta: Tree,
}

/// What a log operation can fail on.
#[derive(Debug, thiserror::Error)]
enum LogError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
    #[error("log task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl SegmentLogStore {
    /// Open (creating if needed) the log of `group`: its entries in `dir`, the rest on `db`.
    ///
    /// Until this version entries were kept in the sled tree `g{group}/raft-log`; such a log
    /// is moved into `dir` (made durable there before the tree is dropped, so a crash midway
    /// just moves it again).
    pub fn open(db: &sled::Db, group: GroupId, dir: &Path) -> Result<Self, NodeError> {
        let failed = |e: LogError| NodeError::Storage {
            group,
            message: format!("opening raft log: {e}"),
        };
        let meta = Tree::open(db, &super::group_tree_name(group, "raft-meta"))
            .map_err(|e| failed(e.into()))?;
        let purged: Option<LogId<NodeId>> = meta.get(LAST_PURGED).map_err(|e| failed(e.into()))?;
        let mut log =
            SegmentLog::open(dir, purged.map(|p| p.index)).map_err(|e| failed(e.into()))?;
        move_sled_log(db, group, &mut log, purged.map(|p| p.index)).map_err(failed)?;
        Ok(Self {
            inner: Arc::new(Trees {
                group,
                log: Mutex::new(log),
                meta,
            }),
        })
    }

    /// The group this log belongs to.
    pub fn group(&self) -> GroupId {
        self.inner.group
    }

    fn last_purged(&self) -> Result<Option<LogId<NodeId>>, KvError> {
        self.inner.meta.get(LAST_PURGED)
    }

    fn segments(&self) -> std::sync::MutexGuard<'_, SegmentLog> {
        self.inner
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The entries with indexes in `start..end`.
    fn entries(&self, start: u64, end: u64) -> Result<Vec<Entry<TypeConfig>>, LogError> {
        let records = self.segments().read(start, end)?;
        records
            .iter()
            .map(|r| codec::decode(r).map_err(LogError::from))
            .collect()
    }

    /// The last entry's log id, if the log holds any entry.
    fn last_entry_id(&self) -> Result<Option<LogId<NodeId>>, LogError> {
        let Some(end) = self.segments().end() else {
            return Ok(None);
        };
        Ok(self
            .entries(end.saturating_sub(1), end)?
            .pop()
            .map(|e| e.log_id))
    }

    /// Runs `op` on the segments off the async runtime, then syncs what it wrote.
    async fn write_synced(
        &self,
        op: impl FnOnce(&mut SegmentLog) -> Result<Unsynced, SegmentError> + Send + 'static,
    ) -> Result<(), LogError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let unsynced = op(&mut store.segments())?;
            unsynced.sync()
        })
        .await??;
        Ok(())
    }

    /// Writes the group's first entry — `members` as the initial membership at log id 0-0-0,
    /// exactly what `Raft::initialize` writes — when the log has never held anything; returns
    /// whether it did. A founder seeded so is a voter of the group from its first moment, so
    /// it can elect and be elected without first hearing from whichever founder campaigns
    /// first (the entry is the same on every founder, and every leader's log starts with it).
    pub(crate) async fn seed_membership(
        &self,
        members: BTreeMap<NodeId, BasicNode>,
    ) -> Result<bool, String> {
        let seed = async {
            if self.segments().end().is_some() || self.last_purged()?.is_some() {
                return Ok(false);
            }
            let entry =
                Entry::<TypeConfig>::new_membership(LogId::default(), Membership::from(members));
            let record = (entry.log_id.index, codec::encode(&entry)?);
            self.write_synced(move |log| log.append([record])).await?;
            Ok(true)
        };
        seed.await.map_err(|e: LogError| e.to_string())
    }
}

/// Moves a log kept in sled by earlier versions into `log`: written and synced there, then the
/// tree is dropped. A crash before the drop leaves the tree, and the move starts over.
fn move_sled_log(
    db: &sled::Db,
    group: GroupId,
    log: &mut SegmentLog,
    purged: Option<u64>,
) -> Result<(), LogError> {
    let name = super::group_tree_name(group, "raft-log");
    let Some(tree) = Tree::existing(db, &name)? else {
        return Ok(());
    };
    log.clear()?;
    let mut moved = 0;
    let mut batch = Vec::new();
    for record in tree.raw_u64_entries() {
        let (index, bytes) = record?;
        if purged.is_some_and(|p| index <= p) {
            continue;
        }
        batch.push((index, bytes));
        if batch.len() == 256 {
            moved += batch.len();
            log.append(std::mem::take(&mut batch))?.sync()?;
        }
    }
    moved += batch.len();
    log.append(batch)?.sync()?;
    tree.drop_from(db)?;
    super::kv::flush_db_blocking(db)?;
    tracing::info!(
        group,
        entries = moved,
        "moved the raft log out of sled into segment files"
    );
    Ok(())
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(i) => i.saturating_add(1),
        Bound::Excluded(i) => *i,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for SegmentLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let (start, end) = bounds(&range);
        self.entries(start, end)
            .map_err(|e| io_error(StorageIOError::read_logs, &e))
    }
}

impl RaftLogStorage<TypeConfig> for SegmentLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let read = |e: LogError| io_error(StorageIOError::read_logs, &e);
        let last_purged_log_id = self.last_purged().map_err(|e| read(e.into()))?;
        let last = self.last_entry_id().map_err(read)?;
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
        let write = |e: &LogError| io_error(StorageIOError::write_logs, e);
        let records = entries
            .into_iter()
            .map(|entry| Ok((entry.log_id.index, codec::encode(&entry)?)))
            .collect::<Result<Vec<_>, LogError>>()
            .map_err(|e| write(&e))?;
        // Readable once written; durable (and reported so) only after the sync.
        match self.write_synced(move |log| log.append(records)).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write(&e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write_synced(move |log| log.truncate(log_id.index))
            .await
            .map_err(|e| io_error(StorageIOError::write_logs, &e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let purge = async {
            // Durable first: a deleted segment cannot come back, so the purge point must not
            // either.
            self.inner.meta.put(LAST_PURGED, &log_id)?;
            self.inner.meta.flush().await?;
            let store = self.clone();
            tokio::task::spawn_blocking(move || store.segments().purge(log_id.index)).await??;
            Ok(())
        };
        purge
            .await
            .map_err(|e: LogError| io_error(StorageIOError::write_logs, &e))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::types::Command;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command(vec![index as u8; 100])),
        }
    }

    #[tokio::test]
    async fn a_log_kept_in_sled_moves_to_segment_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::open(dir.path().join("db")).expect("sled");
        let group = 7;
        // As earlier versions left it: entries 1..=9 with 1..=3 purged.
        let legacy =
            Tree::open(&db, &super::super::group_tree_name(group, "raft-log")).expect("tree");
        let mut batch = super::super::kv::Batch::default();
        for i in 1..=9 {
            batch.put(&u64::to_be_bytes(i), &entry(i)).expect("put");
        }
        legacy.write(batch).expect("write");
        let meta =
            Tree::open(&db, &super::super::group_tree_name(group, "raft-meta")).expect("meta");
        meta.put(LAST_PURGED, &entry(3).log_id).expect("purged");

        let log_dir = dir.path().join("log");
        for _ in 0..2 {
            let mut store = SegmentLogStore::open(&db, group, &log_dir).expect("open");
            assert!(
                Tree::existing(&db, &super::super::group_tree_name(group, "raft-log"))
                    .expect("look up")
                    .is_none()
            );
            let entries = store.try_get_log_entries(0..).await.expect("read");
            assert_eq!(entries, (4..=9).map(entry).collect::<Vec<_>>());
            let state = store.get_log_state().await.expect("state");
            assert_eq!(state.last_log_id, Some(entry(9).log_id));
            assert_eq!(state.last_purged_log_id, Some(entry(3).log_id));
        }
    }
}
