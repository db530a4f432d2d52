//! The provider passthrough, end to end over real sockets: edge router ↔ mock upstream.

mod support;

use std::time::Duration;

use aigw_types::{MetadataValue, RequestOutcome};
use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{Harness, gateway_error};

fn chat_body(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "say hello to the gateway"}],
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

#[tokio::test]
async fn openai_chat_is_proxied_and_logged_with_usage_and_cost() {
    let h = Harness::start().await;
    let resp = h
        .client
        .post(h.gw("openai", "/chat/completions?trace=1"))
        .header("authorization", "Bearer sk-test-secret-123")
        .header("cf-aig-metadata", r#"{"user":"u-42","tier":3,"beta":true}"#)
        .header("cf-aig-event-id", "evt-7")
        .header("user-agent", "aigw-test/1.0")
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let log_id = resp.headers()["cf-aig-log-id"].to_str().unwrap().to_owned();
    assert_eq!(log_id.len(), 26, "ULID");
    assert_eq!(resp.headers()["cf-aig-event-id"], "evt-7");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from the mock upstream."
    );

    // The upstream saw the client's credentials and path/query, but none of the gateway headers.
    let seen = h.mock.requests();
    let req = seen.last().unwrap();
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(req.query.as_deref(), Some("trace=1"));
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header("authorization").as_deref(),
        Some("Bearer sk-test-secret-123")
    );
    assert!(
        req.headers.iter().all(|(k, _)| !k.starts_with("cf-aig-")),
        "{:?}",
        req.headers
    );

    let entries = h.logs(1).await;
    let entry = &entries[0];
    let rec = &entry.record;
    assert_eq!(rec.id.to_string(), log_id);
    assert_eq!(
        (rec.account_id.as_str(), rec.gateway_id.as_str()),
        ("acct1", "default")
    );
    assert_eq!(rec.provider, "openai");
    assert_eq!(rec.model, "gpt-4o-mini");
    assert_eq!(rec.model_type, "chat");
    assert_eq!(rec.path, "/chat/completions");
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.status_code, 200);
    assert!(rec.success && !rec.streamed && !rec.cached);
    assert_eq!(rec.outcome, RequestOutcome::Completed);
    assert_eq!(rec.tokens_in, Some(5), "five prompt words");
    assert_eq!(rec.tokens_out, Some(5), "five reply words");
    assert!(
        rec.cost.is_some_and(|c| c > 0.0),
        "priced from the table: {:?}",
        rec.cost
    );
    assert!(!rec.custom_cost);
    assert_eq!(rec.event_id.as_deref(), Some("evt-7"));
    assert_eq!(rec.metadata["user"], MetadataValue::String("u-42".into()));
    assert_eq!(rec.metadata["tier"], MetadataValue::Number(3.into()));
    assert_eq!(rec.metadata["beta"], MetadataValue::Bool(true));
    assert_eq!(rec.user_agent.as_deref(), Some("aigw-test/1.0"));
    assert!(
        rec.request_content_type
            .as_deref()
            .unwrap()
            .starts_with("application/json")
    );
    assert!(
        rec.response_content_type
            .as_deref()
            .unwrap()
            .starts_with("application/json")
    );
    assert!(rec.request_size > 0 && rec.response_size > 0);
    let req_body: Value = serde_json::from_slice(entry.request_body.as_ref().unwrap()).unwrap();
    assert_eq!(req_body["model"], "gpt-4o-mini");
    let resp_body: Value = serde_json::from_slice(entry.response_body.as_ref().unwrap()).unwrap();
    assert_eq!(resp_body["usage"]["completion_tokens"], 5);
    // Secrets never reach the log.
    let serialized = serde_json::to_string(rec).unwrap();
    assert!(!serialized.contains("sk-test-secret"), "{serialized}");
    h.shutdown().await;
}

