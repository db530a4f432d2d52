//! Objects in a map, for tests and benches.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tracing::{Instrument, debug, debug_span};

use crate::{BlobError, BlobFuture, BlobStore, ByteRange, validate_key};

const NAME: &str = "mem";

/// A [`BlobStore`] in memory, with the same semantics as the others: objects byte for byte,
/// ranged reads, erasing by zeroing.
#[derive(Debug, Default)]
pub struct MemBlobStore {
    objects: Mutex<HashMap<String, Bytes>>,
}

impl MemBlobStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `object` under `key` at once, without validating the key: the way tests plant
    /// objects (corrupt ones included) without an async runtime.
    pub fn raw_put(&self, key: impl Into<String>, object: impl Into<Bytes>) {
        self.objects().insert(key.into(), object.into());
    }

    /// The keys that have an object, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.objects().keys().cloned().collect();
        keys.sort_unstable();
        keys
    }

    fn objects(&self) -> MutexGuard<'_, HashMap<String, Bytes>> {
        // The map stays consistent even if a holder panicked: every update is one call.
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn object(&self, key: &str) -> Result<Bytes, BlobError> {
        self.objects()
            .get(key)
            .cloned()
            .ok_or_else(|| BlobError::NotFound {
                key: key.to_owned(),
            })
    }
}

impl BlobStore for MemBlobStore {
    fn put<'a>(&'a self, key: &'a str, object: Bytes) -> BlobFuture<'a, ()> {
        Box::pin(
            async move {
                validate_key(key)?;
                debug!(bytes = object.len(), "stored object");
                self.objects().insert(key.to_owned(), object);
                Ok(())
            }
            .instrument(debug_span!("blob_put", store = NAME, key)),
        )
    }

    fn get<'a>(&'a self, key: &'a str) -> BlobFuture<'a, Bytes> {
        Box::pin(
            async move {
                validate_key(key)?;
                let result = self.object(key);
                match &result {
                    Ok(object) => debug!(bytes = object.len(), "read object"),
                    Err(error) => debug!(%error, "reading object failed"),
                }
                result
            }
            .instrument(debug_span!("blob_get", store = NAME, key)),
        )
    }

    fn get_range<'a>(&'a self, key: &'a str, range: ByteRange) -> BlobFuture<'a, Bytes> {
        Box::pin(
            async move {
                validate_key(key)?;
                let object = self.object(key)?;
                range.check_within(key, object.len() as u64)?;
                // In bounds of an in-memory object, so both fit in usize.
                let span = range.clamp_to(object.len() as u64);
                Ok(object.slice(span.start as usize..span.end as usize))
            }
            .instrument(debug_span!(
                "blob_get_range",
                store = NAME,
                key,
                offset = range.offset,
                len = range.len
            )),
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
                debug!(removed, "deleted objects");
                Ok(())
            }
            .instrument(debug_span!("blob_delete", store = NAME, keys = keys.len())),
        )
    }

    fn erase<'a>(&'a self, key: &'a str, ranges: Vec<ByteRange>) -> BlobFuture<'a, ()> {
        let span = debug_span!("blob_erase", store = NAME, key, ranges = ranges.len());
        Box::pin(
            async move {
                validate_key(key)?;
                // Under the lock throughout, so concurrent erases of one object compose.
                let mut objects = self.objects();
                let Some(object) = objects.get_mut(key) else {
                    debug!("nothing to erase");
                    return Ok(());
                };
                let mut erased = object.to_vec();
                for range in &ranges {
                    let span = range.clamp_to(erased.len() as u64);
                    erased[span.start as usize..span.end as usize].fill(0);
                }
                *object = erased.into();
                debug!("erased ranges");
                Ok(())
            }
            .instrument(span),
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
    async fn round_trips_objects_byte_for_byte() {
        let store = MemBlobStore::new();
        let objects = [
            ("e", Vec::new()),
            ("s", b"hi".to_vec()),
            ("n", noise(5 << 20, 5)),
            ("j", json_body(5 << 20)),
        ];
        for (key, object) in &objects {
            store.put(key, Bytes::from(object.clone())).await.unwrap();
        }
        for (key, object) in &objects {
            assert_eq!(store.get(key).await.unwrap(), *object);
        }
        assert_eq!(store.keys(), ["e", "j", "n", "s"]);
        // Planted objects read back as they are.
        store.raw_put("raw", Bytes::from_static(b"\x28\xb5\x2f\xfd garbage"));
        assert_eq!(
            store.get("raw").await.unwrap(),
            &b"\x28\xb5\x2f\xfd garbage"[..]
        );
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
        assert_eq!(err.to_string(), "object `k` not found in the blob store");
        assert!(store.keys().is_empty());
    }

    #[tokio::test]
    async fn get_range_is_exact_bounded_and_not_found_when_missing() {
        let store = MemBlobStore::new();
        let object = noise(100_000, 3);
        store.put("p", Bytes::from(object.clone())).await.unwrap();
        for (offset, len) in [(0, 100_000), (1, 1), (99_000, 1_000), (100_000, 0)] {
            let got = store
                .get_range("p", ByteRange::new(offset, len))
                .await
                .unwrap();
            assert_eq!(got, object[offset as usize..(offset + len) as usize]);
        }
        for range in [ByteRange::new(99_999, 2), ByteRange::new(u64::MAX, 1)] {
            let err = store.get_range("p", range).await.unwrap_err();
            assert!(
                matches!(&err, BlobError::Corrupt { key, reason }
                    if key == "p" && reason.contains("100000-byte")),
                "{err:?}"
            );
        }
        let err = store
            .get_range("missing", ByteRange::new(0, 1))
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::NotFound { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn erase_zeroes_ranges_and_keeps_the_rest() {
        let store = MemBlobStore::new();
        let object = noise(10_000, 4);
        store.put("p", Bytes::from(object.clone())).await.unwrap();
        let ranges = vec![
            ByteRange::new(0, 10),
            ByteRange::new(5_000, 100),
            ByteRange::new(9_990, 1_000),
            ByteRange::new(u64::MAX, 5),
        ];
        store.erase("p", ranges.clone()).await.unwrap();
        store.erase("p", ranges).await.unwrap();
        let mut expected = object;
        expected[..10].fill(0);
        expected[5_000..5_100].fill(0);
        expected[9_990..].fill(0);
        assert!(store.get("p").await.unwrap() == expected);
        store
            .erase("missing", vec![ByteRange::new(0, 1)])
            .await
            .unwrap();
        assert_eq!(store.keys(), ["p"], "erasing creates nothing");
    }

    #[tokio::test]
    async fn invalid_keys_are_refused() {
        let store = MemBlobStore::new();
        let err = store.put("../x", Bytes::new()).await.unwrap_err();
        assert!(matches!(err, BlobError::InvalidKey { .. }));
        let err = store.get("a//b").await.unwrap_err();
        assert!(matches!(err, BlobError::InvalidKey { .. }));
        let err = store
            .get_range("a//b", ByteRange::new(0, 0))
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::InvalidKey { .. }));
        let err = store.erase("./x", Vec::new()).await.unwrap_err();
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
