//! Building responses: the per-request context handlers receive, JSON and
//! streamed answers with faults applied, provider-shaped errors, and small
//! serialization helpers shared by the provider modules.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};

use crate::body::MockBody;
use crate::faults::{Faults, Reset};
use crate::sse::{Framing, StreamWriter, write_json};
use crate::tokens::Reply;

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const TEXT_EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");

/// Which provider's error body shape to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorStyle {
    /// `{"error":{"message":..,"type":..,"code":..}}` (OpenAI and the others).
    OpenAi,
    /// `{"type":"error","error":{"type":..,"message":..}}`.
    Anthropic,
}

impl ErrorStyle {
    /// The error style of the route at `path`.
    pub(crate) fn for_path(path: &str) -> Self {
        if path.starts_with("/v1/messages") {
            ErrorStyle::Anthropic
        } else {
            ErrorStyle::OpenAi
        }
    }
}

/// What a route handler needs to know about the request besides its body.
pub(crate) struct Ctx<'a> {
    /// The request headers.
    pub(crate) headers: &'a HeaderMap,
    /// The faults the request asked for.
    pub(crate) faults: &'a Faults,
    /// The reply to give.
    pub(crate) reply: Reply<'a>,
}

impl Ctx<'_> {
    /// Parses the JSON request body, or gives the 400 answer (in `style`)
    /// to return instead.
    pub(crate) fn parse<'b, T: Deserialize<'b>>(
        &self,
        style: ErrorStyle,
        body: &'b [u8],
    ) -> Result<T, Box<Response<MockBody>>> {
        serde_json::from_slice(body).map_err(|err| {
            let message = format!("mock: invalid request body: {err}");
            Box::new(error_response(
                style,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &message,
            ))
        })
    }

    /// A JSON answer, with `mock_seen_headers` added and a mid-stream reset
    /// applied when the request asked for them.
    pub(crate) fn json<T: Serialize>(&self, status: StatusCode, body: &T) -> Response<MockBody> {
        let mut buf = Vec::with_capacity(512);
        write_json(&mut buf, body);
        if self.faults.echo_headers && buf.last() == Some(&b'}') {
            buf.pop();
            if buf.len() > 1 {
                buf.push(b',');
            }
            buf.extend_from_slice(b"\"mock_seen_headers\":");
            write_json(&mut buf, &HeaderEcho(self.headers));
            buf.push(b'}');
        }
        self.json_bytes(status, buf)
    }

    /// A streamed `200 OK` answer, paced by `x-mock-chunk-delay-ms` and cut
    /// short by `x-mock-reset: mid-stream`.
    pub(crate) fn stream(&self, writer: StreamWriter) -> Response<MockBody> {
        let content_type = match writer.framing() {
            Framing::Sse => TEXT_EVENT_STREAM,
            Framing::JsonArray => APPLICATION_JSON,
        };
        let body = MockBody::chunks(
            writer.finish(),
            self.faults.chunk_delay,
            self.faults.reset == Some(Reset::MidStream),
        );
        with_content_type(StatusCode::OK, content_type, body)
    }

    /// The error answer for `x-mock-status`.
    pub(crate) fn injected_error(
        &self,
        style: ErrorStyle,
        status: StatusCode,
    ) -> Response<MockBody> {
        let message = format!("mock injected {}", status.as_u16());
        let mut buf = Vec::with_capacity(128);
        match style {
            ErrorStyle::OpenAi => write_json(
                &mut buf,
                &OpenAiError {
                    error: OpenAiErrorBody {
                        message: &message,
                        kind: "mock_error",
                        code: Some(status.as_u16()),
                    },
                },
            ),
            ErrorStyle::Anthropic => write_json(
                &mut buf,
                &AnthropicError {
                    kind: "error",
                    error: AnthropicErrorBody {
                        kind: "api_error",
                        message: &message,
                    },
                },
            ),
        }
        let mut response = self.json_bytes(status, buf);
        if let Some(retry_after) = &self.faults.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, retry_after.clone());
        }
        response
    }

    /// Serialized JSON `buf` as the answer, cut in half and aborted for
    /// `x-mock-reset: mid-stream`.
    fn json_bytes(&self, status: StatusCode, buf: Vec<u8>) -> Response<MockBody> {
        let body = if self.faults.reset == Some(Reset::MidStream) {
            let all = Bytes::from(buf);
            let half = all.len() / 2;
            MockBody::chunks(vec![all.slice(..half), all.slice(half..)], None, true)
        } else {
            MockBody::full(buf)
        };
        with_content_type(status, APPLICATION_JSON, body)
    }
}

/// An error answer in `style` with error type `kind`.
pub(crate) fn error_response(
    style: ErrorStyle,
    status: StatusCode,
    kind: &str,
    message: &str,
) -> Response<MockBody> {
    let mut buf = Vec::with_capacity(128);
    match style {
        ErrorStyle::OpenAi => write_json(
            &mut buf,
            &OpenAiError {
                error: OpenAiErrorBody {
                    message,
                    kind,
                    code: None,
                },
            },
        ),
        ErrorStyle::Anthropic => write_json(
            &mut buf,
            &AnthropicError {
                kind: "error",
                error: AnthropicErrorBody { kind, message },
            },
        ),
    }
    with_content_type(status, APPLICATION_JSON, MockBody::full(buf))
}

/// A plain JSON answer with no faults applied (for the control endpoint).
pub(crate) fn plain_json<T: Serialize>(status: StatusCode, body: &T) -> Response<MockBody> {
    let mut buf = Vec::with_capacity(256);
    write_json(&mut buf, body);
    with_content_type(status, APPLICATION_JSON, MockBody::full(buf))
}

fn with_content_type(
    status: StatusCode,
    content_type: HeaderValue,
    body: MockBody,
) -> Response<MockBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    error: OpenAiErrorBody<'a>,
}

#[derive(Serialize)]
struct OpenAiErrorBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
}

#[derive(Serialize)]
struct AnthropicError<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicErrorBody<'a>,
}

#[derive(Serialize)]
struct AnthropicErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

/// Serializes request headers as `{name: value}` (first value of each name).
struct HeaderEcho<'a>(&'a HeaderMap);

impl Serialize for HeaderEcho<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.keys_len()))?;
        for name in self.0.keys() {
            if let Some(value) = self.0.get(name) {
                map.serialize_entry(name.as_str(), &String::from_utf8_lossy(value.as_bytes()))?;
            }
        }
        map.end()
    }
}

/// A JSON `null`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Null;

impl Serialize for Null {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }
}

/// An empty JSON array `[]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EmptyList;

impl Serialize for EmptyList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_seq(Some(0))?.end()
    }
}

/// An empty JSON object `{}`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EmptyMap;

impl Serialize for EmptyMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_map(Some(0))?.end()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A unique response id such as `chatcmpl-mock00000001`, serialized without
/// allocating.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Id {
    prefix: &'static str,
    n: u64,
}

impl Id {
    /// A fresh id with `prefix` (e.g. `"chatcmpl-"`).
    pub(crate) fn new(prefix: &'static str) -> Self {
        Self {
            prefix,
            n: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}mock{:08}", self.prefix, self.n)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
