//! The one place where management API failures become a status plus the error envelope.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::envelope::{Message, envelope};

/// Stable numeric codes of the management API's errors (`errors[].code`).
///
/// The authentication codes are Cloudflare's own (`10000`, `9109`), as are the routing ones
/// (`7000`, `7001`); the rest are aigw's. Clients may match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ApiCode {
    /// No bearer token, or one no account knows (401).
    Unauthenticated = 10000,
    /// The token is valid but not for this account (403).
    Forbidden = 9109,
    /// No route matches the path (404).
    RouteNotFound = 7000,
    /// The path exists but not with this method (405).
    MethodNotAllowed = 7001,
    /// A path or query parameter is invalid (400); the message names it.
    InvalidParameter = 3001,
    /// The JSON body is invalid (400); the message names the field.
    InvalidBody = 3002,
    /// The gateway or log does not exist (404).
    NotFound = 3003,
    /// The gateway already exists (409).
    AlreadyExists = 3004,
    /// The storage behind the API cannot serve now; retry later (503).
    Unavailable = 3005,
    /// The storage behind the API did not answer in time (504).
    Timeout = 3006,
    /// The account's plan does not allow it (400); the message names the plan and limit.
    LimitExceeded = 3007,
    /// Anything else (500).
    Internal = 3099,
}

/// A management request that failed.
///
/// Each variant carries what the client needs to fix it; [`IntoResponse`] turns it into the
/// status and `{"success": false, "errors": [{"code", "message"}], ...}` envelope.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `Authorization: Bearer` header.
    #[error("missing API token: send `Authorization: Bearer <token>`")]
    MissingToken,
    /// The bearer token is not known.
    #[error("invalid API token")]
    InvalidToken,
    /// The token belongs to another account.
    #[error("this API token may not access account `{0}`")]
    Forbidden(String),
    /// A path or query parameter is invalid.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParam {
        /// The parameter, as the client spelled it (`page`, `filters[1].operator`, ...).
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The JSON body is invalid.
    #[error("invalid request body{}: {reason}", field_suffix(.field))]
    InvalidBody {
        /// The offending field's path (`cache_ttl`, `metadata.user`); empty for the whole body.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No route matches.
    #[error("no route for {method} {path}")]
    RouteNotFound {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// The route exists with other methods.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// A shard or the account manager answered with an error.
    #[error("{}", backend_message(.0))]
    Backend(tonic::Status),
    /// The backend answered something this API cannot represent.
    #[error("internal error: {0}")]
    Internal(String),
}

fn field_suffix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!(" at `{field}`")
    }
}

/// Server-side failures are described without the backend's internals.
fn backend_message(status: &tonic::Status) -> String {
    let (http, _) = backend_status(status.code());
    if http.is_server_error() {
        format!("storage error ({:?})", status.code())
    } else {
        status.message().to_owned()
    }
}

/// How a backend gRPC status code surfaces over HTTP.
pub fn backend_status(code: tonic::Code) -> (StatusCode, ApiCode) {
    use tonic::Code;
    match code {
        Code::NotFound => (StatusCode::NOT_FOUND, ApiCode::NotFound),
        Code::InvalidArgument | Code::OutOfRange => {
            (StatusCode::BAD_REQUEST, ApiCode::InvalidParameter)
        }
        Code::AlreadyExists => (StatusCode::CONFLICT, ApiCode::AlreadyExists),
        Code::ResourceExhausted => (StatusCode::BAD_REQUEST, ApiCode::LimitExceeded),
        Code::FailedPrecondition | Code::Unavailable => {
            (StatusCode::SERVICE_UNAVAILABLE, ApiCode::Unavailable)
        }
        Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, ApiCode::Timeout),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, ApiCode::Internal),
    }
}

impl ApiError {
    /// An invalid path or query parameter.
    pub fn param(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidParam {
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// An invalid body field (`""` for the body as a whole).
    pub fn body(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidBody {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// HTTP status and stable code for this error.
    pub fn status_and_code(&self) -> (StatusCode, ApiCode) {
        match self {
            Self::MissingToken | Self::InvalidToken => {
                (StatusCode::UNAUTHORIZED, ApiCode::Unauthenticated)
            }
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, ApiCode::Forbidden),
            Self::InvalidParam { .. } => (StatusCode::BAD_REQUEST, ApiCode::InvalidParameter),
            Self::InvalidBody { .. } => (StatusCode::BAD_REQUEST, ApiCode::InvalidBody),
            Self::RouteNotFound { .. } => (StatusCode::NOT_FOUND, ApiCode::RouteNotFound),
            Self::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, ApiCode::MethodNotAllowed)
            }
            Self::Backend(status) => backend_status(status.code()),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ApiCode::Internal),
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        Self::Backend(status)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            match &self {
                Self::Backend(s) => {
                    tracing::warn!(code = ?s.code(), error = %s.message(), "backend call failed");
                }
                other => tracing::warn!(error = %other, "management request failed"),
            }
        } else {
            tracing::debug!(error = %self, "management request rejected");
        }
        let errors = [Message {
            code: code as u32,
            message: self.to_string(),
        }];
        envelope::<()>(status, None, None, &errors)
    }
}
