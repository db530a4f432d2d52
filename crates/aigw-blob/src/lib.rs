//! Object storage for log bodies.
//!
//! Two layers:
//!
//! - **Stores** ([`BlobStore`]) hold opaque objects under validated keys ([`key`]) and know
//!   nothing of their content: [`put`](BlobStore::put) stores bytes as given,
//!   [`get`](BlobStore::get) and [`get_range`](BlobStore::get_range) return them raw (a ranged
//!   read fetches one body out of a large object without reading the rest),
//!   [`delete`](BlobStore::delete) removes whole objects and [`erase`](BlobStore::erase) makes
//!   byte ranges of an object unrecoverable while keeping its length, for deleting some of the
//!   bodies an object holds. This crate has two stores: [`FsBlobStore`] (a file per key; atomic,
//!   durable writes; erasing punches holes, or writes zeros where the filesystem cannot) and
//!   [`MemBlobStore`] (for tests and benches).
//! - **Packs** ([`pack`]) put the bodies of many logs into one object: each body is framed by
//!   the [`codec`] (an `AGB1` header and a checksummed zstd frame, decoded under a size bound)
//!   and the frames are written back to back; a log row keeps the pack's key and the
//!   [`ByteRange`] of its frame, and [`pack::read_body`] reads and decodes one frame. One object
//!   per ingest batch instead of one per body keeps the filesystem out of the ingest path. An
//!   erased frame reads as zeros, which the codec reports as [`BlobError::Corrupt`].
//!
//! This crate must not link `aws-sdk-*`: the S3 store lives in `aigw-blob-s3` (erasing there is
//! a read-modify-write of the whole object), so that only deployments that use S3 pay for it.

pub mod codec;
mod error;
mod fs;
pub mod key;
mod mem;
pub mod pack;

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;

use bytes::Bytes;

pub use codec::{Codec, DEFAULT_MAX_DECODED_BYTES, decode, encode};
pub use error::BlobError;
pub use fs::FsBlobStore;
pub use key::{MAX_KEY_LEN, MAX_SEGMENT_LEN, validate_key};
pub use mem::MemBlobStore;
pub use pack::{PackWriter, read_body};

/// The future returned by every [`BlobStore`] operation.
pub type BlobFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BlobError>> + Send + 'a>>;

/// Objects written at once by the default [`BlobStore::put_many`].
pub const PUT_MANY_CONCURRENCY: usize = 32;

/// A byte range of a stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteRange {
    /// The first byte, counted from the start of the object.
    pub offset: u64,
    /// How many bytes.
    pub len: u64,
}

impl ByteRange {
    /// The `len` bytes from `offset`.
    pub const fn new(offset: u64, len: u64) -> Self {
        Self { offset, len }
    }

    /// The offset just past the range, or `None` if it does not fit in a `u64`.
    pub const fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.len)
    }

    /// The part of the range inside an object of `object_len` bytes, as offsets (empty when the
    /// range starts at or past the end).
    pub fn clamp_to(&self, object_len: u64) -> Range<u64> {
        let start = self.offset.min(object_len);
        let end = self.offset.saturating_add(self.len).min(object_len);
        start..end
    }

    /// `Ok` if the whole range lies inside an object of `object_len` bytes stored under `key`;
    /// otherwise [`BlobError::Corrupt`] naming the range and the object's length. The one check
    /// behind every store's [`get_range`](BlobStore::get_range).
    pub fn check_within(&self, key: &str, object_len: u64) -> Result<(), BlobError> {
        match self.end() {
            Some(end) if end <= object_len => Ok(()),
            _ => Err(BlobError::Corrupt {
                key: key.to_owned(),
                reason: format!("{self} extend past the end of the {object_len}-byte object"),
            }),
        }
    }
}

impl fmt::Display for ByteRange {
    /// `bytes 10..25`; computed in `u128` so that no range overflows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = u128::from(self.offset) + u128::from(self.len);
        write!(f, "bytes {}..{end}", self.offset)
    }
}