#[tokio::test]
async fn sse_is_relayed_chunk_by_chunk_before_the_upstream_finishes() {
    let h = Harness::start().await;
    let resp = h
        .client
        .post(h.gw("openai", "/chat/completions"))
        .header("x-mock-chunks", "4")
        .header("x-mock-chunk-delay-ms", "300")
        .json(&chat_body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "), "{first:?}");
    // The upstream is still producing (it pauses between chunks), so nothing can have been logged:
    // the edge relayed the first chunk without waiting for the whole body.
    assert!(h.sink.is_empty(), "a record exists before the stream ended");
    let mut all = first.to_vec();
    while let Some(chunk) = stream.next().await {
        all.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(all).unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let content: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, "tok0 tok1 tok2 tok3");

    let rec = h.logs(1).await[0].record.clone();
    assert!(rec.streamed && rec.success);
    assert_eq!(
        rec.tokens_out,
        Some(4),
        "usage read from the final SSE chunk"
    );
    assert_eq!(rec.tokens_in, Some(5));
    assert_eq!(rec.response_size as usize, text.len());
    h.shutdown().await;
}

#[tokio::test]
async fn client_disconnect_mid_stream_is_logged_as_aborted() {
    let h = Harness::start().await;
    let resp = h
        .client
        .post(h.gw("openai", "/chat/completions"))
        .header("x-mock-chunks", "50")
        .header("x-mock-chunk-delay-ms", "200")
        .json(&chat_body(true))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    let rec = h.logs(1).await[0].record.clone();
    assert_eq!(rec.outcome, RequestOutcome::ClientAborted);
    assert!(!rec.success);
    assert_eq!(rec.status_code, 200, "the upstream had answered");
    assert!(
        rec.error
            .as_deref()
            .unwrap()
            .contains("client disconnected")
    );
    h.shutdown().await;
}

#[tokio::test]
async fn client_disconnect_before_the_upstream_answers_is_logged() {
    let h = Harness::start().await;
    let req = h
        .client
        .post(h.gw("openai", "/chat/completions"))
        .header("x-mock-delay-ms", "3000")
        .json(&chat_body(false))
        .send();
    let _ = tokio::time::timeout(Duration::from_millis(300), req).await;
    let rec = h.logs(1).await[0].record.clone();
    assert_eq!(rec.outcome, RequestOutcome::ClientAborted);
    assert_eq!(rec.status_code, 499);
    h.shutdown().await;
}

#[tokio::test]
async fn upstream_errors_are_relayed_unchanged_and_logged_as_failures() {
    let h = Harness::start().await;
    for status in [400u16, 429, 500, 503] {
        let resp = h
            .client
            .post(h.gw("openai", "/chat/completions"))
            .header("x-mock-status", status.to_string())
            .json(&chat_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status);
        assert!(resp.headers().contains_key("cf-aig-log-id"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body["error"]["message"],
            format!("mock injected {status}"),
            "provider body relayed"
        );
    }
    let entries = h.logs(4).await;
    let mut statuses: Vec<u16> = entries.iter().map(|e| e.record.status_code).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [400, 429, 500, 503]);
    assert!(
        entries
            .iter()
            .all(|e| !e.record.success && e.record.outcome == RequestOutcome::Completed)
    );
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"aigw_upstream_errors_total{provider="openai",kind="status_5xx"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"aigw_upstream_errors_total{provider="openai",kind="status_4xx"} 2"#),
        "{metrics}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn unreachable_upstream_is_502_naming_the_provider() {
    // A port that was free a moment ago: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = Harness::start_with(|c| {
        c.providers.get_mut("groq").unwrap().base_url = format!("http://{closed}/openai/v1");
    })
    .await;
    let resp = h
        .client
        .post(h.gw("groq", "/chat/completions"))
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("cf-aig-log-id"));
    let (code, message) = gateway_error(resp, 502).await;
    assert_eq!(code, 2020);
    assert!(
        message.contains("`groq`") && message.contains("unreachable"),
        "{message}"
    );
    let rec = h.logs(1).await[0].record.clone();
    assert_eq!(rec.outcome, RequestOutcome::UpstreamUnreachable);
    assert_eq!(rec.status_code, 502);
    h.shutdown().await;
}

