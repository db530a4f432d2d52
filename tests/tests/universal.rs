//! The Universal Endpoint (`POST /v1/{account}/{gateway}`), end to end over real sockets:
//! retries with backoff against the mock upstream's injected failures, fallback to the next
//! step, per-attempt timeouts, one log row per attempt, and validation that names the field.

mod support;

use std::time::Duration;

use aigw_edge::{Backoff, GatewaySettings, Retry};
use aigw_types::RequestOutcome;
use serde_json::{Value, json};
use support::{Harness, gateway_error};

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

fn step(headers: Value) -> Value {
    json!({"provider": "openai", "endpoint": "chat/completions",
           "headers": headers, "query": chat("gpt-4o-mini")})
}

async fn universal(h: &Harness, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = h
        .client
        .post(h.url("/v1/acct1/default"))
        .header("authorization", "Bearer sk-from-request")
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_failing_step_falls_back_to_the_next_which_answers_with_its_step() {
    let h = Harness::start().await;
    let body = json!([
        step(json!({"x-mock-status": "503"})),
        {"provider": "anthropic", "endpoint": "v1/messages",
         "headers": {"x-api-key": "sk-ant", "anthropic-version": "2023-06-01"},
         "query": {"model": "claude-3-5-haiku-latest", "max_tokens": 20,
                   "messages": [{"role": "user", "content": "hello"}]}},
    ]);
    let resp = universal(&h, &body, &[("cf-aig-event-id", "evt-fallback")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cf-aig-step"], "1");
    let log_id = resp.headers()["cf-aig-log-id"].to_str().unwrap().to_owned();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["type"], "message", "the anthropic step's own answer");

    let logs = h.logs(2).await;
    let rows: Vec<_> = logs.iter().map(|e| &e.record).collect();
    assert_eq!(
        rows.iter()
            .map(|r| (r.step, r.attempt, r.provider.as_str(), r.status_code))
            .collect::<Vec<_>>(),
        [(0, 1, "openai", 503), (1, 1, "anthropic", 200)]
    );
    assert!(
        rows.iter()
            .all(|r| r.event_id.as_deref() == Some("evt-fallback"))
    );
    assert_eq!(rows[1].id.to_string(), log_id);
    assert!(rows[1].tokens_in.is_some(), "usage read per wire format");
}

#[tokio::test]
async fn a_step_is_retried_with_its_backoff_until_the_upstream_recovers() {
    let h = Harness::start().await;
    let mut first = step(json!({"x-mock-fail-first": "2", "x-mock-fail-key": "recovering"}));
    first["config"] = json!({"maxAttempts": 3, "retryDelay": 150, "backoff": "linear"});
    let resp = universal(&h, &json!([first, step(json!({}))]), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cf-aig-step"], "0");
    resp.bytes().await.unwrap();

    let logs = h.logs(3).await;
    let rows: Vec<_> = logs.iter().map(|e| &e.record).collect();
    assert_eq!(
        rows.iter()
            .map(|r| (r.step, r.attempt, r.status_code))
            .collect::<Vec<_>>(),
        [(0, 1, 503), (0, 2, 503), (0, 3, 200)]
    );
    let event = rows[0].event_id.clone();
    assert!(event.is_some(), "an event id is minted to tie the attempts");
    assert!(rows.iter().all(|r| r.event_id == event));
    // Linear backoff of 150 ms: at least 150 ms after attempt 1 ended, 300 ms after attempt 2.
    let gap =
        |a: usize| rows[a + 1].created_at_ms - rows[a].created_at_ms - rows[a].duration_ms as i64;
    assert!(gap(0) >= 150, "first wait {} ms", gap(0));
    assert!(gap(1) >= 300, "second wait {} ms", gap(1));
}

#[tokio::test]
async fn request_headers_set_the_retries_and_the_last_attempt_answers_whatever_it_is() {
    let h = Harness::start().await;
    let resp = universal(
        &h,
        &step(json!({"x-mock-status": "429"})),
        &[
            ("cf-aig-max-attempts", "2"),
            ("cf-aig-retry-delay", "10"),
            ("cf-aig-backoff", "exponential"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 429, "the upstream's own answer, relayed");
    assert_eq!(resp.headers()["cf-aig-step"], "0");
    resp.bytes().await.unwrap();
    let logs = h.logs(2).await;
    assert_eq!(
        logs.iter()
            .map(|e| (e.record.attempt, e.record.status_code))
            .collect::<Vec<_>>(),
        [(1, 429), (2, 429)]
    );
}

#[tokio::test]
async fn an_attempt_past_its_request_timeout_gives_way_to_the_next_step() {
    let h = Harness::start().await;
    let mut slow = step(json!({"x-mock-delay-ms": "3000"}));
    slow["config"] = json!({"requestTimeout": 200});
    let started = std::time::Instant::now();
    let resp = universal(&h, &json!([slow, step(json!({}))]), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cf-aig-step"], "1");
    assert!(started.elapsed() < Duration::from_millis(2500));
    resp.bytes().await.unwrap();
    let logs = h.logs(2).await;
    assert_eq!(logs[0].record.outcome, RequestOutcome::UpstreamTimeout);
    assert_eq!(logs[0].record.status_code, 504);
    assert_eq!(logs[1].record.status_code, 200);
}

#[tokio::test]
async fn step_headers_win_over_the_requests_and_a_single_object_is_one_step() {
    let h = Harness::start().await;
    let resp = universal(
        &h,
        &step(json!({"authorization": "Bearer sk-from-step"})),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let seen = h.mock.requests();
    let request = seen.last().unwrap();
    assert_eq!(request.path, "/v1/chat/completions");
    let auth: Vec<&str> = request
        .headers
        .iter()
        .filter(|(k, _)| k == "authorization")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(auth, ["Bearer sk-from-step"]);
}

#[tokio::test]
async fn invalid_requests_are_refused_naming_the_step_and_field() {
    let h = Harness::start_with(|c| c.proxy.max_universal_steps = 3).await;
    let cases = [
        (json!([]), "`body`"),
        (json!("steps"), "`body`"),
        (
            json!([{"endpoint": "chat/completions", "query": {}}]),
            "`steps[0].provider`",
        ),
        (
            json!([step(json!({})), {"provider": "nope", "endpoint": "x", "query": {}}]),
            "`steps[1].provider`",
        ),
        (
            json!([{"provider": "openai", "query": {}}]),
            "`steps[0].endpoint`",
        ),
        (
            json!([{"provider": "openai", "endpoint": "chat/completions"}]),
            "`steps[0].query`",
        ),
        (
            json!([{"provider": "openai", "endpoint": "c", "query": {}, "config": {"maxAttempts": 9}}]),
            "`steps[0].config.maxAttempts`",
        ),
        (
            json!([{"provider": "openai", "endpoint": "c", "query": {}, "config": {"retryDelay": 9000}}]),
            "`steps[0].config.retryDelay`",
        ),
        (
            json!([{"provider": "openai", "endpoint": "c", "query": {}, "headers": {"x": {"a": 1}}}]),
            "`steps[0].headers.x`",
        ),
        (
            json!([
                step(json!({})),
                step(json!({})),
                step(json!({})),
                step(json!({}))
            ]),
            "`body`",
        ),
    ];
    for (body, field) in cases {
        let resp = universal(&h, &body, &[]).await;
        let (code, message) = gateway_error(resp, 400).await;
        assert_eq!(code, 2006, "{message}");
        assert!(message.contains(field), "{body}: {message}");
    }
    let resp = universal(&h, &step(json!({})), &[("cf-aig-max-attempts", "0")]).await;
    let (_, message) = gateway_error(resp, 400).await;
    assert!(message.contains("cf-aig-max-attempts"), "{message}");
    assert!(
        h.mock.requests().is_empty(),
        "nothing invalid reaches the upstream"
    );
}

#[tokio::test]
async fn the_gateways_retry_settings_are_the_default() {
    let h = Harness::start().await;
    h.gateways.upsert(
        "acct1",
        "retrying",
        GatewaySettings {
            retry: Retry {
                max_attempts: 2,
                delay: Duration::from_millis(5),
                backoff: Backoff::Constant,
            },
            ..GatewaySettings::default()
        },
    );
    let resp = h
        .client
        .post(h.url("/v1/acct1/retrying"))
        .json(&step(json!({"x-mock-status": "500"})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    resp.bytes().await.unwrap();
    let logs = h.logs(2).await;
    assert_eq!(
        logs.iter().map(|e| e.record.attempt).collect::<Vec<_>>(),
        [1, 2]
    );
}
