//! Fault injection through `x-mock-*` headers.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{client, post, start};

fn chat(stream: bool) -> Value {
    json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn injected_status_uses_the_provider_error_shape() {
    let server = start().await;
    let response = post(
        &server,
        "/v1/chat/completions",
        chat(false),
        &[("x-mock-status", "429"), ("x-mock-retry-after", "3")],
    )
    .await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");
    let v: Value = response.json().await.expect("json");
    assert_eq!(
        v,
        json!({"error": {"message": "mock injected 429", "type": "mock_error", "code": 429}})
    );

    let response = post(
        &server,
        "/v1/messages",
        chat(true),
        &[("x-mock-status", "529")],
    )
    .await;
    assert_eq!(response.status(), 529);
    let v: Value = response.json().await.expect("json");
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "api_error", "message": "mock injected 529"}})
    );

    for code in [400u16, 500, 503] {
        let response = post(
            &server,
            "/client/v4/accounts/a/ai/run/@cf/x",
            json!({"prompt": "p"}),
            &[("x-mock-status", &code.to_string())],
        )
        .await;
        assert_eq!(response.status().as_u16(), code);
        assert!(response.headers().get("retry-after").is_none());
        let v: Value = response.json().await.expect("json");
        assert_eq!(v["error"]["code"], code);
    }
}

#[tokio::test]
async fn malformed_mock_headers_are_rejected() {
    let server = start().await;
    let response = post(
        &server,
        "/v1/chat/completions",
        chat(false),
        &[("x-mock-delay-ms", "soon")],
    )
    .await;
    assert_eq!(response.status(), 400);
    let v: Value = response.json().await.expect("json");
    let message = v["error"]["message"].as_str().expect("message");
    assert!(message.contains("x-mock-delay-ms"), "{message}");
}

#[tokio::test]
async fn delay_before_headers() {
    let server = start().await;
    let started = Instant::now();
    let response = post(
        &server,
        "/v1/chat/completions",
        chat(false),
        &[("x-mock-delay-ms", "150")],
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn chunk_delay_paces_the_stream() {
    let server = start().await;
    let response = post(
        &server,
        "/v1/chat/completions",
        chat(true),
        &[("x-mock-chunks", "3"), ("x-mock-chunk-delay-ms", "40")],
    )
    .await;
    assert_eq!(response.status(), 200);
    // The headers and the first chunk come at once; each of the other six
    // chunks (2 words, finish, [DONE], ...) waits 40 ms.
    let started = Instant::now();
    let mut response = response;
    let mut body = Vec::new();
    let mut chunk_times = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("body chunk") {
        body.extend_from_slice(&chunk);
        chunk_times.push(started.elapsed());
    }
    let text = String::from_utf8(body).expect("utf8");
    assert!(text.ends_with("data: [DONE]\n\n"));
    // role + 3 words + finish + [DONE] = 6 chunks, 5 gaps of 40 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(160),
        "{chunk_times:?}"
    );
    assert!(
        chunk_times.len() >= 3,
        "arrived in several reads: {chunk_times:?}"
    );
}

#[tokio::test]
async fn reset_before_headers_is_a_connection_error() {
    let server = start().await;
    let err = client()
        .post(format!("{}/v1/chat/completions", server.base_url()))
        .header("x-mock-reset", "before-headers")
        .json(&chat(false))
        .send()
        .await
        .expect_err("no response at all");
    assert!(err.status().is_none());
    assert!(err.is_request() || err.is_connect(), "{err:?}");

    // The server keeps serving other requests.
    let ok = post(&server, "/v1/chat/completions", chat(false), &[]).await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn reset_before_headers_over_h2_fails_the_stream() {
    let server = start().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let result = h2
        .post(format!("{}/v1/chat/completions", server.base_url()))
        .header("x-mock-reset", "before-headers")
        .json(&chat(false))
        .send()
        .await;
    assert!(result.is_err(), "{result:?}");
}

/// Reads `response` to its end or its error; returns the bytes read and the
/// error, if any.
async fn read_body(mut response: reqwest::Response) -> (String, Option<reqwest::Error>) {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return (String::from_utf8_lossy(&body).into_owned(), None),
            Err(err) => return (String::from_utf8_lossy(&body).into_owned(), Some(err)),
        }
    }
}

#[tokio::test]
async fn reset_mid_stream_aborts_after_some_chunks() {
    let server = start().await;
    let response = post(
        &server,
        "/v1/chat/completions",
        chat(true),
        &[("x-mock-chunks", "10"), ("x-mock-reset", "mid-stream")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let (body, err) = read_body(response).await;
    let err = err.expect("the body fails");
    assert!(
        err.is_body() || err.is_decode() || err.is_request(),
        "{err:?}"
    );
    // 14 events in all (role, 10 words, finish, [DONE]); half arrive.
    let events = body.matches("data: ").count();
    assert!((1..13).contains(&events), "{events} events in {body:?}");
    assert!(body.contains("\"tok0\""));
    assert!(!body.contains("[DONE]"));
}

#[tokio::test]
async fn reset_mid_stream_on_json_cuts_the_body() {
    let server = start().await;
    let response = post(
        &server,
        "/v1/messages",
        chat(false),
        &[("x-mock-reset", "mid-stream")],
    )
    .await;
    assert_eq!(response.status(), 200);
    let (body, err) = read_body(response).await;
    assert!(err.is_some(), "the body fails");
    assert!(
        serde_json::from_str::<Value>(&body).is_err(),
        "truncated: {body:?}"
    );
}

#[tokio::test]
async fn reset_mid_stream_over_h2() {
    let server = start().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let response = h2
        .post(format!("{}/v1/messages", server.base_url()))
        .header("x-mock-reset", "mid-stream")
        .header("x-mock-chunk-delay-ms", "5")
        .json(&chat(true))
        .send()
        .await
        .expect("headers arrive");
    assert_eq!(response.status(), 200);
    let (body, err) = read_body(response).await;
    assert!(err.is_some(), "the body fails");
    assert!(body.contains("event: message_start"));
    assert!(!body.contains("message_stop"));
}
