//! The provider wire formats: JSON answers, stream structure and token usage.

use serde_json::{Value, json};

use crate::support::{client, content_type, parse_sse, post, post_ok_json, post_sse, start, words};

const DEFAULT_REPLY: &str = "Hello from the mock upstream.";

fn chat_body(stream: bool) -> Value {
    // 3 + 5 = 8 prompt words; the image part carries no text.
    json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "stream_options": {"include_usage": true},
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "Say hello to the world"},
                {"type": "image_url", "image_url": {"url": "https://example.invalid/a b.png"}}
            ]}
        ]
    })
}

#[tokio::test]
async fn openai_chat_json() {
    let server = start().await;
    let v = post_ok_json(&server, "/v1/chat/completions", chat_body(false), &[]).await;
    assert!(v["id"].as_str().expect("id").starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().expect("created") > 1_600_000_000);
    assert_eq!(v["model"], "gpt-4o-mini");
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], DEFAULT_REPLY);
    assert_eq!(choice["message"]["refusal"], Value::Null);
    assert_eq!(choice["logprobs"], Value::Null);
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 8, "completion_tokens": 5, "total_tokens": 13})
    );
    assert!(v.get("mock_seen_headers").is_none());

    let custom = post_ok_json(
        &server,
        "/v1/chat/completions",
        chat_body(false),
        &[("x-mock-reply", "just two")],
    )
    .await;
    assert_eq!(custom["choices"][0]["message"]["content"], "just two");
    assert_eq!(custom["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn openai_chat_stream_with_usage() {
    let server = start().await;
    let events = post_sse(
        &server,
        "/v1/chat/completions",
        chat_body(true),
        &[("x-mock-chunks", "5")],
    )
    .await;
    // role chunk + 5 words + finish chunk + usage chunk + [DONE]
    assert_eq!(events.len(), 9, "{events:?}");
    assert!(events.iter().all(|e| e.name.is_none()));
    assert_eq!(events[8].data, "[DONE]");
    let chunks: Vec<Value> = events[..8].iter().map(|e| e.json()).collect();
    let id = chunks[0]["id"].clone();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-4o-mini");
        assert_eq!(chunk["id"], id, "one id for the whole stream");
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let content: String = chunks[1..6]
        .iter()
        .map(|c| {
            assert_eq!(c["choices"][0]["finish_reason"], Value::Null);
            c["choices"][0]["delta"]["content"]
                .as_str()
                .expect("content delta")
        })
        .collect();
    assert_eq!(content, "tok0 tok1 tok2 tok3 tok4");
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "tok0");
    assert_eq!(chunks[2]["choices"][0]["delta"]["content"], " tok1");
    assert_eq!(chunks[6]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
    for chunk in &chunks[..7] {
        assert_eq!(chunk["usage"], Value::Null);
    }
    assert_eq!(chunks[7]["choices"], json!([]));
    assert_eq!(
        chunks[7]["usage"],
        json!({"prompt_tokens": 8, "completion_tokens": 5, "total_tokens": 13})
    );
}

#[tokio::test]
async fn openai_chat_stream_without_usage_has_no_usage_chunk() {
    let server = start().await;
    let mut body = chat_body(true);
    body["stream_options"] = Value::Null;
    let events = post_sse(&server, "/v1/chat/completions", body, &[]).await;
    // role chunk + 5 words + finish chunk + [DONE]
    assert_eq!(events.len(), 8);
    assert_eq!(events[7].data, "[DONE]");
    assert!(
        events[..7]
            .iter()
            .all(|e| e.json()["choices"].as_array().is_some_and(|c| c.len() == 1))
    );
}

#[tokio::test]
async fn openai_legacy_completions() {
    let server = start().await;
    let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time"});
    let v = post_ok_json(&server, "/v1/completions", body.clone(), &[]).await;
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "gpt-3.5-turbo-instruct");
    assert_eq!(v["choices"][0]["text"], DEFAULT_REPLY);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["choices"][0]["logprobs"], Value::Null);
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9})
    );

    let mut stream_body = body;
    stream_body["stream"] = json!(true);
    stream_body["stream_options"] = json!({"include_usage": true});
    let events = post_sse(
        &server,
        "/v1/completions",
        stream_body,
        &[("x-mock-chunks", "3")],
    )
    .await;
    assert_eq!(events.len(), 6, "3 words + finish + usage + [DONE]");
    let text: String = events[..3]
        .iter()
        .map(|e| {
            e.json()["choices"][0]["text"]
                .as_str()
                .expect("text")
                .to_owned()
        })
        .collect();
    assert_eq!(text, "tok0 tok1 tok2");
    assert_eq!(events[3].json()["choices"][0]["finish_reason"], "stop");
    assert_eq!(events[4].json()["choices"], json!([]));
    assert_eq!(events[4].json()["usage"]["total_tokens"], 7);
    assert_eq!(events[5].data, "[DONE]");
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let mut out = Vec::new();
    for quad in text.as_bytes().chunks(4) {
        let data: Vec<u8> = quad.iter().copied().filter(|c| *c != b'=').collect();
        let n = data
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, c)| n | (value(*c) << (18 - 6 * i)));
        for i in 0..data.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[tokio::test]
