//! The OpenAI side of an answer: the provider-neutral [`Event`]s the provider decoders produce,
//! written out either as `chat.completion.chunk` SSE events ([`Chunks`]) or gathered into one
//! `chat.completion` ([`Completion`]).

use serde_json::{Value, json};

use crate::response::ResponseMeta;

/// Token counts; `None` fields are unknown so far (later events fill them in).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) prompt: Option<u64>,
    pub(crate) completion: Option<u64>,
    pub(crate) cached: Option<u64>,
}

impl Usage {
    fn merge(&mut self, other: Usage) {
        self.prompt = other.prompt.or(self.prompt);
        self.completion = other.completion.or(self.completion);
        self.cached = other.cached.or(self.cached);
    }

    fn json(&self) -> Value {
        let prompt = self.prompt.unwrap_or(0);
        let completion = self.completion.unwrap_or(0);
        let mut usage = json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        });
        if let Some(cached) = self.cached {
            usage["prompt_tokens_details"] = json!({"cached_tokens": cached});
        }
        usage
    }
}

/// What a provider's answer says, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// Assistant text.
    Text(String),
    /// A tool call begins (`index` counts tool calls from 0).
    ToolStart {
        index: usize,
        id: String,
        name: String,
    },
    /// More of a tool call's JSON arguments.
    ToolArgs { index: usize, arguments: String },
    /// The OpenAI finish reason.
    Finish(&'static str),
    /// Token counts (merged over earlier ones).
    Usage(Usage),
    /// The provider reported an error in the body.
    Error { message: String, kind: String },
    /// The answer is complete.
    End,
}

