//! Bodies in a map, for tests and benches.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tracing::{Instrument, debug, debug_span};

use crate::{BlobError, BlobFuture, BlobStore, Codec, validate_key};

const NAME: &str = "mem";

/// A [`BlobStore`] in memory. It keeps the encoded form, like every other store, so tests and
/// benches exercise compression and corruption detection too.
#[derive(Debug, Default)]
pub struct MemBlobStore {
    objects: Mutex<HashMap<String, Bytes>>,
    codec: Codec,
}

impl MemBlobStore {
    /// An empty store with the default codec.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `codec` (e.g. another decode limit) instead of the default.
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Stores `stored` under `key` as is, bypassing the encoder: the way tests plant corrupt
    /// objects. The key is not validated either.
    pub fn raw_put(&self, key: impl Into<String>, stored: impl Into<Bytes>) {
        self.objects().insert(key.into(), stored.into());
    }

    /// The keys that have a body, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.objects().keys().cloned().collect();
        keys.sort_unstable();
        keys
    }

    fn objects(&self) -> MutexGuard<'_, HashMap<String, Bytes>> {
        // The map stays consistent even if a holder panicked: every update is one call.
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl BlobStore for MemBlobStore {
    fn put<'a>(&'a self, key: &'a str, body: Bytes) -> BlobFuture<'a, ()> {
        Box::pin(
            async move {
                validate_key(key)?;
                let bytes = body.len();
                let stored = self.codec.encode_async(NAME, body).await?;
                debug!(bytes, stored_bytes = stored.len(), "stored body");
                self.objects().insert(key.to_owned(), stored);
                Ok(())
            }
            .instrument(debug_span!("blob_put", store = NAME, key)),
        )
    }

    fn get<'a>(&'a self, key: &'a str) -> BlobFuture<'a, Bytes> {
        Box::pin(
            async move {
                validate_key(key)?;
                let stored = self.objects().get(key).cloned();
                let Some(stored) = stored else {
                    debug!("body not found");
                    return Err(BlobError::NotFound {
                        key: key.to_owned(),
                    });
                };
                let result = self.codec.decode_async(NAME, key, stored).await;
                match &result {
                    Ok(body) => debug!(bytes = body.len(), "read body"),
                    Err(error) => debug!(%error, "reading body failed"),
                }
                result
            }
            .instrument(debug_span!("blob_get", store = NAME, key)),
        )
    }

    fn delete<'a>(&'a self, keys: &'a [String]) -> BlobFuture<'a, ()> {
        Box::pin(
            async move {
                for key in keys {
                    validate_key(key)?;
                }
                let mut objects = self.objects();
                let removed = keys.iter().filter(|k| objects.remove(*k).is_some()).count();
                debug!(removed, "deleted bodies");
                Ok(())
            }
            .instrument(debug_span!("blob_delete", store = NAME, keys = keys.len())),
        )
    }

    fn describe(&self) -> String {
        NAME.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::codec::tests::{json_body, noise};

    #[tokio::test]
    async fn round_trips_through_the_codec() {
        let store = MemBlobStore::new();
        let bodies = [
            ("e", Vec::new()),
            ("s", b"hi".to_vec()),
            ("n", noise(5 << 20, 5)),
            ("j", json_body(5 << 20)),
        ];
        for (key, body) in &bodies {
            store.put(key, Bytes::from(body.clone())).await.unwrap();
        }
        for (key, body) in &bodies {
            assert_eq!(store.get(key).await.unwrap(), *body);
        }
        let stored = store.objects().get("j").cloned().unwrap();
        assert!(stored.starts_with(&crate::codec::MAGIC));
        assert!(stored.len() * 20 < 5 << 20);
        assert_eq!(store.keys(), ["e", "j", "n", "s"]);
    }

    #[tokio::test]
    async fn overwrite_delete_and_not_found() {
        let store = MemBlobStore::new();
        store.put("k", Bytes::from_static(b"1")).await.unwrap();
        store.put("k", Bytes::from_static(b"2")).await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), "2");
        let keys = ["k".to_owned(), "missing".to_owned()];
        store.delete(&keys).await.unwrap();
        store.delete(&keys).await.unwrap();
        let err = store.get("k").await.unwrap_err();
        assert_eq!(err.to_string(), "body `k` not found in the blob store");
        assert!(store.keys().is_empty());
    }

    #[tokio::test]
    async fn raw_garbage_is_corrupt() {
        let store = MemBlobStore::new();
        store.raw_put("bad", Bytes::from_static(b"\x28\xb5\x2f\xfd garbage"));
        let err = store.get("bad").await.unwrap_err();
        assert!(
            matches!(&err, BlobError::Corrupt { key, .. } if key == "bad"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn invalid_keys_are_refused() {
        let store = MemBlobStore::new();
        let err = store.put("../x", Bytes::new()).await.unwrap_err();
        assert!(matches!(err, BlobError::InvalidKey { .. }));
        let err = store.get("a//b").await.unwrap_err();
        assert!(matches!(err, BlobError::InvalidKey { .. }));
        let err = store.delete(&["/abs".to_owned()]).await.unwrap_err();
        assert!(matches!(err, BlobError::InvalidKey { .. }));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_puts_all_land() {
        let store: Arc<dyn BlobStore> = Arc::new(MemBlobStore::new());
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    store
                        .put(&format!("k{i}"), Bytes::from(json_body(200_000 + i)))
                        .await
                        .unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        for i in 0..64 {
            assert_eq!(
                store.get(&format!("k{i}")).await.unwrap(),
                json_body(200_000 + i)
            );
        }
        assert_eq!(store.describe(), "mem");
    }
}
