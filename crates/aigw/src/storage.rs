//! Opening a node's local storage: the sled database and the body store.

use std::sync::Arc;

use aigw_blob::{BlobStore, Codec, DEFAULT_MAX_DECODED_BYTES, FsBlobStore};
use aigw_blob_s3::{S3BlobStore, S3Settings};
use aigw_config::{BlobKind, Config};
use anyhow::Context;

/// How bodies are framed: stored bodies are at most `max_body_bytes`, and reading one back must
/// never be refused.
pub fn body_codec(config: &Config) -> Codec {
    let max_decoded = usize::try_from(config.proxy.max_body_bytes)
        .unwrap_or(usize::MAX)
        .max(DEFAULT_MAX_DECODED_BYTES);
    Codec::new(max_decoded)
}

/// The sled database under `data_dir` (created if needed).
pub fn open_index(config: &Config) -> anyhow::Result<sled::Db> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    sled::Config::new()
        .path(config.data_dir.join("index"))
        .cache_capacity(config.index_cache_bytes)
        .open()
        .with_context(|| format!("cannot open the index in {}", config.data_dir.display()))
}

/// The body store `[blob]` describes.
pub async fn open_blobs(config: &Config) -> anyhow::Result<Arc<dyn BlobStore>> {
    let blob = &config.blob;
    Ok(match blob.kind {
        BlobKind::Fs => {
            let mut root = if blob.path.is_empty() {
                config.data_dir.join("blobs")
            } else {
                blob.path.clone().into()
            };
            if !blob.prefix.is_empty() {
                root = root.join(blob.prefix.trim_matches('/'));
            }
            Arc::new(FsBlobStore::open(root).context("cannot open the blob directory")?)
        }
        BlobKind::S3 => {
            let optional = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            let store = S3BlobStore::new(S3Settings {
                endpoint: optional(&blob.endpoint),
                bucket: blob.bucket.clone(),
                region: blob.region.clone(),
                path_style: blob.path_style,
                access_key_id: optional(&blob.access_key_id),
                secret_access_key: optional(&blob.secret_access_key),
                prefix: blob.prefix.clone(),
            })
            .await
            .context("cannot configure the S3 blob store")?;
            store
                .ensure_bucket()
                .await
                .context("the S3 bucket is not usable")?;
            Arc::new(store)
        }
    })
}
