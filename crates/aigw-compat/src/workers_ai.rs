//! Cloudflare Workers AI text generation (`POST {base}/{model}`, the `messages` form).

use serde_json::{Map, Value, json};

use crate::CompatError;
use crate::chat::{Chat, Message, Part, ResponseFormat, ToolChoice};
use crate::openai::{Event, Usage};
use crate::response::{Decode, ToolIndexes, str_of, whole_tool_call};
use crate::sse::SseEvent;

/// The `ai/run` request body (the model goes in the URL).
pub(crate) fn request(chat: &Chat) -> Result<Value, CompatError> {
    if !chat.stop.is_empty() {
        return Err(chat.unsupported("`stop`"));
    }
    let mut messages = Vec::with_capacity(chat.messages.len());
    for (i, message) in chat.messages.iter().enumerate() {
        messages.push(match message {
            Message::System(text) => json!({"role": "system", "content": text}),
            Message::User(parts) => {
                let mut text = String::new();
                for (j, part) in parts.iter().enumerate() {
                    match part {
                        Part::Text(t) => text.push_str(t),
                        Part::Image(_) => {
                            return Err(chat.unsupported(format!(
                                "content part type `image_url` (messages[{i}].content[{j}])"
                            )));
                        }
                    }
                }
                json!({"role": "user", "content": text})
            }
            Message::Assistant { text, tool_calls } => {
                let mut m = json!({"role": "assistant", "content": text});
                if !tool_calls.is_empty() {
                    m["tool_calls"] = tool_calls
                        .iter()
                        .map(|c| json!({"id": c.id, "name": c.name, "arguments": c.arguments_object()}))
                        .collect();
                }
                m
            }
            Message::Tool {
                call_id,
                name,
                content,
            } => json!({"role": "tool", "tool_call_id": call_id, "name": name, "content": content}),
        });
    }
    let mut body = Map::new();
    body.insert("messages".into(), Value::Array(messages));
    // `stop` was refused above.
    chat.sampling(
        [
            "max_tokens",
            "temperature",
            "top_p",
            "seed",
            "frequency_penalty",
            "presence_penalty",
            "",
        ],
        &mut body,
    );
    if let Some(format) = &chat.response_format {
        body.insert(
            "response_format".into(),
            match format {
                ResponseFormat::JsonObject => json!({"type": "json_object"}),
                ResponseFormat::JsonSchema(schema) => {
                    json!({"type": "json_schema", "json_schema": schema})
                }
            },
        );
    }
    match &chat.tool_choice {
        Some(ToolChoice::Required) | Some(ToolChoice::Function(_)) => {
            return Err(chat.unsupported("`tool_choice` required or a named function"));
        }
        Some(ToolChoice::None) => {}
        None | Some(ToolChoice::Auto) if !chat.tools.is_empty() => {
            let tools = chat
                .tools
                .iter()
                .map(|t| {
                    json!({
                        "name": t.name,
                        "description": t.description.clone().unwrap_or_default(),
                        "parameters": t.parameters.clone()
                            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                    })
                })
                .collect();
            body.insert("tools".into(), Value::Array(tools));
        }
        None | Some(ToolChoice::Auto) => {}
    }
    if chat.stream {
        body.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(body))
}

/// Decodes `ai/run` results and stream events.
#[derive(Debug)]
pub(crate) struct Decoder {
    pub(crate) tools: ToolIndexes,
}

impl Decoder {
    /// A `result` object or a stream event's payload (same fields).
    fn result(&mut self, r: &Value, out: &mut Vec<Event>) {
        match r.get("response") {
            Some(Value::String(text)) => out.push(Event::Text(text.clone())),
            // JSON mode answers with the object itself.
            Some(v @ (Value::Object(_) | Value::Array(_))) => out.push(Event::Text(v.to_string())),
            _ => {}
        }
        for (k, call) in r["tool_calls"].as_array().into_iter().flatten().enumerate() {
            match call.get("function") {
                // OpenAI-style (newer models), possibly incremental when streamed.
                Some(function) => {
                    let key = call["index"].as_u64().map_or(k, |i| i as usize);
                    let index = match self.tools.get(key) {
                        Some(index) if call.get("id").is_none() => index,
                        _ => {
                            let index = self.tools.start(key);
                            let id = self.tools.id(index, call["id"].as_str());
                            let name = str_of(function, "name").to_owned();
                            out.push(Event::ToolStart { index, id, name });
                            index
                        }
                    };
                    let arguments = match function.get("arguments") {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Null) | None => String::new(),
                        Some(v) => v.to_string(),
                    };
                    out.push(Event::ToolArgs { index, arguments });
                }
                // Traditional: `{name, arguments: {..}}`, whole.
                None => {
                    let index = self.tools.start(usize::MAX);
                    let id = self.tools.id(index, call["id"].as_str());
                    let name = str_of(call, "name").to_owned();
                    whole_tool_call(index, id, name, call.get("arguments"), out);
                }
            }
        }
        if let Some(reason) = r["finish_reason"].as_str() {
            out.push(Event::Finish(match reason {
                "length" => "length",
                "tool_calls" => "tool_calls",
                _ => "stop",
            }));
        }
        if let Some(u) = r.get("usage").filter(|u| u.is_object()) {
            out.push(Event::Usage(Usage {
                prompt: u["prompt_tokens"].as_u64(),
                completion: u["completion_tokens"].as_u64(),
                cached: None,
            }));
        }
    }
}

