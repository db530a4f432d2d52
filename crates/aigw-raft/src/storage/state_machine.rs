//! The state machine of one group: the [`App`] plus the bookkeeping openraft needs (last
//! applied log id, last membership, the current snapshot).

use std::io::Cursor;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::io_error;
use super::kv::{Batch, KvError, Tree};
use crate::error::NodeError;
use crate::types::{App, AppError, GroupId, NodeId, Reply, TypeConfig};

const APPLIED: &[u8] = b"applied";
const SNAPSHOT_META: &[u8] = b"snapshot-meta";
const SNAPSHOT_DATA: &[u8] = b"snapshot-data";

/// A stored snapshot: its meta and its bytes.
type StoredSnapshot = (SnapshotMeta<NodeId, BasicNode>, Vec<u8>);

/// What has been applied: recorded after every applied batch and with every installed snapshot.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
}

/// The state machine of one group on sled: drives an [`App`] and keeps openraft's bookkeeping
/// in the group's `sm-meta` tree.
///
/// **Invariant (crash safety).** The app's state is the app's to persist; the last applied log
/// id is written *after* the app has applied a batch. After a crash the recorded id may lag the
/// app's state, and openraft re-applies the entries in between — harmless because
/// [`App::apply`] is idempotent. Installing a snapshot restores the app first and records the
/// snapshot's log id second, for the same reason.
///
/// **Snapshots are fuzzy.** [`get_snapshot_builder`](RaftStateMachine::get_snapshot_builder)
/// captures (last applied, membership) in line with `apply`; the builder then calls
/// [`App::snapshot`] on a blocking thread while entries keep being applied, so the snapshot data
/// may contain effects of entries after its `last_log_id`. Whoever installs it re-applies those
/// entries, which idempotency makes correct. The current snapshot (meta and bytes) is stored in
/// the tree, so it survives restarts.
pub struct SledStateMachine<A: App> {
    app: Arc<A>,
    store: Arc<SnapshotStore>,
    applied: Applied,
}

/// The `sm-meta` tree, and the lock that orders snapshot writes (a build finishing late must
/// not replace a newer installed snapshot).
struct SnapshotStore {
    tree: Tree,
    write_lock: Mutex<()>,
}

impl SnapshotStore {
    /// Store `meta` and `data` as the current snapshot unless a newer one is already stored.
    fn save_if_newer(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        data: &[u8],
    ) -> Result<bool, KvError> {
        let _guard = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current: Option<SnapshotMeta<NodeId, BasicNode>> = self.tree.get(SNAPSHOT_META)?;
        if current.is_some_and(|c| c.last_log_id > meta.last_log_id) {
            return Ok(false);
        }
        let mut batch = Batch::default();
        batch.put(SNAPSHOT_META, meta)?;
        batch.put_raw(SNAPSHOT_DATA, data.to_vec());
        self.tree.write(batch)?;
        Ok(true)
    }

    /// Record an installed snapshot as both the applied state and the current snapshot.
    fn save_installed(
        &self,
        applied: &Applied,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        data: Vec<u8>,
    ) -> Result<(), KvError> {
        let _guard = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut batch = Batch::default();
        batch.put(APPLIED, applied)?;
        batch.put(SNAPSHOT_META, meta)?;
        batch.put_raw(SNAPSHOT_DATA, data);
        self.tree.write(batch)
    }

    fn current(&self) -> Result<Option<StoredSnapshot>, KvError> {
        let meta: Option<SnapshotMeta<NodeId, BasicNode>> = self.tree.get(SNAPSHOT_META)?;
        match meta {
            Some(meta) => Ok(Some((
                meta,
                self.tree.get_raw(SNAPSHOT_DATA)?.unwrap_or_default(),
            ))),
            None => Ok(None),
        }
    }
}

impl<A: App> SledStateMachine<A> {
    /// Open (creating if needed) the state machine of `group` on `db`, driving `app`.
    pub fn open(db: &sled::Db, group: GroupId, app: Arc<A>) -> Result<Self, NodeError> {
        let failed = |e: KvError| NodeError::Storage {
            group,
            message: format!("opening state machine: {e}"),
        };
        let tree = Tree::open(db, &super::group_tree_name(group, "sm-meta")).map_err(failed)?;
        let applied = tree.get(APPLIED).map_err(failed)?.unwrap_or_default();
        Ok(Self {
            app,
            store: Arc::new(SnapshotStore {
                tree,
                write_lock: Mutex::new(()),
            }),
            applied,
        })
    }

    /// The app this state machine drives.
    pub fn app(&self) -> &Arc<A> {
        &self.app
    }
}

