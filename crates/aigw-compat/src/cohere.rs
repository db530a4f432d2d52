//! Cohere v2 chat (`POST /v2/chat`).

use serde_json::{Map, Value, json};

use crate::CompatError;
use crate::chat::{Chat, Message, Part, ResponseFormat, ToolChoice};
use crate::openai::{Event, Usage};
use crate::response::{Decode, ToolIndexes, str_of, whole_tool_call};
use crate::sse::SseEvent;

/// The v2 chat request body.
pub(crate) fn request(chat: &Chat) -> Result<Value, CompatError> {
    let mut messages = Vec::with_capacity(chat.messages.len());
    for message in &chat.messages {
        messages.push(match message {
            Message::System(text) => json!({"role": "system", "content": text}),
            Message::User(parts) => {
                let content: Vec<Value> = parts
                    .iter()
                    .map(|p| match p {
                        Part::Text(text) => json!({"type": "text", "text": text}),
                        Part::Image(url) => json!({"type": "image_url", "image_url": {"url": url}}),
                    })
                    .collect();
                json!({"role": "user", "content": content})
            }
            Message::Assistant { text, tool_calls } if tool_calls.is_empty() => {
                json!({"role": "assistant", "content": text})
            }
            Message::Assistant { text, tool_calls } => {
                let calls: Vec<Value> = tool_calls
                    .iter()
                    .map(|c| {
                        json!({"id": c.id, "type": "function",
                                    "function": {"name": c.name, "arguments": c.arguments}})
                    })
                    .collect();
                let mut m = json!({"role": "assistant", "tool_calls": calls});
                if !text.is_empty() {
                    m["tool_plan"] = json!(text);
                }
                m
            }
            Message::Tool {
                call_id, content, ..
            } => json!({"role": "tool", "tool_call_id": call_id, "content": content}),
        });
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(chat.model));
    body.insert("messages".into(), Value::Array(messages));
    chat.sampling(
        [
            "max_tokens",
            "temperature",
            "p",
            "seed",
            "frequency_penalty",
            "presence_penalty",
            "stop_sequences",
        ],
        &mut body,
    );
    if let Some(format) = &chat.response_format {
        let mut f = json!({"type": "json_object"});
        if let ResponseFormat::JsonSchema(schema) = format {
            f["json_schema"] = schema.clone();
        }
        body.insert("response_format".into(), f);
    }
    if !chat.tools.is_empty() {
        // A named function: offer only that one, and require a call.
        let only = match &chat.tool_choice {
            Some(ToolChoice::Function(name)) => Some(name),
            _ => None,
        };
        let tools: Vec<Value> = chat
            .tools
            .iter()
            .filter(|t| only.is_none_or(|name| &t.name == name))
            .map(|t| {
                let mut function = json!({"name": t.name,
                    "parameters": t.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}}))});
                if let Some(d) = &t.description {
                    function["description"] = json!(d);
                }
                json!({"type": "function", "function": function})
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        match &chat.tool_choice {
            Some(ToolChoice::Required) | Some(ToolChoice::Function(_)) => {
                body.insert("tool_choice".into(), json!("REQUIRED"));
            }
            Some(ToolChoice::None) => {
                body.insert("tool_choice".into(), json!("NONE"));
            }
            None | Some(ToolChoice::Auto) => {}
        }
    }
    if chat.stream {
        body.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(body))
}

fn finish(reason: &str) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "TOOL_CALL" => "tool_calls",
        _ => "stop",
    }
}

fn usage(u: &Value) -> Usage {
    let counts = if u["tokens"].is_object() {
        &u["tokens"]
    } else {
        &u["billed_units"]
    };
    Usage {
        prompt: counts["input_tokens"].as_u64(),
        completion: counts["output_tokens"].as_u64(),
        cached: u["cached_tokens"].as_u64().filter(|c| *c > 0),
    }
}

/// Decodes v2 chat answers and stream events.
#[derive(Debug)]
pub(crate) struct Decoder {
    pub(crate) tools: ToolIndexes,
}

impl Decode for Decoder {
    fn json(&mut self, body: &Value, out: &mut Vec<Event>) {
        let message = &body["message"];
        for part in message["content"].as_array().into_iter().flatten() {
            if part["type"] == "text" {
                out.push(Event::Text(str_of(part, "text").to_owned()));
            }
        }
        for call in message["tool_calls"].as_array().into_iter().flatten() {
            let index = self.tools.start(self.tools.count());
            let function = &call["function"];
            let (id, name) = (str_of(call, "id"), str_of(function, "name"));
            whole_tool_call(
                index,
                id.into(),
                name.into(),
                function.get("arguments"),
                out,
            );
        }
        if let Some(reason) = body["finish_reason"].as_str() {
            out.push(Event::Finish(finish(reason)));
        }
        out.push(Event::Usage(usage(&body["usage"])));
    }