async fn openai_embeddings_float_and_base64() {
    let server = start().await;
    let input = json!(["the quick brown fox", "jumps"]);
    let floats = post_ok_json(
        &server,
        "/v1/embeddings",
        json!({"model": "text-embedding-3-small", "input": input, "encoding_format": "float"}),
        &[],
    )
    .await;
    assert_eq!(floats["object"], "list");
    assert_eq!(floats["model"], "text-embedding-3-small");
    assert_eq!(
        floats["usage"],
        json!({"prompt_tokens": 5, "total_tokens": 5})
    );
    let data = floats["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    let vectors: Vec<Vec<f32>> = data
        .iter()
        .enumerate()
        .map(|(i, item)| {
            assert_eq!(item["object"], "embedding");
            assert_eq!(item["index"], i);
            item["embedding"]
                .as_array()
                .expect("float embedding")
                .iter()
                .map(|v| v.as_f64().expect("number") as f32)
                .collect()
        })
        .collect();
    assert_eq!(vectors[0].len(), 8);
    assert_ne!(vectors[0], vectors[1]);

    // No encoding_format given: same as float. base64: little-endian f32s.
    let implicit = post_ok_json(
        &server,
        "/v1/embeddings",
        json!({"model": "m", "input": "the quick brown fox"}),
        &[],
    )
    .await;
    assert_eq!(implicit["data"][0]["embedding"], data[0]["embedding"]);

    let b64 = post_ok_json(
        &server,
        "/v1/embeddings",
        json!({"model": "m", "input": input, "encoding_format": "base64"}),
        &[],
    )
    .await;
    for (i, expected) in vectors.iter().enumerate() {
        let encoded = b64["data"][i]["embedding"].as_str().expect("base64 string");
        let decoded: Vec<f32> = decode_base64(encoded)
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        assert_eq!(&decoded, expected);
    }

    let bad = post(
        &server,
        "/v1/embeddings",
        json!({"model": "m", "input": []}),
        &[],
    )
    .await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn openai_responses_json_and_stream() {
    let server = start().await;
    let body = json!({
        "model": "gpt-4o-mini",
        "instructions": "be kind",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi there"}]}]
    });
    let v = post_ok_json(&server, "/v1/responses", body.clone(), &[]).await;
    assert!(v["id"].as_str().expect("id").starts_with("resp_"));
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "gpt-4o-mini");
    let message = &v["output"][0];
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(
        message["content"],
        json!([{"type": "output_text", "text": DEFAULT_REPLY, "annotations": []}])
    );
    assert_eq!(v["usage"]["input_tokens"], 4);
    assert_eq!(v["usage"]["output_tokens"], 5);
    assert_eq!(v["usage"]["total_tokens"], 9);

    let mut stream_body = body;
    stream_body["stream"] = json!(true);
    let events = post_sse(
        &server,
        "/v1/responses",
        stream_body,
        &[("x-mock-chunks", "3")],
    )
    .await;
    let names: Vec<&str> = events
        .iter()
        .map(|e| e.name.as_deref().expect("named"))
        .collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let payloads: Vec<Value> = events.iter().map(|e| e.json()).collect();
    for (i, (payload, name)) in payloads.iter().zip(&names).enumerate() {
        assert_eq!(payload["type"], *name);
        assert_eq!(payload["sequence_number"], i);
    }
    assert_eq!(payloads[0]["response"]["status"], "in_progress");
    let deltas: String = payloads[4..7]
        .iter()
        .map(|p| p["delta"].as_str().expect("delta"))
        .collect();
    assert_eq!(deltas, "tok0 tok1 tok2");
    assert_eq!(payloads[7]["text"], "tok0 tok1 tok2");
    let item_id = &payloads[2]["item"]["id"];
    assert_eq!(&payloads[4]["item_id"], item_id);
    let completed = &payloads[10]["response"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(
        completed["output"][0]["content"][0]["text"],
        "tok0 tok1 tok2"
    );
    assert_eq!(
        (
            completed["usage"]["input_tokens"].as_u64(),
            completed["usage"]["output_tokens"].as_u64()
        ),
        (Some(4), Some(3))
    );
}

#[tokio::test]
async fn openai_models() {
    let server = start().await;
    let response = client()
        .get(format!("{}/v1/models", server.base_url()))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let v: Value = response.json().await.expect("json");
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "gpt-4o-mini");
    assert_eq!(v["data"][0]["object"], "model");
    assert_eq!(v["data"][0]["owned_by"], "mock");
}

fn anthropic_body(stream: bool) -> Value {
    // system 2 words (blocks) + messages 3 + 2 words = 7
    json!({
        "model": "claude-3-5-haiku-latest",
        "max_tokens": 64,
        "stream": stream,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": "hello there claude"},
            {"role": "assistant", "content": [{"type": "text", "text": "hi human"}]}
        ]
    })
}

