use serde::{Deserialize, Serialize};

/// Numeric codes for errors the gateway itself produces.
///
/// Codes are stable: clients may match on them. The HTTP status is chosen by the edge; the code
/// says *which* rule the request broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u32", try_from = "u32")]
#[repr(u32)]
pub enum ErrorCode {
    /// The request path is not `/v1/{account}/{gateway}/{provider}/{path}`.
    MalformedPath = 2001,
    /// The provider slug is not one aigw knows or has configured.
    UnknownProvider = 2002,
    /// A `cf-aig-*` header has a value that cannot be used.
    InvalidHeader = 2003,
    /// `cf-aig-metadata` is not a JSON object of at most five scalar values.
    InvalidMetadata = 2004,
    /// The request body could not be read (client disconnected or broke the framing).
    InvalidBody = 2005,
    /// A Universal Endpoint request's body or one of its steps cannot be run (the message
    /// names the field, e.g. `steps[1].provider`).
    InvalidStep = 2006,
    /// The gateway requires `cf-aig-authorization: Bearer <token>` and it is missing or not
    /// valid for the account.
    GatewayUnauthorized = 2007,
    /// An OpenAI-compatible (`/compat/chat/completions`) request is malformed: not JSON, or a
    /// field (named in the message, e.g. `model`, `messages[2].tool_call_id`) is missing or
    /// has the wrong shape.
    InvalidCompatRequest = 2008,
    /// An OpenAI-compatible request names a provider the endpoint does not translate to, or
    /// asks for a feature that provider cannot take (the message names both).
    CompatUnsupported = 2009,
    /// The gateway id does not exist for this account.
    GatewayNotFound = 2010,
    /// The request body exceeds the configured maximum.
    BodyTooLarge = 2011,
    /// No route matches the request.
    RouteNotFound = 2012,
    /// The upstream provider could not be reached.
    UpstreamUnreachable = 2020,
    /// The upstream provider did not answer in time.
    UpstreamTimeout = 2021,
    /// The gateway's rate limit is reached; nothing was sent upstream.
    RateLimited = 2030,
    /// The gateway failed in a way the client cannot fix.
    Internal = 2099,
}

impl From<ErrorCode> for u32 {
    fn from(code: ErrorCode) -> u32 {
        code as u32
    }
}

impl TryFrom<u32> for ErrorCode {
    type Error = String;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        use ErrorCode::*;
        [
            MalformedPath,
            UnknownProvider,
            InvalidHeader,
            InvalidMetadata,
            InvalidBody,
            InvalidStep,
            GatewayUnauthorized,
            InvalidCompatRequest,
            CompatUnsupported,
            GatewayNotFound,
            BodyTooLarge,
            RouteNotFound,
            UpstreamUnreachable,
            UpstreamTimeout,
            RateLimited,
            Internal,
        ]
        .into_iter()
        .find(|code| *code as u32 == value)
        .ok_or_else(|| format!("unknown error code {value}"))
    }
}

/// One entry of [`ErrorEnvelope::errors`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorItem {
    /// Stable numeric code.
    pub code: ErrorCode,
    /// Human-readable explanation naming the offending value.
    pub message: String,
}

/// The JSON body of every error the gateway produces itself:
/// `{"success": false, "errors": [{"code": 2002, "message": "..."}]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    /// Always `false`.
    pub success: bool,
    /// What went wrong; never empty.
    pub errors: Vec<ErrorItem>,
}

impl ErrorEnvelope {
    /// An envelope holding a single error.
    pub fn single(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            success: false,
            errors: vec![ErrorItem {
                code,
                message: message.into(),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_serializes_to_the_documented_shape() {
        let env = ErrorEnvelope::single(ErrorCode::UnknownProvider, "unknown provider `nope`");
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"success": false, "errors": [{"code": 2002, "message": "unknown provider `nope`"}]})
        );
        let back: ErrorEnvelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn every_code_round_trips() {
        for raw in 2000..2100 {
            if let Ok(code) = ErrorCode::try_from(raw) {
                assert_eq!(u32::from(code), raw);
            }
        }
        assert!(ErrorCode::try_from(1).is_err());
    }
}