/// Where log bodies live: opaque objects keyed by the object keys kept in the log index rows.
///
/// Dyn-compatible: callers hold an `Arc<dyn BlobStore>`. Every implementation stores objects
/// byte for byte (framing bodies is [`pack`]'s job) and validates keys with [`validate_key`] in
/// every method.
pub trait BlobStore: Send + Sync + 'static {
    /// Stores `object` under `key` byte for byte, replacing any object already there. When this
    /// returns `Ok`, the object is durable as far as the store can promise.
    fn put<'a>(&'a self, key: &'a str, object: Bytes) -> BlobFuture<'a, ()>;

    /// Stores several objects; durable when the future resolves (or none are promised to be,
    /// on error). An invalid key fails the batch before anything is written. Stores that can
    /// make a whole batch durable at once override this; the default stores the objects a few
    /// at a time with [`put`](Self::put).
    fn put_many<'a>(&'a self, items: Vec<(String, Bytes)>) -> BlobFuture<'a, ()> {
        use futures_util::{StreamExt, TryStreamExt};
        Box::pin(async move {
            for (key, _) in &items {
                validate_key(key)?;
            }
            futures_util::stream::iter(items)
                .map(|(key, object)| async move { self.put(&key, object).await })
                .buffer_unordered(PUT_MANY_CONCURRENCY)
                .try_collect::<()>()
                .await
        })
    }

    /// Returns the whole object stored under `key`, raw, or [`BlobError::NotFound`].
    fn get<'a>(&'a self, key: &'a str) -> BlobFuture<'a, Bytes>;

    /// Returns `range` of the object stored under `key`, raw: exactly `range.len` bytes.
    /// [`BlobError::NotFound`] if there is no object; [`BlobError::Corrupt`] (see
    /// [`ByteRange::check_within`]) if the range extends past its end.
    fn get_range<'a>(&'a self, key: &'a str, range: ByteRange) -> BlobFuture<'a, Bytes>;

    /// Removes the objects stored under `keys`. Keys with no object are fine: deleting is
    /// idempotent. If any key is invalid, nothing is deleted.
    fn delete<'a>(&'a self, keys: &'a [String]) -> BlobFuture<'a, ()>;

    /// Makes the bytes of `ranges` of the object under `key` unrecoverable (they read back as
    /// zeros) while keeping the object's length and every other byte: how some of the bodies of
    /// a pack are deleted. Ranges are clamped to the object; an absent object is `Ok`, so
    /// erasing is idempotent. Durable on `Ok`.
    fn erase<'a>(&'a self, key: &'a str, ranges: Vec<ByteRange>) -> BlobFuture<'a, ()>;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_clamp_check_and_display() {
        let r = ByteRange::new(10, 15);
        assert_eq!(r.end(), Some(25));
        assert_eq!(r.to_string(), "bytes 10..25");
        assert_eq!(r.clamp_to(100), 10..25);
        assert_eq!(r.clamp_to(20), 10..20);
        assert_eq!(r.clamp_to(5), 5..5);
        assert!(r.check_within("k", 25).is_ok());
        let err = r.check_within("k", 24).unwrap_err();
        assert!(
            matches!(&err, BlobError::Corrupt { key, reason }
                if key == "k" && reason.contains("bytes 10..25") && reason.contains("24-byte")),
            "{err:?}"
        );
        let huge = ByteRange::new(u64::MAX, 2);
        assert_eq!(huge.end(), None);
        assert_eq!(huge.clamp_to(7), 7..7);
        assert!(huge.check_within("k", u64::MAX).is_err());
        assert_eq!(
            huge.to_string(),
            format!("bytes {}..{}", u64::MAX, u128::from(u64::MAX) + 2)
        );
        assert!(ByteRange::new(3, 0).check_within("k", 3).is_ok());
    }
}