impl Decode for Decoder {
    fn json(&mut self, body: &Value, out: &mut Vec<Event>) {
        match body.get("result").filter(|r| r.is_object()) {
            Some(result) => self.result(result, out),
            None => out.push(Event::Error {
                message: body["errors"][0]["message"]
                    .as_str()
                    .unwrap_or("Workers AI answered without a result")
                    .to_owned(),
                kind: "api_error".into(),
            }),
        }
    }

    fn sse(&mut self, event: &SseEvent, out: &mut Vec<Event>) {
        if event.data.trim() == "[DONE]" {
            out.push(Event::End);
        } else if let Ok(payload) = serde_json::from_str::<Value>(&event.data) {
            self.result(&payload, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::tests::{assert_stream, completion};
    use crate::{CompatRequest, Target, translate_request};

    fn translate(body: Value) -> Result<(String, Value), CompatError> {
        let r = CompatRequest::parse(body.to_string().as_bytes()).unwrap();
        let n = translate_request(Target::WorkersAi, &r)?;
        Ok((n.path, serde_json::from_slice(&n.body).unwrap()))
    }

    #[test]
    fn request_keeps_messages_in_order_with_tools() {
        let (path, body) = translate(json!({
            "model": "workers-ai/@cf/meta/llama-3.1-8b-instruct", "max_tokens": 30, "stream": true,
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather"}, {"type": "text", "text": "?"}]},
                {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
            ]}))
        .unwrap();
        assert_eq!(path, "/@cf/meta/llama-3.1-8b-instruct");
        assert_eq!(
            body,
            json!({
            "max_tokens": 30, "stream": true,
            "tools": [{"name": "get_weather", "description": "", "parameters": {"type": "object"}}],
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "name": "get_weather", "arguments": {"location": "Paris"}}]},
                {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "sunny"}
            ]})
        );
    }

    #[test]
    fn unsupported_parts_and_parameters_are_named() {
        let base = json!({"model": "workers-ai/m", "messages": [{"role": "user", "content": "x"}]});
        let mut image = base.clone();
        image["messages"][0]["content"] =
            json!([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]);
        let mut stop = base.clone();
        stop["stop"] = json!("x");
        let mut required = base.clone();
        required["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
        required["tool_choice"] = json!("required");
        for (body, needle) in [
            (image, "`image_url` (messages[0].content[0])"),
            (stop, "`stop`"),
            (required, "`tool_choice`"),
        ] {
            let err = translate(body).unwrap_err();
            assert!(
                err.is_unsupported()
                    && err.to_string().contains(needle)
                    && err.to_string().contains("workers-ai"),
                "{err}"
            );
        }
    }

    #[test]
    fn json_answers_with_text_or_traditional_tool_calls() {
        let body = r#"{"result":{"response":"Hi there","usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}},"success":true,"errors":[],"messages":[]}"#;
        let v: Value = completion(Target::WorkersAi, body);
        assert_eq!(v["choices"][0]["message"]["content"], "Hi there");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["total_tokens"], 6);

        let body = r#"{"result":{"response":null,"tool_calls":[{"name":"get_weather","arguments":{"location":"Paris"}}],"usage":{"prompt_tokens":4,"completion_tokens":1}},"success":true}"#;
        let v: Value = completion(Target::WorkersAi, body);
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"],
            json!([{"id": "call_T_0", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}])
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn streams_with_text_tool_calls_usage_and_done() {
        let stream = concat!(
            "data: {\"response\":\"Hel\",\"p\":\"abc\"}\n\n",
            "data: {\"response\":\"lo\",\"p\":\"abcd\"}\n\n",
            "data: {\"response\":\"\",\"tool_calls\":[{\"name\":\"get_weather\",\"arguments\":{\"location\":\"Paris\"}}]}\n\n",
            "data: {\"response\":\"\",\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
            "data: [DONE]\n\n",
        );
        assert_stream(
            Target::WorkersAi,
            stream,
            "Hello",
            &[("call_T_0", "get_weather", "{\"location\":\"Paris\"}")],
            "tool_calls",
            json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}),
        );
    }

    #[test]
    fn openai_style_incremental_tool_calls_are_followed() {
        let stream = concat!(
            "data: {\"tool_calls\":[{\"index\":0,\"id\":\"chatcmpl-tool-1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}\n\n",
            "data: {\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":\"}}]}\n\n",
            "data: {\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]}\n\n",
            "data: [DONE]\n\n",
        );
        let calls = [("chatcmpl-tool-1", "f", "{\"a\":1}")];
        let no_usage = json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0});
        assert_stream(
            Target::WorkersAi,
            stream,
            "",
            &calls,
            "tool_calls",
            no_usage,
        );
    }
}