/// What can fail while the state machine works on a blocking thread.
#[derive(Debug, thiserror::Error)]
enum SmError {
    /// The app refused a committed entry.
    #[error("applying log {0}: {1}")]
    Apply(LogId<NodeId>, #[source] AppError),
    /// The app failed to serialize or restore a snapshot.
    #[error("snapshot: {0}")]
    Snapshot(#[source] AppError),
    /// Our bookkeeping failed.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// The blocking task panicked.
    #[error("state machine task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl SmError {
    /// The error for openraft, which stops the group; `make` says what was being done.
    fn into_storage(
        self,
        make: impl FnOnce(openraft::AnyError) -> StorageIOError<NodeId>,
    ) -> StorageError<NodeId> {
        match &self {
            SmError::Apply(log_id, e) => io_error(|s| StorageIOError::apply(*log_id, s), e),
            _ => io_error(make, &self),
        }
    }
}

/// Run `f` off the async runtime: apps are synchronous and may be slow.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SmError> + Send + 'static,
) -> Result<T, SmError> {
    tokio::task::spawn_blocking(f).await?
}

impl<A: App> RaftStateMachine<TypeConfig> for SledStateMachine<A> {
    type SnapshotBuilder = SledSnapshotBuilder<A>;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let app = Arc::clone(&self.app);
        let store = Arc::clone(&self.store);
        let mut applied = self.applied.clone();
        let (replies, applied) = blocking(move || {
            let mut replies = Vec::with_capacity(entries.len());
            for entry in entries {
                let reply = match entry.payload {
                    EntryPayload::Blank => Reply::default(),
                    EntryPayload::Normal(command) => Reply(
                        app.apply(entry.log_id.index, &command.0)
                            .map_err(|e| SmError::Apply(entry.log_id, e))?,
                    ),
                    EntryPayload::Membership(membership) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                        Reply::default()
                    }
                };
                applied.last_applied = Some(entry.log_id);
                replies.push(reply);
            }
            // After the app: see the crash-safety invariant on `SledStateMachine`.
            store.tree.put(APPLIED, &applied)?;
            Ok((replies, applied))
        })
        .await
        .map_err(|e| e.into_storage(StorageIOError::write_state_machine))?;
        self.applied = applied;
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SledSnapshotBuilder {
            app: Arc::clone(&self.app),
            store: Arc::clone(&self.store),
            applied: self.applied.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let applied = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let (app, store, meta_owned, applied_owned) = (
            Arc::clone(&self.app),
            Arc::clone(&self.store),
            meta.clone(),
            applied.clone(),
        );
        let installed = async {
            blocking(move || {
                // App first, bookkeeping second: see the crash-safety invariant.
                app.restore(&data).map_err(SmError::Snapshot)?;
                Ok(store.save_installed(&applied_owned, &meta_owned, data)?)
            })
            .await?;
            Ok(self.store.tree.flush().await?)
        };
        installed.await.map_err(|e: SmError| {
            e.into_storage(|s| StorageIOError::write_snapshot(Some(meta.signature()), s))
        })?;
        tracing::info!(snapshot = %meta.snapshot_id, "installed snapshot");
        self.applied = applied;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let current = self
            .store
            .current()
            .map_err(|e| io_error(|s| StorageIOError::read_snapshot(None, s), &e))?;
        Ok(current.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Builds one fuzzy snapshot of a group: the applied state captured when it was created, and
/// the app's state serialized later on a blocking thread.
pub struct SledSnapshotBuilder<A: App> {
    app: Arc<A>,
    store: Arc<SnapshotStore>,
    applied: Applied,
}

impl<A: App> RaftSnapshotBuilder<TypeConfig> for SledSnapshotBuilder<A> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let snapshot_id = match self.applied.last_applied {
            Some(log_id) => format!(
                "{}-{}-{}-{nanos}",
                log_id.leader_id.term, log_id.leader_id.node_id, log_id.index
            ),
            None => format!("empty-{nanos}"),
        };
        let meta = SnapshotMeta {
            last_log_id: self.applied.last_applied,
            last_membership: self.applied.membership.clone(),
            snapshot_id,
        };
        let (app, store, meta_owned) =
            (Arc::clone(&self.app), Arc::clone(&self.store), meta.clone());
        let built = async {
            let data = blocking(move || {
                let data = app.snapshot().map_err(SmError::Snapshot)?;
                if !store.save_if_newer(&meta_owned, &data)? {
                    tracing::debug!(snapshot = %meta_owned.snapshot_id, "a newer snapshot was installed meanwhile");
                }
                Ok(data)
            })
            .await?;
            // Logs up to the snapshot are purged next: make it durable first.
            self.store.tree.flush().await?;
            Ok(data)
        };
        let data = built.await.map_err(|e: SmError| {
            e.into_storage(|s| StorageIOError::write_snapshot(Some(meta.signature()), s))
        })?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