#[tokio::test]
async fn upstream_timeout_is_504_naming_the_provider() {
    let h = Harness::start().await;
    let resp = h
        .client
        .post(h.gw("anthropic", "/v1/messages"))
        .header("x-mock-delay-ms", "5000")
        .header("cf-aig-request-timeout", "200")
        .json(&json!({"model": "claude-3-5-haiku-latest", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let (code, message) = gateway_error(resp, 504).await;
    assert_eq!(code, 2021);
    assert!(
        message.contains("`anthropic`") && message.contains("200 ms"),
        "{message}"
    );
    let rec = h.logs(1).await[0].record.clone();
    assert_eq!(rec.outcome, RequestOutcome::UpstreamTimeout);
    assert_eq!(rec.status_code, 504);
    h.shutdown().await;
}

#[tokio::test]
async fn a_stream_that_stalls_or_breaks_is_ended_and_logged() {
    let h = Harness::start().await;
    let stalled = h
        .client
        .post(h.gw("openai", "/chat/completions"))
        .header("x-mock-chunks", "3")
        .header("x-mock-chunk-delay-ms", "5000")
        .header("cf-aig-request-timeout", "300")
        .json(&chat_body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(stalled.status(), 200);
    assert!(
        stalled.bytes().await.is_err(),
        "the client sees the stream fail"
    );

    let reset = h
        .client
        .post(h.gw("openai", "/chat/completions"))
        .header("x-mock-chunks", "10")
        .header("x-mock-reset", "mid-stream")
        .json(&chat_body(true))
        .send()
        .await
        .unwrap();
    assert!(reset.bytes().await.is_err(), "the client sees the reset");

    let entries = h.logs(2).await;
    let outcome = |o| {
        entries
            .iter()
            .find(|e| e.record.outcome == o)
            .map(|e| e.record.clone())
    };
    let timed_out = outcome(RequestOutcome::UpstreamTimeout).expect("stall logged");
    assert!(timed_out.error.unwrap().contains("sent nothing"));
    let broken = outcome(RequestOutcome::UpstreamBodyError).expect("reset logged");
    assert!(!broken.success && broken.response_size > 0);
    h.shutdown().await;
}

#[tokio::test]
async fn connection_reset_before_headers_is_502() {
    let h = Harness::start().await;
    let resp = h
        .client
        .post(h.gw("openai", "/chat/completions"))
        .header("x-mock-reset", "before-headers")
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    let (code, _) = gateway_error(resp, 502).await;
    assert_eq!(code, 2020);
    h.shutdown().await;
}

#[tokio::test]
async fn anthropic_workers_ai_google_and_cohere_usage_is_extracted() {
    let h = Harness::start().await;
    let anthropic_body = |stream: bool| {
        json!({"model": "claude-3-5-haiku-latest", "max_tokens": 50, "stream": stream,
               "messages": [{"role": "user", "content": "one two three"}]})
    };
    for stream in [false, true] {
        let resp = h
            .client
            .post(h.gw("anthropic", "/v1/messages"))
            .header("x-api-key", "ak-secret")
            .header("anthropic-version", "2023-06-01")
            .header("x-mock-chunks", "6")
            .json(&anthropic_body(stream))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    let workers = h
        .client
        .post(h.gw("workers-ai", "/@cf/meta/llama-3.1-8b-instruct"))
        .json(&json!({"prompt": "four words right here"}))
        .send()
        .await
        .unwrap();
    assert_eq!(workers.status(), 200);
    let body: Value = workers.json().await.unwrap();
    assert_eq!(body["success"], true);
    let workers_stream = h
        .client
        .post(h.gw("workers-ai", "/@cf/meta/llama-3.1-8b-instruct"))
        .header("x-mock-chunks", "3")
        .json(&json!({"prompt": "four words right here", "stream": true}))
        .send()
        .await
        .unwrap();
    workers_stream.bytes().await.unwrap();
    let google = h
        .client
        .post(h.gw(
            "google-ai-studio",
            "/v1beta/models/gemini-1.5-flash:generateContent",
        ))
        .json(&json!({"contents": [{"parts": [{"text": "two words"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(google.status(), 200);
    google.bytes().await.unwrap();
    let cohere = h
        .client
        .post(h.gw("cohere", "/v2/chat"))
        .json(&json!({"model": "command-r", "messages": [{"role": "user", "content": "a b c d e f"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(cohere.status(), 200);
    cohere.bytes().await.unwrap();

    let entries = h.logs(6).await;
    let find = |provider: &str, streamed: bool| {
        entries
            .iter()
            .find(|e| e.record.provider == provider && e.record.streamed == streamed)
            .map(|e| e.record.clone())
            .unwrap_or_else(|| panic!("{provider} streamed={streamed} missing"))
    };
    for streamed in [false, true] {
        let rec = find("anthropic", streamed);
        assert_eq!(
            (rec.tokens_in, rec.tokens_out),
            (Some(3), Some(6)),
            "anthropic streamed={streamed}"
        );
        assert_eq!(rec.model, "claude-3-5-haiku-latest");
        assert_eq!(rec.model_type, "chat");
    }
    let rec = find("workers-ai", false);
    assert_eq!(rec.model, "@cf/meta/llama-3.1-8b-instruct");
    assert_eq!((rec.tokens_in, rec.tokens_out), (Some(4), Some(5)));
    let rec = find("workers-ai", true);
    assert_eq!((rec.tokens_in, rec.tokens_out), (Some(4), Some(3)));
    let rec = find("google-ai-studio", false);
    assert_eq!(rec.model, "gemini-1.5-flash");
    assert_eq!((rec.tokens_in, rec.tokens_out), (Some(2), Some(5)));
    let rec = find("cohere", false);
    assert_eq!((rec.tokens_in, rec.tokens_out), (Some(6), Some(5)));
    h.shutdown().await;
}

#[tokio::test]
async fn get_requests_and_embeddings_pass_through() {
    let h = Harness::start().await;
    let models = h
        .client
        .get(h.gw("openai", "/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    let body: Value = models.json().await.unwrap();
    assert_eq!(body["object"], "list");
    let emb = h
        .client
        .post(h.gw("openai", "/embeddings"))
        .json(&json!({"model": "text-embedding-3-small", "input": ["alpha beta", "gamma"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(emb.status(), 200);
    let body: Value = emb.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    let entries = h.logs(2).await;
    let emb = entries
        .iter()
        .find(|e| e.record.path == "/embeddings")
        .unwrap();
    assert_eq!(emb.record.model_type, "embedding");
    assert_eq!(emb.record.tokens_in, Some(3));
    let get = entries.iter().find(|e| e.record.path == "/models").unwrap();
    assert_eq!(get.record.method, "GET");
    h.shutdown().await;
}

#[tokio::test]
async fn custom_cost_and_custom_providers() {
    let h = Harness::start().await;
    let resp = h
        .client
        .post(h.gw("custom-acme", "/chat/completions"))
        .header(
            "cf-aig-custom-cost",
            r#"{"per_token_in": 0.5, "per_token_out": 1.0}"#,
        )
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = h
        .client
        .post(h.gw("openai", "/chat/completions"))
        .header("cf-aig-custom-cost", r#"{"total_cost": 0.25}"#)
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let entries = h.logs(2).await;
    let acme = entries
        .iter()
        .find(|e| e.record.provider == "custom-acme")
        .unwrap();
    assert!(acme.record.custom_cost);
    assert_eq!(acme.record.cost, Some(5.0 * 0.5 + 5.0 * 1.0));
    let openai = entries
        .iter()
        .find(|e| e.record.provider == "openai")
        .unwrap();
    assert_eq!(openai.record.cost, Some(0.25));
    h.shutdown().await;
}

#[tokio::test]
async fn collect_log_headers_control_what_is_kept() {
    let h = Harness::start().await;
    let off = h
        .client
        .post(h.gw("openai", "/chat/completions"))
        .header("cf-aig-collect-log", "false")
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(off.status(), 200);
    assert!(
        !off.headers().contains_key("cf-aig-log-id"),
        "nothing logged, no log id"
    );
    let no_payload = h
        .client
        .post(h.gw("openai", "/chat/completions"))
        .header("cf-aig-collect-log-payload", "false")
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(no_payload.status(), 200);
    let entries = h.logs(1).await;
    let entry = &entries[0];
    assert!(!entry.record.payload_collected);
    assert!(entry.request_body.is_none() && entry.response_body.is_none());
    assert_eq!(entry.record.tokens_out, Some(5), "usage is still recorded");
    h.shutdown().await;
    // After shutdown every record is flushed: exactly the one logged request.
}

#[tokio::test]
async fn gateway_errors_have_specific_statuses_and_json_bodies() {
    let h = Harness::start_with(|c| c.proxy.max_body_bytes = 1024).await;
    let cases: Vec<(reqwest::RequestBuilder, u16, u64, &str)> = vec![
        (
            h.client.post(h.gw("nope", "/x")).body("{}"),
            400,
            2002,
            "unknown provider `nope`",
        ),
        (
            h.client.post(h.gw("custom-missing", "/x")).body("{}"),
            400,
            2002,
            "custom-missing",
        ),
        (
            h.client.post(h.url("/v1/acct1/default/openai")).body("{}"),
            400,
            2001,
            "missing upstream path",
        ),
        (
            h.client.post(h.url("/v1/acct1")).body("{}"),
            400,
            2001,
            "gateway id",
        ),
        (
            h.client
                .post(h.url("/v1/acct1/prod/openai/chat/completions"))
                .body("{}"),
            404,
            2010,
            "gateway `prod` not found",
        ),
        (
            h.client
                .post(h.gw("openai", "/chat/completions"))
                .body(vec![b'x'; 2048]),
            413,
            2011,
            "1024 bytes",
        ),
        (
            h.client
                .post(h.gw("openai", "/chat/completions"))
                .header("cf-aig-metadata", r#"{"a":[1]}"#)
                .body("{}"),
            400,
            2004,
            "`a` is an array",
        ),
        (
            h.client
                .post(h.gw("openai", "/chat/completions"))
                .header("cf-aig-collect-log", "perhaps")
                .body("{}"),
            400,
            2003,
            "cf-aig-collect-log",
        ),
        (
            h.client
                .post(h.gw("openai", "/chat/completions"))
                .header("cf-aig-custom-cost", "cheap")
                .body("{}"),
            400,
            2003,
            "cf-aig-custom-cost",
        ),
        (
            h.client.get(h.url("/nowhere")),
            404,
            2012,
            "no route for GET /nowhere",
        ),
    ];
    for (req, status, code, needle) in cases {
        let resp = req.send().await.unwrap();
        let (got_code, message) = gateway_error(resp, status).await;
        assert_eq!(got_code, code, "{message}");
        assert!(
            message.contains(needle),
            "expected `{needle}` in `{message}`"
        );
    }
    // Chunked bodies without Content-Length are limited too.
    let chunks =
        futures_util::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 512])));
    let resp = h
        .client
        .post(h.gw("openai", "/chat/completions"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let (code, _) = gateway_error(resp, 413).await;
    assert_eq!(code, 2011);
    assert!(
        h.sink.is_empty(),
        "rejected requests never reach the upstream or the log"
    );
    assert!(h.mock.requests().is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let h = Harness::start().await;
    let health = h.client.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = h.client.get(h.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    h.client
        .post(h.gw("openai", "/chat/completions"))
        .json(&chat_body(false))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    h.logs(1).await;
    let metrics = h.client.get(h.url("/metrics")).send().await.unwrap();
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().await.unwrap();
    for needle in [
        r#"aigw_http_requests_total{provider="openai",status="2xx"} 1"#,
        "aigw_http_request_duration_seconds_count 1",
        "aigw_log_queue_depth 0",
        "aigw_logs_written_total 1",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn responses_cut_at_the_limit_keep_their_usage() {
    let h = Harness::start_with(|c| c.proxy.max_body_bytes = 4096).await;
    for stream in [false, true] {
        let resp = h
            .client
            .post(h.gw("openai", "/chat/completions"))
            .header("x-mock-chunks", "3000")
            .json(&chat_body(stream))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let relayed = resp.bytes().await.unwrap();
        assert!(relayed.len() > 4096, "the client gets the whole body");
    }
    let entries = h.logs(2).await;
    for entry in entries {
        let rec = &entry.record;
        assert!(rec.response_body_truncated, "{rec:?}");
        assert_eq!(
            entry.response_body.as_ref().unwrap().len(),
            4096,
            "the stored copy is cut"
        );
        assert!(rec.response_size > 4096);
        assert_eq!(
            (rec.tokens_in, rec.tokens_out),
            (Some(5), Some(3000)),
            "streamed={}",
            rec.streamed
        );
        assert!(rec.cost.is_some_and(|c| c > 0.0));
    }
    h.shutdown().await;
}

/// A request head longer than `proxy.max_request_head_bytes` (8 KiB by default: the size of
/// each connection's read buffer) is refused with 431 before anything goes upstream; the limit
/// can be raised.
#[tokio::test]
async fn request_heads_longer_than_the_limit_get_431() {
    async fn status_with_header(h: &Harness, header_bytes: usize) -> u16 {
        h.client
            .post(h.gw("openai", "/chat/completions"))
            .header("x-padding", "p".repeat(header_bytes))
            .json(&chat_body(false))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    let h = Harness::start().await;
    assert_eq!(status_with_header(&h, 6 * 1024).await, 200);
    assert_eq!(status_with_header(&h, 12 * 1024).await, 431);
    assert_eq!(
        h.mock.requests().len(),
        1,
        "the refused request never reached the upstream"
    );

    let h = Harness::start_with(|c| c.proxy.max_request_head_bytes = 32 * 1024).await;
    assert_eq!(status_with_header(&h, 12 * 1024).await, 200);
    assert_eq!(status_with_header(&h, 40 * 1024).await, 431);
}
