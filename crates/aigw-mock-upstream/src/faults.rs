//! Fault injection, selected per request by `x-mock-*` headers.

use std::time::Duration;

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, StatusCode};

const X_MOCK_STATUS: HeaderName = HeaderName::from_static("x-mock-status");
const X_MOCK_RETRY_AFTER: HeaderName = HeaderName::from_static("x-mock-retry-after");
const X_MOCK_DELAY_MS: HeaderName = HeaderName::from_static("x-mock-delay-ms");
const X_MOCK_CHUNK_DELAY_MS: HeaderName = HeaderName::from_static("x-mock-chunk-delay-ms");
const X_MOCK_RESET: HeaderName = HeaderName::from_static("x-mock-reset");
const X_MOCK_ECHO_HEADERS: HeaderName = HeaderName::from_static("x-mock-echo-headers");
const X_MOCK_FAIL_FIRST: HeaderName = HeaderName::from_static("x-mock-fail-first");
const X_MOCK_FAIL_KEY: HeaderName = HeaderName::from_static("x-mock-fail-key");

/// Where an injected connection reset happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reset {
    /// Close the connection without sending a response.
    BeforeHeaders,
    /// Send the headers and half of the body, then abort the connection.
    MidStream,
}

/// The faults requested by one request's headers.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// `x-mock-status`: answer with this error status.
    pub(crate) status: Option<StatusCode>,
    /// `x-mock-retry-after`: `retry-after` value sent with an injected status.
    pub(crate) retry_after: Option<HeaderValue>,
    /// `x-mock-delay-ms`: wait before sending response headers.
    pub(crate) delay: Option<Duration>,
    /// `x-mock-chunk-delay-ms`: wait between streamed chunks.
    pub(crate) chunk_delay: Option<Duration>,
    /// `x-mock-reset`: break the connection.
    pub(crate) reset: Option<Reset>,
    /// `x-mock-echo-headers`: add `mock_seen_headers` to JSON answers.
    pub(crate) echo_headers: bool,
    /// `x-mock-fail-first: N` with `x-mock-fail-key: K`: only the first N requests carrying
    /// key K get the injected status (503 unless `x-mock-status` says otherwise); later ones
    /// are answered normally — a flaky upstream that recovers, for retry tests.
    pub(crate) fail_first: Option<(String, u64)>,
}

impl Faults {
    /// Reads the fault headers; an error message names the malformed header.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Self, String> {
        let status = match header_str(headers, &X_MOCK_STATUS)? {
            None => None,
            Some(v) => Some(
                v.parse::<u16>()
                    .ok()
                    .filter(|code| (400..=599).contains(code))
                    .and_then(|code| StatusCode::from_u16(code).ok())
                    .ok_or("x-mock-status must be a status code in 400..=599")?,
            ),
        };
        let reset = match header_str(headers, &X_MOCK_RESET)? {
            None => None,
            Some("before-headers") => Some(Reset::BeforeHeaders),
            Some("mid-stream") => Some(Reset::MidStream),
            Some(_) => return Err("x-mock-reset must be `before-headers` or `mid-stream`".into()),
        };
        let echo_headers = match header_str(headers, &X_MOCK_ECHO_HEADERS)? {
            None | Some("0" | "false") => false,
            Some("1" | "true") => true,
            Some(_) => return Err("x-mock-echo-headers must be 1/true or 0/false".into()),
        };
        let fail_first = match header_str(headers, &X_MOCK_FAIL_FIRST)? {
            None => None,
            Some(n) => {
                let n = n
                    .parse()
                    .map_err(|_| "x-mock-fail-first must be a whole number")?;
                let key = header_str(headers, &X_MOCK_FAIL_KEY)?
                    .ok_or("x-mock-fail-first needs x-mock-fail-key")?;
                Some((key.to_owned(), n))
            }
        };
        Ok(Self {
            status,
            fail_first,
            retry_after: headers.get(X_MOCK_RETRY_AFTER).cloned(),
            delay: millis(headers, &X_MOCK_DELAY_MS)?,
            chunk_delay: millis(headers, &X_MOCK_CHUNK_DELAY_MS)?,
            reset,
            echo_headers,
        })
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, String> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| format!("{name} must be visible ASCII"))
        })
        .transpose()
}

fn millis(headers: &HeaderMap, name: &HeaderName) -> Result<Option<Duration>, String> {
    header_str(headers, name)?
        .map(|v| {
            v.parse()
                .map(Duration::from_millis)
                .map_err(|_| format!("{name} must be a whole number of milliseconds"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(pairs: &[(&'static str, &'static str)]) -> Result<Faults, String> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        Faults::from_headers(&headers)
    }

    #[test]
    fn no_headers_means_no_faults() {
        let f = faults(&[]).expect("valid");
        assert!(f.status.is_none() && f.delay.is_none() && f.chunk_delay.is_none());
        assert!(f.reset.is_none() && !f.echo_headers && f.retry_after.is_none());
    }

    #[test]
    fn parses_every_fault_header() {
        let f = faults(&[
            ("x-mock-status", "503"),
            ("x-mock-retry-after", "7"),
            ("x-mock-delay-ms", "15"),
            ("x-mock-chunk-delay-ms", " 2 "),
            ("x-mock-reset", "mid-stream"),
            ("x-mock-echo-headers", "1"),
        ])
        .expect("valid");
        assert_eq!(f.status, Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(f.retry_after, Some(HeaderValue::from_static("7")));
        assert_eq!(f.delay, Some(Duration::from_millis(15)));
        assert_eq!(f.chunk_delay, Some(Duration::from_millis(2)));
        assert_eq!(f.reset, Some(Reset::MidStream));
        assert!(f.echo_headers);
    }

    #[test]
    fn rejects_malformed_values() {
        assert!(faults(&[("x-mock-status", "200")]).is_err());
        assert!(faults(&[("x-mock-status", "abc")]).is_err());
        assert!(faults(&[("x-mock-delay-ms", "-1")]).is_err());
        let err = faults(&[("x-mock-reset", "sometimes")]).expect_err("invalid");
        assert!(err.contains("x-mock-reset"), "{err}");
    }
}
