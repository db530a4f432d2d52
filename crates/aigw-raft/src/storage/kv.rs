//! The storage boundary: the one module that names sled.
//!
//! Raft storage sees a group's data as a few named [`Tree`]s of the process-wide database, each
//! an ordered map of bytes with typed (postcard) helpers, atomic [`Batch`]es, and an
//! asynchronous [`Tree::flush`] that makes every write before it durable.

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

    /// The tree `name` of `db` if it exists (never creating it).
    pub(crate) fn existing(db: &sled::Db, name: &str) -> Result<Option<Self>, KvError> {
        if db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == name.as_bytes())
        {
            return Self::open(db, name).map(Some);
        }
        Ok(None)
    }

    /// Drops this tree from `db`, with everything in it.
    pub(crate) fn drop_from(self, db: &sled::Db) -> Result<(), KvError> {
        db.drop_tree(self.tree.name())?;
        Ok(())
    }

    /// Every `(index, bytes as stored)` of a tree keyed by big-endian `u64`s, in order.
    pub(crate) fn raw_u64_entries(&self) -> impl Iterator<Item = Result<(u64, Vec<u8>), KvError>> {
        self.tree.iter().map(|item| {
            let (key, value) = item?;
            let key: [u8; 8] = key.as_ref().try_into().map_err(|_| {
                KvError::Sled(sled::Error::Unsupported(format!(
                    "a log key of {} bytes",
                    key.len()
                )))
            })?;
            Ok((u64::from_be_bytes(key), value.to_vec()))
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

    /// Make every write to the database so far durable (fsync). sled flushes the whole
    /// database, so this covers every tree, and the writes of other groups too.
    pub(crate) async fn flush(&self) -> Result<(), KvError> {
        Ok(flush_db(&self.db).await?)
    }
}

/// Make every write to `db` so far durable (fsync), from a blocking context.
pub(crate) fn flush_db_blocking(db: &sled::Db) -> Result<(), KvError> {
    db.flush()?;
    Ok(())
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
    fn u64_keys_read_back_in_numeric_order_and_trees_drop() {
        let db = temp_db();
        let tree = Tree::open(&db, "t").expect("tree");
        let mut batch = Batch::default();
        for i in [256u64, 1, 1 << 40, 255] {
            batch.put_raw(&i.to_be_bytes(), vec![i as u8]);
        }
        tree.write(batch).expect("write");
        let read: Vec<(u64, Vec<u8>)> = tree
            .raw_u64_entries()
            .collect::<Result<_, _>>()
            .expect("read");
        assert_eq!(
            read,
            vec![
                (1, vec![1]),
                (255, vec![255]),
                (256, vec![0]),
                (1 << 40, vec![0])
            ]
        );
        assert!(Tree::existing(&db, "t").expect("look up").is_some());
        tree.drop_from(&db).expect("drop");
        assert!(Tree::existing(&db, "t").expect("look up").is_none());
        assert!(Tree::existing(&db, "never").expect("look up").is_none());
    }
}
