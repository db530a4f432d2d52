//! Helpers shared by the end-to-end tests.

use aigw_mock_upstream::{MockOptions, MockServer, spawn};
use serde_json::Value;

/// Starts a recording mock on a free loopback port.
pub(crate) async fn start() -> MockServer {
    start_with(MockOptions::default()).await
}

/// Starts a mock with `options` on a free loopback port.
pub(crate) async fn start_with(options: MockOptions) -> MockServer {
    spawn("127.0.0.1:0".parse().expect("valid address"), options)
        .await
        .expect("mock binds a free port")
}

/// A fresh HTTP client (no connections shared between tests).
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// `POST base_url + path` with a JSON body and extra headers.
pub(crate) async fn post(
    server: &MockServer,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client()
        .post(format!("{}{path}", server.base_url()))
        .json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request succeeds")
}

/// `POST` and parse the JSON answer, asserting `200 OK`.
pub(crate) async fn post_ok_json(
    server: &MockServer,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> Value {
    let response = post(server, path, body, headers).await;
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), "application/json");
    response.json().await.expect("JSON body")
}

/// The `content-type` of `response`.
pub(crate) fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// One server-sent event.
#[derive(Debug)]
pub(crate) struct Event {
    /// The `event:` name, if any.
    pub(crate) name: Option<String>,
    /// The `data:` payload.
    pub(crate) data: String,
}

impl Event {
    /// The payload parsed as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

/// `POST` a streaming request, assert an SSE `200 OK`, and parse the events.
pub(crate) async fn post_sse(
    server: &MockServer,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> Vec<Event> {
    let response = post(server, path, body, headers).await;
    assert_eq!(response.status(), 200);
    assert_eq!(content_type(&response), "text/event-stream");
    parse_sse(&response.text().await.expect("whole body"))
}

/// Splits an SSE body into events.
pub(crate) fn parse_sse(text: &str) -> Vec<Event> {
    assert!(
        text.ends_with("\n\n"),
        "SSE body ends with a blank line: {text:?}"
    );
    text.split_terminator("\n\n")
        .map(|block| {
            let mut event = Event {
                name: None,
                data: String::new(),
            };
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event.name = Some(name.to_owned());
                } else if let Some(data) = line.strip_prefix("data: ") {
                    event.data.push_str(data);
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            event
        })
        .collect()
}

/// The number of whitespace-separated words in `text`.
pub(crate) fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}