/// The finish reason: tool calls win over a plain stop, as OpenAI reports them.
fn finish_reason(reported: Option<&'static str>, tools: bool) -> &'static str {
    match reported {
        Some("stop") | None if tools => "tool_calls",
        Some(reason) => reason,
        None => "stop",
    }
}

fn error_json(message: &str, kind: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
}

/// Writes events as `chat.completion.chunk` server-sent events, ending with `data: [DONE]`.
#[derive(Debug)]
pub(crate) struct Chunks {
    meta: ResponseMeta,
    include_usage: bool,
    started: bool,
    tools: bool,
    finish: Option<&'static str>,
    usage: Usage,
    done: bool,
}

impl Chunks {
    pub(crate) fn new(meta: ResponseMeta, include_usage: bool) -> Self {
        Self {
            meta,
            include_usage,
            started: false,
            tools: false,
            finish: None,
            usage: Usage::default(),
            done: false,
        }
    }

    fn write(out: &mut Vec<u8>, value: &Value) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&crate::to_vec(value));
        out.extend_from_slice(b"\n\n");
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.meta.id,
            "object": "chat.completion.chunk",
            "created": self.meta.created,
            "model": self.meta.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            let first = self.chunk(json!({"role": "assistant", "content": ""}), None);
            Self::write(out, &first);
        }
    }

    /// Writes the chunks for `event`.
    pub(crate) fn event(&mut self, event: Event, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        match event {
            Event::Text(text) if text.is_empty() => {}
            Event::Text(text) => {
                self.start(out);
                Self::write(out, &self.chunk(json!({"content": text}), None));
            }
            Event::ToolStart { index, id, name } => {
                self.start(out);
                self.tools = true;
                let call = json!({"index": index, "id": id, "type": "function",
                                  "function": {"name": name, "arguments": ""}});
                Self::write(out, &self.chunk(json!({"tool_calls": [call]}), None));
            }
            Event::ToolArgs { arguments, .. } if arguments.is_empty() => {}
            Event::ToolArgs { index, arguments } => {
                let call = json!({"index": index, "function": {"arguments": arguments}});
                Self::write(out, &self.chunk(json!({"tool_calls": [call]}), None));
            }
            Event::Finish(reason) => self.finish = Some(reason),
            Event::Usage(usage) => self.usage.merge(usage),
            Event::Error { message, kind } => {
                self.done = true;
                Self::write(out, &error_json(&message, &kind));
            }
            Event::End => self.end(out),
        }
    }

    /// Writes the finish chunk, the usage chunk when asked for, and `[DONE]` (once).
    pub(crate) fn end(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.start(out);
        self.done = true;
        let reason = finish_reason(self.finish, self.tools);
        Self::write(out, &self.chunk(json!({}), Some(reason)));
        if self.include_usage {
            let mut last = self.chunk(json!({}), None);
            last["choices"] = json!([]);
            last["usage"] = self.usage.json();
            Self::write(out, &last);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

/// Gathers events into one `chat.completion` object.
#[derive(Debug)]
pub(crate) struct Completion {
    meta: ResponseMeta,
    text: String,
    calls: Vec<(String, String, String)>,
    finish: Option<&'static str>,
    usage: Usage,
    error: Option<(String, String)>,
    done: bool,
}

impl Completion {
    pub(crate) fn new(meta: ResponseMeta) -> Self {
        Self {
            meta,
            text: String::new(),
            calls: Vec::new(),
            finish: None,
            usage: Usage::default(),
            error: None,
            done: false,
        }
    }

    /// Takes in `event`; writes the completion on [`Event::End`].
    pub(crate) fn event(&mut self, event: Event, out: &mut Vec<u8>) {
        match event {
            Event::Text(text) => self.text.push_str(&text),
            Event::ToolStart { index, id, name } => {
                if self.calls.len() <= index {
                    self.calls.resize(index + 1, Default::default());
                }
                self.calls[index] = (id, name, String::new());
            }
            Event::ToolArgs { index, arguments } => {
                if let Some(call) = self.calls.get_mut(index) {
                    call.2.push_str(&arguments);
                }
            }
            Event::Finish(reason) => self.finish = Some(reason),
            Event::Usage(usage) => self.usage.merge(usage),
            Event::Error { message, kind } => self.error = Some((message, kind)),
            Event::End => self.end(out),
        }
    }

    /// Writes the completion (once).
    pub(crate) fn end(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some((message, kind)) = &self.error {
            out.extend_from_slice(&crate::to_vec(&error_json(message, kind)));
            return;
        }
        let tools = !self.calls.is_empty();
        let mut message = json!({
            "role": "assistant",
            "content": if self.text.is_empty() && tools { Value::Null } else { Value::String(std::mem::take(&mut self.text)) },
            "refusal": null,
        });
        if tools {
            let calls: Vec<Value> = self
                .calls
                .drain(..)
                .map(|(id, name, arguments)| {
                    let arguments = if arguments.is_empty() {
                        "{}".to_owned()
                    } else {
                        arguments
                    };
                    json!({"id": id, "type": "function",
                           "function": {"name": name, "arguments": arguments}})
                })
                .collect();
            message["tool_calls"] = Value::Array(calls);
        }
        let completion = json!({
            "id": self.meta.id,
            "object": "chat.completion",
            "created": self.meta.created,
            "model": self.meta.model,
            "choices": [{"index": 0, "message": message, "logprobs": null,
                         "finish_reason": finish_reason(self.finish, tools)}],
            "usage": self.usage.json(),
        });
        out.extend_from_slice(&crate::to_vec(&completion));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ResponseMeta {
        ResponseMeta::new("chatcmpl-X", 7, "m")
    }

    fn events() -> Vec<Event> {
        vec![
            Event::Usage(Usage {
                prompt: Some(3),
                completion: Some(1),
                cached: None,
            }),
            Event::Text("Hel".into()),
            Event::Text("lo".into()),
            Event::ToolStart {
                index: 0,
                id: "call_1".into(),
                name: "f".into(),
            },
            Event::ToolArgs {
                index: 0,
                arguments: "{\"a\":".into(),
            },
            Event::ToolArgs {
                index: 0,
                arguments: "1}".into(),
            },
            Event::Finish("stop"),
            Event::Usage(Usage {
                prompt: None,
                completion: Some(4),
                cached: None,
            }),
            Event::End,
        ]
    }

    #[test]
    fn chunks_stream_text_and_tool_call_deltas_then_usage_and_done() {
        let mut c = Chunks::new(meta(), true);
        let mut out = Vec::new();
        for e in events() {
            c.event(e, &mut out);
        }
        c.end(&mut out);
        let text = String::from_utf8(out).unwrap();
        let datas: Vec<&str> = text
            .split("\n\n")
            .filter(|s| !s.is_empty())
            .map(|s| s.strip_prefix("data: ").unwrap())
            .collect();
        assert_eq!(datas.last(), Some(&"[DONE]"));
        let chunks: Vec<Value> = datas[..datas.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hel");
        assert_eq!(
            chunks[3]["choices"][0]["delta"]["tool_calls"][0],
            json!({"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}})
        );
        assert_eq!(
            chunks[5]["choices"][0]["delta"]["tool_calls"][0],
            json!({"index": 0, "function": {"arguments": "1}"}})
        );
        assert_eq!(chunks[6]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[7]["choices"], json!([]));
        assert_eq!(
            chunks[7]["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
        );
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == "chatcmpl-X")
        );
        assert_eq!(chunks.len(), 8);
    }

    #[test]
    fn without_include_usage_there_is_no_usage_chunk() {
        let mut c = Chunks::new(meta(), false);
        let mut out = Vec::new();
        c.event(Event::Text("x".into()), &mut out);
        c.event(Event::End, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("usage"), "{text}");
        assert!(text.contains("\"finish_reason\":\"stop\""));
        assert!(text.ends_with("data: [DONE]\n\n"));
    }

    #[test]
    fn completion_gathers_everything() {
        let mut c = Completion::new(meta());
        let mut out = Vec::new();
        for e in events() {
            c.event(e, &mut out);
        }
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["content"], "Hello");
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"],
            json!({"name": "f", "arguments": "{\"a\":1}"})
        );
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["total_tokens"], 7);
    }

    #[test]
    fn errors_become_openai_errors() {
        let mut c = Chunks::new(meta(), false);
        let mut out = Vec::new();
        c.event(
            Event::Error {
                message: "overloaded".into(),
                kind: "overloaded_error".into(),
            },
            &mut out,
        );
        c.end(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "data: {\"error\":{\"code\":null,\"message\":\"overloaded\",\"param\":null,\"type\":\"overloaded_error\"}}\n\n"
        );
    }
}
