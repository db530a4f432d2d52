//! The one error type of the blob layer.

/// Why a blob operation failed.
///
/// Messages name the key or the store and what went wrong; they never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No body is stored under the key.
    #[error("body `{key}` not found in the blob store")]
    NotFound {
        /// The key that was looked up.
        key: String,
    },
    /// A body is stored under the key but cannot be decoded: a bad header, a damaged or
    /// truncated zstd frame, or more data than the configured maximum.
    #[error("body `{key}` in the blob store is corrupt: {reason}")]
    Corrupt {
        /// The key whose body is damaged.
        key: String,
        /// What the decoder found.
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
