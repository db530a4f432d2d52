//! The storage boundary: the one module that names sled.
//!
//! Raft storage sees a group's data as a few named [`Tree`]s of the process-wide database, each
//! an ordered map of bytes with typed (postcard) helpers, atomic [`Batch`]es, and an
//! asynchronous [`Tree::flush`] that makes every write before it durable.

use std::ops::{Bound, RangeBounds};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, CodecError};

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KvError {
    /// The database failed (I/O, corruption).
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// A stored value does not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// One named tree of the shared database.
#[derive(Clone)]
pub(crate) struct Tree {
    db: sled::Db,
    tree: sled::Tree,
}

/// Writes applied to one tree atomically by [`Tree::write`].
#[derive(Default)]
pub(crate) struct Batch(sled::Batch);

impl Batch {
    /// Set `key` to the encoding of `value`.
    pub(crate) fn put<T: Serialize + ?Sized>(
        &mut self,
        key: &[u8],
        value: &T,
    ) -> Result<(), KvError> {
        self.0.insert(key, codec::encode(value)?);
        Ok(())
    }

    /// Set `key` to `bytes` as they are.
    pub(crate) fn put_raw(&mut self, key: &[u8], bytes: Vec<u8>) {
        self.0.insert(key, bytes);
    }
}

impl Tree {
    /// Open (creating if needed) the tree `name` of `db`.
    pub(crate) fn open(db: &sled::Db, name: &str) -> Result<Self, KvError> {
        Ok(Self {
            db: db.clone(),
            tree: db.open_tree(name)?,
        })
    }

    /// The decoded value under `key`.
    pub(crate) fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, KvError> {
        match self.tree.get(key)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The bytes under `key`, as stored.
    pub(crate) fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    /// Set `key` to the encoding of `value`.
    pub(crate) fn put<T: Serialize + ?Sized>(&self, key: &[u8], value: &T) -> Result<(), KvError> {
        self.tree.insert(key, codec::encode(value)?)?;
        Ok(())
    }

    /// Apply `batch` atomically.
    pub(crate) fn write(&self, batch: Batch) -> Result<(), KvError> {
        self.tree.apply_batch(batch.0)?;
        Ok(())
    }

    /// The decoded values whose keys are the big-endian `u64`s in `range`, in order.
    pub(crate) fn values_in<T: DeserializeOwned>(
        &self,
        range: impl RangeBounds<u64>,
    ) -> Result<Vec<T>, KvError> {
        let mut out = Vec::new();
        for item in self.tree.range(key_range(range)) {
            let (_, value) = item?;
            out.push(codec::decode(&value)?);
        }
        Ok(out)
    }

    /// The decoded value with the greatest key.
    pub(crate) fn last_value<T: DeserializeOwned>(&self) -> Result<Option<T>, KvError> {
        match self.tree.last()? {
            Some((_, value)) => Ok(Some(codec::decode(&value)?)),
            None => Ok(None),
        }
    }

    /// Remove every key that is a big-endian `u64` in `range`, atomically.
    pub(crate) fn remove_in(&self, range: impl RangeBounds<u64>) -> Result<usize, KvError> {
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for key in self.tree.range(key_range(range)).keys() {
            batch.remove(key?);
            removed += 1;
        }
        if removed > 0 {
            self.tree.apply_batch(batch)?;
        }
        Ok(removed)
    }

    /// Make every write to the database so far durable (fsync). sled flushes the whole
    /// database, so this covers every tree, and the writes of other groups too.
    pub(crate) async fn flush(&self) -> Result<(), KvError> {
        Ok(flush_db(&self.db).await?)
    }
}

/// Make every write to `db` so far durable (fsync), from an async context.
///
/// Never sled's own `flush_async`: it runs the flush on sled's small I/O thread pool, the same
/// pool that writes the log buffers the flush waits for. With many groups flushing at once
/// (every append, vote and apply of every group flushes) the flushes took every pool thread
/// and waited on buffer writes that could no longer run — shard nodes hung at startup, about
/// one start in fifteen with 17 groups. A blocking flush on Tokio's blocking pool waits without
/// holding an I/O thread.
pub async fn flush_db(db: &sled::Db) -> Result<(), sled::Error> {
    let db = db.clone();
    match tokio::task::spawn_blocking(move || db.flush()).await {
        Ok(flushed) => flushed.map(|_| ()),
        Err(join) => Err(sled::Error::ReportableBug(format!(
            "the flush task failed: {join}"
        ))),
    }
}

fn key_range(range: impl RangeBounds<u64>) -> (Bound<[u8; 8]>, Bound<[u8; 8]>) {
    let map = |b: Bound<&u64>| match b {
        Bound::Included(i) => Bound::Included(codec::index_key(*i)),
        Bound::Excluded(i) => Bound::Excluded(codec::index_key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    };
    (map(range.start_bound()), map(range.end_bound()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db() -> sled::Db {
        sled::Config::new()
            .temporary(true)
            .open()
            .expect("temporary sled")
    }

    #[test]
    fn index_ranges_select_by_numeric_order() {
        let tree = Tree::open(&temp_db(), "t").expect("tree");
        let mut batch = Batch::default();
        for i in [1u64, 2, 255, 256, 1 << 40] {
            batch.put(&codec::index_key(i), &i).expect("put");
        }
        tree.write(batch).expect("write");

        assert_eq!(
            tree.values_in::<u64>(2..=256).expect("range"),
            vec![2, 255, 256]
        );
        assert_eq!(
            tree.values_in::<u64>(256..).expect("range"),
            vec![256, 1 << 40]
        );
        assert_eq!(tree.last_value::<u64>().expect("last"), Some(1 << 40));
        assert_eq!(tree.remove_in(..=255).expect("remove"), 3);
        assert_eq!(tree.values_in::<u64>(..).expect("all"), vec![256, 1 << 40]);
    }
}
