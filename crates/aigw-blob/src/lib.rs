//! Object storage for log bodies.
//!
//! This crate owns the [`BlobStore`] interface the shard leader writes request and response
//! bodies through, the on-store format shared by every implementation ([`codec`]: an `AGB1`
//! header and a checksummed zstd frame, decoded under a size bound), the key rules ([`key`]), and
//! two stores: [`FsBlobStore`] (a file per key, atomic and durable writes) and [`MemBlobStore`]
//! (for tests and benches). It must not link `aws-sdk-*`: the S3 store lives in `aigw-blob-s3`,
//! so that only deployments that use S3 pay for it.

pub mod codec;
mod error;
mod fs;
pub mod key;
mod mem;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

pub use codec::{Codec, DEFAULT_MAX_DECODED_BYTES, decode, encode};
pub use error::BlobError;
pub use fs::FsBlobStore;
pub use key::{MAX_KEY_LEN, MAX_SEGMENT_LEN, validate_key};
pub use mem::MemBlobStore;

/// The future returned by every [`BlobStore`] operation.
pub type BlobFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BlobError>> + Send + 'a>>;

/// Bodies written at once by the default [`BlobStore::put_many`].
pub const PUT_MANY_CONCURRENCY: usize = 32;

/// Where log bodies live, keyed by the object key kept in the log index row.
///
/// Dyn-compatible: callers hold an `Arc<dyn BlobStore>`. Every implementation stores bodies in
/// the [`codec`] format and validates keys with [`validate_key`].
pub trait BlobStore: Send + Sync + 'static {
    /// Stores `body` (compressed) under `key`, replacing any body already there. When this
    /// returns `Ok`, the body is durable as far as the store can promise.
    fn put<'a>(&'a self, key: &'a str, body: Bytes) -> BlobFuture<'a, ()>;

    /// Stores several bodies; durable when the future resolves (or none are promised to be,
    /// on error). An invalid key fails the batch before anything is written. Stores that can make a whole batch durable at once override this; the default
    /// stores the bodies a few at a time with [`put`](Self::put).
    fn put_many<'a>(&'a self, items: Vec<(String, Bytes)>) -> BlobFuture<'a, ()> {
        use futures_util::{StreamExt, TryStreamExt};
        Box::pin(async move {
            for (key, _) in &items {
                validate_key(key)?;
            }
            futures_util::stream::iter(items)
                .map(|(key, body)| async move { self.put(&key, body).await })
                .buffer_unordered(PUT_MANY_CONCURRENCY)
                .try_collect::<()>()
                .await
        })
    }

    /// Returns the (decompressed) body stored under `key`, or [`BlobError::NotFound`].
    fn get<'a>(&'a self, key: &'a str) -> BlobFuture<'a, Bytes>;

    /// Removes the bodies stored under `keys`. Keys with no body are fine: deleting is
    /// idempotent. If any key is invalid, nothing is deleted.
    fn delete<'a>(&'a self, keys: &'a [String]) -> BlobFuture<'a, ()>;

    /// Names the store for logs and errors, e.g. `fs:/data/blobs` or `s3://bucket/prefix`.
    /// Never contains credentials.
    fn describe(&self) -> String;
}

/// Runs blocking work (file IO, large codec jobs) on Tokio's blocking pool. A panic in `work` is
/// resumed on the caller; a pool that is shutting down is [`BlobError::Unavailable`] of `store`.
async fn run_blocking<T, F>(store: &str, work: F) -> Result<T, BlobError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, BlobError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(BlobError::Unavailable {
            store: store.to_owned(),
            reason: "the runtime is shutting down".to_owned(),
        }),
    }
}
