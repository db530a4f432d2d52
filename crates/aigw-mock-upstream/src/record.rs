//! Request recording: a ring buffer of the last [`CAPACITY`] requests.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use http::request::Parts;
use serde::{Deserialize, Serialize};

/// How many requests the recorder keeps; older ones are dropped first.
pub(crate) const CAPACITY: usize = 1024;

/// One request as the mock saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenRequest {
    /// The HTTP method, e.g. `POST`.
    pub method: String,
    /// The request path, without the query string.
    pub path: String,
    /// The protocol the request came over: `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// The raw query string (without `?`), if any.
    pub query: Option<String>,
    /// The request headers in arrival order, names lowercase, values decoded
    /// lossily as UTF-8. HTTP/2 pseudo-headers are not included.
    pub headers: Vec<(String, String)>,
    /// The request body, decoded lossily as UTF-8.
    pub body: String,
}

impl SeenRequest {
    /// The first value of header `name` (matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn body_json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_str(&self.body)
    }
}

/// The shared request log of one server.
pub(crate) struct Recorder {
    enabled: bool,
    ring: Mutex<VecDeque<SeenRequest>>,
    /// Requests seen per `x-mock-fail-key` (kept even when recording is off).
    keys: Mutex<HashMap<String, u64>>,
}

impl Recorder {
    /// A recorder that keeps requests only when `enabled`.
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            ring: Mutex::new(VecDeque::new()),
            keys: Mutex::default(),
        }
    }

    /// Counts a request carrying fault key `key`; returns how many have, this one included.
    pub(crate) fn count_key(&self, key: &str) -> u64 {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let count = keys.entry(key.to_owned()).or_default();
        *count += 1;
        *count
    }

    /// Records one request (a no-op when recording is disabled).
    pub(crate) fn record(&self, parts: &Parts, body: &[u8]) {
        if !self.enabled {
            return;
        }
        let seen = SeenRequest {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            version: format!("{:?}", parts.version),
            query: parts.uri.query().map(str::to_owned),
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_owned(), value)
                })
                .collect(),
            body: String::from_utf8_lossy(body).into_owned(),
        };
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() == CAPACITY {
            ring.pop_front();
        }
        ring.push_back(seen);
    }

    /// The recorded requests, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<SeenRequest> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.iter().cloned().collect()
    }

    /// Forgets every recorded request.
    pub(crate) fn clear(&self) {
        self.ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(path: &str) -> Parts {
        Request::post(path)
            .header("X-Custom", "Value")
            .body(())
            .expect("valid request")
            .into_parts()
            .0
    }

    #[test]
    fn keeps_the_last_capacity_requests_in_order() {
        let recorder = Recorder::new(true);
        for i in 0..CAPACITY + 5 {
            recorder.record(&parts(&format!("/r/{i}?q=1")), b"{}");
        }
        let seen = recorder.snapshot();
        assert_eq!(seen.len(), CAPACITY);
        assert_eq!(seen[0].path, "/r/5");
        assert_eq!(seen[CAPACITY - 1].path, format!("/r/{}", CAPACITY + 4));
        assert_eq!(seen[0].query.as_deref(), Some("q=1"));
        assert_eq!(seen[0].header("x-custom"), Some("Value"));
        assert_eq!(
            seen[0].headers,
            [("x-custom".to_owned(), "Value".to_owned())]
        );
        recorder.clear();
        assert!(recorder.snapshot().is_empty());
    }

    #[test]
    fn disabled_recorder_keeps_nothing() {
        let recorder = Recorder::new(false);
        recorder.record(&parts("/x"), b"");
        assert!(recorder.snapshot().is_empty());
    }
}
