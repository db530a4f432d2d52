//! Upstreams over HTTPS, as real providers are: HTTP/2 negotiated by ALPN, and a private CA
//! trusted through `proxy.upstream_ca_file` — or refused, with a 502 naming the provider;
//! requests spread over `proxy.http2_connections_per_host` connections, so a provider's limit
//! of concurrent streams per connection does not make streams wait.

mod support;

use aigw_mock_upstream::MockOptions;
use aigw_types::RequestOutcome;
use serde_json::{Value, json};
use support::{Harness, gateway_error};

fn chat_body(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "say hello over tls"}],
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

/// A chat-completions request to OpenAI through the edge at `url` (`Harness::gw`).
fn chat(client: &reqwest::Client, url: &str, stream: bool) -> reqwest::RequestBuilder {
    client.post(url).json(&chat_body(stream))
}

#[tokio::test]
async fn an_https_upstream_behind_a_private_ca_is_proxied_over_http2() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start_tls(dir.path(), MockOptions::default(), |_| {}).await;
    assert!(h.mock.base_url().starts_with("https://"));

    let resp = chat(&h.client, &h.gw("openai", "/chat/completions"), false)
        .header("authorization", "Bearer sk-tls-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from the mock upstream."
    );

    // A stream, relayed event by event, over the same HTTP/2 connection.
    let resp = chat(&h.client, &h.gw("openai", "/chat/completions"), true)
        .header("authorization", "Bearer sk-tls-secret")
        .header("x-mock-chunks", "12")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert_eq!(
        text.matches("data: ").count(),
        1 + 12 + 1 + 1 + 1,
        "role, 12 tokens, finish, usage, [DONE]: {text}"
    );
    assert!(text.contains("tok11"), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    let seen = h.mock.requests();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.version, "HTTP/2.0", "ALPN chose h2");
        assert_eq!(
            request.header("authorization"),
            Some("Bearer sk-tls-secret")
        );
    }

    let entries = h.logs(2).await;
    for entry in &entries {
        let rec = &entry.record;
        assert_eq!(rec.outcome, RequestOutcome::Completed);
        assert!(rec.success);
        assert_eq!(rec.tokens_in, Some(4), "four prompt words");
    }
    assert_eq!(entries[0].record.tokens_out, Some(5));
    assert_eq!(entries[1].record.tokens_out, Some(12));
    assert!(entries[1].record.streamed);
    h.shutdown().await;
}

#[tokio::test]
async fn an_https_upstream_whose_ca_is_not_trusted_is_502_naming_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    // The mock's certificate is signed by its own CA; without `upstream_ca_file` only the
    // web's roots are trusted.
    let h = Harness::start_tls(dir.path(), MockOptions::default(), |c| {
        c.proxy.upstream_ca_file = None;
    })
    .await;
    let resp = chat(&h.client, &h.gw("openai", "/chat/completions"), false)
        .send()
        .await
        .unwrap();
    let (code, message) = gateway_error(resp, 502).await;
    assert_eq!(code, 2020);
    assert!(
        message.contains("`openai`") && message.contains("certificate"),
        "{message}"
    );
    assert!(h.mock.requests().is_empty(), "nothing was sent");
    let rec = h.logs(1).await[0].record.clone();
    assert_eq!(rec.outcome, RequestOutcome::UpstreamUnreachable);
    assert_eq!(rec.status_code, 502);
    h.shutdown().await;
}

/// Sends one request through each upstream client of the edge, one after another, so each
/// holds an established HTTP/2 connection; then opens `n` streams at once and returns how
/// many response heads arrived before the first stream ended.
async fn heads_before_the_first_stream_ends(h: &Harness, clients: usize, n: usize) -> usize {
    for _ in 0..clients {
        let resp = chat(&h.client, &h.gw("openai", "/chat/completions"), false)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let (events, mut seen) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..n {
        let (client, url, events) = (
            h.client.clone(),
            h.gw("openai", "/chat/completions"),
            events.clone(),
        );
        tokio::spawn(async move {
            let resp = chat(&client, &url, true)
                .header("x-mock-chunks", "10")
                .header("x-mock-chunk-delay-ms", "200")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            events.send("head").unwrap();
            resp.text().await.unwrap();
            events.send("end").unwrap();
        });
    }
    drop(events);
    let mut heads = 0;
    while let Some(event) = seen.recv().await {
        if event == "end" {
            break;
        }
        heads += 1;
    }
    heads
}

#[tokio::test]
async fn streams_past_a_providers_per_connection_limit_spread_over_connections() {
    const LIMIT: u32 = 4;
    let streams = 12;
    let dir = tempfile::tempdir().unwrap();
    let limited = MockOptions {
        max_h2_streams: LIMIT,
        ..MockOptions::default()
    };

    // One connection: the streams past the provider's limit wait for one to end.
    let h = Harness::start_tls(dir.path(), limited.clone(), |c| {
        c.proxy.http2_connections_per_host = 1;
    })
    .await;
    assert_eq!(heads_before_the_first_stream_ends(&h, 1, streams).await, 4);
    h.shutdown().await;

    // Four connections, taken in turn: all twelve are answered at once.
    let h = Harness::start_tls(dir.path(), limited, |c| {
        c.proxy.http2_connections_per_host = 4;
    })
    .await;
    assert_eq!(
        heads_before_the_first_stream_ends(&h, 4, streams).await,
        streams
    );
    assert!(h.mock.requests().iter().all(|r| r.version == "HTTP/2.0"));
    h.shutdown().await;
}
