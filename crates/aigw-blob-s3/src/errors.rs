//! SDK failures as [`BlobError`]s that say what failed, without credentials.

use std::error::Error;

use aigw_blob::BlobError;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::head_bucket::HeadBucketError;

use crate::{ATTEMPT_TIMEOUT, OPERATION_TIMEOUT, S3BlobStore};

/// The S3 operations the store sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Put,
    Get,
    Head,
    Delete,
    HeadBucket,
    CreateBucket,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "PutObject",
            Op::Get => "GetObject",
            Op::Head => "HeadObject",
            Op::Delete => "DeleteObjects",
            Op::HeadBucket => "HeadBucket",
            Op::CreateBucket => "CreateBucket",
        }
    }
}

/// Maps a failed `op` (on blob `key`, if it concerns one) to a [`BlobError`]: a missing key on
/// `GetObject` or `HeadObject` is [`BlobError::NotFound`], everything else
/// [`BlobError::Unavailable`] naming the endpoint, operation and object. (A `HeadObject` answer
/// has no body, so a missing bucket is indistinguishable from a missing key there.)
pub(crate) fn map<E>(store: &S3BlobStore, op: Op, key: Option<&str>, err: SdkError<E>) -> BlobError
where
    E: ProvideErrorMetadata + Error + 'static,
{
    let target = match key {
        Some(key) => format!("`{}/{}`", store.bucket, store.object_key(key)),
        None => format!("bucket `{}`", store.bucket),
    };
    let endpoint = &store.endpoint;
    let verb = op.name();
    let reason = match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code();
            if let (Op::Get | Op::Head, Some(key)) = (op, key)
                && (code == Some("NoSuchKey") || (status == 404 && code != Some("NoSuchBucket")))
            {
                return BlobError::NotFound {
                    key: key.to_owned(),
                };
            }
            let mut reason = format!(
                "S3 {verb} of {target} failed with HTTP {status}: {}",
                code.unwrap_or("no error code")
            );
            if let Some(message) = service.err().message() {
                reason.push_str(&format!(" ({message})"));
            }
            reason
        }
        SdkError::DispatchFailure(dispatch) if dispatch.is_timeout() => format!(
            "S3 endpoint {endpoint} timed out during {verb} of {target}: {}",
            root_cause(&err)
        ),
        SdkError::DispatchFailure(dispatch) if dispatch.is_io() => {
            format!("S3 endpoint {endpoint} unreachable: {}", root_cause(&err))
        }
        // E.g. no credentials could be loaded. The chain skips "dispatch failure: other".
        SdkError::DispatchFailure(_) => format!(
            "S3 {verb} of {target} could not be sent to endpoint {endpoint}: {}",
            chain(&err, 2)
        ),
        SdkError::TimeoutError(_) => format!(
            "S3 {verb} of {target} at endpoint {endpoint} timed out (limits: {}s per attempt, \
             {}s in all)",
            ATTEMPT_TIMEOUT.as_secs(),
            OPERATION_TIMEOUT.as_secs()
        ),
        SdkError::ResponseError(_) => format!(
            "S3 endpoint {endpoint} sent an unreadable response to {verb} of {target}: {}",
            chain(&err, 1)
        ),
        // Construction failures: no credentials found, an unusable endpoint, ...
        _ => format!("cannot send S3 {verb} of {target}: {}", chain(&err, 1)),
    };
    BlobError::Unavailable {
        store: store.name.clone(),
        reason,
    }
}

/// Whether a ranged `GetObject` failed because the range starts at or past the object's end
/// (HTTP 416, `InvalidRange`).
pub(crate) fn is_invalid_range<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    match err {
        SdkError::ServiceError(service) => {
            service.raw().status().as_u16() == 416 || service.err().code() == Some("InvalidRange")
        }
        _ => false,
    }
}

/// The object's total length from a `Content-Range` header (`bytes 0-9/10`); `None` when the
/// server does not know it (`*`) or the header is malformed.
pub(crate) fn content_range_total(content_range: &str) -> Option<u64> {
    content_range.rsplit_once('/')?.1.trim().parse().ok()
}

/// Whether `HeadBucket` failed because the bucket does not exist.
pub(crate) fn is_missing_bucket(err: &SdkError<HeadBucketError>) -> bool {
    match err {
        SdkError::ServiceError(service) => {
            service.err().is_not_found() || service.raw().status().as_u16() == 404
        }
        _ => false,
    }
}

/// The innermost error of `err`'s source chain, e.g. `Connection refused (os error 111)`; the
/// outer layers only say "dispatch failure" or "io error".
pub(crate) fn root_cause(err: &(dyn Error + 'static)) -> String {
    let mut current = err;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// The messages of `err`'s source chain joined by `: `, leaving out the first `skip` (generic
/// wrappers such as "dispatch failure").
fn chain(err: &(dyn Error + 'static), skip: usize) -> String {
    let mut parts = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        parts.push(e.to_string());
        current = e.source();
    }
    let skip = skip.min(parts.len().saturating_sub(1));
    parts[skip..].join(": ")
}

/// Checks that `endpoint` is an absolute `http` or `https` URL with a host.
pub(crate) fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or_else(|| {
            format!(
                "endpoint `{}` is not an http:// or https:// URL",
                redact_url(endpoint)
            )
        })?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("endpoint `{}` has no host", redact_url(endpoint)));
    }
    Ok(())
}

/// `url` without user info (`https://user:pass@host/` → `https://host/`), for messages.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = match authority.rfind('@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{host}{path}"),
        None => format!("{host}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_skip_generic_wrappers() {
        let inner = std::io::Error::other("innermost");
        let outer = std::io::Error::other(Wrapper(inner));
        assert_eq!(chain(&outer, 0), "wrapper: innermost");
        assert_eq!(chain(&outer, 1), "innermost");
        assert_eq!(chain(&outer, 5), "innermost");
        assert_eq!(root_cause(&outer), "innermost");
    }

    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapper")
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn content_range_totals() {
        assert_eq!(content_range_total("bytes 0-9/10"), Some(10));
        assert_eq!(
            content_range_total("bytes 5-9/1234567890123"),
            Some(1_234_567_890_123)
        );
        assert_eq!(content_range_total("bytes */42"), Some(42));
        assert_eq!(content_range_total("bytes 0-9/*"), None);
        assert_eq!(content_range_total("garbage"), None);
    }

    #[test]
    fn user_info_is_removed_from_urls() {
        assert_eq!(redact_url("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
        assert_eq!(
            redact_url("https://ak:sk@minio.local/x"),
            "https://minio.local/x"
        );
        assert_eq!(redact_url("https://a@b@host?q=1"), "https://host?q=1");
        assert_eq!(redact_url("user:pw@host"), "host");
    }

    #[test]
    fn endpoints_must_be_http_urls_with_a_host() {
        assert!(check_endpoint("http://127.0.0.1:9000").is_ok());
        assert!(check_endpoint("https://s3.example.com/").is_ok());
        let err = check_endpoint("ftp://secret:pw@host").unwrap_err();
        assert!(
            err.contains("ftp://host") && !err.contains("secret"),
            "{err}"
        );
        assert!(check_endpoint("127.0.0.1:9000").is_err());
        assert!(check_endpoint("http://").is_err());
        assert!(check_endpoint("http://u:p@:9000").is_err());
    }
}
