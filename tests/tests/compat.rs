//! The OpenAI-compatible endpoint (`POST /v1/{account}/{gateway}/compat/chat/completions`), end
//! to end over real sockets against the mock upstream: every translated provider in JSON and in
//! streams (relayed as they arrive), tool calls both ways, a passthrough provider, the native
//! exchange in the log row (provider, path, usage), upstream errors in OpenAI's shape, and the
//! gateway's own 400s.

mod support;

use aigw_edge::GatewaySettings;
use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{Harness, gateway_error};

const REPLY: &str = "Hello from the mock upstream.";
const PATH: &str = "/v1/acct1/default/compat/chat/completions";

/// A translated provider: its `model`, the native path the mock sees, the header that carries
/// the key there, and the model recorded in the log.
struct Case {
    model: &'static str,
    provider: &'static str,
    upstream_path: &'static str,
    key_header: &'static str,
    logged_model: &'static str,
}

const CASES: [Case; 4] = [
    Case {
        model: "anthropic/claude-sonnet-4-20250514",
        provider: "anthropic",
        upstream_path: "/v1/messages",
        key_header: "x-api-key",
        logged_model: "claude-sonnet-4-20250514",
    },
    Case {
        model: "google-ai-studio/gemini-2.0-flash",
        provider: "google-ai-studio",
        upstream_path: "/v1beta/models/gemini-2.0-flash:generateContent",
        key_header: "x-goog-api-key",
        logged_model: "gemini-2.0-flash",
    },
    Case {
        model: "workers-ai/@cf/meta/llama-3.1-8b-instruct",
        provider: "workers-ai",
        upstream_path: "/client/v4/accounts/acct1/ai/run/@cf/meta/llama-3.1-8b-instruct",
        key_header: "authorization",
        logged_model: "@cf/meta/llama-3.1-8b-instruct",
    },
    Case {
        model: "cohere/command-r-plus",
        provider: "cohere",
        upstream_path: "/v2/chat",
        key_header: "authorization",
        logged_model: "command-r-plus",
    },
];

fn chat(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
        "max_tokens": 50,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello to the gateway"}
        ]
    })
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}])
}

