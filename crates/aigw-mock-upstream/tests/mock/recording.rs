//! Request recording, in-process and over `/__mock/requests`, and shutdown.

use aigw_mock_upstream::{MockOptions, SeenRequest};
use serde_json::json;
use tokio::net::TcpStream;

use crate::support::{client, post, start, start_with};

#[tokio::test]
async fn records_requests_in_process() {
    let server = start().await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "héllo"}]});
    let response = client()
        .post(format!(
            "{}/v1/chat/completions?api-version=2024",
            server.base_url()
        ))
        .header("Authorization", "Bearer sk-upstream")
        .header("X-Custom-Header", "Value")
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    // Failed requests are recorded too.
    let response = post(
        &server,
        "/v1/messages",
        json!({}),
        &[("x-mock-status", "500")],
    )
    .await;
    assert_eq!(response.status(), 500);

    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    let first = &seen[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/v1/chat/completions");
    assert_eq!(first.query.as_deref(), Some("api-version=2024"));
    assert!(
        first
            .headers
            .iter()
            .all(|(name, _)| *name == name.to_lowercase())
    );
    assert_eq!(first.header("authorization"), Some("Bearer sk-upstream"));
    assert_eq!(first.header("X-Custom-Header"), Some("Value"));
    assert_eq!(first.body_json().expect("json body"), body);
    assert_eq!(seen[1].path, "/v1/messages");
    assert_eq!(seen[1].query, None);
    assert_eq!(seen[1].header("x-mock-status"), Some("500"));

    server.clear_requests();
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn recording_endpoint_lists_and_clears() {
    let server = start().await;
    let url = format!("{}/__mock/requests", server.base_url());
    post(
        &server,
        "/v1/embeddings",
        json!({"model": "m", "input": "a"}),
        &[],
    )
    .await;
    post(&server, "/v2/chat", json!({"messages": []}), &[]).await;

    let listed: Vec<SeenRequest> = client()
        .get(&url)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON array");
    assert_eq!(listed, server.requests(), "control calls are not recorded");
    let paths: Vec<&str> = listed.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/v1/embeddings", "/v2/chat"]);

    let cleared = client().delete(&url).send().await.expect("request");
    assert_eq!(cleared.status(), 204);
    assert!(server.requests().is_empty());
    let listed: Vec<SeenRequest> = client()
        .get(&url)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON array");
    assert!(listed.is_empty());
}

#[tokio::test]
async fn recording_can_be_turned_off() {
    let server = start_with(MockOptions {
        record_requests: false,
        ..MockOptions::default()
    })
    .await;
    let response = post(
        &server,
        "/v1/chat/completions",
        json!({"messages": []}),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn shutdown_closes_the_listener() {
    let server = start().await;
    let addr = server.addr();
    TcpStream::connect(addr).await.expect("listening");
    server.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
}