    fn sse(&mut self, event: &SseEvent, out: &mut Vec<Event>) {
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            return;
        };
        let key = data["index"].as_u64().unwrap_or(0) as usize;
        let message = &data["delta"]["message"];
        match str_of(&data, "type") {
            "content-delta" => {
                out.push(Event::Text(str_of(&message["content"], "text").to_owned()))
            }
            "tool-call-start" => {
                let call = &message["tool_calls"];
                let index = self.tools.start(key);
                out.push(Event::ToolStart {
                    index,
                    id: str_of(call, "id").to_owned(),
                    name: str_of(&call["function"], "name").to_owned(),
                });
                out.push(Event::ToolArgs {
                    index,
                    arguments: str_of(&call["function"], "arguments").to_owned(),
                });
            }
            "tool-call-delta" => {
                if let Some(index) = self.tools.get(key) {
                    out.push(Event::ToolArgs {
                        index,
                        arguments: str_of(&message["tool_calls"]["function"], "arguments")
                            .to_owned(),
                    });
                }
            }
            "message-end" => {
                let delta = &data["delta"];
                if let Some(reason) = delta["finish_reason"].as_str() {
                    out.push(Event::Finish(finish(reason)));
                }
                out.push(Event::Usage(usage(&delta["usage"])));
                out.push(Event::End);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::tests::{assert_stream, completion};
    use crate::{CompatRequest, Target, translate_request};

    fn native(body: Value) -> Value {
        let r = CompatRequest::parse(body.to_string().as_bytes()).unwrap();
        let n = translate_request(Target::Cohere, &r).unwrap();
        assert_eq!(n.path, "/v2/chat");
        serde_json::from_slice(&n.body).unwrap()
    }

    #[test]
    fn request_maps_messages_tools_and_parameters() {
        let body = native(json!({
        "model": "cohere/command-r-plus", "top_p": 0.8, "stop": ["x"], "max_tokens": 9,
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "W", "parameters": {"type": "object"}}},
                  {"type": "function", "function": {"name": "other"}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "I will look it up.", "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "assistant", "content": "Sunny."}
        ]}));
        assert_eq!(
            body,
            json!({
            "model": "command-r-plus", "p": 0.8, "stop_sequences": ["x"], "max_tokens": 9,
            "response_format": {"type": "json_object", "json_schema": {"type": "object"}},
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "W", "parameters": {"type": "object"}}}],
            "tool_choice": "REQUIRED",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
                {"role": "assistant", "tool_plan": "I will look it up.", "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                {"role": "assistant", "content": "Sunny."}
            ]})
        );
    }

    #[test]
    fn json_answer_with_tool_calls_and_usage() {
        let body = r#"{"id":"x","finish_reason":"TOOL_CALL","message":{"role":"assistant","tool_plan":"I will call it.",
            "tool_calls":[{"id":"get_weather_abc","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Paris\"}"}}]},
            "usage":{"billed_units":{"input_tokens":5,"output_tokens":3},"tokens":{"input_tokens":50,"output_tokens":30}}}"#;
        let v: Value = completion(Target::Cohere, body);
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["id"],
            "get_weather_abc"
        );
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"location\":\"Paris\"}"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 50, "completion_tokens": 30, "total_tokens": 80})
        );
    }

    #[test]
    fn stream_with_text_and_tool_call_events_split_anywhere() {
        let stream = concat!(
            "event: message-start\ndata: {\"id\":\"1\",\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":\"assistant\",\"content\":[],\"tool_plan\":\"\",\"tool_calls\":[],\"citations\":[]}}}\n\n",
            "event: content-start\ndata: {\"type\":\"content-start\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"type\":\"text\",\"text\":\"\"}}}}\n\n",
            "event: content-delta\ndata: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\"Hi \"}}}}\n\n",
            "event: content-end\ndata: {\"type\":\"content-end\",\"index\":0}\n\n",
            "event: tool-plan-delta\ndata: {\"type\":\"tool-plan-delta\",\"delta\":{\"message\":{\"tool_plan\":\"I will\"}}}\n\n",
            "event: tool-call-start\ndata: {\"type\":\"tool-call-start\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"id\":\"get_weather_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}}}}\n\n",
            "event: tool-call-delta\ndata: {\"type\":\"tool-call-delta\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"{\\\"location\\\":\"}}}}}\n\n",
            "event: tool-call-delta\ndata: {\"type\":\"tool-call-delta\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}}}}\n\n",
            "event: tool-call-end\ndata: {\"type\":\"tool-call-end\",\"index\":0}\n\n",
            "event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"TOOL_CALL\",\"usage\":{\"billed_units\":{\"input_tokens\":7,\"output_tokens\":4},\"tokens\":{\"input_tokens\":7,\"output_tokens\":4}}}}\n\n",
        );
        assert_stream(
            Target::Cohere,
            stream,
            "Hi ",
            &[("get_weather_1", "get_weather", "{\"location\":\"Paris\"}")],
            "tool_calls",
            json!({"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}),
        );
    }
}
