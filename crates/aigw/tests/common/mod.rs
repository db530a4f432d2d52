//! Helpers shared by the binary's integration tests: starting `aigw serve` processes with a
//! clean environment, free ports, the mock upstream, and management API calls.

#![allow(dead_code)] // each test crate uses its own subset

pub mod cluster;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use aigw_mock_upstream::{MockOptions, MockServer};
use serde_json::{Value, json};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// `aigw serve` with a clean `AIGW_*` environment.
pub fn aigw_serve() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aigw"));
    cmd.arg("serve");
    for (name, _) in std::env::vars() {
        if name.starts_with("AIGW_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Sends `signal` (`TERM`, `KILL`, `STOP`, `CONT`) to `child`.
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal}");
}

/// Waits until `GET url` answers 200.
pub async fn wait_ok(client: &reqwest::Client, url: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(resp) = client.get(url).send().await
            && resp.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn mock() -> MockServer {
    aigw_mock_upstream::spawn(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        MockOptions::default(),
    )
    .await
    .unwrap()
}

/// One chat completion through the gateway at `http`; (status, log id).
pub async fn chat(
    client: &reqwest::Client,
    http: SocketAddr,
    account: &str,
    gateway: &str,
    event: &str,
) -> (u16, Option<String>) {
    let resp = client
        .post(format!(
            "http://{http}/v1/{account}/{gateway}/openai/chat/completions"
        ))
        .header("authorization", "Bearer sk-never-logged")
        .header("cf-aig-event-id", event)
        .json(
            &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]}),
        )
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let id = resp
        .headers()
        .get("cf-aig-log-id")
        .map(|v| v.to_str().unwrap().to_owned());
    resp.bytes().await.unwrap();
    (status, id)
}

/// A management API call with `token`; (status, body).
pub async fn api(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let resp = request.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub async fn api_get(client: &reqwest::Client, url: String) -> (u16, Value) {
    let resp = client
        .get(url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}