#[tokio::test]
async fn anthropic_messages_json() {
    let server = start().await;
    let v = post_ok_json(&server, "/v1/messages", anthropic_body(false), &[]).await;
    assert!(v["id"].as_str().expect("id").starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-3-5-haiku-latest");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": DEFAULT_REPLY}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    assert_eq!(v["usage"], json!({"input_tokens": 7, "output_tokens": 5}));

    let count = post_ok_json(
        &server,
        "/v1/messages/count_tokens",
        anthropic_body(false),
        &[],
    )
    .await;
    assert_eq!(count, json!({"input_tokens": 7}));
}

#[tokio::test]
async fn anthropic_messages_stream_event_sequence() {
    let server = start().await;
    let events = post_sse(
        &server,
        "/v1/messages",
        anthropic_body(true),
        &[("x-mock-chunks", "4")],
    )
    .await;
    let names: Vec<&str> = events
        .iter()
        .map(|e| e.name.as_deref().expect("named"))
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let payloads: Vec<Value> = events.iter().map(|e| e.json()).collect();
    for (payload, name) in payloads.iter().zip(&names) {
        assert_eq!(payload["type"], *name, "data type matches the event name");
    }
    let start = &payloads[0]["message"];
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["model"], "claude-3-5-haiku-latest");
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(
        start["usage"],
        json!({"input_tokens": 7, "output_tokens": 1})
    );
    assert_eq!(
        payloads[1],
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    let text: String = payloads[3..7]
        .iter()
        .map(|p| {
            assert_eq!(p["delta"]["type"], "text_delta");
            p["delta"]["text"].as_str().expect("text")
        })
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 tok3");
    assert_eq!(
        payloads[7],
        json!({"type": "content_block_stop", "index": 0})
    );
    assert_eq!(
        payloads[8],
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 4}
        })
    );
    assert_eq!(payloads[9], json!({"type": "message_stop"}));
}

