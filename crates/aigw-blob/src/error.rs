//! The one error type of the blob layer.

/// Why a blob operation failed.
///
/// Messages name the key or the store and what went wrong; they never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No object is stored under the key.
    #[error("object `{key}` not found in the blob store")]
    NotFound {
        /// The key that was looked up.
        key: String,
    },
    /// An object is stored under the key but does not hold what was asked for: a requested
    /// range extends past its end, or a body framed in it does not decode (a bad header, a
    /// damaged, truncated or erased zstd frame, or more data than the configured maximum).
    #[error("object `{key}` in the blob store is corrupt: {reason}")]
    Corrupt {
        /// The key of the object.
        key: String,
        /// What was found, naming the byte range when one was asked for.
        reason: String,
    },
    /// The store could not be reached or failed (IO error, S3 error, timeout). Retrying later
    /// may succeed.
    #[error("blob store `{store}` unavailable: {reason}")]
    Unavailable {
        /// The store, as [`BlobStore::describe`](crate::BlobStore::describe) names it.
        store: String,
        /// What failed, e.g. `S3 endpoint http://127.0.0.1:1 unreachable: connection refused`.
        reason: String,
    },
    /// The key breaks the rules of [`validate_key`](crate::validate_key).
    #[error(
        "invalid blob key `{}`: expected 1 to {max} characters of [A-Za-z0-9/_.-] in `/`-separated \
         segments of at most {max_segment} characters, none empty, `.` or `..`",
        key.escape_debug(),
        max = crate::MAX_KEY_LEN,
        max_segment = crate::key::MAX_SEGMENT_LEN
    )]
    InvalidKey {
        /// The rejected key, cut to [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) characters and `…` when
        /// longer.
        key: String,
    },
}
