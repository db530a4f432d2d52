//! Log bodies on S3 and S3-compatible services (MinIO, Ceph RGW, moto, ...).
//!
//! This crate owns [`S3BlobStore`], the S3 implementation of [`aigw_blob::BlobStore`]: client
//! set-up (rustls on ring, explicit region, optional custom endpoint and static credentials,
//! bounded timeouts and retries), the mapping of SDK failures onto [`BlobError`], and bucket
//! creation at start-up. It is the only aigw crate that links `aws-sdk-s3`.
//!
//! Like every store it holds opaque objects, byte for byte: bodies are framed into pack objects
//! by `aigw_blob::pack`, above the store, so a pack written here reads back through any other
//! store. Ranged reads are `GetObject` with a `Range` header. S3 cannot change part of an
//! object, so [`erase`](BlobStore::erase) is a read-modify-write: the whole object is read, the
//! ranges zeroed and the object put back. Erases of one object are serialized within the
//! process, so two of them never undo each other; two *processes* erasing the same object at
//! once could still race (the later put would restore ranges the earlier one erased), which
//! aigw avoids by erasing only on the shard leader, one at a time.

mod errors;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use aigw_blob::{BlobError, BlobFuture, BlobStore, ByteRange, validate_key};
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CreateBucketConfiguration, Delete, ObjectIdentifier,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use bytes::Bytes;
use tokio::sync::Mutex;
use tracing::{Instrument, debug, debug_span};

use crate::errors::Op;

/// Time allowed to open a TCP (and TLS) connection to the endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time allowed for one HTTP exchange, from sending the request (body included) to the
/// response headers; covers uploading a 50 MiB body over a slow link.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed for one attempt of an operation.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(90);
/// Time allowed for an operation, all attempts and back-offs included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(120);
/// Attempts per operation (the first one included) for transient failures.
pub const MAX_ATTEMPTS: u32 = 3;
/// Keys per `DeleteObjects` request: the S3 maximum.
pub const DELETE_BATCH: usize = 1000;
/// Locks that serialize erases of one object within the process (see [`erase_lock`]).
const ERASE_STRIPES: usize = 64;

/// Shared by every store of the process, so that even two stores on one bucket serialize their
/// erases of an object. A few dozen mutexes bound the memory whatever the number of keys; two
/// keys on one stripe merely wait for each other.
static ERASE_LOCKS: LazyLock<Vec<Mutex<()>>> =
    LazyLock::new(|| (0..ERASE_STRIPES).map(|_| Mutex::new(())).collect());

/// The lock guarding read-modify-writes of object `object_key` in `bucket`.
fn erase_lock(bucket: &str, object_key: &str) -> &'static Mutex<()> {
    let mut hasher = DefaultHasher::new();
    (bucket, object_key).hash(&mut hasher);
    // The remainder is below ERASE_STRIPES, so it fits in usize.
    &ERASE_LOCKS[(hasher.finish() % ERASE_STRIPES as u64) as usize]
}

/// How to reach the bucket. Mirrors the `s3` fields of aigw's `[blob]` configuration, where an
/// empty `endpoint`, `access_key_id` or `secret_access_key` is `None` here.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000`; `None` means AWS's regional endpoint.
    pub endpoint: Option<String>,
    /// The bucket bodies are stored in.
    pub bucket: String,
    /// The region requests are signed for (and buckets created in).
    pub region: String,
    /// Address buckets by path (`endpoint/bucket/key`), as most non-AWS servers need, instead of
    /// by virtual host (`bucket.endpoint/key`).
    pub path_style: bool,
    /// Static access key id; with `secret_access_key`. `None` for both means the standard AWS
    /// credential chain (environment, profile, web identity, ECS, IMDS).
    pub access_key_id: Option<String>,
    /// Static secret access key; never logged or shown.
    pub secret_access_key: Option<String>,
    /// Prefix put before every key (`prefix/key`); empty for none. Leading and trailing `/`
    /// are ignored; otherwise it follows the key rules of [`validate_key`].
    pub prefix: String,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field(
                "endpoint",
                &self.endpoint.as_deref().map(errors::redact_url),
            )
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// A [`BlobStore`] keeping each blob as an object `prefix/key` in one bucket.
///
/// Cheap to clone (the SDK client is shared).
#[derive(Clone)]
pub struct S3BlobStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Empty, or the configured prefix followed by `/`.
    key_prefix: String,
    region: String,
    /// The endpoint for error messages, without any user info.
    endpoint: String,
    /// `s3://bucket[/prefix]`.
    name: String,
}