async fn send(h: &Harness, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = h
        .client
        .post(h.url(PATH))
        .header("authorization", "Bearer sk-compat-key")
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// The data payloads of an OpenAI stream, asserting it ends with `[DONE]`.
fn sse_chunks(text: &str) -> Vec<Value> {
    let datas: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(datas.last(), Some(&"[DONE]"), "{text}");
    datas[..datas.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// Text deltas joined, tool-call arguments joined per call (name, arguments), the finish
/// reason and the usage of a chunk stream.
fn stream_summary(chunks: &[Value]) -> (String, Vec<(String, String)>, String, Value) {
    let (mut text, mut calls, mut finish, mut usage) = (
        String::new(),
        Vec::<(String, String)>::new(),
        String::new(),
        Value::Null,
    );
    for chunk in chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        if !chunk["usage"].is_null() {
            usage = chunk["usage"].clone();
        }
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        text.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
        for call in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(name) = call["function"]["name"].as_str() {
                calls.push((name.to_owned(), String::new()));
            }
            let index = call["index"].as_u64().unwrap() as usize;
            calls[index]
                .1
                .push_str(call["function"]["arguments"].as_str().unwrap_or_default());
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            finish = reason.to_owned();
        }
    }
    (text, calls, finish, usage)
}

#[tokio::test]
async fn translated_providers_answer_chat_completions_and_log_the_native_exchange() {
    let h = Harness::start().await;
    for (i, case) in CASES.iter().enumerate() {
        h.mock.clear_requests();
        let resp = send(
            &h,
            &chat(case.model, false),
            &[("cf-aig-metadata", r#"{"case": "json"}"#)],
        )
        .await;
        assert_eq!(resp.status(), 200, "{}", case.provider);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let log_id = resp.headers()["cf-aig-log-id"].to_str().unwrap().to_owned();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["object"], "chat.completion", "{body}");
        assert_eq!(body["id"], format!("chatcmpl-{log_id}"));
        assert_eq!(body["choices"][0]["message"]["role"], "assistant");
        assert_eq!(body["choices"][0]["message"]["content"], REPLY, "{body}");
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        let usage = &body["usage"];
        assert_eq!(usage["completion_tokens"], 5, "{}: {body}", case.provider);
        assert!(usage["prompt_tokens"].as_u64().unwrap() >= 4, "{body}");

        // The provider saw its own format, with the key where it expects it.
        let seen = h.mock.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, case.upstream_path);
        let key = seen[0].header(case.key_header).unwrap();
        assert!(key.ends_with("sk-compat-key"), "{}: {key}", case.provider);
        let native = seen[0].body_json().unwrap();
        let system = match case.provider {
            "anthropic" => native["system"].clone(),
            "google-ai-studio" => native["systemInstruction"]["parts"][0]["text"].clone(),
            _ => native["messages"][0]["content"].clone(),
        };
        assert_eq!(system, "You are terse.", "{}: {native}", case.provider);
        assert!(seen[0].header("cf-aig-metadata").is_none());

        // The log row is the native exchange, usage read from the native answer.
        let logs = h.logs(i + 1).await;
        let entry = &logs[i];
        let row = &entry.record;
        assert_eq!(row.id.to_string(), log_id);
        assert_eq!(row.provider, case.provider);
        assert_eq!(
            row.path,
            case.upstream_path
                .strip_prefix("/client/v4/accounts/acct1/ai/run")
                .unwrap_or(case.upstream_path)
        );
        assert_eq!(row.model, case.logged_model);
        assert_eq!(row.status_code, 200);
        assert!(row.success);
        assert_eq!(
            row.tokens_in,
            usage["prompt_tokens"].as_u64(),
            "{}",
            case.provider
        );
        assert_eq!(row.tokens_out, Some(5));
        assert!(row.metadata.contains_key("case"));
        let logged_request: Value =
            serde_json::from_slice(entry.request_body.as_ref().unwrap()).unwrap();
        assert_eq!(logged_request, native, "the native request is logged");
        let logged_response = String::from_utf8_lossy(entry.response_body.as_ref().unwrap());
        assert!(
            !logged_response.contains("chat.completion"),
            "the native answer is logged: {logged_response}"
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn streams_are_translated_chunk_by_chunk_with_usage_last() {
    let h = Harness::start().await;
    for (i, case) in CASES.iter().enumerate() {
        let resp = send(
            &h,
            &chat(case.model, true),
            &[("x-mock-chunks", "4"), ("x-mock-chunk-delay-ms", "100")],
        )
        .await;
        assert_eq!(resp.status(), 200, "{}", case.provider);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert!(resp.headers().get("content-length").is_none());
        let mut stream = resp.bytes_stream();
        let first = stream.next().await.unwrap().unwrap();
        // Nothing is logged before the upstream finished: the first chunk was not held back.
        assert_eq!(
            h.sink.len(),
            i,
            "{}: relayed before the upstream ended",
            case.provider
        );
        let mut all = first.to_vec();
        while let Some(chunk) = stream.next().await {
            all.extend_from_slice(&chunk.unwrap());
        }
        let chunks = sse_chunks(&String::from_utf8(all).unwrap());
        let (text, calls, finish, usage) = stream_summary(&chunks);
        assert_eq!(text, "tok0 tok1 tok2 tok3", "{}", case.provider);
        assert!(calls.is_empty());
        assert_eq!(finish, "stop");
        assert_eq!(
            chunks.last().unwrap()["choices"],
            json!([]),
            "usage comes last"
        );
        assert_eq!(usage["completion_tokens"], 4, "{}: {usage}", case.provider);

        let logs = h.logs(i + 1).await;
        let row = &logs[i].record;
        assert_eq!(row.provider, case.provider);
        assert!(row.streamed, "{}", case.provider);
        assert_eq!(row.tokens_out, Some(4), "{}", case.provider);
        assert_eq!(row.tokens_in, usage["prompt_tokens"].as_u64());
    }
    h.shutdown().await;
}

#[tokio::test]
async fn tool_calls_are_translated_both_ways() {
    let h = Harness::start().await;
    for case in &CASES {
        // The model calls the tool: JSON ...
        let mut body = chat(case.model, false);
        body["tools"] = weather_tool();
        let resp = send(&h, &body, &[]).await;
        assert_eq!(resp.status(), 200, "{}", case.provider);
        let answer: Value = resp.json().await.unwrap();
        let choice = &answer["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{answer}");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        let arguments: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(arguments, json!({"location": "Paris"}), "{}", case.provider);
        let call_id = call["id"].as_str().unwrap().to_owned();

        // ... and streamed, as incremental tool_calls deltas.
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let text = send(&h, &body, &[]).await.text().await.unwrap();
        let (_, calls, finish, _) = stream_summary(&sse_chunks(&text));
        assert_eq!(finish, "tool_calls", "{}: {text}", case.provider);
        assert_eq!(calls.len(), 1, "{text}");
        assert_eq!(calls[0].0, "get_weather");
        let streamed: Value = serde_json::from_str(&calls[0].1).unwrap();
        assert_eq!(streamed, json!({"location": "Paris"}));

        // The result goes back in the history in the provider's own form.
        h.mock.clear_requests();
        let mut follow_up = chat(case.model, false);
        let messages = follow_up["messages"].as_array_mut().unwrap();
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
        messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": "sunny, 21 C"}));
        let resp = send(&h, &follow_up, &[]).await;
        assert_eq!(resp.status(), 200, "{}", case.provider);
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["choices"][0]["message"]["content"], REPLY);
        let native = h.mock.requests()[0].body_json().unwrap();
        let (call_part, result_part) = match case.provider {
            "anthropic" => (
                native["messages"][1]["content"][0].clone(),
                native["messages"][2]["content"][0].clone(),
            ),
            "google-ai-studio" => (
                native["contents"][1]["parts"][0].clone(),
                native["contents"][2]["parts"][0].clone(),
            ),
            _ => (native["messages"][2].clone(), native["messages"][3].clone()),
        };
        let expected = match case.provider {
            "anthropic" => (
                json!({"type": "tool_use", "id": call_id, "name": "get_weather", "input": {"location": "Paris"}}),
                json!({"type": "tool_result", "tool_use_id": call_id, "content": "sunny, 21 C"}),
            ),
            "google-ai-studio" => (
                json!({"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}),
                json!({"functionResponse": {"name": "get_weather", "response": {"result": "sunny, 21 C"}}}),
            ),
            "workers-ai" => (
                json!({"role": "assistant", "content": "", "tool_calls": [
                    {"id": call_id, "name": "get_weather", "arguments": {"location": "Paris"}}]}),
                json!({"role": "tool", "tool_call_id": call_id, "name": "get_weather", "content": "sunny, 21 C"}),
            ),
            _ => (
                json!({"role": "assistant", "tool_calls": [{"id": call_id, "type": "function",
                       "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}]}),
                json!({"role": "tool", "tool_call_id": call_id, "content": "sunny, 21 C"}),
            ),
        };
        assert_eq!((call_part, result_part), expected, "{}", case.provider);
    }
    h.shutdown().await;
}

#[tokio::test]
async fn openai_compatible_providers_pass_through_with_the_bare_model() {
    let h = Harness::start().await;
    let resp = send(&h, &chat("groq/llama-3.1-8b-instant", false), &[]).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["model"], "llama-3.1-8b-instant",
        "the upstream's own answer"
    );
    assert_eq!(body["choices"][0]["message"]["content"], REPLY);
    let seen = &h.mock.requests()[0];
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.header("authorization"), Some("Bearer sk-compat-key"));
    assert_eq!(seen.body_json().unwrap()["model"], "llama-3.1-8b-instant");

    let text = send(&h, &chat("groq/llama-3.1-8b-instant", true), &[])
        .await
        .text()
        .await
        .unwrap();
    let (content, _, finish, usage) = stream_summary(&sse_chunks(&text));
    assert_eq!((content.as_str(), finish.as_str()), (REPLY, "stop"));
    assert_eq!(usage["completion_tokens"], 5);

    let logs = h.logs(2).await;
    for entry in &logs {
        assert_eq!(entry.record.provider, "groq");
        assert_eq!(entry.record.path, "/chat/completions");
        assert_eq!(entry.record.tokens_out, Some(5));
    }
    h.shutdown().await;
}

#[tokio::test]
async fn upstream_errors_keep_their_status_in_openai_error_shape() {
    let h = Harness::start().await;
    for (model, status) in [
        ("anthropic/claude", 429),
        ("google-ai-studio/gemini-2.0-flash", 500),
        ("cohere/command-r", 400),
        ("workers-ai/@cf/meta/llama-3.1-8b-instruct", 503),
    ] {
        for stream in [false, true] {
            let resp = send(
                &h,
                &chat(model, stream),
                &[("x-mock-status", &status.to_string())],
            )
            .await;
            assert_eq!(resp.status().as_u16(), status, "{model}");
            assert_eq!(resp.headers()["content-type"], "application/json");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(
                body["error"]["message"],
                format!("mock injected {status}"),
                "{model}: {body}"
            );
            assert!(body["error"]["type"].is_string(), "{body}");
        }
    }
    let logs = h.logs(8).await;
    assert!(
        logs.iter()
            .all(|e| !e.record.success && e.record.status_code >= 400)
    );
    h.shutdown().await;
}

#[tokio::test]
async fn unsupported_or_malformed_requests_are_400s_that_name_the_problem() {
    let h = Harness::start().await;
    let user = json!([{"role": "user", "content": "hi"}]);
    for (body, code, needle) in [
        (
            json!({"model": "replicate/x", "messages": user}),
            2009,
            "provider `replicate`",
        ),
        (
            json!({"model": "huggingface/x", "messages": user}),
            2009,
            "provider `huggingface`",
        ),
        (
            json!({"model": "nope/x", "messages": user}),
            2009,
            "provider `nope`",
        ),
        (
            json!({"model": "gpt-4o", "messages": user}),
            2008,
            "{provider}/{model}",
        ),
        (
            json!({"model": "anthropic/c", "n": 2, "messages": user}),
            2009,
            "`n` other than 1",
        ),
        (
            json!({"model": "anthropic/c", "logprobs": true, "messages": user}),
            2009,
            "`logprobs` is not supported for provider `anthropic`",
        ),
        (
            json!({"model": "workers-ai/@cf/m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]}),
            2009,
            "`image_url`",
        ),
        (
            json!({"model": "cohere/c", "messages": [{"role": "tool", "tool_call_id": "x", "content": "r"}]}),
            2008,
            "messages[0].tool_call_id",
        ),
    ] {
        let (got, message) = gateway_error(send(&h, &body, &[]).await, 400).await;
        assert_eq!(got, code, "{message}");
        assert!(message.contains(needle), "{needle}: {message}");
    }
    let resp = h
        .client
        .post(h.url(PATH))
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    let (code, message) = gateway_error(resp, 400).await;
    assert_eq!(code, 2008);
    assert!(message.contains("not a JSON object"), "{message}");

    let resp = h.client.get(h.url(PATH)).send().await.unwrap();
    assert_eq!(gateway_error(resp, 404).await.0, 2012);
    let resp = h
        .client
        .post(h.url("/v1/acct1/default/compat/embeddings"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(gateway_error(resp, 404).await.0, 2012);
    assert!(h.mock.requests().is_empty(), "nothing was sent upstream");
    h.shutdown().await;
}

#[tokio::test]
async fn authenticated_gateways_and_directives_apply() {
    let h = Harness::start().await;
    h.gateways.upsert(
        "acct1",
        "locked",
        GatewaySettings {
            authentication: true,
            ..GatewaySettings::default()
        },
    );
    h.gateways.allow_token("acct1", "aigw_run_token");
    let url = h.url("/v1/acct1/locked/compat/chat/completions");
    let body = chat("cohere/command-r", false);
    let resp = h.client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(gateway_error(resp, 401).await.0, 2007);
    let resp = h
        .client
        .post(&url)
        .header("cf-aig-authorization", "Bearer aigw_run_token")
        .header("cf-aig-collect-log", "false")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("cf-aig-log-id").is_none(), "not logged");
    let seen = &h.mock.requests()[0];
    assert!(seen.header("cf-aig-authorization").is_none());
    h.shutdown().await;
}