const WORKERS_PATH: &str = "/client/v4/accounts/acct123/ai/run/@cf/meta/llama-3.1-8b-instruct";

#[tokio::test]
async fn workers_ai_json_and_stream() {
    let server = start().await;
    let v = post_ok_json(
        &server,
        WORKERS_PATH,
        json!({"prompt": "tell me a joke"}),
        &[],
    )
    .await;
    assert_eq!(
        v,
        json!({
            "result": {
                "response": DEFAULT_REPLY,
                "usage": {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
            },
            "success": true,
            "errors": [],
            "messages": []
        })
    );

    let messages = json!({"messages": [{"role": "user", "content": "one two"}], "stream": true});
    let events = post_sse(
        &server,
        WORKERS_PATH,
        messages,
        &[("x-mock-reply", "a b c")],
    )
    .await;
    assert_eq!(events.len(), 5, "3 words + usage + [DONE]");
    let words: Vec<Value> = events[..3].iter().map(|e| e.json()).collect();
    assert_eq!(words[0], json!({"response": "a", "p": "abc"}));
    assert_eq!(words[1]["response"], " b");
    assert_eq!(words[2]["response"], " c");
    assert_eq!(
        events[3].json(),
        json!({"response": "", "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}})
    );
    assert_eq!(events[4].data, "[DONE]");
}

#[tokio::test]
async fn workers_ai_openai_compatible_endpoint() {
    let server = start().await;
    let v = post_ok_json(
        &server,
        "/client/v4/accounts/acct123/ai/v1/chat/completions",
        chat_body(false),
        &[],
    )
    .await;
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["usage"]["prompt_tokens"], 8);
}

#[tokio::test]
async fn google_generate_content_json_and_streams() {
    let server = start().await;
    let body = json!({
        "systemInstruction": {"parts": [{"text": "be nice"}]},
        "contents": [{"role": "user", "parts": [{"text": "what is rust"}]}]
    });
    let v = post_ok_json(
        &server,
        "/v1beta/models/gemini-2.0-flash:generateContent",
        body.clone(),
        &[],
    )
    .await;
    assert_eq!(
        v,
        json!({
            "candidates": [{
                "content": {"parts": [{"text": DEFAULT_REPLY}], "role": "model"},
                "finishReason": "STOP",
                "index": 0
            }],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 5, "totalTokenCount": 10},
            "modelVersion": "gemini-2.0-flash"
        })
    );

    let path = "/v1beta/models/gemini-2.0-flash:streamGenerateContent";
    let events = post_sse(
        &server,
        &format!("{path}?alt=sse"),
        body.clone(),
        &[("x-mock-chunks", "3")],
    )
    .await;
    assert_eq!(events.len(), 3);
    let chunks: Vec<Value> = events.iter().map(|e| e.json()).collect();
    let text: String = chunks
        .iter()
        .map(|c| {
            c["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .expect("text")
        })
        .collect();
    assert_eq!(text, "tok0 tok1 tok2");
    for (i, chunk) in chunks.iter().enumerate() {
        let usage = &chunk["usageMetadata"];
        assert_eq!(usage["promptTokenCount"], 5);
        assert_eq!(usage["candidatesTokenCount"], i + 1, "cumulative usage");
        assert_eq!(usage["totalTokenCount"], 5 + i + 1);
    }
    assert!(chunks[0]["candidates"][0].get("finishReason").is_none());
    assert_eq!(chunks[2]["candidates"][0]["finishReason"], "STOP");

    // Without alt=sse Gemini streams one JSON array.
    let response = post(&server, path, body, &[("x-mock-chunks", "2")]).await;
    assert_eq!(content_type(&response), "application/json");
    let array: Value = response.json().await.expect("JSON array");
    assert_eq!(array.as_array().map(Vec::len), Some(2));
    assert_eq!(
        array[1]["candidates"][0]["content"]["parts"][0]["text"],
        " tok1"
    );
}

#[tokio::test]
async fn cohere_chat_json_and_stream() {
    let server = start().await;
    let body = json!({
        "model": "command-r",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi cohere"}]}]
    });
    let v = post_ok_json(&server, "/v2/chat", body.clone(), &[]).await;
    assert!(v["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(v["finish_reason"], "COMPLETE");
    assert_eq!(
        v["message"],
        json!({"role": "assistant", "content": [{"type": "text", "text": DEFAULT_REPLY}]})
    );
    let tokens = json!({"input_tokens": 2, "output_tokens": 5});
    assert_eq!(
        v["usage"],
        json!({"billed_units": tokens, "tokens": tokens})
    );

    let mut stream_body = body;
    stream_body["stream"] = json!(true);
    let events = post_sse(&server, "/v2/chat", stream_body, &[("x-mock-chunks", "2")]).await;
    let names: Vec<&str> = events
        .iter()
        .map(|e| e.name.as_deref().expect("named"))
        .collect();
    assert_eq!(
        names,
        [
            "message-start",
            "content-start",
            "content-delta",
            "content-delta",
            "content-end",
            "message-end"
        ]
    );
    let text: String = events[2..4]
        .iter()
        .map(|e| {
            e.json()["delta"]["message"]["content"]["text"]
                .as_str()
                .expect("text")
                .to_owned()
        })
        .collect();
    assert_eq!(text, "tok0 tok1");
    let end = events[5].json();
    assert_eq!(end["delta"]["finish_reason"], "COMPLETE");
    assert_eq!(end["delta"]["usage"]["tokens"]["output_tokens"], 2);
}

#[tokio::test]
async fn unknown_routes_and_bad_bodies_get_provider_errors() {
    let server = start().await;
    let response = client()
        .get(format!("{}/v1/nope?x=1", server.base_url()))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    let v: Value = response.json().await.expect("json");
    assert_eq!(
        v,
        json!({"error": {"message": "mock: no route for GET /v1/nope", "type": "invalid_request_error"}})
    );

    // GET on a POST-only route is not routed either.
    let response = client()
        .get(format!("{}/v1/chat/completions", server.base_url()))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);

    let response = client()
        .post(format!("{}/v1/messages", server.base_url()))
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
    let v: Value = response.json().await.expect("json");
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn echo_headers_adds_seen_headers() {
    let server = start().await;
    let v = post_ok_json(
        &server,
        "/v1/chat/completions",
        chat_body(false),
        &[
            ("x-mock-echo-headers", "1"),
            ("Authorization", "Bearer sk-test"),
        ],
    )
    .await;
    assert_eq!(v["mock_seen_headers"]["authorization"], "Bearer sk-test");
    assert_eq!(v["mock_seen_headers"]["x-mock-echo-headers"], "1");
    assert_eq!(v["choices"][0]["message"]["content"], DEFAULT_REPLY);
}

#[tokio::test]
async fn serves_h2c_with_prior_knowledge() {
    let server = start().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let response = h2
        .post(format!("{}/v1/chat/completions", server.base_url()))
        .json(&chat_body(true))
        .send()
        .await
        .expect("request");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let events = parse_sse(&response.text().await.expect("body"));
    assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
    let content: String = events
        .iter()
        .filter(|e| e.data.starts_with('{'))
        .map(|e| e.json())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, DEFAULT_REPLY);
    assert_eq!(words(&content), 5);
}

/// A request offering tools gets a call to the first one with `{"location":"Paris"}`.
#[tokio::test]
async fn requests_with_tools_get_a_call_to_the_first_tool() {
    let server = start().await;
    let args = json!({"location": "Paris"});
    let parse = |s: &str| serde_json::from_str::<Value>(s).expect("arguments are JSON");
    let openai_tools = json!([{"type": "function", "function": {"name": "get_weather"}},
                              {"type": "function", "function": {"name": "other"}}]);
    let user = json!([{"role": "user", "content": "weather in Paris"}]);

    // OpenAI
    let body = json!({"model": "m", "messages": user, "tools": openai_tools});
    let v = post_ok_json(&server, "/v1/chat/completions", body.clone(), &[]).await;
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(
        (
            call["function"]["name"].as_str(),
            v["choices"][0]["finish_reason"].as_str()
        ),
        (Some("get_weather"), Some("tool_calls"))
    );
    assert_eq!(parse(call["function"]["arguments"].as_str().unwrap()), args);
    let mut stream = body;
    stream["stream"] = json!(true);
    stream["stream_options"] = json!({"include_usage": true});
    let events = post_sse(&server, "/v1/chat/completions", stream, &[]).await;
    let arguments: String = events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .filter_map(|e| {
            e.json()["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(parse(&arguments), args);
    assert_eq!(events.last().unwrap().data, "[DONE]");

    // Anthropic
    let body = json!({"model": "c", "max_tokens": 9, "messages": user,
                      "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]});
    let v = post_ok_json(&server, "/v1/messages", body.clone(), &[]).await;
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(
        (
            v["content"][0]["type"].as_str(),
            v["content"][0]["name"].as_str()
        ),
        (Some("tool_use"), Some("get_weather"))
    );
    assert_eq!(v["content"][0]["input"], args);
    let mut stream = body;
    stream["stream"] = json!(true);
    let events = post_sse(&server, "/v1/messages", stream, &[]).await;
    let arguments: String = events
        .iter()
        .filter_map(|e| {
            e.json()["delta"]["partial_json"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(parse(&arguments), args);
    assert_eq!(events[1].json()["content_block"]["name"], "get_weather");

    // Cohere
    let body = json!({"model": "command-r", "messages": user, "tools": openai_tools});
    let v = post_ok_json(&server, "/v2/chat", body.clone(), &[]).await;
    assert_eq!(v["finish_reason"], "TOOL_CALL");
    assert_eq!(
        v["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    let mut stream = body;
    stream["stream"] = json!(true);
    let events = post_sse(&server, "/v2/chat", stream, &[]).await;
    let names: Vec<_> = events.iter().map(|e| e.name.clone().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message-start",
            "tool-plan-delta",
            "tool-call-start",
            "tool-call-delta",
            "tool-call-delta",
            "tool-call-end",
            "message-end"
        ]
    );
    let arguments: String = events
        .iter()
        .filter_map(|e| {
            e.json()["delta"]["message"]["tool_calls"]["function"]["arguments"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(parse(&arguments), args);

    // Workers AI
    let path = "/client/v4/accounts/a/ai/run/@cf/meta/llama-3.1-8b-instruct";
    let body = json!({"messages": user, "tools": [{"name": "get_weather", "parameters": {}}]});
    let v = post_ok_json(&server, path, body.clone(), &[]).await;
    assert_eq!(
        v["result"]["tool_calls"],
        json!([{"name": "get_weather", "arguments": args}])
    );
    let mut stream = body;
    stream["stream"] = json!(true);
    let events = post_sse(&server, path, stream, &[]).await;
    assert_eq!(events[0].json()["tool_calls"][0]["arguments"], args);
    assert_eq!(events.last().unwrap().data, "[DONE]");

    // Google
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "weather"}]}],
                      "tools": [{"functionDeclarations": [{"name": "get_weather"}]}]});
    let path = "/v1beta/models/gemini-2.0-flash";
    let v = post_ok_json(
        &server,
        &format!("{path}:generateContent"),
        body.clone(),
        &[],
    )
    .await;
    let call = &v["candidates"][0]["content"]["parts"][0]["functionCall"];
    assert_eq!(
        (call["name"].as_str(), &call["args"]),
        (Some("get_weather"), &args)
    );
    let events = post_sse(
        &server,
        &format!("{path}:streamGenerateContent?alt=sse"),
        body,
        &[],
    )
    .await;
    assert_eq!(
        events[0].json()["candidates"][0]["content"]["parts"][0]["functionCall"]["args"],
        args
    );
}