impl std::fmt::Debug for S3BlobStore {
    // The SDK client's configuration holds the credentials provider: leave it out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3BlobStore")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl S3BlobStore {
    /// Builds the client for `settings`. No request is sent: an unreachable endpoint shows up
    /// on first use (see [`ensure_bucket`](Self::ensure_bucket) for a start-up check).
    pub async fn new(settings: S3Settings) -> Result<Self, BlobError> {
        let prefix = settings.prefix.trim_matches('/');
        let name = if prefix.is_empty() {
            format!("s3://{}", settings.bucket)
        } else {
            format!("s3://{}/{prefix}", settings.bucket)
        };
        let invalid = |reason: String| BlobError::Unavailable {
            store: name.clone(),
            reason,
        };
        if settings.bucket.is_empty() {
            return Err(invalid("no bucket is configured".to_owned()));
        }
        if settings.region.is_empty() {
            return Err(invalid("no region is configured".to_owned()));
        }
        if !prefix.is_empty() {
            validate_key(prefix)?;
        }
        let endpoint = match settings.endpoint.as_deref() {
            Some(endpoint) => {
                errors::check_endpoint(endpoint).map_err(invalid)?;
                errors::redact_url(endpoint)
            }
            None => format!("AWS S3 ({})", settings.region),
        };
        let credentials = match (&settings.access_key_id, &settings.secret_access_key) {
            (Some(id), Some(secret)) => {
                Some(Credentials::new(id, secret, None, None, "aigw-config"))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "access_key_id is set but secret_access_key is not".to_owned(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "secret_access_key is set but access_key_id is not".to_owned(),
                ));
            }
        };

        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .http_client(http_client)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .read_timeout(READ_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .operation_timeout(OPERATION_TIMEOUT)
                    .build(),
            )
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(100))
                    .with_max_backoff(Duration::from_secs(2)),
            )
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        }
        let sdk_config = loader.load().await;
        let config = aws_sdk_s3::config::Builder::from(&sdk_config)
            .force_path_style(settings.path_style)
            .build();
        debug!(store = %name, %endpoint, path_style = settings.path_style, "S3 blob store configured");
        Ok(Self {
            client: aws_sdk_s3::Client::from_conf(config),
            bucket: settings.bucket,
            key_prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            region: settings.region,
            endpoint,
            name,
        })
    }

    /// The SDK client, for tools and tests that need S3 calls this store does not make.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// The bucket objects are stored in.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The object key a (valid) blob key is stored under: `prefix/key`, or `key` without prefix.
    pub fn object_key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }

    /// Creates the bucket unless it exists; succeeds if it already does (whoever created it, as
    /// long as we may use it). Meant for start-up, where it also proves the endpoint answers and
    /// the credentials work.
    pub async fn ensure_bucket(&self) -> Result<(), BlobError> {
        let span = debug_span!("blob_ensure_bucket", store = %self.name);
        async move {
            let head = self.client.head_bucket().bucket(&self.bucket).send().await;
            match head {
                Ok(_) => {
                    debug!("bucket exists");
                    return Ok(());
                }
                Err(e) if errors::is_missing_bucket(&e) => {}
                Err(e) => return Err(self.map_err(Op::HeadBucket, None, e)),
            }
            let mut create = self.client.create_bucket().bucket(&self.bucket);
            // us-east-1 is the default location and must not be named.
            if self.region != "us-east-1" {
                create = create.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                        .build(),
                );
            }
            match create.send().await {
                Ok(_) => {
                    debug!("bucket created");
                    Ok(())
                }
                Err(e) => {
                    // Lost a race with another creator, or the name is taken: usable if a
                    // second look finds it ours.
                    let create_error = self.map_err(Op::CreateBucket, None, e);
                    match self.client.head_bucket().bucket(&self.bucket).send().await {
                        Ok(_) => Ok(()),
                        Err(_) => Err(create_error),
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    fn map_err<E>(
        &self,
        op: Op,
        key: Option<&str>,
        err: aws_sdk_s3::error::SdkError<E>,
    ) -> BlobError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        errors::map(self, op, key, err)
    }

    async fn put_inner(&self, key: &str, object: Bytes) -> Result<(), BlobError> {
        validate_key(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .content_type("application/octet-stream")
            .body(ByteStream::from(object))
            .send()
            .await
            .map_err(|e| self.map_err(Op::Put, Some(key), e))?;
        Ok(())
    }

    async fn get_inner(&self, key: &str) -> Result<Bytes, BlobError> {
        validate_key(key)?;
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .send()
            .await
            .map_err(|e| self.map_err(Op::Get, Some(key), e))?;
        self.collect(key, output.body).await
    }

    async fn get_range_inner(&self, key: &str, range: ByteRange) -> Result<Bytes, BlobError> {
        validate_key(key)?;
        // An HTTP range cannot be empty (`bytes=a-b` includes b) nor end past u64: such ranges
        // are checked against the object's length instead.
        let Some(last) = range.end().filter(|_| range.len > 0).map(|end| end - 1) else {
            range.check_within(key, self.object_len(key).await?)?;
            return Ok(Bytes::new());
        };
        let sent = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .range(format!("bytes={}-{last}", range.offset))
            .send()
            .await;
        let output = match sent {
            Ok(output) => output,
            // The range starts at or past the end: say how long the object is.
            Err(e) if errors::is_invalid_range(&e) => {
                let object_len = self.object_len(key).await?;
                return Err(range
                    .check_within(key, object_len)
                    .err()
                    .unwrap_or_else(|| BlobError::Corrupt {
                        key: key.to_owned(),
                        reason: format!(
                            "S3 refused {range} as unsatisfiable, though the object is now \
                             {object_len} bytes"
                        ),
                    }));
            }
            Err(e) => return Err(self.map_err(Op::Get, Some(key), e)),
        };
        let total = output.content_range().and_then(errors::content_range_total);
        let bytes = self.collect(key, output.body).await?;
        // A range running past the end comes back cut short (206 with fewer bytes).
        if bytes.len() as u64 != range.len {
            return Err(total
                .and_then(|total| range.check_within(key, total).err())
                .unwrap_or_else(|| BlobError::Corrupt {
                    key: key.to_owned(),
                    reason: format!("S3 returned {} bytes for {range}", bytes.len()),
                }));
        }
        Ok(bytes)
    }

    /// The length of the object under (valid) `key`, by `HeadObject`.
    async fn object_len(&self, key: &str) -> Result<u64, BlobError> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .send()
            .await
            .map_err(|e| self.map_err(Op::Head, Some(key), e))?;
        head.content_length()
            .and_then(|len| u64::try_from(len).ok())
            .ok_or_else(|| BlobError::Unavailable {
                store: self.name.clone(),
                reason: format!(
                    "S3 HeadObject of `{}/{}` at endpoint {} gave no object length",
                    self.bucket,
                    self.object_key(key),
                    self.endpoint
                ),
            })
    }

    /// Reads a response body to the end.
    async fn collect(&self, key: &str, body: ByteStream) -> Result<Bytes, BlobError> {
        Ok(body
            .collect()
            .await
            .map_err(|e| BlobError::Unavailable {
                store: self.name.clone(),
                reason: format!(
                    "reading object `{}` from S3 endpoint {} failed: {}",
                    self.object_key(key),
                    self.endpoint,
                    errors::root_cause(&e)
                ),
            })?
            .into_bytes())
    }

    /// Read-modify-write under the object's lock. Returns whether the object was rewritten.
    async fn erase_inner(&self, key: &str, ranges: &[ByteRange]) -> Result<bool, BlobError> {
        validate_key(key)?;
        let _guard = erase_lock(&self.bucket, &self.object_key(key)).lock().await;
        let object = match self.get_inner(key).await {
            Ok(object) => object,
            Err(BlobError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let object_len = object.len() as u64;
        let spans: Vec<_> = ranges
            .iter()
            .map(|range| range.clamp_to(object_len))
            .filter(|span| !span.is_empty())
            .collect();
        if spans.is_empty() {
            return Ok(false);
        }
        let mut erased = object.to_vec();
        for span in spans {
            // Clamped to an object held in memory, so both ends fit in usize.
            erased[span.start as usize..span.end as usize].fill(0);
        }
        self.put_inner(key, erased.into()).await?;
        Ok(true)
    }

    async fn delete_inner(&self, keys: &[String]) -> Result<(), BlobError> {
        for key in keys {
            validate_key(key)?;
        }
        for chunk in keys.chunks(DELETE_BATCH) {
            let objects = chunk
                .iter()
                .map(|key| {
                    ObjectIdentifier::builder()
                        .key(self.object_key(key))
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.build_error(e))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| self.build_error(e))?;
            let output = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.map_err(Op::Delete, None, e))?;
            // Missing keys are not errors in S3; anything reported here is a real failure.
            let failed = output.errors();
            if let Some(first) = failed.first() {
                return Err(BlobError::Unavailable {
                    store: self.name.clone(),
                    reason: format!(
                        "S3 could not delete {} of {} objects; first `{}`: {} ({})",
                        failed.len(),
                        chunk.len(),
                        first.key().unwrap_or("?"),
                        first.code().unwrap_or("no code"),
                        first.message().unwrap_or("no message"),
                    ),
                });
            }
        }
        Ok(())
    }

    fn build_error(&self, e: aws_sdk_s3::error::BuildError) -> BlobError {
        BlobError::Unavailable {
            store: self.name.clone(),
            reason: format!("cannot build the S3 request: {e}"),
        }
    }
}

impl BlobStore for S3BlobStore {
    fn put<'a>(&'a self, key: &'a str, object: Bytes) -> BlobFuture<'a, ()> {
        let span = debug_span!("blob_put", store = %self.name, key);
        Box::pin(
            async move {
                let started = Instant::now();
                let bytes = object.len();
                let result = self.put_inner(key, object).await;
                match &result {
                    Ok(()) => debug!(
                        bytes,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "stored object"
                    ),
                    Err(error) => debug!(%error, "storing object failed"),
                }
                result
            }
            .instrument(span),
        )
    }

    fn get<'a>(&'a self, key: &'a str) -> BlobFuture<'a, Bytes> {
        let span = debug_span!("blob_get", store = %self.name, key);
        Box::pin(
            async move {
                let started = Instant::now();
                let result = self.get_inner(key).await;
                match &result {
                    Ok(object) => debug!(
                        bytes = object.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "read object"
                    ),
                    Err(error) => debug!(%error, "reading object failed"),
                }
                result
            }
            .instrument(span),
        )
    }

    fn get_range<'a>(&'a self, key: &'a str, range: ByteRange) -> BlobFuture<'a, Bytes> {
        let span = debug_span!(
            "blob_get_range",
            store = %self.name,
            key,
            offset = range.offset,
            len = range.len
        );
        Box::pin(
            async move {
                let started = Instant::now();
                let result = self.get_range_inner(key, range).await;
                match &result {
                    Ok(_) => debug!(
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "read range"
                    ),
                    Err(error) => debug!(%error, "reading range failed"),
                }
                result
            }
            .instrument(span),
        )
    }

    fn delete<'a>(&'a self, keys: &'a [String]) -> BlobFuture<'a, ()> {
        let span = debug_span!("blob_delete", store = %self.name, keys = keys.len());
        Box::pin(
            async move {
                let result = self.delete_inner(keys).await;
                match &result {
                    Ok(()) => debug!("deleted objects"),
                    Err(error) => debug!(%error, "deleting objects failed"),
                }
                result
            }
            .instrument(span),
        )
    }

    fn erase<'a>(&'a self, key: &'a str, ranges: Vec<ByteRange>) -> BlobFuture<'a, ()> {
        let span = debug_span!("blob_erase", store = %self.name, key, ranges = ranges.len());
        Box::pin(
            async move {
                let started = Instant::now();
                let result = self.erase_inner(key, &ranges).await;
                match &result {
                    Ok(rewritten) => debug!(
                        rewritten,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "erased ranges"
                    ),
                    Err(error) => debug!(%error, "erasing ranges failed"),
                }
                result.map(drop)
            }
            .instrument(span),
        )
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> S3Settings {
        S3Settings {
            endpoint: Some("http://key:pw@127.0.0.1:9000".to_owned()),
            bucket: "bodies".to_owned(),
            region: "us-east-1".to_owned(),
            path_style: true,
            access_key_id: Some("AKID".to_owned()),
            secret_access_key: Some("TOPSECRET".to_owned()),
            prefix: "/logs/".to_owned(),
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let shown = format!("{:?}", settings());
        assert!(
            !shown.contains("TOPSECRET") && !shown.contains("pw@"),
            "{shown}"
        );
        assert!(shown.contains("http://127.0.0.1:9000"), "{shown}");
    }

    #[tokio::test]
    async fn builds_without_network_and_maps_keys() {
        let store = S3BlobStore::new(settings()).await.unwrap();
        assert_eq!(store.describe(), "s3://bodies/logs");
        assert_eq!(store.object_key("a/b"), "logs/a/b");
        assert_eq!(store.endpoint, "http://127.0.0.1:9000");
        let store = S3BlobStore::new(S3Settings {
            prefix: String::new(),
            endpoint: None,
            access_key_id: None,
            secret_access_key: None,
            ..settings()
        })
        .await
        .unwrap();
        assert_eq!(store.describe(), "s3://bodies");
        assert_eq!(store.object_key("a/b"), "a/b");
    }

    #[tokio::test]
    async fn rejects_bad_settings() {
        let cases = [
            (
                S3Settings {
                    bucket: String::new(),
                    ..settings()
                },
                "no bucket",
            ),
            (
                S3Settings {
                    region: String::new(),
                    ..settings()
                },
                "no region",
            ),
            (
                S3Settings {
                    secret_access_key: None,
                    ..settings()
                },
                "secret_access_key is not",
            ),
            (
                S3Settings {
                    access_key_id: None,
                    ..settings()
                },
                "access_key_id is not",
            ),
            (
                S3Settings {
                    endpoint: Some("minio:9000".to_owned()),
                    ..settings()
                },
                "not an http",
            ),
        ];
        for (settings, expected) in cases {
            let err = S3BlobStore::new(settings).await.unwrap_err();
            let message = err.to_string();
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains("TOPSECRET"), "{message}");
        }
        let err = S3BlobStore::new(S3Settings {
            prefix: "a/../b".to_owned(),
            ..settings()
        })
        .await
        .unwrap_err();
        assert!(matches!(err, BlobError::InvalidKey { .. }), "{err:?}");
    }
}
