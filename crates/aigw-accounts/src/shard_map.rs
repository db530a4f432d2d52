//! The cluster's shard map as replicated state: the stored bytes, a compare-and-set on the
//! version, and a watch channel that every applied version is published on.

use std::sync::Arc;

use aigw_placement::ShardMap;
use sled::Tree;
use tokio::sync::watch;

use crate::command::{Applied, PutShardMap, Status};

/// The one key of the tree.
const KEY: &[u8] = b"shard_map";

/// Why the stored shard map cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ShardMapError {
    /// sled failed.
    #[error("shard map storage failed: {0}")]
    Storage(#[from] sled::Error),
    /// Stored bytes do not decode.
    #[error("the stored shard map is corrupt: {0}")]
    Corrupt(#[from] aigw_placement::PlacementError),
}

/// The shard map of the cluster, as this replica has applied it.
#[derive(Debug, Clone)]
pub struct ShardMapStore {
    tree: Tree,
    current: Arc<watch::Sender<Option<Arc<ShardMap>>>>,
}

impl ShardMapStore {
    /// Opens the store kept in `tree`.
    pub fn open(tree: Tree) -> Result<Self, ShardMapError> {
        let stored = match tree.get(KEY)? {
            Some(bytes) => Some(Arc::new(ShardMap::from_bytes(&bytes)?)),
            None => None,
        };
        Ok(Self {
            tree,
            current: Arc::new(watch::channel(stored).0),
        })
    }

    /// The current map, if one was ever put.
    pub fn current(&self) -> Option<Arc<ShardMap>> {
        self.current.borrow().clone()
    }

    /// The current map now and every later one as it is applied.
    pub fn watch(&self) -> watch::Receiver<Option<Arc<ShardMap>>> {
        self.current.subscribe()
    }

    fn version(&self) -> u64 {
        self.current().map_or(0, |m| m.version())
    }

    /// Applies a put: stored when the versions line up, else [`Status::Conflict`]. Decoding is
    /// deterministic, so every replica reaches the same verdict.
    pub fn apply(&self, put: PutShardMap) -> Result<Applied, ShardMapError> {
        let current = self.version();
        let next = ShardMap::from_bytes(&put.map).ok().filter(|map| {
            put.expected_version == current && map.version() == current.saturating_add(1)
        });
        let Some(map) = next else {
            return Ok(Applied {
                status: Status::Conflict as i32,
                shard_map_version: current,
                ..Applied::default()
            });
        };
        self.tree.insert(KEY, put.map)?;
        let version = map.version();
        self.current.send_replace(Some(Arc::new(map)));
        Ok(Applied {
            status: Status::Ok as i32,
            shard_map_version: version,
            ..Applied::default()
        })
    }

    /// The stored bytes, for a snapshot (empty: no map).
    pub fn snapshot(&self) -> Result<Vec<u8>, ShardMapError> {
        Ok(self.tree.get(KEY)?.map(|v| v.to_vec()).unwrap_or_default())
    }

    /// Replaces the state with a snapshot's.
    pub fn restore(&self, bytes: &[u8]) -> Result<(), ShardMapError> {
        if bytes.is_empty() {
            self.tree.remove(KEY)?;
            self.current.send_replace(None);
            return Ok(());
        }
        let map = ShardMap::from_bytes(bytes)?;
        self.tree.insert(KEY, bytes)?;
        self.current.send_replace(Some(Arc::new(map)));
        Ok(())
    }
}
