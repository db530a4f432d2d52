//! Anthropic Messages (`POST /v1/messages`).

use serde_json::{Map, Value, json};

use crate::CompatError;
use crate::chat::{Chat, Message, Part, ToolChoice, data_url, push_turn};
use crate::openai::{Event, Usage};
use crate::response::{Decode, ToolIndexes, str_of, whole_tool_call};
use crate::sse::SseEvent;

/// `max_tokens` is required by Anthropic; used when the client gives none.
pub(crate) const DEFAULT_MAX_TOKENS: u64 = 4096;

fn image(url: &str) -> Value {
    match data_url(url) {
        Some((mime, data)) => {
            json!({"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}})
        }
        None => json!({"type": "image", "source": {"type": "url", "url": url}}),
    }
}

/// Appends `blocks` as a `role` turn (Anthropic alternates roles; parallel tool results go in
/// one user turn).
fn push(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    push_turn(messages, role, "content", blocks);
}

/// The Messages request body.
pub(crate) fn request(chat: &Chat) -> Result<Value, CompatError> {
    if chat.response_format.is_some() {
        return Err(chat.unsupported("`response_format` json_object / json_schema"));
    }
    let mut messages = Vec::new();
    for message in &chat.messages {
        match message {
            Message::System(_) => {}
            Message::User(parts) => {
                let blocks = parts
                    .iter()
                    .map(|p| match p {
                        Part::Text(text) => json!({"type": "text", "text": text}),
                        Part::Image(url) => image(url),
                    })
                    .collect();
                push(&mut messages, "user", blocks);
            }
            Message::Assistant { text, tool_calls } => {
                let mut blocks = Vec::new();
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                blocks.extend(tool_calls.iter().map(|c| {
                    json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments_object()})
                }));
                push(&mut messages, "assistant", blocks);
            }
            Message::Tool {
                call_id, content, ..
            } => push(
                &mut messages,
                "user",
                vec![json!({"type": "tool_result", "tool_use_id": call_id, "content": content})],
            ),
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(chat.model));
    chat.sampling(
        [
            "max_tokens",
            "temperature",
            "top_p",
            "",
            "",
            "",
            "stop_sequences",
        ],
        &mut body,
    );
    body.entry("max_tokens")
        .or_insert(json!(DEFAULT_MAX_TOKENS));
    if let Some(system) = chat.system_text() {
        body.insert("system".into(), json!(system));
    }
    body.insert("messages".into(), Value::Array(messages));
    if let Some(user) = &chat.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    if !chat.tools.is_empty() {
        let tools: Vec<Value> = chat
            .tools
            .iter()
            .map(|t| {
                let mut tool = json!({
                    "name": t.name,
                    "input_schema": t.parameters.clone()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                });
                if let Some(d) = &t.description {
                    tool["description"] = json!(d);
                }
                tool
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        let mut choice = match &chat.tool_choice {
            None | Some(ToolChoice::Auto) => json!({"type": "auto"}),
            Some(ToolChoice::None) => json!({"type": "none"}),
            Some(ToolChoice::Required) => json!({"type": "any"}),
            Some(ToolChoice::Function(name)) => json!({"type": "tool", "name": name}),
        };
        if chat.parallel_tool_calls == Some(false) && choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = json!(true);
        }
        body.insert("tool_choice".into(), choice);
    }
    if chat.stream {
        body.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(body))
}

fn finish(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

fn usage(u: &Value) -> Usage {
    let n = |k| u.get(k).and_then(Value::as_u64);
    let input = n("input_tokens");
    let cache_read = n("cache_read_input_tokens");
    let cache_write = n("cache_creation_input_tokens");
    let prompt = input.map(|i| i + cache_read.unwrap_or(0) + cache_write.unwrap_or(0));
    Usage {
        prompt,
        completion: n("output_tokens"),
        cached: cache_read.filter(|c| *c > 0),
    }
}

/// Decodes Messages answers and stream events.
#[derive(Debug)]
pub(crate) struct Decoder {
    pub(crate) tools: ToolIndexes,
}

impl Decode for Decoder {
    fn json(&mut self, body: &Value, out: &mut Vec<Event>) {
        if body["type"] == "error" {
            return self.error(body, out);
        }
        for block in body["content"].as_array().into_iter().flatten() {
            match str_of(block, "type") {
                "text" => out.push(Event::Text(str_of(block, "text").to_owned())),
                "tool_use" => {
                    let index = self.tools.start(self.tools.count());
                    let (id, name) = (str_of(block, "id"), str_of(block, "name"));
                    whole_tool_call(index, id.into(), name.into(), block.get("input"), out);
                }
                _ => {}
            }
        }
        if let Some(reason) = body["stop_reason"].as_str() {
            out.push(Event::Finish(finish(reason)));
        }
        out.push(Event::Usage(usage(&body["usage"])));
    }

    fn sse(&mut self, event: &SseEvent, out: &mut Vec<Event>) {
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            return;
        };
        let block_index = data["index"].as_u64().unwrap_or(0) as usize;
        match str_of(&data, "type") {
            "message_start" => out.push(Event::Usage(usage(&data["message"]["usage"]))),
            "content_block_start" => {
                let block = &data["content_block"];
                match str_of(block, "type") {
                    "text" => out.push(Event::Text(str_of(block, "text").to_owned())),
                    "tool_use" => {
                        let index = self.tools.start(block_index);
                        out.push(Event::ToolStart {
                            index,
                            id: str_of(block, "id").to_owned(),
                            name: str_of(block, "name").to_owned(),
                        });
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = &data["delta"];
                match str_of(delta, "type") {
                    "text_delta" => out.push(Event::Text(str_of(delta, "text").to_owned())),
                    "input_json_delta" => {
                        if let Some(index) = self.tools.get(block_index) {
                            out.push(Event::ToolArgs {
                                index,
                                arguments: str_of(delta, "partial_json").to_owned(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    out.push(Event::Finish(finish(reason)));
                }
                out.push(Event::Usage(usage(&data["usage"])));
            }
            "message_stop" => out.push(Event::End),
            "error" => self.error(&data, out),
            _ => {}
        }
    }
}

impl Decoder {
    fn error(&self, data: &Value, out: &mut Vec<Event>) {
        out.push(Event::Error {
            message: str_of(&data["error"], "message").to_owned(),
            kind: str_of(&data["error"], "type").to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::tests::{assert_stream, completion, run};
    use crate::{CompatRequest, Framing, Target, translate_request};

    fn native(body: Value) -> Value {
        let r = CompatRequest::parse(body.to_string().as_bytes()).unwrap();
        let n = translate_request(Target::Anthropic, &r).unwrap();
        assert_eq!(n.path, "/v1/messages");
        serde_json::from_slice(&n.body).unwrap()
    }

    #[test]
    fn request_maps_system_tools_history_and_parameters() {
        let body = native(json!({
        "model": "anthropic/claude-sonnet-4-20250514", "temperature": 0.5, "top_p": 0.9,
        "stop": ["END"], "max_tokens": 100, "stream": true, "parallel_tool_calls": false,
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                   "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}},
                  {"type": "function", "function": {"name": "now"}}],
        "tool_choice": "required",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}}]},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "now", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "noon"},
            {"role": "developer", "content": "Answer in French."}
        ]}));
        assert_eq!(
            body,
            json!({
            "model": "claude-sonnet-4-20250514", "max_tokens": 100, "temperature": 0.5, "top_p": 0.9,
            "stop_sequences": ["END"], "stream": true,
            "system": "You are terse.\n\nAnswer in French.",
            "tools": [
                {"name": "get_weather", "description": "Weather",
                 "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}},
                {"name": "now", "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Paris?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "noon"}]}
            ]})
        );
    }

    #[test]
    fn request_defaults_and_refusals() {
        let body = native(json!({"model": "anthropic/c", "user": "u1",
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(body["tool_choice"], json!({"type": "tool", "name": "f"}));
        assert_eq!(body["metadata"], json!({"user_id": "u1"}));
        assert!(body.get("system").is_none() && body.get("stream").is_none());

        let r = CompatRequest::parse(br#"{"model":"anthropic/c","logprobs":true,"messages":[]}"#)
            .unwrap();
        let err = translate_request(Target::Anthropic, &r).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`logprobs` is not supported for provider `anthropic`"
        );
        let r = CompatRequest::parse(
            br#"{"model":"anthropic/c","response_format":{"type":"json_object"},"messages":[]}"#,
        )
        .unwrap();
        assert!(
            translate_request(Target::Anthropic, &r)
                .unwrap_err()
                .is_unsupported()
        );
    }

    #[test]
    fn json_answer_with_text_tool_use_and_usage() {
        let body = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude",
            "content":[{"type":"text","text":"Checking."},
                       {"type":"tool_use","id":"toolu_9","name":"get_weather","input":{"location":"Paris"}}],
            "stop_reason":"tool_use","usage":{"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":2}}"#;
        let out = run(Target::Anthropic, Framing::Json, false, &[body.as_bytes()]);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["id"], "chatcmpl-T");
        assert_eq!(v["choices"][0]["message"]["content"], "Checking.");
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"],
            json!([{"id": "toolu_9", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}])
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
                                      "prompt_tokens_details": {"cached_tokens": 2}})
        );

        let body = r#"{"content":[{"type":"text","text":"Hi"}],"stop_reason":"max_tokens","usage":{"input_tokens":1,"output_tokens":1}}"#;
        let v: Value = completion(Target::Anthropic, body);
        assert_eq!(v["choices"][0]["finish_reason"], "length");
    }

    const STREAM: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me \"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"check.\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\":\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"Paris\\\"}\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":20}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    #[test]
    fn stream_with_text_and_tool_use_deltas_split_anywhere() {
        assert_stream(
            Target::Anthropic,
            STREAM,
            "Let me check.",
            &[("toolu_1", "get_weather", "{\"location\": \"Paris\"}")],
            "tool_calls",
            json!({"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32}),
        );
    }

    #[test]
    fn a_stream_can_answer_a_non_streaming_client_and_errors_pass_as_errors() {
        let out = run(Target::Anthropic, Framing::Sse, false, &[STREAM.as_bytes()]);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"location\": \"Paris\"}"
        );

        let err = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let out = run(Target::Anthropic, Framing::Sse, true, &[err.as_bytes()]);
        assert_eq!(
            out,
            "data: {\"error\":{\"code\":null,\"message\":\"Overloaded\",\"param\":null,\"type\":\"overloaded_error\"}}\n\n"
        );
    }
}
