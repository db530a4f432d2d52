//! The one place where edge failures become HTTP responses.

use aigw_types::{ErrorCode, ErrorEnvelope};
use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

/// A request the edge refuses or cannot complete by itself.
///
/// Each variant carries what the client needs to fix (or understand) the problem; [`IntoResponse`]
/// maps it to a status code and the JSON envelope of DESIGN.md §2.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The path does not have the gateway shape.
    #[error("malformed gateway path: {0}")]
    MalformedPath(String),
    /// No provider with this slug is known or configured.
    #[error("unknown provider `{0}`")]
    UnknownProvider(String),
    /// A control header has an unusable value.
    #[error("invalid {header} header: {reason}")]
    InvalidHeader {
        /// Header name.
        header: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `cf-aig-metadata` is not what the gateway accepts.
    #[error("invalid cf-aig-metadata header: {0}")]
    InvalidMetadata(String),
    /// The gateway does not exist for the account.
    #[error("gateway `{gateway}` not found for account `{account}`")]
    GatewayNotFound {
        /// Account id from the path.
        account: String,
        /// Gateway id from the path.
        gateway: String,
    },
    /// The request body is larger than allowed.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// The request body could not be read from the client.
    #[error("failed to read the request body: {0}")]
    BodyRead(String),
    /// No route matches.
    #[error("no route for {method} {path}")]
    RouteNotFound {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// An authenticated gateway's request without a valid `cf-aig-authorization`.
    #[error("gateway `{gateway}` requires authentication: {reason}")]
    GatewayUnauthorized {
        /// The gateway.
        gateway: String,
        /// What was missing or wrong.
        reason: &'static str,
    },
    /// A Universal Endpoint body or step that cannot be run.
    #[error("invalid Universal Endpoint request: `{field}` {reason}")]
    InvalidStep {
        /// The step field (`steps[1].provider`), or `body`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An OpenAI-compatible (`/compat`) request that cannot be translated (malformed, or an
    /// unsupported provider or feature).
    #[error("{0}")]
    Compat(#[from] aigw_compat::CompatError),
    /// The provider could not be reached.
    #[error("provider `{provider}` is unreachable: {reason}")]
    UpstreamUnreachable {
        /// Provider slug.
        provider: String,
        /// Connection error, without secrets.
        reason: String,
    },
    /// The provider did not answer in time.
    #[error("provider `{provider}` did not respond within {timeout_ms} ms")]
    UpstreamTimeout {
        /// Provider slug.
        provider: String,
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// The gateway's rate limit is reached.
    #[error(
        "gateway `{gateway}` is rate limited to {limit} requests per {interval_secs} s; retry in {retry_after_secs} s"
    )]
    RateLimited {
        /// The gateway.
        gateway: String,
        /// Requests allowed per interval.
        limit: u64,
        /// The interval, in seconds.
        interval_secs: u64,
        /// Seconds until a request can be admitted again (at least 1).
        retry_after_secs: u64,
    },
}

impl EdgeError {
    /// HTTP status and stable code for this error.
    pub fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            Self::MalformedPath(_) => (StatusCode::BAD_REQUEST, ErrorCode::MalformedPath),
            Self::UnknownProvider(_) => (StatusCode::BAD_REQUEST, ErrorCode::UnknownProvider),
            Self::InvalidHeader { .. } => (StatusCode::BAD_REQUEST, ErrorCode::InvalidHeader),
            Self::InvalidMetadata(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidMetadata),
            Self::GatewayNotFound { .. } => (StatusCode::NOT_FOUND, ErrorCode::GatewayNotFound),
            Self::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::BodyTooLarge),
            Self::BodyRead(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidBody),
            Self::RouteNotFound { .. } => (StatusCode::NOT_FOUND, ErrorCode::RouteNotFound),
            Self::InvalidStep { .. } => (StatusCode::BAD_REQUEST, ErrorCode::InvalidStep),
            Self::Compat(e) if e.is_unsupported() => {
                (StatusCode::BAD_REQUEST, ErrorCode::CompatUnsupported)
            }
            Self::Compat(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidCompatRequest),
            Self::GatewayUnauthorized { .. } => {
                (StatusCode::UNAUTHORIZED, ErrorCode::GatewayUnauthorized)
            }
            Self::UpstreamUnreachable { .. } => {
                (StatusCode::BAD_GATEWAY, ErrorCode::UpstreamUnreachable)
            }
            Self::UpstreamTimeout { .. } => {
                (StatusCode::GATEWAY_TIMEOUT, ErrorCode::UpstreamTimeout)
            }
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
        }
    }
}

impl IntoResponse for EdgeError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut response =
            (status, Json(ErrorEnvelope::single(code, self.to_string()))).into_response();
        if let Self::RateLimited {
            limit,
            interval_secs,
            retry_after_secs,
            ..
        } = self
        {
            // `Retry-After` (RFC 9110) and the IETF RateLimit fields.
            let headers = response.headers_mut();
            for (name, value) in [
                ("retry-after", retry_after_secs.to_string()),
                ("ratelimit-limit", limit.to_string()),
                ("ratelimit-remaining", "0".to_owned()),
                ("ratelimit-reset", retry_after_secs.to_string()),
                ("ratelimit-policy", format!("{limit};w={interval_secs}")),
            ] {
                if let Ok(value) = http::HeaderValue::from_str(&value) {
                    headers.insert(http::HeaderName::from_static(name), value);
                }
            }
        }
        response
    }
}
